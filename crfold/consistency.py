"""Diagonal-Gaussian KL, the consistency term and the CR-VAE objective (Eq. 3 of the paper).

This is the single implementation of these quantities; ``crfold_images`` imports it too.

Conventions (docs/design.md#units and #consistency): ``logvar = log sigma^2``; every term is
computed per sample in nats (summed over latent dims, points or pixels) and the objectives average
over the batch, so ``beta`` and ``lam`` mean what the paper means. The CR-VAE maximizes

    L(x) + L(t(x)) - lam * R,   R = KL(q(z|t(x)) || q(z|x))

where L is the (beta-)ELBO. As a loss to minimize this is

    loss = [recon(x) + beta * KL(q(z|x) || p(z))] + [recon(t(x)) + beta * KL(q(z|t(x)) || p(z))]
           + lam * R

``beta`` multiplies only the KL to the prior, never R, and R has no stop-gradient on either
posterior (Algorithm 1 backpropagates through both).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from crfold.models.common import Posterior

__all__ = ["consistency_loss", "cr_objective", "gaussian_kl", "vae_objective"]


def _check_float(name: str, t: object) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    return t


def gaussian_kl(
    mu_q: torch.Tensor,
    logvar_q: torch.Tensor,
    mu_p: torch.Tensor | None = None,
    logvar_p: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL(q || p) between diagonal Gaussians, summed over the last (latent) dim.

    KL = 1/2 * sum_k [ logvar_p - logvar_q + (exp(logvar_q) + (mu_q - mu_p)^2) / exp(logvar_p) - 1 ]

    Args:
        mu_q: (..., L) float means of q.
        logvar_q: (..., L) float log variances of q, same shape as ``mu_q``.
        mu_p: means of p, broadcastable to ``mu_q.shape`` (e.g. (..., L) or (L,)); None means 0.
        logvar_p: log variances of p, broadcastable to ``mu_q.shape``; None means 0 (unit
            variance). With both None, p is the standard normal prior N(0, I).

    Returns:
        (...) KL in nats, one value per leading index (``mu_q.shape[:-1]``), dtype of the inputs.

    Raises:
        ValueError: non-tensor or non-float input, ``mu_q`` and ``logvar_q`` of different shapes,
            a 0-d ``mu_q``, or ``mu_p``/``logvar_p`` not broadcastable to ``mu_q.shape``.
    """
    _check_float("mu_q", mu_q)
    _check_float("logvar_q", logvar_q)
    if mu_q.dim() == 0:
        raise ValueError("mu_q must have at least one dimension (the latent dim), got a 0-d tensor")
    if logvar_q.shape != mu_q.shape:
        raise ValueError(
            f"logvar_q must have the shape of mu_q {tuple(mu_q.shape)}, got {tuple(logvar_q.shape)}"
        )
    for name, t in (("mu_p", mu_p), ("logvar_p", logvar_p)):
        if t is None:
            continue
        _check_float(name, t)
        try:
            ok = torch.broadcast_shapes(t.shape, mu_q.shape) == mu_q.shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"{name} must be broadcastable to mu_q's shape {tuple(mu_q.shape)}, "
                f"got {tuple(t.shape)}"
            )

    if mu_p is None and logvar_p is None:  # closed form against N(0, I)
        return 0.5 * (torch.exp(logvar_q) + mu_q.square() - 1.0 - logvar_q).sum(-1)
    diff = mu_q if mu_p is None else mu_q - mu_p
    if logvar_p is None:
        terms = torch.exp(logvar_q) + diff.square() - 1.0 - logvar_q
    else:
        # exp(logvar_q - logvar_p) is the variance ratio, computed without over/underflowing
        # exp(logvar_q) and exp(logvar_p) separately.
        terms = (
            torch.exp(logvar_q - logvar_p)
            + diff.square() * torch.exp(-logvar_p)
            - 1.0
            + logvar_p
            - logvar_q
        )
    return 0.5 * terms.sum(-1)


def _as_posteriors(name: str, post: Posterior | Sequence[Posterior]) -> list[Posterior]:
    posts = [post] if isinstance(post, Posterior) else post
    if isinstance(posts, (str, bytes)) or not isinstance(posts, Sequence) or len(posts) == 0:
        raise ValueError(
            f"{name} must be a Posterior or a non-empty sequence of Posterior, "
            f"got {type(post).__name__}"
        )
    for i, p in enumerate(posts):
        if not isinstance(p, Posterior):
            raise ValueError(f"{name}[{i}] must be a Posterior, got {type(p).__name__}")
    return list(posts)


def consistency_loss(
    post_aug: Posterior | Sequence[Posterior], post_orig: Posterior | Sequence[Posterior]
) -> torch.Tensor:
    """The consistency regularizer R = KL(q(z|t(x)) || q(z|x)), per sample.

    This is Algorithm 1's R = 1/2 sum_k ((s~^2 + (m~ - m)^2) / s^2 - 1 + 2 log(s / s~)) with
    ``~`` the posterior of the transformed input. No stop-gradient: gradients reach ``mu`` and
    ``logvar`` of both posteriors.

    Args:
        post_aug: q(z|t(x)), a ``Posterior`` with mu, logvar (B, L). For hierarchical models a
            sequence of posteriors (one per latent group, each (B, L_g)) whose KLs are summed.
        post_orig: q(z|x), matching ``post_aug`` (same type, length and shapes).

    Returns:
        (B,) KL in nats per sample, summed over latent dims (and groups).

    Raises:
        ValueError: if an argument is not a Posterior (or sequence of them), or shapes differ.
    """
    augs = _as_posteriors("post_aug", post_aug)
    origs = _as_posteriors("post_orig", post_orig)
    if len(augs) != len(origs):
        raise ValueError(
            f"post_aug has {len(augs)} latent groups but post_orig has {len(origs)}; "
            "they must match"
        )
    total = None
    for i, (qa, qo) in enumerate(zip(augs, origs)):
        if qa.mu.dim() < 1 or qa.mu.shape != qo.mu.shape:
            raise ValueError(
                f"post_aug and post_orig must have the same mu shape (B, L) (group {i}), got "
                f"{tuple(qa.mu.shape)} and {tuple(qo.mu.shape)}"
            )
        kl = gaussian_kl(qa.mu, qa.logvar, qo.mu, qo.logvar)
        if total is not None and kl.shape != total.shape:
            raise ValueError(
                f"latent group {i} has batch shape {tuple(kl.shape)}, "
                f"expected {tuple(total.shape)} like group 0"
            )
        total = kl if total is None else total + kl
    return total


def _check_weight(name: str, value: float) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def _check_per_sample(name: str, t: object, batch: int | None) -> torch.Tensor:
    _check_float(name, t)
    if t.dim() != 1:
        raise ValueError(
            f"{name} must be a per-sample (B,) tensor (summed over points/pixels/latent dims, "
            f"not averaged over the batch), got shape {tuple(t.shape)}"
        )
    if batch is not None and t.shape[0] != batch:
        raise ValueError(f"{name} must have shape ({batch},), got {tuple(t.shape)}")
    return t


def vae_objective(
    recon_nll: torch.Tensor, kl: torch.Tensor, *, beta: float = 1.0
) -> dict[str, torch.Tensor]:
    """The (beta-)VAE loss -ELBO_beta = recon_nll + beta * KL(q(z|x) || p(z)), batch-averaged.

    Used by the modes without consistency regularization (``ae`` passes ``kl`` = 0 or beta = 0,
    ``base`` the KL to the prior). An IWAE-style bound can be passed as
    ``recon_nll`` (the per-sample negative bound) with ``kl`` zeros.

    Args:
        recon_nll: (B,) per-sample negative log-likelihood (or reconstruction loss) in nats.
        kl: (B,) per-sample KL(q(z|x) || p(z)) in nats, e.g. ``gaussian_kl(mu, logvar)``.
        beta: weight of the KL to the prior (>= 0).

    Returns:
        dict of 0-d tensors (batch means): ``loss``, ``recon``, ``kl``.

    Raises:
        ValueError: non-(B,) or mismatched inputs, or a negative/non-finite ``beta``.
    """
    beta = _check_weight("beta", beta)
    _check_per_sample("recon_nll", recon_nll, None)
    _check_per_sample("kl", kl, recon_nll.shape[0])
    recon, kl_mean = recon_nll.mean(), kl.mean()
    return {"loss": recon + beta * kl_mean, "recon": recon, "kl": kl_mean}


def cr_objective(
    recon_nll_x: torch.Tensor,
    kl_x: torch.Tensor,
    recon_nll_aug: torch.Tensor,
    kl_aug: torch.Tensor,
    post_x: Posterior | Sequence[Posterior],
    post_aug: Posterior | Sequence[Posterior],
    *,
    beta: float = 1.0,
    lam: float = 0.1,
) -> dict[str, torch.Tensor]:
    """The CR-VAE loss (Eq. 3, negated): -ELBO_beta(x) - ELBO_beta(t(x)) + lam * R.

    The model-specific parts (reconstruction likelihood: Chamfer for point clouds, Bernoulli or
    discretized logistic for images; the KL to the prior, analytic or estimated) are computed by
    the caller, per sample; this function combines them with R = KL(q(z|t(x)) || q(z|x)), so
    point-cloud and image models share one objective.

    Args:
        recon_nll_x: (B,) per-sample reconstruction NLL of x, in nats.
        kl_x: (B,) per-sample KL(q(z|x) || p(z)).
        recon_nll_aug: (B,) per-sample reconstruction NLL of t(x).
        kl_aug: (B,) per-sample KL(q(z|t(x)) || p(z)).
        post_x: q(z|x), ``Posterior`` with mu, logvar (B, L) (or a sequence, one per group).
        post_aug: q(z|t(x)), matching ``post_x``.
        beta: weight of both KLs to the prior (>= 0); it does not multiply R.
        lam: consistency weight lambda (>= 0); the paper uses 0.1 (0.1 * beta for the beta-VAE).

    Returns:
        dict of 0-d tensors (batch means): ``loss``, ``recon``, ``kl``, ``recon_aug``,
        ``kl_aug``, ``consistency`` (the mean of R, before multiplying by ``lam``).

    Raises:
        ValueError: non-(B,) or mismatched per-sample terms, posteriors whose batch size is not
            B, or a negative/non-finite ``beta`` or ``lam``.
    """
    beta = _check_weight("beta", beta)
    lam = _check_weight("lam", lam)
    _check_per_sample("recon_nll_x", recon_nll_x, None)
    batch = recon_nll_x.shape[0]
    _check_per_sample("kl_x", kl_x, batch)
    _check_per_sample("recon_nll_aug", recon_nll_aug, batch)
    _check_per_sample("kl_aug", kl_aug, batch)
    reg = consistency_loss(post_aug, post_x)  # (B,)
    if reg.shape != (batch,):
        raise ValueError(
            f"post_x and post_aug must have batch size {batch} (like recon_nll_x) and mu of "
            f"shape (B, L), giving a consistency term of shape ({batch},); got {tuple(reg.shape)}"
        )
    recon, kl, recon_aug, kl_aug_mean = (
        t.mean() for t in (recon_nll_x, kl_x, recon_nll_aug, kl_aug)
    )
    consistency = reg.mean()
    loss = recon + beta * kl + recon_aug + beta * kl_aug_mean + lam * consistency
    return {
        "loss": loss,
        "recon": recon,
        "kl": kl,
        "recon_aug": recon_aug,
        "kl_aug": kl_aug_mean,
        "consistency": consistency,
    }
