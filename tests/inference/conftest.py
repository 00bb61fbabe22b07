"""Fixtures of the inference tests that read the shipped model on a real brain."""

from pathlib import Path

import pytest

from deepatlas.data.io import load_labelled

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "brain-2mm"
"""The shipped model's folder (``models/brain-2mm``)."""


@pytest.fixture(scope="module")
def brain(ixi):
    """A validation brain (model selection saw it; no test subject) and its reference labels."""
    subject = "IXI012-HH-1211"
    return load_labelled(ixi / "images" / f"{subject}.nii.gz", ixi / "labels" / f"{subject}.nii.gz")
