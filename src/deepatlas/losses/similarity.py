"""Image similarity losses for registration (lower is more similar)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deepatlas.options import SIMILARITY, look_up_option


class LocalNCCLoss(nn.Module):
    """Negative local (windowed) squared normalized cross-correlation.

    For each voxel, over a ``window``-wide cube (square in 2D) with zero padding:
    ``cc = cov(t, p)^2 / (var(t) var(p))``; the loss is ``-mean(cc)``, in
    ``[-1, 0]``, ``-1`` when the images agree up to a local linear intensity change.
    It is the same quantity as MONAI's ``LocalNormalizedCrossCorrelationLoss``
    with a rectangular kernel, computed as separable box sums (one strided sum per
    axis up to 9-voxel windows, running sums above): about 10x faster on CPU than a
    full 3-D window, which had made the similarity the slowest part of a
    registration step.

    Args:
        window: odd window width in voxels.
        eps: floor on the local variances so flat regions (background) give 0, not NaN.
    """

    def __init__(self, window: int = 7, eps: float = 1e-5) -> None:
        super().__init__()
        _check_window(window)
        self.window = window
        self.eps = eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``pred``, ``target``: ``BxCxHxW[xD]``."""
        return -local_ncc_map(pred, target, self.window, self.eps).mean()


def local_ncc_map(pred: torch.Tensor, target: torch.Tensor, window: int = 7, eps: float = 1e-5) -> torch.Tensor:
    """Voxel-wise squared local NCC in [0, 1], ``BxCxHxW[xD]`` (see :class:`LocalNCCLoss`)."""
    pred, target = pred.float(), target.float()
    stats = torch.cat([pred, target, pred * pred, target * target, pred * target], dim=1)
    p_mean, t_mean, pp, tt, pt = torch.chunk(box_filter(stats, window), 5, dim=1)
    n = float(window ** (pred.ndim - 2))
    return _squared_ncc(p_mean, pp, pt, t_mean, _variance(t_mean, tt, n, eps), n, eps)


def _check_window(window: int) -> None:
    if window % 2 != 1 or window < 1:
        raise ValueError(f"window must be a positive odd number, got {window}")


def _variance(mean: torch.Tensor, mean_sq: torch.Tensor, n: float, eps: float) -> torch.Tensor:
    """Windowed variance from windowed means, as an n-scaled sum floored at ``eps`` (MONAI's eps
    semantics on variance sums)."""
    return torch.clamp((mean_sq - mean * mean) * n, min=eps)


def _squared_ncc(p_mean, pp, pt, t_mean, t_var, n: float, eps: float) -> torch.Tensor:
    """``cov(t, p)^2 / (var(t) var(p))`` per voxel from windowed means; ``t_var`` from :func:`_variance`."""
    cross = (pt - p_mean * t_mean) * n
    return cross * cross / (_variance(p_mean, pp, n, eps) * t_var)


def box_filter(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over a ``window``-wide cube around each voxel (zeros outside) of ``BxCxHxW[xD]``.

    Separable: a sum along one axis at a time, then one scaling. The filter is symmetric with
    zero padding, so it is its own adjoint: the backward pass is the same filter applied to
    the gradient, cheaper than autograd's trace through padding and slicing (half the time of
    a per-pair optimisation step went there).
    """
    return _BoxFilter.apply(x, window)


def _box_filter(x: torch.Tensor, window: int) -> torch.Tensor:
    half, dims = window // 2, x.ndim - 2
    if window <= 9:
        # pad every axis once, then one reduction per axis over a strided view: each input is read
        # ``window`` times but each output written once, ~2x faster on CPU than summing shifted
        # copies (80x96x80, windows 3 and 5); memory traffic, not arithmetic, is what these cost
        x = F.pad(x, [half] * (2 * dims))
        for dim in range(2, x.ndim):
            x = x.unfold(dim, window, 1).sum(-1)
    else:  # running sums: O(1) per voxel whatever the window
        for dim in range(2, x.ndim):
            pad = [0, 0] * dims
            pad[2 * (x.ndim - 1 - dim)], pad[2 * (x.ndim - 1 - dim) + 1] = half + 1, half
            sums = F.pad(x, pad).cumsum(dim)
            n = x.shape[dim]
            x = sums.narrow(dim, window, n) - sums.narrow(dim, 0, n)
    return x * (1.0 / window**dims)


class _BoxFilter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, window: int) -> torch.Tensor:
        ctx.window = window
        return _box_filter(x, window)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _box_filter(grad, ctx.window), None


class LocalNCCToFixed(nn.Module):
    """:class:`LocalNCCLoss` against one fixed image whose local statistics are computed once.

    Per-pair optimisation evaluates the similarity hundreds of times against the same fixed
    image: its windowed mean and variance are constants, so each evaluation filters 3
    statistics instead of 5. ``fixed``: ``BxCxHxW[xD]``; call with the warped moving image.
    """

    def __init__(self, fixed: torch.Tensor, window: int = 5, eps: float = 1e-5) -> None:
        super().__init__()
        _check_window(window)
        self.window, self.eps = window, eps
        self.fixed = fixed.float()
        self.n = float(window ** (fixed.ndim - 2))
        t_mean, tt = torch.chunk(box_filter(torch.cat([self.fixed, self.fixed * self.fixed], 1), window), 2, dim=1)
        self.t_mean = t_mean
        self.t_var = _variance(t_mean, tt, self.n, eps)

    def to_warp(self, moving: torch.Tensor) -> torch.Tensor:
        """What to warp at every step: the moving image itself."""
        return moving.float()

    def forward(self, pred: torch.Tensor) -> torch.Tensor:
        return _LNCCToFixed.apply(pred.float(), self)


class _LNCCToFixed(torch.autograd.Function):
    """``-mean(cc)`` of :class:`LocalNCCToFixed` with its gradient in closed form.

    With windowed means ``m = M[p]``, ``q = M[p^2]``, ``c = M[p t]`` (``M`` the box filter),
    ``cross = n (c - m M[t])``, ``var_p = n (q - m^2)`` and ``cc = cross^2 / (var_p var_t)``:
    ``dL/dc = -2 n cross / (V var_p var_t)``, ``dL/dq = n cc / (V var_p)`` (0 where the variance
    is floored), ``dL/dm = -M[t] dL/dc - 2 m dL/dq``, and, ``M`` being its own adjoint,
    ``dL/dp = M[dL/dm] + 2 p M[dL/dq] + t M[dL/dc]``. Autograd's trace of the same formula
    keeps and re-reads a dozen full-size intermediates; this is ~2x faster on CPU.
    """

    @staticmethod
    def forward(ctx, pred: torch.Tensor, loss: LocalNCCToFixed) -> torch.Tensor:
        fixed, n = loss.fixed, loss.n
        p_mean, pp, pt = torch.chunk(box_filter(torch.cat([pred, pred * pred, pred * fixed], 1), loss.window), 3, 1)
        cross = (pt - p_mean * loss.t_mean) * n
        p_var = _variance(p_mean, pp, n, loss.eps)
        cc = cross * cross / (p_var * loss.t_var)
        ctx.save_for_backward(pred, p_mean, cross, p_var, cc, p_var > loss.eps)  # floored: no gradient
        ctx.loss = loss
        return -cc.mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        pred, p_mean, cross, p_var, cc, free = ctx.saved_tensors
        loss, scale = ctx.loss, grad / cc.numel()
        d_cross = (-2.0 * loss.n) * scale * cross / (p_var * loss.t_var)  # dL/dc
        d_sq = (loss.n * scale) * (cc / p_var) * free  # dL/dq
        d_mean = -loss.t_mean * d_cross - 2.0 * p_mean * d_sq  # dL/dm
        g_mean, g_sq, g_cross = torch.chunk(box_filter(torch.cat([d_mean, d_sq, d_cross], 1), loss.window), 3, 1)
        return g_mean + 2.0 * pred * g_sq + loss.fixed * g_cross, None


class MutualInformationToFixed(nn.Module):
    """Negative mutual information between a warped moving image and one fixed image.

    For pairs whose intensities are related by any (not necessarily linear) mapping: T1 to
    T2, or scans from different scanners. Intensities (expected in [0, 1], as normalised by
    deepatlas) are spread over ``bins`` Gaussian Parzen windows, the joint histogram is a
    matrix product of the two images' window weights, and ``MI = sum p(a, b) log(p(a, b) /
    (p(a) p(b)))``, differentiable in the moving intensities. The fixed image's weights are
    computed once; ``max_voxels`` (a fixed random subset, as ANTs' Mattes MI samples) keeps a
    full-resolution evaluation cheap.
    """

    def __init__(self, fixed: torch.Tensor, bins: int = 32, max_voxels: int = 100_000, seed: int = 0) -> None:
        super().__init__()
        flat = fixed.float().reshape(fixed.shape[0], -1)
        self.index = None
        if flat.shape[1] > max_voxels:
            generator = torch.Generator().manual_seed(seed)
            self.index = torch.randperm(flat.shape[1], generator=generator)[:max_voxels].to(fixed.device)
            flat = flat[:, self.index]
        self.centers = torch.linspace(0, 1, bins, device=fixed.device)
        self.sigma = 1.0 / (bins - 1)
        self.fixed_weights = self._weights(flat)

    def _weights(self, values: torch.Tensor) -> torch.Tensor:
        """``B x N`` intensities -> ``B x N x bins`` Parzen weights summing to 1 per voxel."""
        distance = (values.clamp(0, 1)[..., None] - self.centers) / self.sigma
        weights = torch.exp(-0.5 * distance * distance)
        return weights / weights.sum(-1, keepdim=True)

    def to_warp(self, moving: torch.Tensor) -> torch.Tensor:
        """What to warp at every step: the moving image itself."""
        return moving.float()

    def forward(self, pred: torch.Tensor) -> torch.Tensor:
        flat = pred.float().reshape(pred.shape[0], -1)
        if self.index is not None:
            flat = flat[:, self.index]
        joint = self._weights(flat).transpose(1, 2) @ self.fixed_weights / flat.shape[1]  # B x bins x bins
        marginal_m, marginal_f = joint.sum(2, keepdim=True), joint.sum(1, keepdim=True)
        eps = 1e-10
        mi = (joint * (torch.log(joint + eps) - torch.log(marginal_m * marginal_f + eps))).sum((1, 2))
        return -mi.mean()


def mind_ssc(image: torch.Tensor, dilation: int = 1, eps: float = 1e-6) -> torch.Tensor:
    """MIND-SSC descriptors (Heinrich et al., MICCAI 2013) of ``B x 1 x *spatial``: ``B x K x *spatial``.

    Each voxel is described by how alike the patches (3 voxels wide) around pairs of its six
    neighbours (``dilation`` voxels away) are: K = 12 pairs in 3-D (4 in 2-D), the neighbours
    on different axes. Squared patch distances are made relative to their smallest and their
    mean at that voxel, then ``exp(-d / mean)``: the descriptor follows edges and texture,
    not intensity, so it matches scans of other contrast or scanner with a plain squared
    difference, and it is computed once per image rather than at every optimisation step.
    """
    dims = image.ndim - 2
    offsets = []
    for axis in range(dims):
        for sign in (1, -1):
            offset = [0] * dims
            offset[axis] = sign * dilation
            offsets.append(offset)
    pairs = [(a, b) for a in range(len(offsets)) for b in range(a + 1, len(offsets)) if a // 2 != b // 2]
    padded = F.pad(image.float(), [dilation] * (2 * dims), mode="replicate")
    shape = image.shape[2:]

    def shifted(offset: list[int]) -> torch.Tensor:
        view = padded
        for axis, step in enumerate(offset):
            view = view.narrow(axis + 2, dilation + step, shape[axis])
        return view

    distances = box_filter(torch.cat([(shifted(offsets[a]) - shifted(offsets[b])) ** 2 for a, b in pairs], 1), 3)
    distances = distances - distances.min(1, keepdim=True).values
    spread = distances.mean(1, keepdim=True)
    # per image: flat regions (background) would divide by ~0, and one image's range is not another's
    typical = spread.mean(dim=tuple(range(1, spread.ndim)), keepdim=True)
    spread = torch.maximum(torch.minimum(spread, typical * 1e3 + eps), typical * 1e-3 + eps)
    return torch.exp(-distances / spread)


class MINDToFixed(nn.Module):
    """Mean squared difference of MIND-SSC descriptors (:func:`mind_ssc`) against one fixed image.

    The moving image's descriptors are computed once (:meth:`to_warp`) and warped at every
    step, as ConvexAdam does, instead of describing each warped image anew.
    """

    def __init__(self, fixed: torch.Tensor, dilation: int = 1) -> None:
        super().__init__()
        self.dilation = dilation
        self.fixed = mind_ssc(fixed, dilation)

    def to_warp(self, moving: torch.Tensor) -> torch.Tensor:
        """What to warp: the moving image's descriptors, ``B x K x *spatial``."""
        return mind_ssc(moving, self.dilation)

    def forward(self, warped: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(warped.float(), self.fixed)


class MSELoss(nn.Module):
    """Mean squared intensity difference."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(pred.float(), target.float())


def make_similarity(name: str, window: int = 7) -> nn.Module:
    name = look_up_option(name, SIMILARITY, "similarity")
    return LocalNCCLoss(window=window) if name == "lncc" else MSELoss()
