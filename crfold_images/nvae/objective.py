"""The NVAE and CR-NVAE training objectives: KL warm-up, KL balancing, consistency over groups.

NVAE (per sample, in nats; batch-averaged by :func:`crfold.consistency.vae_objective`)::

    loss = -log p(x|z) + beta_t * sum_g gamma_g KL_g      (+ spectral/BN terms, added by the loop)

``beta_t`` rises linearly from 1e-4 to 1 over the first 30 % of the iterations
(:func:`kl_warmup_coefficient`). While ``beta_t < 1`` the groups are balanced:
``gamma_g`` is proportional to the batch-mean KL of group g divided by its number of latent
dims (+ a small floor), normalised so that ``sum_g gamma_g = G`` and detached, so groups that
carry little information are pushed less towards their prior; afterwards ``gamma_g = 1``
(:func:`kl_balancing_weights`; NVAE paper Appendix A, with the authors' public correction that
the coefficient is inversely, not directly, proportional to the group's size).

CR-NVAE adds the consistency term of the CR-VAE (Eq. 3) summed over every latent group::

    loss = L_nvae(x) + L_nvae(t(x)) + lam * sum_g KL(q(z_g | t(x), ...) || q(z_g | x, ...))

computed by :func:`crfold.consistency.cr_objective`. NVAE + Aug (mode ``aug``) is the same call
with ``lam = 0``: both ELBOs are trained, the consistency term is computed and returned but not
weighted. Which top-down path each posterior is
conditioned on is ``cr_path``:

* ``"own"`` (default, the paper's reading): each posterior on its own path, q(z_g | t(x),
  z_<g ~ q(.|t(x))) against q(z_g | x, z_<g ~ q(.|x)); x and t(x) share one batched forward.
* ``"shared"``: both on x's path, q(z_g | t(x), z_<g of x) against q(z_g | x, z_<g of x), so the
  term compares only what the encoder extracts from t(x) and x; costs one extra set of sampler
  convs. The ELBO of t(x) still uses t(x)'s own path.

x and t(x) go through BatchNorm in one concatenated batch (2B rows), and the balancing weights
are computed on that batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from crfold.consistency import cr_objective, vae_objective
from crfold.models.common import Posterior
from crfold_images.nvae.model import NVAE, NVAEOutput

__all__ = [
    "CR_PATHS",
    "kl_balancing_weights",
    "kl_warmup_coefficient",
    "nvae_objective",
    "weighted_kl",
]

CR_PATHS = ("own", "shared")
BALANCE_FLOOR = 0.01  # added to each group's mean KL per dim so an empty group keeps a weight


def kl_warmup_coefficient(
    step: int, total_steps: int, warmup_fraction: float = 0.3, min_coeff: float = 1e-4
) -> float:
    """beta_t: linear from ``min_coeff`` at step 0 to 1 at ``warmup_fraction * total_steps``.

    Args:
        step: the current iteration (0-based).
        total_steps: the run's total iterations (>= 1).
        warmup_fraction: fraction of the run spent warming up, in [0, 1]; 0 disables warm-up.
        min_coeff: the starting coefficient, in (0, 1].

    Returns:
        The KL coefficient in [min_coeff, 1].
    """
    if total_steps < 1 or step < 0:
        raise ValueError(f"total_steps must be >= 1 and step >= 0, got {total_steps}, {step}")
    if not 0.0 <= warmup_fraction <= 1.0 or not 0.0 < min_coeff <= 1.0:
        raise ValueError(
            f"warmup_fraction must be in [0, 1] and min_coeff in (0, 1], got "
            f"{warmup_fraction}, {min_coeff}"
        )
    warm = warmup_fraction * total_steps
    if warm <= 0 or step >= warm:
        return 1.0
    return min_coeff + (1.0 - min_coeff) * step / warm


def kl_balancing_weights(kl: torch.Tensor, group_dims: Sequence[int]) -> torch.Tensor:
    """gamma (G,): proportional to the batch-mean KL per latent dim of each group, sum G.

    Args:
        kl: (B, G) per-sample, per-group KL in nats.
        group_dims: G latent dims per group (Z * h_g * w_g).

    Returns:
        (G,) float32 detached weights, positive, summing to G.
    """
    if kl.dim() != 2 or kl.shape[1] != len(group_dims):
        raise ValueError(
            f"kl must be (B, G) with G = len(group_dims) = {len(group_dims)}, got {tuple(kl.shape)}"
        )
    dims = torch.as_tensor(group_dims, dtype=torch.float32, device=kl.device)  # (G,)
    per_dim = kl.detach().float().abs().mean(0) / dims + BALANCE_FLOOR  # (G,)
    return per_dim * (kl.shape[1] / per_dim.sum())


def weighted_kl(
    kl: torch.Tensor, group_dims: Sequence[int], kl_coeff: float, balance: bool = True
) -> torch.Tensor:
    """(B,) sum_g gamma_g KL_g: balanced while ``kl_coeff < 1`` (and ``balance``), else plain."""
    if balance and kl_coeff < 1.0:
        return (kl * kl_balancing_weights(kl, group_dims)).sum(1)
    return kl.sum(1)


def _split(posts: list[Posterior], b: int) -> tuple[list[Posterior], list[Posterior]]:
    first = [Posterior(p.mu[:b], p.logvar[:b]) for p in posts]
    second = [Posterior(p.mu[b:], p.logvar[b:]) for p in posts]
    return first, second


def nvae_objective(
    model: NVAE,
    x: torch.Tensor,
    *,
    kl_coeff: float,
    x_aug: torch.Tensor | None = None,
    lam: float = 0.1,
    cr_path: str = "own",
    balance: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[dict[str, torch.Tensor], NVAEOutput]:
    """The (CR-)NVAE loss of one batch; spectral and BN regularisers are added by the caller.

    Args:
        model: the :class:`NVAE`.
        x: (B, C, H, W) images in the model's data range.
        kl_coeff: beta_t from :func:`kl_warmup_coefficient`.
        x_aug: (B, C, H, W) t(x) for CR-NVAE; None trains plain NVAE.
        lam: consistency weight (>= 0), used with ``x_aug``.
        cr_path: "own" or "shared", see the module docstring.
        balance: KL balancing across groups during warm-up.
        generator: optional generator for the posterior draws.

    Returns:
        ``(terms, out)``: a dict of 0-d tensors - ``loss`` (to minimise), ``recon`` (mean
        -log p(x|z)), ``kl`` (mean weighted KL, before beta), ``kl_raw`` (mean sum_g KL_g), ``elbo``
        (mean ELBO of x), and with ``x_aug`` also ``recon_aug``, ``kl_aug``, ``consistency``
        (mean R before lam) - and the model output (for x and t(x) concatenated under CR).
    """
    if cr_path not in CR_PATHS:
        raise ValueError(f"cr_path must be one of {CR_PATHS}, got {cr_path!r}")
    if x_aug is not None and x_aug.shape != x.shape:
        raise ValueError(f"x_aug must have x's shape {tuple(x.shape)}, got {tuple(x_aug.shape)}")
    dims = [shape[0] * shape[1] * shape[2] for shape in model.group_shapes]
    b = x.shape[0]
    inp = x if x_aug is None else torch.cat([x, x_aug], dim=0)
    out = model(inp, generator=generator)
    wkl = weighted_kl(out.kl, dims, kl_coeff, balance)  # (B or 2B,)
    nll = -out.log_px  # (B or 2B,)
    if x_aug is None:
        terms = vae_objective(nll, wkl, beta=kl_coeff)
    else:
        post_x, post_aug = _split(out.posteriors, b)
        if cr_path == "shared":
            feats_aug = [f[b:] for f in out.enc_feats]
            states = [None if h is None else h[:b] for h in out.dec_states]
            raws = [None if r is None else r[:b] for r in out.prior_raw]
            post_aug = model.cross_posteriors(feats_aug, states, raws)
        terms = cr_objective(
            nll[:b], wkl[:b], nll[b:], wkl[b:], post_x, post_aug, beta=kl_coeff, lam=lam
        )
    terms["kl_raw"] = out.kl[:b].sum(1).mean()
    terms["elbo"] = out.elbo[:b].mean()
    return terms, out
