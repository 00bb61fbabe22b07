"""One typed configuration for a DeepAtlas run, saved in every run folder.

Load with :func:`load_config` (YAML or JSON, every key optional), override with
``section.key=value`` strings, save with :meth:`Config.save`. The defaults are
the measured choice for 2 mm brain MRI on a 2-core CPU; the reason for each is
next to it (benchmarks and numbers: ``docs/`` and ``benchmarks/``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deepatlas import options
from deepatlas.config_parse import apply_overrides, build_dataclass


@dataclass
class DataConfig:
    dataset: str | None = None
    """Folder (``images/`` + ``labels/``), JSON manifest, or OASIS-1 root."""
    label_map: str | None = None
    """Label-map file (``brain31.json`` format); default: one class per code found."""
    unknown_labels: str = "error"
    """Label codes missing from ``label_map``: ``error`` or ``background``."""
    wrong_sides: str = "unlabel"
    """A label map whose left-named structures lie on the right side or back (:mod:`deepatlas.data.hemispheres`):
    ``unlabel`` leaves its labels out (the training image trains unlabelled, a validation subject is not
    scored), ``keep`` uses them, ``error`` refuses. Four of ixi-2mm's 185 automatic label maps are such."""
    splits: str | None = None
    """Splits file (``splits.json`` format); default: every subject is training data."""
    train_split: str = "train"
    val_split: str | None = "validation"
    num_labelled: int | None = None
    """How many training subjects keep their labels (drawn with ``seed``); default all."""
    labelled_ids: list[str] | None = None
    """Explicit list of labelled training subjects (wins over ``num_labelled``)."""
    seed: int = 0
    normalize: bool = True


@dataclass
class SegNetConfig:
    # First stride 2: every hidden feature map is at half resolution or lower; the
    # full-resolution levels of the MONAI tutorial's net cost ~4x the time (benchmarks/).
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    strides: list[int] = field(default_factory=lambda: [2, 2, 2])
    # Residual units put a K+1-channel conv at full resolution: ~4x slower, measured.
    num_res_units: int = 0
    dropout: float = 0.0
    norm: str = "instance"  # batch statistics of 1-2 volumes are noise; instance norm is batch-size free
    top_layer: str = "transposed"
    """``transposed`` (MONAI's full-resolution last layer) or ``upsample`` (1x1x1 conv at half
    resolution + linear upsampling: the full-resolution layer is ~half the seg net's step)."""
    mirror_average: str = "auto"
    """At inference (``segment``, ``evaluate``, ``morphometry``, ``atlas-segment --seg-net-weight``; not in
    training's validation): the class probabilities averaged with those of the image mirrored left-right,
    each class turned into its twin (``Hippocampus-L`` / ``-R``), as nnU-Net does by default. ``auto``: on
    where the label scheme names sides and each has its twin (brain31), off otherwise (codes alone say no
    side); ``on`` refuses a scheme with a side-named class missing its twin. Twice the seg net's time; on
    ixi-2mm validation +1.0 Dice for brain-2mm, 9 of 9 brains (docs/results.md "Mirrored inference")."""
    subvoxel_average: str = "auto"
    """At inference, as ``mirror_average``: ``on`` averages the class probabilities of the image moved by a
    quarter voxel either way along every axis (cubic B-spline), each moved back, before the labels are read
    (2^dims passes of the seg net: 8 in 3-D, about 13 times one pass's time on a CPU). A seg net reads a
    boundary that moves by a fraction of a voxel in steps; averaged over where the grid falls, its volumes
    follow such a change. ``auto``: on in ``morphometry`` and ``segment --volumes`` (volumes), off for label
    maps (``segment``, ``evaluate``, ``atlas-segment``: 0.08 Dice points lower, for that time).
    docs/results.md "Volumes read at several grid phases"."""
    atlas_vote: float = 0.0
    """The seg net's vote beside the atlases of ``atlas-segment`` and ``evaluate --atlases`` where
    ``--seg-net-weight`` is not given: its class probabilities times this (0: the atlases alone). 0 for the
    runs ``train`` writes: a run's seg net may be untrained (``--recipe reg-only``) or weaker than its atlases,
    which ``benchmarks/fusion_weight.py`` measures; a shipped model carries the weight chosen on its
    validation brains (docs/results.md "Seg net and atlases: one vote")."""


@dataclass
class RegNetConfig:
    channels: list[int] = field(default_factory=lambda: [16, 32, 32, 32])
    strides: list[int] = field(default_factory=lambda: [2, 2, 2])
    num_res_units: int = 0
    dropout: float = 0.0
    norm: str = "instance"
    # The field at half resolution, upsampled: validation Dice 0.683 / 0.682 against 0.658 / 0.661
    # for the full-resolution transposed layer (2 seeds, 300 reg-only steps, equal time;
    # benchmarks/results/tuning/top-layer.md). A displacement field is smooth: its last layer
    # need not work at full resolution. Runs saved before this key existed keep "transposed"
    # (SAVED_RUN_DEFAULTS).
    top_layer: str = "upsample"
    """As ``seg_net.top_layer``: ``upsample`` (default) predicts the field at half resolution."""
    diffeomorphic: bool = False
    integration_steps: int = 7


@dataclass
class LossConfig:
    similarity: str = "lncc"  # "lncc" or "mse"
    lncc_window: int = 7
    regularizer: str = "bending"  # "bending" or "diffusion"
    # Registration phase: sim + reg_weight * reg + anatomy_weight * anatomy
    similarity_weight: float = 1.0
    # Bending energy on voxel-unit fields. ixi-2mm validation, 400 unsupervised steps
    # (benchmarks/results/tuning/regularizer.md): weight 0.5 -> reg Dice 0.664, 0.04% folds;
    # 2 -> 0.660, no folds; 8 -> 0.653. 2 gives up 0.004 Dice for no folds, the safer
    # choice for scans unlike ixi-2mm (the anatomy loss pushes harder than similarity alone).
    regularizer_weight: float = 2.0
    anatomy_weight_reg: float = 1.0
    # Inverse consistency (ICON / GradICON): the net also registers each pair backwards and
    # the composition of both maps is pushed towards the identity. Off by default: it doubles
    # the cost of a registration step (docs/results.md has what it buys).
    inverse_consistency_weight: float = 0.0
    inverse_consistency: str = "icon"
    # Segmentation phase: supervised_weight * DiceCE + anatomy_weight * anatomy
    supervised_weight: float = 1.0
    # The soft Dice's share of the supervised DiceCE (cross-entropy weight 1). Where labels are uncertain
    # (augment.resize_labels=sampled draws boundary labels by their partial volumes), the soft Dice
    # rewards claiming a small structure's uncertain voxels and over-measures it; cross-entropy is
    # calibrated. Measured in docs/results.md ("Labels that move by a fraction of a voxel").
    supervised_dice_weight: float = 1.0
    anatomy_weight_seg: float = 1.0
    anatomy_downsample: int = 2


PRESETS = ("for_volumes", "for_maps")
"""The refine section's presets: overrides applied first where a registration is read for one purpose."""


@dataclass
class RefineConfig:
    """Per-pair instance optimisation after the registration net (:mod:`deepatlas.registration.refine`).

    Used by ``register``, ``atlas-segment``, ``evaluate`` and the Python API; ``--net-only``
    (or ``refine.enabled=false``) gives the net's prediction alone.
    """

    enabled: bool = True
    # Chosen on the ixi-2mm validation pairs (docs/results.md, benchmarks/results/registration):
    # from the net's field, 20 Adam steps on images pooled 2x, then 5 at full resolution with one
    # unknown per voxel. The full-resolution level is where the accuracy is (+2 Dice over the
    # coarse levels); more steps there bought nothing; lr 0.25 and diffusion weight 2 keep the
    # field smooth (SDlogJ 0.30, folds 0.003 %) for 0.3 Dice points less than weight 1 (SDlogJ 0.62).
    levels: list[int] = field(default_factory=lambda: [2, 1])
    """Image pooling factor of each level, coarse to fine (1 = full resolution)."""
    iterations: list[int] = field(default_factory=lambda: [20, 5])
    """Adam iterations at each level."""
    control_spacing: int = 1
    """Voxels between the optimised unknowns (at least the level's factor). 2 halves the unknowns
    per axis at full resolution (cheaper, smoother) but measured 1 Dice point less."""
    lr: float = 0.25
    """Adam step, in control-grid voxels."""
    adam_eps: float = 0.0
    """Adam's epsilon as a fraction of the root mean square of each level's first gradient (0:
    PyTorch's 1e-8). Adam divides every unknown's step by its own gradient's size, so voxels with
    tiny gradients (flat regions) take full-size steps: noise, and folds. A floor damps them."""
    similarity: str = "lncc"
    """``lncc`` (squared local normalised cross-correlation, window ``lncc_window``: any locally
    linear intensity relation, inversions included), ``mind`` (MIND-SSC structure descriptors:
    pairs of different contrast or scanner; about 2.4x the time, use ``regularizer_weight`` ~0.1)
    or ``mi`` (mutual information). Validation pairs with the moving contrast remapped
    non-monotonically: mind 0.719, lncc 0.705, mi 0.691 Dice; on T1 pairs lncc is best
    (docs/results.md)."""
    lncc_window: int = 5
    regularizer_weight: float = 2.0
    """Weight of the diffusion energy (mean squared displacement gradient) of the total field."""
    smoothing: int = 2
    """3-wide box filters applied to the optimised residual."""
    anatomy_weight: float = 0.0
    """Weight of the soft Dice between the warped moving and the fixed segmentation (seg net
    softmax, or manual labels where given); 0 switches the seg net off in refinement."""
    anatomy_downsample: int = 2
    label_weight: float = 5.0
    """Weight of the label term (``method=adam`` only): the moving image's own labels, one-hot and warped,
    against the seg net's softmax of the fixed image, as ConvexAdam's class-weighted squared difference
    (:func:`deepatlas.registration.refine.label_loss`) on the anatomy grid. Used only where the moving
    image's labels reach the refinement, when asked (``register`` / ``atlas-segment --label-term``); never
    for unlabelled pairs. Weight 5 on the 2x anatomy grid: on ixi-2mm validation atlas pairs it lifted
    each atlas's Dice by ~2 points but the 5-atlas fused Dice by ~0.1 (the atlases all move
    toward one seg net) at ~3x the refinement's time, so it is not on by default; a 4x grid is cheaper
    but loses Dice (benchmarks/results/registration/label_term.md). 0 switches it off."""
    form: str = "add"
    """How the Adam residual meets the net's deformation (``method=adam``; :data:`deepatlas.options.REFINE_FORM`):
    ``add``, the residual added to the net's field, the diffusion penalty on the total; ``compose``, a
    displacement ``psi`` optimised after the net's deformation, ``phi = phi_net o psi`` (the moving image seen
    through the net's field), the penalty on ``psi`` alone; ``flow``, the same with ``psi`` the flow of a
    stationary velocity (scaling and squaring), so the refinement adds no folds to the net's. The penalty on
    the total field holds back what the net under-predicts, e.g. a ventricle far larger than the atlas's
    (issue 38: benchmarks/results/atlas_atrophy)."""
    for_volumes: list[str] = field(default_factory=lambda: ["form=compose", "regularizer_weight=0.5"])
    """Overrides (``key=value``, as ``--refine``) applied first where a registration's warped labels are counted
    as volumes: ``morphometry``'s atlases (``--from atlas``, ``--atlas``); a command's own ``--refine`` comes after
    them (:meth:`volumes`, :meth:`~deepatlas.inference.TrainedRun.for_volumes`). The settings above, whose penalty
    on the total field keeps registrations between young brains smooth, hold an atlas back from an enlarged
    ventricle; a weaker penalty on the refinement's own correction follows it at the same Dice. ``[]``: as
    ``register``."""
    for_maps: list[str] = field(default_factory=lambda: ["regularizer_weight=1"])
    """Overrides applied first where a registration's Jacobian determinant is the output: ``morphometry``'s
    log-Jacobian maps (each subject registered to the template; :meth:`maps`,
    :meth:`~deepatlas.inference.TrainedRun.for_maps`), then ``--refine``. Half ``register``'s penalty on the total
    field reads more of a structure's growth voxel by voxel at about the same noise; :attr:`for_volumes`' composed
    residual reads more over a region but is rough voxel by voxel, wrong in sign in a thin band that grows
    (docs/defaults.md). ``[]``: as ``register``."""
    method: str = "adam"
    """``adam`` (the settings above: additive Adam steps, diffusion penalty) or ``greedy`` (compositive
    steps of the Gaussian-smoothed LNCC gradient, the smoothed field as the only regulariser, as
    PICSL greedy: :mod:`deepatlas.registration.greedy`, settings ``greedy_*``; no anatomy or label term).
    ixi-2mm validation figures against adam: benchmarks/results/registration/greedy_mode.md."""
    # The greedy mode's own defaults, chosen on the ixi-2mm validation pairs from the shipped net's
    # field (benchmarks/results/registration/greedy_mode.md): greedy's sigmas and step; the net's
    # field kept and a residual optimised after it; no 4x level (greedy's first level, from the
    # identity), since the net has done that part, and steps at full resolution, where the gain is.
    greedy_levels: list[int] = field(default_factory=lambda: [2, 1])
    """Image pooling factor of each greedy level, coarse to fine (greedy itself: 4, 2, 1)."""
    greedy_iterations: list[int] = field(default_factory=lambda: [20, 10])
    """Greedy steps at each level (greedy itself: 100x50x10 from the identity). A full-resolution
    step costs ~8 at 2x, so the full-resolution count sets the time."""
    greedy_sigma_grad: float = 1.732
    """Gaussian sigma (voxels of the level) of the step: greedy's default ``-s 1.732vox``."""
    greedy_sigma_field: float = 0.7071
    """Gaussian sigma (voxels of the level) applied to the composed field: greedy's ``0.7071vox``."""
    greedy_epsilon: float = 1.0
    """Largest displacement of one step, voxels of the level (greedy's ``-e``, default 1)."""
    greedy_step_quantile: float = 1.0
    """Which displacement of a step is ``greedy_epsilon`` long: 1, the largest (greedy); 0.99, the 99th
    percentile of the voxels' (the few largest go further): larger steps in most of the brain."""
    greedy_residual: bool = True
    """Optimise ``psi`` in ``phi = phi_net o psi`` (the moving image seen through the net's field) and
    smooth ``psi`` only; false: greedy's own form, the whole field composed and smoothed, which
    smooths the net's detail away too (less Dice from the net's field: greedy_mode.md)."""

    def validate(self) -> None:
        """Refuse settings that cannot run, with the key to change."""
        self._validate_greedy()
        if not self.levels or len(self.levels) != len(self.iterations):
            raise ValueError(
                f"config refine.levels and refine.iterations need the same, non-zero number of "
                f"entries, got {self.levels} and {self.iterations}"
            )
        for key, values in (("levels", self.levels), ("iterations", self.iterations)):
            if any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
                raise ValueError(f"config refine.{key}: every entry must be an integer >= 1, got {values}")
        for key in ("lr", "regularizer_weight", "anatomy_weight", "label_weight", "adam_eps"):
            value = getattr(self, key)
            if not value >= 0 or (key == "lr" and value == 0):
                raise ValueError(f"config refine.{key} must be {'> 0' if key == 'lr' else '>= 0'}, got {value}")
        if self.control_spacing < 1 or self.smoothing < 0 or self.anatomy_downsample < 1:
            raise ValueError(
                "config refine.control_spacing and refine.anatomy_downsample must be >= 1, refine.smoothing >= 0"
            )
        if self.lncc_window < 1 or self.lncc_window % 2 == 0:
            raise ValueError(f"config refine.lncc_window must be a positive odd number, got {self.lncc_window}")
        options.look_up_option(self.similarity, options.REFINE_SIMILARITY, "config refine.similarity")
        options.look_up_option(self.form, options.REFINE_FORM, "config refine.form")
        self._validate_presets()

    def _validate_presets(self) -> None:
        """:attr:`for_volumes` and :attr:`for_maps` name settings of this section (not themselves or ``enabled``);
        whether they run with the rest is checked where they are applied (:meth:`volumes`, :meth:`maps`), after a
        command's ``--refine``."""
        known = {f.name for f in dataclasses.fields(self)} - {*PRESETS, "enabled"}
        for preset in PRESETS:
            items = getattr(self, preset)
            keys = [str(item).split("=", 1)[0].strip() for item in items]
            wrong = [item for item, key in zip(items, keys) if "=" not in str(item) or key not in known]
            if wrong:
                raise ValueError(
                    f"config refine.{preset}: {wrong} are not key=value settings of the refine section "
                    f"(keys: {', '.join(sorted(known))})"
                )

    def volumes(self, overrides: list[str] | None = None) -> RefineConfig:
        """These settings as a registration read for volumes runs them: :attr:`for_volumes`, then ``overrides``
        (a command's ``--refine``), applied and checked."""
        return self.with_overrides([*self.for_volumes, *(overrides or [])])

    def maps(self, overrides: list[str] | None = None) -> RefineConfig:
        """These settings as a registration read for its Jacobian runs them: :attr:`for_maps`, then
        ``overrides``, applied and checked."""
        return self.with_overrides([*self.for_maps, *(overrides or [])])

    def _validate_greedy(self) -> None:
        """The ``method`` and ``greedy_*`` checks of :meth:`validate`."""
        options.look_up_option(self.method, options.REFINE_METHOD, "config refine.method")
        levels, iterations = self.greedy_levels, self.greedy_iterations
        if not levels or len(levels) != len(iterations):
            raise ValueError(
                f"config refine.greedy_levels and refine.greedy_iterations need the same, non-zero number of "
                f"entries, got {levels} and {iterations}"
            )
        for key, values in (("greedy_levels", levels), ("greedy_iterations", iterations)):
            low = 0 if key == "greedy_iterations" else 1  # 0 steps: skip a level
            if any(not isinstance(v, int) or isinstance(v, bool) or v < low for v in values):
                raise ValueError(f"config refine.{key}: every entry must be an integer >= {low}, got {values}")
        if not 0 < self.greedy_step_quantile <= 1:
            raise ValueError(f"config refine.greedy_step_quantile must be in (0, 1], got {self.greedy_step_quantile}")
        for key in ("greedy_sigma_grad", "greedy_sigma_field", "greedy_epsilon"):
            value = getattr(self, key)
            if not value >= 0 or (key == "greedy_epsilon" and value == 0):
                raise ValueError(
                    f"config refine.{key} must be {'> 0' if key == 'greedy_epsilon' else '>= 0'}, got {value}"
                )
        if self.method == "greedy" and self.form != "add":
            raise ValueError(
                f"config refine.form={self.form} is a form of refine.method=adam; greedy composes its own residual "
                "after the net's field (refine.greedy_residual): set refine.form=add or refine.method=adam"
            )
        if self.method == "greedy" and self.anatomy_weight > 0:
            raise ValueError(
                "config refine.anatomy_weight must be 0 with refine.method=greedy (it has no anatomy term yet): "
                "set refine.anatomy_weight=0 or refine.method=adam"
            )

    def with_overrides(self, overrides: list[str]) -> RefineConfig:
        """A copy with ``key=value`` overrides (values as YAML: ``iterations=[60,30]``), checked."""
        refine = build_dataclass(RefineConfig, apply_overrides(dataclasses.asdict(self), overrides), "refine.")
        refine.validate()
        return refine


@dataclass
class ScheduleConfig:
    # Chosen on the ixi-2mm validation split at equal 15-minute budgets (docs/results.md): the
    # seg-heavy schedule (400 seg + 150 reg pre-training, 10:10 cycles) beat the earlier 100 + 300,
    # 20:5 at N=1 and N=5 (validation seg Dice 0.61 vs 0.21 at N=1); its seg net beat the seg net
    # trained alone on the test split. Seg pre-training gives the anatomy loss predictions worth
    # matching; the seg net, not the reg net, is what needs the steps. About 26 minutes on 2 CPU
    # cores at 80x96x80; both nets were still improving at the end: train longer if you can.
    seg_pretrain_steps: int = 400
    reg_pretrain_steps: int = 150
    cycles: int = 40
    reg_steps_per_cycle: int = 10
    seg_steps_per_cycle: int = 10
    batch_size: int = 2
    """Pairs per step (registration and segmentation phases)."""
    # 3e-3 measured: reg Dice 0.662 vs 0.660 at bending 2, 0.671 vs 0.664 at bending 0.5;
    # 1e-3 kept, the gain is small and the larger step is the less stable one
    reg_lr: float = 1e-3
    seg_lr: float = 1e-3
    reg_pair_weights: dict[str, float] = field(
        default_factory=lambda: {"neither": 1.0, "moving": 1.0, "fixed": 1.0, "both": 1.0}
    )
    seg_pair_weights: dict[str, float] = field(default_factory=lambda: {"moving": 1.0, "fixed": 1.0})
    val_every: int = 250
    checkpoint_every: int = 100
    time_budget_minutes: float | None = None
    """Stop after this much wall-clock time in training (validation and checkpoints included,
    summed over resumes), wherever the schedule is; None runs the whole schedule. With a
    budget, make the schedule longer than the budget (many cycles) and let the clock end it."""
    lr_decay: float = 0.0
    """Fraction of the run at its end over which both learning rates fall linearly to 0 (0: they
    stay constant). The run's end is whichever comes first of the schedule's last step and the
    time budget, so with a budget the decay follows the clock (``deepatlas.training.schedule.lr_scale``).
    A run may be resumed with decay switched on (to finish it off); one resumed with a longer
    budget after its decay had begun goes back to the rate of its new position in the run."""

    def validate(self) -> None:
        """Refuse a learning-rate decay outside [0, 1], a budget that is not positive, and a
        schedule of :data:`deepatlas.options.UNTIL_BUDGET` steps with no budget to end it."""
        if not 0 <= self.lr_decay <= 1:
            raise ValueError(f"config schedule.lr_decay must be in [0, 1], got {self.lr_decay!r}")
        budget = self.time_budget_minutes
        if budget is not None and not budget > 0:
            raise ValueError(f"config schedule.time_budget_minutes must be > 0 (or null), got {budget!r}")
        endless = [
            f"schedule.{key}={getattr(self, key)}"
            for key in ("seg_pretrain_steps", "reg_pretrain_steps", "cycles")
            if getattr(self, key) >= options.UNTIL_BUDGET
        ]
        if endless and budget is None:
            raise ValueError(
                f"config {', '.join(endless)} means until the time budget ends the run, and there is none: "
                "set schedule.time_budget_minutes (or fewer steps)"
            )


def _check_fraction(key: str, value: Any, zero: bool = True) -> None:
    """Refuse a ``config <key>`` that is not a number in [0, 1] (``zero=False``: in (0, 1])."""
    number = not isinstance(value, bool) and isinstance(value, (int, float))
    if not number or not (0 <= value <= 1 if zero else 0 < value <= 1):
        raise ValueError(f"config {key} must be in {'[' if zero else '('}0, 1], got {value!r}")


@dataclass
class TeacherConfig:
    """Refined weak supervision for the seg net (:mod:`deepatlas.training.teachers`).

    In a segmentation step, an unlabelled image is taught by a labelled image's labels warped
    onto it. By default the frozen reg net warps them, afresh at every step. With teachers on,
    each unlabelled image gets its labels once from a registration refined per pair (the run's
    ``refine`` settings, started from the current reg net), kept and recomputed when stale:
    better labels for a one-off cost, and the seg step no longer runs the reg net.
    """

    enabled: str = "auto"
    """``on``, ``off`` or ``auto``: on when the training set has at most
    :data:`deepatlas.options.TEACHERS_AUTO_MAX_LABELLED` labelled images (one-shot training, where
    the reg net's own warp is the only supervision of most images and teachers paid most)."""
    refresh_steps: int = 400
    """Training steps after which an image's teacher is stale: the next step that draws it
    recomputes it with the nets of then (the reg net improves, the teacher follows)."""
    atlases: int = 1
    """Labelled images (drawn at random, capped at how many there are) warped onto each
    unlabelled one and fused into its teacher by a vote weighted by local similarity, as
    ``atlas-segment`` does: multi-atlas labels, better than any one warp, for that many
    registrations per teacher (~0.8 s each at 80x96x80 on 2 CPU cores). 1: one warp, no vote."""
    max_share: float = 1.0
    """Most of the training time that making teachers may take (1: no cap). Beyond it no teacher
    is made or remade: a segmentation step that draws an image without one trains on an image
    that has one instead, so dear teachers (many atlases) teach fewer images rather than eat the
    budget. Below 1 the clock decides which images are taught: such runs are not reproducible
    bit for bit. Measured at five atlases, 15 minutes: 0.25 made the seg net 6 points better than
    no cap, still 8 below the seg net alone (docs/results.md)."""

    loss: str = "anatomy"
    """How a teacher trains the seg net (:data:`deepatlas.options.TEACHER_LOSS`): ``anatomy``
    (soft Dice on the anatomy loss's grid, weight ``loss.anatomy_weight_seg``) or ``supervised``
    (DiceCE at full resolution, same weight) in DeepAtlas' pair step, which runs the seg net on
    four images; or ``distil``: seg steps become supervised steps on one labelled and one taught
    image (batch of 2), teachers taken as manual labels, as cheap as the seg net alone's step.
    For teachers better than the seg net, such as fused ones (docs/results.md)."""

    synthesis: float = 0.0
    """Share (0 to 1) of the taught places of a distilled step (``loss: distil``) given to
    synthesised labelled images instead of unlabelled images with their teachers: the labelled
    image and its labels warped together by the teacher's registration, its appearance matched to
    the unlabelled image's (:mod:`deepatlas.training.synthesis`): exact labels on a real subject's
    shape. 0: off. Costs one image warp per teacher and 0.5 MB of memory per unlabelled image."""
    taught_share: float = 0.5
    """Share (0 to 1) of a distilled step's images (``loss: distil``) that are taught (an unlabelled
    image with its teacher, or a synthesised one) rather than labelled. 0.5: half each, and at batch
    1 the two in turn; more gives the labelled images' places to the taught ones (with one labelled
    image and synthesised pairs, 0.75 and 1 measured level with 0.5: docs/results.md "Registration as
    the seg net's augmenter")."""
    synthesis_appearance: bool = True
    """Match a synthesised image's intensities to the unlabelled image's, class by class (Zhao et al.'s
    appearance transform); False keeps the labelled image's own intensities, warped (the ablation that
    says what the shapes alone buy)."""
    guide_registration: bool = False
    """Teachers also stand in for the labels of unlabelled images in the reg net's anatomy loss
    (where it would read the seg net's prediction): the reg net learns from refined multi-atlas
    labels on every pair, and its step skips the seg net's pass over those images."""
    self_teach_after: float = 0.0
    """Share (0 to 1) of ``schedule.time_budget_minutes`` after which each unlabelled image's teacher is
    remade once, when next drawn, from the seg net's own prediction of that image (its softmax averaged
    with the mirrored image's where every side-named class has its twin): self-training, for when the seg
    net has come to segment the unlabelled images better than one registration of an atlas does. The
    synthesised pairs stay as they were made (their labels are exact). 0: off; needs a time budget.
    Measured in docs/results.md "Registration as the seg net's augmenter"."""
    refine_levels: list[int] | None = None
    """Refinement levels of the registrations that make teachers (None: the run's ``refine.levels``).
    Teachers are made once per image and early, when the reg net is still poor: a longer schedule
    than ``register`` needs pays there (``[4, 2, 1]`` in the distil recipe), without changing how
    the trained run registers."""
    refine_iterations: list[int] | None = None
    """Adam iterations per level for teachers (None: the run's ``refine.iterations``)."""

    def refine_settings(self, run: RefineConfig) -> RefineConfig:
        """The run's refinement settings with the teachers' own levels and iterations, checked."""
        keys = {"levels": self.refine_levels, "iterations": self.refine_iterations}
        overrides = [f"{key}={json.dumps(value)}" for key, value in keys.items() if value is not None]
        try:
            return run.with_overrides(overrides)
        except ValueError as err:
            raise ValueError(str(err).replace("refine.", "teachers.refine_")) from None

    def validate(self) -> None:
        options.look_up_option(self.loss, options.TEACHER_LOSS, "config teachers.loss")
        for key in ("refresh_steps", "atlases"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"config teachers.{key} must be an integer >= 1, got {value!r}")
        _check_fraction("teachers.synthesis", self.synthesis)
        _check_fraction("teachers.taught_share", self.taught_share)
        _check_fraction("teachers.max_share", self.max_share, zero=False)
        _check_fraction("teachers.self_teach_after", self.self_teach_after)
        synthesis = self.synthesis
        if synthesis > 0 and self.loss != "distil":
            raise ValueError(
                f"config teachers.synthesis={synthesis} needs teachers.loss=distil (it fills the distilled "
                f"step's taught places), got teachers.loss={self.loss}; set both, or synthesis=0"
            )
        if not isinstance(self.synthesis_appearance, bool):
            raise ValueError(
                f"config teachers.synthesis_appearance must be true or false, got {self.synthesis_appearance!r}"
            )

    def active(self, labelled: int) -> bool:
        """Whether a training set with ``labelled`` labelled images gets teachers."""
        return options.switch_on(self.enabled, labelled <= options.TEACHERS_AUTO_MAX_LABELLED)


@dataclass
class AugmentConfig:
    """Random changes of the labelled images in the seg net's supervised loss
    (:mod:`deepatlas.data.augment`): against memorising few labelled images. Registration steps
    and the teachers' registrations never see augmented images."""

    enabled: str = "auto"
    """``on``, ``off`` or ``auto``: on when the training set has at most
    :data:`deepatlas.options.AUGMENT_AUTO_MAX_LABELLED` labelled images and ``data.normalize`` is
    on (at one labelled image the seg net alone gained 13 Dice points, the joint one 2.6)."""
    rotate_degrees: float = 10.0
    """Largest rotation about each axis, degrees."""
    scale: float = 0.1
    """Largest isotropic zoom, as a fraction (0.1: 0.9 to 1.1)."""
    translate_voxels: float = 4.0
    """Largest shift along each axis, voxels."""
    gamma: float = 0.3
    """Largest contrast change: intensity to a power within 1/1.3 to 1.3."""
    noise: float = 0.02
    """Largest standard deviation of added Gaussian noise (images are normalised to [0, 1])."""
    resize: float = 0.0
    """Largest strength (voxels) of structure resizing (:mod:`deepatlas.training.resize`): per augmented
    image, ``resize_structures`` structures grow or shrink by the flow of their smoothed mask's gradient,
    labels with them: sizes beyond the training set's (large ventricles). 0: off."""
    resize_structures: int = 3
    """How many structures (drawn at random among those present) each resized image changes."""
    resize_classes: list[str] = field(default_factory=list)
    """The structures (names in the run's label map) that resizing draws from; empty: every structure.
    Aimed at what aging changes (ventricles, hippocampi) rather than 3 of 31 at random: an image's
    ventricles are then resized every time, not about one time in five (docs/results.md,
    "Morphometry against the truth")."""

    resize_image: str = "linear"
    """How resizing resamples the image (:data:`deepatlas.options.RESIZE_IMAGE`): ``linear`` blurs a grown
    structure's boundary where its labels move by a fraction of a voxel, which real scans and the
    synthetic-atrophy benchmark's brains (``cubic``) do not; ``cubic`` costs ~0.15 s per resized image on
    the CPU. Measured, it did not pay: small enlargements were recovered no better and the net became more
    sensitive to a blur (docs/results.md, "Resizing without its blur"), so ``linear`` stays."""

    resize_labels: str = "nearest"
    """How resizing moves the label map (:data:`deepatlas.options.RESIZE_LABELS`): ``nearest`` leaves every
    label in place where a boundary moves by less than half a voxel, so small growths teach the net to ignore
    the image's change; ``sampled`` draws each voxel's label from the voxels around its source point with their
    interpolation weights (partial volumes on average). ``nearest`` stays: over three training draws ``sampled``
    gained less on small changes than the draws' own spread, and over-measured the hippocampi (docs/results.md,
    "Labels that move by a fraction of a voxel")."""

    resize_sampled_classes: list[str] = field(default_factory=list)
    """With ``resize_labels=sampled``: the structures (names) whose boundaries take drawn labels; the others move
    by nearest neighbour. Empty: every structure. Tried to keep the hippocampi's bias down while the ventricles'
    small changes are learned; it did not (docs/results.md, "Labels that move by a fraction of a voxel")."""

    flip: float = 0.0
    """Chance that an augmented image is mirrored left-right, each structure's label turned into its twin's on
    the other side (``Hippocampus-L`` <-> ``-R``, by name: :meth:`deepatlas.data.labels.LabelScheme.mirrored`),
    as SynthSeg's training does: both sides learn from both sides' labels. 0: off, the default: whether it
    pays is measured in docs/results.md ("Morphometry against the truth")."""

    blur: float = 0.0
    """Largest Gaussian blur (sigma, voxels) of an augmented image, its labels unchanged
    (:mod:`deepatlas.training.blur`): each image blurred by a sigma drawn uniformly in ``[0, blur]``, so the
    net learns that a softer scan (another scanner, a resampled one) shows the same anatomy. Measured, 1 voxel
    made the ventricles' volumes nearly independent of a blur but the hippocampi read larger in blurred and
    sharp brains alike, so it stays off (docs/results.md, "Volumes that do not depend on the scan's
    sharpness"). 0: off, the default."""

    hypointensity: float = 0.0
    """Chance that an augmented image has its white matter darkened around the ventricles, its labels unchanged
    (:mod:`deepatlas.training.hypointensity`): aging's periventricular lesions, which a net trained on young brains
    reads as ventricle. 0: off, the default: whether it pays is measured in docs/results.md ("White matter darkened
    around the ventricles"). 3D runs only."""
    hypointensity_near: list[str] = field(default_factory=lambda: ["LateralVentricle-L", "LateralVentricle-R"])
    """The structures (names) the darkened band surrounds; their median intensity is the darkest it gets toward."""
    hypointensity_within: list[str] = field(default_factory=lambda: ["CerebralWM-L", "CerebralWM-R"])
    """The structures (names) that are darkened: the band is drawn inside them only."""

    def active(self, labelled: int, normalized: bool = True) -> bool:
        """Whether a training set with ``labelled`` labelled images is augmented (``normalized``:
        intensities in [0, 1], which ``auto`` needs; ``on`` without them is refused by the config)."""
        return options.switch_on(self.enabled, normalized and labelled <= options.AUGMENT_AUTO_MAX_LABELLED)

    def validate(self) -> None:
        for key in (
            "rotate_degrees",
            "scale",
            "translate_voxels",
            "gamma",
            "noise",
            "resize",
            "resize_structures",
            "blur",
        ):
            if not getattr(self, key) >= 0:
                raise ValueError(f"config augment.{key} must be >= 0, got {getattr(self, key)!r}")
        for key in ("resize_classes", "resize_sampled_classes", "hypointensity_near", "hypointensity_within"):
            names = getattr(self, key)
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"config augment.{key} must be a list of structure names, got {names!r}")
        if self.resize_sampled_classes and self.resize_labels != "sampled":
            raise ValueError(
                f"config augment.resize_sampled_classes names the structures whose labels are drawn, which only "
                f"augment.resize_labels=sampled does (got {self.resize_labels!r}): set both, or leave the list empty"
            )
        for key in ("flip", "hypointensity"):
            if not 0 <= getattr(self, key) <= 1:
                raise ValueError(f"config augment.{key} must be a chance between 0 and 1, got {getattr(self, key)!r}")
        if self.scale >= 1 or self.rotate_degrees > 180:
            raise ValueError(
                f"config augment: scale must be < 1 and rotate_degrees <= 180, got {self.scale}, {self.rotate_degrees}"
            )


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    seg_net: SegNetConfig = field(default_factory=SegNetConfig)
    reg_net: RegNetConfig = field(default_factory=RegNetConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    teachers: TeacherConfig = field(default_factory=TeacherConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    device: str = "auto"
    """``auto`` (CUDA if available), ``cpu``, ``cuda``, ``cuda:1`` ..."""
    amp: str = "auto"
    """Mixed precision: ``auto`` = on for CUDA and for CPUs with native bf16, ``on``, ``off``."""
    threads: int | None = None
    init_from: str | None = None
    """A trained run (its folder, or a shipped model's name such as ``brain-2mm``) whose networks' weights
    start this run: fine-tuning, e.g. the shipped model on your own labelled scans. Its network settings
    (``seg_net``, ``reg_net``) and number of classes must be this run's; only the weights are read (its
    best checkpoint), not its optimiser. A resumed run starts from its own checkpoint instead."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        from deepatlas.files import atomic_write_text

        atomic_write_text(Path(path), yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> Config:
        config = build_dataclass(cls, spec or {}, "")
        config.validate()
        return config

    @classmethod
    def from_saved(cls, spec: dict[str, Any]) -> Config:
        """The config of a run saved by any deepatlas version: a key the run's version did not
        have takes the value that version used (:data:`SAVED_RUN_DEFAULTS`), not today's default,
        so its networks are rebuilt as they were trained."""
        spec = copy.deepcopy(spec or {})
        for key, value in SAVED_RUN_DEFAULTS.items():
            section, name = key.split(".")
            # a saved run writes every section it knew: a missing one is newer than the run
            if isinstance(spec.setdefault(section, {}), dict):
                spec[section].setdefault(name, value)
        return cls.from_dict(spec)

    def validate(self) -> None:
        """Refuse values that would only fail later, deep inside training."""
        choices = {
            "loss.similarity": (self.loss.similarity, options.SIMILARITY),
            "loss.regularizer": (self.loss.regularizer, options.REGULARIZER),
            "loss.inverse_consistency": (self.loss.inverse_consistency, options.INVERSE_CONSISTENCY),
            "data.unknown_labels": (self.data.unknown_labels, options.UNKNOWN_LABELS),
            "data.wrong_sides": (self.data.wrong_sides, options.WRONG_SIDES),
            "seg_net.mirror_average": (self.seg_net.mirror_average, options.MIRROR_AVERAGE),
            "seg_net.subvoxel_average": (self.seg_net.subvoxel_average, options.SUBVOXEL_AVERAGE),
            "seg_net.norm": (self.seg_net.norm, options.NORM),
            "reg_net.norm": (self.reg_net.norm, options.NORM),
            "seg_net.top_layer": (self.seg_net.top_layer, options.TOP_LAYER),
            "reg_net.top_layer": (self.reg_net.top_layer, options.TOP_LAYER),
            "amp": (self.amp, options.AMP),
            "teachers.enabled": (self.teachers.enabled, options.TEACHERS),
            "augment.enabled": (self.augment.enabled, options.AUGMENT),
            "augment.resize_image": (self.augment.resize_image, options.RESIZE_IMAGE),
            "augment.resize_labels": (self.augment.resize_labels, options.RESIZE_LABELS),
        }
        for key, (value, allowed) in choices.items():
            options.look_up_option(value, allowed, f"config {key}")
        if not self.loss.supervised_dice_weight >= 0:
            raise ValueError(
                f"config loss.supervised_dice_weight must be >= 0, got {self.loss.supervised_dice_weight!r}"
            )
        for name in ("seg_net", "reg_net"):
            net = getattr(self, name)
            if len(net.strides) != len(net.channels) - 1:
                raise ValueError(
                    f"config {name}: strides needs len(channels) - 1 = {len(net.channels) - 1} "
                    f"entries, got {len(net.strides)}"
                )
        if not 0 <= self.seg_net.atlas_vote < math.inf:  # also NaN
            raise ValueError(f"config seg_net.atlas_vote: a finite number >= 0, got {self.seg_net.atlas_vote}")
        self.refine.validate()
        self.teachers.validate()
        self.augment.validate()
        if self.augment.enabled in (True, "on") and not self.data.normalize:
            # gamma and noise are sized for intensities in [0, 1]
            raise ValueError("config augment.enabled needs data.normalize=true (intensities in [0, 1])")
        self.teachers.refine_settings(self.refine)
        if self.teachers.self_teach_after > 0 and self.schedule.time_budget_minutes is None:
            raise ValueError(
                f"config teachers.self_teach_after={self.teachers.self_teach_after} is a share of the time budget: "
                "set schedule.time_budget_minutes, or teachers.self_teach_after=0"
            )
        if not self.loss.inverse_consistency_weight >= 0:
            raise ValueError(
                f"config loss.inverse_consistency_weight must be >= 0, got {self.loss.inverse_consistency_weight}"
            )
        self.schedule.validate()
        if self.schedule.batch_size < 1 or self.loss.anatomy_downsample < 1 or self.loss.lncc_window % 2 == 0:
            raise ValueError(
                "config: schedule.batch_size and loss.anatomy_downsample must be >= 1, loss.lncc_window odd"
            )


SAVED_RUN_DEFAULTS = {
    "seg_net.top_layer": "transposed",
    "reg_net.top_layer": "transposed",
    "teachers.enabled": "off",
    "augment.enabled": "off",
}
"""Keys whose default changed, with the value runs saved before the key existed were trained with."""


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, saved: bool = False) -> Config:
    """Read a YAML/JSON config (or start from defaults) and apply overrides; ``saved``: the file is
    a run folder's ``config.yaml`` (:meth:`Config.from_saved`)."""
    spec: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            spec = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ValueError(f"{path}: cannot read config: {err}") from None
    try:
        spec = apply_overrides(spec, overrides or [])
        return Config.from_saved(spec) if saved else Config.from_dict(spec)
    except ValueError as err:
        raise ValueError(f"{path}: {err}" if path is not None else str(err)) from None
