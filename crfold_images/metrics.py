"""Evaluation of an image VAE: thin wrappers that feed images to :mod:`crfold.metrics`.

The metrics themselves (MI, active units, IW-NLL, latent consistency, the logistic probe) are
implemented once in :mod:`crfold.metrics`; this module only prepares the images the way the model
was trained on them and encodes them:

* Pixels are scaled to [0, 1]; for the Bernoulli likelihood every evaluation batch is binarized
  with a generator derived from ``(EVAL_SEED, split, batch start)``, so every model and every
  seed of an experiment is scored on the same binary images.
* Codes for MI / AU / the probe are posterior means and log variances of un-augmented images,
  with the model in eval mode (BatchNorm running statistics).
* The latent-consistency metric compares q(z|x) and q(z|t(x)) on the test set, with t drawn by
  a fixed generator.
* Every result carries ``flags`` and ``caveats`` (:mod:`crfold_images.caveats`): what its numbers
  can and cannot show (a probe at chance, an MI at or below 0 or at its log B ceiling, ...).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from crfold import metrics as M
from crfold.consistency import gaussian_kl
from crfold.models.common import Posterior
from crfold.train.runtime import derive_seed
from crfold_images.caveats import caveats, flags
from crfold_images.models.likelihoods import binarize
from crfold_images.models.vae import ImageVAE

__all__ = ["encode_set", "evaluate_model", "iter_prepared", "prepare_batch", "subset_indices"]

EVAL_SEED = 777
IW_IMAGES_PER_CALL = 16384  # bounds the images decoded at once by one log_weights call


def prepare_batch(
    images: torch.Tensor, likelihood: str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 in [0, 1], binarized for the Bernoulli likelihood."""
    x = images.float() / 255.0
    return binarize(x, generator) if likelihood == "bernoulli" else x


def subset_indices(n: int, limit: int | None, split_id: int = 0) -> torch.Tensor:
    """A fixed random subset of ``limit`` of range(n) (sorted), or all of it when limit is None.

    Files may be grouped by class (the shared MNIST CSV is), so "the first N" would not be a
    sample; the subset is drawn by a generator seeded from ``(EVAL_SEED, split_id)``.
    """
    if limit is None or limit >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(derive_seed(EVAL_SEED, split_id, 3))
    return torch.randperm(n, generator=g)[:limit].sort().values


def iter_prepared(
    dataset: Any,
    likelihood: str,
    device: torch.device,
    batch_size: int,
    *,
    limit: int | None = None,
    split_id: int = 0,
    transform: Any = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic evaluation batches ``(x (b, C, H, W) float32 on device, labels (b,))``.

    Args:
        dataset: a set with ``get_batch`` (crfold_images.data).
        likelihood: decides the binarization.
        device: where x goes.
        batch_size: images per batch.
        limit: a fixed random subset of ``limit`` images only (None = all), see
            :func:`subset_indices`.
        split_id: mixed into the seeds (0 test, 1 train, 2 val).
        transform: optional augmentation applied to the [0, 1] images before binarization,
            drawn with its own fixed generator.
    """
    indices = subset_indices(len(dataset), limit, split_id)
    for start in range(0, len(indices), batch_size):
        images, labels = dataset.get_batch(indices[start : start + batch_size])
        x = images.to(device).float() / 255.0
        if transform is not None:
            g_aug = torch.Generator(device).manual_seed(derive_seed(EVAL_SEED, split_id, start, 1))
            x = transform(x, generator=g_aug)
        if likelihood == "bernoulli":
            g = torch.Generator(device).manual_seed(derive_seed(EVAL_SEED, split_id, start))
            x = binarize(x, g)
        yield x, labels


@torch.no_grad()
def encode_set(model: ImageVAE, batches: Any) -> tuple[Posterior, torch.Tensor]:
    """Posterior parameters of every image: ``(Posterior(mu, logvar) (N, L) on CPU, labels)``."""
    mus, logvars, labels = [], [], []
    for x, y in batches:
        post = model.encode(x)
        mus.append(post.mu.float().cpu())
        logvars.append(post.logvar.float().cpu())
        labels.append(y)
    return Posterior(torch.cat(mus), torch.cat(logvars)), torch.cat(labels)


@torch.no_grad()
def negative_elbo(model: ImageVAE, batches: Any, generator: torch.Generator) -> float:
    """Mean -ELBO (one z sample, analytic KL) over the images of ``batches``, in nats."""
    total, count = 0.0, 0
    for x, _ in batches:
        post = model.encode(x)
        z = post.sample(generator)
        recon = model.recon_nll(model.decode(z), x)  # (b,)
        kl = gaussian_kl(post.mu, post.logvar)  # (b,) KL(q(z|x) || N(0, I))
        total += float((recon + kl).sum())
        count += x.shape[0]
    return total / count


def evaluate_model(
    model: ImageVAE,
    splits: Any,
    cfg: Any,
    device: torch.device,
    likelihood: str,
    transform: Any = None,
    progress: bool = False,
) -> dict[str, Any]:
    """All of the paper's metrics on the test split (the probe is fit on train).

    Args:
        model: the trained model (put in eval mode here).
        splits: ``crfold_images.data.ImageSplits``.
        cfg: the run's ``ImageConfig`` (eval_* keys, mi_batch_size, probe_max_train).
        device: the model's device.
        likelihood: the model's likelihood name (decides the binarization).
        transform: the augmentation t for the latent-consistency metric (None skips it).
        progress: tqdm over the IW-NLL batches.

    Returns:
        A flat dict: ``mi`` (nats) with ``mi_batch_size`` B and ``mi_ceiling`` = log B, ``rate``
        (E[KL(q(z|x) || p(z))], nats), ``au`` and ``au_threshold``, ``iw_nll`` (nats) with
        ``iw_samples`` and ``iw_images``, ``neg_elbo`` on the same images, both also in bits
        per dimension (``iw_nll_bpd``, ``neg_elbo_bpd``; ``data_dims`` = C * H * W),
        ``probe_accuracy`` and ``num_classes`` (absent without labels), ``consistency_kl``,
        ``consistency_mu_distance``, ``consistency_relative`` (with t), ``likelihood``, and
        ``flags`` / ``caveats`` (:mod:`crfold_images.caveats`).
    """
    model.eval()
    bs = cfg.eval_batch_size
    test = splits.test
    post, labels = encode_set(model, iter_prepared(test, likelihood, device, bs))
    out: dict[str, Any] = {"n_test": int(post.mu.shape[0])}
    g = torch.Generator().manual_seed(derive_seed(EVAL_SEED, 10))
    mi, b = M.mutual_information(
        post.mu, post.logvar, batch_size=cfg.mi_batch_size, generator=g,
        return_batch_size=True,
    )  # fmt: skip
    out.update(mi=mi, mi_batch_size=b, mi_ceiling=math.log(b), rate=M.rate(post.mu, post.logvar))
    au, _ = M.active_units(post.mu, threshold=0.01)
    out.update(au=au, au_threshold=0.01, latent_dim=int(post.mu.shape[1]))

    n_iw = len(test) if cfg.eval_max_images is None else min(cfg.eval_max_images, len(test))
    iw_bs = max(1, min(bs, IW_IMAGES_PER_CALL // cfg.eval_chunk))
    g_dev = torch.Generator(device).manual_seed(derive_seed(EVAL_SEED, 11))
    iw_batches = list(iter_prepared(test, likelihood, device, iw_bs, limit=n_iw))
    out["iw_nll"] = M.iw_nll(
        lambda x, n: model.log_weights(x[0], n, generator=g_dev),
        iw_batches,
        num_samples=cfg.eval_samples,
        chunk_size=min(cfg.eval_chunk, cfg.eval_samples),
        progress=progress,
    )
    out.update(iw_samples=cfg.eval_samples, iw_images=n_iw)
    out["neg_elbo"] = negative_elbo(model, iw_batches, g_dev)
    dims = model.in_channels * model.image_size * model.image_size
    nats_per_bit_dim = math.log(2.0) * dims
    out.update(
        data_dims=dims, iw_nll_bpd=out["iw_nll"] / nats_per_bit_dim,
        neg_elbo_bpd=out["neg_elbo"] / nats_per_bit_dim,
    )  # fmt: skip

    if splits.num_classes >= 2 and bool((labels >= 0).all()):
        train_post, train_labels = encode_set(
            model,
            iter_prepared(
                splits.train, likelihood, device, bs, limit=cfg.probe_max_train, split_id=1
            ),
        )
        probe = M.logistic_probe(train_post.mu, train_labels, post.mu, labels)
        out.update(
            probe_accuracy=probe["accuracy"], probe_converged=probe["converged"],
            num_classes=int(splits.num_classes),
        )  # fmt: skip
    if transform is not None:
        post_t, _ = encode_set(
            model, iter_prepared(test, likelihood, device, bs, transform=transform)
        )
        cons = M.latent_consistency(post, post_t)
        out.update(
            consistency_kl=cons["kl"],
            consistency_mu_distance=cons["mu_distance"],
            consistency_relative=cons["relative_mu_distance"],
        )
    out["likelihood"] = likelihood
    out.update(flags=flags(out), caveats=caveats(out))
    return out
