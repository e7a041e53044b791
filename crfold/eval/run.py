"""The run-level evaluations: ``crfold eval`` (every metric -> ``eval.json``) and ``crfold probe``.

>>> result = evaluate_run("runs/demo")                # writes runs/demo/eval.json
>>> result["probe"]["raw"]["svm"]["accuracy"]          # FoldingNet's protocol: raw codes
>>> result["probe"]["standardized"]["svm"]["accuracy"] # StandardScaler fit on the train codes
>>> result["probe_rotated_test"]["raw"]["svm"]["accuracy"]   # test shapes rotated about up
>>> probe_run("runs/demo", C=1.0)                     # writes runs/demo/probe.json

What :func:`evaluate_run` measures, on the run's probe split (``probe_split``, "test") unless
overridden:

* ``reconstruction``: Chamfer of decode(mu(x)) against x in both conventions (FoldingNet's
  sqrt/max and the squared sum), :func:`crfold.eval.reconstruction.reconstruction_metrics`.
* ``probe``: linear SVM and logistic regression (:mod:`crfold.eval.probe`) fit on the codes of
  ``train_split`` and scored on the probe split (``probe_split=holdout``: fit on the kept part of
  ``train_split`` only), under both protocols, always:
  ``{"raw": {"svm", "logistic"}, "standardized": {"svm", "logistic"}, "headline", "C"}``. ``raw``
  is FoldingNet's protocol (LinearSVC on the posterior means as they are); ``standardized`` fits
  a StandardScaler on the train codes first. The run's ``probe_standardize`` only names the
  ``headline`` protocol, the one printed first in summaries.
* ``probe_rotated_test``: the same linear SVMs (fit on the train codes as usual), scored on the
  probe split with each shape under its own random rotation about the up axis (uniform angle,
  seeded from ``seed``): what invariance buys. ``probe_rotated_both``: SVMs fit on train shapes
  each under its own random up-rotation too, scored on the rotated probe split. Both protocols:
  ``{"raw": {"svm"}, "standardized": {"svm"}, "rotation", "test_seed"[, "train_seed"]}``.
* ``mutual_information`` and ``active_units`` of q(z|x) over the probe split
  (:mod:`crfold.metrics`; MI with the whole split as one minibatch unless ``mi_batch_size``).
* ``consistency``: per transform family, :mod:`crfold.eval.consistency`.

``data`` / ``overrides`` evaluate on other data than the run was trained on (e.g. a model trained
on ShapeNet probed on ModelNet40, the paper's protocol): only data keys may change; a relative
``data`` path is looked up under ``$CRFOLD_DATA`` when it does not exist from the working
directory (:func:`crfold.config.resolve_data_path`).

With ``write=True`` the run directory is claimed first (:func:`crfold.eval.output.run_output`:
checkpoint present, folder writable, the run's lock), so a read-only or busy run fails at once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..config import parse_override
from ..io import atomic_write_json
from ..metrics import active_units, mutual_information
from ..train.engine import EVAL_FILE
from ..train.foldingnet import probe_splits, up_axis
from .consistency import (
    DEFAULT_SEED,
    FAMILIES,
    consistency_families,
    consistency_metrics,
    family_seed,
)
from .encode import (
    checkpoint_path,
    encode_dataset,
    encode_posteriors,
    encode_rotated,
    load_run_state,
)
from .output import run_output
from .probe import PROTOCOLS, fit_probe
from .reconstruction import reconstruction_metrics

__all__ = [
    "DATA_KEYS",
    "DEFAULT_SEED",
    "EVAL_FILE",
    "EVAL_VERSION",
    "FAMILIES",
    "PROBE_FILE",
    "PROTOCOLS",
    "check_selection",
    "eval_config",
    "evaluate_run",
    "headline_protocol",
    "probe_run",
    "probe_suite",
]

PROBE_FILE = "probe.json"
# The layout of eval.json, in its "settings": an eval.json of another version is not current
# (2: both probe protocols and the rotated probes).
EVAL_VERSION = 2
# Config keys that say which data is read; the only ones `crfold eval` may override.
DATA_KEYS = (
    "data", "num_points", "up_axis", "to_up", "classes_subset", "normalize", "data_seed",
    "synthetic_train_shapes", "synthetic_test_shapes", "synthetic_rotate", "train_split",
    "probe_split",
)  # fmt: skip


def eval_config(cfg, data: str | None, overrides: list[str] | tuple[str, ...]):
    """The run's config with the data keys changed; ValueError for any other key."""
    pairs = dict(parse_override(o) for o in overrides)
    if data is not None:
        pairs["data"] = data
    bad = sorted(set(pairs) - set(DATA_KEYS))
    if bad:
        raise ValueError(
            f"overrides: only data keys can change at evaluation ({', '.join(DATA_KEYS)}); "
            f"got {', '.join(bad)}"
        )
    return cfg.replace(**pairs) if pairs else cfg


def headline_protocol(standardize: bool) -> str:
    """The protocol summaries print first: "standardized" if ``standardize`` else "raw"."""
    return PROTOCOLS[1] if standardize else PROTOCOLS[0]


def check_selection(run_cfg, cfg, which: str) -> None:
    """ValueError for ``which="best"`` when best.pt was selected on the split the probes score.

    A run whose saved config has ``val_split == probe_split`` (older runs validated on test)
    chose best.pt by its loss on the very shapes the probes are scored on; only ``last.pt`` of
    such a run is free of selection. ``cfg`` is the evaluation's config (data may be overridden:
    other data or another probe split is not what best.pt was chosen on).
    """
    if which != "best":
        return
    if run_cfg.val_split == cfg.probe_split and run_cfg.data == cfg.data:
        raise ValueError(
            f"--which best: best.pt of this run was selected on {run_cfg.val_split!r}, the split "
            f"the probes are scored on (its saved config has val_split == probe_split == "
            f"{cfg.probe_split!r}, an older run); use --which last (no selection)"
        )


def probe_suite(
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    train_rotated: tuple[torch.Tensor, torch.Tensor] | None,
    test_rotated: tuple[torch.Tensor, torch.Tensor] | None,
    C: float,
) -> dict[str, dict[str, Any]]:
    """Every probe of ``crfold eval`` / ``crfold probe``, under both protocols.

    Args:
        train, test: (codes (N, L), labels (N,)) of the train and probe splits.
        train_rotated, test_rotated: the same splits, each shape under its own up-rotation
            (:func:`crfold.eval.encode.encode_rotated`); None: no rotated probes.
        C: inverse regularization of every probe.

    Returns:
        ``{"probe": {protocol: {"svm", "logistic"}}, "probe_rotated_test": {protocol: {"svm"}},
        "probe_rotated_both": {protocol: {"svm"}}}`` (the rotated ones only with rotated codes),
        each leaf a :meth:`crfold.eval.probe.FittedProbe.score` dict. The rotated-test SVM is the
        plain SVM scored on the rotated test codes (one fit).
    """
    out: dict[str, dict[str, Any]] = {"probe": {}}
    rotated = train_rotated is not None and test_rotated is not None
    if rotated:
        out["probe_rotated_test"], out["probe_rotated_both"] = {}, {}
    for protocol in PROTOCOLS:
        std = protocol == "standardized"
        svm = fit_probe("svm", *train, C=C, standardize=std)
        logistic = fit_probe("logistic", *train, C=C, standardize=std)
        out["probe"][protocol] = {"svm": svm.score(*test), "logistic": logistic.score(*test)}
        if rotated:
            out["probe_rotated_test"][protocol] = {"svm": svm.score(*test_rotated)}
            svm_rot = fit_probe("svm", *train_rotated, C=C, standardize=std)
            out["probe_rotated_both"][protocol] = {"svm": svm_rot.score(*test_rotated)}
    return out


def _rotated_codes(model, cfg, train_set, test_set, seed, batch_size, progress):
    """Codes of the train and probe splits under up-rotations drawn from ``seed``, and the
    entries that describe them."""
    up = up_axis(cfg, test_set)
    test_seed = family_seed(seed, "probe_rotated_test")
    train_seed = family_seed(seed, "probe_rotated_train")
    test_rot = encode_rotated(model, test_set, up, test_seed, batch_size, progress)
    train_rot = encode_rotated(model, train_set, up, train_seed, batch_size, progress)
    rotation = f"RandomRotation(axis='up', degrees=180.0, up={up!r}), one draw per shape"
    meta = {
        "probe_rotated_test": {"rotation": rotation, "test_seed": test_seed},
        "probe_rotated_both": {"rotation": rotation, "test_seed": test_seed,
                               "train_seed": train_seed},
    }  # fmt: skip
    return train_rot, test_rot, meta


def _probes(cfg, train, test, train_rot, test_rot, meta) -> dict[str, dict[str, Any]]:
    """The probe entries of eval.json / probe.json."""
    res = probe_suite(train, test, train_rot, test_rot, cfg.probe_C)
    res["probe"].update(headline=headline_protocol(cfg.probe_standardize), C=float(cfg.probe_C))
    for key, entries in meta.items():
        res[key].update(entries)
    return res


def evaluate_run(
    run_dir: str | Path,
    *,
    data: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    which: str = "best",
    families: tuple[str, ...] = FAMILIES,
    seed: int = DEFAULT_SEED,
    mi_batch_size: int | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    write: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluates a run and (by default) writes ``<run_dir>/eval.json`` atomically.

    Args:
        run_dir: a run directory of ``crfold train``.
        data: evaluate on this data (a .npz, an HDF5 folder or "synthetic") instead of the run's.
        overrides: ``key=value`` changes of data keys (:data:`DATA_KEYS`), e.g. ``to_up=y``.
        which: "best" or "last" checkpoint.
        families: the transform families of the consistency metric (subset of :data:`FAMILIES`).
        seed: seed of the held-out transforms, of the rotations of the rotated probes and of
            the MI samples.
        mi_batch_size: minibatch of the MI estimator; None: the whole probe split.
        batch_size: clouds per forward pass.
        device: where to run the model.
        write: claim the run first (lock, writable folder), then write eval.json.
        progress: show progress bars.

    Returns:
        ``{"run_dir", "checkpoint", "step", "epoch", "mode", "lam", "latent_dim", "data",
        "train_split", "split", "num_samples", "reconstruction", "probe": {"raw": {"svm",
        "logistic"}, "standardized": {"svm", "logistic"}, "headline", "C"},
        "probe_rotated_test": {"raw": {"svm"}, "standardized": {"svm"}, "rotation",
        "test_seed"}, "probe_rotated_both": {... "train_seed"}, "mutual_information": {"nats",
        "batch_size"}, "active_units": {"count", "latent_dim", "threshold"}, "consistency":
        {family: latent_consistency dict}, "transforms": {family: repr}, "settings" (the
        arguments and :data:`EVAL_VERSION`, to tell whether a saved eval.json is current),
        "seconds"}``. For an ``ae`` run (no posterior variance) MI and the consistency KL are
        None.

    Raises:
        ValueError: unknown family, non-data override, unreadable checkpoint or data, or
            ``which="best"`` for a run that selected best.pt on its probe split
            (:func:`check_selection`).
        FileNotFoundError: no such checkpoint or data.
        WriteError, RunLockedError: (``write``) the run cannot take eval.json, or is busy.
    """
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise ValueError(f"families: expected a subset of {FAMILIES}, got unknown {unknown}")
    args = dict(data=data, overrides=overrides, which=which, families=families, seed=seed,
                mi_batch_size=mi_batch_size, batch_size=batch_size, device=device,
                progress=progress)  # fmt: skip
    if not write:
        return _evaluate(run_dir, **args)
    ckpt = checkpoint_path(run_dir, which).name
    with run_output(run_dir, EVAL_FILE, "crfold eval", ckpt) as path:
        result = _evaluate(run_dir, **args)
        atomic_write_json(path, result)
    return result


def _evaluate(
    run_dir, *, data, overrides, which, families, seed, mi_batch_size, batch_size, device, progress
) -> dict[str, Any]:
    t0 = time.perf_counter()
    model, run_cfg, state = load_run_state(run_dir, which, map_location=device)
    cfg = eval_config(run_cfg, data, overrides)
    check_selection(run_cfg, cfg, which)
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    train_set, test_set = probe_splits(cfg)
    mu, logvar, y_te = encode_posteriors(model, test_set, batch_size, progress)
    z_tr, y_tr = encode_dataset(model, train_set, batch_size, progress)
    rotated = _rotated_codes(model, cfg, train_set, test_set, seed, batch_size, progress)
    probes = _probes(cfg, (z_tr, y_tr), (mu, y_te), *rotated)
    stochastic = run_cfg.mode != "ae"  # an AE has no posterior variance: no MI, no KL
    mi, mi_b = None, mi_batch_size or int(mu.shape[0])
    if stochastic:
        mi, mi_b = mutual_information(
            mu, logvar, mi_batch_size, generator=torch.Generator().manual_seed(seed),
            return_batch_size=True,
        )  # fmt: skip
    au, _ = active_units(mu)
    every = consistency_families(up_axis(cfg, test_set))
    transforms = {name: every[name] for name in families}
    consistency = consistency_metrics(
        model, test_set, transforms, seed, batch_size, progress, posteriors=(mu, logvar)
    )
    if not stochastic:
        for values in consistency.values():
            values["kl"] = None
    return {
        "run_dir": str(run_dir),
        "checkpoint": which,
        "step": int(state.get("step", -1)),
        "epoch": int(state.get("epoch", -1)),
        "mode": run_cfg.mode,
        "lam": run_cfg.lam,
        "latent_dim": run_cfg.latent_dim,
        "data": cfg.data,
        "train_split": cfg.train_split,
        "split": cfg.probe_split,
        "num_samples": int(mu.shape[0]),
        "reconstruction": reconstruction_metrics(model, test_set, batch_size, progress=progress),
        **probes,
        "mutual_information": {"nats": mi, "batch_size": int(mi_b)},
        "active_units": {"count": au, "latent_dim": int(mu.shape[1]), "threshold": 0.01},
        "consistency": consistency,
        "transforms": {name: repr(t) for name, t in transforms.items()},
        "settings": {
            "which": which,
            "data": data,
            "overrides": list(overrides),
            "families": list(families),
            "seed": seed,
            "mi_batch_size": mi_batch_size,
            "version": EVAL_VERSION,
        },
        "seconds": time.perf_counter() - t0,
    }


def probe_run(
    run_dir: str | Path,
    C: float | None = None,
    standardize: bool | None = None,
    which: str = "best",
    batch_size: int = 64,
    device: str = "cpu",
    write: bool = True,
    progress: bool = False,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """Linear probes on a run's codes: fit on its train split, score on its probe split.

    The codes are the posterior means of the run's ``train_split`` and ``probe_split`` (for
    ShapeNet that is train -> test; for the ModelNet40 sample train -> test), through a linear
    SVM (the FoldingNet protocol, ``LinearSVC(C, random_state=0)``) and a logistic regression
    (:mod:`crfold.eval.probe`), under both protocols - ``raw`` (FoldingNet's) and
    ``standardized`` (StandardScaler fit on the train codes) - plus the rotated probes of
    :func:`evaluate_run` (``probe_rotated_test``, ``probe_rotated_both``).

    Args:
        run_dir: a run directory of ``crfold train``.
        C: inverse regularization of every probe; None uses the run's ``probe_C``.
        standardize: which protocol is the headline (``svm`` / ``logistic`` at the top level,
            printed first); None uses the run's ``probe_standardize``. Both are computed.
        which: "best" or "last" checkpoint ("best" is refused for a run that selected best.pt
            on its probe split, :func:`check_selection`).
        batch_size: clouds per forward pass while encoding.
        device: where to encode ("cpu", "cuda", ...).
        write: claim the run first (lock, writable folder), then write ``<run_dir>/probe.json``
            (atomically).
        progress: show progress bars.
        seed: seed of the rotations of the rotated probes.

    Returns:
        ``{"svm": {...}, "logistic": {...}, "headline", "raw": {"svm", "logistic"},
        "standardized": {"svm", "logistic"}, "probe_rotated_test", "probe_rotated_both",
        "checkpoint", "step", "epoch", "data", "train_split", "test_split", "latent_dim",
        "classes", "seed", "encode_seconds", "probe_seconds"}``: the top-level ``svm`` /
        ``logistic`` are those of the ``headline`` protocol (as older probe.json files had
        them), each probe dict that of :func:`crfold.eval.probe.svm_probe`.

    Raises:
        ValueError, FileNotFoundError: a bad option, an unreadable or missing checkpoint or data.
        WriteError, RunLockedError: (``write``) the run cannot take probe.json, or is busy.
    """
    args = dict(C=C, standardize=standardize, which=which, batch_size=batch_size, device=device,
                progress=progress, seed=seed)  # fmt: skip
    if not write:
        return _probe(run_dir, **args)
    ckpt = checkpoint_path(run_dir, which).name
    with run_output(run_dir, PROBE_FILE, "crfold probe", ckpt) as path:
        result = _probe(run_dir, **args)
        atomic_write_json(path, result)
    return result


def _probe(run_dir, *, C, standardize, which, batch_size, device, progress, seed) -> dict[str, Any]:
    model, cfg, state = load_run_state(run_dir, which, map_location=device)
    check_selection(cfg, cfg, which)
    if cfg.num_threads is not None:  # the run's CPU thread setting applies to encoding too
        torch.set_num_threads(cfg.num_threads)
    pairs: dict[str, Any] = {}
    if C is not None:
        pairs["probe_C"] = float(C)
    if standardize is not None:
        pairs["probe_standardize"] = bool(standardize)
    cfg = cfg.replace(**pairs) if pairs else cfg
    t0 = time.perf_counter()
    train_set, test_set = probe_splits(cfg)
    z_tr, y_tr = encode_dataset(model, train_set, batch_size, progress)
    z_te, y_te = encode_dataset(model, test_set, batch_size, progress)
    rotated = _rotated_codes(model, cfg, train_set, test_set, seed, batch_size, progress)
    t1 = time.perf_counter()
    res = _probes(cfg, (z_tr, y_tr), (z_te, y_te), *rotated)
    probe = res.pop("probe")
    headline = probe["headline"]
    return {
        **probe[headline],
        "headline": headline,
        **{p: probe[p] for p in PROTOCOLS},
        **res,
        "checkpoint": which,
        "step": int(state.get("step", -1)),
        "epoch": int(state.get("epoch", -1)),
        "data": cfg.data,
        "train_split": cfg.train_split,
        "test_split": cfg.probe_split,
        "latent_dim": cfg.latent_dim,
        "classes": list(train_set.classes),
        "seed": seed,
        "encode_seconds": t1 - t0,
        "probe_seconds": time.perf_counter() - t1,
    }
