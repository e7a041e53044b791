"""NVAE building blocks: weight-normalised convs with spectral-norm buffers, SE, residual cells.

Written from the published description of NVAE (Vahdat & Kautz, NeurIPS 2020; summarised in
docs/design.md#nvae); NVIDIA's code is under a non-commercial licence and was not used.

* :class:`WNConv2d` - a conv whose weight is ``W = g * v / ||v||`` (one norm per output channel),
  carrying persistent power-iteration vectors ``sn_u`` (rows,) and ``sn_v`` (cols,) for the
  largest singular value of ``W.reshape(out, -1)``.
* :class:`SqueezeExcite` - channel gating, hidden width ``max(C // 16, 4)``.
* :class:`EncoderCell` - ``skip + 0.1 * SE(conv3x3(Swish(BN(conv3x3(Swish(BN(x)))))))``, optional
  stride-2 downsampling (channels grow).
* :class:`DecoderCell` - inverted residual ``BN, 1x1 expand x6, BN, Swish, depthwise 5x5, BN,
  Swish, 1x1, BN, SE``, optional nearest x2 upsampling (channels shrink).
* :func:`spectral_regularization`, :func:`bn_regularization` - the NVAE smoothness penalties.

Every tensor in this file is an NCHW feature map ``(B, C, H, W)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DecoderCell",
    "EncoderCell",
    "SqueezeExcite",
    "WNConv2d",
    "bn_regularization",
    "soft_clamp",
    "spectral_regularization",
]

BN_MOMENTUM = 0.05  # running statistics move slowly: NVAE's eval-mode likelihoods depend on them
RESIDUAL_SCALE = 0.1  # out = skip + 0.1 * cell(x)


def soft_clamp(x: torch.Tensor, bound: float = 5.0) -> torch.Tensor:
    """Smoothly clamp to (-bound, bound): ``bound * tanh(x / bound)``; any shape, same dtype."""
    return bound * torch.tanh(x / bound)


class WNConv2d(nn.Conv2d):
    """Weight-normalised 2-D convolution with power-iteration state for spectral regularisation.

    The effective weight is ``W = g * v / ||v||`` with ``v = self.weight`` (the direction) and
    ``g = self.weight_g`` (out,), one norm per output channel; ``g`` starts at ``||v||`` so the
    initial ``W`` equals PyTorch's default initialisation. ``sn_u`` (out,) and ``sn_v``
    (in / groups * kh * kw,) are unit vectors kept in the state dict, so one power iteration per
    training step refines the estimate of the largest singular value across steps.

    Args:
        in_channels, out_channels, kernel_size, stride, groups, bias: as ``nn.Conv2d``.
        padding: ``None`` means "same" for odd kernels (``kernel_size // 2``).

    Shapes:
        input (B, in_channels, H, W) -> output (B, out_channels, H / stride, W / stride).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        pad = kernel_size // 2 if padding is None else padding
        super().__init__(
            in_channels, out_channels, kernel_size, stride, pad, groups=groups, bias=bias
        )
        with torch.no_grad():
            norm = self.weight.flatten(1).norm(dim=1)  # (out,)
        self.weight_g = nn.Parameter(norm.clone())
        rows, cols = self.weight.shape[0], self.weight[0].numel()
        self.register_buffer("sn_u", F.normalize(torch.randn(rows), dim=0, eps=1e-6))
        self.register_buffer("sn_v", F.normalize(torch.randn(cols), dim=0, eps=1e-6))

    def normalized_weight(self) -> torch.Tensor:
        """The effective weight ``g * v / ||v||``, shape of ``self.weight`` (out, in/groups, k, k)."""
        norm = self.weight.flatten(1).norm(dim=1).clamp_min(1e-12)  # (out,)
        return self.weight * (self.weight_g / norm).view(-1, 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            x, self.normalized_weight(), self.bias, self.stride, self.padding, 1, self.groups
        )

    def spectral_norm(self, n_iter: int = 1) -> torch.Tensor:
        """Power-iteration estimate of the largest singular value of ``W.reshape(out, -1)``.

        Runs ``n_iter`` iterations on the persistent ``sn_u``/``sn_v`` (without gradient; 0 only
        reads them), then returns ``u^T W v``, which is differentiable in ``g`` and ``v``.

        Args:
            n_iter: power iterations to run first (>= 0).

        Returns:
            0-d float32 tensor, the estimate (a lower bound that converges to sigma_max).
        """
        if n_iter < 0:
            raise ValueError(f"n_iter must be >= 0, got {n_iter}")
        w = self.normalized_weight().flatten(1).float()  # (rows, cols)
        if n_iter > 0:
            with torch.no_grad():
                u, v = self.sn_u.float(), self.sn_v.float()
                for _ in range(n_iter):
                    v = F.normalize(w.T @ u, dim=0, eps=1e-6)  # (cols,)
                    u = F.normalize(w @ v, dim=0, eps=1e-6)  # (rows,)
                self.sn_u.copy_(u)
                self.sn_v.copy_(v)
        return torch.dot(self.sn_u.float(), w @ self.sn_v.float())


def spectral_regularization(module: nn.Module, n_iter: int = 1) -> torch.Tensor:
    """Sum over every :class:`WNConv2d` in ``module`` of its largest singular value (estimated).

    Call once per training step (outside autocast): each call advances every layer's power
    iteration by ``n_iter`` steps.

    Returns:
        0-d float32 tensor (0 if there is no such layer).
    """
    terms = [m.spectral_norm(n_iter) for m in module.modules() if isinstance(m, WNConv2d)]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def bn_regularization(module: nn.Module) -> torch.Tensor:
    """Sum over every affine ``BatchNorm2d`` in ``module`` of ``max |gamma|``; 0-d float32."""
    terms = [
        m.weight.abs().max().float()
        for m in module.modules()
        if isinstance(m, nn.BatchNorm2d) and m.weight is not None
    ]
    return torch.stack(terms).sum() if terms else torch.zeros(())


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: ``x * sigmoid(W2 relu(W1 mean_hw(x)))``, hidden ``max(C//16, 4)``.

    Shapes:
        (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(channels // 16, 4)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3))  # (B, C)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))  # (B, C)
        return x * gate[:, :, None, None]


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)


class EncoderCell(nn.Module):
    """Bottom-up residual cell: ``skip(x) + 0.1 * SE(conv(Swish(BN(conv(Swish(BN(x)))))))``.

    Both convs are 3x3 and weight-normalised; the first has the stride. With ``downsample`` the
    cell halves H and W (which must be even) and the skip is a 2x2 average pool followed by a 1x1
    conv to ``out_channels``; otherwise ``in_channels`` must equal ``out_channels`` and the skip
    is the identity.

    Shapes:
        (B, in_channels, H, W) -> (B, out_channels, H', W'), H' = H / 2 when downsampling.
    """

    def __init__(self, in_channels: int, out_channels: int, downsample: bool = False) -> None:
        super().__init__()
        if not downsample and in_channels != out_channels:
            raise ValueError(
                f"out_channels must equal in_channels ({in_channels}) without downsampling, "
                f"got {out_channels}"
            )
        self.downsample = downsample
        self.skip = WNConv2d(in_channels, out_channels, 1) if downsample else nn.Identity()
        self.ops = nn.Sequential(
            _bn(in_channels),
            nn.SiLU(),
            WNConv2d(in_channels, out_channels, 3, stride=2 if downsample else 1),
            _bn(out_channels),
            nn.SiLU(),
            WNConv2d(out_channels, out_channels, 3),
            SqueezeExcite(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip(F.avg_pool2d(x, 2)) if self.downsample else x
        return skip + RESIDUAL_SCALE * self.ops(x)


class DecoderCell(nn.Module):
    """Top-down inverted-residual cell with squeeze-excitation.

    ``ops = BN, 1x1 (C_in -> 6 C_out), BN, Swish, depthwise 5x5, BN, Swish, 1x1 (-> C_out), BN,
    SE`` and ``out = skip + 0.1 * ops``. With ``upsample`` the input is first enlarged x2 by
    nearest-neighbour interpolation and the skip is a 1x1 conv to ``out_channels``; otherwise
    ``in_channels`` must equal ``out_channels`` and the skip is the identity.

    Shapes:
        (B, in_channels, H, W) -> (B, out_channels, H', W'), H' = 2 H when upsampling.
    """

    def __init__(
        self, in_channels: int, out_channels: int, upsample: bool = False, expand: int = 6
    ) -> None:
        super().__init__()
        if not upsample and in_channels != out_channels:
            raise ValueError(
                f"out_channels must equal in_channels ({in_channels}) without upsampling, "
                f"got {out_channels}"
            )
        hidden = expand * out_channels
        self.upsample = upsample
        self.skip = WNConv2d(in_channels, out_channels, 1) if upsample else nn.Identity()
        self.ops = nn.Sequential(
            _bn(in_channels),
            WNConv2d(in_channels, hidden, 1),
            _bn(hidden),
            nn.SiLU(),
            WNConv2d(hidden, hidden, 5, groups=hidden),
            _bn(hidden),
            nn.SiLU(),
            WNConv2d(hidden, out_channels, 1, bias=False),
            _bn(out_channels),
            SqueezeExcite(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.skip(x) + RESIDUAL_SCALE * self.ops(x)
