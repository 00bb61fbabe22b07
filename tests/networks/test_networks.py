import pytest
import torch

from deepatlas.networks import RegistrationNet, SegmentationNet
from deepatlas.networks.padding import crop_padding, pad_to_multiple


@pytest.mark.parametrize("shape", [(37, 41, 29), (50, 45)])
def test_any_image_size_is_padded_and_cropped_back(shape):
    dims = len(shape)
    seg = SegmentationNet(dims, 5, channels=(4, 8, 8), strides=(2, 2))
    reg = RegistrationNet(dims, channels=(4, 8, 8), strides=(2, 2))
    x = torch.rand((2, 1) + shape)
    assert seg(x).shape == (2, 5) + shape
    assert reg(x, x.flip(0)).shape == (2, dims) + shape


def test_registration_starts_at_identity_and_learns():
    reg = RegistrationNet(3, channels=(4, 8, 8), strides=(2, 2))
    moving, fixed = torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16)
    assert torch.count_nonzero(reg(moving, fixed)) == 0
    reg(moving, fixed).pow(2).sum().backward()  # zero at init, but the head gets a gradient
    (reg(moving, fixed) - 1).pow(2).sum().backward()
    assert reg.head.weight.grad.abs().sum() > 0


def test_diffeomorphic_option_integrates_a_velocity_field():
    """A smooth swirl (up to 3 radians at the centre, 11 voxels) folds 14 % of the grid when taken as
    a displacement; integrated (7 scaling-and-squaring steps, the default) it does not fold, and
    the flow of ``-v`` undoes it: ``phi_v(phi_-v)`` is the identity to a fraction of a voxel."""
    from deepatlas.evaluation.metrics import fold_fraction, jacobian_determinant
    from deepatlas.networks.warp import warp_image

    reg = RegistrationNet(2, channels=(4, 8), strides=(2,), diffeomorphic=True)
    x = torch.rand(1, 1, 32, 32)
    torch.nn.init.normal_(reg.head.weight, std=0.5)
    assert not torch.allclose(reg(x, x.flip(-1)), reg.raw_field(x, x.flip(-1)))  # the head's field is integrated
    axis = torch.arange(32, dtype=torch.float32) - 15.5
    y0, y1 = torch.meshgrid(axis, axis, indexing="ij")
    swirl = 3.0 * torch.exp(-(y0**2 + y1**2) / 72) * torch.stack([-y1, y0])[None]
    assert fold_fraction(swirl) > 0.1
    reg.raw_field = lambda moving, fixed: swirl
    forward = reg(x, x)
    assert fold_fraction(forward) == 0 and float(jacobian_determinant(forward).min()) > 0.5
    assert float(forward.abs().max()) > 8  # a large deformation, not a near-identity one
    reg.raw_field = lambda moving, fixed: -swirl
    backward = reg(x, x)
    round_trip = forward + warp_image(backward, forward)  # x -> x + forward(x) -> ... + backward(...)
    assert float(round_trip.abs().mean()) < 0.1 and float(round_trip[..., 4:-4, 4:-4].abs().max()) < 0.5


def test_pad_and_crop_roundtrip():
    x = torch.rand(1, 2, 7, 9, 10)
    padded, pads = pad_to_multiple(x, 8)
    assert all(n % 8 == 0 for n in padded.shape[2:])
    assert torch.equal(crop_padding(padded, pads), x)


def test_mismatched_pair_is_refused():
    reg = RegistrationNet(2, channels=(4, 8), strides=(2,))
    with pytest.raises(ValueError, match="same shape"):
        reg(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 10))


def test_upsample_top_layer_gives_full_resolution_outputs_without_a_full_resolution_kernel():
    import torch

    from deepatlas.networks.top_layer import UpsampleTop

    seg = SegmentationNet(3, 5, channels=(4, 8, 8), strides=(2, 2), top_layer="upsample")
    reg = RegistrationNet(3, channels=(4, 8, 8), strides=(2, 2), top_layer="upsample")
    image = torch.rand(2, 1, 20, 24, 20)
    logits = seg(image)
    assert logits.shape == (2, 5, 20, 24, 20)
    assert reg(image, image).shape == (2, 3, 20, 24, 20)
    assert isinstance(seg.unet.model[-1], UpsampleTop) and isinstance(reg.unet.model[-1], UpsampleTop)
    assert not any(isinstance(m, torch.nn.ConvTranspose3d) and m.stride == (2, 2, 2) for m in seg.unet.model[-1:])
    logits.sum().backward()
    assert seg.unet.model[-1].conv.weight.grad.abs().sum() > 0


def test_reg_net_applies_its_head_before_the_upsampling_with_the_same_field():
    """The head runs at half resolution (cheaper); the field equals head(upsample(features))."""
    torch.manual_seed(0)
    reg = RegistrationNet(3, channels=(4, 8, 8), strides=(2, 2), top_layer="upsample")
    torch.nn.init.normal_(reg.head.weight)  # the head starts at zero: give it something to commute
    torch.nn.init.normal_(reg.head.bias)
    moving, fixed = torch.rand(2, 1, 16, 20, 12), torch.rand(2, 1, 16, 20, 12)
    field = reg(moving, fixed)
    reference = reg.head(reg.unet(torch.cat([moving, fixed], dim=1)))  # upsample 8 channels, then the head
    assert field.abs().mean() > 0.1
    torch.testing.assert_close(field, reference, atol=1e-5, rtol=1e-4)
    field.sum().backward()
    assert reg.head.weight.grad.abs().sum() > 0 and reg.unet.model[-1].conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("channels,strides", [((4, 8), (2,)), ((4, 8, 16), (2, 2)), ((8, 16, 16, 16), (2, 2, 1))])
def test_upsample_top_layer_fits_any_depth(channels, strides):
    """Two-level U-Nets concatenate first + second level channels at the top, deeper ones 2 x first."""
    import torch

    for res_units in (0, 1):
        reg = RegistrationNet(2, channels=channels, strides=strides, num_res_units=res_units, top_layer="upsample")
        seg = SegmentationNet(2, 3, channels=channels, strides=strides, num_res_units=res_units, top_layer="upsample")
        image = torch.rand(1, 1, 24, 20)
        assert reg(image, image).shape == (1, 2, 24, 20) and seg(image).shape == (1, 3, 24, 20)
