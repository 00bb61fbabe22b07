"""The model shipped in models/brain-2mm: loads as data, registers and segments real brains."""

from pathlib import Path

import numpy as np
import torch

from deepatlas.checkpoint import load_checkpoint
from deepatlas.data import find_subjects
from deepatlas.data.io import load_image, load_label_codes
from deepatlas.evaluation.metrics import dice_per_class, finite_mean
from deepatlas.inference import load_run
from deepatlas.inference.apply import register_volumes, segment_volume

MODEL = Path(__file__).resolve().parents[1] / "models" / "brain-2mm"


def test_the_model_file_is_data_and_small():
    state = load_checkpoint(MODEL / "checkpoints" / "best.pt")  # torch.load(weights_only=True)
    assert {"reg_net", "seg_net", "config", "label_scheme"} <= set(state)
    assert "reg_opt" not in state  # resuming state is not shipped
    assert sum(p.stat().st_size for p in MODEL.rglob("*") if p.is_file()) < 20 * 2**20
    assert (MODEL / "README.md").exists()


def test_the_model_registers_and_segments_a_test_pair(ixi):
    """Floors a little below the model card's figures (models/brain-2mm/README.md: the 24 test
    pairs' means, the seg net's validation Dice); this pair, the first of them, measured above each."""
    run = load_run(MODEL)
    scheme = run.scheme
    from deepatlas.data.splits import load_splits

    ids = load_splits(ixi / "splits.json")["test"][:2]
    subjects = {s.id: s for s in find_subjects(ixi)}
    (moving, moving_labels), (fixed, fixed_labels) = [
        (load_image(subjects[i].image), load_label_codes(subjects[i].label)) for i in ids
    ]
    target = torch.from_numpy(scheme.encode(fixed_labels.array, unknown="background"))

    def dice(codes):
        return finite_mean(
            dice_per_class(torch.from_numpy(scheme.encode(codes, unknown="background")), target, scheme.num_classes)
        )

    result = register_volumes(run, moving, fixed, moving_labels)
    refined = dice(result.warped_labels)
    # card: net + refine 0.731 (this pair 0.781), 2 points of margin; +0.129 over no registration
    # on average (this pair starts high, 0.699: +0.082)
    assert refined > 0.71 and refined > dice(moving_labels.array) + 0.06
    # card: folds 0.002 % of the brain (this pair 0.001 %); 5x that at most
    assert float((result.jacobian[fixed_labels.array > 0] <= 0).mean()) < 1e-4
    assert np.isfinite(result.displacement).all()
    run.set_refinement(None)
    net_alone = dice(register_volumes(run, moving, fixed, moving_labels).warped_labels)
    # card: the net alone 0.701 (this pair 0.755), 2 points of margin; refinement +3.0 points (this pair +2.5)
    assert net_alone > 0.68 and refined > net_alone + 0.01
    # card: the seg net's test Dice, mirrored (segment's default), 0.847 (this test image 0.851), 2 points of margin
    assert dice(segment_volume(run, fixed)) > 0.83


def test_atlas_segment_lets_the_seg_net_vote_and_keeps_the_atlas_codes(ixi, tmp_path, capsys):
    """brain-2mm's atlas-segment: the seg net votes beside the atlas by default (its ``seg_net.atlas_vote``),
    which raises Dice on this pair above the atlas alone, and the atlas's own codes (149 DLMUSE codes, where
    the seg net knows 31 merged classes) survive the vote; ``--seg-net-weight 0`` is the atlas alone."""
    from deepatlas.cli.main import main
    from deepatlas.data.labels import LabelScheme
    from deepatlas.data.splits import load_splits

    splits = load_splits(ixi / "splits.json")
    atlas, target = splits["train"][0], splits["validation"][0]
    atlas_files = [str(ixi / "images" / f"{atlas}.nii.gz"), str(ixi / "labels" / f"{atlas}.nii.gz")]
    common = ["atlas-segment", str(MODEL), "--atlas", *atlas_files, str(ixi / "images" / f"{target}.nii.gz")]
    assert main([*common, "-o", str(tmp_path / "default")]) == 0
    assert "and the seg net (x" in capsys.readouterr().out
    assert main([*common, "-o", str(tmp_path / "alone"), "--seg-net-weight", "0"]) == 0
    assert "seg net" not in capsys.readouterr().out
    scheme = LabelScheme.from_file(ixi / "brain31.json")
    truth = torch.from_numpy(
        scheme.encode(load_label_codes(ixi / "labels" / f"{target}.nii.gz").array, unknown="background")
    )
    codes, dice = {}, {}
    for name in ("default", "alone"):
        codes[name] = load_label_codes(tmp_path / name / f"{target}_atlas_seg.nii.gz").array
        classes = torch.from_numpy(scheme.encode(codes[name], unknown="background"))
        dice[name] = finite_mean(dice_per_class(classes, truth, scheme.num_classes))
    # the atlas's codes, or a class's first code where the seg net alone put a class the atlas did not vote for
    allowed = set(np.unique(load_label_codes(atlas_files[1]).array).tolist()) | {c[0] for c in scheme.codes}
    assert len(np.unique(codes["default"])) > 100 and set(np.unique(codes["default"]).tolist()) <= allowed
    assert dice["default"] > dice["alone"] + 0.01, dice


def test_atlas_segment_keeps_the_seg_net_out_of_atlases_in_another_label_protocol(ixi, tmp_path, capsys):
    """An atlas whose codes are not the model's (here DLMUSE's shifted by 1000, as another protocol's would
    be) is fused alone by default, with one line saying why: the seg net would relabel it in its own codes."""
    from deepatlas.cli.main import main
    from deepatlas.data.io import save_volume
    from deepatlas.data.splits import load_splits

    splits = load_splits(ixi / "splits.json")
    atlas, target = splits["train"][0], splits["validation"][0]
    labels = load_label_codes(ixi / "labels" / f"{atlas}.nii.gz")
    shifted = np.where(labels.array > 0, labels.array.astype(np.int32) + 1000, 0)
    save_volume(shifted.astype(np.int16), labels.affine, tmp_path / "other_protocol.nii.gz")
    args = ["atlas-segment", str(MODEL), "--atlas", str(ixi / "images" / f"{atlas}.nii.gz")]
    args += [
        str(tmp_path / "other_protocol.nii.gz"),
        str(ixi / "images" / f"{target}.nii.gz"),
        "-o",
        str(tmp_path / "o"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "note: the seg net did not vote: only 0% of an atlas's labelled voxels" in out and "seg net (x" not in out
    codes = np.unique(load_label_codes(tmp_path / "o" / f"{target}_atlas_seg.nii.gz").array)
    assert set(codes.tolist()) <= set(np.unique(shifted).tolist())
