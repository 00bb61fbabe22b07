"""The model shipped in models/brain-2mm: loads as data, registers and segments real brains."""

from pathlib import Path

import numpy as np
import pytest
import torch

from deepatlas.checkpoint import load_checkpoint
from deepatlas.data import find_subjects
from deepatlas.data.io import load_image, load_label_codes
from deepatlas.evaluation.metrics import dice_per_class, finite_mean
from deepatlas.inference import load_run
from deepatlas.inference.apply import register_volumes, segment_volume
from tests.conftest import IXI

MODEL = Path(__file__).resolve().parents[1] / "models" / "brain-2mm"
pytestmark = pytest.mark.skipif(not (IXI / "splits.json").exists(), reason=f"real data not found at {IXI}")


def test_the_model_file_is_data_and_small():
    state = load_checkpoint(MODEL / "checkpoints" / "best.pt")  # torch.load(weights_only=True)
    assert {"reg_net", "seg_net", "config", "label_scheme"} <= set(state)
    assert "reg_opt" not in state  # resuming state is not shipped
    assert sum(p.stat().st_size for p in MODEL.rglob("*") if p.is_file()) < 20 * 2**20
    assert (MODEL / "README.md").exists()


def test_the_model_registers_and_segments_a_test_pair():
    run = load_run(MODEL)
    scheme = run.scheme
    from deepatlas.data.splits import load_splits

    ids = load_splits(IXI / "splits.json")["test"][:2]
    subjects = {s.id: s for s in find_subjects(IXI)}
    (moving, moving_labels), (fixed, fixed_labels) = [
        (load_image(subjects[i].image), load_label_codes(subjects[i].label)) for i in ids
    ]
    target = torch.from_numpy(scheme.encode(fixed_labels.array, unknown="background"))

    def dice(codes):
        return finite_mean(
            dice_per_class(torch.from_numpy(scheme.encode(codes, unknown="background")), target, scheme.num_classes)
        )

    result = register_volumes(run, moving, fixed, moving_labels)
    assert dice(result.warped_labels) > dice(moving_labels.array) + 0.08
    assert float((result.jacobian[fixed_labels.array > 0] <= 0).mean()) < 0.001
    assert dice(segment_volume(run, fixed)) > 0.5
    assert np.isfinite(result.displacement).all()
