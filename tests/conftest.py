import json
import os
import warnings
from pathlib import Path

import pytest
import torch

from deepatlas.config import Config
from deepatlas.data.synthetic import make_dataset

warnings.filterwarnings("ignore", message=".*Using PyTorch native grid_sample.*")
warnings.filterwarnings("ignore", message=".*non-tuple sequence for multidimensional indexing.*")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
IXI = SHARED_DATA / "ixi-2mm"


@pytest.fixture(scope="session")
def ixi() -> Path:
    """ixi-2mm for tests of real brains: a skip without it (a failure under CI, below)."""
    if not (IXI / "splits.json").exists():
        pytest.skip(f"real data not found at {IXI}")
    return IXI


def _needs_shared_data(item: pytest.Item) -> bool:
    """Whether a test reads ../shared/data: it takes the ``ixi`` fixture (directly or through
    another fixture), or carries a skipif whose reason names the data folder."""
    reasons = (str(mark.kwargs.get("reason", "")) for mark in item.iter_markers("skipif"))
    return "ixi" in getattr(item, "fixturenames", ()) or any("shared/data" in reason for reason in reasons)


def pytest_collection_modifyitems(config, items) -> None:
    """The ``data`` and ``benchmark`` markers, set here once rather than in every file."""
    for item in items:
        if _needs_shared_data(item):
            item.add_marker(pytest.mark.data)
        if item.path.name.startswith("test_benchmarks"):
            item.add_marker(pytest.mark.benchmark)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI (``CI=true``) a test that needs ../shared/data fails when the data is missing,
    instead of skipping: a CI run without the data must not pass by testing less."""
    report = yield
    optional = item.get_closest_marker("optional_package") is not None  # its package is the missing part
    if report.skipped and os.environ.get("CI") == "true" and item.get_closest_marker("data") and not optional:
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"CI=true: a test of ../shared/data ({SHARED_DATA}) may not skip; it skipped: {reason}"
    return report


@pytest.fixture(scope="session")
def phantoms_3d(tmp_path_factory) -> Path:
    return make_dataset(
        tmp_path_factory.mktemp("ph3d"),
        num_subjects=8,
        shape=(24, 28, 24),
        seed=1,
        splits={"train": 6, "validation": 2},
    )


@pytest.fixture(scope="session")
def phantoms_2d(tmp_path_factory) -> Path:
    return make_dataset(
        tmp_path_factory.mktemp("ph2d"), num_subjects=8, shape=(40, 48), seed=2, splits={"train": 6, "validation": 2}
    )


def tiny_config(dataset: Path, **schedule) -> Config:
    """Small nets and a short schedule: a training run in seconds on 2 cores."""
    config = Config()
    config.data.dataset = str(dataset)
    config.data.label_map = str(dataset / "labels.json")
    config.data.splits = str(dataset / "splits.json")
    config.data.num_labelled = 2
    config.seg_net.channels, config.seg_net.strides = [8, 16, 16], [2, 2]
    config.reg_net.channels, config.reg_net.strides = [8, 16, 16], [2, 2]
    config.amp = "off"
    # teachers (on by default with <= 2 labelled images) are tested where named: elsewhere the seg
    # step's reg-net warp, DeepAtlas' own weak supervision, is the path under test
    config.teachers.enabled = "off"
    config.augment.enabled = "off"  # likewise augmentation (on by default with <= 2 labelled images)
    s = config.schedule
    s.seg_pretrain_steps, s.reg_pretrain_steps, s.cycles = 2, 2, 2
    s.reg_steps_per_cycle, s.seg_steps_per_cycle = 3, 2
    s.val_every, s.checkpoint_every = 5, 5
    for key, value in schedule.items():
        setattr(s, key, value)
    return config


def augmenting_trainer(dataset: Path, **augment):
    """A tiny run's trainer that augments with only ``augment`` (e.g. ``flip=1.0``): no rotation, zoom, shift,
    contrast or noise, so a test sees what the named augmentation alone does to its labelled images."""
    from deepatlas.data import load_training_data
    from deepatlas.training import Trainer

    config = tiny_config(dataset)
    config.augment.enabled = True
    config.augment.rotate_degrees = config.augment.scale = config.augment.translate_voxels = 0
    config.augment.gamma = config.augment.noise = 0
    for key, value in augment.items():
        setattr(config.augment, key, value)
    return Trainer(config, load_training_data(config.data, progress=False).train, progress=False)


def augmented_at(trainer, key: str, values) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The trainer's labelled images and labels, and what ``trainer._augment`` makes of them with
    ``augment.<key>`` at each of ``values`` (value -> (images, labels)), each from the same random state."""
    images, labels = trainer.batches.to_device(trainer.labelled)
    out = {}
    for value in values:
        setattr(trainer.config.augment, key, value)
        trainer.generator.manual_seed(5)
        out[value] = trainer._augment(images, labels)
    return images, labels, out


def write_json(path: Path, value) -> Path:
    path.write_text(json.dumps(value))
    return path


@pytest.fixture(scope="session")
def trained_3d(phantoms_3d, tmp_path_factory) -> Path:
    """A small run trained by the test session (3D phantoms): the run folder."""
    from deepatlas.training.run import train

    run = tmp_path_factory.mktemp("run3d") / "run"
    train(tiny_config(phantoms_3d, seg_pretrain_steps=15, reg_pretrain_steps=10, cycles=1), run, progress=False)
    return run


@pytest.fixture(scope="session")
def trained_2d(phantoms_2d, tmp_path_factory) -> Path:
    from deepatlas.training.run import train

    run = tmp_path_factory.mktemp("run2d") / "run"
    train(tiny_config(phantoms_2d, seg_pretrain_steps=15, reg_pretrain_steps=10, cycles=1), run, progress=False)
    return run


def real_brains_4mm(count: int):
    """The first ``count`` ixi-2mm subjects pooled to 4 mm (``count x 1 x 40x48x40``) with their
    brain31 classes (``count x 1 x ...`` long, nearest by striding) and the label scheme."""
    import numpy as np
    import torch

    from deepatlas.data import find_subjects
    from deepatlas.data.io import load_image, load_label_codes
    from deepatlas.data.labels import LabelScheme
    from deepatlas.registration.fields import pool_image

    scheme = LabelScheme.from_file(IXI / "brain31.json")
    subjects = find_subjects(IXI)[:count]
    images = torch.cat([pool_image(torch.from_numpy(load_image(s.image).array)[None, None], 2) for s in subjects])
    labels = [scheme.encode(load_label_codes(s.label).array, unknown="background") for s in subjects]
    labels = torch.stack([torch.from_numpy(lab[::2, ::2, ::2].astype(np.int64))[None] for lab in labels])
    return images, labels, scheme


def refine_only(iterations: list[int]):
    """A pipeline factory (as :class:`~deepatlas.training.teachers.TeacherCache` takes) that registers by
    refinement alone, levels 2x then full resolution with ``iterations`` Adam steps: no net."""
    from deepatlas.config import Config, RefineConfig
    from deepatlas.registration import build_pipeline

    config = Config()
    config.refine = RefineConfig(levels=[2, 1], iterations=iterations)
    return lambda: build_pipeline(config, None)
