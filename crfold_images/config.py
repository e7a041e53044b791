"""The image-VAE task's config (``task: images``): :class:`ImageConfig` on :class:`crfold.config.RunConfig`.

One mechanism for every task (:mod:`crfold.config`): every key has a default and a help line
(``crfold images train --help`` lists them), a YAML file holds only the keys it changes,
``key=value`` overrides are parsed with the key's type, unknown keys fail, and ``None`` is the
only "not set" value. The engine's keys (epochs, max_steps, batch_size, lr, seed, device, amp,
num_threads, run_dir, ...) come from :class:`~crfold.config.RunConfig`; the defaults are the
paper's §4.1 settings (Adam 1e-4, batch 64, 100 epochs, latent 50, lambda 0.1, S = 5000) on the
embedded ``digits`` set.

``data_root``: a relative path that does not exist from the working directory is looked up under
``$CRFOLD_DATA`` (:func:`crfold.config.resolve_data_path`), when the data is loaded.

>>> cfg = load_config(None, ["mode=cr", "epochs=2"], cls=ImageConfig)
>>> cfg.mode, cfg.epochs, cfg.resolved_lam()
('cr', 2, 0.1)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from crfold.config import RunConfig, check_numbers, load_config, option

__all__ = ["ImageConfig", "describe_image_fields", "load_image_config"]

MODES = ("base", "aug", "cr", "triplet")  # as crfold_images.models.objectives.MODES
OBJECTIVES = ("vae", "iwae")
ARCHS = ("conv", "mlp")
LIKELIHOODS = ("auto", "bernoulli", "gaussian", "logistic")
KL_ESTIMATORS = ("analytic", "mc")
PADDING_MODES = ("zeros", "border", "reflection")
# The values that meant "not set" before None did: a clear error instead of a range error.
_OLD_SENTINELS = {
    "lam": (-1.0, "0.1 * beta"),
    "image_size": (0, "the native size"),
    "val_size": (-1, "the paper's protocol"),
    "max_train": (0, "all training images"),
    "gaussian_sigma": (0.0, "a learned sigma"),
    "eval_max_images": (0, "every test image"),
    "mi_batch_size": (0, "the whole test set"),
    "probe_max_train": (0, "every training image"),
}


@dataclass
class ImageConfig(RunConfig):
    """Everything one image-VAE (VAE, IWAE, beta-VAE) training run needs."""

    TASK: ClassVar[str] = "images"
    TASK_CLASS: ClassVar[str] = "crfold_images.task:ImageTask"
    MODES: ClassVar[tuple[str, ...]] = MODES
    MODE_ALIASES: ClassVar[dict[str, str]] = {}
    # Keys added after run directories were named (crfold_images.experiments.run_key): left out
    # of the name while at this default, so earlier runs keep theirs.
    UNNAMED_DEFAULTS: ClassVar[dict[str, Any]] = {"lam_per_dim": False}
    RESUMABLE: ClassVar[tuple[str, ...]] = (
        *RunConfig.RESUMABLE, "eval_samples", "eval_chunk", "eval_max_images", "eval_batch_size",
        "mi_batch_size", "probe_max_train", "samples_grid",
    )  # fmt: skip

    task: str = option("images", "foldingnet | images | nvae: what is trained")
    # --- engine keys whose defaults differ from (or mean more than) RunConfig's
    epochs: int = option(100, "epochs over the training set")
    batch_size: int = option(64, "images per step (aug/cr/triplet also encode t(x))")
    lr: float = option(1e-4, "Adam learning rate (constant)")
    weight_decay: float = option(0.0, "Adam weight decay")
    seed: int = option(0, "seed of the initialization, shuffling, binarization, augmentation, z")
    # --- data
    dataset: str = option("digits", "digits | mnist | fashion_mnist | mnist5k | omniglot | ...")
    data_root: str | None = option(
        None,
        "folder / file of the dataset (see crfold_images.data); a relative path is also looked "
        "up under $CRFOLD_DATA; None: none (digits is embedded)",
    )
    image_size: int | None = option(
        None, "image side; None: native (28 digits/characters, 32 colour)"
    )
    val_size: int | None = option(
        None, "validation images held out of train (0: none); None: the paper's protocol"
    )
    max_train: int | None = option(
        None, "use at most this many training images (seeded subset); None: all"
    )
    # --- model
    objective: str = option("vae", "vae (beta-VAE when beta != 1) | iwae")
    mode: str = option("base", "base | aug (+Aug, lam = 0) | cr | triplet (Table 6)")
    arch: str = option("conv", "conv (WAE-style, the paper's) | mlp")
    width: float = option(1.0, "channel multiplier of the nets (1.0: 128/256/512/1024)")
    latent_dim: int = option(50, "latent dimensions L")
    likelihood: str = option("auto", "auto (dataset's) | bernoulli | gaussian | logistic")
    gaussian_sigma: float | None = option(
        None, "fixed sigma of the gaussian likelihood; None: learned"
    )
    # --- objective
    beta: float = option(
        1.0, "weight of the KL to the prior (beta-VAE); not of the consistency term"
    )
    lam: float | None = option(
        None, "consistency weight lambda; None: 0.1 * beta (the paper's choice)"
    )
    lam_per_dim: bool = option(
        False,
        "weigh lambda * R against the objective per data dimension: the per-image loss is "
        "D * [(L(x) + L(t(x))) / D + lambda * R], i.e. lambda * D per image, D = C * H * W; "
        "false: lambda * R against nats per image (the paper's Eq. 3)",
    )
    iwae_k: int = option(5, "importance samples k of the IWAE objective")
    kl_estimator: str = option("analytic", "KL to the prior: analytic | mc (single sample)")
    triplet_margin: float = option(1.0, "margin of the triplet loss (mode triplet)")
    triplet_weight: float = option(1.0, "weight of the triplet loss (mode triplet)")
    # --- augmentation t(x) (the paper: +-2 px, +-15 deg, x[0.9, 1.1])
    augment: str = option("all", "all | comma-separated subset of rotate,translate,scale")
    translate_px: float = option(2.0, "translation range in pixels, uniform in [-t, t]")
    rotate_deg: float = option(15.0, "rotation range in degrees, uniform in [-d, d]")
    scale_min: float = option(0.9, "lower scale factor")
    scale_max: float = option(1.1, "upper scale factor")
    padding_mode: str = option(
        "zeros", "pixels brought in by the warp: zeros | border | reflection"
    )
    # --- evaluation (crfold.metrics), after training: eval.json
    eval_samples: int = option(5000, "importance samples S of the IW-NLL")
    eval_chunk: int = option(500, "IW samples decoded per call")
    eval_max_images: int | None = option(
        None, "IW-NLL on a fixed random subset of N test images; None: all"
    )
    eval_batch_size: int = option(256, "images per encoding batch (and IW-NLL batch)")
    mi_batch_size: int | None = option(
        None, "minibatch B of the MI estimator (the estimate is <= log B); None: the whole test set"
    )
    probe_max_train: int | None = option(
        10000, "training images (fixed random subset) of the probe; None: all"
    )
    samples_grid: int = option(8, "side of the sample / reconstruction grids saved as PNG")

    def validate(self) -> None:
        """Checks values beyond their types; ValueError naming the key."""
        for key, (old, meaning) in _OLD_SENTINELS.items():
            value = getattr(self, key)
            if value is not None and value == old:
                raise ValueError(
                    f"{key}: {value!r} no longer means {meaning}; use none (None is the only "
                    "'not set' value)"
                )
        super().validate()
        choices = {
            "objective": OBJECTIVES,
            "arch": ARCHS,
            "likelihood": LIKELIHOODS,
            "kl_estimator": KL_ESTIMATORS,
            "padding_mode": PADDING_MODES,
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key}: expected one of {allowed}, got {getattr(self, key)!r}")
        check_numbers(
            self,
            positive_ints=("latent_dim", "iwae_k", "eval_samples", "eval_chunk",
                           "eval_batch_size", "samples_grid"),
            optional_positive_ints=("image_size", "max_train", "eval_max_images",
                                    "mi_batch_size", "probe_max_train"),
            positive=("width", "scale_min", "scale_max"),
            nonneg=("beta", "triplet_margin", "triplet_weight", "translate_px", "rotate_deg"),
            optional_positive=("gaussian_sigma",),
        )  # fmt: skip
        if self.lam is not None and not (math.isfinite(self.lam) and self.lam >= 0):
            raise ValueError(f"lam: expected None or a finite number >= 0, got {self.lam}")
        if self.val_size is not None and self.val_size < 0:
            raise ValueError(f"val_size: expected None or an int >= 0, got {self.val_size}")
        if self.scale_min > self.scale_max:
            raise ValueError(f"scale_min: must be <= scale_max, got {self.scale_min}")
        if self.objective == "iwae" and self.beta != 1.0:
            raise ValueError(f"beta: must be 1 for the iwae objective, got {self.beta}")

    def resolved_lam(self) -> float:
        """lambda: ``lam`` when set, else 0.1 * beta (0.1 for the VAE and the IWAE)."""
        return self.lam if self.lam is not None else 0.1 * self.beta

    def effective_lam(self, data_dims: int) -> float:
        """The weight of R in the per-image loss: :meth:`resolved_lam`, times ``data_dims``
        (D = C * H * W) when ``lam_per_dim``.

        With ``lam_per_dim`` the loss is ``D * [(L(x) + L(t(x))) / D + lambda * R]``: lambda
        weighs R (nats) against the negative ELBOs in nats per data dimension, while beta and the
        ELBOs keep their meaning. Scaling the whole loss by D changes no minimizer, and Adam's
        steps only through its epsilon.

        Raises:
            ValueError: ``data_dims`` < 1.
        """
        if data_dims < 1:
            raise ValueError(f"data_dims: expected an int >= 1, got {data_dims}")
        return self.resolved_lam() * (data_dims if self.lam_per_dim else 1)


def load_image_config(
    yaml_path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: ImageConfig | dict[str, Any] | None = None,
) -> ImageConfig:
    """Deprecated: ``crfold.config.load_config(yaml_path, overrides, base, cls=ImageConfig)``."""
    warnings.warn(
        "load_image_config is deprecated; use crfold.config.load_config(..., cls=ImageConfig)",
        DeprecationWarning,
        stacklevel=2,
    )
    return load_config(yaml_path, overrides, base=base, cls=ImageConfig)


def describe_image_fields() -> str:
    """Deprecated: ``ImageConfig.describe()``."""
    warnings.warn(
        "describe_image_fields is deprecated; use ImageConfig.describe()",
        DeprecationWarning,
        stacklevel=2,
    )
    return ImageConfig.describe()
