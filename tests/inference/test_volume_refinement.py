"""Registrations read for a measurement register with their own presets. Atlases whose warped labels are counted as
volumes (``morphometry --from atlas`` / ``--atlas``): ``refine.for_volumes``, a weaker penalty on the refinement's own
correction than ``register``'s penalty on the total field, which holds an atlas back from an enlarged ventricle;
the log-Jacobian maps: ``refine.for_maps``, half ``register``'s penalty (docs/results.md, "Registrations read for
volumes")."""

from pathlib import Path

import nibabel as nib
import numpy as np

from deepatlas.cli.main import main
from deepatlas.data.io import load_label_codes, save_volume
from tests.inference.conftest import SHIPPED as MODEL


def test_morphometrys_atlas_follows_an_enlarged_ventricle(brain, ixi, tmp_path):
    """A validation brain with its ventricles doubled (the benchmark's strongest level) and as it is, each measured
    through one training atlas by ``morphometry --from atlas``: the atlas reads 0.97 of the ventricles' growth,
    registered as ``register`` registers 0.72 (measured on this brain and atlas)."""
    from benchmarks.morphometry import atrophy_at
    from deepatlas.data.labels import LabelScheme

    image, labels = brain
    scheme = LabelScheme.from_file(MODEL / "labels.json")
    enlarged = atrophy_at(image, labels, scheme, 3)
    folder = tmp_path / "in"
    save_volume(np.asarray(image.array, dtype=np.float32), image.affine, folder / "original.nii.gz")
    save_volume(enlarged.image, image.affine, folder / "enlarged.nii.gz")
    atlas = [str(ixi / sub / "IXI013-HH-1212.nii.gz") for sub in ("images", "labels")]
    ventricles = [scheme.names.index(n) for n in ("LateralVentricle-L", "LateralVentricle-R")]

    def voxels(codes: np.ndarray) -> int:
        return int(np.isin(scheme.encode(codes, unknown="background"), ventricles).sum())

    truth = voxels(labels.array) * np.mean([enlarged.changes[scheme.names[k]] for k in ventricles])

    def growth(out: Path, *refine: str) -> float:
        flags = [f"--refine={setting}" for setting in refine]
        command = ["morphometry", str(MODEL), str(folder), "--from", "atlas", "--atlas", *atlas, "-o", str(out)]
        assert main(command + flags) == 0
        read = {
            name: voxels(load_label_codes(out / f"{name}_atlas_seg.nii.gz").array) for name in ("original", "enlarged")
        }
        return (read["enlarged"] - read["original"]) / truth

    as_morphometry = growth(tmp_path / "volumes")
    as_register = growth(tmp_path / "register", "form=add", "regularizer_weight=2")
    assert as_morphometry >= 0.9, as_morphometry
    assert as_register < as_morphometry - 0.15, (as_register, as_morphometry)


def test_morphometrys_log_jacobian_map_reads_a_ventricles_growth(brain, tmp_path):
    """The same brain with its ventricles enlarged by a quarter, registered by ``morphometry`` to the original as
    its template: where the tissue grew by more than 10 %, the map reads the growth in full (1.01 of it, measured),
    registered as ``register`` registers 0.87; its noise where nothing changed stays near register's (0.068 against
    0.059)."""
    from benchmarks.atlas_atrophy import true_growth
    from benchmarks.morphometry import atrophy_at
    from deepatlas.data.labels import LabelScheme

    image, labels = brain
    enlarged = atrophy_at(image, labels, LabelScheme.from_file(MODEL / "labels.json"), 1)
    template = save_volume(np.asarray(image.array, dtype=np.float32), image.affine, tmp_path / "original.nii.gz")
    save_volume(enlarged.image, image.affine, tmp_path / "in" / "enlarged.nii.gz")
    true = true_growth(enlarged)
    grew, still = true > np.log(1.1), (np.asarray(image.array) > 0) & (np.abs(true) < 0.01)

    def reading(out: Path, *refine: str) -> tuple[float, float]:
        command = ["morphometry", str(MODEL), str(tmp_path / "in"), "--template", str(template), "-o", str(out)]
        assert main(command + [f"--refine={setting}" for setting in refine]) == 0
        read = np.asarray(nib.load(str(out / "enlarged_logjac.nii.gz")).get_fdata())
        return float(read[grew].mean() / true[grew].mean()), float(read[still].std())

    (as_maps, noise), (as_register, register_noise) = (
        reading(tmp_path / "maps"),
        reading(tmp_path / "reg", "regularizer_weight=2"),
    )
    assert as_maps >= 0.93, as_maps
    assert as_register < as_maps - 0.08, (as_register, as_maps)
    assert noise < 1.3 * register_noise, (noise, register_noise)


def test_atlases_that_cannot_register_so_are_refused_in_one_line(brain, ixi, tmp_path, capsys):
    """``refine.for_volumes`` (a composed residual) and ``--refine method=greedy`` (which has none) cannot run
    together: one line says so and what to change, before any image is read."""
    image, _ = brain
    subject = save_volume(np.asarray(image.array, dtype=np.float32), image.affine, tmp_path / "in" / "brain.nii.gz")
    atlas = [str(ixi / sub / "IXI013-HH-1212.nii.gz") for sub in ("images", "labels")]
    command = ["morphometry", str(MODEL), str(subject), "--atlas", *atlas, "-o", str(tmp_path / "out")]
    assert main(command + ["--refine", "method=greedy"]) == 2
    err = capsys.readouterr().err
    assert "refine.for_volumes" in err and "refine.form=add" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
