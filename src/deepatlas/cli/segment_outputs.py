"""What ``segment`` writes beside its label maps: the lookup tables that name and colour them
(``labels.txt`` for ITK-SNAP, ``labels.ctbl`` for 3D Slicer), ``--volumes`` (``volumes.csv``) and
``--probabilities`` (``<name>_probabilities.nii.gz``). Planned with the label maps and checked before
any work (:func:`deepatlas.cli.apply._write_label_maps`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepatlas.data import DataError

SUFFIX = "_seg.nii.gz"
"""The label map's suffix, ``<name>_seg.nii.gz``: its other outputs take ``<name>``."""


@dataclass(frozen=True)
class SegmentExtras:
    """The extra outputs of one ``segment`` command into ``output`` (picklable: each job carries it)."""

    output: Path
    volumes: bool = False
    probabilities: bool = False

    @property
    def tables(self) -> dict[Path, str]:
        """The lookup tables -> their format's name."""
        return {self.output / "labels.txt": "ITK-SNAP", self.output / "labels.ctbl": "Slicer"}

    @property
    def volumes_path(self) -> Path:
        return self.output / "volumes.csv"

    def folder_outputs(self) -> list[Path]:
        """The files of the whole command that must be free: the volume table (the lookup tables may
        already be there: :meth:`check_tables`)."""
        return [self.volumes_path] if self.volumes else []

    def image_outputs(self, target: Path) -> list[Path]:
        """The files written beside the label map ``target``."""
        return [probabilities_path(target)] if self.probabilities else []

    def check_tables(self, scheme, overwrite: bool) -> None:
        """Lookup tables already in the folder are left as they are when they say what this run's would
        (an earlier ``segment`` into the same folder with the same model); one that says otherwise (another
        model's labels) is refused before any work unless ``overwrite``."""
        for path, text in self._table_texts(scheme).items():
            if path.exists() and not overwrite and path.read_text(errors="replace") != text:
                raise FileExistsError(
                    f"{path} exists and names other labels (another model's?); pass --overwrite to replace it, "
                    "or choose another output folder"
                )

    def write(self, scheme, records: list[dict]) -> None:
        """The lookup tables and, with ``volumes``, ``volumes.csv`` from the records' rows (taken out of
        the records, which go on to ``segment.json``), by subject."""
        from deepatlas.files import atomic_write_csv, atomic_write_text

        for path, text in self._table_texts(scheme).items():
            if not path.exists() or path.read_text(errors="replace") != text:
                atomic_write_text(path, text)
        rows = {r["output"]: r.pop("volumes") for r in records if "volumes" in r}
        if self.volumes:
            atomic_write_csv(self.volumes_path, [row for key in sorted(rows) for row in rows[key]])

    def _table_texts(self, scheme) -> dict[Path, str]:
        from deepatlas.inference.lookup import itksnap_labels, slicer_colour_table

        texts = {"ITK-SNAP": itksnap_labels(scheme), "Slicer": slicer_colour_table(scheme)}
        return {path: texts[kind] for path, kind in self.tables.items()}


def probabilities_path(target: Path) -> Path:
    """``<name>_probabilities.nii.gz`` beside the label map ``<name>_seg.nii.gz``."""
    if not target.name.endswith(SUFFIX):
        raise DataError(f"{target}: not a label map of segment ({SUFFIX})")
    return target.with_name(target.name[: -len(SUFFIX)] + "_probabilities.nii.gz")


def reads_volumes(extras: SegmentExtras | None) -> bool:
    """Whether ``segment`` reads volumes from its label maps (``--volumes``): then it reads them as
    ``morphometry`` does (``seg_net.subvoxel_average``'s ``for_volumes``)."""
    return extras is not None and extras.volumes


def segment_image(run, image, align: str, extras: SegmentExtras | None):
    """The seg net's label map of ``image`` (codes, its own grid), how it was brought into the model's
    space, and its class probabilities when ``extras`` asks for them (else None): one reading either way.
    With ``--volumes`` the label map is read as ``morphometry`` reads it (``seg_net.subvoxel_average: auto``
    averages over quarter-voxel shifts), so its volumes are ``morphometry``'s."""
    from deepatlas.inference.apply import segment_with_probabilities, segment_with_report

    for_volumes = reads_volumes(extras)
    if extras is not None and extras.probabilities:
        return segment_with_probabilities(run, image, align, for_volumes)
    codes, space = segment_with_report(run, image, align, for_volumes)
    return codes, None, space


def write_image_extras(run, extras: SegmentExtras | None, image, target: Path, probabilities) -> dict:
    """After the label map ``target`` is written: the probabilities (4D, classes last in the order of the
    lookup tables' rows, float32, on the image's grid) and the structure volumes, which come back in the
    record (``volumes``) for :meth:`SegmentExtras.write`. The volumes are ``morphometry``'s
    (:func:`~deepatlas.evaluation.morphometry.structure_volumes` of the label map as written)."""
    from deepatlas.data.io import load_label_codes, save_volume
    from deepatlas.evaluation.morphometry import structure_volumes

    if extras is None:
        return {}
    if probabilities is not None:
        array = np.moveaxis(probabilities.numpy(), 0, -1).astype(np.float32, copy=False)
        save_volume(array, image.affine, probabilities_path(target), description="deepatlas class probabilities")
    if not extras.volumes:
        return {}
    name = target.name[: -len(SUFFIX)]
    return {"volumes": structure_volumes(name, load_label_codes(target), run.scheme, run.config.data.unknown_labels)}
