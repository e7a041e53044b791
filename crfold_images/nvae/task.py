"""The NVAE task: NVAE, NVAE + Aug and CR-NVAE on the run engine (:mod:`crfold.train`).

    crfold nvae train --config configs/nvae_tiny_cpu.yaml mode=cr      # = crfold train task=nvae

Per step, with a batch of grey / colour images x in [0, 1] (one seeded shuffle per epoch,
``n // batch_size`` steps per epoch):

* the learning rate: a linear warm-up over ``lr_warmup_epochs`` epochs, then a cosine decay to
  ``lr_min`` (:func:`learning_rate`), Adamax (``adamax_eps``, ``weight_decay``);
* the KL coefficient beta_t: :func:`~crfold_images.nvae.objective.kl_warmup_coefficient`, with
  KL balancing during the warm-up;
* Bernoulli likelihood: x is re-binarized at every step (dynamic binarization); t(x) (modes
  ``aug`` and ``cr``, :func:`crfold_images.transforms.paper_augmentation`) is drawn on the grey
  or colour image, then binarized;
* the loss: :func:`~crfold_images.nvae.objective.nvae_objective` (``base``: x alone; ``aug``: x
  and t(x) with lam = 0, the consistency term logged but not weighted; ``cr``: with the step's
  lambda, :meth:`NVAETask.consistency_weight`: ``lam``, times C * H * W with ``lam_per_dim``,
  times beta_t with ``lam_warmup``; logged as ``lam``) under autocast to ``amp`` (latent
  parameters, KLs and log-likelihoods stay float32), plus ``spectral_lambda`` * (spectral + BN
  regularisation), outside autocast.

Both schedules span the steps of ``epochs`` epochs (``max_steps`` only stops the run), so a run
stopped early and resumed trains what an uninterrupted one does. Every random draw of a step
(binarization, t(x), z) comes from the engine's per-step generator, so the task keeps no random
state. The engine owns the optimizer step, precision, checkpoints (``last.pt``), resume, the log
and the run directory (``config.yaml``, ``last.pt``, ``metrics.jsonl``, ``tensorboard/``,
``summary.json``, ``eval.json``).

NVAE's data sets have a train and a test split only: there is no validation and no ``best.pt``
(nothing may be selected on the test split). After training, :meth:`NVAETask.evaluate` scores the
last model on the test split (IW-NLL in nats and bits/dim, -ELBO, rate, active units, logistic
probe, and the ``flags`` / ``caveats`` of :mod:`crfold_images.caveats`) into ``eval.json``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from crfold.amp import autocast
from crfold.train.engine import Task
from crfold.train.runtime import DistInfo, derive_seed
from crfold_images.caveats import caveats, flags
from crfold_images.nvae.cells import bn_regularization, spectral_regularization
from crfold_images.nvae.config import NVAEConfig
from crfold_images.nvae.data import ImageData, load_images
from crfold_images.nvae.evaluation import nvae_evaluate
from crfold_images.nvae.model import NVAE
from crfold_images.nvae.objective import kl_warmup_coefficient, nvae_objective
from crfold_images.report import format_caveats
from crfold_images.transforms import paper_augmentation

__all__ = ["NVAETask", "learning_rate"]

_SHUFFLE_TAG = 0x5F1E  # separates the data-order seeds from the engine's other derived seeds


def learning_rate(step: int, total: int, warmup: int, lr: float, lr_min: float) -> float:
    """Linear warm-up from lr/warmup to lr over ``warmup`` steps, then cosine down to lr_min."""
    if step < warmup:
        return lr * (step + 1) / warmup
    span = max(total - warmup, 1)
    return lr_min + 0.5 * (lr - lr_min) * (
        1.0 + math.cos(math.pi * min(step - warmup, span) / span)
    )


class NVAETask(Task):
    """(CR-)NVAE (``cfg.mode``: base | aug | cr) on an image data set.

    Args:
        cfg: the run's :class:`~crfold_images.nvae.config.NVAEConfig`.
        device, info: from the engine.
        data: preloaded :class:`~crfold_images.nvae.data.ImageData` (tests); None loads
            ``cfg.dataset`` (:func:`~crfold_images.nvae.data.load_images`).

    :meth:`validate` returns {}: the data sets have train and test splits only, and nothing may
    be selected on the test split, so the run has no validation and no ``best.pt``; the test
    split is used by :meth:`evaluate` once training is over.
    """

    supports_ddp = False  # the loss calls the model directly, not the engine's DDP wrapper
    progress = {"loss": "loss", "elbo": "elbo", "consistency": "cons"}

    def __init__(
        self,
        cfg: NVAEConfig,
        device: torch.device,
        info: DistInfo,
        data: ImageData | None = None,
    ):
        super().__init__(cfg, device, info)
        self.data = data if data is not None else load_images(cfg)
        n = self.data.train_x.shape[0]
        self.batch = min(cfg.batch_size, n)
        self.steps_per_epoch = n // self.batch
        self.schedule_steps = cfg.epochs * self.steps_per_epoch
        self.lr_warmup = int(cfg.lr_warmup_epochs * self.steps_per_epoch)
        self.paired = cfg.mode in ("aug", "cr")
        self.aug = paper_augmentation(cfg.aug) if self.paired else None
        self.data_dims = cfg.in_channels * cfg.data_size * cfg.data_size
        lam = cfg.lam * (self.data_dims if cfg.lam_per_dim else 1)
        self.lam = lam if cfg.mode == "cr" else 0.0  # aug: CR with lam = 0

    # ------------------------------------------------------------------ building
    def build_model(self) -> NVAE:
        return NVAE(self.cfg.arch())

    def build_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        cfg = self.cfg
        return torch.optim.Adamax(
            model.parameters(), lr=cfg.lr, eps=cfg.adamax_eps, weight_decay=cfg.weight_decay
        )

    # ------------------------------------------------------------------ data
    def batches_per_epoch(self) -> int:
        return self.steps_per_epoch

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """(N,) the train images' order in ``epoch``: one shuffle seeded by (seed, epoch)."""
        g = torch.Generator().manual_seed(derive_seed(self.cfg.seed, epoch, _SHUFFLE_TAG))
        return torch.randperm(self.data.train_x.shape[0], generator=g)

    def train_batches(self, epoch: int, skip: int) -> Iterator[torch.Tensor]:
        """(B, C, H, W) float train images in [0, 1], batches ``skip`` .. of ``epoch``."""
        perm = self.epoch_order(epoch)
        for i in range(skip, self.steps_per_epoch):
            idx = perm[i * self.batch : (i + 1) * self.batch]
            yield self.data.train_x[idx].to(self.device).float() / 255.0

    # ------------------------------------------------------------------ one step
    def learning_rate(self, step: int, total_steps: int) -> float:
        """Warm-up then cosine over the steps of ``epochs`` (not ``total_steps``: a
        ``max_steps`` stop, which may change on resume, does not re-plan the schedule)."""
        cfg = self.cfg
        return learning_rate(step, self.schedule_steps, self.lr_warmup, cfg.lr, cfg.lr_min)

    def kl_coefficient(self, step: int) -> float:
        """beta_t of ``step``, warmed up over ``kl_warmup_fraction`` of the epochs' steps."""
        cfg = self.cfg
        return kl_warmup_coefficient(
            step, max(self.schedule_steps, 1), cfg.kl_warmup_fraction, cfg.kl_min_coeff
        )

    def consistency_weight(self, kl_coeff: float) -> float:
        """lambda of a step whose KL coefficient is ``kl_coeff``: ``lam`` (times D with
        ``lam_per_dim``; 0 but in mode cr), times ``kl_coeff`` with ``lam_warmup``."""
        return self.lam * (kl_coeff if self.cfg.lam_warmup else 1.0)

    def observe(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Binarize (Bernoulli likelihood, a fresh draw) or pass [0, 1] images through."""
        if self.cfg.likelihood == "bernoulli":
            return torch.bernoulli(x, generator=generator)
        return x

    def loss(self, model, forward, batch, step, total_steps, generator, amp):
        """The terms of one batch: those of ``nvae_objective`` (``recon``, ``kl``, ``kl_raw``,
        ``elbo``; ``recon_aug``, ``kl_aug``, ``consistency`` for aug and cr), ``objective`` (its
        loss), ``reg`` (spectral + BN), ``kl_coeff``, ``lam`` (the step's consistency weight,
        aug and cr) and ``loss`` = objective + spectral_lambda * reg."""
        cfg = self.cfg
        kl_coeff = self.kl_coefficient(step)
        lam = self.consistency_weight(kl_coeff)
        x = self.observe(batch, generator)
        x_aug = None
        if self.aug is not None:
            x_aug = self.observe(self.aug(batch, generator=generator), generator)
        with autocast(self.device, amp):  # latents, KLs, log p(x|z) stay float32
            terms, _ = nvae_objective(
                model, x, kl_coeff=kl_coeff, x_aug=x_aug, lam=lam, cr_path=cfg.cr_path,
                balance=cfg.kl_balance, generator=generator,
            )  # fmt: skip
        reg = spectral_regularization(model, cfg.power_iterations) + bn_regularization(model)
        terms["objective"] = terms["loss"]
        terms["loss"] = terms["loss"] + cfg.spectral_lambda * reg
        terms["reg"] = reg.detach()
        terms["kl_coeff"] = torch.tensor(kl_coeff)
        if self.paired:
            terms["lam"] = torch.tensor(lam)
        return terms

    # ------------------------------------------------------------------ evaluation
    def validate(self, model: torch.nn.Module, amp: torch.dtype | None) -> dict[str, float]:
        """None: train and test splits only, and nothing is selected on test (no best.pt)."""
        return {}

    def evaluate(self, model: torch.nn.Module, run_dir: Path) -> dict[str, Any]:
        """IW-NLL (nats, bits/dim), -ELBO and rate, active units and the probe on the test
        split, float32, with their ``flags`` and ``caveats`` (:mod:`crfold_images.caveats`,
        printed unless quiet).

        The test images are binarized once with ``data_seed`` (Bernoulli); the probe (when
        ``probe`` and every train image has a label: CelebA has none) is fit on the train
        split's features. The importance samples (then the -ELBO / rate draws) come from a
        generator seeded ``seed + 1``. ``lam_effective`` is the consistency weight after the
        warm-up (``lam``, times D with ``lam_per_dim``; 0 but in mode cr).
        """
        cfg, data = self.cfg, self.data
        test = data.observed("test", cfg.likelihood, cfg.data_seed)
        bs = cfg.eval_batch_size

        def batches(images: torch.Tensor):
            return (images[i : i + bs].to(self.device) for i in range(0, images.shape[0], bs))

        probe = None
        if cfg.probe and bool((data.train_y >= 0).all()):
            train = data.observed("train", cfg.likelihood, cfg.data_seed)
            probe = (lambda: batches(train), data.train_y, data.test_y)
        g = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        result = nvae_evaluate(
            model,
            lambda: batches(test),
            num_samples=cfg.iw_samples,
            chunk_size=cfg.iw_chunk,
            probe=probe,
            features=cfg.probe_features,
            probe_C=cfg.probe_C,
            generator=g,
            iw_batches=lambda: batches(test[: cfg.iw_images]),
        )
        result.update(
            iw_images=min(cfg.iw_images or test.shape[0], test.shape[0]),
            mode=cfg.mode, dataset=cfg.dataset, n_test=int(test.shape[0]),
            likelihood=cfg.likelihood, lam_effective=self.lam,
        )  # fmt: skip
        if probe is not None:
            result["num_classes"] = int(data.train_y.max()) + 1
        result.update(flags=flags(result), caveats=caveats(result))
        text = format_caveats(result)
        if text and not self.quiet:
            print(text, flush=True)
        return result
