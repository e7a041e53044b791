"""The per-batch computations of training and validation, for every FoldingNet mode.

:func:`compute_terms` is the objective of one training batch (see :mod:`crfold.train` for the
modes); :func:`validate` the loss and Chamfer metric over a split with z = mu, no augmentation.
"""

from __future__ import annotations

from typing import Any

import torch

from .amp import autocast
from .config import TrainConfig
from .consistency import cr_objective, gaussian_kl, vae_objective
from .models.common import Posterior
from .models.foldingnet import FoldingNetVAE, foldingnet_chamfer
from .trainer_utils import DistInfo, all_reduce_sum

__all__ = ["compute_terms", "validate"]


def compute_terms(
    model: FoldingNetVAE,
    x: torch.Tensor,
    cfg: TrainConfig,
    transform: Any = None,
    generator: torch.Generator | None = None,
    forward: Any = None,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """The loss terms of one training batch for ``cfg.mode``.

    Args:
        model: the (unwrapped) model; its ``reconstruction_nll`` is the reconstruction term.
        x: (B, N, 3) float32 clouds, no padding.
        cfg: mode, beta, lam.
        transform: the pair transform t (needed by ``vae+aug`` and ``cr``).
        generator: draws of t and of z (on x's device).
        forward: the callable running the forward pass (the DDP wrapper), default ``model``.
        amp_dtype: autocast dtype (None: float32); losses are computed in float32.

    Returns:
        0-d tensors (batch means, nats): ``loss`` (with grad), ``recon``, ``kl``,
        ``consistency`` (0 for ae/vae; unweighted for vae+aug), ``recon_aug``/``kl_aug`` for the
        paired modes, and ``chamfer`` (FoldingNet's metric on x, no grad).
    """
    b = x.shape[0]
    paired = cfg.mode in ("vae+aug", "cr")
    if paired and transform is None:
        raise ValueError(f"transform: mode {cfg.mode!r} needs the pair transform t, got None")
    inp = torch.cat([x, transform(x, generator=generator)]) if paired else x  # (B or 2B, N, 3)
    with autocast(x.device, amp_dtype):
        out = (forward or model)(inp, generator=generator)
    recon = out.recon.float()  # (B or 2B, M, 3); the Chamfer op runs in float32
    mu, logvar = out.posterior.mu.float(), out.posterior.logvar.float()  # (B or 2B, L)
    nll = model.reconstruction_nll(recon, inp.float())  # (B or 2B,)
    zero = torch.zeros((), device=x.device)
    if cfg.mode == "ae":  # the constant logvar of an AE carries nothing: no KL
        terms = vae_objective(nll, torch.zeros_like(nll), beta=cfg.beta)
    elif cfg.mode == "vae":
        terms = vae_objective(nll, gaussian_kl(mu, logvar), beta=cfg.beta)
    else:
        kl = gaussian_kl(mu, logvar)  # (2B,)
        terms = cr_objective(
            nll[:b], kl[:b], nll[b:], kl[b:],
            Posterior(mu[:b], logvar[:b]), Posterior(mu[b:], logvar[b:]),
            beta=cfg.beta, lam=cfg.lam if cfg.mode == "cr" else 0.0,
        )  # fmt: skip
    terms.setdefault("consistency", zero)
    with torch.no_grad():
        terms["chamfer"] = foldingnet_chamfer(recon[:b], x.float()).mean()
    return terms


@torch.no_grad()
def validate(
    model: FoldingNetVAE,
    loader: Any,
    cfg: TrainConfig,
    info: DistInfo,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Validation with z = mu and no augmentation, summed over every rank's share.

    Returns:
        ``val_loss`` (recon + beta * KL; recon alone for ae), ``val_recon``, ``val_kl``,
        ``val_chamfer`` (FoldingNet's metric), means over the split.
    """
    was_training = model.training
    model.eval()
    sums = [0.0, 0.0, 0.0, 0.0]  # recon, kl, chamfer, count
    for x, _ in loader:
        x = x.to(device)  # (B, N, 3)
        with autocast(device, amp_dtype):
            post = model.encode(x)
            recon = model.decode(post.mu)  # (B, M, 3)
        nll = model.reconstruction_nll(recon.float(), x)  # (B,)
        kl = (
            torch.zeros_like(nll)
            if cfg.mode == "ae"
            else gaussian_kl(post.mu.float(), post.logvar.float())
        )  # (B,)
        sums[0] += float(nll.sum())
        sums[1] += float(kl.sum())
        sums[2] += float(foldingnet_chamfer(recon.float(), x).sum())
        sums[3] += x.shape[0]
    model.train(was_training)
    recon_s, kl_s, cd_s, n = all_reduce_sum(sums, info, device)
    n = max(n, 1.0)
    return {
        "val_loss": (recon_s + cfg.beta * kl_s) / n,
        "val_recon": recon_s / n,
        "val_kl": kl_s / n,
        "val_chamfer": cd_s / n,
    }
