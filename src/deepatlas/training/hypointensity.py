"""White matter darkened around the ventricles as augmentation (``augment.hypointensity``), its labels unchanged.

Why: aging brains carry white-matter lesions, most of them around the lateral ventricles (caps at the horns, bands
along the bodies), and on T1 they are darker than white matter, some as dark as grey matter. A seg net that learned
young brains reads such darkened white matter beside a ventricle as ventricle or caudate: on validation brains with
a 4 mm band darkened half-way to cortex, the shipped net read the lateral ventricles 9 % larger and the caudates
9-12 % larger (docs/results.md, "White matter darkened around the ventricles"). The labels of such a lesion stay
white matter (as the reference segmentations' do), so an image darkened there with its labels kept shows the net
that darkening alone does not move a boundary. Measured once (45 minutes of fine-tuning at chance 0.5): it halved
that over-read but read clean brains' ventricles 3-4 % larger, so it is off by default.

Per chosen image: the white matter (``within`` classes) up to a random distance of 1 to ``MAX_BAND`` voxels from
the ventricles (``near`` classes), kept where a smooth random field lies above a random threshold (patches, not a
uniform shell), with soft edges, is pulled toward ``white - depth * (white - csf)``: ``white`` and ``csf`` the
image's own medians over the two class sets, ``depth`` uniform in ``[0, MAX_DEPTH]`` (0.6: about grey matter's
level on T1). One draw per image from the caller's generator, none when the chance is 0 (runs without it keep
their random streams).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MAX_BAND = 4
"""Widest band, voxels (8 mm at 2 mm): periventricular lesions reach about this far from the wall."""

MAX_DEPTH = 0.6
"""Darkest lesion, as a fraction of the way from the image's white matter to its CSF (grey matter's level)."""


def hypointensity_indices(near: list[str], within: list[str], names: list[str]) -> tuple[list[int], list[int]]:
    """Class indices of ``near`` (the ventricles) and ``within`` (the white matter) in a run's label ``names``;
    a name the run does not have is refused with the setting to change."""
    for key, wanted in (("hypointensity_near", near), ("hypointensity_within", within)):
        missing = [n for n in wanted if n not in names]
        if missing or not wanted:
            raise ValueError(
                f"config augment.{key}: {missing or 'no structure'} not in the run's label map "
                f"({', '.join(names[1:])}); name its structures, or set augment.hypointensity=0"
            )
    return [names.index(n) for n in near], [names.index(n) for n in within]


def _dilate(mask: torch.Tensor, voxels: int) -> torch.Tensor:
    """``mask`` (``1 x 1 x *spatial``, float) grown by ``voxels`` (a cube, one voxel per step)."""
    for _ in range(voxels):
        mask = F.max_pool3d(mask, 3, stride=1, padding=1)
    return mask


def _coarse_noise(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Uniform noise on a grid 4 times coarser than ``shape`` (``1 x 1 x ...``): :func:`darken_one` upsamples it
    into a smooth random field in [0, 1), for the chosen images only."""
    return torch.rand((1, 1, *[max(2, s // 4) for s in shape]), generator=generator)


def darken_one(image: torch.Tensor, classes: torch.Tensor, near: list[int], within: list[int], draws) -> torch.Tensor:
    """One image (``C x *spatial``) darkened as the module says; ``draws``: (band voxels, threshold, depth,
    :func:`_coarse_noise` of the patches)."""
    band, threshold, depth, noise = draws
    field = F.interpolate(noise, size=tuple(classes.shape), mode="trilinear", align_corners=False)
    ventricles = torch.isin(classes, torch.tensor(near, device=classes.device))
    white = torch.isin(classes, torch.tensor(within, device=classes.device))
    if not ventricles.any() or not white.any():
        return image
    region = _dilate(ventricles[None, None].float(), band)[0, 0].bool() & white & (field[0, 0] > threshold)
    soft = F.avg_pool3d(region[None, None].float(), 3, stride=1, padding=1)[0, 0] * white
    level_white, level_csf = image[:, white].median(), image[:, ventricles].median()
    target = level_white - depth * (level_white - level_csf)
    return image - soft * (image - target).clamp(min=0)


def random_hypointensity(
    images: torch.Tensor,
    labels: torch.Tensor,
    chance: float,
    indices: tuple[list[int], list[int]] | None,
    generator: torch.Generator,
) -> torch.Tensor:
    """``images`` (``B x C x D x H x W``), each darkened with probability ``chance`` around the ventricles of its
    ``labels`` (``B x 1 x ...`` class indices; ``indices``: :func:`hypointensity_indices`); ``chance`` 0 returns
    them untouched without drawing. 3D only."""
    if chance <= 0 or indices is None:
        return images
    chosen = (torch.rand(len(images), generator=generator) < chance).tolist()
    out = images.clone()
    for b, take in enumerate(chosen):
        band = int(torch.randint(1, MAX_BAND + 1, (1,), generator=generator))
        threshold, depth = (torch.rand(2, generator=generator) * torch.tensor([0.6, MAX_DEPTH])).tolist()
        noise = _coarse_noise(tuple(images.shape[2:]), generator)  # drawn for every image: one stream per batch
        if take:
            draws = (band, threshold, depth, noise.to(images.device))
            out[b] = darken_one(images[b].float(), labels[b, 0], *indices, draws).to(images.dtype)
    return out
