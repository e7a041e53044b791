"""Models: the shared VAE interface (common) and the FoldingNet-VAE."""

from .common import Posterior, VAEOutput, standard_normal_log_prob

__all__ = ["Posterior", "VAEOutput", "standard_normal_log_prob"]
