"""Loading a dataset into memory, checked, with the labels the user chose to keep."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from tqdm.auto import tqdm

from deepatlas.data.errors import DataError
from deepatlas.data.io import check_label_grid, load_image, load_label_codes, normalize_intensity
from deepatlas.data.labels import LabelScheme
from deepatlas.data.subjects import Subject


@dataclass
class ImageSet:
    """Images (and the labels kept for them) stacked in memory on one grid.

    Attributes:
        ids: subject ids, in order.
        images: ``Nx1xHxW[xD]`` float32 in [0, 1].
        labels: ``Nx1xHxW[xD]`` class indices (uint8/int16); all zero where ``has_label`` is False.
        has_label: ``N`` booleans.
        affines: per subject, the image's voxel-to-world matrix.
        scheme: the label scheme the class indices refer to.
    """

    ids: list[str]
    images: torch.Tensor
    labels: torch.Tensor
    has_label: torch.Tensor
    affines: list[np.ndarray]
    scheme: LabelScheme

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def spatial_dims(self) -> int:
        return self.images.ndim - 2

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[2:])

    def labelled_indices(self) -> list[int]:
        return [i for i, h in enumerate(self.has_label.tolist()) if h]


def scan_label_codes(subjects: Sequence[Subject]) -> set[int]:
    """All codes present in the subjects' label maps (to build a scheme without a label-map file)."""
    codes: set[int] = set()
    for s in subjects:
        if s.label is not None:
            codes.update(int(c) for c in np.unique(load_label_codes(s.label).array))
    return codes


def _read_subject(subject: Subject, scheme: LabelScheme, keep: set[str] | None, unknown_labels: str):
    """The subject's image, and its label map as class indices if it is to be kept (else None)."""
    image = load_image(subject.image)
    label = None
    if subject.label is not None and (keep is None or subject.id in keep):
        codes = load_label_codes(subject.label)
        check_label_grid(image, codes)
        label = scheme.encode(codes.array, source=str(subject.label), unknown=unknown_labels)
    return image, label


def _one_grid(subjects: Sequence[Subject], images: list, shape: tuple[int, ...] | None) -> tuple[int, ...]:
    """The grid every image must be on: ``shape``, or the most common one, so the message names
    the odd one out."""
    target = tuple(shape) if shape is not None else Counter(im.array.shape for im in images).most_common(1)[0][0]
    for subject, image in zip(subjects, images):
        if image.array.shape != target:
            raise DataError(
                f"{subject.image}: image shape {image.array.shape} differs from the dataset's {target}; "
                f"training needs one grid: resample the images to a common grid first"
            )
    return target


def load_image_set(
    subjects: Sequence[Subject],
    scheme: LabelScheme,
    keep_labels: Sequence[str] | None = None,
    unknown_labels: str = "error",
    normalize: bool = True,
    shape: tuple[int, ...] | None = None,
    progress: bool = True,
    desc: str = "loading",
) -> ImageSet:
    """Load and check ``subjects`` into an :class:`ImageSet`.

    Args:
        keep_labels: ids whose label maps are loaded; ``None`` keeps every available
            label. The others are never read, so hidden labels cannot leak into training.
        shape: required grid; default the most common one.
        normalize: percentile intensity normalisation to [0, 1] (see ``normalize_intensity``).

    Raises:
        DataError: naming the file, for unreadable files, NaN or constant images,
            images on another grid, label maps of the wrong shape and unknown label codes.
    """
    if not subjects:
        raise DataError("no subjects to load")
    keep = None if keep_labels is None else set(keep_labels)
    read = partial(_read_subject, scheme=scheme, keep=keep, unknown_labels=unknown_labels)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(
            tqdm(pool.map(read, subjects), total=len(subjects), desc=desc, disable=not progress, leave=False)
        )
    target = _one_grid(subjects, [image for image, _ in results], shape)
    images = np.stack([normalize_intensity(im.array) if normalize else im.array for im, _ in results])
    labels = np.zeros((len(subjects),) + target, dtype=np.uint8 if scheme.num_classes <= 256 else np.int16)
    for n, (_, label) in enumerate(results):
        if label is not None:
            labels[n] = label
    has_label = torch.tensor([label is not None for _, label in results])
    return ImageSet(
        ids=[s.id for s in subjects],
        images=torch.from_numpy(images).unsqueeze(1),
        labels=torch.from_numpy(labels).unsqueeze(1),
        has_label=has_label,
        affines=[im.affine for im, _ in results],
        scheme=scheme,
    )
