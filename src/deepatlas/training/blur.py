"""Random blur of augmented images (``augment.blur``): the same anatomy seen at another sharpness.

Why: a seg net trained on one site's images learns their sharpness with their anatomy. The shipped
brain-2mm seg net read validation brains blurred by a Gaussian of one voxel (2 mm) with lateral ventricles
several % smaller, and any resampled brain a little smaller (docs/results.md, "Volumes that do not depend
on the scan's sharpness"): a volume that follows how sharp a scan is, not only its anatomy. Blurring an
image while keeping its labels shows the net that a softer boundary lies where the sharp one did, as
SynthSeg's resolution randomisation does.

Each image of a batch gets its own sigma, drawn uniformly in ``[0, largest]`` voxels from the caller's
generator (one draw per image, none when ``largest`` is 0, so runs without it keep their random streams);
the blur is separable and Gaussian with repeated edges (:func:`deepatlas.registration.greedy.gaussian_smooth`),
so intensities keep their mean and a uniform image stays what it is.
"""

from __future__ import annotations

import torch

from deepatlas.registration.greedy import gaussian_smooth

NEGLIGIBLE_SIGMA = 0.05
"""Sigmas (voxels) below this leave an image as it is: the kernel's side taps would be below 1e-40."""


def random_blur(images: torch.Tensor, largest: float, generator: torch.Generator) -> torch.Tensor:
    """``images`` (``B x C x *spatial``), each blurred by a Gaussian of sigma uniform in ``[0, largest]``
    voxels along every spatial axis; ``largest`` 0 returns them untouched without drawing."""
    if largest <= 0:
        return images
    sigmas = (torch.rand(len(images), generator=generator, dtype=torch.float64) * largest).tolist()
    blurred = [
        gaussian_smooth(image[None].float(), sigma)[0].to(images.dtype) if sigma >= NEGLIGIBLE_SIGMA else image
        for image, sigma in zip(images, sigmas)
    ]
    return torch.stack(blurred)
