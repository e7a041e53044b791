"""Train and evaluate NVAE / CR-NVAE: ``python -m crfold_images.models.nvae_train``.

    python -m crfold_images.models.nvae_train --config configs/nvae_tiny_cpu.yaml mode=cr-nvae

One loop for both modes (``mode=nvae`` | ``mode=cr-nvae``): Adamax with a linear learning-rate
warm-up then a cosine decay, the KL warm-up and balancing of
:mod:`crfold_images.models.nvae_objective`, spectral + BN regularisation weighted by
``spectral_lambda`` (one power iteration per step), autocast of the training step to
``crfold.amp.amp_dtype(amp, device)`` (bf16 on CUDA or CPU, or fp16 with a grad scaler on CUDA)
with latent parameters, KLs and log-likelihoods in float32; the evaluation runs in float32.
Binarized data are
re-binarized every step (dynamic binarization); the test set is binarized once with
``data_seed``. t(x) is drawn from :func:`crfold_images.transforms.paper_augmentation` on the grey
or colour image before binarization / quantisation.

The run directory holds ``config.yaml``, ``metrics.jsonl`` (train records), ``ckpt_last.pt``
(model, optimizer, scaler, step, RNG states; written atomically, loaded with
``weights_only=True``) and ``results.json`` (IW-NLL, bits/dim, active units, probe). Running
again with the same ``run_dir`` resumes from ``ckpt_last.pt`` exactly where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

from crfold.amp import amp_dtype, autocast
from crfold.checkpoint import (
    atomic_write_json,
    atomic_write_text,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from crfold_images.models.nvae import NVAE
from crfold_images.models.nvae_cells import bn_regularization, spectral_regularization
from crfold_images.models.nvae_config import NVAETrainConfig, load_nvae_config
from crfold_images.models.nvae_data import ImageData, load_images
from crfold_images.models.nvae_eval import nvae_evaluate
from crfold_images.models.nvae_objective import kl_warmup_coefficient, nvae_objective
from crfold_images.transforms import paper_augmentation

__all__ = ["Trainer", "learning_rate", "main", "run"]

CKPT = "ckpt_last.pt"
MAX_BAD_STEPS = 50  # consecutive non-finite losses before giving up


def learning_rate(step: int, total: int, warmup: int, lr: float, lr_min: float) -> float:
    """Linear warm-up from lr/warmup to lr over ``warmup`` steps, then cosine down to lr_min."""
    if step < warmup:
        return lr * (step + 1) / warmup
    span = max(total - warmup, 1)
    return lr_min + 0.5 * (lr - lr_min) * (
        1.0 + math.cos(math.pi * min(step - warmup, span) / span)
    )


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """Owns the model, optimizer, data and state of one run.

    Args:
        cfg: the resolved config.
        run_dir: where config, metrics, checkpoint and results go.
        data: preloaded :class:`ImageData` (tests pass small tensors); None loads ``cfg.dataset``.
    """

    def __init__(self, cfg: NVAETrainConfig, run_dir: Path, data: ImageData | None = None):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.device = _device(cfg.device)
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)
        torch.manual_seed(cfg.seed)
        self.data = data if data is not None else load_images(cfg)
        self.model = NVAE(cfg.arch()).to(self.device)
        self.opt = torch.optim.Adamax(
            self.model.parameters(), lr=cfg.lr, eps=cfg.adamax_eps, weight_decay=cfg.weight_decay
        )
        self.amp_dtype = amp_dtype(cfg.amp, self.device)  # None: float32
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.aug = paper_augmentation(cfg.aug) if cfg.mode == "cr-nvae" else None
        n = self.data.train_x.shape[0]
        self.batch = min(cfg.batch_size, n)
        self.steps_per_epoch = n // self.batch
        self.total_steps = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        self.lr_warmup = int(cfg.lr_warmup_epochs * self.steps_per_epoch)
        self.step = 0

    # ------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "config": self.cfg.to_dict(),
            "rng": get_rng_state(),
            "generator": self.gen.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        set_rng_state(state["rng"])
        self.gen.set_state(state["generator"].cpu())  # generator states are CPU byte tensors

    def save(self) -> Path:
        return save_checkpoint(self.run_dir / CKPT, self.state_dict())

    # ------------------------------------------------------------------------------- data
    def _batch(self, step: int) -> torch.Tensor:
        """(B, C, H, W) float train images in [0, 1] for ``step``; one shuffle per epoch."""
        epoch, i = divmod(step, self.steps_per_epoch)
        g = torch.Generator().manual_seed(self.cfg.data_seed * 1_000_003 + epoch)
        perm = torch.randperm(self.data.train_x.shape[0], generator=g)
        idx = perm[i * self.batch : (i + 1) * self.batch]
        return self.data.train_x[idx].to(self.device).float() / 255.0

    def _observe(self, x: torch.Tensor) -> torch.Tensor:
        """Binarize (Bernoulli likelihood, fresh draw) or pass [0, 1] images through."""
        if self.cfg.likelihood == "bernoulli":
            return torch.bernoulli(x, generator=self.gen)
        return x

    # ------------------------------------------------------------------------------ train
    def train_step(self) -> dict[str, float]:
        """One optimizer step at ``self.step``; returns the logged scalars."""
        cfg, model = self.cfg, self.model
        model.train()
        lr = learning_rate(self.step, self.total_steps, self.lr_warmup, cfg.lr, cfg.lr_min)
        for group in self.opt.param_groups:
            group["lr"] = lr
        kl_coeff = kl_warmup_coefficient(
            self.step, self.total_steps, cfg.kl_warmup_fraction, cfg.kl_min_coeff
        )
        grey = self._batch(self.step)
        x = self._observe(grey)
        x_aug = self._observe(self.aug(grey, generator=self.gen)) if self.aug else None
        with autocast(self.device, self.amp_dtype):  # latents, KLs, log p(x|z) stay float32
            terms, _ = nvae_objective(
                model,
                x,
                kl_coeff=kl_coeff,
                x_aug=x_aug,
                lam=cfg.lam,
                cr_path=cfg.cr_path,
                balance=cfg.kl_balance,
                generator=self.gen,
            )
        reg = spectral_regularization(model, cfg.power_iterations) + bn_regularization(model)
        loss = terms["loss"] + cfg.spectral_lambda * reg
        self.opt.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(loss))
        if finite:
            self.scaler.scale(loss).backward()
            if cfg.grad_clip is not None:
                self.scaler.unscale_(self.opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            self.scaler.step(self.opt)
            self.scaler.update()
        self.step += 1
        record = {k: float(v.detach()) for k, v in terms.items()}
        record.update(
            reg=float(reg.detach()), lr=lr, kl_coeff=kl_coeff, finite=finite, step=self.step
        )
        return record

    def train(self, quiet: bool = False) -> None:
        """Run (or resume) to ``total_steps``, logging and checkpointing; ends with a checkpoint."""
        cfg = self.cfg
        metrics_path = self.run_dir / "metrics.jsonl"
        bad = 0
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=quiet,
            desc=f"{cfg.mode}",
            leave=False,
        )
        with open(metrics_path, "a") as log:
            while self.step < self.total_steps:
                t0 = time.perf_counter()
                rec = self.train_step()
                bad = 0 if rec["finite"] else bad + 1
                if bad >= MAX_BAD_STEPS:
                    self.save()
                    raise RuntimeError(
                        f"{bad} consecutive non-finite losses at step {self.step}: lower lr or "
                        "raise spectral_lambda (NVAE's usual remedies)"
                    )
                rec["seconds"] = time.perf_counter() - t0
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                    bar.set_postfix(loss=f"{rec['loss']:.1f}", elbo=f"{rec['elbo']:.1f}")
                if self.step % cfg.ckpt_every == 0:
                    self.save()
                bar.update(1)
        bar.close()
        self.save()

    # ------------------------------------------------------------------------------- eval
    def evaluate(self) -> dict[str, Any]:
        """IW-NLL, bits/dim, active units and probe on the test split; written to results.json."""
        cfg, data = self.cfg, self.data
        test = data.observed("test", cfg.likelihood, cfg.data_seed)
        bs = cfg.eval_batch_size

        def batches(images: torch.Tensor):
            return (images[i : i + bs].to(self.device) for i in range(0, images.shape[0], bs))

        probe = None
        if cfg.probe and bool((data.train_y >= 0).all()):  # CelebA has no class labels
            train = data.observed("train", cfg.likelihood, cfg.data_seed)
            probe = (lambda: batches(train), data.train_y, data.test_y)
        g = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        result = nvae_evaluate(
            self.model,
            lambda: batches(test),
            num_samples=cfg.iw_samples,
            chunk_size=cfg.iw_chunk,
            probe=probe,
            features=cfg.probe_features,
            probe_C=cfg.probe_C,
            generator=g,
        )
        result.update(step=self.step, mode=cfg.mode, dataset=cfg.dataset, n_test=test.shape[0])
        atomic_write_json(self.run_dir / "results.json", result)
        return result


def _trim_metrics(path: Path, step: int) -> None:
    """On resume, drop records written after the checkpoint's step (they will be redone)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def run(
    cfg: NVAETrainConfig,
    run_dir: str | Path | None = None,
    *,
    data: ImageData | None = None,
    resume: bool = True,
    evaluate: bool = True,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train (resuming from ``run_dir/ckpt_last.pt`` if present) and evaluate one run.

    Returns:
        The evaluation results (empty dict when ``evaluate`` is False).
    """
    run_dir = Path(run_dir or cfg.run_dir or f"runs/nvae-{cfg.dataset}-{cfg.mode}")
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, run_dir, data)
    ckpt = run_dir / CKPT
    if not resume:
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    elif ckpt.is_file():
        state = load_checkpoint(ckpt, map_location=trainer.device)
        saved = NVAETrainConfig.from_dict(state["config"])
        if saved.arch() != cfg.arch():
            raise ValueError(f"{ckpt}: the checkpoint's architecture differs from the config's")
        trainer.load_state_dict(state)
        _trim_metrics(run_dir / "metrics.jsonl", trainer.step)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    trainer.train(quiet=quiet)
    return trainer.evaluate() if evaluate else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m crfold_images.models.nvae_train",
        description="Train and evaluate NVAE / CR-NVAE. Overrides: key=value (config fields).",
    )
    parser.add_argument("--config", help="YAML file of config overrides (configs/nvae_*.yaml)")
    parser.add_argument("--run-dir", help="run directory (default: run_dir or runs/...)")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    parser.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    cfg = load_nvae_config(args.config, args.overrides)
    result = run(
        cfg,
        args.run_dir,
        resume=not args.no_resume,
        evaluate=not args.no_eval,
        quiet=args.quiet,
    )
    if result:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
