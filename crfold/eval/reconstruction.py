"""Reconstruction quality of a FoldingNet(-VAE): the Chamfer of decode(mu(x)) against x.

Two conventions (docs/design.md#chamfer): ``chamfer_foldingnet`` is FoldingNet's reporting metric
(``sqrt(d^2 + 1e-6)``, mean over points, max of the two directions; the ~0.03 scale of published
tables); ``chamfer_squared`` is the squared L2 distance, mean over points, sum of the two
directions (PyTorch3D's ``chamfer_distance`` default).
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from ..models.foldingnet import FoldingNetVAE, foldingnet_chamfer
from ..ops import chamfer_distance
from .encode import loader, model_device

__all__ = ["reconstruction_metrics"]


@torch.no_grad()
def reconstruction_metrics(
    model: FoldingNetVAE,
    dataset: Dataset,
    batch_size: int = 32,
    grid_size: int | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Reconstruction Chamfer of decode(mu(x)) against x, averaged over the set.

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
    device = model_device(model)
    cd_fn, cd_sq, n = 0.0, 0.0, 0
    for x, _ in tqdm(loader(dataset, batch_size), desc="reconstruct", disable=not progress):
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
