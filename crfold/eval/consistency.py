"""Latent consistency under held-out transforms: how far t(x) moves the code of x.

For each transform family (rotation, translation, scale, jitter; held-out draws from a generator
seeded with ``seed``, not the training one), the mean KL(q(z|t(x)) || q(z|x)) and the mean
||mu(t(x)) - mu(x)|| relative to the mean distance between codes of different shapes
(:func:`crfold.metrics.latent_consistency`).
"""

from __future__ import annotations

import zlib

import torch
from tqdm import tqdm

from ..metrics import latent_consistency
from ..transforms import (
    PointTransform,
    RandomJitter,
    RandomRotation,
    RandomScale,
    RandomTranslation,
)
from .encode import encode_posteriors, loader

__all__ = [
    "DEFAULT_SEED",
    "FAMILIES",
    "consistency_families",
    "consistency_metrics",
    "family_seed",
]

FAMILIES = ("rotation", "translation", "scale", "jitter")
DEFAULT_SEED = 1234  # of the held-out transforms and MI samples (not a training seed)


def consistency_families(up: str) -> dict[str, PointTransform]:
    """The held-out transform of each family, at the strengths of common point-cloud training.

    rotation: about the up axis, uniform in [-180, 180] degrees (FoldingNet's augmentation);
    translation: per-axis U(-0.2, 0.2); scale: per-axis U(2/3, 3/2) (PointNet++/DGCNN);
    jitter: N(0, 0.01^2) per point, clipped at 0.02. Fixed (not the run's ``aug_*``) so that every
    run is measured against the same transforms.

    Args:
        up: the data's up axis ("x", "y" or "z").
    """
    return {
        "rotation": RandomRotation(axis="up", degrees=180.0, up=up),
        "translation": RandomTranslation(shift=0.2),
        "scale": RandomScale(2.0 / 3.0, 1.5),
        "jitter": RandomJitter(sigma=0.01, clip=0.02),
    }


def family_seed(seed: int, name: str) -> int:
    """The seed of a family's transform draws: from the base seed and the family's name."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


@torch.no_grad()
def consistency_metrics(
    model: torch.nn.Module,
    dataset,
    transforms: dict[str, PointTransform],
    seed: int = DEFAULT_SEED,
    batch_size: int = 64,
    progress: bool = False,
    posteriors: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, dict[str, float | int]]:
    """Latent consistency of ``model`` under each transform, over every sample of ``dataset``.

    Args:
        model: anything with ``encode(x (B, N, 3)) -> Posterior`` and parameters (eval mode is
            the caller's business).
        dataset: yields ``(points (N, 3), label)``.
        transforms: family name -> transform; each draws from its own generator, seeded by
            :func:`family_seed` from ``seed`` and the name, so the draws of a family do not
            depend on which other families are measured.
        seed: base seed of the draws (and of the pair sampler of the reference distance).
        batch_size: clouds per forward pass.
        progress: show progress bars.
        posteriors: ``(mu, logvar)`` of q(z|x) over ``dataset`` if already computed.

    Returns:
        family -> :func:`crfold.metrics.latent_consistency` dict (``kl``, ``mu_distance``,
        ``code_distance``, ``relative_mu_distance``, ``n``, ``n_pairs``).
    """
    device = next(model.parameters()).device
    if posteriors is None:
        posteriors = encode_posteriors(model, dataset, batch_size)[:2]
    mu, logvar = posteriors
    out = {}
    for name, transform in transforms.items():
        gen = torch.Generator(device=device).manual_seed(family_seed(seed, name))
        mus, logvars = [], []
        for x, _ in tqdm(loader(dataset, batch_size), desc=name, disable=not progress):
            post = model.encode(transform(x.to(device).float(), generator=gen))  # x (B, N, 3)
            mus.append(post.mu.float().cpu())
            logvars.append(post.logvar.float().cpu())
        post_t = (torch.cat(mus), torch.cat(logvars))
        out[name] = latent_consistency((mu, logvar), post_t, seed=seed)
    return out
