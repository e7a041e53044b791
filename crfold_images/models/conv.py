"""Encoders and decoders of the image VAEs: the WAE-style conv nets of the paper and an MLP.

Conv (Tolstikhin et al. 2017, the architecture the paper builds on): the encoder is four
stride-2 4x4 convolutions with 128, 256, 512, 1024 channels (times ``width``), each followed by
BatchNorm and ReLU, then one linear layer to (mu, logvar). The decoder mirrors it: a linear layer
to the 1024-channel map, three stride-2 transposed convolutions (512, 256, 128) with BatchNorm and
ReLU, and a last stride-2 transposed convolution to the likelihood's parameters.

Sizes: 32 and 64 px are native (the 1024-channel map is 2x2 and 4x4). 28 px images (MNIST,
Omniglot) are zero-padded by 2 px on each side to 32 before the encoder, and the decoder's 32 px
output is cropped back to the central 28x28, so the likelihood covers exactly the 784 real pixels
(NVAE's recipe, docs/design.md#nvae; zero is the background of these sets). Any size
``16 * 2**k`` or ``16 * 2**k - 4`` works the same way.

MLP: two hidden layers of ``512 * width`` ReLU units each way, on the flattened image (no
padding); useful for tiny CPU budgets.

Shapes: encoder (B, C, S, S) -> (mu (B, L), logvar (B, L)); decoder (B, L) -> params
(B, K*C, S, S) with K the likelihood's parameters per channel.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder", "padded_size"]

BASE_CHANNELS = (128, 256, 512, 1024)


def padded_size(size: int) -> int:
    """The conv nets' working size for an input of ``size`` px (28 -> 32, 32 -> 32, 64 -> 64).

    Raises:
        ValueError: if size is not a multiple of 16 (>= 16) nor 4 less than one.
    """
    if size >= 16 and size % 16 == 0:
        return size
    if size >= 12 and (size + 4) % 16 == 0:
        return size + 4
    raise ValueError(f"image size must be a multiple of 16 or 4 less than one (28), got {size}")


def _channels(width: float) -> list[int]:
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    return [max(8, round(c * width)) for c in BASE_CHANNELS]


class ConvEncoder(nn.Module):
    """x (B, C, S, S) float -> (mu, logvar), each (B, latent_dim).

    Args:
        in_channels: image channels C.
        image_size: S (28, 32, 64, ...; see :func:`padded_size`).
        latent_dim: L.
        width: channel multiplier (1.0 = 128/256/512/1024).
    """

    def __init__(self, in_channels: int, image_size: int, latent_dim: int, width: float = 1.0):
        super().__init__()
        self.image_size = image_size
        self.pad = (padded_size(image_size) - image_size) // 2
        chans = _channels(width)
        layers: list[nn.Module] = []
        prev = in_channels
        for c in chans:
            layers += [nn.Conv2d(prev, c, 4, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(True)]
            prev = c
        self.features = nn.Sequential(*layers)
        side = padded_size(image_size) // 16
        self.head = nn.Linear(prev * side * side, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 4 or x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(
                f"x must be (B, C, {self.image_size}, {self.image_size}), got {tuple(x.shape)}"
            )
        if self.pad:
            x = F.pad(x, (self.pad,) * 4)  # (B, C, S + 2p, S + 2p), zeros
        h = self.features(x).flatten(1)  # (B, 1024 * side^2)
        mu, logvar = self.head(h).chunk(2, dim=-1)  # (B, L) each
        return mu, logvar


class ConvDecoder(nn.Module):
    """z (B, latent_dim) -> likelihood params (B, out_channels, S, S).

    Args:
        out_channels: K * C decoder outputs per pixel.
        image_size: S, as for :class:`ConvEncoder`.
        latent_dim: L.
        width: channel multiplier.
    """

    def __init__(self, out_channels: int, image_size: int, latent_dim: int, width: float = 1.0):
        super().__init__()
        self.image_size = image_size
        work = padded_size(image_size)
        self.crop = (work - image_size) // 2
        chans = _channels(width)[::-1]  # 1024, 512, 256, 128
        self.side = work // 16
        self.first = chans[0]
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, chans[0] * self.side * self.side), nn.ReLU(True)
        )
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [
                nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(True),
            ]
        layers.append(nn.ConvTranspose2d(chans[-1], out_channels, 4, 2, 1))
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(-1, self.first, self.side, self.side)  # (B, 1024w, s, s)
        out = self.deconv(h)  # (B, K*C, work, work)
        if self.crop:
            c = self.crop
            out = out[:, :, c:-c, c:-c]  # (B, K*C, S, S)
        return out


class MLPEncoder(nn.Module):
    """x (B, C, S, S) -> (mu, logvar), each (B, L), through two hidden ReLU layers."""

    def __init__(self, in_channels: int, image_size: int, latent_dim: int, width: float = 1.0):
        super().__init__()
        hidden = max(16, round(512 * width))
        self.image_size = image_size
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * image_size * image_size, hidden),
            nn.ReLU(True),
            nn.Linear(hidden, hidden),
            nn.ReLU(True),
            nn.Linear(hidden, 2 * latent_dim),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 4 or x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(
                f"x must be (B, C, {self.image_size}, {self.image_size}), got {tuple(x.shape)}"
            )
        mu, logvar = self.net(x).chunk(2, dim=-1)
        return mu, logvar


class MLPDecoder(nn.Module):
    """z (B, L) -> params (B, out_channels, S, S) through two hidden ReLU layers."""

    def __init__(self, out_channels: int, image_size: int, latent_dim: int, width: float = 1.0):
        super().__init__()
        hidden = max(16, round(512 * width))
        self.shape = (out_channels, image_size, image_size)
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.ReLU(True),
            nn.Linear(hidden, hidden),
            nn.ReLU(True),
            nn.Linear(hidden, out_channels * image_size * image_size),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.shape)
