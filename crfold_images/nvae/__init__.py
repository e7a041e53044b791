"""NVAE and CR-NVAE (Vahdat & Kautz 2020; the CR-VAE paper's Tables 7-8): the ``nvae`` task.

* :mod:`.model` - the hierarchical NVAE (:class:`NVAE`, :class:`NVAEArch`); blocks in
  :mod:`.cells`, output likelihoods in :mod:`.likelihood`.
* :mod:`.objective` - KL warm-up and balancing, the NVAE / NVAE + Aug / CR-NVAE losses.
* :mod:`.evaluation` - IW-NLL (nats, bits/dim), active units, logistic probe.
* :mod:`.data` - the image splits (MNIST, Fashion-MNIST, CIFAR-10, CelebA 64, synthetic).
* :mod:`.config` - :class:`NVAEConfig` (``task: nvae``); :mod:`.task` - :class:`NVAETask`, the
  run engine's task; :mod:`.cli` - ``crfold nvae train``.
"""

from crfold_images.nvae.config import NVAEConfig, load_nvae_config
from crfold_images.nvae.model import NVAE, NVAEArch, NVAEOutput
from crfold_images.nvae.objective import nvae_objective

__all__ = ["NVAE", "NVAEArch", "NVAEConfig", "NVAEOutput", "load_nvae_config", "nvae_objective"]
