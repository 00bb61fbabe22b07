"""``augment.hypointensity``: white matter darkened around the ventricles of a real brain, its labels unchanged."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from deepatlas.data.io import load_labelled
from deepatlas.data.labels import LabelScheme
from deepatlas.training.hypointensity import MAX_BAND, hypointensity_indices, random_hypointensity


@pytest.fixture(scope="module")
def brain(ixi):
    subject = "IXI012-HH-1211"  # validation
    image, labels = load_labelled(ixi / "images" / f"{subject}.nii.gz", ixi / "labels" / f"{subject}.nii.gz")
    scheme = LabelScheme.from_file(ixi / "brain31.json")
    classes = torch.from_numpy(scheme.encode(np.asarray(labels.array), unknown="background").astype(np.int64))
    array = np.asarray(image.array, dtype=np.float32)
    return torch.from_numpy(array / array.max())[None, None], classes[None, None], scheme


def test_only_white_matter_beside_the_ventricles_darkens_and_never_below_csf(brain):
    image, classes, scheme = brain
    near, within = hypointensity_indices(
        ["LateralVentricle-L", "LateralVentricle-R"], ["CerebralWM-L", "CerebralWM-R"], scheme.names
    )
    darker = [
        random_hypointensity(image, classes, 1.0, (near, within), torch.Generator().manual_seed(s)) for s in range(4)
    ]
    ventricles = np.isin(classes[0, 0].numpy(), near)
    white = np.isin(classes[0, 0].numpy(), within)
    reach = ndimage.binary_dilation(ventricles, np.ones((3, 3, 3)), iterations=MAX_BAND + 1)
    csf = float(image[0, 0][torch.from_numpy(ventricles)].median())
    for out in darker:
        changed = (out < image - 1e-6)[0, 0].numpy()
        assert not (out > image + 1e-6).any()  # only darker
        assert changed.sum() > 100 and np.all(white[changed]) and np.all(reach[changed])
        assert float(out[0, 0][torch.from_numpy(changed)].min()) >= csf - 1e-4
    sizes = {int((out < image - 1e-6).sum()) for out in darker}
    assert len(sizes) > 1  # the band's width, patches and depth differ per draw


def test_off_leaves_images_and_the_random_stream_as_they_were(brain):
    image, classes, scheme = brain
    indices = hypointensity_indices(["LateralVentricle-L"], ["CerebralWM-L"], scheme.names)
    generator = torch.Generator().manual_seed(3)
    assert random_hypointensity(image, classes, 0.0, indices, generator) is image
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(3).get_state())
    with pytest.raises(ValueError, match="augment.hypointensity_near: \\['Ventricle'\\] not in the run's label map"):
        hypointensity_indices(["Ventricle"], ["CerebralWM-L"], scheme.names)


def test_the_trainer_darkens_its_labelled_images_where_the_run_names_the_structures(phantoms_3d):
    """Switched on with the run's own names (the phantoms' ``WhiteMatter``), a trainer's augmented images are darker
    around the ventricles and their labels the same; a name the run lacks stops it with the setting to change."""
    from tests.conftest import augmented_at, augmenting_trainer

    trainer = augmenting_trainer(phantoms_3d, hypointensity_within=["WhiteMatter"], hypointensity=1.0)
    images, _, out = augmented_at(trainer, "hypointensity", [0.0, 1.0])
    (plain, plain_labels), (dark, dark_labels) = out[0.0], out[1.0]  # the same draws otherwise
    assert torch.equal(dark_labels, plain_labels) and torch.allclose(plain, images, atol=1e-4)
    assert (dark < plain - 1e-3).sum() > 10 and not (dark > plain + 1e-6).any()
    with pytest.raises(ValueError, match="augment.hypointensity_within: \\['CerebralWM-L'\\]"):
        augmenting_trainer(phantoms_3d, hypointensity_within=["CerebralWM-L"], hypointensity=0.5)
