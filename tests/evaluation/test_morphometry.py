"""Morphometry: structure volumes in mm^3, log-Jacobian maps, group differences on phantoms."""

import csv
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from deepatlas.cli.main import main
from deepatlas.data import DataError, LabelScheme
from deepatlas.data.io import Volume, normalize_intensity, save_volume
from deepatlas.data.synthetic import label_map_spec, make_phantom
from deepatlas.evaluation.morphometry import (
    FLAG_MARGIN,
    FLAG_MARGINS,
    FOREGROUND,
    TOTAL,
    cohens_d,
    disagreement_flag,
    log_jacobian,
    plan_morphometry,
    structure_volumes,
    voxel_volume,
)
from deepatlas.inference.strip import foreground_ml
from deepatlas.registration.affine import foreground

SHAPE = (24, 28, 24)  # the grid of the phantoms_3d run: 2 mm
VENTRICLE_L = 51


def _affine(spacing=(2.0, 2.0, 2.0)) -> np.ndarray:
    affine = np.diag(list(spacing) + [1.0])
    affine[:3, 3] = [-s * (n - 1) / 2 for s, n in zip(spacing, SHAPE)]
    return affine


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_volumes_are_voxel_counts_times_the_voxel_volume_of_an_oblique_anisotropic_affine():
    scheme = LabelScheme.from_dict(label_map_spec())
    _, labels = make_phantom(SHAPE, np.random.default_rng(3))
    rotation = np.linalg.qr(np.random.default_rng(4).normal(size=(3, 3)))[0]
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 1.2, 2.5])  # 2.4 mm^3 per voxel, not axis-aligned
    assert voxel_volume(affine) == pytest.approx(2.4)
    rows = structure_volumes("s", Volume(labels.astype(np.int64), affine, Path("s.nii.gz")), scheme)
    by_name = {r["structure"]: r for r in rows}
    for k in range(1, scheme.num_classes):
        voxels = int(np.isin(labels, scheme.codes[k]).sum())
        assert by_name[scheme.names[k]]["voxels"] == voxels
        assert by_name[scheme.names[k]]["mm3"] == pytest.approx(voxels * 2.4, abs=1e-3)
        assert by_name[scheme.names[k]]["code"] == scheme.codes[k][0]
    assert by_name[TOTAL]["voxels"] == int((labels != 0).sum())
    with pytest.raises(DataError, match="bad.nii.gz: label codes not in the label-map file: 7"):
        structure_volumes("s", Volume(np.full(SHAPE, 7), affine, Path("bad.nii.gz")), scheme)


def test_log_jacobian_sign_and_folds_and_cohens_d():
    assert log_jacobian(np.array([1.0, np.e, 0.5, -1.0])).tolist() == pytest.approx(
        [0.0, 1.0, np.log(0.5), np.log(1e-3)]
    )
    a, b = np.array([1.0, 2.0, 3.0]), np.array([3.0, 4.0, 5.0])
    assert cohens_d(a, b) == pytest.approx(2.0)  # (4 - 2) / 1
    assert np.isnan(cohens_d(np.ones(3), np.ones(3)))


def test_morphometry_command_writes_volumes_maps_and_figure(trained_3d, phantoms_3d, tmp_path):
    """Images with 1.5 x 2 x 2.5 mm voxels: mm^3 in volumes.csv = voxels of the written label map x 7.5."""
    images = tmp_path / "images"
    for path in sorted((phantoms_3d / "images").iterdir())[:3]:
        save_volume(np.asarray(nib.load(path).dataobj), _affine((1.5, 2.0, 2.5)), images / path.name)
    out = tmp_path / "out"
    assert main(["morphometry", str(trained_3d), str(images), "-o", str(out), "--net-only"]) == 0
    rows = _read_csv(out / "volumes.csv")
    assert list(rows[0]) == ["subject", "structure", "code", "voxels", "mm3", "template_mm3", "atlas_mm3", "flag"]
    template = nib.load(out / "template.nii.gz")
    mask = foreground(torch.from_numpy(normalize_intensity(template.get_fdata().astype(np.float32)))[None, None])
    for subject in ("phantom000", "phantom001", "phantom002"):
        codes = np.asarray(nib.load(out / f"{subject}_seg.nii.gz").dataobj)
        mine = {r["structure"]: r for r in rows if r["subject"] == subject}
        assert TOTAL == "brain" and int(mine[TOTAL]["voxels"]) == int((codes != 0).sum())
        image = Volume(np.asarray(nib.load(images / f"{subject}.nii.gz").dataobj), _affine((1.5, 2.0, 2.5)), Path())
        assert float(mine[FOREGROUND]["mm3"]) == pytest.approx(foreground_ml(image) * 1000, abs=1e-2)
        # template mm^3: divided by the subject's scale, its map's mean Jacobian over the template's foreground
        scale = np.exp(nib.load(out / f"{subject}_logjac.nii.gz").get_fdata())[mask[0, 0].numpy()].mean()
        assert all(r["atlas_mm3"] == "" and r["flag"] == "" for r in mine.values())  # no atlases, no check
        for row in mine.values():
            assert float(row["template_mm3"]) == pytest.approx(float(row["mm3"]) / scale, rel=1e-4, abs=1e-3)
        del mine[FOREGROUND]
        for row in mine.values():
            voxels = int((codes == int(row["code"])).sum()) if row["code"] else int((codes != 0).sum())
            assert int(row["voxels"]) == voxels
            assert float(row["mm3"]) == pytest.approx(voxels * 7.5, abs=1e-3)
        logjac = nib.load(out / f"{subject}_logjac.nii.gz")
        assert logjac.shape == template.shape and np.allclose(logjac.affine, template.affine)
        assert np.isfinite(logjac.get_fdata()).all()
    assert (out / "morphometry.png").stat().st_size > 0
    assert main(["morphometry", str(trained_3d), str(images), "-o", str(out)]) == 2  # no silent overwrite


def _grow(image: np.ndarray, labels: np.ndarray, code: int, voxels: int) -> tuple[np.ndarray, np.ndarray]:
    """The structure ``code`` dilated by ``voxels`` into white matter and thalami, at its own intensity."""
    grown = ndimage.binary_dilation(labels == code, iterations=voxels) & np.isin(labels, (2, 59, 60))
    image, labels = image.copy(), labels.copy()
    image[grown] = float(np.median(image[labels == code]))
    labels[grown] = code
    return image, labels


def _groups_dataset(root: Path, per_group: int = 5) -> tuple[list[np.ndarray], Path]:
    """Groups ``control`` and ``enlarged`` (left lateral ventricle dilated by 2 voxels), an atlas and
    groups.csv; returns the enlarged subjects' label maps (to locate the ventricle) and root."""
    affine, enlarged_labels = _affine(), []
    rows = ["subject,group"]
    for group, seed in (("control", 400), ("enlarged", 500)):
        for i in range(per_group):
            image, labels = make_phantom(SHAPE, np.random.default_rng(seed + i))
            if group == "enlarged":
                image, labels = _grow(image, labels, VENTRICLE_L, 2)
                enlarged_labels.append(labels)
            save_volume(image, affine, root / "images" / f"{group}{i}.nii.gz")
            rows.append(f"{group}{i},{group}")
    (root / "groups.csv").write_text("\n".join(rows) + "\n")
    image, labels = make_phantom(SHAPE, np.random.default_rng(700))
    save_volume(image, affine, root / "atlas.nii.gz")
    save_volume(labels, affine, root / "atlas_labels.nii.gz")
    return enlarged_labels, root


def test_an_enlarged_ventricle_is_the_largest_group_difference(trained_3d, tmp_path):
    """Atlas-based volumes (the test run's seg net is too weak for 2-voxel-wide ventricles) and the
    log-Jacobian maps both find the left ventricle enlarged in the second group."""
    enlarged_labels, root = _groups_dataset(tmp_path)
    out = tmp_path / "out"
    start = time.perf_counter()
    argv = ["morphometry", str(trained_3d), str(root / "images"), "-o", str(out), "--groups", str(root / "groups.csv")]
    atlas = ["--from", "atlas", "--atlas", str(root / "atlas.nii.gz"), str(root / "atlas_labels.nii.gz")]
    assert main(argv + atlas + ["--fusion", "majority"]) == 0
    print(f"morphometry of 10 subjects: {time.perf_counter() - start:.1f} s")
    rows = {r["structure"]: r for r in _read_csv(out / "group_differences.csv") if r["structure"] != TOTAL}
    print({name: (round(float(r["cohens_d"]), 2), float(r["p_welch"])) for name, r in rows.items()})
    ventricle = rows["LateralVentricle-L"]
    assert ventricle["group_a"] == "control" and ventricle["group_b"] == "enlarged"
    assert max(rows.values(), key=lambda r: abs(float(r["cohens_d"]))) is ventricle
    assert min(rows.values(), key=lambda r: float(r["p_welch"])) is ventricle
    assert float(ventricle["cohens_d"]) > 1.5 and float(ventricle["p_welch"]) < 0.05
    difference = nib.load(out / "logjac_difference.nii.gz").get_fdata()
    region = np.mean([labels == VENTRICLE_L for labels in enlarged_labels], axis=0) >= 0.3
    template = nib.load(out / "template.nii.gz").get_fdata()
    elsewhere = ~ndimage.binary_dilation(region, iterations=2) & (template > 0.1)
    inside, outside = difference[region].mean(), difference[elsewhere].mean()
    print(f"mean log J difference: ventricle {inside:.3f}, rest of brain {outside:.3f}")
    assert inside > 0.1 > abs(outside)
    assert (out / "logjac_difference.png").exists() and (out / "morphometry.png").exists()


def test_bad_groups_and_settings_are_named(trained_3d, phantoms_3d, tmp_path, capsys):
    images = phantoms_3d / "images"
    cases = {
        "subject,group\nphantom000,a\nnobody,b\n": "'nobody' is not among the images",
        "subject,group\nphantom000,a\nphantom001,a\nphantom002,b\nphantom003,b\nphantom004,c\n": "exactly two groups",
        "subject,group\nphantom000,a\nphantom001,b\nphantom002,b\n": "group 'a' has fewer than 2 subjects",
        "id,cohort\nphantom000,a\n": "needs the columns subject,group",
    }
    argv = ["morphometry", str(trained_3d), str(images), "-o", str(tmp_path / "o")]
    for i, (text, message) in enumerate(cases.items()):
        groups = tmp_path / f"groups{i}.csv"
        groups.write_text(text)
        assert main(argv + ["--groups", str(groups)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(groups) in err and message in err, err
    assert main(argv + ["--from", "atlas"]) == 2
    assert "--from atlas needs --atlas" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written before the inputs are checked
    with pytest.raises(DataError, match="template image not found"):
        plan_morphometry([images / "phantom000.nii.gz"], tmp_path / "o", template=tmp_path / "none.nii.gz")


def test_atlases_with_the_seg_net_check_its_volumes_and_flag_disagreements(trained_3d, phantoms_3d, tmp_path):
    """--atlas with --from seg: volumes from the seg net, the atlases' label map beside them, atlas_mm3 and a
    flag exactly where |seg - atlas| / mean exceeds the structure's margin."""
    atlas_image, atlas_labels = make_phantom(SHAPE, np.random.default_rng(700))
    save_volume(atlas_image, _affine(), tmp_path / "atlas.nii.gz")
    save_volume(atlas_labels, _affine(), tmp_path / "atlas_labels.nii.gz")
    images = tmp_path / "images"
    for path in sorted((phantoms_3d / "images").iterdir())[:2]:
        save_volume(np.asarray(nib.load(path).dataobj), _affine(), images / path.name)
    out = tmp_path / "out"
    atlas = ["--atlas", str(tmp_path / "atlas.nii.gz"), str(tmp_path / "atlas_labels.nii.gz"), "--net-only"]
    assert main(["morphometry", str(trained_3d), str(images), "-o", str(out), *atlas]) == 0
    rows = _read_csv(out / "volumes.csv")
    for subject in ("phantom000", "phantom001"):
        seg = np.asarray(nib.load(out / f"{subject}_seg.nii.gz").dataobj)
        fused = np.asarray(nib.load(out / f"{subject}_atlas_seg.nii.gz").dataobj)
        mine = [r for r in rows if r["subject"] == subject and r["structure"] != FOREGROUND]
        for row in mine:
            voxels = [(m == int(row["code"])).sum() if row["code"] else (m != 0).sum() for m in (seg, fused)]
            assert int(row["voxels"]) == voxels[0]  # the volumes are the seg net's
            assert float(row["atlas_mm3"]) == pytest.approx(voxels[1] * 8.0)
            mean = (voxels[0] + voxels[1]) / 2
            far = mean > 0 and abs(voxels[0] - voxels[1]) / mean > FLAG_MARGINS.get(row["structure"], FLAG_MARGIN)
            assert row["flag"] == ("disagree" if far else "")
    assert {r["flag"] for r in rows} <= {"", "disagree"}
    assert disagreement_flag("x", 100.0, 100.0 * (1 + 3 * FLAG_MARGIN)) == "disagree"  # vs the mean
    assert disagreement_flag("x", 100.0, 100.0) == disagreement_flag("x", 0.0, 0.0) == ""
