"""``crfold eval``: every metric of a trained run in one ``eval.json``.

>>> result = evaluate_run("runs/demo")                # writes runs/demo/eval.json
>>> result["probe"]["svm"]["accuracy"], result["consistency"]["rotation"]["relative_mu_distance"]

What it measures, on the run's probe split (``probe_split``, "test") unless overridden:

* ``reconstruction``: Chamfer of decode(mu(x)) against x in both conventions (FoldingNet's
  sqrt/max and the squared sum), :func:`crfold.evaluate.reconstruction_metrics`.
* ``probe``: linear SVM and logistic regression fit on the codes of ``train_split`` and scored on
  the probe split (:mod:`crfold.probe`).
* ``mutual_information`` and ``active_units`` of q(z|x) over the probe split
  (:mod:`crfold.metrics`; MI with the whole split as one minibatch unless ``mi_batch_size``).
* ``consistency``: for each transform family (rotation, translation, scale, jitter; held-out
  draws from a generator seeded with ``seed``, not the training one), the mean
  KL(q(z|t(x)) || q(z|x)) and the mean ||mu(t(x)) - mu(x)|| relative to the mean distance
  between codes of different shapes (:func:`crfold.metrics.latent_consistency`).

``data`` / ``overrides`` evaluate on other data than the run was trained on (e.g. a model trained
on ShapeNet probed on ModelNet40, the paper's protocol): only data keys may change.
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .checkpoint import atomic_write_json
from .config import parse_override
from .evaluate import (
    encode_dataset,
    encode_posteriors,
    load_run_state,
    reconstruction_metrics,
)
from .metrics import active_units, latent_consistency, mutual_information
from .probe import logistic_probe, svm_probe
from .trainer_utils import open_split, up_axis
from .transforms import (
    PointTransform,
    RandomJitter,
    RandomRotation,
    RandomScale,
    RandomTranslation,
)

__all__ = [
    "DATA_KEYS",
    "DEFAULT_SEED",
    "EVAL_FILE",
    "FAMILIES",
    "consistency_families",
    "consistency_metrics",
    "evaluate_run",
    "family_seed",
]

EVAL_FILE = "eval.json"
FAMILIES = ("rotation", "translation", "scale", "jitter")
DEFAULT_SEED = 1234  # of the held-out transforms and MI samples (not a training seed)
# Config keys that say which data is read; the only ones `crfold eval` may override.
DATA_KEYS = (
    "data", "num_points", "up_axis", "to_up", "classes_subset", "normalize", "data_seed",
    "synthetic_train_shapes", "synthetic_test_shapes", "synthetic_rotate", "train_split",
    "probe_split",
)  # fmt: skip


def consistency_families(up: str) -> dict[str, PointTransform]:
    """The held-out transform of each family, at the strengths of common point-cloud training.

    rotation: about the up axis, uniform in [-180, 180] degrees (FoldingNet's augmentation);
    translation: per-axis U(-0.2, 0.2); scale: per-axis U(2/3, 3/2) (PointNet++/DGCNN);
    jitter: N(0, 0.01^2) per point, clipped at 0.02. Fixed (not the run's ``aug_*``) so that every
    run is measured against the same transforms.

    Args:
        up: the data's up axis ("x", "y" or "z").
    """
    return {
        "rotation": RandomRotation(axis="up", degrees=180.0, up=up),
        "translation": RandomTranslation(shift=0.2),
        "scale": RandomScale(2.0 / 3.0, 1.5),
        "jitter": RandomJitter(sigma=0.01, clip=0.02),
    }


def family_seed(seed: int, name: str) -> int:
    """The seed of a family's transform draws: from the base seed and the family's name."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


@torch.no_grad()
def consistency_metrics(
    model: torch.nn.Module,
    dataset,
    transforms: dict[str, PointTransform],
    seed: int = DEFAULT_SEED,
    batch_size: int = 64,
    progress: bool = False,
    posteriors: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, dict[str, float | int]]:
    """Latent consistency of ``model`` under each transform, over every sample of ``dataset``.

    Args:
        model: anything with ``encode(x (B, N, 3)) -> Posterior`` and parameters (eval mode is
            the caller's business).
        dataset: yields ``(points (N, 3), label)``.
        transforms: family name -> transform; each draws from its own generator, seeded by
            :func:`family_seed` from ``seed`` and the name, so the draws of a family do not
            depend on which other families are measured.
        seed: base seed of the draws (and of the pair sampler of the reference distance).
        batch_size: clouds per forward pass.
        progress: show progress bars.
        posteriors: ``(mu, logvar)`` of q(z|x) over ``dataset`` if already computed.

    Returns:
        family -> :func:`crfold.metrics.latent_consistency` dict (``kl``, ``mu_distance``,
        ``code_distance``, ``relative_mu_distance``, ``n``, ``n_pairs``).
    """
    device = next(model.parameters()).device
    if posteriors is None:
        posteriors = encode_posteriors(model, dataset, batch_size)[:2]
    mu, logvar = posteriors
    out = {}
    for name, transform in transforms.items():
        gen = torch.Generator(device=device).manual_seed(family_seed(seed, name))
        mus, logvars = [], []
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
        for x, _ in tqdm(loader, desc=name, disable=not progress):
            post = model.encode(transform(x.to(device).float(), generator=gen))  # x (B, N, 3)
            mus.append(post.mu.float().cpu())
            logvars.append(post.logvar.float().cpu())
        post_t = (torch.cat(mus), torch.cat(logvars))
        out[name] = latent_consistency((mu, logvar), post_t, seed=seed)
    return out


def _eval_config(cfg, data: str | None, overrides: list[str] | tuple[str, ...]):
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
        seed: seed of the held-out transforms and of the MI samples.
        mi_batch_size: minibatch of the MI estimator; None: the whole probe split.
        batch_size: clouds per forward pass.
        device: where to run the model.
        write: write eval.json.
        progress: show progress bars.

    Returns:
        ``{"run_dir", "checkpoint", "step", "epoch", "mode", "lam", "latent_dim", "data",
        "train_split", "split", "num_samples", "reconstruction", "probe": {"svm", "logistic"},
        "mutual_information": {"nats", "batch_size"}, "active_units": {"count", "latent_dim",
        "threshold"}, "consistency": {family: latent_consistency dict}, "transforms":
        {family: repr}, "settings" (the arguments, to tell whether a saved eval.json is current),
        "seconds"}``. For an ``ae`` run (no posterior variance) MI and the consistency KL are
        None.

    Raises:
        ValueError: unknown family, non-data override, unreadable checkpoint or data.
        FileNotFoundError: no such checkpoint or data.
    """
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise ValueError(f"families: expected a subset of {FAMILIES}, got unknown {unknown}")
    t0 = time.perf_counter()
    model, run_cfg, state = load_run_state(run_dir, which, map_location=device)
    cfg = _eval_config(run_cfg, data, overrides)
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    test_set = open_split(cfg, cfg.probe_split)
    train_set = open_split(cfg, cfg.train_split)
    mu, logvar, y_te = encode_posteriors(model, test_set, batch_size, progress)
    z_tr, y_tr = encode_dataset(model, train_set, batch_size, progress)
    C, standardize = cfg.probe_C, cfg.probe_standardize
    probe = {
        "svm": svm_probe(z_tr, y_tr, mu, y_te, C=C, standardize=standardize),
        "logistic": logistic_probe(z_tr, y_tr, mu, y_te, C=C, standardize=standardize),
    }
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
    result: dict[str, Any] = {
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
        "probe": probe,
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
        },
        "seconds": time.perf_counter() - t0,
    }
    if write:
        atomic_write_json(Path(run_dir) / EVAL_FILE, result)
    return result
