"""A few real training steps in 3D on ixi-2mm (skipped when the shared data is absent)."""

import json

import pytest

from deepatlas.config import Config
from deepatlas.data import find_subjects, load_training_data
from deepatlas.training.run import train
from tests.conftest import IXI

pytestmark = pytest.mark.skipif(
    not (IXI / "splits.json").exists(), reason=f"real data not found at {IXI} (shared/data/ixi-2mm)"
)


def test_train_a_few_steps_on_real_brains(tmp_path):
    subjects = find_subjects(IXI)[:6]
    manifest = tmp_path / "ixi6.json"
    manifest.write_text(
        json.dumps({"subjects": [{"id": s.id, "image": str(s.image), "label": str(s.label)} for s in subjects]})
    )
    config = Config()
    config.data.dataset = str(manifest)
    config.data.label_map = str(IXI / "brain31.json")
    config.data.unknown_labels = "background"
    config.data.num_labelled = 2
    s = config.schedule
    s.seg_pretrain_steps, s.reg_pretrain_steps, s.cycles, s.reg_steps_per_cycle, s.seg_steps_per_cycle = 1, 1, 1, 2, 2
    data = load_training_data(config.data, progress=False)
    assert data.train.shape == (80, 96, 80) and data.scheme.num_classes == 32
    assert int(data.train.labels.max()) <= 31 and data.train.has_label.sum() == 2
    summary = train(config, tmp_path / "run", progress=False, data=data)
    assert summary["finished"]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records] == ["seg_pretrain", "reg_pretrain", "reg", "reg", "seg", "seg"]
    assert all(r["loss"] == r["loss"] for r in records)  # no NaN


def test_unlisted_muse_codes_need_the_users_word():
    config = Config()
    config.data.dataset = str(IXI)
    config.data.label_map = str(IXI / "brain31.json")
    config.data.splits = str(IXI / "splits.json")
    config.data.num_labelled = 1
    from deepatlas.data import DataError

    with pytest.raises(DataError, match="label codes not in the label-map file"):
        load_training_data(config.data, progress=False)
