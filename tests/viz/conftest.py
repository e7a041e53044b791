"""A tiny run directory (best.pt / last.pt in the format of ``crfold train``) for the viz tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crfold.config import TrainConfig
from crfold.io import save_checkpoint
from crfold.train.foldingnet import build_model

# An untrained model is enough to draw: 20 shapes per split, 8-dim codes, an 8x8 grid.
VIZ_RUN = dict(
    data="synthetic",
    synthetic_train_shapes=20,
    synthetic_test_shapes=20,
    num_points=64,
    latent_dim=8,
    k=8,
    grid_size=8,
    mode="base",
    val_split="val",  # the synthetic data's own validation split (20 shapes)
)


def write_tiny_run(run: Path, seed: int = 0) -> Path:
    """An untrained (seeded) FoldingNet-VAE saved as a run directory: best.pt, last.pt, config."""
    cfg = TrainConfig(**VIZ_RUN)
    torch.manual_seed(seed)
    model = build_model(cfg)
    run.mkdir(parents=True, exist_ok=True)
    cfg.save(run / "config.yaml")
    for name in ("best", "last"):
        state = {"config": cfg.to_dict(), "model": model.state_dict(), "step": 0}
        save_checkpoint(run / f"{name}.pt", state)
    return run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    return write_tiny_run(tmp_path_factory.mktemp("viz") / "run")


@pytest.fixture(scope="session")
def tiny_source(tiny_run):
    from viz.source import load_source

    return load_source(tiny_run)
