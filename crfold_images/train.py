"""One image-VAE training run: a small loop on crfold's training utilities, then the evaluation.

Reused from crfold: :func:`crfold.trainer_utils.resolve_device`, ``derive_seed`` /
``step_generator`` (every random draw of step s comes from a generator derived from (seed, s), so
a resumed run draws exactly what an uninterrupted one would), ``RunLog`` (metrics.jsonl +
TensorBoard), ``StopSignal`` (SIGINT/SIGTERM finish the step, save, return) and
:mod:`crfold.checkpoint` (atomic ``last.pt`` loaded with ``weights_only=True``, atomic JSON).

A run directory holds ``config.json``, ``last.pt`` (written after every epoch and on a signal),
``metrics.jsonl``, ``tensorboard/``, and once finished ``result.json`` (the evaluation), plus
``samples.png`` and ``recon.png``. :func:`train_run` on a finished directory returns its
result without training; on an unfinished one (or with more ``epochs``) it resumes from
``last.pt``, drawing exactly what an uninterrupted run would.

Per step: images (uint8) -> [0, 1]; in modes aug/cr/triplet t(x) is drawn on the [0, 1] images
(per-image affine); for the Bernoulli likelihood x and t(x) are then binarized independently
(dynamic binarization); the loss is :func:`crfold_images.models.objectives.image_vae_loss`.

Mixed precision (``amp``, :mod:`crfold.amp`): the loss of a training step runs under autocast to
``amp_dtype(cfg.amp, device)`` (bfloat16, float16 with a gradient scaler on CUDA, or none); the
model returns its posterior parameters and likelihood parameters in float32, so the likelihood,
the KL terms and the loss are float32. Validation and the final evaluation run in float32.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from crfold.amp import amp_dtype, autocast
from crfold.checkpoint import atomic_write_json, load_checkpoint, save_checkpoint
from crfold.trainer_utils import RunLog, StopSignal, derive_seed, resolve_device, step_generator
from crfold_images.config import ImageConfig
from crfold_images.data import ImageSplits, load_dataset
from crfold_images.metrics import evaluate_model, iter_prepared, negative_elbo, prepare_batch
from crfold_images.models import ImageVAE, LossConfig, binarize, image_vae_loss
from crfold_images.report import save_image_grid
from crfold_images.transforms import RandomAffine2d, paper_augmentation

__all__ = ["build_model", "build_transform", "load_splits", "train_run"]

CHECKPOINT_FORMAT = "crfold_images-1"
RESULT_FILE = "result.json"
# Keys that may differ when resuming: evaluation and runtime keys (``amp`` too, like ``device``:
# the precision of the arithmetic, not the model), and ``epochs`` (a finished run can be extended;
# its result is recomputed). Every other key must match the saved run.
_EVAL_KEYS = {"eval_samples", "eval_chunk", "eval_max_images", "eval_batch_size",
              "mi_batch_size", "probe_max_train", "samples_grid", "threads", "device",
              "amp"}  # fmt: skip
_RESUMABLE_KEYS = _EVAL_KEYS | {"epochs"}


def load_splits(cfg: ImageConfig) -> ImageSplits:
    """The dataset of ``cfg`` (its splits are independent of ``cfg.seed``)."""
    return load_dataset(
        cfg.dataset, cfg.data_root, image_size=cfg.image_size, val_size=cfg.val_size,
        max_train=cfg.max_train,
    )  # fmt: skip


def likelihood_of(cfg: ImageConfig, splits: ImageSplits) -> str:
    return splits.likelihood if cfg.likelihood == "auto" else cfg.likelihood


def build_model(cfg: ImageConfig, splits: ImageSplits) -> ImageVAE:
    """The ImageVAE for ``cfg`` on ``splits`` (channels and size from the data)."""
    return ImageVAE(
        in_channels=splits.channels, image_size=splits.image_size, latent_dim=cfg.latent_dim,
        arch=cfg.arch, width=cfg.width, likelihood=likelihood_of(cfg, splits),
        gaussian_sigma=cfg.gaussian_sigma or None,
    )  # fmt: skip


def build_transform(cfg: ImageConfig) -> RandomAffine2d:
    """The augmentation t of ``cfg`` (families, ranges, padding)."""
    return paper_augmentation(
        cfg.augment, degrees=cfg.rotate_deg, translate=cfg.translate_px,
        scale=(cfg.scale_min, cfg.scale_max), padding_mode=cfg.padding_mode,
    )  # fmt: skip


def loss_config(cfg: ImageConfig) -> LossConfig:
    return LossConfig(
        objective=cfg.objective, mode=cfg.mode, beta=cfg.beta, lam=cfg.resolved_lam(),
        iwae_k=cfg.iwae_k, kl_estimator=cfg.kl_estimator, triplet_margin=cfg.triplet_margin,
        triplet_weight=cfg.triplet_weight,
    )  # fmt: skip


def _training_keys(d: dict[str, Any]) -> dict[str, Any]:
    """The keys that define a trained model (every key but the evaluation / runtime ones)."""
    return {k: v for k, v in d.items() if k not in _EVAL_KEYS}


def _resume_keys(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in _RESUMABLE_KEYS}


class _Run:
    """State of one run: model, optimizer, counters; checkpoint in and out."""

    def __init__(self, cfg: ImageConfig, run_dir: Path, quiet: bool) -> None:
        self.cfg, self.run_dir, self.quiet = cfg, run_dir, quiet
        self.device = resolve_device(cfg.device)
        self.splits = load_splits(cfg)
        self.likelihood = likelihood_of(cfg, self.splits)
        self.transform = build_transform(cfg)
        self.loss_cfg = loss_config(cfg)
        torch.manual_seed(derive_seed(cfg.seed, 0xC0DE))
        self.model = build_model(cfg, self.splits).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.amp_dtype = amp_dtype(cfg.amp, self.device)  # None: float32
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.epoch = self.batch_in_epoch = self.step = 0
        self.train_seconds = 0.0
        last = run_dir / "last.pt"
        if last.is_file():
            state = load_checkpoint(last, map_location=self.device)
            if state.get("format") != CHECKPOINT_FORMAT:
                raise ValueError(f"{last}: expected format {CHECKPOINT_FORMAT}")
            if _resume_keys(state["config"]) != _resume_keys(cfg.to_dict()):
                raise ValueError(
                    f"{run_dir}: holds a run of a different config; use another run directory"
                )
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            self.epoch, self.batch_in_epoch = state["epoch"], state["batch_in_epoch"]
            self.step, self.train_seconds = state["step"], state["train_seconds"]
            if self.epoch > cfg.epochs:
                raise ValueError(
                    f"epochs: {run_dir} already trained {self.epoch} epochs, more than {cfg.epochs}"
                )
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "config.json", cfg.to_dict())
        self.log = RunLog(run_dir, True, self.step if last.is_file() else None)

    def save(self) -> None:
        save_checkpoint(
            self.run_dir / "last.pt",
            {
                "format": CHECKPOINT_FORMAT,
                "config": self.cfg.to_dict(),
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": None if self.scaler is None else self.scaler.state_dict(),
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "step": self.step,
                "train_seconds": self.train_seconds,
            },
        )

    def train_step(self, images: torch.Tensor) -> dict[str, float]:
        """One optimizer step on a uint8 batch (B, C, H, W); returns the loss terms."""
        g = step_generator(self.cfg.seed, 0, self.step, self.device)
        x01 = images.to(self.device).float() / 255.0  # (B, C, H, W) in [0, 1]
        x_aug = None if self.loss_cfg.mode == "base" else self.transform(x01, generator=g)
        if self.likelihood == "bernoulli":
            x = binarize(x01, g)
            x_aug = None if x_aug is None else binarize(x_aug, g)
        else:
            x = x01
        with autocast(self.device, self.amp_dtype):  # the model's outputs come back float32
            terms = image_vae_loss(self.model, x, x_aug, self.loss_cfg, g)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            terms["loss"].backward()
            self.optimizer.step()
        else:  # float16 on CUDA
            self.scaler.scale(terms["loss"]).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.step += 1
        return {k: float(v.detach()) for k, v in terms.items()}

    def train_epoch(self, stop: StopSignal) -> bool:
        """The rest of the current epoch; False if a signal interrupted it."""
        cfg, train = self.cfg, self.splits.train
        n = len(train)
        perm_gen = torch.Generator().manual_seed(derive_seed(cfg.seed, self.epoch, 1))
        perm = torch.randperm(n, generator=perm_gen)
        # Batches of batch_size; a last partial batch is kept if it holds >= 2 images.
        starts = [s for s in range(0, n, cfg.batch_size) if min(cfg.batch_size, n - s) >= 2]
        bar = tqdm(
            total=len(starts), initial=self.batch_in_epoch, leave=False, dynamic_ncols=True,
            desc=f"epoch {self.epoch + 1}/{cfg.epochs}", disable=self.quiet,
        )  # fmt: skip
        t0 = time.perf_counter()
        for start in starts[self.batch_in_epoch :]:
            images, _ = train.get_batch(perm[start : start + cfg.batch_size])
            terms = self.train_step(images)
            self.batch_in_epoch += 1
            if self.step % 10 == 0:
                self.log.write({"kind": "train", "epoch": self.epoch + 1, "step": self.step,
                                **terms}, "train")  # fmt: skip
            bar.update(1)
            bar.set_postfix(loss=f"{terms['loss']:.1f}", refresh=False)
            if stop.requested:
                break
        bar.close()
        self.train_seconds += time.perf_counter() - t0
        if stop.requested and self.batch_in_epoch < len(starts):
            return False
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        record = {"kind": "val", "epoch": self.epoch, "step": self.step}
        if self.splits.val is not None:
            self.model.eval()
            g = torch.Generator(self.device).manual_seed(derive_seed(cfg.seed, self.epoch, 2))
            batches = iter_prepared(
                self.splits.val, self.likelihood, self.device, cfg.eval_batch_size, split_id=2
            )
            record["neg_elbo"] = negative_elbo(self.model, batches, g)
            self.model.train()
        self.log.write(record, "val")
        if not self.quiet:
            extra = f" val -ELBO {record['neg_elbo']:.2f}" if "neg_elbo" in record else ""
            print(f"[{self.run_dir.name}] epoch {self.epoch}/{cfg.epochs}{extra}", flush=True)
        return not stop.requested or self.epoch >= cfg.epochs

    def save_pictures(self) -> None:
        k = self.cfg.samples_grid
        g = torch.Generator(self.device).manual_seed(derive_seed(self.cfg.seed, 3))
        self.model.eval()
        save_image_grid(self.model.sample(k * k, g).cpu(), self.run_dir / "samples.png", k)
        images, _ = self.splits.test.get_batch(torch.arange(min(k * k // 2, len(self.splits.test))))
        x = prepare_batch(images.to(self.device), self.likelihood, g)
        recon = self.model.reconstruct(x)  # (b, C, H, W)
        pairs = torch.stack([x, recon], dim=1).flatten(0, 1)  # originals and reconstructions
        save_image_grid(pairs.cpu(), self.run_dir / "recon.png", k)


def train_run(cfg: ImageConfig, run_dir: str | Path, quiet: bool = False) -> dict[str, Any] | None:
    """Train (or resume) one run and evaluate it.

    Args:
        cfg: the resolved config.
        run_dir: the run directory (created; resumed from ``last.pt`` when present).
        quiet: no progress bars or per-epoch lines.

    Returns:
        The result dict (also in ``<run_dir>/result.json``): the evaluation of
        :func:`crfold_images.metrics.evaluate_model` plus ``epochs``, ``steps``,
        ``train_seconds``, ``eval_seconds``; or None if a signal stopped training (``last.pt``
        holds the state to resume from).

    Raises:
        ValueError: the directory holds a run of a different training config.
    """
    run_dir = Path(run_dir)
    if (run_dir / RESULT_FILE).is_file():
        result = json.loads((run_dir / RESULT_FILE).read_text())
        if result.get("epochs") == cfg.epochs:
            return result
    if not cfg.threads:
        return _train_and_evaluate(cfg, run_dir, quiet)
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:  # torch and the probe's BLAS / OpenMP pools (oversubscribed pools crawl on busy CPUs)
        with threadpool_limits(limits=cfg.threads):
            return _train_and_evaluate(cfg, run_dir, quiet)
    finally:
        torch.set_num_threads(threads)  # the process-wide setting is restored


def _train_and_evaluate(cfg: ImageConfig, run_dir: Path, quiet: bool) -> dict[str, Any] | None:
    run = _Run(cfg, run_dir, quiet)
    run.model.train()
    with StopSignal(announce=not quiet) as stop:
        while run.epoch < cfg.epochs:
            finished = run.train_epoch(stop)
            run.save()
            if not finished or stop.requested:
                run.log.close()
                return None
    t0 = time.perf_counter()
    result = evaluate_model(
        run.model, run.splits, cfg, run.device, run.likelihood,
        transform=None if run.transform.is_identity else run.transform, progress=not quiet,
    )  # fmt: skip
    run.save_pictures()
    result.update(
        epochs=run.epoch, steps=run.step, train_seconds=run.train_seconds,
        eval_seconds=time.perf_counter() - t0, n_train=len(run.splits.train),
        likelihood=run.likelihood,
    )  # fmt: skip
    numbers = {k: v for k, v in result.items() if isinstance(v, (int, float))}
    run.log.write({"kind": "eval", "epoch": run.epoch, "step": run.step, **numbers}, "eval")
    run.log.close()
    atomic_write_json(run_dir / RESULT_FILE, result)
    return result
