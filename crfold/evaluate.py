"""Evaluation of a trained run: load it, encode a split, reconstruction metrics, linear probes.

Small reusable pieces (``crfold eval`` builds more metrics on them):

>>> model, cfg = load_run("runs/demo")                          # best.pt, eval mode, CPU
>>> mu, labels = encode_dataset(model, open_split(cfg, "test"))  # (N, L) float32, (N,) int64
>>> reconstruction_metrics(model, open_split(cfg, "test"))       # Chamfer, both conventions
>>> probe_run("runs/demo", C=1.0)                                # writes runs/demo/probe.json

Codes are posterior means mu(x) in eval mode, without augmentation and without gradients.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .checkpoint import atomic_write_json, load_checkpoint
from .config import TrainConfig
from .models.foldingnet import FoldingNetVAE, foldingnet_chamfer
from .ops import chamfer_distance
from .probe import logistic_probe, svm_probe
from .trainer_utils import build_model, open_split

__all__ = [
    "PROBE_FILE",
    "encode_dataset",
    "encode_posteriors",
    "load_run",
    "load_run_state",
    "open_split",
    "probe_run",
    "reconstruction_metrics",
]

PROBE_FILE = "probe.json"
CHECKPOINTS = ("best", "last")


def _model_device(model: torch.nn.Module) -> torch.device:
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
    run_dir: str | Path, which: str, map_location: Any
) -> tuple[FoldingNetVAE, TrainConfig, dict[str, Any]]:
    """:func:`load_run` that also returns the checkpoint's state dict."""
    if which not in CHECKPOINTS:
        raise ValueError(f"which: expected one of {CHECKPOINTS}, got {which!r}")
    path = Path(run_dir) / f"{which}.pt"
    state = load_checkpoint(path, map_location=map_location)
    for key in ("config", "model"):
        if key not in state:
            raise ValueError(f"{path}: not a crfold training checkpoint (no {key!r} entry)")
    cfg = TrainConfig.from_dict(state["config"])
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    model.to(map_location if map_location is not None else "cpu")
    return model.eval(), cfg, state


def _loader(dataset: Dataset, batch_size: int) -> DataLoader:
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
    device = _model_device(model)
    mus, logvars, labels = [], [], []
    for x, y in tqdm(_loader(dataset, batch_size), desc="encode", disable=not progress):
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


@torch.no_grad()
def reconstruction_metrics(
    model: FoldingNetVAE,
    dataset: Dataset,
    batch_size: int = 32,
    grid_size: int | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Reconstruction Chamfer of decode(mu(x)) against x, averaged over the set.

    Two conventions (REFERENCES.md): ``chamfer_foldingnet`` is FoldingNet's reporting metric
    (``sqrt(d^2 + 1e-6)``, mean over points, max of the two directions; the ~0.03 scale of
    published tables); ``chamfer_squared`` is the squared L2 distance, mean over points, sum of
    the two directions (PyTorch3D's ``chamfer_distance`` default).

    Args:
        model: a FoldingNet(-VAE) (eval mode during the call).
        dataset: yields ``(points (N_pts, 3), label)``.
        batch_size: clouds per forward pass.
        grid_size: decode at this grid side (default: the model's).
        progress: show a tqdm bar.

    Returns:
        ``{"chamfer_foldingnet", "chamfer_squared", "num_samples", "grid_size"}``.
    """
    was_training = model.training
    model.eval()
    device = _model_device(model)
    cd_fn, cd_sq, n = 0.0, 0.0, 0
    for x, _ in tqdm(_loader(dataset, batch_size), desc="reconstruct", disable=not progress):
        x = x.to(device).float()  # (B, N, 3)
        recon = model.decode(model.encode(x).mu, grid_size).float()  # (B, M, 3)
        cd_fn += float(foldingnet_chamfer(recon, x).sum())
        cd_sq += float(chamfer_distance(recon, x, batch_reduction="sum"))
        n += x.shape[0]
    model.train(was_training)
    if n == 0:
        raise ValueError("dataset: expected at least one sample, got an empty dataset")
    return {
        "chamfer_foldingnet": cd_fn / n,
        "chamfer_squared": cd_sq / n,
        "num_samples": n,
        "grid_size": grid_size or model.grid_size,
    }


def probe_run(
    run_dir: str | Path,
    C: float | None = None,
    standardize: bool | None = None,
    which: str = "best",
    batch_size: int = 64,
    device: str = "cpu",
    write: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Linear probes on a run's codes: fit on its train split, score on its probe split.

    The codes are the posterior means of the run's ``train_split`` and ``probe_split`` (for
    ShapeNet that is train -> test; for the ModelNet40 sample train -> test), through
    :func:`crfold.probe.svm_probe` (the FoldingNet protocol, ``LinearSVC(random_state=0)``) and
    :func:`crfold.probe.logistic_probe`.

    Args:
        run_dir: a run directory of ``crfold train``.
        C: inverse regularization of both probes; None uses the run's ``probe_C``.
        standardize: standardize codes first; None uses the run's ``probe_standardize``.
        which: "best" or "last" checkpoint.
        batch_size: clouds per forward pass while encoding.
        device: where to encode ("cpu", "cuda", ...).
        write: write the result to ``<run_dir>/probe.json`` (atomically).
        progress: show progress bars.

    Returns:
        ``{"svm": {...}, "logistic": {...}, "checkpoint", "step", "epoch", "train_split",
        "test_split", "latent_dim", "classes", "encode_seconds", "probe_seconds"}`` where the
        probe dicts are those of :func:`crfold.probe.svm_probe`.
    """
    model, cfg, state = load_run_state(run_dir, which, map_location=device)
    if cfg.num_threads is not None:  # the run's CPU thread setting applies to encoding too
        torch.set_num_threads(cfg.num_threads)
    C = cfg.probe_C if C is None else float(C)
    standardize = cfg.probe_standardize if standardize is None else bool(standardize)
    t0 = time.perf_counter()
    train_set = open_split(cfg, cfg.train_split)
    test_set = open_split(cfg, cfg.probe_split)
    z_tr, y_tr = encode_dataset(model, train_set, batch_size, progress)
    z_te, y_te = encode_dataset(model, test_set, batch_size, progress)
    t1 = time.perf_counter()
    result: dict[str, Any] = {
        "svm": svm_probe(z_tr, y_tr, z_te, y_te, C=C, standardize=standardize),
        "logistic": logistic_probe(z_tr, y_tr, z_te, y_te, C=C, standardize=standardize),
        "checkpoint": which,
        "step": int(state.get("step", -1)),
        "epoch": int(state.get("epoch", -1)),
        "data": cfg.data,
        "train_split": cfg.train_split,
        "test_split": cfg.probe_split,
        "latent_dim": cfg.latent_dim,
        "classes": list(train_set.classes),
        "encode_seconds": t1 - t0,
        "probe_seconds": time.perf_counter() - t1,
    }
    if write:
        atomic_write_json(Path(run_dir) / PROBE_FILE, result)
    return result
