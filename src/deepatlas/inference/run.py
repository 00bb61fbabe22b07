"""Loading trained networks from a run folder."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deepatlas.checkpoint import check_finite_weights, load_checkpoint
from deepatlas.config import Config, RefineConfig
from deepatlas.data.io import Volume
from deepatlas.data.labels import LabelScheme
from deepatlas.data.template import TEMPLATE_PATH, load_template
from deepatlas.networks import RegistrationNet, SegmentationNet
from deepatlas.networks.factory import build_networks
from deepatlas.registration import RegistrationPipeline, build_pipeline
from deepatlas.run_folder import RunFolder, resolve_run, shipped_models


@dataclass
class TrainedRun:
    """The two trained networks of a run, with what is needed to use them."""

    reg_net: RegistrationNet
    seg_net: SegmentationNet
    config: Config
    scheme: LabelScheme
    step: int
    path: Path
    grid_shape: tuple[int, ...]
    grid_affine: np.ndarray
    pipeline: RegistrationPipeline | None = None
    """How this run registers a pair (net, then refinement as ``config.refine`` says); see
    :meth:`set_refinement`."""
    template: Volume | None = None
    """The image defining the model's space, to which ``--align`` brings inputs (:func:`run_template`)."""
    refine_overrides: list[str] | None = dataclasses.field(default_factory=list)
    """A command's ``--refine`` settings, kept so that :meth:`for_volumes` and :meth:`for_maps` apply them after
    their preset (``refine.for_volumes``, ``refine.for_maps``); ``None``: the net alone (``--net-only``)."""

    def __post_init__(self) -> None:
        if self.pipeline is None:
            self.set_refinement(self.config.refine)

    @property
    def folder(self) -> RunFolder:
        """The run folder of the checkpoint (``path`` is ``<run>/checkpoints/<name>.pt``)."""
        return RunFolder(self.path.parent.parent)

    def set_refinement(self, refine: RefineConfig | None) -> None:
        """Register with these refinement settings from now on; ``None``: the net alone."""
        if refine is None:
            refine = dataclasses.replace(self.config.refine, enabled=False)
        self.pipeline = build_pipeline(self.config, self.reg_net, self.seg_net, refine)

    def with_refinement(self, refine: RefineConfig | None) -> TrainedRun:
        """A copy sharing the networks (and config) that registers with ``refine`` (:meth:`set_refinement`)."""
        changed = dataclasses.replace(self)
        changed.set_refinement(refine)
        return changed

    def for_volumes(self) -> TrainedRun:
        """This run as a registration whose warped labels are counted as volumes registers (``morphometry
        --from atlas`` / ``--atlas``): refined with ``refine.for_volumes`` then the command's ``--refine``
        (:meth:`RefineConfig.volumes`); itself where it registers with the net alone."""
        return self._with_preset(self.config.refine.volumes)

    def for_maps(self) -> TrainedRun:
        """This run as a registration whose Jacobian is read registers (``morphometry``'s log-Jacobian maps):
        refined with ``refine.for_maps`` then the command's ``--refine`` (:meth:`RefineConfig.maps`); itself
        where it registers with the net alone."""
        return self._with_preset(self.config.refine.maps)

    def _with_preset(self, preset: Callable[[list[str]], RefineConfig]) -> TrainedRun:
        """A copy refined with ``preset(--refine settings)``; itself with the net alone (``--net-only``)."""
        if self.refine_overrides is None:
            return self
        return self.with_refinement(preset(self.refine_overrides))


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu") -> TrainedRun:
    """Load ``checkpoints/<checkpoint>.pt`` of a run (``best``, falling back to ``last``), in eval mode.

    ``run_dir``: a run folder, or the name of a shipped model (``brain-2mm``:
    :func:`~deepatlas.run_folder.resolve_run`)."""
    run_dir = resolve_run(run_dir)
    folder = RunFolder(run_dir)
    path = folder.checkpoint(checkpoint)
    if checkpoint == "best" and not path.exists():
        path = folder.checkpoint("last")
    if not path.exists():
        raise FileNotFoundError(
            f"{run_dir}: not a trained run (no {path.relative_to(run_dir)}); give the folder "
            f"`deepatlas train -o` wrote, or a shipped model's name ({', '.join(shipped_models()) or 'none installed'})"
        )
    state = load_checkpoint(path, map_location=device)
    missing = [
        k
        for k in (
            "config",
            "label_scheme",
            "reg_net",
            "seg_net",
            "spatial_dims",
            "num_classes",
            "grid_shape",
            "grid_affine",
        )
        if k not in state
    ]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {missing}; it was written by an incompatible deepatlas version")
    check_finite_weights(state, ("reg_net", "seg_net"), path)
    config = Config.from_saved(state["config"])
    scheme = LabelScheme.from_dict(state["label_scheme"])
    reg_net, seg_net = build_networks(config, int(state["spatial_dims"]), int(state["num_classes"]))
    reg_net.load_state_dict(state["reg_net"])
    seg_net.load_state_dict(state["seg_net"])
    reg_net.to(device).eval()
    seg_net.to(device).eval()
    return TrainedRun(
        reg_net,
        seg_net,
        config,
        scheme,
        int(state["step"]),
        path,
        tuple(int(n) for n in state["grid_shape"]),
        np.asarray(state["grid_affine"], dtype=np.float64),
        template=run_template(folder, state),
    )


def run_template(folder: RunFolder, state: dict) -> Volume | None:
    """The run's ``template.nii.gz``; else the shipped template when the run was trained on its
    grid (ixi-2mm, prepared datasets, ``models/brain-2mm``); else None (no ``--align``)."""
    if folder.template.exists():
        return load_template(folder.template)
    if not TEMPLATE_PATH.exists():
        return None
    template = load_template()
    same = tuple(state["grid_shape"]) == template.array.shape and np.allclose(
        np.asarray(state["grid_affine"]), template.affine, atol=1e-3
    )
    return template if same else None
