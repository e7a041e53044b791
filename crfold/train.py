"""One training loop for every mode of FoldingNet: ``ae``, ``vae``, ``vae+aug`` and ``cr``.

Per step, with x (B, N, 3) from the loader and t the pair transform (:func:`build_transform`):

* ``ae``: loss = recon(decode(mu(x)), x) - the original deterministic FoldingNet.
* ``vae``: the negative beta-ELBO of x.
* ``vae+aug``: the negative beta-ELBOs of x and t(x) - the paper's "FoldingNet + Aug" baseline,
  i.e. the CR objective with lambda = 0 (the consistency term is still logged, unweighted).
* ``cr``: -ELBO(x) - ELBO(t(x)) + lam * KL(q(z|t(x)) || q(z|x)) (Eq. 3).

x and t(x) go through the model as one batch of 2B clouds (one forward, as DDP requires). The
reconstruction term is the Gaussian Chamfer NLL of the model (nats, per sample); the FoldingNet
Chamfer metric (sqrt, max of the two directions) of the reconstruction of x is logged as
``chamfer``. Validation uses z = mu, no augmentation: loss = recon + beta * KL (recon for ae).

Reproducibility: the weights are initialized from ``seed``; the epoch order comes from
``DistributedSampler(seed=seed)`` at each epoch; every random draw of a step comes from a
generator seeded by (seed, rank, step). A checkpoint stores the model, the optimizer, the position
(epoch, batch inside the epoch, step) and the RNG states, so on CPU a resumed run is bitwise
identical to an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from . import trainer_utils as tu
from .amp import amp_dtype
from .checkpoint import (
    atomic_write_json,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from .config import TrainConfig
from .train_steps import compute_terms, validate

__all__ = ["CHECKPOINT_FORMAT", "Trainer", "default_run_dir", "format_summary", "train"]

CHECKPOINT_FORMAT = "crfold.train/1"
CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
_SHORT = {"loss": "loss", "recon": "rec", "kl": "kl", "consistency": "cons", "chamfer": "cd"}


def default_run_dir(cfg: TrainConfig) -> str:
    """``runs/<YYYYmmdd-HHMMSS>-<mode>`` (``+`` in the mode becomes ``-``)."""
    return f"runs/{time.strftime('%Y%m%d-%H%M%S')}-{cfg.mode.replace('+', '-')}"


class Trainer:
    """A training run: builds everything from the config, trains, checkpoints, resumes.

    Args:
        cfg: the resolved config (``cfg.run_dir`` None picks :func:`default_run_dir`).
        resume: continue from ``<run_dir>/last.pt`` (the config's keys may differ from the saved
            run's, e.g. more ``epochs``; the architecture must match).
        quiet: no progress bars or per-epoch lines (the final summary is still printed).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        resume: bool = False,
        quiet: bool = False,
        info: tu.DistInfo | None = None,
        device: torch.device | None = None,
    ):
        if info is None or device is None:
            info, device = tu.init_distributed(cfg.device)
        self.info, self.device = info, device
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)
        run_dir = tu.broadcast_str(cfg.run_dir or default_run_dir(cfg), self.info)
        self.cfg = cfg = cfg.replace(run_dir=run_dir)
        self.run_dir = Path(run_dir)
        self.quiet = quiet
        self.main = self.info.is_main
        last = self.run_dir / "last.pt"
        if resume and not last.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint to resume at {last}")
        if not resume and last.is_file():
            raise FileExistsError(
                f"run_dir: {self.run_dir} already holds a run (last.pt); pass --resume to "
                "continue it or choose another --run-dir"
            )
        self.train_set = tu.open_split(cfg, cfg.train_split)
        self.val_set = tu.open_split(cfg, cfg.val_split)
        self.transform = tu.build_transform(cfg, tu.up_axis(cfg, self.train_set))
        torch.manual_seed(cfg.seed)
        self.model = tu.build_model(cfg).to(self.device)
        self.forward = self.model
        if self.info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.amp_dtype = amp_dtype(cfg.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.epoch = self.batch_in_epoch = self.step = 0
        self.best_val = math.inf
        self.last_val: dict[str, float] = {}
        self.val_step = -1
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0
        self.last_train: dict[str, float] = {}
        self.saved_step = -1
        self.seconds_before = 0.0  # training time of earlier processes of this run (resume)
        self.t_start: float | None = None
        if resume:
            self._load(load_checkpoint(last, map_location=self.device))
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(self.run_dir / CONFIG_FILE)
        self.log = tu.RunLog(self.run_dir, self.main, self.step if resume else None)

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly (tensors and plain containers only)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "world_size": self.info.world_size,
            "best_val_loss": self.best_val,
            "last_val": dict(self.last_val),
            "val_step": self.val_step,
            "epoch_sums": dict(self.sums),
            "epoch_count": self.count,
            "rng": get_rng_state(),
            "train_seconds": self.total_seconds(),
        }

    def total_seconds(self) -> float:
        """Wall time of this run so far, over every process that trained it (resumes add up)."""
        now = 0.0 if self.t_start is None else time.perf_counter() - self.t_start
        return self.seconds_before + now

    def _load(self, state: dict[str, Any]) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(
                f"last.pt: expected format {CHECKPOINT_FORMAT}, got {state.get('format')}"
            )
        if state["batch_in_epoch"] and state["world_size"] != self.info.world_size:
            raise ValueError(
                f"--resume: last.pt stopped inside an epoch with {state['world_size']} processes; "
                f"resume it with the same number, not {self.info.world_size}"
            )
        if state["batch_in_epoch"]:  # the skipped samples must be the ones already trained on
            saved = state.get("config") or {}
            now = self.cfg.to_dict()
            for key in ("batch_size", "seed", "data", "data_seed", "num_points", "train_split"):
                if key in saved and saved[key] != now.get(key):
                    raise ValueError(
                        f"--resume: last.pt stopped inside an epoch with {key}={saved[key]!r}; "
                        f"resuming it with {key}={now.get(key)!r} would train on other samples"
                    )
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ValueError(
                f"--resume: last.pt does not fit the model of this config (mode, latent_dim, k, "
                f"grid_size and use_covariance must match the run's): {exc}"
            ) from exc
        for group in self.optimizer.param_groups:  # the config may change them on resume
            group["lr"], group["weight_decay"] = self.cfg.lr, self.cfg.weight_decay
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.batch_in_epoch, self.step = (
            state["epoch"], state["batch_in_epoch"], state["step"]
        )  # fmt: skip
        self.best_val, self.last_val = state["best_val_loss"], dict(state["last_val"])
        self.val_step = state["val_step"]
        self.sums = defaultdict(float, state["epoch_sums"])
        self.count = state["epoch_count"]
        set_rng_state(state["rng"])
        self.seconds_before = float(state.get("train_seconds", 0.0))

    def save(self, name: str) -> None:
        """Writes ``<run_dir>/<name>.pt`` atomically (rank 0 only)."""
        if self.main:
            save_checkpoint(self.run_dir / f"{name}.pt", self.state())
        if name == "last":
            self.saved_step = self.step

    # ------------------------------------------------------------------ steps
    def train_step(self, x: torch.Tensor) -> dict[str, float]:
        """One optimizer step on x (B, N, 3); returns the terms as floats."""
        gen = tu.step_generator(self.cfg.seed, self.info.rank, self.step, self.device)
        terms = compute_terms(
            self.model, x, self.cfg, self.transform, gen, self.forward, self.amp_dtype
        )
        loss = terms["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss {float(loss)} at step {self.step} (epoch {self.epoch + 1}); "
                f"{self.run_dir / 'last.pt'} holds the last good state"
            )
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.step += 1
        return {k: float(v.detach()) for k, v in terms.items()}

    def _stop_requested(self, stop: tu.StopSignal) -> bool:
        flag = [1.0 if stop.requested else 0.0]
        return tu.all_reduce_sum(flag, self.info, self.device)[0] > 0

    def run_validation(self) -> dict[str, float]:
        loader = tu.shard_loader(
            self.val_set, self.cfg.eval_batch_size or 2 * self.cfg.batch_size, self.info
        )
        self.last_val = validate(
            self.model, loader, self.cfg, self.info, self.device, self.amp_dtype
        )
        self.val_step = self.step
        return self.last_val

    def _end_epoch(self, seconds: float, samples: int) -> None:
        """Epoch record, validation, best.pt and last.pt after a complete epoch.

        ``seconds`` and ``samples`` (this process's) cover the part trained by this process (a
        resumed epoch counts from the resume) and give the throughput.
        """
        means = tu.all_reduce_sum([*self.sums.values(), self.count], self.info, self.device)
        n = max(means[-1], 1.0)
        train = {f"train_{k}": v / n for k, v in zip(self.sums, means[:-1])}
        self.epoch += 1
        self.batch_in_epoch, self.sums, self.count = 0, defaultdict(float), 0
        record = {"kind": "epoch", "epoch": self.epoch, "step": self.step, **train}
        throughput = samples * self.info.world_size / seconds if seconds > 0 else None
        record["samples_per_s"] = throughput
        improved = False
        if self.epoch % self.cfg.eval_every == 0 or self.epoch == self.cfg.epochs:
            val = self.run_validation()
            record.update(val)
            improved = val["val_loss"] < self.best_val
            if improved:
                self.best_val = val["val_loss"]
        record["best_val_loss"] = None if self.best_val == math.inf else self.best_val
        self.log.write(record, "epoch")
        self.last_train = train
        if improved:
            self.save("best")
        self.save("last")
        if self.main and not self.quiet:
            val_txt = (
                f" | val loss {record['val_loss']:.4g} chamfer {record['val_chamfer']:.4f}"
                f"{' (best)' if improved else ''}"
                if "val_loss" in record
                else ""
            )
            tqdm.write(
                f"epoch {self.epoch}/{self.cfg.epochs} step {self.step}: "
                f"train loss {train.get('train_loss', math.nan):.4g}{val_txt}"
            )

    # ------------------------------------------------------------------ the loop
    def _max_steps_reached(self) -> bool:
        return self.cfg.max_steps is not None and self.step >= self.cfg.max_steps

    def _train_epoch(self, stop: tu.StopSignal, n_batches: int) -> str | None:
        """Runs the rest of the current epoch; returns "interrupted", "max_steps" or None."""
        cfg = self.cfg
        loader = tu.train_loader(
            self.train_set, cfg, self.info, self.epoch, self.batch_in_epoch,
            pin_memory=self.device.type == "cuda",
        )  # fmt: skip
        bar = tqdm(
            total=n_batches, initial=self.batch_in_epoch, leave=False, dynamic_ncols=True,
            desc=f"epoch {self.epoch + 1}/{cfg.epochs}", disable=self.quiet or not self.main,
        )  # fmt: skip
        t_epoch, reason, samples = time.perf_counter(), None, 0
        for x, _ in loader:
            vals = self.train_step(x.to(self.device, non_blocking=True))  # x (B, N, 3)
            self.batch_in_epoch += 1
            for k, v in vals.items():
                self.sums[k] += v * x.shape[0]
            self.count += x.shape[0]
            samples += x.shape[0]
            if self.step % cfg.log_every == 0:
                self.log.write({"kind": "train", "epoch": self.epoch + 1, "step": self.step,
                                **vals}, "train")  # fmt: skip
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                if self.batch_in_epoch < n_batches:  # the epoch's end saves last.pt itself
                    self.save("last")
            bar.update(1)
            bar.set_postfix({_SHORT[k]: f"{vals[k]:.4g}" for k in _SHORT}, refresh=False)
            if self._stop_requested(stop):
                reason = "interrupted"
                break
            if self._max_steps_reached():
                reason = "max_steps"
                break
        bar.close()
        # A signal right after the last batch still leaves the epoch's end to the resumed run.
        if reason != "interrupted" and self.batch_in_epoch >= n_batches:
            self._end_epoch(time.perf_counter() - t_epoch, samples)
        return reason

    def run(self) -> dict[str, Any]:
        """Trains to ``cfg.epochs`` (or ``cfg.max_steps``, or a signal); returns the summary."""
        self.t_start, status = time.perf_counter(), "completed"
        n_batches = tu.batches_per_epoch(self.train_set, self.cfg, self.info)
        self.model.train()
        with tu.StopSignal(announce=self.main) as stop:
            while self.epoch < self.cfg.epochs:
                if self._max_steps_reached():
                    status = "max_steps"
                    break
                reason = self._train_epoch(stop, n_batches)
                if reason is not None:
                    status = reason
                    break
        if status == "max_steps" and self.epoch >= self.cfg.epochs:
            status = "completed"
        return self._finish(status, stop.signum)

    def _finish(self, status: str, signum: int | None) -> dict[str, Any]:
        """Final validation (unless interrupted), last.pt if not saved at this step, summary."""
        changed = False
        if status != "interrupted" and self.val_step != self.step:
            self.run_validation()
            changed = True
            # best.pt is chosen among the epoch-end validations only (so that a run stopped by
            # max_steps and resumed picks what an uninterrupted run picks); a run that has had
            # none yet gets a provisional best.pt, replaced by the first epoch-end validation.
            if self.best_val == math.inf:
                self.save("best")
        if changed or self.saved_step != self.step or status == "interrupted":
            self.save("last")
        summary = {
            "run_dir": str(self.run_dir),
            "status": status,
            "signal": signum,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            **{k: v for k, v in self.last_train.items() if k in ("train_loss", "train_chamfer")},
            **self.last_val,
            "best_val_loss": None if self.best_val == math.inf else self.best_val,
            "seconds": time.perf_counter() - self.t_start,
            "total_seconds": self.total_seconds(),
        }
        if self.main:
            atomic_write_json(self.run_dir / SUMMARY_FILE, summary)
        self.log.close()
        return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A few human lines about a finished (or interrupted) run."""
    lines = [f"run {summary['run_dir']}: {summary['status']} after {summary['step']} steps "
             f"({summary['epoch']} epochs) in {summary['seconds']:.1f} s"]  # fmt: skip
    if summary["status"] == "interrupted":
        lines.append(
            f"  saved last.pt; continue with: crfold train --resume --run-dir {summary['run_dir']}"
        )
        return "\n".join(lines)
    keys = ("train_loss", "val_loss", "best_val_loss")
    parts = [f"{k} {summary[k]:.5g}" for k in keys if summary.get(k) is not None]
    lines.append("  " + ", ".join(parts))
    if "val_chamfer" in summary:
        lines.append(f"  FoldingNet Chamfer (validation, z = mu): {summary['val_chamfer']:.5f}")
    return "\n".join(lines)


def train(cfg: TrainConfig, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Runs a :class:`Trainer`, joining and leaving the process group under ``torchrun``.

    Returns:
        The summary dict (also written to ``<run_dir>/summary.json``): ``status``
        ("completed", "max_steps" or "interrupted"), ``signal``, ``epoch``, ``step``,
        ``train_loss``, ``val_loss``, ``val_chamfer``, ``best_val_loss``, ``seconds``, ...
    """
    info, device = tu.init_distributed(cfg.device)
    ok = False
    try:
        trainer = Trainer(cfg, resume=resume, quiet=quiet, info=info, device=device)
        summary = trainer.run()
        if trainer.main:
            print(format_summary(summary), flush=True)
        ok = True
        return summary
    finally:
        tu.cleanup_distributed(info, barrier=ok)
