"""One image-VAE run by directory: a thin layer over the run engine (:func:`crfold.train.train`).

The training loop, checkpoints, resume, run log and signals are the engine's; the task
(model, data, loss, validation, evaluation) is :class:`crfold_images.task.ImageTask`, whose
builders are re-exported here under their old names. A run directory has the engine's layout::

    config.yaml  last.pt  best.pt  metrics.jsonl  tensorboard/  summary.json  eval.json
    samples.png  recon.png

:func:`train_run` trains one run in this process (the Python API; the tables train theirs as
child processes through :mod:`crfold.experiments.runner`). On a finished directory it returns
its ``eval.json`` without training; on an unfinished one (or with more ``epochs``, a key that may
change on resume) it resumes from ``last.pt``, drawing exactly what an uninterrupted run would.
"Finished" is the runner's (:func:`crfold.experiments.runner.train_state` with
:data:`RUN_IGNORE` and :data:`RUN_EXTEND`, and a current ``eval.json``), so ``train_run`` and
``crfold images tables`` agree on which runs need training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from crfold.config import load_config
from crfold.experiments.runner import RUNTIME_KEYS, EngineEval, PlannedRun, train_state
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
    "RUN_EXTEND",
    "RUN_IGNORE",
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
# Keys a planned run may grow past a finished one's: the run is continued (``--resume``).
RUN_EXTEND = ("epochs", "max_steps")
# Keys in which a saved run may differ from the planned one and still be the same run: the
# runtime keys and the evaluation settings (ImageConfig.RESUMABLE), and data_root (the same data
# moved elsewhere; the engine still refuses to resume a run from another data_root).
RUN_IGNORE = tuple(
    k
    for k in dict.fromkeys([*RUNTIME_KEYS, *ImageConfig.RESUMABLE, "data_root"])
    if k not in RUN_EXTEND
)


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
        ValueError: the run already trained more epochs (or max_steps) than ``cfg`` plans.
    """
    run_dir = Path(run_dir)
    saved = run_dir / CONFIG_FILE
    if not saved.is_file() or cfg.run_defining_changes(read_yaml(saved) or {}):
        return None  # no run, or another one: the engine refuses to resume it, naming the keys
    summary = _read_json(run_dir / SUMMARY_FILE) or {}
    if isinstance(summary.get("epoch"), int) and summary["epoch"] > cfg.epochs:
        raise ValueError(
            f"epochs: {run_dir} already trained {summary['epoch']} epochs, more than {cfg.epochs}"
        )
    state = train_state(PlannedRun(run_dir, cfg), RUN_IGNORE, RUN_EXTEND)
    if state != "done" or not EngineEval().is_current(run_dir, cfg):
        return None
    return _read_json(run_dir / RESULT_FILE)


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
