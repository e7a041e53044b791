"""Output likelihoods of NVAE: Bernoulli (binarized images) and a discretized logistic mixture.

Both return per-sample log-likelihoods in nats, summed over pixels and channels, computed in
float32 whatever the dtype of the decoder output (mixed precision keeps log-probs in float32).

The discretized mixture of logistics follows the published description of PixelCNN++
(Salimans et al., ICLR 2017): for C channels and M components the decoder emits
``M * (1 + 2 C + C (C - 1) / 2)`` maps per pixel (10 M for RGB): mixture logits, then per channel
M means, M log-scales and the C (C - 1) / 2 autoregressive channel coefficients (tanh), so
channel c's mean is ``mu_c + sum_{j<c} a_{cj} x_j``. Pixels live on ``2^bits`` bins in [-1, 1];
the edge bins take the whole tail mass.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["bernoulli_log_prob", "dmol_log_prob", "dmol_num_params"]


def bernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log Bernoulli(x; sigmoid(logits)) summed over (C, H, W).

    Args:
        logits: (B, C, H, W) any float dtype.
        x: (B, C, H, W) targets in {0, 1} (values in [0, 1] give the cross-entropy).

    Returns:
        (B,) float32 log-likelihood in nats.
    """
    if logits.shape != x.shape or logits.dim() != 4:
        raise ValueError(
            f"logits and x must be (B, C, H, W) of the same shape, got {tuple(logits.shape)} "
            f"and {tuple(x.shape)}"
        )
    nll = F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none")
    return -nll.sum(dim=(1, 2, 3))


def dmol_num_params(channels: int, num_mixtures: int) -> int:
    """Decoder output maps for a C-channel discretized mixture of ``num_mixtures`` logistics."""
    if channels < 1 or num_mixtures < 1:
        raise ValueError(f"channels and num_mixtures must be >= 1, got {channels}, {num_mixtures}")
    return num_mixtures * (1 + 2 * channels + channels * (channels - 1) // 2)


def dmol_log_prob(
    params: torch.Tensor, x: torch.Tensor, num_mixtures: int, num_bits: int = 8
) -> torch.Tensor:
    """log-likelihood of discretized images under a mixture of logistics, summed over pixels.

    Args:
        params: (B, dmol_num_params(C, M), H, W) decoder output, any float dtype.
        x: (B, C, H, W) float pixels in [-1, 1] on the grid ``2 k / (2^bits - 1) - 1``.
        num_mixtures: M.
        num_bits: bits per channel (8: 256 bins).

    Returns:
        (B,) float32 log-likelihood in nats (divide by ``ln 2 * C * H * W`` for bits/dim).
    """
    if x.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    m = num_mixtures
    expected = dmol_num_params(c, m)
    if params.shape != (b, expected, h, w):
        raise ValueError(
            f"params must have shape {(b, expected, h, w)} for C={c}, M={m}, got "
            f"{tuple(params.shape)}"
        )
    params, x = params.float(), x.float()
    logit_probs = params[:, :m]  # (B, M, H, W)
    means = params[:, m : m * (1 + c)].reshape(b, c, m, h, w)  # (B, C, M, H, W)
    log_scales = params[:, m * (1 + c) : m * (1 + 2 * c)].reshape(b, c, m, h, w).clamp_min(-7.0)
    xe = x.unsqueeze(2)  # (B, C, 1, H, W)
    if c > 1:
        coeffs = torch.tanh(params[:, m * (1 + 2 * c) :].reshape(b, -1, m, h, w))  # (B, K, M, H, W)
        shifted = [means[:, 0]]
        k = 0
        for ch in range(1, c):
            mean_c = means[:, ch]
            for j in range(ch):
                mean_c = mean_c + coeffs[:, k] * xe[:, j]
                k += 1
            shifted.append(mean_c)
        means = torch.stack(shifted, dim=1)  # (B, C, M, H, W)
    half_bin = 1.0 / (2**num_bits - 1)
    centered = xe - means
    inv_s = torch.exp(-log_scales)
    plus_in = inv_s * (centered + half_bin)
    min_in = inv_s * (centered - half_bin)
    log_cdf_plus = plus_in - F.softplus(plus_in)  # log sigmoid(plus_in): the x = -1 bin
    log_one_minus_cdf_min = -F.softplus(min_in)  # log(1 - sigmoid(min_in)): the x = +1 bin
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    mid_in = inv_s * centered
    # density at the bin centre times the bin width: used only where the CDF difference underflows
    log_pdf_mid = mid_in - log_scales - 2.0 * F.softplus(mid_in) + math.log(2.0 * half_bin)
    log_mid = torch.where(
        cdf_delta > 1e-5, torch.log(cdf_delta.clamp_min(1e-12)), log_pdf_mid
    )  # (B, C, M, H, W)
    edge = 1.0 - half_bin  # a pixel above this is in the top bin, below its negative the bottom
    log_probs = torch.where(
        xe < -edge, log_cdf_plus, torch.where(xe > edge, log_one_minus_cdf_min, log_mid)
    )
    log_mix = log_probs.sum(dim=1) + F.log_softmax(logit_probs, dim=1)  # (B, M, H, W)
    return torch.logsumexp(log_mix, dim=1).sum(dim=(1, 2))
