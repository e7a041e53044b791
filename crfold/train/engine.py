"""The run engine: one training loop for every task (FoldingNet, the image VAEs, NVAE).

A :class:`Task` says what is trained: it builds the model and its optimizer, yields the batches
of an epoch, computes the loss terms of one batch, validates, and (optionally) evaluates the
finished model. The :class:`Trainer` owns everything else, the same way for every task:

* device and DDP (``torchrun``), precision (``amp``: autocast dtype, a gradient scaler for fp16);
* the random draws: weights from ``seed``; every draw of step s from a generator seeded by
  (seed, rank, s) (:func:`~crfold.train.runtime.step_generator`), so a resumed run draws what an
  uninterrupted one would;
* SIGINT/SIGTERM (finish the step, save ``last.pt``, return);
* the run log (``metrics.jsonl`` + TensorBoard), trimmed to the checkpoint on resume;
* checkpoints: ``last.pt`` (epoch ends, every ``checkpoint_every`` steps, signals) and ``best.pt``
  (best validation loss, chosen at epoch ends; a run stopped before its first epoch end gets a
  provisional one from its final validation), written atomically, ``last.pt`` first, so an
  interrupted save never leaves the run unresumable;
* exact resume (model, optimizer, scaler, position inside the epoch, RNG states), refusing a
  change to any key that defines the run (:meth:`crfold.config.RunConfig.run_defining_changes`);
* the run-directory lock (:class:`crfold.io.RunLock`): one writer per run directory.

The run directory is the same for every task::

    config.yaml  last.pt  best.pt  metrics.jsonl  tensorboard/  summary.json  eval.json

(``best.pt`` when the task validates; ``eval.json`` when the task evaluates after training, or
from ``crfold eval``). The loop follows EDM's ``training_loop`` and nanoGPT's ``train.py`` in
what it needs: no callbacks, no hooks beyond the task's five methods.
"""

from __future__ import annotations

import importlib
import json
import math
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..amp import amp_dtype
from ..config import RunConfig
from ..io import (
    RunLock,
    atomic_write_json,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from . import runtime as rt

__all__ = [
    "CHECKPOINT_FORMAT",
    "CONFIG_FILE",
    "EVAL_FILE",
    "SUMMARY_FILE",
    "Task",
    "Trainer",
    "evaluation_config",
    "format_summary",
    "task_of",
    "train",
]

# Keys that change neither the trained state nor its evaluation: an eval.json made under other
# values of these still describes the run (:func:`evaluation_config`).
EVAL_NEUTRAL_KEYS = ("run_dir", "num_threads", "device", "amp", "log_every", "checkpoint_every",
                     "eval_every", "max_bad_steps")  # fmt: skip
CHECKPOINT_FORMAT = "crfold.train/2"
_READABLE_FORMATS = ("crfold.train/1", CHECKPOINT_FORMAT)  # /1: FoldingNet runs before the engine
CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
EVAL_FILE = "eval.json"


def evaluation_config(config: dict[str, Any]) -> dict[str, Any]:
    """The keys of a config that an ``eval.json`` depends on (all but :data:`EVAL_NEUTRAL_KEYS`)."""
    return {k: v for k, v in config.items() if k not in EVAL_NEUTRAL_KEYS}


class Task:
    """What a run trains; the :class:`Trainer` calls these methods and nothing else.

    Args:
        cfg: the task's config (a :class:`~crfold.config.RunConfig` subclass).
        device: where the model lives.
        info: the process's place in a ``torchrun`` launch.

    Attributes:
        supports_ddp: whether :meth:`loss` runs the model through ``forward`` (the DDP wrapper),
            as DDP needs; a task that does not is refused under ``torchrun``.
        progress: ``{term: short name}`` shown in the progress bar.
        headline: validation keys printed in the per-epoch line after ``val_loss``.
    """

    supports_ddp = False
    progress: dict[str, str] = {"loss": "loss"}
    headline: tuple[str, ...] = ()
    quiet = False  # set by the Trainer: no progress bars in the task's own loops (evaluation)

    def __init__(self, cfg: RunConfig, device: torch.device, info: rt.DistInfo):
        self.cfg, self.device, self.info = cfg, device, info

    # ------------------------------------------------------------------ building
    def build_model(self) -> torch.nn.Module:
        """The model, initialized from the global torch RNG (seeded with ``cfg.seed``)."""
        raise NotImplementedError

    def build_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        """Adam with ``cfg.lr`` and ``cfg.weight_decay`` unless the task says otherwise."""
        return torch.optim.Adam(
            model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay
        )

    # ------------------------------------------------------------------ data
    def batches_per_epoch(self) -> int:
        """Optimizer steps in one epoch (the same on every rank)."""
        raise NotImplementedError

    def train_batches(self, epoch: int, skip: int) -> Iterable[Any]:
        """The batches of ``epoch`` after the first ``skip`` (an order fixed by seed and epoch)."""
        raise NotImplementedError

    def batch_size_of(self, batch: Any) -> int:
        """Examples in ``batch`` (the weight of its terms in the epoch means)."""
        first = batch[0] if isinstance(batch, (tuple, list)) else batch
        return int(first.shape[0])

    # ------------------------------------------------------------------ one step
    def learning_rate(self, step: int, total_steps: int) -> float | None:
        """The learning rate of ``step`` (None: the optimizer's, constant)."""
        return None

    def loss(
        self,
        model: torch.nn.Module,
        forward: Any,
        batch: Any,
        step: int,
        total_steps: int,
        generator: torch.Generator,
        amp: torch.dtype | None,
    ) -> dict[str, torch.Tensor]:
        """The 0-d terms of one training batch; ``"loss"`` carries the gradient.

        ``forward`` is the model or its DDP wrapper; every random draw comes from ``generator``;
        ``amp`` is the autocast dtype of the forward pass (None: float32). An optional
        ``"diagnostics"`` entry (a dict of numbers) is not a term: the trainer writes it to the
        run log as a ``kind: "diagnostics"`` record, outside the epoch means.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ evaluation
    def validate(self, model: torch.nn.Module, amp: torch.dtype | None) -> dict[str, float]:
        """Validation numbers (``val_loss`` selects ``best.pt``); {} when the task has none."""
        return {}

    def evaluate(self, model: torch.nn.Module, run_dir: Path) -> dict[str, Any] | None:
        """The evaluation of the finished model (written to ``eval.json``); None: none."""
        return None

    # ------------------------------------------------------------------ extra state
    def state_dict(self) -> dict[str, Any]:
        """Task state to checkpoint beyond model and optimizer (tensors and plain values)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def task_of(cfg: RunConfig, device: torch.device, info: rt.DistInfo) -> Task:
    """The :class:`Task` that ``cfg``'s class names (``TASK_CLASS``)."""
    module, _, name = type(cfg).TASK_CLASS.partition(":")
    return getattr(importlib.import_module(module), name)(cfg, device, info)


class Trainer:
    """One training run of any task: builds it from the config, trains, checkpoints, resumes.

    Args:
        cfg: the resolved config (``cfg.run_dir`` None picks ``cfg.default_run_dir()``).
        resume: continue from ``<run_dir>/last.pt``. Keys outside ``cfg.RESUMABLE`` must equal
            the saved run's (ValueError naming them).
        quiet: no progress bars or per-epoch lines.
        info, device: from :func:`~crfold.train.runtime.init_distributed` (None: made here).
        task: a prebuilt task (tests); None builds ``cfg``'s.

    The run directory is locked from construction until :meth:`run` returns (or :meth:`close`).
    """

    def __init__(
        self,
        cfg: RunConfig,
        resume: bool = False,
        quiet: bool = False,
        info: rt.DistInfo | None = None,
        device: torch.device | None = None,
        task: Task | None = None,
    ):
        if info is None or device is None:
            info, device = rt.init_distributed(cfg.device)
        self.info, self.device = info, device
        self.main = info.is_main
        self.quiet = quiet
        run_dir = rt.broadcast_str(cfg.run_dir or cfg.default_run_dir(), info)
        self.cfg = cfg = cfg.replace(run_dir=run_dir)
        self.run_dir = Path(run_dir)
        self._threads_before: int | None = None
        self.lock = RunLock(self.run_dir, f"crfold train ({cfg.task})") if self.main else None
        if self.lock is not None:
            self.lock.acquire()
        try:
            self._setup(cfg, resume, task)
        except BaseException:
            self.close()
            raise

    def _setup(self, cfg: RunConfig, resume: bool, task: Task | None) -> None:
        last = self.run_dir / "last.pt"
        if resume and not last.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint to resume at {last}")
        if not resume and last.is_file():
            raise FileExistsError(
                f"run_dir: {self.run_dir} already holds a run (last.pt); pass --resume to "
                "continue it or choose another --run-dir"
            )
        state = load_checkpoint(last, map_location=self.device) if resume else None
        if state is not None:
            self._check_resume(state)
        if cfg.num_threads is not None:
            self._threads_before = torch.get_num_threads()
            torch.set_num_threads(cfg.num_threads)
        self.task = task or task_of(cfg, self.device, self.info)
        self.task.quiet = self.quiet
        if self.info.enabled and not self.task.supports_ddp:
            raise ValueError(f"task: {cfg.task!r} does not train under torchrun (DDP) yet")
        torch.manual_seed(cfg.seed)
        self.model = self.task.build_model().to(self.device)
        self.forward = self.model
        if self.info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = self.task.build_optimizer(self.model)
        self.amp_dtype = amp_dtype(cfg.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.n_batches = self.task.batches_per_epoch()
        # The schedules (learning rate, warm-ups) span the epochs; max_steps only stops the run, so
        # a run stopped by max_steps and resumed follows the schedule of an uninterrupted one.
        self.total_steps = cfg.epochs * self.n_batches
        self.epoch = self.batch_in_epoch = self.step = 0
        self.best_val, self.best_step = math.inf, -1
        self.last_val: dict[str, float] = {}
        self.val_step = -1
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0
        self.bad_steps = 0
        self.last_train: dict[str, float] = {}
        self.saved_step = -1
        self.seconds_before = 0.0  # training time of earlier processes of this run (resume)
        self.t_start: float | None = None
        if state is not None:
            self._load(state)
        self.start_step = self.step
        if self.main:
            cfg.save(self.run_dir / CONFIG_FILE)
        self.log = rt.RunLog(self.run_dir, self.main, self.step if resume else None)
        if state is not None:
            self._repair_best()

    def close(self) -> None:
        """Closes the run log, releases the run-directory lock and restores torch's thread count
        (idempotent)."""
        log = getattr(self, "log", None)
        if log is not None:
            log.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if self._threads_before is not None:
            torch.set_num_threads(self._threads_before)
            self._threads_before = None

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly (tensors and plain containers only)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "task": self.cfg.task,
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "world_size": self.info.world_size,
            "best_val_loss": self.best_val,
            "best_step": self.best_step,
            "last_val": dict(self.last_val),
            "val_step": self.val_step,
            "epoch_sums": dict(self.sums),
            "epoch_count": self.count,
            "rng": get_rng_state(),
            "train_seconds": self.total_seconds(),
            "last_train": dict(self.last_train),
            "bad_steps": self.bad_steps,
            "task_state": self.task.state_dict(),
        }

    def total_seconds(self) -> float:
        """Wall time of this run so far, over every process that trained it (resumes add up)."""
        now = 0.0 if self.t_start is None else time.perf_counter() - self.t_start
        return self.seconds_before + now

    def _check_resume(self, state: dict[str, Any]) -> None:
        """Refuses a checkpoint of another format or world size, or a changed run-defining key."""
        last = self.run_dir / "last.pt"
        if state.get("format") not in _READABLE_FORMATS:
            raise ValueError(f"{last}: expected format {CHECKPOINT_FORMAT}, got "
                             f"{state.get('format')!r}")  # fmt: skip
        saved = state.get("config") or {}
        if saved.get("task", "foldingnet") != self.cfg.task:
            raise ValueError(f"--resume: {last} is a {saved.get('task', 'foldingnet')!r} run, "
                             f"not {self.cfg.task!r}")  # fmt: skip
        changed = self.cfg.run_defining_changes(saved)
        if changed:
            old = (
                type(self.cfg)
                .from_dict({k: v for k, v in saved.items() if k in self.cfg.to_dict()}, "saved")
                .to_dict()
            )
            diffs = ", ".join(f"{k}: {old.get(k)!r} -> {getattr(self.cfg, k)!r}" for k in changed)
            raise ValueError(
                f"--resume: {self.run_dir} was trained with other values of keys that define "
                f"the run ({diffs}); start a new run instead (keys that may change: "
                f"{', '.join(self.cfg.RESUMABLE)})"
            )
        trained = state["epoch"] + (1 if state["batch_in_epoch"] else 0)  # epochs begun
        if trained > self.cfg.epochs:
            raise ValueError(
                f"epochs: {self.run_dir} has already trained into epoch {trained}, more than "
                f"epochs={self.cfg.epochs}"
            )
        if state["batch_in_epoch"] and state["world_size"] != self.info.world_size:
            raise ValueError(
                f"--resume: last.pt stopped inside an epoch with {state['world_size']} processes; "
                f"resume it with the same number, not {self.info.world_size}"
            )

    def _load(self, state: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ValueError(
                f"--resume: last.pt does not fit the model of this config: {exc}"
            ) from exc
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.batch_in_epoch, self.step = (
            state["epoch"], state["batch_in_epoch"], state["step"]
        )  # fmt: skip
        self.best_val, self.last_val = state["best_val_loss"], dict(state["last_val"])
        self.best_step = int(state.get("best_step", -1))
        self.val_step = state["val_step"]
        self.sums = defaultdict(float, state["epoch_sums"])
        self.count = state["epoch_count"]
        set_rng_state(state["rng"])
        self.seconds_before = float(state.get("train_seconds", 0.0))
        self.last_train = dict(state.get("last_train") or {})
        self.bad_steps = int(state.get("bad_steps", 0))
        self.task.load_state_dict(state.get("task_state") or {})
        self.saved_step = self.step

    def _repair_best(self) -> None:
        """Rewrites best.pt from last.pt when a save failed between the two (same step)."""
        if not self.main or self.best_step != self.step:
            return
        best = self.run_dir / "best.pt"
        try:
            ok = best.is_file() and load_checkpoint(best)["step"] == self.best_step
        except (ValueError, KeyError):
            ok = False
        if not ok:
            self.save("best")

    def save(self, name: str) -> None:
        """Writes ``<run_dir>/<name>.pt`` atomically (rank 0 only)."""
        if self.main:
            save_checkpoint(self.run_dir / f"{name}.pt", self.state())
        if name == "last":
            self.saved_step = self.step

    # ------------------------------------------------------------------ steps
    def train_step(self, batch: Any) -> dict[str, float]:
        """One optimizer step on ``batch``; returns the terms as floats."""
        cfg = self.cfg
        lr = self.task.learning_rate(self.step, self.total_steps)
        if lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        gen = rt.step_generator(cfg.seed, self.info.rank, self.step, self.device)
        terms = self.task.loss(
            self.model, self.forward, batch, self.step, self.total_steps, gen, self.amp_dtype
        )
        diagnostics = terms.pop("diagnostics", None)  # a log record, not a term
        loss = terms["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        finite = self._all_ranks(bool(torch.isfinite(loss)))  # ranks must take one path (DDP)
        if finite:
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
            else:
                loss.backward()
            if cfg.grad_clip is not None or (cfg.max_bad_steps and self.scaler is None):
                limit = cfg.grad_clip if cfg.grad_clip is not None else math.inf
                norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), limit)
                if self.scaler is None:  # the scaler skips non-finite gradients itself
                    finite = self._all_ranks(bool(torch.isfinite(norm)))
            if not finite:
                self.optimizer.zero_grad(set_to_none=True)
            elif self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
        if finite:
            self.bad_steps = 0
        else:
            self.bad_steps += 1
            if self.bad_steps > cfg.max_bad_steps:
                raise FloatingPointError(
                    f"non-finite loss {float(loss)} at step {self.step} (epoch {self.epoch + 1})"
                    f"{f', {self.bad_steps} in a row' if self.bad_steps > 1 else ''}; "
                    f"{self.run_dir / 'last.pt'} holds the last good state (lower lr, or raise "
                    "max_bad_steps)"
                )
        self.step += 1
        if diagnostics:  # the step of the train record of the same batch
            values = {k: float(v) for k, v in diagnostics.items()}
            self.log.write({"kind": "diagnostics", "epoch": self.epoch + 1, "step": self.step,
                            **values}, "diagnostics")  # fmt: skip
        out = {k: float(v.detach()) for k, v in terms.items()}
        if lr is not None:
            out["lr"] = lr
        if not finite:
            out["skipped"] = 1.0
        return out

    def _all_ranks(self, flag: bool) -> bool:
        """``flag`` held on every rank (itself without DDP)."""
        if not self.info.enabled:
            return flag
        return rt.all_reduce_sum([0.0 if flag else 1.0], self.info, self.device)[0] == 0

    def _stop_requested(self, stop: rt.StopSignal) -> bool:
        flag = [1.0 if stop.requested else 0.0]
        return rt.all_reduce_sum(flag, self.info, self.device)[0] > 0

    def run_validation(self) -> dict[str, float]:
        self.last_val = self.task.validate(self.model, self.amp_dtype)
        self.val_step = self.step
        return self.last_val

    def _end_epoch(self, seconds: float, samples: int) -> None:
        """Epoch record, validation, last.pt and best.pt after a complete epoch.

        ``seconds`` and ``samples`` (this process's) cover the part trained by this process (a
        resumed epoch counts from the resume) and give the throughput.
        """
        keys = list(self.sums)
        means = rt.all_reduce_sum([*self.sums.values(), self.count], self.info, self.device)
        n = max(means[-1], 1.0)
        train = {f"train_{k}": v / n for k, v in zip(keys, means[:-1])}
        self.epoch += 1
        self.batch_in_epoch, self.sums, self.count = 0, defaultdict(float), 0
        record = {"kind": "epoch", "epoch": self.epoch, "step": self.step, **train}
        throughput = samples * self.info.world_size / seconds if seconds > 0 else None
        record["samples_per_s"] = throughput
        improved = False
        if self.epoch % self.cfg.eval_every == 0 or self.epoch == self.cfg.epochs:
            val = self.run_validation()
            record.update(val)
            if "val_loss" in val and val["val_loss"] < self.best_val:
                improved = True
                self.best_val, self.best_step = val["val_loss"], self.step
        record["best_val_loss"] = None if self.best_val == math.inf else self.best_val
        self.log.write(record, "epoch")
        self.last_train = train
        self.save("last")  # first: a failure between the two saves is repaired on resume
        if improved:
            self.save("best")
        if self.main and not self.quiet:
            tqdm.write(self._epoch_line(record, train, improved))

    def _epoch_line(self, record: dict[str, Any], train: dict[str, float], improved: bool) -> str:
        text = (f"epoch {self.epoch}/{self.cfg.epochs} step {self.step}: "
                f"train loss {train.get('train_loss', math.nan):.4g}")  # fmt: skip
        if "val_loss" in record:
            text += f" | val loss {record['val_loss']:.4g}"
            for key in self.task.headline:
                if key in record:
                    text += f" {key.removeprefix('val_')} {record[key]:.4g}"
            text += " (best)" if improved else ""
        return text

    # ------------------------------------------------------------------ the loop
    def _max_steps_reached(self) -> bool:
        return self.cfg.max_steps is not None and self.step >= self.cfg.max_steps

    def _train_epoch(self, stop: rt.StopSignal) -> str | None:
        """Runs the rest of the current epoch; returns "interrupted", "max_steps" or None."""
        cfg = self.cfg
        bar = tqdm(
            total=self.n_batches, initial=self.batch_in_epoch, leave=False, dynamic_ncols=True,
            desc=f"epoch {self.epoch + 1}/{cfg.epochs}", disable=self.quiet or not self.main,
        )  # fmt: skip
        t_epoch, reason, samples = time.perf_counter(), None, 0
        for batch in self.task.train_batches(self.epoch, self.batch_in_epoch):
            vals = self.train_step(batch)
            size = self.task.batch_size_of(batch)
            self.batch_in_epoch += 1
            if "skipped" not in vals:  # a skipped step's non-finite terms stay out of the means
                for k, v in vals.items():
                    self.sums[k] += v * size
                self.count += size
            samples += size
            if self.step % cfg.log_every == 0:
                self.log.write({"kind": "train", "epoch": self.epoch + 1, "step": self.step,
                                **vals}, "train")  # fmt: skip
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                if self.batch_in_epoch < self.n_batches:  # the epoch's end saves last.pt itself
                    self.save("last")
            bar.update(1)
            shown = {s: f"{vals[k]:.4g}" for k, s in self.task.progress.items() if k in vals}
            bar.set_postfix(shown, refresh=False)
            if self._stop_requested(stop):
                reason = "interrupted"
                break
            if self._max_steps_reached():
                reason = "max_steps"
                break
        bar.close()
        # A signal right after the last batch still leaves the epoch's end to the resumed run.
        if reason != "interrupted" and self.batch_in_epoch >= self.n_batches:
            self._end_epoch(time.perf_counter() - t_epoch, samples)
        return reason

    def run(self, evaluate: bool = True) -> dict[str, Any]:
        """Trains to ``cfg.epochs`` (or ``cfg.max_steps``, or a signal); returns the summary.

        Args:
            evaluate: when training finished (not interrupted), run the task's evaluation and
                write ``eval.json`` (if the task has one, and this process trained or the file
                is missing).
        """
        try:
            self.t_start, status = time.perf_counter(), "completed"
            if self.main and (self.run_dir / SUMMARY_FILE).is_file():
                # an older stage's summary must not describe a run that goes on from here
                atomic_write_json(self.run_dir / SUMMARY_FILE, {"status": "running",
                                  "step": self.step, "epoch": self.epoch})  # fmt: skip
            self.model.train()
            with rt.StopSignal(announce=self.main) as stop:
                while self.epoch < self.cfg.epochs:
                    if self._max_steps_reached():
                        status = "max_steps"
                        break
                    reason = self._train_epoch(stop)
                    if reason is not None:
                        status = reason
                        break
            if status == "max_steps" and self.epoch >= self.cfg.epochs:
                status = "completed"
            summary = self._finish(status, stop.signum)
            if evaluate and status != "interrupted" and self.main:
                self._evaluate(summary)
            return summary
        finally:
            self.close()

    def _evaluate(self, summary: dict[str, Any]) -> None:
        path = self.run_dir / EVAL_FILE
        if path.is_file():  # an evaluation of this very state is kept, any other redone
            try:
                done = json.loads(path.read_text())
            except (OSError, ValueError):
                done = {}
            same = evaluation_config(done.get("config") or {}) == evaluation_config(
                self.cfg.to_dict()
            )  # e.g. other evaluation settings: evaluated again
            if done.get("step") == self.step and done.get("which") == "last" and same:
                summary["eval"] = str(path)
                return
        was_training = self.model.training
        result = self.task.evaluate(self.model, self.run_dir)
        self.model.train(was_training)
        if result is None:
            return
        result = {"step": self.step, "which": "last", **result, "config": self.cfg.to_dict()}
        atomic_write_json(path, result)
        numbers = {k: v for k, v in result.items() if isinstance(v, (int, float))}
        self.log.write({"kind": "eval", "epoch": self.epoch, **numbers}, "eval")
        summary["eval"] = str(path)

    def _finish(self, status: str, signum: int | None) -> dict[str, Any]:
        """Final validation (unless interrupted), last.pt if not saved at this step, summary."""
        changed = False
        if status != "interrupted" and self.val_step != self.step:
            self.run_validation()
            changed = True
        if changed or self.saved_step != self.step or status == "interrupted":
            self.save("last")
        # best.pt is chosen among the epoch-end validations only (so that a run stopped by
        # max_steps and resumed picks what an uninterrupted run picks); a run that has had none
        # yet gets a provisional best.pt, replaced by the first epoch-end validation.
        if changed and self.best_val == math.inf and "val_loss" in self.last_val:
            self.save("best")
        train_keys = (
            "train_loss",
            *(f"train_{k.removeprefix('val_')}" for k in self.task.headline),
        )
        summary = {
            "run_dir": str(self.run_dir),
            "task": self.cfg.task,
            "mode": getattr(self.cfg, "mode", None),
            "status": status,
            "signal": signum,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            **{k: v for k, v in self.last_train.items() if k in train_keys},
            **self.last_val,
            "best_val_loss": None if self.best_val == math.inf else self.best_val,
            "seconds": time.perf_counter() - self.t_start,
            "total_seconds": self.total_seconds(),
        }
        if self.main:
            atomic_write_json(self.run_dir / SUMMARY_FILE, summary)
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
    if parts:
        lines.append("  " + ", ".join(parts))
    if "val_chamfer" in summary:
        lines.append(f"  FoldingNet Chamfer (validation, z = mu): {summary['val_chamfer']:.5f}")
    if "eval" in summary:
        lines.append(f"  evaluation: {summary['eval']}")
    return "\n".join(lines)


def train(
    cfg: RunConfig, resume: bool = False, quiet: bool = False, evaluate: bool = True
) -> dict[str, Any]:
    """Runs a :class:`Trainer` for any task, joining and leaving the process group of ``torchrun``.

    Returns:
        The summary dict (also written to ``<run_dir>/summary.json``): ``status``
        ("completed", "max_steps" or "interrupted"), ``signal``, ``epoch``, ``step``,
        ``train_loss``, the validation numbers, ``best_val_loss``, ``seconds``, ...
    """
    info, device = rt.init_distributed(cfg.device)
    ok = False
    try:
        trainer = Trainer(cfg, resume=resume, quiet=quiet, info=info, device=device)
        summary = trainer.run(evaluate=evaluate)
        if trainer.main:  # also when quiet: the run's one line of outcome
            print(format_summary(summary), flush=True)
        ok = True
        return summary
    finally:
        rt.cleanup_distributed(info, barrier=ok)
