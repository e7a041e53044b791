"""Run configurations: one typed dataclass per task on one base, YAML files, ``key=value``.

Every task's config (:class:`TrainConfig` for FoldingNet here, ``crfold_images.config.
ImageConfig``, ``crfold_images.nvae.config.NVAEConfig``) extends :class:`RunConfig`, which holds
the keys of the run engine (:mod:`crfold.train`): seed, device, precision, budget, optimizer
step, logging and checkpoints. One mechanism serves them all:

* every field is declared with :func:`option` (a default and a one-line help; ``crfold train
  --help`` lists them);
* ``None`` is the only "not set" value;
* a YAML file holds only the keys it changes, ``key=value`` overrides are parsed with the field's
  type (int, float, bool, str, optional, list), unknown keys are an error naming the key;
* the resolved config is saved in the run directory (``config.yaml``) and inside every
  checkpoint as a plain dict;
* ``task`` (a key of every config) names the task, so ``crfold train`` and ``load_config`` pick
  the right class from a file or an override: ``foldingnet`` (default), ``images``, ``nvae``;
* ``mode`` uses one vocabulary for the paper's variants in every task: ``base`` (the model
  alone), ``aug`` (the model trained on x and t(x), the paper's "+ Aug"), ``cr`` (with the
  consistency term), plus task-specific extras (FoldingNet's ``ae``, the images' ``triplet``).
  The old names (``vae``, ``vae+aug``, ``nvae``, ``cr-nvae``) still load, with a warning;
* ``RESUMABLE`` lists the keys a ``--resume`` may change; every other key defines the run.

Data paths: a relative ``data`` / ``data_root`` that does not exist from the working directory is
looked up under the folder in ``$CRFOLD_DATA`` (:func:`resolve_data_path`).

>>> cfg = load_config("configs/demo.yaml", ["lam=0.3", "mode=aug"])
>>> cfg.lam, cfg.mode
(0.3, 'aug')
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import textwrap
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from .amp import AMP_CHOICES

__all__ = [
    "DATA_ENV",
    "RunConfig",
    "TASKS",
    "TrainConfig",
    "coerce_value",
    "config_class",
    "describe_fields",
    "load_config",
    "load_saved_config",
    "option",
    "parse_override",
    "resolve_data_path",
]

DATA_ENV = "CRFOLD_DATA"
# task name -> "module:ConfigClass" (imported on demand: crfold never imports crfold_images eagerly)
TASKS = {
    "foldingnet": "crfold.config:TrainConfig",
    "images": "crfold_images.config:ImageConfig",
    "nvae": "crfold_images.nvae.config:NVAEConfig",
}
MODES = (
    "ae",
    "base",
    "aug",
    "cr",
)  # FoldingNet training modes (the model kinds: models.foldingnet.MODES)
ROTATIONS = ("up", "x", "y", "z", "so3")
RECON_TERMS = ("gaussian", "mean_chamfer")  # as crfold.models.foldingnet.RECON_TERMS
AUG_TARGETS = ("transformed", "canonical")
_NONE_WORDS = ("none", "null", "~", "")
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


def option(default: Any, help: str) -> Any:  # noqa: A002 - mirrors argparse's name
    """A config field with a default and a help line (lists get a fresh copy per instance)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def choice(key: str, value: Any, choices: tuple) -> None:
    """ValueError naming ``key`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{key}: expected one of {choices}, got {value!r}")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def check_numbers(cfg: Any, *, positive_ints=(), optional_positive_ints=(), nonneg_ints=(),
                  positive=(), nonneg=(), optional_positive=()) -> None:  # fmt: skip
    """The range checks every config's ``validate`` needs; ValueError naming the key."""
    for key in positive_ints:
        if getattr(cfg, key) < 1:
            raise ValueError(f"{key}: expected an int >= 1, got {getattr(cfg, key)}")
    for key in optional_positive_ints:
        if getattr(cfg, key) is not None and getattr(cfg, key) < 1:
            raise ValueError(f"{key}: expected None or an int >= 1, got {getattr(cfg, key)}")
    for key in nonneg_ints:
        if getattr(cfg, key) < 0:
            raise ValueError(f"{key}: expected an int >= 0, got {getattr(cfg, key)}")
    for key in positive:
        if not (math.isfinite(getattr(cfg, key)) and getattr(cfg, key) > 0):
            raise ValueError(f"{key}: expected a finite number > 0, got {getattr(cfg, key)}")
    for key in nonneg:
        if not (math.isfinite(getattr(cfg, key)) and getattr(cfg, key) >= 0):
            raise ValueError(f"{key}: expected a finite number >= 0, got {getattr(cfg, key)}")
    for key in optional_positive:
        value = getattr(cfg, key)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{key}: expected None or a finite number > 0, got {value}")


@dataclass
class RunConfig:
    """The keys of the run engine, shared by every task (each task's config extends it).

    Class attributes of a task's config: ``TASK`` (its name in :data:`TASKS`), ``TASK_CLASS``
    (``"module:Class"`` of its :class:`crfold.train.Task`), ``MODES`` and ``MODE_ALIASES`` (old
    mode names -> new), ``RESUMABLE`` (keys ``--resume`` may change).
    """

    TASK: ClassVar[str] = ""
    TASK_CLASS: ClassVar[str] = ""
    MODES: ClassVar[tuple[str, ...]] = ()
    MODE_ALIASES: ClassVar[dict[str, str]] = {}
    RESUMABLE: ClassVar[tuple[str, ...]] = (
        "epochs", "max_steps", "log_every", "checkpoint_every", "eval_every", "num_threads",
        "device", "amp", "run_dir", "max_bad_steps",
    )  # fmt: skip

    task: str = option("foldingnet", "foldingnet | images | nvae: what is trained")
    # --- budget and optimizer step
    epochs: int = option(100, "epochs over the train split")
    max_steps: int | None = option(None, "stop after this many optimizer steps (None: no limit)")
    batch_size: int = option(16, "examples per step and process (aug/cr also encode t(x))")
    lr: float = option(1e-4, "learning rate")
    weight_decay: float = option(0.0, "weight decay of the optimizer")
    grad_clip: float | None = option(None, "clip the gradient norm to this value (None: off)")
    max_bad_steps: int = option(
        0, "consecutive non-finite losses skipped (no update) before the run stops; 0: stop at once"
    )
    # --- runtime
    seed: int = option(0, "seed of the initialization, data order, augmentation and sampling")
    device: str = option("auto", "auto (cuda if available, else cpu) | cpu | cuda | cuda:N")
    amp: str = option(
        "auto", "auto (bf16 on CUDA and on CPUs with native bf16, else fp32) | bf16 | fp16 | none"
    )
    num_threads: int | None = option(None, "CPU threads of torch (None: torch's default)")
    run_dir: str | None = option(None, "run directory; None: runs/<date-time>-<task>-<mode>")
    log_every: int = option(10, "steps between train records in metrics.jsonl / TensorBoard")
    checkpoint_every: int | None = option(
        None, "steps between last.pt saves inside an epoch (None: at epoch ends and signals)"
    )
    eval_every: int = option(1, "epochs between validation passes (and best.pt updates)")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Checks values beyond their types; ValueError naming the key. Extend in subclasses."""
        if self.TASK:
            choice("task", self.task, (self.TASK,))
        if self.MODES:
            choice("mode", getattr(self, "mode"), self.MODES)  # noqa: B009
        choice("amp", self.amp, AMP_CHOICES)
        check_numbers(
            self,
            positive_ints=("epochs", "batch_size", "log_every", "eval_every"),
            optional_positive_ints=("max_steps", "num_threads", "checkpoint_every"),
            nonneg_ints=("seed", "max_bad_steps"),
            positive=("lr",),
            nonneg=("weight_decay",),
            optional_positive=("grad_clip",),
        )

    # ------------------------------------------------------------------ conversions
    def to_dict(self) -> dict[str, Any]:
        """Plain dict of str/int/float/bool/None/list values (JSON, YAML and weights_only safe)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "dict") -> RunConfig:
        """A config from a (possibly partial) dict; unknown keys raise ValueError."""
        return apply_overrides(cls(), values, source)

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with ``changes`` applied and type-checked like YAML values."""
        return apply_overrides(self, changes, "replace")

    def save(self, path: str | Path) -> Path:
        """Writes the config atomically as YAML (``.yaml``/``.yml``) or JSON (``.json``)."""
        from .io import atomic_write_json, atomic_write_text

        path = Path(path)
        if path.suffix == ".json":
            return atomic_write_json(path, self.to_dict())
        if path.suffix not in (".yaml", ".yml"):
            raise ValueError(f"path: expected a .yaml, .yml or .json file name, got {path}")
        return atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    # ------------------------------------------------------------------ runs
    def run_defining_changes(self, saved: dict[str, Any]) -> list[str]:
        """The keys, outside ``RESUMABLE``, whose value differs from the ``saved`` config's.

        ``saved`` is normalized first (old mode names, keys added since with their defaults).
        """
        old = (
            type(self)
            .from_dict({k: v for k, v in saved.items() if k in _names(type(self))}, "saved")
            .to_dict()
        )
        now = self.to_dict()
        return [k for k in now if k not in self.RESUMABLE and old.get(k) != now[k]]

    def default_run_dir(self) -> str:
        """``runs/<YYYYmmdd-HHMMSS>-<task>-<mode>``."""
        import time

        mode = str(getattr(self, "mode", "run")).replace("+", "-")
        return f"runs/{time.strftime('%Y%m%d-%H%M%S')}-{self.task}-{mode}"

    @classmethod
    def describe(cls, width: int = 100) -> str:
        """One line per key: ``name (type, default): help`` (for ``--help``)."""
        hints = typing.get_type_hints(cls)
        lines = []
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            tname = tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")
            mark = " [may change on --resume]" if f.name in cls.RESUMABLE else ""
            text = f"{f.name} ({tname}, default {default!r}): {f.metadata['help']}{mark}"
            lines.append(
                textwrap.fill(text, width, initial_indent="  ", subsequent_indent="      ")
            )
        return "\n".join(lines)


def _names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


# --------------------------------------------------------------------------- values
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


def coerce_value(key: str, value: Any, tp: Any) -> Any:
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
        return [coerce_value(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if isinstance(value, str):
        return _parse_scalar(key, value, inner)
    if inner is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, inner) and not (inner is int and isinstance(value, bool)):
        return value
    raise ValueError(f"{key}: expected {inner.__name__}, got {value!r} ({type(value).__name__})")


def apply_overrides(base: RunConfig, values: dict[str, Any], source: str) -> RunConfig:
    """A copy of ``base`` with ``values`` type-checked against its fields (the one mechanism).

    ``source`` names where the values came from in error messages. An old mode name is mapped
    to the new one with a DeprecationWarning.
    """
    if not isinstance(values, dict):
        raise ValueError(
            f"{source}: expected a mapping of config keys, got {type(values).__name__}"
        )
    names = _names(type(base))
    hints = typing.get_type_hints(type(base))
    changes = {}
    for key, value in values.items():
        if key not in names:
            command = "crfold train --help" if base.TASK == "foldingnet" else (
                f"crfold {base.TASK} train --help")  # fmt: skip
            raise ValueError(f"{source}: unknown config key {key!r} (see `{command}`)")
        changes[key] = coerce_value(key, value, hints[key])
    mode = changes.get("mode")
    if isinstance(mode, str) and mode in base.MODE_ALIASES:
        new = base.MODE_ALIASES[mode]
        warnings.warn(
            f"{source}: mode {mode!r} is the old name of mode {new!r}", DeprecationWarning,
            stacklevel=3,
        )  # fmt: skip
        changes["mode"] = new
    return dataclasses.replace(base, **changes)


def parse_override(text: str) -> tuple[str, str]:
    """Splits ``"key=value"`` into ``(key, value)``; ValueError if there is no ``=``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override: expected key=value, got {text!r}")
    return key.strip(), value


# --------------------------------------------------------------------------- loading
def config_class(task: str) -> type[RunConfig]:
    """The config class of ``task`` (a key of :data:`TASKS`)."""
    if task not in TASKS:
        raise ValueError(f"task: expected one of {tuple(TASKS)}, got {task!r}")
    module, _, name = TASKS[task].partition(":")
    return getattr(importlib.import_module(module), name)


def _read_mapping(path: str | Path) -> dict[str, Any]:
    from .io import read_yaml

    loaded = read_yaml(path)
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of config keys, got {type(loaded).__name__}")
    return loaded


def load_config(
    yaml_path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: RunConfig | dict[str, Any] | None = None,
    cls: type[RunConfig] | None = None,
) -> RunConfig:
    """The resolved config: ``base`` (default: the defaults), then the YAML file, then overrides.

    Args:
        yaml_path: a YAML (or JSON) file holding a mapping of config keys to change (or None).
        overrides: ``"key=value"`` strings, parsed with the field's type; ``none``/``null``
            sets an optional field to None; lists are ``a,b`` or ``[a, b]``.
        base: the config to start from (e.g. a run's saved config when resuming).
        cls: the config class; None: the class of the ``task`` named by the overrides, else
            by the YAML file, else by ``base``, else FoldingNet's :class:`TrainConfig`.

    Raises:
        ValueError: an unknown key (named), a value of the wrong type, an invalid value, or a
            malformed file (named).
        FileNotFoundError: ``yaml_path`` does not exist.
    """
    loaded = _read_mapping(yaml_path) if yaml_path is not None else {}
    pairs = dict(parse_override(o) for o in overrides)
    if cls is None:
        task = pairs.get("task") or loaded.get("task")
        if task is None:
            task = base.task if isinstance(base, RunConfig) else (base or {}).get("task")
        cls = config_class(str(task).strip() if task else "foldingnet")
    if isinstance(base, RunConfig):
        cfg = base if type(base) is cls else cls.from_dict(base.to_dict(), "base")
    else:
        cfg = cls.from_dict(base or {}, "base")
    if loaded:
        cfg = apply_overrides(cfg, loaded, str(yaml_path))
    return apply_overrides(cfg, pairs, "override") if pairs else cfg


def load_saved_config(path: str | Path) -> RunConfig:
    """Reads a config saved by :meth:`RunConfig.save` (YAML or JSON), of its own task."""
    return load_config(path)


def describe_fields(width: int = 100, task: str = "foldingnet") -> str:
    """One line per config key of ``task``: ``name (type, default): help`` (for ``--help``)."""
    return config_class(task).describe(width)


def resolve_data_path(value: str, key: str = "data") -> Path:
    """The path ``value`` names: as given if it exists (or is absolute), else under ``$CRFOLD_DATA``.

    Raises:
        FileNotFoundError: neither exists; the message says how to give the data.
    """
    path = Path(value).expanduser()
    if path.exists():
        return path
    root = os.environ.get(DATA_ENV)
    if root and not path.is_absolute() and (Path(root) / path).exists():
        return Path(root) / path
    where = f" (nor under {DATA_ENV}={root})" if root and not path.is_absolute() else ""
    raise FileNotFoundError(
        f"{key}: {value} does not exist{where}; pass {key}=PATH, or set {DATA_ENV} to the folder "
        f"that holds {value}"
    )


# --------------------------------------------------------------------------- FoldingNet
@dataclass
class TrainConfig(RunConfig):
    """The FoldingNet task's config; the defaults are the paper's CR-FoldingNet settings."""

    TASK: ClassVar[str] = "foldingnet"
    TASK_CLASS: ClassVar[str] = "crfold.train.foldingnet:FoldingNetTask"
    MODES: ClassVar[tuple[str, ...]] = MODES
    MODE_ALIASES: ClassVar[dict[str, str]] = {"vae": "base", "vae+aug": "aug"}
    RESUMABLE: ClassVar[tuple[str, ...]] = (
        *RunConfig.RESUMABLE, "num_workers", "eval_batch_size", "probe_split", "probe_C",
        "probe_standardize", "grad_norms_every",
    )  # fmt: skip

    # --- data
    data: str = option(
        "synthetic", "'synthetic' (embedded procedural shapes), an .npz, or an HDF5 dir"
    )
    num_points: int | None = option(None, "points per cloud; None: 1024 synthetic, else all")
    up_axis: str | None = option(None, "up axis of the clouds as loaded ('y'/'z'); None: data's")
    to_up: str | None = option(None, ".npz only: rotate the stored clouds to this up axis")
    classes_subset: list[str] | None = option(
        None, ".npz only: keep these classes (relabelled 0..k-1); [modelnet10] = ModelNet10's"
    )
    normalize: bool = option(False, "HDF5 only: centre and scale each cloud into the unit ball")
    synthetic_train_shapes: int = option(2000, "synthetic: shapes in the train split")
    synthetic_test_shapes: int = option(500, "synthetic: shapes in the val and test splits")
    synthetic_rotate: bool = option(False, "synthetic: random rotation of every shape about y")
    data_seed: int = option(0, "seed of the synthetic shapes and of point subsampling")
    train_split: str = option("train", "split the model is trained on")
    val_split: str = option(
        "holdout",
        "split of the validation loss and best.pt: 'holdout' (a seeded, stratified val_fraction "
        "of train_split, removed from training) or a split of the data ('val' for ShapeNet)",
    )
    val_fraction: float = option(0.1, "val_split=holdout: fraction of every class held out")
    num_workers: int = option(0, "DataLoader worker processes")
    # --- model (FoldingNet, Yang et al. 2018)
    mode: str = option("cr", "ae | base (VAE) | aug (VAE on x and t(x): CR with lam=0) | cr")
    latent_dim: int = option(512, "latent / codeword size L")
    k: int = option(16, "neighbours of the local covariance and the graph max-pools")
    grid_size: int = option(45, "decoder grid side (45 -> 2025 points)")
    use_covariance: bool = option(True, "12-channel encoder input (xyz + local covariance)")
    # --- objective (Eq. 3: L(x) + L(t(x)) - lam * KL(q(z|t(x)) || q(z|x)))
    recon: str = option(
        "gaussian",
        "reconstruction term: 'gaussian' = Gaussian Chamfer NLL in nats, squared NN distances "
        "summed over the points of both directions / (2 obs_scale^2) (a proper likelihood: "
        "ELBO/NLL mean nats) | 'mean_chamfer' = FoldingNet's Chamfer loss, squared NN distance "
        "averaged over the points of each direction, summed over the two (the paper's 'KL added "
        "to FoldingNet' reading; not nats, use a small beta, e.g. 1e-3)",
    )
    # obs_scale mirrors crfold.models.foldingnet.DEFAULT_OBS_SCALE (a test keeps them equal).
    obs_scale: float = option(
        0.1, "sigma of the Gaussian Chamfer likelihood (recon=gaussian only): Chamfer-vs-KL weight"
    )
    beta: float = option(1.0, "weight of the KL to the prior (beta-VAE); not of the consistency")
    lam: float = option(0.1, "lambda, weight of the KL consistency term (mode cr)")
    grad_norms_every: int | None = option(
        200,
        "steps between gradient diagnostics (kind 'diagnostics' in metrics.jsonl): L2 norms of "
        "the gradients of the recon, beta*KL and lam*consistency terms w.r.t. the encoder; "
        "None: off",
    )
    # --- augmentation t(x) for aug and cr (default: FoldingNet's rotate+translate+jitter)
    aug_rotate: str | None = option("up", "rotation axis: up | x | y | z | so3 (uniform) | None")
    aug_degrees: float = option(180.0, "rotation angle range: uniform in [-deg, deg]")
    aug_steps: int | None = option(
        None, "draw the angle among k = steps angles 2*pi*i/k (24: 15-degree steps); None: any"
    )
    aug_translate: float = option(0.2, "per-axis shift U(-t, t); 0 disables")
    aug_scale: list[float] | None = option(
        None, "[low, high] scale factors, e.g. [0.667, 1.5]; None: off"
    )
    aug_scale_isotropic: bool = option(False, "one scale factor per cloud instead of per axis")
    aug_jitter_sigma: float = option(0.01, "per-point jitter sigma; 0 disables")
    aug_jitter_clip: float | None = option(0.02, "jitter clipping bound; None: unclipped")
    aug_target: str = option(
        "transformed",
        "what the t(x) branch reconstructs (aug, cr): 'transformed' = t(x) (the paper: the ELBO "
        "of t(x)) | 'canonical' = x (z need not carry the pose)",
    )
    # --- optimisation (FoldingNet: Adam 1e-4, weight decay 1e-6, batch 16)
    lr: float = option(1e-4, "Adam learning rate (constant)")
    weight_decay: float = option(1e-6, "Adam weight decay")
    eval_batch_size: int | None = option(None, "validation / encoding batch; None: 2*batch_size")
    # --- linear probe (crfold probe)
    probe_split: str = option(
        "test",
        "split the probes are scored on (fit on train_split; 'holdout': the validation part of "
        "train_split, fit on the rest)",
    )
    probe_C: float = option(1.0, "inverse regularization of the SVM / logistic probes")
    probe_standardize: bool = option(
        False, "headline protocol of printed probe summaries (true: standardized); both computed"
    )

    def validate(self) -> None:
        """Checks values beyond their types; ValueError naming the key."""
        super().validate()
        choice("aug_rotate", self.aug_rotate, (*ROTATIONS, None))
        choice("recon", self.recon, RECON_TERMS)
        choice("aug_target", self.aug_target, AUG_TARGETS)
        for key in ("up_axis", "to_up"):
            choice(key, getattr(self, key), ("y", "z", None))
        check_numbers(
            self,
            positive_ints=("latent_dim", "synthetic_train_shapes", "synthetic_test_shapes"),
            optional_positive_ints=(
                "num_points",
                "eval_batch_size",
                "aug_steps",
                "grad_norms_every",
            ),
            nonneg_ints=("num_workers", "data_seed"),
            positive=("obs_scale", "probe_C", "val_fraction"),
            nonneg=("beta", "lam", "aug_translate", "aug_jitter_sigma", "aug_degrees"),
            optional_positive=("aug_jitter_clip",),
        )
        if self.val_fraction >= 1:
            raise ValueError(f"val_fraction: expected a number in (0, 1), got {self.val_fraction}")
        if self.k < 2 or self.grid_size < 2:
            raise ValueError(f"k and grid_size: expected ints >= 2, got {self.k}, {self.grid_size}")
        if self.aug_degrees > 180:
            raise ValueError(f"aug_degrees: expected a number in [0, 180], got {self.aug_degrees}")
        if (self.aug_steps is not None or self.aug_rotate == "so3") and self.aug_degrees != 180:
            raise ValueError("aug_degrees: must stay 180 with aug_steps or aug_rotate=so3")
        if self.aug_steps is not None and self.aug_rotate == "so3":
            raise ValueError("aug_steps: discrete angles need a rotation axis, not aug_rotate=so3")
        if self.aug_scale is not None and not (
            len(self.aug_scale) == 2 and 0 < self.aug_scale[0] <= self.aug_scale[1]
        ):
            raise ValueError(f"aug_scale: expected None or [low, high], 0 < low <= high, got "
                             f"{self.aug_scale}")  # fmt: skip


def field_types() -> dict[str, Any]:
    """{field name: resolved type annotation} of :class:`TrainConfig`."""
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainConfig)}
