"""Models: the shared VAE interface (common) and the FoldingNet-VAE."""

from .common import Posterior, VAEOutput, standard_normal_log_prob
from .foldingnet import (
    AE_LOGVAR,
    DEFAULT_OBS_SCALE,
    MODES,
    FoldingNetDecoder,
    FoldingNetEncoder,
    FoldingNetVAE,
    foldingnet_chamfer,
    graph_max_pool,
    knn_excluding_self,
    local_covariance,
    reconstruction_nll,
)

__all__ = [
    "AE_LOGVAR",
    "DEFAULT_OBS_SCALE",
    "MODES",
    "FoldingNetDecoder",
    "FoldingNetEncoder",
    "FoldingNetVAE",
    "Posterior",
    "VAEOutput",
    "foldingnet_chamfer",
    "graph_max_pool",
    "knn_excluding_self",
    "local_covariance",
    "reconstruction_nll",
    "standard_normal_log_prob",
]
