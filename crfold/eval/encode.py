"""A trained run's model and config, and the posteriors q(z|x) of a split under it.

>>> model, cfg = load_run("runs/demo")                          # best.pt, eval mode, CPU
>>> mu, labels = encode_dataset(model, open_split(cfg, "test"))  # (N, L) float32, (N,) int64
>>> mu_r, labels = encode_rotated(model, open_split(cfg, "test"), up="y", seed=7)  # rotated shapes
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
from ..transforms import RandomRotation

__all__ = [
    "CHECKPOINTS",
    "checkpoint_path",
    "encode_dataset",
    "encode_posteriors",
    "encode_rotated",
    "load_run",
    "load_run_state",
    "loader",
    "model_device",
    "open_split",
    "up_rotations",
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
    model: FoldingNetVAE,
    dataset: Dataset,
    batch_size: int = 64,
    progress: bool = False,
    rotations: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Posterior parameters of every sample of ``dataset``, in order (eval mode, no grad).

    Args:
        model: a FoldingNet(-VAE); its mode is restored afterwards.
        dataset: yields ``(points (N_pts, 3), label)``.
        batch_size: clouds per forward pass.
        progress: show a tqdm bar.
        rotations: optional (N, 3, 3) rotation of each sample (points map to x R^T), e.g.
            :func:`up_rotations`; None: the shapes as they are.

    Returns:
        (mu (N, L) float32, logvar (N, L) float32, labels (N,) int64), on the CPU. In "ae"
        mode logvar is the model's constant.
    """
    n = len(dataset)  # type: ignore[arg-type]
    if rotations is not None and tuple(rotations.shape) != (n, 3, 3):
        raise ValueError(f"rotations: expected shape ({n}, 3, 3), got {tuple(rotations.shape)}")
    was_training = model.training
    model.eval()
    device = model_device(model)
    mus, logvars, labels = [], [], []
    start = 0
    for x, y in tqdm(loader(dataset, batch_size), desc="encode", disable=not progress):
        x = x.to(device).float()  # (B, N_pts, 3)
        if rotations is not None:
            rot = rotations[start : start + x.shape[0]].to(device=device, dtype=x.dtype)
            x = x @ rot.transpose(-1, -2)  # (B, N_pts, 3)
        start += x.shape[0]
        post = model.encode(x)  # mu, logvar (B, L)
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


def up_rotations(n: int, up: str, seed: int) -> torch.Tensor:
    """(n, 3, 3) rotations about the up axis, angle uniform in [-180, 180] degrees, one per shape.

    Drawn at once from a CPU generator seeded with ``seed`` (``RandomRotation(axis="up", up=up)``),
    so shape i gets the same rotation whatever the batch size or device.
    """
    gen = torch.Generator().manual_seed(int(seed))
    return RandomRotation(axis="up", degrees=180.0, up=up).matrices(n, generator=gen)


def encode_rotated(
    model: FoldingNetVAE,
    dataset: Dataset,
    up: str,
    seed: int,
    batch_size: int = 64,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes mu(R_i x_i) of every sample, each under its own random rotation about the up axis.

    Args:
        model, dataset, batch_size, progress: as :func:`encode_dataset`.
        up: the data's up axis ("x", "y" or "z"; :func:`crfold.train.foldingnet.up_axis`).
        seed: seed of the rotations (:func:`up_rotations`).

    Returns:
        ``(mu (N, L) float32, labels (N,) int64)``, on the CPU.
    """
    rotations = up_rotations(len(dataset), up, seed)  # type: ignore[arg-type]
    mu, _, labels = encode_posteriors(model, dataset, batch_size, progress, rotations=rotations)
    return mu, labels
