"""Image VAE models: WAE-style conv / MLP nets, pixel likelihoods and the objectives."""

from crfold_images.models.conv import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from crfold_images.models.likelihoods import Bernoulli, DiscretizedLogistic, Gaussian, binarize
from crfold_images.models.objectives import LossConfig, image_vae_loss
from crfold_images.models.vae import ImageVAE
from crfold_images.nvae.model import NVAE, NVAEArch, NVAEOutput  # NVAE: crfold_images.nvae
from crfold_images.nvae.objective import nvae_objective

__all__ = [
    "Bernoulli",
    "ConvDecoder",
    "ConvEncoder",
    "DiscretizedLogistic",
    "Gaussian",
    "ImageVAE",
    "LossConfig",
    "MLPDecoder",
    "MLPEncoder",
    "NVAE",
    "NVAEArch",
    "NVAEOutput",
    "binarize",
    "image_vae_loss",
    "nvae_objective",
]
