"""The image-VAE run configuration: a flat typed dataclass, YAML override files, ``key=value``.

The pattern of :mod:`crfold.config` (and its value parser): every field has a default and a
help line; a YAML file holds only the keys it changes; ``key=value`` overrides are parsed with the
field's type and unknown keys fail; the resolved config is saved in every run directory
(``config.json``) and inside every checkpoint as a plain dict. The defaults are the paper's §4.1
settings (Adam 1e-4, batch 64, 100 epochs, latent 50, lambda 0.1, S = 5000) on the embedded
``digits`` set.

>>> cfg = load_image_config(None, ["mode=cr", "epochs=2"])
>>> cfg.mode, cfg.epochs, cfg.resolved_lam()
('cr', 2, 0.1)
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from crfold.amp import AMP_CHOICES
from crfold.config import (  # the shared typed override parser
    apply_overrides,
    parse_override,
)

__all__ = ["ImageConfig", "describe_image_fields", "load_image_config"]


def _f(default: Any, help: str) -> Any:  # noqa: A002 - mirrors argparse's name
    return field(default=default, metadata={"help": help})


@dataclass
class ImageConfig:
    """Everything one image-VAE training run needs."""

    # --- data
    dataset: str = _f("digits", "digits | mnist | fashion_mnist | mnist5k | omniglot | ...")
    data_root: str = _f("", "folder / file of the dataset (see crfold_images.data)")
    image_size: int = _f(0, "image side; 0: native (28 digits/characters, 32 colour)")
    val_size: int = _f(-1, "validation images held out of train; -1: the paper's protocol")
    max_train: int = _f(0, "use at most this many training images (seeded subset); 0: all")
    # --- model
    objective: str = _f("vae", "vae (beta-VAE when beta != 1) | iwae")
    mode: str = _f("base", "base | aug (+Aug, lam = 0) | cr | triplet (Table 6)")
    arch: str = _f("conv", "conv (WAE-style, the paper's) | mlp")
    width: float = _f(1.0, "channel multiplier of the nets (1.0: 128/256/512/1024)")
    latent_dim: int = _f(50, "latent dimensions L")
    likelihood: str = _f("auto", "auto (dataset's) | bernoulli | gaussian | logistic")
    gaussian_sigma: float = _f(0.0, "fixed sigma of the gaussian likelihood; 0: learned")
    # --- objective
    beta: float = _f(1.0, "weight of the KL to the prior (beta-VAE); not of the consistency term")
    lam: float = _f(-1.0, "consistency weight lambda; < 0: 0.1 * beta (the paper's choice)")
    iwae_k: int = _f(5, "importance samples k of the IWAE objective")
    kl_estimator: str = _f("analytic", "KL to the prior: analytic | mc (single sample)")
    triplet_margin: float = _f(1.0, "margin of the triplet loss (mode triplet)")
    triplet_weight: float = _f(1.0, "weight of the triplet loss (mode triplet)")
    # --- augmentation t(x) (the paper: +-2 px, +-15 deg, x[0.9, 1.1])
    augment: str = _f("all", "all | comma-separated subset of rotate,translate,scale")
    translate_px: float = _f(2.0, "translation range in pixels, uniform in [-t, t]")
    rotate_deg: float = _f(15.0, "rotation range in degrees, uniform in [-d, d]")
    scale_min: float = _f(0.9, "lower scale factor")
    scale_max: float = _f(1.1, "upper scale factor")
    padding_mode: str = _f("zeros", "pixels brought in by the warp: zeros | border | reflection")
    # --- optimization
    lr: float = _f(1e-4, "Adam learning rate")
    batch_size: int = _f(64, "images per step (aug/cr/triplet also encode t(x))")
    epochs: int = _f(100, "epochs over the training set")
    seed: int = _f(0, "seed of the initialization, shuffling, binarization, augmentation, z")
    device: str = _f("auto", "auto | cpu | cuda | cuda:N")
    threads: int = _f(0, "torch and BLAS/OpenMP threads of a run; 0: the libraries' defaults")
    amp: str = _f(  # auto: bf16 steps 1.5x faster on a Zen 4 CPU, -ELBO within 3 % (results/)
        "auto",
        "training autocast (crfold.amp): auto (bf16 on CUDA and on CPUs with native bf16, else "
        "fp32) | bf16 | fp16 (CUDA only, with a grad scaler) | none; evaluation is float32",
    )
    # --- evaluation (crfold.metrics)
    eval_samples: int = _f(5000, "importance samples S of the IW-NLL")
    eval_chunk: int = _f(500, "IW samples decoded per call")
    eval_max_images: int = _f(0, "IW-NLL on a fixed random subset of N test images; 0: all")
    eval_batch_size: int = _f(256, "images per encoding batch (and IW-NLL batch)")
    mi_batch_size: int = _f(0, "minibatch B of the MI estimator; 0: the whole test set")
    probe_max_train: int = _f(10000, "training images (fixed random subset) of the probe; 0: all")
    samples_grid: int = _f(8, "side of the sample / reconstruction grids saved as PNG")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Checks values beyond their types; ValueError naming the key."""
        choices = {
            "objective": ("vae", "iwae"),
            "mode": ("base", "aug", "cr", "triplet"),
            "arch": ("conv", "mlp"),
            "likelihood": ("auto", "bernoulli", "gaussian", "logistic"),
            "kl_estimator": ("analytic", "mc"),
            "padding_mode": ("zeros", "border", "reflection"),
            "amp": AMP_CHOICES,
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key}: expected one of {allowed}, got {getattr(self, key)!r}")
        for key in ("latent_dim", "iwae_k", "batch_size", "epochs", "eval_samples", "eval_chunk"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: expected an int >= 1, got {getattr(self, key)}")
        for key in ("eval_batch_size", "samples_grid"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: expected an int >= 1, got {getattr(self, key)}")
        for key in ("image_size", "max_train", "seed", "threads", "eval_max_images"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key}: expected an int >= 0, got {getattr(self, key)}")
        for key in ("mi_batch_size", "probe_max_train"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key}: expected an int >= 0, got {getattr(self, key)}")
        for key in ("width", "lr", "scale_min", "scale_max"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) > 0):
                raise ValueError(f"{key}: expected a finite number > 0, got {getattr(self, key)}")
        for key in ("beta", "triplet_margin", "triplet_weight", "translate_px", "rotate_deg"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) >= 0):
                raise ValueError(f"{key}: expected a finite number >= 0, got {getattr(self, key)}")
        if self.scale_min > self.scale_max:
            raise ValueError(f"scale_min: must be <= scale_max, got {self.scale_min}")
        if self.objective == "iwae" and self.beta != 1.0:
            raise ValueError(f"beta: must be 1 for the iwae objective, got {self.beta}")
        if self.val_size < -1:
            raise ValueError(f"val_size: expected -1 or an int >= 0, got {self.val_size}")

    def resolved_lam(self) -> float:
        """lambda: ``lam`` when >= 0, else 0.1 * beta (0.1 for the VAE and the IWAE)."""
        return self.lam if self.lam >= 0 else 0.1 * self.beta

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON, YAML and weights_only safe)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> ImageConfig:
        """A copy with ``changes`` type-checked and applied."""
        return _apply(self, changes, "replace")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ImageConfig:
        """A config from a (partial) dict; unknown keys raise ValueError."""
        return _apply(cls(), values, "dict")


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(ImageConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(ImageConfig)}


def _apply(base: ImageConfig, values: dict[str, Any], source: str) -> ImageConfig:
    return apply_overrides(base, values, source, " (see --help-config)")


def load_image_config(
    yaml_path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: ImageConfig | dict[str, Any] | None = None,
) -> ImageConfig:
    """The resolved config: ``base`` (default: the defaults), then the YAML file, then overrides.

    Args:
        yaml_path: a YAML (or JSON) file holding a mapping of keys to change, or None.
        overrides: ``"key=value"`` strings parsed with each field's type.
        base: the config to start from.

    Raises:
        ValueError: an unknown key (named), a wrongly typed or invalid value.
        FileNotFoundError: ``yaml_path`` does not exist.
    """
    cfg = ImageConfig.from_dict(base) if isinstance(base, dict) else (base or ImageConfig())
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise FileNotFoundError(f"yaml_path: no such config file {path}")
        text = path.read_text()
        loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        cfg = _apply(cfg, loaded or {}, str(path))
    pairs = dict(parse_override(o) for o in overrides)
    return _apply(cfg, pairs, "override") if pairs else cfg


def describe_image_fields() -> str:
    """One line per key: ``name (type, default): help``."""
    lines = []
    for f, tp in zip(dataclasses.fields(ImageConfig), _field_types().values()):
        lines.append(f"  {f.name} ({tp.__name__}, default {f.default!r}): {f.metadata['help']}")
    return "\n".join(lines)
