"""The paper's image tables (§4.1, Tables 1-6) as runnable experiments.

    crfold images tables table1 table3 --data mnist5k=mnist --models vae --seeds 3 \\
        --epochs 10 --set width=0.25 --out results/images

(``python -m crfold_images.experiments ...`` is the same command.) A relative data root is
looked up under ``$CRFOLD_DATA`` when it does not exist from the working directory.

Each table is a spec on top of the experiment runner (:mod:`crfold.experiments.runner`): its
grid of cells x seeds is a plan of runs (:func:`plan_table`), which the runner trains ``--jobs``
at a time as child processes ``python -m crfold train`` (``task=images``; output in
``<run>.log``), each evaluated by the engine when it finishes (MI, AU, IW-NLL, probe accuracy,
latent consistency: the run's ``eval.json``). The report reads every run's ``eval.json`` and
``summary.json`` (:func:`crfold.experiments.report.load_results`) and writes ``<out>/<table>.md``
(the paper's layout, mean ± std over seeds, then every metric of every cell - a cell whose mean
shows nothing carries its flag, e.g. ``10.1 ± 0.3 (chance)``, and a last section says what the
numbers can and cannot show, :mod:`crfold_images.caveats`), ``<table>.json``,
``<plots>_bars.png`` (MI / AU / NLL bars) and ``<plots>_samples.png`` (prior samples and
reconstructions of seed 0 of each cell).

Grids (rows as in the paper; models: vae, iwae, beta0.5, beta10):

* table1 / table2 / table3: every dataset x model x {base, +Aug, CR}; table1 reports MI and AU,
  table2 the linear-probe accuracy, table3 the IW-NLL.
* table4: VAE, VAE + Aug, and CR-VAE for lambda in {0.001, 0.01, 0.1, 1} (first dataset).
* table5: VAE, VAE + Aug, and CR-VAE with rotations only, translations only, scaling only, all
  (first dataset).
* table6: VAE, VAE + augmentations, VAE + triplet loss, CR-VAE (first dataset).

Tables 4 and 5 carry the VAE and VAE + Aug rows (the paper's tables do not) so that every row
is tested against base and + Aug; they are table1's runs, trained once. Every report tests each
row against its base and + Aug rows (Welch's t-test over seeds) and says, claim by claim,
whether the paper's reading of the table holds here (:mod:`crfold_images.claims`).

Run directories are ``<out>/runs/<dataset>/<cell>-<hash>/seed<k>``, the hash covering the keys
that define a run (every key outside ``ImageConfig.RESUMABLE``) but ``seed`` and ``data_root``,
so identical cells of different tables (table6's CR-VAE is table1's) train once. The runner's
rules apply: finished, evaluated runs are skipped on rerun, unfinished ones resume, a rerun with
more ``--epochs`` continues the finished runs from their last epoch (exactly as an uninterrupted
run would have trained; fewer epochs than a run already has is an error), a run directory whose
saved config differs in a run-defining key is an error before anything trains, each run is
locked while a child writes it, and SIGINT/SIGTERM stop the children after they saved
``last.pt``. Evaluation settings (``eval_samples``, ...) and runtime keys (``num_threads``, ...)
may differ from a finished run's: its ``eval.json`` is reused (the report quotes the settings it
was computed with).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crfold.config import RunConfig, load_config
from crfold.experiments.report import load_results, train_seconds
from crfold.experiments.runner import EngineEval, PlannedRun, exit_status, run_plan, train_state
from crfold.io import atomic_write_json
from crfold_images.caveats import FLAG_TEXT, standing_caveats
from crfold_images.caveats import flag as flag_of
from crfold_images.claims import Claim, direction_section, verdict, welch_table
from crfold_images.config import ImageConfig
from crfold_images.report import bar_plot, markdown_table, marked, mean_std, montage, write_text
from crfold_images.train import RUN_EXTEND, RUN_IGNORE

__all__ = [
    "Cell",
    "TABLES",
    "add_table_arguments",
    "build_grid",
    "cell_config",
    "comparisons",
    "config_digest",
    "plots_name",
    "main",
    "plan_table",
    "run_command",
    "run_dir_of",
    "run_key",
    "run_table",
    "run_tables",
    "threads_per_run",
    "train_plan",
    "write_table",
]

TABLES = ("table1", "table2", "table3", "table4", "table5", "table6")
MODELS = {  # name -> (row label, overrides)
    "vae": ("VAE", {"objective": "vae", "beta": 1.0}),
    "iwae": ("IWAE", {"objective": "iwae", "beta": 1.0}),
    "beta0.5": ("β-VAE (0.5)", {"objective": "vae", "beta": 0.5}),
    "beta10": ("β-VAE (10)", {"objective": "vae", "beta": 10.0}),
}
LAMBDAS = (0.001, 0.01, 0.1, 1.0)
AUGMENTS = (("Rotations only", "rotate"), ("Translations only", "translate"),
            ("Scaling only", "scale"), ("All", "all"))  # fmt: skip


@dataclass
class Cell:
    """One row of a table on one dataset: a label and the config overrides that define it."""

    label: str
    dataset: str
    overrides: dict[str, Any] = field(default_factory=dict)


def _mode_label(model: str, mode: str) -> str:
    base = MODELS[model][0]
    if mode == "base":
        return base
    if mode == "aug":
        return f"{base} + Aug"
    if model.startswith("beta"):
        return base.replace("β-VAE", "β-CR-VAE")
    return f"CR-{base}"


def build_grid(table: str, datasets: list[str], models: list[str]) -> list[Cell]:
    """The cells of ``table``: tables 1-3 on every dataset, tables 4-6 on the first."""
    if table not in TABLES:
        raise ValueError(f"table must be one of {TABLES}, got {table!r}")
    datasets, models = list(dict.fromkeys(datasets)), list(dict.fromkeys(models))
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"models must be among {tuple(MODELS)}, got {unknown}")
    if table in ("table1", "table2", "table3"):
        return [
            Cell(_mode_label(m, mode), ds, {**MODELS[m][1], "mode": mode})
            for ds in datasets
            for m in models
            for mode in ("base", "aug", "cr")
        ]
    ds, vae = datasets[0], MODELS["vae"][1]
    references = [Cell("VAE", ds, {**vae, "mode": "base"}),
                  Cell("VAE + Aug", ds, {**vae, "mode": "aug"})]  # fmt: skip
    if table == "table4":
        return references + [
            Cell(f"CR-VAE λ={lam:g}", ds, {**vae, "mode": "cr", "lam": lam}) for lam in LAMBDAS
        ]
    if table == "table5":
        return references + [
            Cell(label, ds, {**vae, "mode": "cr", "augment": a}) for label, a in AUGMENTS
        ]
    return [
        Cell("VAE", ds, {**vae, "mode": "base"}),
        Cell("VAE + augmentations", ds, {**vae, "mode": "aug"}),
        Cell("VAE + triplet loss", ds, {**vae, "mode": "triplet"}),
        Cell("CR-VAE", ds, {**vae, "mode": "cr"}),
    ]


def cell_config(
    base: ImageConfig, cell: Cell, roots: dict[str, str | None], seed: int
) -> ImageConfig:
    """The run config of ``cell`` at ``seed``: the base config with the cell's overrides."""
    return base.replace(
        dataset=cell.dataset, data_root=roots.get(cell.dataset), seed=seed, **cell.overrides
    )


# Run-defining keys that still do not name another run directory: the seed has its own folder,
# the same data moved elsewhere is the same run. (``epochs`` is resumable: a larger --epochs
# extends a finished run, resumed exactly.)
_NOT_HASHED = ("seed", "data_root")


def run_key(cfg: RunConfig) -> dict[str, Any]:
    """The keys that name a run directory: the run-defining ones but seed and data_root, and
    but the keys of ``ImageConfig.UNNAMED_DEFAULTS`` while at that default (keys added after
    runs were named: those runs keep their directories)."""
    unnamed = getattr(cfg, "UNNAMED_DEFAULTS", {})
    return {
        k: v
        for k, v in cfg.to_dict().items()
        if k not in cfg.RESUMABLE
        and k not in _NOT_HASHED
        and not (k in unnamed and v == unnamed[k])
    }


def config_digest(cfg: RunConfig) -> str:
    """8 hex digits naming the run-defining keys of ``cfg`` (:func:`run_key`) in directories."""
    return hashlib.sha1(json.dumps(run_key(cfg), sort_keys=True).encode()).hexdigest()[:8]


def run_dir_of(out: Path, cfg: ImageConfig) -> Path:
    """``<out>/runs/<dataset>/<objective>-b<beta>-<mode>-<hash>/seed<k>``."""
    slug = f"{cfg.objective}-b{cfg.beta:g}-{cfg.mode}-{config_digest(cfg)}"
    return out / "runs" / cfg.dataset / slug / f"seed{cfg.seed}"


def threads_per_run(base: RunConfig, jobs: int) -> int | None:
    """``num_threads`` of each child: the config's, else ``cpu_count // jobs`` when ``jobs > 1``
    (None: torch's default, for one run at a time)."""
    if base.num_threads is not None or jobs <= 1:
        return base.num_threads
    return max(1, (os.cpu_count() or 1) // jobs)


def _tag(cell: Cell) -> str:
    return f"{cell.dataset}: {cell.label}"


def plan_table(
    out: Path,
    base: ImageConfig,
    cells: list[Cell],
    roots: dict[str, str | None],
    seeds: list[int],
    threads: int | None = None,
) -> list[list[PlannedRun]]:
    """The runs of the grid: per cell, one :class:`PlannedRun` per seed (labelled
    ``"<dataset>: <cell label>"``, in :func:`run_dir_of`), trained with ``threads`` torch threads
    when given."""
    plan = []
    for cell in cells:
        runs = []
        for seed in seeds:
            cfg = cell_config(base, cell, roots, seed)
            if threads is not None:
                cfg = cfg.replace(num_threads=threads)
            runs.append(PlannedRun(run_dir_of(out, cfg), cfg, label=_tag(cell)))
        plan.append(runs)
    return plan


def train_plan(plan: list[list[PlannedRun]], jobs: int = 1, quiet: bool = False) -> None:
    """Trains and evaluates the runs of a grid with the runner (each run directory once; the
    paired modes first: they cost ~2x a base run)."""
    unique: dict[Path, PlannedRun] = {}
    for run in (r for cell_runs in plan for r in cell_runs):
        unique.setdefault(run.run_dir.resolve(), run)
    runs = sorted(unique.values(), key=lambda r: r.config.mode == "base")
    evaluation = EngineEval()
    if not quiet:
        done = sum(
            train_state(r, RUN_IGNORE, RUN_EXTEND) == "done"
            and evaluation.is_current(r.run_dir, r.config)
            for r in runs
        )
        print(f"{len(runs)} runs, {done} already finished, {len(runs) - done} to train or evaluate")
    run_plan(
        runs, jobs=jobs, evaluation=evaluation, ignore=RUN_IGNORE, extend=RUN_EXTEND, quiet=quiet
    )


def _metric(results: list[dict[str, Any]], key: str) -> list[float]:
    return [r[key] for r in results if r.get(key) is not None]


def _cell_flag(results: list[dict[str, Any]], key: str) -> str | None:
    """The flag (:mod:`crfold_images.caveats`) of the mean over seeds of ``key`` in a cell."""
    values = [v for v in _metric(results, key) if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return None
    return flag_of(key, sum(values) / len(values), results[0])


def _cell(results: list[dict[str, Any]], key: str, digits: int = 1, scale: float = 1.0) -> str:
    """``mean ± std`` of ``key`` over a cell's seeds, marked with the mean's flag."""
    return marked(mean_std(_metric(results, key), digits, scale), _cell_flag(results, key))


def _colour(results: list[dict[str, Any]]) -> bool:
    """Whether a cell's runs use a discrete colour likelihood (NLL also reported in bits/dim)."""
    return any(r.get("likelihood") == "logistic" for r in results)


def _main_table(table: str, cells: list[Cell], results) -> str:
    """The paper's layout of ``table``; flagged cells are marked (:func:`_cell`); colour data
    sets get their NLL in bits/dim beside the nats."""
    datasets = list(dict.fromkeys(c.dataset for c in cells))
    if table in ("table1", "table2", "table3"):
        labels = list(dict.fromkeys(c.label for c in cells))
        cols = {"table1": [("MI", "mi", 1, 1.0), ("AU", "au", 1, 1.0)],
                "table2": [("Acc. %", "probe_accuracy", 1, 100.0)],
                "table3": [("NLL", "iw_nll", 1, 1.0)]}[table]  # fmt: skip
        per_ds = {}
        for ds in datasets:
            ds_results = [r for i, c in enumerate(cells) if c.dataset == ds for r in results[i]]
            extra = [("bpd", "iw_nll_bpd", 3, 1.0)] if table == "table3" else []
            per_ds[ds] = cols + (extra if _colour(ds_results) else [])
        header = ["Method"] + [f"{ds} {name}" for ds in datasets for name, *_ in per_ds[ds]]
        rows = []
        for label in labels:
            row = [label]
            for ds in datasets:
                idx = next(i for i, c in enumerate(cells) if c.label == label and c.dataset == ds)
                for _, key, digits, scale in per_ds[ds]:
                    row.append(_cell(results[idx], key, digits, scale))
            rows.append(row)
        return markdown_table(header, rows)
    first = {"table4": "Method", "table5": "Augmentation", "table6": "Method"}[table]
    header = [first, "MI", "AU", "NLL", "Acc. %"]
    rows = [
        [c.label, _cell(results[i], "mi"), _cell(results[i], "au"), _cell(results[i], "iw_nll"),
         _cell(results[i], "probe_accuracy", 1, 100.0)]
        for i, c in enumerate(cells)
    ]  # fmt: skip
    return markdown_table(header, rows)


# (eval.json key, name, higher is better, digits, scale) of the metrics each table reads.
_MI, _AU = ("mi", "MI", True, 2, 1.0), ("au", "AU", True, 1, 1.0)
_NLL, _PROBE = ("iw_nll", "NLL", False, 2, 1.0), ("probe_accuracy", "Acc. %", True, 1, 100.0)
TABLE_METRICS = {"table1": (_MI, _AU), "table2": (_PROBE,), "table3": (_NLL,),
                 "table4": (_MI, _AU, _NLL, _PROBE), "table5": (_MI, _AU, _NLL, _PROBE),
                 "table6": (_MI, _AU, _NLL, _PROBE)}  # fmt: skip
# What the paper reads in each table (its captions and §4.1), with its own exceptions.
PAPER_READING = {
    "table1": "CR beats + Aug, which beats the base model, in MI and active units (its own "
              "Table 1 ties at AU 50 of 50 on Omniglot and for β-VAE (0.5))",
    "table2": "CR beats + Aug, which beats the base model, in linear-probe accuracy",
    "table3": "CR beats + Aug, which beats the base model, in NLL, \"on almost all cases\" (its "
              "own Table 3 reverses for β-VAE (10) on MNIST and Omniglot)",
    "table4": "every λ in {0.001, 0.01, 0.1} beats the VAE, λ = 0.1 beats + Aug, and a large λ "
              "(1) is worse than the VAE (its own Table 4: in MI and NLL, not in AU); MI, AU "
              "and NLL only (the paper's Table 4 has no probe)",
    "table5": "all augmentations together beat each one alone (MI, AU and NLL; no probe in the "
              "paper's Table 5)",
    "table6": "CR-VAE beats VAE + augmentations, which beats VAE + triplet loss (MI, AU and NLL; "
              "no probe in the paper's Table 6)",
}  # fmt: skip


def _role(cell: Cell) -> tuple[tuple[Any, ...], str]:
    """(group, role) of a cell: its dataset and model, and base / aug / the mode."""
    o = cell.overrides
    return (cell.dataset, o.get("objective"), o.get("beta")), o.get("mode", "base")


def comparisons(table: str, cells: list[Cell], tags: list[str]) -> tuple[list, list[Claim]]:
    """What a table's report tests: each row against its group's base and + Aug rows (a group:
    one dataset and model), and the paper's claims (:data:`PAPER_READING`) as orderings of
    the rows (:class:`crfold_images.claims.Claim`)."""
    groups: dict[tuple[Any, ...], dict[str, list[str]]] = {}
    for cell, tag in zip(cells, tags):
        group, role = _role(cell)
        groups.setdefault(group, {}).setdefault(role, []).append(tag)
    against = []
    for cell, tag in zip(cells, tags):
        group, role = _role(cell)
        refs = {name: groups[group][mode][0] for name, mode in (("base", "base"), ("+ Aug", "aug"))
                if mode in groups[group] and mode != role}  # fmt: skip
        if refs and role != "base":  # the base row is only a reference
            against.append((tag, refs))
    at = {c.label: t for c, t in zip(cells, tags)}.__getitem__
    mi_au_nll = ("mi", "au", "iw_nll")  # tables 4-6 of the paper: no probe
    if table in ("table1", "table2", "table3"):
        every = tuple(key for key, *_ in TABLE_METRICS[table])
        orders = [((g["cr"][0], g["aug"][0], g["base"][0]), every) for g in groups.values()
                  if all(m in g for m in ("base", "aug", "cr"))]  # fmt: skip
    elif table == "table4":
        orders = [((at("CR-VAE λ=0.1"), at("VAE + Aug"), at("VAE")), mi_au_nll),
                  ((at("CR-VAE λ=0.01"), at("VAE")), mi_au_nll),
                  ((at("CR-VAE λ=0.001"), at("VAE")), mi_au_nll),
                  ((at("VAE"), at("CR-VAE λ=1")), ("mi", "iw_nll"))]  # fmt: skip
    elif table == "table5":
        orders = [((at("All"), at(label)), mi_au_nll) for label, a in AUGMENTS if a != "all"]
    else:
        orders = [((at("CR-VAE"), at("VAE + augmentations"), at("VAE + triplet loss")),
                   mi_au_nll)]  # fmt: skip
    metric = {key: (name, higher) for key, name, higher, *_ in TABLE_METRICS[table]}
    claims = [Claim(key, *metric[key], order) for order, keys in orders for key in keys]
    return against, claims


def _direction_section(table: str, cells: list[Cell], tags: list[str], results) -> str:
    """Whether the paper's reading of the table holds here, claim by claim, and Welch's tests
    of every row against base and + Aug (:func:`crfold_images.claims.direction_section`)."""
    metrics = TABLE_METRICS[table]
    scales = {key: scale for key, _, _, _, scale in metrics}

    def values(key: str) -> dict[str, list[float]]:
        return {t: [v * scales.get(key, 1.0) for v in _metric(results[i], key)]
                for i, t in enumerate(tags)}  # fmt: skip

    against, claims = comparisons(table, cells, tags)
    index = {t: i for i, t in enumerate(tags)}
    verdicts = [
        verdict(c, values(c.metric), lambda row, k=c.metric: _cell_flag(results[index[row]], k))
        for c in claims
    ]
    rows = [(key, name, higher, digits) for key, name, higher, digits, _ in metrics]
    return direction_section(PAPER_READING[table], verdicts, welch_table(against, values, rows))


def _caveat_section(tags: list[str], results, seeds: int) -> str:
    """What the table's numbers can and cannot show: its flagged cells (mean over seeds) with
    the meaning of their flags, then the standing caveats of its runs."""
    lines, used = [], {}
    for i, tag in enumerate(tags):
        for name, key, digits, scale in DETAIL_COLUMNS:
            f = _cell_flag(results[i], key)
            if f is not None:
                value = mean_std(_metric(results[i], key), digits, scale)
                lines.append(f"- {tag}: {name} = {value} ({f})")
                used[f] = FLAG_TEXT[f]
    legend = [f"- ({f}): {text}" for f, text in used.items()]
    standing = []
    for cell_results in results.values():
        for r in cell_results:
            standing += [c for c in standing_caveats(r) if c not in standing]
    if seeds == 1:
        standing.append("one seed: no spread, differences between rows may be noise")
    text = ["\n## What these numbers can and cannot show\n\n"]
    if lines:
        text += ["Flagged cells (the mean over seeds):\n\n", "\n".join(lines), "\n\nFlags:\n\n"]
        text += ["\n".join(legend), "\n\n"]
    else:
        text.append("No cell is at chance, at the MI ceiling or collapsed.\n\n")
    text += ["Whatever the values:\n\n"] + [f"- {c}\n" for c in standing]
    return "".join(text)


DETAIL_COLUMNS = (
    ("MI", "mi", 2, 1.0),
    ("rate", "rate", 2, 1.0),
    ("AU", "au", 1, 1.0),
    ("IW-NLL", "iw_nll", 2, 1.0),
    ("IW-NLL bpd", "iw_nll_bpd", 3, 1.0),
    ("-ELBO", "neg_elbo", 2, 1.0),
    ("probe %", "probe_accuracy", 1, 100.0),
    ("KL cons.", "consistency_kl", 2, 1.0),
    ("rel. mu shift", "consistency_relative", 3, 1.0),
    ("train s", "train_seconds", 0, 1.0),
)


def run_table(
    table: str,
    out: Path,
    base: ImageConfig,
    datasets: list[str],
    roots: dict[str, str | None],
    models: list[str],
    seeds: list[int],
    command: str = "",
    quiet: bool = False,
    jobs: int = 1,
) -> dict[str, Any]:
    """Train and evaluate the grid of ``table``; write its markdown, JSON and plots.

    Returns:
        ``{"table", "cells": [{"label", "dataset", "overrides", "results": [per seed]}]}``.

    Raises:
        ValueError: a bad option, or a run directory trained with another config.
        RunLockedError: runs another process was writing (the others still ran).
        RuntimeError: runs whose training failed (the others still ran; rerun to resume).
        KeyboardInterrupt: stopped by SIGINT/SIGTERM after the children saved ``last.pt``.
    """
    cells = build_grid(table, datasets, models)
    plan = plan_table(out, base, cells, roots, seeds, threads_per_run(base, jobs))
    train_plan(plan, jobs, quiet)
    return write_table(table, out, base, cells, plan, seeds, command)


def _result(row: dict[str, Any]) -> dict[str, Any]:
    """A run's ``eval.json``; ``train_seconds`` from its ``summary.json`` where eval.json has
    none (the engine copies it there when it evaluates)."""
    result = dict(row["eval"])
    if result.get("train_seconds") is None:
        result["train_seconds"] = train_seconds(row["summary"])
    return result


def plots_name(table: str) -> str:
    """The stem of a table's plot files: ``tables1-3`` for tables 1-3 (one grid, one set of
    plots), else the table's name."""
    return "tables1-3" if table in ("table1", "table2", "table3") else table


def write_table(
    table: str,
    out: Path,
    base: ImageConfig,
    cells: list[Cell],
    plan: list[list[PlannedRun]],
    seeds: list[int],
    command: str = "",
) -> dict[str, Any]:
    """The report of a trained grid: ``<table>.md``, ``.json``, and the plots
    ``<plots>_bars.png``, ``<plots>_samples.png`` (:func:`plots_name`: tables 1-3 share theirs).

    Args:
        plan: per cell, its runs over seeds (:func:`plan_table`), trained and evaluated; read
            with :func:`crfold.experiments.report.load_results` (``eval.json`` and
            ``summary.json``).
    """
    results = {i: [_result(row) for row in load_results(runs)] for i, runs in enumerate(plan)}
    dirs = {i: [run.run_dir for run in runs] for i, runs in enumerate(plan)}
    datasets = list(dict.fromkeys(c.dataset for c in cells))
    summary = {
        "table": table,
        "base_config": base.to_dict(),
        "seeds": seeds,
        "cells": [
            {"label": c.label, "dataset": c.dataset, "overrides": c.overrides,
             "run_dirs": [str(d) for d in dirs[i]], "results": results[i]}
            for i, c in enumerate(cells)
        ],
    }  # fmt: skip
    atomic_write_json(out / f"{table}.json", summary)
    plots = plots_name(table)
    tags = [f"{c.dataset}: {c.label}" if len(datasets) > 1 else c.label for c in cells]
    bar_plot(
        out / f"{plots}_bars.png", tags,
        {"MI (nats)": [_metric(results[i], "mi") for i in range(len(cells))],
         "AU": [_metric(results[i], "au") for i in range(len(cells))],
         "NLL (nats)": [_metric(results[i], "iw_nll") for i in range(len(cells))]},
        title=f"{table}: mean ± std over {len(seeds)} seed(s)",
    )  # fmt: skip
    pictures = []
    for i, tag in enumerate(tags):
        pictures += [(f"{tag}: samples", dirs[i][0] / "samples.png")]
        pictures += [(f"{tag}: x / recon", dirs[i][0] / "recon.png")]
    montage(out / f"{plots}_samples.png", pictures, title=f"{plots}, seed {seeds[0]}")
    r0 = results[0][0]
    detail_rows = [
        [tag] + [_cell(results[i], key, d, s) for _, key, d, s in DETAIL_COLUMNS]
        for i, tag in enumerate(tags)
    ]
    text = [
        f"# {table} (crfold_images)\n\n",
        f"Command: `{command}`\n\n" if command else "",
        f"Budget: {base.epochs} epochs, batch {base.batch_size}, Adam lr {base.lr:g}, "
        f"arch {base.arch} width {base.width:g}, latent {base.latent_dim}, "
        f"{r0['n_train']} training images, seeds {seeds}; IW-NLL with S = {r0['iw_samples']} "
        f"on {r0['iw_images']} test images; MI minibatch B = {r0['mi_batch_size']} "
        f"(MI <= log B = {math.log(r0['mi_batch_size']):.2f} nats); AU threshold "
        f"{r0['au_threshold']}; probe: logistic regression on mu. "
        "Values: mean ± std over seeds; a flag in parentheses marks a number that shows "
        "nothing (see the last section).\n\n",
        _main_table(table, cells, results),
        _direction_section(table, cells, tags, results),
        "\n## Every metric\n\n",
        markdown_table(["Cell"] + [name for name, *_ in DETAIL_COLUMNS], detail_rows),
        _caveat_section(tags, results, len(seeds)),
        f"\nPlots: `{plots}_bars.png`, `{plots}_samples.png`. Runs: `runs/`.\n",
    ]
    write_text(out / f"{table}.md", "".join(text))
    return summary


DESCRIPTION = "Train and evaluate the paper's image tables (Tables 1-6 of CR-VAE)."
_PROGS = {"module": "python -m crfold_images.experiments", "cli": "crfold images tables"}


class _HelpConfig(argparse.Action):
    """``--help-config``: print every ImageConfig key and exit (like --help)."""

    def __init__(
        self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None
    ):  # noqa: A002
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print("ImageConfig keys (--set KEY=VALUE):\n" + ImageConfig.describe())
        parser.exit()


def add_table_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of the tables command (``crfold images tables`` and this module's CLI)."""
    p.add_argument("tables", nargs="+", choices=TABLES, help="the tables to run")
    p.add_argument("--out", default="runs/images", help="output directory")
    p.add_argument("--data", action="append", default=[], metavar="NAME[=ROOT]",
                   help="dataset and its root (relative: also under $CRFOLD_DATA), repeatable "
                        "(default: the config's dataset, digits: embedded)")  # fmt: skip
    p.add_argument("--models", default="vae,iwae,beta0.5,beta10",
                   help="models of tables 1-3, comma-separated: " + ",".join(MODELS))  # fmt: skip
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per cell")
    p.add_argument("--config", default=None, help="YAML file of ImageConfig overrides")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: config's, 100)")
    p.add_argument("--max-train", type=int, default=None, help="cap on training images")
    p.add_argument("--width", type=float, default=None, help="channel multiplier of the nets")
    p.add_argument("--eval-samples", type=int, default=None, help="IW-NLL samples S")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any ImageConfig key (see --help-config), repeatable")  # fmt: skip
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained at once, each in a child process (num_threads, when not "
                        "set: cpu_count // jobs)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress lines (runs log to <run>.log)")
    p.add_argument("--help-config", action=_HelpConfig, help="list every ImageConfig key and exit")
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=_PROGS["module"],
        description=DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    return add_table_arguments(p)


def command_line(args: argparse.Namespace, prog: str = _PROGS["cli"]) -> str:
    """The command that reproduces ``args`` (named in the reports; --jobs only when > 1)."""
    parts = [*args.tables, "--out", args.out]
    for spec in args.data:
        parts += ["--data", spec]
    parts += ["--models", args.models, "--seeds", str(args.seeds)]
    for flag, value in (("--config", args.config), ("--epochs", args.epochs),
                        ("--max-train", args.max_train), ("--width", args.width),
                        ("--eval-samples", args.eval_samples)):  # fmt: skip
        if value is not None:
            parts += [flag, str(value)]
    for item in args.set:
        parts += ["--set", item]
    if args.jobs != 1:
        parts += ["--jobs", str(args.jobs)]
    return " ".join([prog, *(shlex.quote(p) for p in parts)])


def run_tables(args: argparse.Namespace, prog: str = _PROGS["cli"]) -> int:
    """Runs the tables of parsed ``args`` (the options of :func:`add_table_arguments`)."""
    if args.jobs < 1 or args.seeds < 1:
        raise ValueError(f"--jobs and --seeds: expected ints >= 1, got {args.jobs}, {args.seeds}")
    overrides = list(args.set)
    for key, value in (("epochs", args.epochs), ("max_train", args.max_train),
                       ("width", args.width), ("eval_samples", args.eval_samples)):  # fmt: skip
        if value is not None:
            overrides.append(f"{key}={value}")
    base = load_config(args.config, overrides, cls=ImageConfig)
    roots: dict[str, str | None] = {}
    datasets = []
    for spec in args.data or [base.dataset]:
        name, sep, root = spec.partition("=")
        datasets += [] if name in datasets else [name]
        roots[name] = root if sep else (base.data_root if name == base.dataset else None)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    out = Path(args.out)
    command = command_line(args, prog)
    t0 = time.perf_counter()
    for table in dict.fromkeys(args.tables):
        run_table(table, out, base, datasets, roots, models, list(range(args.seeds)),
                  command=command, quiet=args.quiet, jobs=args.jobs)  # fmt: skip
        print(f"{table}: wrote {out / (table + '.md')}")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


def run_command(args: argparse.Namespace, prog: str = _PROGS["cli"]) -> int:
    """:func:`run_tables` as a command: its errors as one line on stderr and an exit status
    (:func:`crfold.experiments.runner.exit_status`)."""
    return exit_status(prog.removeprefix("python -m "), lambda: run_tables(args, prog))


def main(argv: list[str] | None = None) -> int:
    """``python -m crfold_images.experiments`` (an alias of ``crfold images tables``)."""
    argv = sys.argv[1:] if argv is None else argv
    if "--help-config" in argv:
        print("ImageConfig keys (--set KEY=VALUE):\n" + ImageConfig.describe())
        return 0
    return run_command(build_parser().parse_args(argv), _PROGS["module"])


if __name__ == "__main__":
    sys.exit(main())
