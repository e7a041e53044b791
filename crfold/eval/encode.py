"""A trained run's model and config, and the posteriors q(z|x) of a split under it.

>>> model, cfg = load_run("runs/demo")                          # best.pt, eval mode, CPU
>>> mu, labels = encode_dataset(model, open_split(cfg, "test"))  # (N, L) float32, (N,) int64
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..config import TrainConfig
from ..io import load_checkpoint
from ..models.foldingnet import FoldingNetVAE
from ..train.foldingnet import build_model, open_split

__all__ = [
    "CHECKPOINTS",
    "checkpoint_path",
    "encode_dataset",
    "encode_posteriors",
    "load_run",
    "load_run_state",
    "loader",
    "model_device",
    "open_split",
]

CHECKPOINTS = ("best", "last")


def checkpoint_path(run_dir: str | Path, which: str) -> Path:
    """``<run_dir>/<which>.pt``; ValueError unless ``which`` is "best" or "last"."""
    if which not in CHECKPOINTS:
        raise ValueError(f"which: expected one of {CHECKPOINTS}, got {which!r}")
    return Path(run_dir) / f"{which}.pt"


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def load_run(
    run_dir: str | Path, which: str = "best", map_location: Any = "cpu"
) -> tuple[FoldingNetVAE, TrainConfig]:
    """The model of a run directory in eval mode, and the config it was trained with.

    Args:
        run_dir: a directory written by ``crfold train``.
        which: "best" (lowest validation loss) or "last" checkpoint.
        map_location: device of the model (default "cpu").

    Returns:
        (model in eval mode, the run's TrainConfig as stored in the checkpoint).

    Raises:
        ValueError: ``which`` is not "best"/"last", or the checkpoint is refused/unreadable.
        FileNotFoundError: no such checkpoint in ``run_dir``.
    """
    model, cfg, _ = load_run_state(run_dir, which, map_location)
    return model, cfg


def load_run_state(
    run_dir: str | Path, which: str = "best", map_location: Any = "cpu"
) -> tuple[FoldingNetVAE, TrainConfig, dict[str, Any]]:
    """:func:`load_run` that also returns the checkpoint's state dict."""
    path = checkpoint_path(run_dir, which)
    state = load_checkpoint(path, map_location=map_location)
    for key in ("config", "model"):
        if key not in state:
            raise ValueError(f"{path}: not a crfold training checkpoint (no {key!r} entry)")
    task = state["config"].get("task", "foldingnet")
    if task != "foldingnet":
        raise ValueError(f"{path}: a {task!r} run; crfold eval / probe read FoldingNet runs")
    cfg = TrainConfig.from_dict(state["config"], str(path))
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    model.to(map_location if map_location is not None else "cpu")
    return model.eval(), cfg, state


def loader(dataset: Dataset, batch_size: int) -> DataLoader:
    """In-order loader of ``dataset`` (ValueError for a batch size below 1)."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size}")
    return DataLoader(dataset, batch_size=batch_size, shuffle=False)


@torch.no_grad()
def encode_posteriors(
    model: FoldingNetVAE, dataset: Dataset, batch_size: int = 64, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Posterior parameters of every sample of ``dataset``, in order (eval mode, no grad).

    Args:
        model: a FoldingNet(-VAE); its mode is restored afterwards.
        dataset: yields ``(points (N_pts, 3), label)``.
        batch_size: clouds per forward pass.
        progress: show a tqdm bar.

    Returns:
        (mu (N, L) float32, logvar (N, L) float32, labels (N,) int64), on the CPU. In "ae"
        mode logvar is the model's constant.
    """
    was_training = model.training
    model.eval()
    device = model_device(model)
    mus, logvars, labels = [], [], []
    for x, y in tqdm(loader(dataset, batch_size), desc="encode", disable=not progress):
        post = model.encode(x.to(device).float())  # mu, logvar (B, L)
        mus.append(post.mu.float().cpu())
        logvars.append(post.logvar.float().cpu())
        labels.append(torch.as_tensor(y, dtype=torch.int64))
    model.train(was_training)
    if not mus:
        raise ValueError("dataset: expected at least one sample, got an empty dataset")
    return torch.cat(mus), torch.cat(logvars), torch.cat(labels)


def encode_dataset(
    model: FoldingNetVAE, dataset: Dataset, batch_size: int = 64, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes mu(x) of every sample, in order: ``(mu (N, L) float32, labels (N,) int64)``.

    See :func:`encode_posteriors` (eval mode, no augmentation, no grad, CPU outputs).
    """
    mu, _, labels = encode_posteriors(model, dataset, batch_size, progress)
    return mu, labels
