"""The training configuration: one flat typed dataclass, YAML override files, ``key=value``.

Every field has a default and a one-line help (``crfold train --help`` lists them). A YAML file
holds only the keys it changes; ``key=value`` overrides from the command line are parsed with the
field's type (int, float, bool, str, optional, list) and unknown keys are an error. The resolved
config is saved in every run directory (``config.yaml``) and inside every checkpoint as a plain
dict, so a run can always be rebuilt from its directory.

>>> cfg = load_config("configs/demo.yaml", ["lam=0.3", "mode=vae+aug"])
>>> cfg.lam, cfg.mode
(0.3, 'vae+aug')
"""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .amp import AMP_CHOICES

__all__ = [
    "TrainConfig",
    "coerce_value",
    "describe_fields",
    "load_config",
    "load_saved_config",
    "parse_override",
]

MODES = ("ae", "vae", "vae+aug", "cr")  # as crfold.models.foldingnet.MODES
ROTATIONS = ("up", "x", "y", "z", "so3")
_NONE_WORDS = ("none", "null", "~", "")
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


def _f(default: Any, help: str) -> Any:  # noqa: A002 - mirrors argparse's name
    """A dataclass field with a default and a help line (lists get a fresh copy per instance)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything a training run needs; the defaults are the paper's CR-FoldingNet settings."""

    # --- data
    data: str = _f("synthetic", "'synthetic' (embedded procedural shapes), an .npz, or an HDF5 dir")
    num_points: int | None = _f(None, "points per cloud; None: 1024 for synthetic, else all stored")
    up_axis: str | None = _f(None, "up axis of the clouds as loaded ('y'/'z'); None: the dataset's")
    to_up: str | None = _f(None, ".npz only: rotate the stored clouds to this up axis at load")
    classes_subset: list[str] | None = _f(
        None, ".npz only: keep these classes (relabelled 0..k-1); [modelnet10] = ModelNet10's"
    )
    normalize: bool = _f(False, "HDF5 only: centre and scale each cloud into the unit ball")
    synthetic_train_shapes: int = _f(2000, "synthetic: shapes in the train split")
    synthetic_test_shapes: int = _f(500, "synthetic: shapes in the val and test splits")
    synthetic_rotate: bool = _f(False, "synthetic: random rotation of every shape about y")
    data_seed: int = _f(0, "seed of the synthetic shapes and of point subsampling")
    train_split: str = _f("train", "split the model is trained on")
    val_split: str = _f("test", "split for validation loss and best.pt (ShapeNet HDF5 has 'val')")
    # --- model (FoldingNet, Yang et al. 2018)
    mode: str = _f("cr", "ae | vae | vae+aug (FoldingNet+Aug: CR with lam=0) | cr")
    latent_dim: int = _f(512, "latent / codeword size L")
    k: int = _f(16, "neighbours of the local covariance and the graph max-pools")
    grid_size: int = _f(45, "decoder grid side (45 -> 2025 points)")
    use_covariance: bool = _f(True, "12-channel encoder input (xyz + local covariance)")
    # obs_scale mirrors crfold.models.foldingnet.DEFAULT_OBS_SCALE (a test keeps them equal).
    obs_scale: float = _f(0.1, "sigma of the Gaussian Chamfer likelihood: the Chamfer-vs-KL weight")
    # --- objective (Eq. 3: L(x) + L(t(x)) - lam * KL(q(z|t(x)) || q(z|x)))
    beta: float = _f(1.0, "weight of the KL to the prior (beta-VAE); not of the consistency term")
    lam: float = _f(
        0.1, "lambda, weight of the KL consistency term (paper: 0.1; 0.1*beta for beta-VAE)"
    )
    # --- augmentation t(x) for vae+aug and cr (default: FoldingNet's rotate+translate+jitter)
    aug_rotate: str | None = _f("up", "rotation axis: up | x | y | z | so3 (uniform SO(3)) | None")
    aug_degrees: float = _f(180.0, "rotation angle range: uniform in [-deg, deg]")
    aug_steps: int | None = _f(
        None, "draw the angle among k = steps angles 2*pi*i/k (24: 15-degree steps); None: any"
    )
    aug_translate: float = _f(0.2, "per-axis shift U(-t, t); 0 disables")
    aug_scale: list[float] | None = _f(
        None, "[low, high] scale factors, e.g. [0.667, 1.5]; None: off"
    )
    aug_scale_isotropic: bool = _f(False, "one scale factor per cloud instead of one per axis")
    aug_jitter_sigma: float = _f(0.01, "per-point jitter sigma; 0 disables")
    aug_jitter_clip: float | None = _f(0.02, "jitter clipping bound; None: unclipped")
    # --- optimisation (FoldingNet: Adam 1e-4, weight decay 1e-6, batch 16)
    lr: float = _f(1e-4, "Adam learning rate (constant)")
    weight_decay: float = _f(1e-6, "Adam weight decay")
    batch_size: int = _f(16, "clouds per step and process (cr/vae+aug also encode t(x))")
    epochs: int = _f(100, "epochs over the train split")
    max_steps: int | None = _f(None, "stop after this many optimizer steps in all (None: no limit)")
    grad_clip: float | None = _f(None, "clip the gradient norm to this value (None: no clipping)")
    # --- runtime
    seed: int = _f(0, "seed of the initialization, shuffling, augmentation and sampling")
    device: str = _f("auto", "auto (cuda if available, else cpu) | cpu | cuda | cuda:N")
    amp: str = _f(
        "auto", "auto (bf16 on CUDA and on CPUs with native bf16, else fp32) | bf16 | fp16 | none"
    )
    num_workers: int = _f(0, "DataLoader worker processes")
    num_threads: int | None = _f(None, "CPU threads of torch (None: torch's default)")
    run_dir: str | None = _f(None, "run directory; None: runs/<date-time>-<mode>")
    log_every: int = _f(10, "steps between train records in metrics.jsonl / TensorBoard")
    checkpoint_every: int | None = _f(
        None, "steps between last.pt saves inside an epoch (None: at epoch ends and signals)"
    )
    eval_every: int = _f(1, "epochs between validation passes (and best.pt updates)")
    eval_batch_size: int | None = _f(None, "validation / encoding batch size; None: 2*batch_size")
    # --- linear probe (crfold probe)
    probe_split: str = _f("test", "split the probes are scored on (fit on train_split)")
    probe_C: float = _f(1.0, "inverse regularization of the SVM / logistic probes")
    probe_standardize: bool = _f(False, "standardize codes (StandardScaler fit on train)")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Checks values beyond their types; ValueError naming the key."""
        _choice("mode", self.mode, MODES)
        _choice("amp", self.amp, AMP_CHOICES)
        _choice("aug_rotate", self.aug_rotate, (*ROTATIONS, None))
        for key in ("up_axis", "to_up"):
            _choice(key, getattr(self, key), ("y", "z", None))
        positive = ["latent_dim", "batch_size", "epochs", "log_every", "eval_every"]
        positive += ["synthetic_train_shapes", "synthetic_test_shapes"]
        for key in positive:
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: expected an int >= 1, got {getattr(self, key)}")
        optional_positive = ("num_points", "max_steps", "eval_batch_size", "aug_steps")
        for key in (*optional_positive, "num_threads", "checkpoint_every"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"{key}: expected None or an int >= 1, got {getattr(self, key)}")
        if self.k < 2 or self.grid_size < 2:
            raise ValueError(f"k and grid_size: expected ints >= 2, got {self.k}, {self.grid_size}")
        for key in ("num_workers", "seed", "data_seed"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key}: expected an int >= 0, got {getattr(self, key)}")
        if self.aug_degrees > 180:
            raise ValueError(f"aug_degrees: expected a number in [0, 180], got {self.aug_degrees}")
        if (self.aug_steps is not None or self.aug_rotate == "so3") and self.aug_degrees != 180:
            raise ValueError("aug_degrees: must stay 180 with aug_steps or aug_rotate=so3")
        if self.aug_steps is not None and self.aug_rotate == "so3":
            raise ValueError("aug_steps: discrete angles need a rotation axis, not aug_rotate=so3")
        for key in ("obs_scale", "lr", "probe_C"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) > 0):
                raise ValueError(f"{key}: expected a finite number > 0, got {getattr(self, key)}")
        keys = ("beta", "lam", "weight_decay", "aug_translate", "aug_jitter_sigma", "aug_degrees")
        for key in keys:
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) >= 0):
                raise ValueError(f"{key}: expected a finite number >= 0, got {getattr(self, key)}")
        for key in ("grad_clip", "aug_jitter_clip"):
            if getattr(self, key) is not None and not getattr(self, key) > 0:
                raise ValueError(f"{key}: expected None or a number > 0, got {getattr(self, key)}")
        if self.aug_scale is not None and not (
            len(self.aug_scale) == 2 and 0 < self.aug_scale[0] <= self.aug_scale[1]
        ):
            raise ValueError(f"aug_scale: expected None or [low, high], 0 < low <= high, got "
                             f"{self.aug_scale}")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of str/int/float/bool/None/list values (JSON, YAML and weights_only safe)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Builds a config from a (possibly partial) dict; unknown keys raise ValueError."""
        return _apply(cls(), values, source="dict")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied and type-checked like YAML values."""
        return _apply(self, changes, source="replace")

    def save(self, path: str | Path) -> Path:
        """Writes the config atomically as YAML (``.yaml``/``.yml``) or JSON (``.json``)."""
        from .checkpoint import atomic_write_json, atomic_write_text

        path = Path(path)
        if path.suffix == ".json":
            return atomic_write_json(path, self.to_dict())
        if path.suffix not in (".yaml", ".yml"):
            raise ValueError(f"path: expected a .yaml, .yml or .json file name, got {path}")
        return atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def _choice(key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{key}: expected one of {choices}, got {value!r}")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def field_types() -> dict[str, Any]:
    """{field name: resolved type annotation} of :class:`TrainConfig`."""
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainConfig)}


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """(inner type, whether None is allowed) for ``T | None``."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported config type {tp}")
        return args[0], True
    return tp, False


def _parse_scalar(key: str, text: str, tp: type) -> Any:
    """Parses one string as ``tp`` (int, float, bool or str); ValueError naming ``key``."""
    s = text.strip()
    if tp is str:
        return s
    if tp is bool:
        if s.lower() in _TRUE_WORDS:
            return True
        if s.lower() in _FALSE_WORDS:
            return False
    else:
        try:
            return int(s) if tp is int else float(s)
        except ValueError:
            pass
    raise ValueError(f"{key}: expected {tp.__name__}, got {text!r}")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Checks (or, for strings, parses) ``value`` against the annotation ``tp``."""
    inner, optional = _unwrap_optional(tp)
    if value is None or (
        isinstance(value, str) and optional and value.strip().lower() in _NONE_WORDS
    ):
        if optional:
            return None
        raise ValueError(f"{key}: expected {getattr(inner, '__name__', inner)}, got None")
    if typing.get_origin(inner) is list:
        (item,) = typing.get_args(inner)
        if isinstance(value, str):
            s = value.strip()
            if s.startswith("[") and s.endswith("]"):
                s = s[1:-1]
            value = [v for v in s.split(",") if v.strip()] if s.strip() else []
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list of {item.__name__}, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if isinstance(value, str):
        return _parse_scalar(key, value, inner)
    if inner is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, inner) and not (inner is int and isinstance(value, bool)):
        return value
    raise ValueError(f"{key}: expected {inner.__name__}, got {value!r} ({type(value).__name__})")


coerce_value = _coerce  # public name: other config modules (crfold_images) parse values with it


def apply_overrides(base: Any, values: dict[str, Any], source: str, help_hint: str = "") -> Any:
    """A copy of the dataclass ``base`` with ``values`` type-checked against its fields.

    The one override mechanism of every config (crfold, crfold_images, NVAE). ``source`` names
    where the values came from in error messages; ``help_hint`` says where the keys are listed.
    """
    if not isinstance(values, dict):
        raise ValueError(
            f"{source}: expected a mapping of config keys, got {type(values).__name__}"
        )
    names = {f.name for f in dataclasses.fields(base)}
    hints = typing.get_type_hints(type(base))
    changes = {}
    for key, value in values.items():
        if key not in names:
            raise ValueError(f"{source}: unknown config key {key!r}{help_hint}")
        changes[key] = _coerce(key, value, hints[key])
    return dataclasses.replace(base, **changes)


def _apply(base: TrainConfig, values: dict[str, Any], source: str) -> TrainConfig:
    return apply_overrides(base, values, source, " (see `crfold train --help`)")


def parse_override(text: str) -> tuple[str, str]:
    """Splits ``"key=value"`` into ``(key, value)``; ValueError if there is no ``=``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override: expected key=value, got {text!r}")
    return key.strip(), value


def load_config(
    yaml_path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: TrainConfig | dict[str, Any] | None = None,
) -> TrainConfig:
    """The resolved config: ``base`` (default: the defaults), then the YAML file, then overrides.

    Args:
        yaml_path: a YAML file holding a mapping of config keys to change (or None).
        overrides: ``"key=value"`` strings, parsed with the field's type; ``none``/``null``
            sets an optional field to None; lists are ``a,b`` or ``[a, b]``.
        base: the config to start from (e.g. a run's saved config when resuming).

    Raises:
        ValueError: an unknown key (named), a value of the wrong type, or an invalid value.
        FileNotFoundError: ``yaml_path`` does not exist.
    """
    cfg = TrainConfig.from_dict(base) if isinstance(base, dict) else (base or TrainConfig())
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise FileNotFoundError(f"yaml_path: no such config file {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        cfg = _apply(cfg, loaded, source=str(path))
    pairs = dict(parse_override(o) for o in overrides)
    return _apply(cfg, pairs, source="override") if pairs else cfg


def load_saved_config(path: str | Path) -> TrainConfig:
    """Reads a config saved by :meth:`TrainConfig.save` (YAML or JSON)."""
    path = Path(path)
    text = path.read_text()
    values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    return TrainConfig.from_dict(values or {})


def describe_fields(width: int = 100) -> str:
    """One line per config key: ``name (type, default): help`` (for ``--help``)."""
    lines = []
    for f, tp in zip(dataclasses.fields(TrainConfig), field_types().values()):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        tname = str(tp).replace("typing.", "") if not isinstance(tp, type) else tp.__name__
        text = f"{f.name} ({tname}, default {default!r}): {f.metadata['help']}"
        lines.append(textwrap.fill(text, width, initial_indent="  ", subsequent_indent="      "))
    return "\n".join(lines)
