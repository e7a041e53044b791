"""Training objectives of the image VAEs: VAE, IWAE and beta-VAE, each base / +Aug / CR / triplet.

Per-sample terms are computed here; combining them is left to :mod:`crfold.consistency`
(``vae_objective`` for the base mode, ``cr_objective`` for the others), the one implementation of
Eq. 3 shared with the point-cloud models.

* VAE / beta-VAE: recon = -log p(x|z) with one z ~ q(z|x); KL to the prior analytic (default) or
  the single-sample estimate log q(z|x) - log p(z) (``kl_estimator="mc"``); beta multiplies only
  the KL to the prior.
* IWAE: with k samples, loss = -(logsumexp_k log w_k - log k), passed to the combiners as the
  per-sample ``recon_nll`` with a zero KL (the bound contains the prior). With k = 1 and the same
  noise it equals the VAE loss with the "mc" KL estimator.
* Modes: "base" L(x); "aug" L(x) + L(t(x)) (lambda = 0, the paper's +Aug ablation); "cr"
  L(x) + L(t(x)) + lambda KL(q(z|t(x)) || q(z|x)); "triplet" the +Aug loss plus
  ``triplet_weight`` times a triplet margin loss on the posterior means (anchor mu(x), positive
  mu(t(x)), negative mu of another image of the batch) - Table 6's contrastive baseline.

x and t(x) are encoded and decoded in one batch of 2B (so BatchNorm sees both views).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from crfold.consistency import cr_objective, gaussian_kl, vae_objective
from crfold.models.common import Posterior, standard_normal_log_prob
from crfold_images.models.vae import ImageVAE, draw_latents

__all__ = ["LossConfig", "image_vae_loss", "iwae_terms", "vae_terms", "triplet_term"]

MODES = ("base", "aug", "cr", "triplet")
OBJECTIVES = ("vae", "iwae")


@dataclass(frozen=True)
class LossConfig:
    """What to optimize.

    Attributes:
        objective: "vae" (beta-VAE when beta != 1) or "iwae".
        mode: "base", "aug", "cr" or "triplet".
        beta: weight of the KL to the prior (VAE only; must be 1 for the IWAE).
        lam: consistency weight lambda of mode "cr" (the paper: 0.1, and 0.1 * beta for beta-VAE).
        iwae_k: importance samples k of the IWAE.
        kl_estimator: "analytic" or "mc" (single-sample) KL to the prior for the VAE.
        triplet_margin: margin of the triplet loss (mode "triplet").
        triplet_weight: weight of the triplet loss (mode "triplet").
    """

    objective: str = "vae"
    mode: str = "base"
    beta: float = 1.0
    lam: float = 0.1
    iwae_k: int = 5
    kl_estimator: str = "analytic"
    triplet_margin: float = 1.0
    triplet_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.objective == "iwae" and self.beta != 1.0:
            raise ValueError(f"beta must be 1 for the IWAE objective, got {self.beta}")
        if self.iwae_k < 1:
            raise ValueError(f"iwae_k must be >= 1, got {self.iwae_k}")
        if self.kl_estimator not in ("analytic", "mc"):
            raise ValueError(f"kl_estimator must be 'analytic' or 'mc', got {self.kl_estimator!r}")
        for name in ("beta", "lam", "triplet_margin", "triplet_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")


def vae_terms(
    model: ImageVAE,
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    kl_estimator: str = "analytic",
) -> tuple[torch.Tensor, torch.Tensor, Posterior]:
    """Per-sample ELBO terms with one z ~ q(z|x).

    Args:
        model: the VAE.
        x: (B, C, S, S) prepared images (binarized for Bernoulli).
        generator: noise of the reparameterization.
        kl_estimator: "analytic" KL(q || N(0, I)) or "mc" log q(z|x) - log p(z) at the sample.

    Returns:
        ``(recon_nll (B,), kl (B,), posterior)``, nats.
    """
    out = model(x, generator)
    recon = model.recon_nll(out.recon, x)  # (B,)
    post = out.posterior
    if kl_estimator == "analytic":
        kl = gaussian_kl(post.mu, post.logvar)  # (B,)
    else:
        kl = post.log_prob(out.z) - standard_normal_log_prob(out.z)  # (B,)
    return recon, kl, post


def iwae_terms(
    model: ImageVAE, x: torch.Tensor, k: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, Posterior]:
    """Per-sample negative IWAE bound -(logsumexp_k log w_k - log k) with k samples.

    Returns:
        ``(neg_bound (B,), posterior)``, nats.
    """
    post = model.encode(x)
    z = draw_latents(post, k, generator)  # (k, B, L)
    log_w = model.log_weights_from(x, post, z)  # (k, B)
    neg_bound = -(torch.logsumexp(log_w, dim=0) - math.log(k))  # (B,)
    return neg_bound, post


def triplet_term(
    mu_x: torch.Tensor,
    mu_aug: torch.Tensor,
    margin: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Triplet margin loss on posterior means, per sample.

    The negative of example i is the mean of example perm[i] for a random cyclic shift of a
    random permutation (never i itself when B >= 2).

    Args:
        mu_x: (B, L) anchors mu(x).
        mu_aug: (B, L) positives mu(t(x)).
        margin: the margin of ``max(0, ||a - p|| - ||a - n|| + margin)``.
        generator: draws the negatives (CPU or mu's device).

    Returns:
        (B,) losses.

    Raises:
        ValueError: for B < 2 (no negative exists).
    """
    b = mu_x.shape[0]
    if b < 2:
        raise ValueError(f"the triplet loss needs a batch of at least 2 images, got {b}")
    dev = generator.device if generator is not None else mu_x.device
    perm = torch.randperm(b, generator=generator, device=dev).to(mu_x.device)
    neg_idx = torch.empty_like(perm)
    neg_idx[perm] = perm.roll(1)  # a derangement: every i paired with another index
    return F.triplet_margin_loss(mu_x, mu_aug, mu_x[neg_idx], margin=margin, reduction="none")


def image_vae_loss(
    model: ImageVAE,
    x: torch.Tensor,
    x_aug: torch.Tensor | None,
    cfg: LossConfig,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """The training loss of one batch as a dict of named 0-d terms (``loss`` is minimized).

    Args:
        model: the VAE.
        x: (B, C, S, S) prepared images.
        x_aug: (B, C, S, S) prepared augmented images t(x); required unless mode is "base".
        cfg: objective, mode and weights.
        generator: noise of the latent samples (and the triplet negatives).

    Returns:
        The dict of :func:`crfold.consistency.vae_objective` (base) or ``cr_objective``
        (``loss``, ``recon``, ``kl``, ``recon_aug``, ``kl_aug``, ``consistency``), plus
        ``triplet`` in mode "triplet". For the IWAE, ``recon`` holds the negative bound.
    """
    if cfg.mode != "base" and (x_aug is None or x_aug.shape != x.shape):
        got = None if x_aug is None else tuple(x_aug.shape)
        raise ValueError(f"x_aug must be a tensor of x's shape {tuple(x.shape)}, got {got}")
    both = x if cfg.mode == "base" else torch.cat([x, x_aug])  # (B or 2B, C, S, S)
    if cfg.objective == "iwae":
        recon, post = iwae_terms(model, both, cfg.iwae_k, generator)
        kl = torch.zeros_like(recon)
    else:
        recon, kl, post = vae_terms(model, both, generator, cfg.kl_estimator)
    if cfg.mode == "base":
        return vae_objective(recon, kl, beta=cfg.beta)
    b = x.shape[0]
    post_x = Posterior(post.mu[:b], post.logvar[:b])
    post_aug = Posterior(post.mu[b:], post.logvar[b:])
    lam = cfg.lam if cfg.mode == "cr" else 0.0
    terms = cr_objective(
        recon[:b], kl[:b], recon[b:], kl[b:], post_x, post_aug, beta=cfg.beta, lam=lam
    )
    if cfg.mode == "triplet":
        trip = triplet_term(post_x.mu, post_aug.mu, cfg.triplet_margin, generator).mean()
        terms["triplet"] = trip
        terms["loss"] = terms["loss"] + cfg.triplet_weight * trip
    return terms
