"""The image-VAE task (VAE, IWAE, beta-VAE) on the run engine (:mod:`crfold.train`).

The engine owns the loop, the optimizer step (backward, gradient scaler, clipping), checkpoints,
resume, the run log and signals; this task says what one step computes. Per step, on a uint8
batch (B, C, H, W):

* images -> [0, 1]; in modes aug / cr / triplet t(x) is drawn on the [0, 1] images (per-image
  affine, :func:`build_transform`);
* for the Bernoulli likelihood x and t(x) are then binarized independently (dynamic
  binarization);
* the loss is :func:`crfold_images.models.objectives.image_vae_loss`, under autocast to the
  engine's ``amp`` dtype (the model returns its posterior and likelihood parameters in float32,
  so the likelihood, the KL terms and the loss are float32).

Every draw of step s comes from the engine's generator of (seed, rank, s); the epoch order is a
permutation drawn from (seed, epoch): a resumed run, also inside an epoch, draws exactly what an
uninterrupted one would. Batches hold ``batch_size`` images; a last partial batch is kept if it
holds >= 2 images (BatchNorm and the triplet negatives need two).

Validation (epoch ends): the float32 -ELBO (one z per image, analytic KL, eval mode, fixed draws)
on the validation split when the dataset has one. Evaluation (after training, ``eval.json``):
:func:`crfold_images.metrics.evaluate_model` (MI, rate, AU, IW-NLL and -ELBO in nats and
bits/dim, probe, latent consistency, and the ``flags`` / ``caveats`` saying what they can and
cannot show, printed unless quiet), plus ``samples.png`` and ``recon.png`` in the run directory.

With ``lam_per_dim`` the consistency weight of the loss is lambda * D, D = C * H * W
(:meth:`ImageConfig.effective_lam`); ``eval.json`` records it as ``lam_effective``.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import torch

from crfold.amp import autocast
from crfold.config import resolve_data_path
from crfold.train.engine import SUMMARY_FILE, Task
from crfold.train.runtime import DistInfo, derive_seed
from crfold_images.config import ImageConfig
from crfold_images.data import ImageSplits, load_dataset
from crfold_images.metrics import evaluate_model, iter_prepared, negative_elbo, prepare_batch
from crfold_images.models import ImageVAE, LossConfig, binarize, image_vae_loss
from crfold_images.report import format_caveats, save_image_grid
from crfold_images.transforms import RandomAffine2d, paper_augmentation

__all__ = [
    "ImageTask",
    "batch_starts",
    "build_model",
    "build_transform",
    "data_dims",
    "likelihood_of",
    "load_splits",
    "loss_config",
]

_VAL_SEED, _PICTURE_SEED, _ORDER_SEED = 2, 3, 1  # mixed with cfg.seed by derive_seed


def load_splits(cfg: ImageConfig) -> ImageSplits:
    """The dataset of ``cfg`` (its splits are independent of ``cfg.seed``).

    A relative ``data_root`` that does not exist here is looked up under ``$CRFOLD_DATA``.

    Raises:
        FileNotFoundError: ``data_root`` is None (for a dataset with files) or names no file.
    """
    root = None  # digits is embedded (data_root is not read); fashion_mnist has a default folder
    if cfg.dataset != "digits" and cfg.data_root is not None:
        root = resolve_data_path(cfg.data_root, "data_root")
    elif cfg.dataset not in ("digits", "fashion_mnist"):
        raise FileNotFoundError(
            f"data_root: dataset {cfg.dataset!r} needs its files; pass data_root=PATH, or set "
            "CRFOLD_DATA to the folder that holds them and data_root to the name inside it"
        )
    return load_dataset(
        cfg.dataset, root, image_size=cfg.image_size, val_size=cfg.val_size,
        max_train=cfg.max_train,
    )  # fmt: skip


def likelihood_of(cfg: ImageConfig, splits: ImageSplits) -> str:
    """The pixel likelihood: ``cfg.likelihood``, or the dataset's for ``auto``."""
    return splits.likelihood if cfg.likelihood == "auto" else cfg.likelihood


def build_model(cfg: ImageConfig, splits: ImageSplits) -> ImageVAE:
    """The ImageVAE for ``cfg`` on ``splits`` (channels and size from the data)."""
    return ImageVAE(
        in_channels=splits.channels, image_size=splits.image_size, latent_dim=cfg.latent_dim,
        arch=cfg.arch, width=cfg.width, likelihood=likelihood_of(cfg, splits),
        gaussian_sigma=cfg.gaussian_sigma,
    )  # fmt: skip


def build_transform(cfg: ImageConfig) -> RandomAffine2d:
    """The augmentation t of ``cfg`` (families, ranges, padding)."""
    return paper_augmentation(
        cfg.augment, degrees=cfg.rotate_deg, translate=cfg.translate_px,
        scale=(cfg.scale_min, cfg.scale_max), padding_mode=cfg.padding_mode,
    )  # fmt: skip


def data_dims(splits: ImageSplits) -> int:
    """D = C * H * W, the pixel values of one image of ``splits``."""
    return splits.channels * splits.image_size * splits.image_size


def loss_config(cfg: ImageConfig, dims: int | None = None) -> LossConfig:
    """The objective of ``cfg``: lambda resolved (0.1 * beta when ``lam`` is None) and, with
    ``lam_per_dim``, multiplied by ``dims`` = C * H * W (:meth:`ImageConfig.effective_lam`).

    Raises:
        ValueError: ``lam_per_dim`` without ``dims``.
    """
    if cfg.lam_per_dim and dims is None:
        raise ValueError("lam_per_dim: the data's dimensions (dims = C * H * W) are needed")
    lam = cfg.effective_lam(dims) if dims is not None else cfg.resolved_lam()
    return LossConfig(
        objective=cfg.objective, mode=cfg.mode, beta=cfg.beta, lam=lam,
        iwae_k=cfg.iwae_k, kl_estimator=cfg.kl_estimator, triplet_margin=cfg.triplet_margin,
        triplet_weight=cfg.triplet_weight,
    )  # fmt: skip


def batch_starts(n: int, batch_size: int) -> list[int]:
    """First indices of an epoch's batches; a last partial batch is kept if it holds >= 2."""
    return [s for s in range(0, n, batch_size) if min(batch_size, n - s) >= 2]


def _thread_limit(threads: int | None):
    """BLAS / OpenMP pools (the probe's) limited to ``threads``; a no-op for None."""
    if threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency

    return threadpool_limits(limits=threads)


class ImageTask(Task):
    """VAE / IWAE / beta-VAE (``cfg.objective``, ``cfg.beta``) in mode base | aug | cr | triplet."""

    supports_ddp = False  # the loss calls the model's methods, not its forward (DDP needs it)
    progress = {"loss": "loss", "recon": "rec", "kl": "kl", "consistency": "cons"}

    def __init__(self, cfg: ImageConfig, device: torch.device, info: DistInfo):
        super().__init__(cfg, device, info)
        self.splits = load_splits(cfg)
        if len(self.splits.train) < 2:
            raise ValueError(
                f"max_train: training needs at least 2 images, {cfg.dataset!r} gives "
                f"{len(self.splits.train)}"
            )
        self.likelihood = likelihood_of(cfg, self.splits)
        self.transform = build_transform(cfg)
        self.loss_cfg = loss_config(cfg, data_dims(self.splits))
        self.starts = batch_starts(len(self.splits.train), cfg.batch_size)

    # ------------------------------------------------------------------ building
    def build_model(self) -> ImageVAE:
        return build_model(self.cfg, self.splits)

    # ------------------------------------------------------------------ data
    def batches_per_epoch(self) -> int:
        return len(self.starts)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The permutation of the training images in ``epoch`` (from seed and epoch only)."""
        g = torch.Generator().manual_seed(derive_seed(self.cfg.seed, epoch, _ORDER_SEED))
        return torch.randperm(len(self.splits.train), generator=g)

    def train_batches(self, epoch: int, skip: int):
        perm, bs = self.epoch_order(epoch), self.cfg.batch_size
        for start in self.starts[skip:]:
            images, _ = self.splits.train.get_batch(perm[start : start + bs])
            yield images.to(self.device, non_blocking=True)  # (B, C, H, W) uint8

    # ------------------------------------------------------------------ one step
    def loss(self, model, forward, batch, step, total_steps, generator, amp):
        x01 = batch.float() / 255.0  # (B, C, H, W) in [0, 1]
        x_aug = None if self.loss_cfg.mode == "base" else self.transform(x01, generator=generator)
        if self.likelihood == "bernoulli":
            x = binarize(x01, generator)
            x_aug = None if x_aug is None else binarize(x_aug, generator)
        else:
            x = x01
        with autocast(self.device, amp):  # the model's outputs come back float32
            return image_vae_loss(model, x, x_aug, self.loss_cfg, generator)

    # ------------------------------------------------------------------ evaluation
    def validate(self, model, amp):
        """-ELBO on the validation split in float32 (fixed draws); {} without one."""
        if self.splits.val is None:
            return {}
        was_training = model.training
        model.eval()
        g = torch.Generator(self.device).manual_seed(derive_seed(self.cfg.seed, _VAL_SEED))
        batches = iter_prepared(
            self.splits.val, self.likelihood, self.device, self.cfg.eval_batch_size, split_id=2
        )
        neg_elbo = negative_elbo(model, batches, g)
        model.train(was_training)
        return {"val_loss": neg_elbo, "val_neg_elbo": neg_elbo}

    def evaluate(self, model, run_dir: Path) -> dict[str, Any]:
        """The paper's metrics on the test split, plus ``samples.png`` and ``recon.png``."""
        cfg, run_dir = self.cfg, Path(run_dir)
        t0 = time.perf_counter()
        with _thread_limit(cfg.num_threads):
            result = evaluate_model(
                model, self.splits, cfg, self.device, self.likelihood,
                transform=None if self.transform.is_identity else self.transform,
            )  # fmt: skip
        self.save_pictures(model, run_dir)
        result.update(
            n_train=len(self.splits.train), likelihood=self.likelihood,
            lam_effective=self.loss_cfg.lam if cfg.mode == "cr" else 0.0,
            eval_seconds=time.perf_counter() - t0,
        )  # fmt: skip
        text = format_caveats(result)
        if text and not self.quiet:
            print(text, flush=True)
        summary = run_dir / SUMMARY_FILE  # written by the engine just before the evaluation
        if summary.is_file():
            done = json.loads(summary.read_text())
            result.update(
                epochs=done.get("epoch"), steps=done.get("step"),
                train_seconds=done.get("total_seconds"),
            )  # fmt: skip
        return result

    @torch.no_grad()
    def save_pictures(self, model: ImageVAE, run_dir: Path) -> None:
        """``samples.png`` (prior samples) and ``recon.png`` (test images and reconstructions)."""
        k = self.cfg.samples_grid
        g = torch.Generator(self.device).manual_seed(derive_seed(self.cfg.seed, _PICTURE_SEED))
        model.eval()
        save_image_grid(model.sample(k * k, g).cpu(), run_dir / "samples.png", k)
        test = self.splits.test
        images, _ = test.get_batch(torch.arange(min(k * k // 2, len(test))))
        x = prepare_batch(images.to(self.device), self.likelihood, g)
        recon = model.reconstruct(x)  # (b, C, H, W)
        pairs = torch.stack([x, recon], dim=1).flatten(0, 1)  # originals and reconstructions
        save_image_grid(pairs.cpu(), run_dir / "recon.png", k)
