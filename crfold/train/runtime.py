"""The runtime of every run, whatever its task: devices, seeds, DDP, samplers, log, signals.

The device a spec names, the seeds every random draw derives from, the process group of a
``torchrun`` launch, the sampler that resumes inside an epoch, the metrics log
(``metrics.jsonl`` + TensorBoard) and the signal catcher. Nothing here knows a model or a data set.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from ..io import atomic_write_text, writing

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


# --------------------------------------------------------------------------- devices and seeds
def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> ``cuda:<local_rank>`` if CUDA is available, else cpu; else ``spec`` checked."""
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise ValueError(f"device: expected auto, cpu, cuda or cuda:N, got {spec!r}") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {spec!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device(f"cuda:{local_rank}")
    elif device.type != "cpu":
        raise ValueError(f"device: expected auto, cpu, cuda or cuda:N, got {spec!r}")
    return device


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from non-negative integers (numpy SeedSequence)."""
    lo, hi = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(hi) << 32 | int(lo)) & (2**63 - 1)


def step_generator(seed: int, rank: int, step: int, device: torch.device) -> torch.Generator:
    """The generator of every random draw of one training step (augmentation, z samples).

    Derived from (seed, rank, step) alone, so a resumed run draws exactly what an uninterrupted
    one would, and each DDP rank draws differently.
    """
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, rank, step, 0x5EED))
    return g


# --------------------------------------------------------------------------- distributed
@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a ``torchrun`` launch (world_size 1 without one)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_spec: str) -> tuple[DistInfo, torch.device]:
    """Joins the process group when launched by ``torchrun`` (WORLD_SIZE > 1), picks the device.

    gloo on CPU, nccl on CUDA (each rank on ``cuda:<LOCAL_RANK>``); rendezvous from the env://
    variables torchrun sets.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), resolve_device(device_spec)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device = resolve_device(device_spec, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(world, rank, local_rank), device


def cleanup_distributed(info: DistInfo, barrier: bool = True) -> None:
    """Leaves the process group if :func:`init_distributed` joined one.

    ``barrier`` waits for the other ranks first (skip it after an error, where they may never
    arrive).
    """
    if info.enabled and dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """Sums a list of floats over the ranks (identity without DDP)."""
    if not info.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_str(text: str | None, info: DistInfo) -> str | None:
    """Rank 0's string on every rank (identity without DDP)."""
    if not info.enabled:
        return text
    box = [text]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# --------------------------------------------------------------------------- samplers
class SkipSampler(Sampler[int]):
    """Yields the indices of ``sampler`` after the first ``skip`` (to resume inside an epoch)."""

    def __init__(self, sampler: Sampler[int], skip: int = 0):
        self.sampler, self.skip = sampler, int(skip)

    def __iter__(self) -> Iterator[int]:
        it = iter(self.sampler)
        for _ in range(self.skip):
            next(it, None)
        yield from it

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


# --------------------------------------------------------------------------- logging
def _kept(line: str, resume_step: int) -> bool:
    """A metrics.jsonl line to keep on resume: whole (a kill may tear the last one), not later."""
    try:
        return bool(line.strip()) and json.loads(line).get("step", 0) <= resume_step
    except json.JSONDecodeError:
        return False


class RunLog:
    """``metrics.jsonl`` (one JSON object a line) and TensorBoard scalars; a no-op off rank 0.

    Args:
        run_dir: the run directory.
        enabled: False on ranks other than 0.
        resume_step: when resuming, records after this step (written after the checkpoint that
            is resumed) are dropped from metrics.jsonl and TensorBoard purges its later events;
            None (a fresh run) empties an existing metrics.jsonl.
    """

    def __init__(self, run_dir: Path, enabled: bool, resume_step: int | None = None):
        self.path = Path(run_dir) / METRICS_FILE
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if _kept(line, resume_step)]
            atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))
        elif self.path.exists():  # a fresh start replaces the log of a run that left no checkpoint
            atomic_write_text(self.path, "")
        from torch.utils.tensorboard import SummaryWriter

        if resume_step is None:  # a fresh start: drop the events of an attempt without checkpoint
            shutil.rmtree(Path(run_dir) / TENSORBOARD_DIR, ignore_errors=True)
        purge = None if resume_step is None else resume_step + 1  # drops events >= purge
        self.writer = SummaryWriter(str(Path(run_dir) / TENSORBOARD_DIR), purge_step=purge)

    def write(self, record: dict[str, Any], prefix: str) -> None:
        """Appends ``record`` (which holds ``step``) to metrics.jsonl; numbers to TensorBoard as
        ``<prefix>/<key>``."""
        if not self.enabled:
            return
        with writing(self.path), self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is None:  # closed
            return
        step = record["step"]
        for key, value in record.items():
            if key in ("step", "epoch", "kind") or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        """Closes TensorBoard's writer (idempotent)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl, in order."""
    text = (Path(run_dir) / METRICS_FILE).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------- signals
class StopSignal:
    """Context manager: SIGINT/SIGTERM set :attr:`signum` instead of killing the process.

    The loop checks :attr:`requested` after each step, saves a checkpoint and returns. A second
    SIGINT raises KeyboardInterrupt (an impatient user can still break out). Installs handlers
    only in the main thread (signal handlers cannot be set elsewhere).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, announce: bool = True):
        self.signum: int | None = None
        self.announce = announce
        self._old: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        if self.announce:
            name = signal.Signals(signum).name
            print(f"\ncrfold: {name} received: finishing the current step, then saving last.pt "
                  "(send SIGINT again to abort without saving)", file=sys.stderr, flush=True)  # fmt: skip

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
        self._old.clear()
