"""One image-VAE run by directory: a thin layer over the run engine (:func:`crfold.train.train`).

The training loop, checkpoints, resume, run log and signals are the engine's; the task
(model, data, loss, validation, evaluation) is :class:`crfold_images.task.ImageTask`, whose
builders are re-exported here under their old names. A run directory has the engine's layout::

    config.yaml  last.pt  best.pt  metrics.jsonl  tensorboard/  summary.json  eval.json
    samples.png  recon.png

:func:`train_run` on a finished directory returns its ``eval.json`` without training; on an
unfinished one (or with more ``epochs``, a key that may change on resume) it resumes from
``last.pt``, drawing exactly what an uninterrupted run would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from crfold.config import load_config
from crfold.io import read_yaml
from crfold.train import CONFIG_FILE, EVAL_FILE, SUMMARY_FILE
from crfold.train import train as engine_train
from crfold_images.config import ImageConfig
from crfold_images.task import (
    ImageTask,
    build_model,
    build_transform,
    likelihood_of,
    load_splits,
    loss_config,
)

__all__ = [
    "RESULT_FILE",
    "ImageTask",
    "build_model",
    "build_transform",
    "finished_result",
    "likelihood_of",
    "load_splits",
    "loss_config",
    "train_run",
]

RESULT_FILE = EVAL_FILE  # "eval.json": the evaluation of a finished run


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def finished_result(cfg: ImageConfig, run_dir: str | Path) -> dict[str, Any] | None:
    """The ``eval.json`` of ``run_dir`` if it holds this run, trained as far as ``cfg`` asks.

    None when the directory holds no finished, evaluated run of ``cfg``'s run-defining keys
    (then :func:`train_run` trains, resumes, or - for other run-defining keys - refuses).

    Raises:
        ValueError: the run already trained more epochs than ``cfg.epochs``.
    """
    run_dir = Path(run_dir)
    summary = _read_json(run_dir / SUMMARY_FILE)
    result = _read_json(run_dir / RESULT_FILE)
    saved = run_dir / CONFIG_FILE
    if summary is None or result is None or not saved.is_file() or summary.get("status") is None:
        return None
    if summary.get("task") != cfg.TASK or cfg.run_defining_changes(read_yaml(saved) or {}):
        return None
    if summary["epoch"] > cfg.epochs:
        raise ValueError(
            f"epochs: {run_dir} already trained {summary['epoch']} epochs, more than {cfg.epochs}"
        )
    if result.get("step") != summary.get("step") or summary.get("status") == "interrupted":
        return None
    done = summary["epoch"] >= cfg.epochs or (
        cfg.max_steps is not None and summary["step"] >= cfg.max_steps
    )
    return result if done else None


def train_run(cfg: ImageConfig, run_dir: str | Path, quiet: bool = False) -> dict[str, Any] | None:
    """Train (or resume) one run in ``run_dir`` with the engine and return its evaluation.

    Args:
        cfg: the resolved config (its ``run_dir`` is replaced by ``run_dir``).
        run_dir: the run directory (created; resumed from ``last.pt`` when present).
        quiet: no progress bars or per-epoch lines.

    Returns:
        The evaluation (``<run_dir>/eval.json``): the metrics of
        :func:`crfold_images.metrics.evaluate_model` plus ``epochs``, ``steps``, ``n_train``,
        ``likelihood``, ``train_seconds``, ``eval_seconds``; or None if a signal stopped training
        (``last.pt`` holds the state to resume from).

    Raises:
        ValueError: the directory holds a run of other run-defining keys (named), or of more
            epochs than ``cfg.epochs``.
    """
    if not isinstance(cfg, ImageConfig):
        cfg = load_config(base=cfg, cls=ImageConfig)
    run_dir = Path(run_dir)
    cfg = cfg.replace(run_dir=str(run_dir))
    result = finished_result(cfg, run_dir)
    if result is not None:
        return result
    threads = torch.get_num_threads()
    try:
        summary = engine_train(cfg, resume=(run_dir / "last.pt").is_file(), quiet=quiet)
    finally:
        torch.set_num_threads(threads)  # the engine sets num_threads process-wide
    if summary["status"] == "interrupted":
        return None
    return _read_json(run_dir / RESULT_FILE)
