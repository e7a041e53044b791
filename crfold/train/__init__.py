"""The run engine (:mod:`.engine`), its runtime (:mod:`.runtime`) and the FoldingNet task.

>>> from crfold.train import train
>>> from crfold.config import load_config
>>> summary = train(load_config("configs/demo.yaml", ["epochs=1"]))   # doctest: +SKIP

The image tasks live beside their models: ``crfold_images.task`` (VAE, IWAE, beta-VAE) and
``crfold_images.nvae.task`` (NVAE); ``task=`` in a config picks one.
"""

from .engine import (
    CHECKPOINT_FORMAT,
    CONFIG_FILE,
    EVAL_FILE,
    SUMMARY_FILE,
    Task,
    Trainer,
    format_summary,
    task_of,
    train,
)


def default_run_dir(cfg) -> str:
    """``runs/<YYYYmmdd-HHMMSS>-<task>-<mode>`` (kept for callers of the old name)."""
    return cfg.default_run_dir()


__all__ = [
    "CHECKPOINT_FORMAT",
    "CONFIG_FILE",
    "EVAL_FILE",
    "SUMMARY_FILE",
    "Task",
    "Trainer",
    "default_run_dir",
    "format_summary",
    "task_of",
    "train",
]
