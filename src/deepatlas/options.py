"""One registry per family of named options, shared by config checks, CLI choices, factories
and error messages (in the spirit of MONAI's ``look_up_option``): a value is spelled in one
place, and an unknown one is refused everywhere with the same sentence."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

SIMILARITY = ("lncc", "mse")
"""Training similarity of the registration net."""
REFINE_SIMILARITY = ("lncc", "mi", "mind")
"""Similarity of per-pair refinement (``mind``: MIND-SSC descriptors, and ``mi``: mutual
information, for other contrasts)."""
REFINE_METHOD = ("adam", "greedy")
"""How per-pair refinement steps (``refine.method``): additive Adam steps against a diffusion penalty,
or greedy's compositive Gaussian-smoothed steps (:mod:`deepatlas.registration.greedy`)."""
REFINE_FORM = ("add", "compose", "flow")
"""How ``refine.method=adam`` combines its residual with the net's deformation (``refine.form``): added to the
net's field under a penalty on the total field, or composed after it (``phi = phi_net o psi``, the penalty on
``psi`` alone) as a displacement or as the flow of a stationary velocity (a diffeomorphism)."""
TEACHERS = ("auto", "on", "off")
"""Refined weak supervision (``teachers.enabled``); ``auto``: on with few labelled images."""
TEACHERS_AUTO_MAX_LABELLED = 2
"""``teachers.enabled=auto`` turns teachers on with at most this many labelled training images:
they bought +1.1 to +5.9 seg Dice at one labelled image and nothing at five (docs/results.md)."""
AUGMENT = ("auto", "on", "off")
"""Augmentation of the seg net's supervised images (``augment.enabled``); ``auto``: on with few
labelled images (and normalised intensities, which its contrast and noise changes are sized for)."""
RESIZE_IMAGE = ("linear", "cubic")
"""How structure resizing (``augment.resize_image``) resamples the image: ``linear`` (torch, any device; a
blur where the flow moves a voxel by a fraction) or ``cubic`` (a B-spline on the CPU, as the synthetic-atrophy
benchmark makes its brains: the image stays sharp where its labels move)."""
RESIZE_LABELS = ("nearest", "sampled")
"""How structure resizing (``augment.resize_labels``) moves the label map: ``nearest`` (each voxel takes the
label nearest its source point: where the flow moves a boundary by less than half a voxel, which is most of
a small enlargement, no label changes while the image does) or ``sampled`` (one of the 8 voxels around the
source point, drawn with its linear-interpolation weight: the labels' expected one-hot map is the linearly
warped one, so a sub-voxel growth changes the labels by its partial volume on average, as it changes the
image)."""
AUGMENT_AUTO_MAX_LABELLED = 2
"""``augment.enabled=auto`` turns augmentation on with at most this many labelled training images.
At one (ixi-2mm validation, seed 0's draw, 45 minutes, two machines) it lifted the seg net alone
from 0.635 to 0.764-0.766 and the joint seg net from 0.737 to 0.763 (docs/results.md); beyond two
the joint recipe with it is not measured yet."""
SEG_STEPS = ("pair", "distil", "supervised")
"""The trainer's segmentation step variants, chosen once per run
(:meth:`deepatlas.training.trainer.Trainer.seg_step_variant`, recorded in ``summary.json``): DeepAtlas'
``pair`` step, the ``distil`` step (labelled and taught or synthesised images as labels, ``teachers.loss:
distil``), or ``supervised`` steps on labelled images alone (every training image labelled)."""
TEACHER_LOSS = ("anatomy", "supervised", "distil")
"""How the seg net learns from a teacher (``teachers.loss``). In DeepAtlas' pair step (a labelled
and an unlabelled image): ``anatomy``, the anatomy loss's soft Dice on its coarse grid (as for the
reg net's own warp), or ``supervised``, DiceCE at full resolution. ``distil``: no pairs; a seg
step is a supervised step on labelled and taught images alike (half of the batch each), at the
cost of the seg net alone's step (multi-atlas labels distilled into the seg net)."""
REGULARIZER = ("bending", "diffusion")
INVERSE_CONSISTENCY = ("icon", "gradicon")
NORM = ("instance", "batch")
TOP_LAYER = ("transposed", "upsample")
"""A U-Net's last layer: MONAI's full-resolution transposed convolution, or a 1x1x1 convolution
at the first level's resolution and linear upsampling (:mod:`deepatlas.networks.top_layer`)."""
AMP = ("auto", "on", "off")
UNKNOWN_LABELS = ("error", "background")
MIRROR_AVERAGE = ("auto", "on", "off")
"""At inference, the seg net's probabilities averaged with those of the image mirrored left-right, each class
turned into its twin (``seg_net.mirror_average``, ``--mirror-average``): ``auto``, on where the label scheme
names sides and every side-named class has its twin."""
SUBVOXEL_AVERAGE = ("auto", "on", "off")
"""At inference, the seg net's probabilities averaged over the image moved by a quarter voxel either way along
every axis (:data:`deepatlas.inference.apply.SUBVOXEL_SHIFT`; ``seg_net.subvoxel_average``,
``--subvoxel-average``): read at several phases of the grid, a volume follows a change of less than a voxel
(2^dims passes, each mirrored where ``seg_net.mirror_average`` says). ``auto``: on where the seg net's output is
a volume (``morphometry``), off where it is a label map (``segment``, ``evaluate``, ``atlas-segment``), where it
would cost some 13 times one pass's time for 0.08 Dice points less."""
WRONG_SIDES = ("unlabel", "keep", "error")
"""What training does with a label map whose left and right structures lie on the wrong sides
(``data.wrong_sides``, :mod:`deepatlas.data.hemispheres`): leave its labels out (a training image then trains
unlabelled, a validation subject is not scored), use them with a warning, or refuse."""
FUSION = ("weighted", "majority")
"""Atlas label fusion: votes weighted by local NCC, or one vote per atlas."""
PAIRS = ("next", "all", "none")
"""Declared evaluation pairs (or a JSON file of id pairs)."""
CHECKPOINT = ("best", "last")
AFFINE = ("auto", "on", "off")
"""When ``register`` / ``atlas-segment`` run the affine stage (``auto``: when a pair is poorly aligned)."""
STRIP = ("auto", "on", "off")
"""Brain extraction of whole-head scans before anything else (``--strip``; ``auto``: when the scan
looks like a head, :mod:`deepatlas.inference.strip`)."""
AFFINE_AUTO_THRESHOLD = 0.93
"""``auto``: the affine stage runs when the pair's alignment NCC (both images pooled 4x) is below this
(pre-aligned ixi-2mm pairs 0.97-0.99; brains moved by 20 degrees / 20 % / 20 mm 0.60-0.86)."""
ALIGNMENT_MIN_SCORE = 0.82
"""An alignment to the template whose score (rank correlation inside the template's brain, at 4 mm:
``inference.alignment.alignment_score``) is below this is doubtful: midway between the lowest good
alignment (T1 brains of other scanners and contrasts, cropped) and the highest failed one (flipped,
heads, phantoms) in benchmarks/results/alignment_qc/results.md."""
ALIGNMENT_REFUSE_SCORE = 0.72
"""``segment`` / ``register`` refuse (unless ``--force``) an input whose alignment score is below this:
what non-brains, contrast-inverted brains, most whole heads and turned brains score, well below any
good alignment (benchmarks/results/alignment_qc/results.md)."""
PREPARE_MIN_SCORE = ALIGNMENT_MIN_SCORE
"""``prepare``: subjects whose alignment score is below this are rejected."""
UNTIL_BUDGET = 10_000_000
"""A step count for ``schedule.seg_pretrain_steps``, ``reg_pretrain_steps`` or ``cycles`` that means
"until ``schedule.time_budget_minutes`` ends the run": a schedule longer than any budget, so the
clock ends it. A schedule reaching it without a time budget is refused (it would never end)."""


def switch_on(value: str | bool, auto: bool) -> bool:
    """An ``auto`` / ``on`` / ``off`` setting resolved; ``auto``: the caller's condition. A bool
    (set from Python rather than read from a config file) means what it says."""
    if isinstance(value, bool):
        return value
    return auto if value == "auto" else value == "on"


def look_up_option(value: object, options: Sequence[str], setting: str) -> str:
    """``value`` if it is one of ``options``; otherwise a ``ValueError`` naming ``setting``, the choices
    and, when one is close to ``value`` (a typo, another case), that one: "did you mean 'lncc'?"."""
    if value not in options:
        by_lower = {str(option).lower(): str(option) for option in options}
        close = difflib.get_close_matches(str(value).lower(), list(by_lower), n=1, cutoff=0.6)
        hint = f"; did you mean {by_lower[close[0]]!r}?" if close else ""
        raise ValueError(f"{setting}: {value!r} is not one of {list(options)}{hint}")
    return str(value)
