"""The (CR-)NVAE run configuration: one flat typed dataclass, YAML overrides, ``key=value``.

Same conventions as :mod:`crfold.config` (whose type coercion and ``key=value`` parser it uses):
a YAML file holds only the keys it changes, command-line overrides are parsed with the field's
type, unknown keys fail, and the resolved config is saved in the run directory and checkpoints.
Defaults are the paper-scale MNIST run (NVAE's published MNIST settings; docs/design.md#nvae).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from crfold.amp import AMP_CHOICES
from crfold.config import apply_overrides, parse_override
from crfold_images.models.nvae import LIKELIHOODS, NVAEArch
from crfold_images.models.nvae_eval import FEATURES
from crfold_images.models.nvae_objective import CR_PATHS

__all__ = ["DATASETS", "MODES", "NVAETrainConfig", "load_nvae_config"]

MODES = ("nvae", "cr-nvae")
DATASETS = ("mnist", "fashion_mnist", "cifar10", "celeba64", "random")


def _f(default: Any, help: str) -> Any:  # noqa: A002 - mirrors argparse's name
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class NVAETrainConfig:
    """Everything a (CR-)NVAE run needs; defaults: paper-scale MNIST."""

    # --- data
    dataset: str = _f("mnist", "mnist | fashion_mnist | cifar10 | celeba64 | random (synthetic)")
    data_root: str | None = _f(None, "dataset folder; None: ../shared/data/<dataset> if present")
    num_train: int | None = _f(None, "use the first N (shuffled) train images; None: all")
    num_test: int | None = _f(None, "evaluate on the first N test images; None: all")
    data_seed: int = _f(0, "seed of the train subset, the shuffles and the test binarization")
    # --- architecture (crfold_images.models.nvae.NVAEArch)
    in_channels: int = _f(1, "image channels")
    image_size: int = _f(32, "side the network works at (MNIST: 28 padded to 32)")
    data_size: int = _f(28, "side of the data; the output is cropped back to it")
    likelihood: str = _f("bernoulli", "bernoulli (binarized) | dmol (discretized logistics)")
    num_mixtures: int = _f(10, "dmol: mixture components")
    channels: int = _f(32, "channels after the stem, doubled by each downsampling")
    num_preprocess_blocks: int = _f(2, "stride-2 blocks before the latent scales")
    num_preprocess_cells: int = _f(3, "cells per preprocessing block")
    num_postprocess_blocks: int = _f(2, "upsampling blocks after the latent scales")
    num_postprocess_cells: int = _f(3, "cells per postprocessing block")
    groups_per_scale: list[int] = _f([5, 10], "latent groups per scale, coarsest first")
    latent_channels: int = _f(20, "channels of each latent group")
    cells_per_group_enc: int = _f(1, "encoder cells before each group")
    cells_per_group_dec: int = _f(1, "decoder cells before each group")
    # --- objective
    mode: str = _f("nvae", "nvae | cr-nvae (consistency term summed over all groups)")
    lam: float = _f(0.1, "consistency weight lambda (CR-VAE paper: 0.1)")
    cr_path: str = _f("own", "own (each posterior on its own top-down path) | shared (x's path)")
    aug: str = _f("all", "augmentation families: all | comma list of rotate,translate,scale")
    kl_warmup_fraction: float = _f(0.3, "KL coefficient 1e-4 -> 1 over this fraction of steps")
    kl_min_coeff: float = _f(1e-4, "KL coefficient at step 0")
    kl_balance: bool = _f(True, "balance the KL across groups during warm-up")
    spectral_lambda: float = _f(1e-2, "weight of spectral + BN regularisation (CelebA: 1e-1)")
    power_iterations: int = _f(1, "power iterations per step for the spectral norms")
    # --- optimisation (Adamax, warm-up then cosine)
    epochs: int = _f(400, "epochs over the train split")
    max_steps: int | None = _f(None, "total optimizer steps; None: epochs * steps per epoch")
    batch_size: int = _f(200, "images per step (CR also encodes t(x): 2x rows)")
    lr: float = _f(1e-2, "peak Adamax learning rate")
    lr_min: float = _f(1e-4, "final learning rate of the cosine schedule")
    lr_warmup_epochs: float = _f(5.0, "linear learning-rate warm-up, in epochs")
    adamax_eps: float = _f(1e-3, "Adamax epsilon")
    weight_decay: float = _f(3e-4, "Adamax weight decay")
    grad_clip: float | None = _f(None, "clip the gradient norm (None: off)")
    # --- evaluation
    iw_samples: int = _f(1000, "importance samples K of the IW-NLL")
    iw_chunk: int = _f(100, "importance samples per forward pass")
    eval_batch_size: int = _f(50, "images per IW-NLL / encoding batch")
    probe_features: str = _f("all_pooled", "all_pooled | top | all (posterior means)")
    probe_C: float = _f(1.0, "inverse regularisation of the logistic probe")
    probe: bool = _f(True, "fit a logistic probe on train features, score on test")
    # --- runtime
    seed: int = _f(0, "seed of the initialisation, augmentation, binarization and sampling")
    device: str = _f("auto", "auto | cpu | cuda | cuda:N")
    num_threads: int | None = _f(None, "torch intra-op CPU threads (None: torch's default)")
    amp: str = _f(  # auto: tiny NVAE 1.1x faster in bf16 on a Zen 4 CPU, -ELBO within 3 %
        "auto",
        "training autocast (crfold.amp): auto (bf16 on CUDA and on CPUs with native bf16, else "
        "fp32) | bf16 | fp16 (CUDA only, with a grad scaler) | none; evaluation is float32",
    )
    run_dir: str | None = _f(None, "run directory; None: runs/nvae-<dataset>-<mode>")
    log_every: int = _f(50, "steps between records in metrics.jsonl")
    ckpt_every: int = _f(500, "steps between checkpoints (always one at the end)")

    def __post_init__(self) -> None:
        for key, choices in (
            ("mode", MODES),
            ("dataset", DATASETS),
            ("likelihood", LIKELIHOODS),
            ("cr_path", CR_PATHS),
            ("amp", AMP_CHOICES),
            ("probe_features", FEATURES),
        ):
            if getattr(self, key) not in choices:
                raise ValueError(f"{key}: expected one of {choices}, got {getattr(self, key)!r}")
        positive = ["epochs", "batch_size", "iw_samples", "iw_chunk", "eval_batch_size"]
        positive += ["log_every", "ckpt_every"]
        for key in positive:
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: expected an int >= 1, got {getattr(self, key)}")
        for key in ("num_train", "num_test", "max_steps", "num_threads"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"{key}: expected None or an int >= 1, got {getattr(self, key)}")
        for key in ("lr", "lr_min", "adamax_eps", "probe_C"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) > 0):
                raise ValueError(f"{key}: expected a finite number > 0, got {getattr(self, key)}")
        for key in ("lam", "spectral_lambda", "weight_decay", "lr_warmup_epochs"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) >= 0):
                raise ValueError(f"{key}: expected a finite number >= 0, got {getattr(self, key)}")
        if self.power_iterations < 0:
            raise ValueError(f"power_iterations: expected >= 0, got {self.power_iterations}")
        self.arch()  # architecture checks (ValueError naming the field)

    def arch(self) -> NVAEArch:
        """The :class:`NVAEArch` these fields describe."""
        names = [f.name for f in dataclasses.fields(NVAEArch)]
        values = {n: getattr(self, n) for n in names if hasattr(self, n)}
        values["groups_per_scale"] = tuple(self.groups_per_scale)
        return NVAEArch(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON, YAML and ``weights_only`` safe)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, (list, tuple)) else value
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: NVAETrainConfig | None = None):
        """A config from (possibly partial) ``values`` over ``base``; unknown keys fail."""
        return _apply(base or cls(), values, "dict")


def _apply(base: NVAETrainConfig, values: dict[str, Any], source: str) -> NVAETrainConfig:
    return apply_overrides(base, values, source)


def load_nvae_config(
    yaml_path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: NVAETrainConfig | dict[str, Any] | None = None,
) -> NVAETrainConfig:
    """Defaults (or ``base``), then the YAML file's keys, then ``key=value`` overrides.

    Raises:
        ValueError: an unknown key (named), a value of the wrong type, or an invalid value.
        FileNotFoundError: ``yaml_path`` does not exist.
    """
    cfg = NVAETrainConfig.from_dict(base) if isinstance(base, dict) else (base or NVAETrainConfig())
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise FileNotFoundError(f"yaml_path: no such config file {path}")
        cfg = _apply(cfg, yaml.safe_load(path.read_text()) or {}, str(path))
    pairs = dict(parse_override(o) for o in overrides)
    return _apply(cfg, pairs, "override") if pairs else cfg
