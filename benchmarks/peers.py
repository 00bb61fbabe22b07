"""External registrars (ANTs SyN, PICSL greedy, FireANTs) as benchmark :data:`Registrar`\\ s.

Each peer is a registrar ``(moving, fixed, moving_labels) -> Registration``, so
``benchmarks/registration.py`` and ``benchmarks/experiment.py`` score it with exactly the code
that scores the networks (same pairs, same Dice, same Jacobian rule: folds are voxels with
det <= 0). Every tool reads the NIfTI files itself (the geometry as written); its field, as an
ITK displacement (ANTs' and greedy's as they give it, FireANTs' as its own ANTs export converts
it): millimetres along the LPS world axes on the fixed grid, the moving point
matching fixed point ``p`` at ``p + u(p)``; here the two first components flip to the RAS axes of
:class:`~deepatlas.inference.apply.Registration`. ANTs' Jacobian is its own; greedy's and
FireANTs' are the project's :func:`~deepatlas.inference.geometry.jacobian_determinant_world` of
that field. Greedy's own ``-rj`` is not used: on ixi-2mm its determinant does not follow the
volume change of the warped structures (the project's does; tests/test_benchmarks_peers.py).
Labels are resampled through each tool's field by the project's label interpolation, as
``deepatlas register`` resamples its own, so rows differ by their registrations alone. All are deformable
only: ixi-2mm is pre-aligned and the networks get no affine stage either.

None is a dependency of the package:

    pip install -e .[benchmark]        # ANTs SyN (antspyx)
    pip install picsl-greedy           # PICSL greedy, Python bindings of the C++ tool
    pip install --no-deps fireants     # FireANTs

FireANTs goes in with ``--no-deps`` because it pins ``simpleitk==2.2.1`` (and pulls hydra,
pandas, pytest...): that pin would downgrade the SimpleITK of the test extra (picsl-greedy
brings a newer one too), and FireANTs runs with the newer one (torch, numpy, scipy and
SimpleITK are here already). Without its
fused CUDA ops it runs on the CPU through torch.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from deepatlas.data.io import Volume
from deepatlas.inference.apply import Registration

# ITK's LPS world axes vs NIfTI's RAS: the first two flip
_LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])

MODULES = {"ants": "ants", "greedy": "picsl_greedy", "fireants": "fireants"}
INSTALL = {
    "ants": "pip install -e .[benchmark]",
    "greedy": "pip install picsl-greedy",
    "fireants": "pip install --no-deps fireants",
}


def available(peer: str = "ants") -> bool:
    """Whether the peer's package is installed (``ants``, ``greedy`` or ``fireants``)."""
    return importlib.util.find_spec(MODULES[peer]) is not None


def missing_message(peer: str) -> str:
    return f"{peer}: package {MODULES[peer]} not installed, left out ({INSTALL[peer]})"


def _threads(threads: int | None) -> int:
    """The thread count a peer gets: by default torch's, the one the benchmark's results record."""
    import torch

    return threads or torch.get_num_threads()


def itk_field_to_ras(array: np.ndarray) -> np.ndarray:
    """An ITK displacement as SimpleITK's ``GetArrayFromImage`` gives it (``*reversed_shape x dims``,
    LPS mm) -> ``dims x *shape`` along RAS, the convention of ``Registration.displacement``."""
    dims = array.shape[-1]
    field = np.moveaxis(array, -1, 0).transpose(0, *range(dims, 0, -1))
    return np.ascontiguousarray(field * _LPS_TO_RAS[:dims].reshape((dims,) + (1,) * dims), dtype=np.float64)


def _registration(warped: np.ndarray, displacement: np.ndarray, moving_labels: Volume | None, fixed: Volume):
    """A ``Registration`` of the peer's field (RAS mm, fixed grid) with the project's Jacobian of it and
    the moving labels resampled through it by the project's label interpolation
    (:func:`~deepatlas.inference.geometry.sample_labels`, as ``deepatlas register`` resamples its
    own): the rows of a benchmark then differ by their registrations alone, not by how each tool
    happens to resample a label map."""
    import torch

    from deepatlas.inference.geometry import jacobian_determinant_world, sample_labels, world_coordinates

    field = torch.from_numpy(displacement)
    jacobian = jacobian_determinant_world(field, fixed.affine).numpy()
    labels = None
    if moving_labels is not None:
        points = world_coordinates(tuple(fixed.array.shape), fixed.affine) + field
        codes = torch.from_numpy(moving_labels.array.astype(np.int32))
        labels = sample_labels(codes, moving_labels.affine, points).numpy()
    return Registration(warped.astype(np.float32), displacement, jacobian.astype(np.float64), labels, fixed.affine)


def syn_registrar(type_of_transform: str = "SyNOnly", threads: int | None = None, **kwargs):
    """A registrar running ``ants.registration(fixed, moving, type_of_transform)``.

    ``SyNOnly``: deformable SyN without an affine stage, ANTsPy's default settings otherwise
    (Mattes mutual information, 3 levels, 40/20/0 iterations). Its Jacobian is its own; the labels
    are resampled through its field as every row's are (:func:`_registration`).
    """
    import ants

    if threads:
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)

    def read(volume: Volume):
        return ants.image_read(str(volume.path))

    def register(moving: Volume, fixed: Volume, moving_labels: Volume | None = None) -> Registration:
        fixed_a, moving_a = read(fixed), read(moving)
        with tempfile.TemporaryDirectory(prefix="deepatlas-ants-") as tmp:
            result = ants.registration(
                fixed_a, moving_a, type_of_transform=type_of_transform, outprefix=str(Path(tmp) / "syn_"), **kwargs
            )
            transforms = result["fwdtransforms"]
            warped = result["warpedmovout"].numpy()
            field_file = next(t for t in transforms if t.endswith((".nii.gz", ".nii")))
            jacobian = ants.create_jacobian_determinant_image(fixed_a, field_file, do_log=False).numpy()
            field = ants.image_read(field_file).numpy()  # fixed grid x 3, mm, LPS
        displacement = np.moveaxis(field, -1, 0) * _LPS_TO_RAS[:, None, None, None]
        registration = _registration(warped, displacement, moving_labels, fixed)
        registration.jacobian = jacobian.astype(np.float64)
        return registration

    return register


def greedy_registrar(iterations: str = "100x50x10", metric: str = "NCC 2x2x2", threads: int | None = None, seed=1):
    """A registrar running PICSL greedy's deformable mode: ``-m NCC 2x2x2 -n 100x50x10`` (its
    documented brain settings) with its defaults otherwise (smoothing ``-s 1.732vox 0.7071vox``,
    step ``-e 1``). ``-wp 0`` keeps the field as computed (greedy otherwise rounds a saved warp to
    0.1 voxel); ``-seed`` fixes the noise greedy adds to the images under NCC, so reruns agree.
    The image is resliced linearly by greedy; the labels through its field (:func:`_registration`).
    """
    import SimpleITK as sitk
    from picsl_greedy import Greedy3D

    common = f"-threads {_threads(threads)} -V 0"
    register_command = f"{common} -i fixed moving -o warp -m {metric} -n {iterations} -wp 0 -seed {seed}"

    def register(moving: Volume, fixed: Volume, moving_labels: Volume | None = None) -> Registration:
        images = {"fixed": sitk.ReadImage(str(fixed.path)), "moving": sitk.ReadImage(str(moving.path))}
        greedy = Greedy3D()
        greedy.execute(register_command, warp=None, **images)
        greedy.execute(f"{common} -rf fixed -rm moving warped -r warp", **images, warped=None)
        warped = sitk.GetArrayFromImage(greedy["warped"]).transpose()
        displacement = itk_field_to_ras(sitk.GetArrayFromImage(greedy["warp"]))
        return _registration(warped, displacement, moving_labels, fixed)

    return register


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    """torch's thread count set to ``threads`` (if given) for the block, and put back after it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(_threads(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _import_fireants():
    """FireANTs' registration and image classes, without the lines it prints and logs on import."""
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fireants.io.image import BatchedImages, Image
        from fireants.registration.greedy import GreedyRegistration
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("fireants"):
            logging.getLogger(name).setLevel(logging.ERROR)
    return Image, BatchedImages, GreedyRegistration


def fireants_registrar(scales=(4, 2, 1), iterations=(200, 100, 50), cc_kernel_size: int = 5, threads=None):
    """A registrar running FireANTs' ``GreedyRegistration`` on the CPU with its quickstart's brain
    settings: scales 4/2/1, iterations 200/100/50, local CC with a 5-voxel window, Adam at 0.5,
    compositive warp, its default smoothing (gradient sigma 1, warp sigma 0.5). Deformable only.

    The image is FireANTs' own warp (``evaluate``); the labels are resampled through its field
    (:func:`_registration`). The field is its warped coordinates (``grid_sample``'s, ``align_corners``)
    taken to the moving image's world space minus the fixed grid's world points, exactly as its
    ``save_as_ants_transforms`` writes it.
    """
    classes = _import_fireants()
    settings = {
        "scales": list(scales),
        "iterations": list(iterations),
        "loss_type": "cc",
        "cc_kernel_size": cc_kernel_size,
        "deformation_type": "compositive",
        "optimizer": "Adam",
        "optimizer_lr": 0.5,
        "progress_bar": False,
    }

    def register(moving: Volume, fixed: Volume, moving_labels: Volume | None = None) -> Registration:
        with _torch_threads(threads):
            return _fireants_register(classes, settings, moving, fixed, moving_labels)

    return register


def _fireants_register(classes, settings: dict, moving: Volume, fixed: Volume, moving_labels: Volume | None):
    """One pair through FireANTs (:func:`fireants_registrar`)."""
    import torch

    image_class, batch_class, registration_class = classes
    fixed_b, moving_b = (batch_class([image_class.load_file(str(v.path), device="cpu")]) for v in (fixed, moving))
    reg = registration_class(fixed_images=fixed_b, moving_images=moving_b, **settings)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # its logger.warn calls
        reg.optimize()
    with torch.no_grad():
        warped = reg.evaluate(fixed_b, moving_b)[0, 0].numpy().transpose()
        coords = reg.get_warped_coordinates(fixed_b, moving_b)  # 1 x *reversed shape x (x, y, z), in [-1, 1]
        displacement = itk_field_to_ras(_fireants_world_field(coords, fixed_b, moving_b))
    return _registration(warped, displacement, moving_labels, fixed)


def _fireants_world_field(coords, fixed_b, moving_b) -> np.ndarray:
    """FireANTs' warped coordinates (normalised, moving image) as an ITK displacement: the moving
    world point minus the fixed world point, LPS mm, ``*reversed shape x dims``."""
    import torch
    import torch.nn.functional as F

    dims = coords.shape[-1]
    coords = coords[0].double()
    moving_t2p, fixed_t2p = moving_b.get_torch2phy()[0].double(), fixed_b.get_torch2phy()[0].double()
    moving_world = coords @ moving_t2p[:dims, :dims].T + moving_t2p[:dims, dims]
    identity = torch.eye(dims, dims + 1, dtype=torch.float64)[None]
    grid = F.affine_grid(identity, [1, 1, *coords.shape[:-1]], align_corners=True)[0]
    fixed_world = grid @ fixed_t2p[:dims, :dims].T + fixed_t2p[:dims, dims]
    return (moving_world - fixed_world).numpy()


# what ``benchmarks/registration.py --peers`` runs, by name, each with its documented settings
REGISTRARS = {"ants": syn_registrar, "greedy": greedy_registrar, "fireants": fireants_registrar}
