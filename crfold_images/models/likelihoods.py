"""Pixel likelihoods p(x|z) of the image VAEs, each returning per-image NLLs in nats.

Every likelihood maps the decoder's raw output ``params`` (B, K*C, H, W) to a distribution
over images x (B, C, H, W) with values in [0, 1]:

* :class:`Bernoulli` (K = 1, logits) for binarized grayscale data (MNIST, Omniglot). The data
  are binarized dynamically: each training batch draws x_bin ~ Bernoulli(x) afresh
  (:func:`binarize`); evaluation uses one fixed draw per image (a seeded generator).
* :class:`Gaussian` (K = 1, means in [0, 1] via a sigmoid) with a fixed standard deviation or a
  learned one per channel. A continuous density on discrete pixels: its NLL is not comparable to
  the discrete likelihoods' NLLs.
* :class:`DiscretizedLogistic` (K = 2: means and log scales) over the 256 pixel levels, the
  PixelCNN++ / NVAE construction for colour images, data rescaled to [-1, 1].

``nll(params, x)`` returns (B,) summed over channels and pixels (docs/design.md#units);
``mean(params)`` the expected image in [0, 1] for plots; ``sample(params, generator)`` a draw.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Bernoulli", "DiscretizedLogistic", "Gaussian", "Likelihood", "binarize", "make"]


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Dynamic binarization: x_bin ~ Bernoulli(x), elementwise.

    Args:
        x: (B, C, H, W) floating intensities in [0, 1].
        generator: optional generator (on x's device, or CPU: the uniforms are moved).

    Returns:
        (B, C, H, W) tensor of 0.0 / 1.0 in x's dtype and device.
    """
    dev = generator.device if generator is not None else x.device
    u = torch.rand(x.shape, generator=generator, device=dev).to(x.device)
    return (u < x).to(x.dtype)


class Likelihood(nn.Module):
    """Base class: ``params_per_channel`` decoder outputs per image channel."""

    params_per_channel = 1
    discrete = True  # whether the NLL is a discrete (comparable, in nats) likelihood

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None):
        raise NotImplementedError

    @staticmethod
    def _check(params: torch.Tensor, x: torch.Tensor, k: int) -> None:
        if x.dim() != 4 or params.dim() != 4:
            raise ValueError(
                f"params and x must be 4-D (B, C, H, W), got {tuple(params.shape)} and "
                f"{tuple(x.shape)}"
            )
        b, c, h, w = x.shape
        if params.shape != (b, k * c, h, w):
            raise ValueError(
                f"params must have shape {(b, k * c, h, w)} for x of shape {tuple(x.shape)}, "
                f"got {tuple(params.shape)}"
            )


class Bernoulli(Likelihood):
    """Bernoulli pixels; ``params`` are logits (B, C, H, W); x must be 0/1 (binarized)."""

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B,) -log p(x|z) summed over pixels."""
        self._check(params, x, 1)
        bce = F.binary_cross_entropy_with_logits(params, x, reduction="none")  # (B, C, H, W)
        return bce.flatten(1).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None):
        return binarize(torch.sigmoid(params), generator)


class Gaussian(Likelihood):
    """Gaussian pixels N(sigmoid(params), sigma^2).

    Args:
        channels: image channels C (one learned log sigma per channel).
        sigma: fixed standard deviation; None learns log sigma (initialized at log 0.1).
    """

    discrete = False

    def __init__(self, channels: int, sigma: float | None = None) -> None:
        super().__init__()
        if sigma is not None and not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma must be a finite number > 0 or None, got {sigma}")
        init = torch.full((channels,), math.log(0.1 if sigma is None else sigma))
        if sigma is None:
            self.log_sigma = nn.Parameter(init)
        else:
            self.register_buffer("log_sigma", init)

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B,) -log N(x; sigmoid(params), sigma^2) summed over pixels (a density)."""
        self._check(params, x, 1)
        log_sigma = self.log_sigma.clamp(min=-7.0).view(1, -1, 1, 1)  # (1, C, 1, 1)
        z = (x - torch.sigmoid(params)) * torch.exp(-log_sigma)
        per_pixel = 0.5 * z.square() + log_sigma + 0.5 * math.log(2 * math.pi)
        return per_pixel.flatten(1).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None):
        dev = generator.device if generator is not None else params.device
        eps = torch.randn(params.shape, generator=generator, device=dev).to(params.device)
        sigma = torch.exp(self.log_sigma.clamp(min=-7.0)).view(1, -1, 1, 1)
        return (torch.sigmoid(params) + sigma * eps).clamp(0.0, 1.0)


class DiscretizedLogistic(Likelihood):
    """Discretized logistic over 256 levels; ``params`` = (means, log scales), (B, 2C, H, W).

    Pixel x in [0, 1] (a multiple of 1/255) maps to y = 2x - 1 in [-1, 1]; level bins have half
    width 1/255; the two extreme bins extend to -inf / +inf.
    """

    params_per_channel = 2

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B,) -log P(x|z) summed over channels and pixels (a probability mass)."""
        self._check(params, x, 2)
        c = x.shape[1]
        mu, log_s = params[:, :c], params[:, c:].clamp(min=-7.0)  # (B, C, H, W) each
        y = (torch.round(x * 255.0) / 127.5 - 1.0).to(params.dtype)  # (B, C, H, W)
        centred = y - mu
        inv_s = torch.exp(-log_s)
        plus_in = inv_s * (centred + 1.0 / 255.0)
        min_in = inv_s * (centred - 1.0 / 255.0)
        log_cdf_plus = plus_in - F.softplus(plus_in)  # log sigmoid(plus_in), lowest bin
        log_one_minus_cdf_min = -F.softplus(min_in)  # log (1 - sigmoid(min_in)), highest bin
        cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
        mid_in = inv_s * centred
        # Density at the bin centre times the bin width, for bins too thin for a cdf difference.
        log_pdf_mid = mid_in - log_s - 2.0 * F.softplus(mid_in) + math.log(2.0 / 255.0)
        log_mid = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid)
        log_p = torch.where(
            y < -0.999, log_cdf_plus, torch.where(y > 0.999, log_one_minus_cdf_min, log_mid)
        )
        return -log_p.flatten(1).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        c = params.shape[1] // 2
        return ((params[:, :c].clamp(-1.0, 1.0) + 1.0) / 2.0).clamp(0.0, 1.0)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None):
        c = params.shape[1] // 2
        mu, log_s = params[:, :c], params[:, c:].clamp(min=-7.0)
        dev = generator.device if generator is not None else params.device
        u = torch.rand(mu.shape, generator=generator, device=dev).to(params.device)
        u = u.clamp(1e-5, 1.0 - 1e-5)
        y = mu + torch.exp(log_s) * (torch.log(u) - torch.log1p(-u))  # logistic draw
        return torch.round((y.clamp(-1.0, 1.0) + 1.0) * 127.5) / 255.0


def make(name: str, channels: int, gaussian_sigma: float | None = None) -> Likelihood:
    """Build a likelihood by name: "bernoulli", "gaussian" or "logistic".

    Args:
        name: the likelihood.
        channels: image channels C.
        gaussian_sigma: fixed sigma of "gaussian"; None learns it.

    Raises:
        ValueError: on an unknown name.
    """
    if name == "bernoulli":
        return Bernoulli()
    if name == "gaussian":
        return Gaussian(channels, gaussian_sigma)
    if name == "logistic":
        return DiscretizedLogistic()
    raise ValueError(f"likelihood must be 'bernoulli', 'gaussian' or 'logistic', got {name!r}")
