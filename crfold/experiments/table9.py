"""The Table-9 spec: FoldingNet-VAE + Aug against CR-FoldingNet on your data, over seeds.

    crfold experiment table9 --config configs/table9_modelnet10.yaml --seeds 3 --jobs 2 \\
        --out runs/table9_modelnet10

trains every variant (by default ``aug``, FoldingNet-VAE + Aug, and ``cr``, CR-FoldingNet;
``--modes`` adds ``ae`` and ``base``, the plain VAE; ``--lams`` the Table-4 lambda sweep;
``--ablation`` the Table-5 augmentation ablation) for each seed with the same config, data and
budget, evaluates each run (``crfold eval``: :func:`crfold.eval.run.evaluate_run`, in
``eval.json``) and writes ``report.md`` with the mean ± std table and the plots. Several reports
can share an experiment directory (``--name``): e.g. a lambda sweep that reuses the Table-9 runs.

Layout: ``<out>/runs/<variant>/seed<s>/`` (a ``crfold train`` run directory) and
``<out>/runs/<variant>/seed<s>.log``. Training, resume, evaluation, locks and signals are the
runner's (:mod:`crfold.experiments.runner`): rerunning the command resumes, a finished run whose
saved config differs from the plan is an error, an ``eval.json`` computed with other settings
(or older than the checkpoint) is recomputed.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import TrainConfig, load_config
from ..eval.consistency import DEFAULT_SEED, FAMILIES
from ..io import atomic_write_text
from .plots import plot_curves, plot_figure1, plot_reconstructions
from .report import Column, comparison, load_results, per_seed, table, train_seconds
from .runner import EvalCommand, PlannedRun, run_plan

__all__ = [
    "BASELINE",
    "CONSISTENCY",
    "MAIN",
    "MODE_LABELS",
    "REPRESENTATION",
    "Variant",
    "cr_comparison",
    "normalize_modes",
    "plan_runs",
    "plan_variants",
    "run_config",
    "run_table9",
    "table9_evaluation",
    "write_report",
]

COMMAND = "crfold experiment table9"
BASELINE = "aug"  # the "+ Aug" row every CR row is compared with
MODE_LABELS = {
    "ae": "FoldingNet (ae)",
    "base": "FoldingNet-VAE (base)",
    "aug": "FoldingNet-VAE + Aug (aug)",
    "cr": "CR-FoldingNet (cr)",
}
# Table-5 ablation: one augmentation family at a time (the others off).
_OFF = {
    "rotate": "aug_rotate=none",
    "translate": "aug_translate=0",
    "scale": "aug_scale=none",
    "jitter": "aug_jitter_sigma=0",
}
_ON = {
    "rotate": "aug_rotate=up",
    "translate": "aug_translate=0.2",
    "scale": "aug_scale=[0.667,1.5]",
    "jitter": "aug_jitter_sigma=0.01",
}


@dataclass(frozen=True)
class Variant:
    """One row of the table: a name and the config overrides that make it."""

    name: str
    overrides: tuple[str, ...]

    @property
    def slug(self) -> str:
        """The directory name: ``aug`` -> ``aug``, ``cr lam=1`` -> ``cr_lam1``."""
        out = self.name.replace("+", "-").replace(" ", "_").replace("=", "").replace("/", "-")
        return "".join(c for c in out if c.isalnum() or c in "-_.")

    @property
    def label(self) -> str:
        """The row's name in the report: ``FoldingNet-VAE + Aug (aug)`` for a plain mode."""
        return MODE_LABELS.get(self.name, self.name)


def normalize_modes(modes: list[str]) -> list[str]:
    """The modes with old names mapped to the new ones (``vae`` -> ``base``, ``vae+aug`` ->
    ``aug``), with a DeprecationWarning; ValueError for an unknown mode."""
    out = []
    for mode in modes:
        new = TrainConfig.MODE_ALIASES.get(mode)
        if new is not None:
            warnings.warn(f"--modes: {mode!r} is the old name of mode {new!r}",
                          DeprecationWarning, stacklevel=2)  # fmt: skip
            mode = new
        if mode not in TrainConfig.MODES:
            raise ValueError(f"--modes: expected modes among {TrainConfig.MODES}, got {mode!r}")
        out.append(mode)
    return out


def plan_variants(
    modes: list[str],
    lams: list[float] | None = None,
    ablation: bool = False,
    untrained: bool = False,
) -> list[Variant]:
    """The rows: one per mode, then the lambda sweep (cr), the ablation, the untrained reference.

    Args:
        modes: training modes, e.g. ["aug", "cr"] (Table 9), optionally "ae", "base" (old names
            "vae", "vae+aug" are mapped, with a DeprecationWarning).
        lams: CR weights for a Table-4 sweep (lam=0 is aug, which is added if absent).
        ablation: add Table-5 rows: aug and cr with one augmentation family at a time.
        untrained: add an encoder trained for one step (random features reference).
    """
    modes = normalize_modes(modes)
    variants = [Variant(m, (f"mode={m}",)) for m in modes]
    for lam in lams or []:
        if float(lam) == 0.0:
            if BASELINE not in modes:
                variants.append(Variant(BASELINE, (f"mode={BASELINE}",)))
            continue
        variants.append(Variant(f"cr lam={lam:g}", ("mode=cr", f"lam={lam:g}")))
    if ablation:
        for mode in (BASELINE, "cr"):
            for fam in _ON:
                only = tuple(_ON[f] if f == fam else _OFF[f] for f in _ON)
                variants.append(Variant(f"{mode} {fam} only", (f"mode={mode}", *only)))
    if untrained:
        variants.append(Variant("untrained", ("mode=cr", "max_steps=1")))
    names = [v.name for v in variants]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"modes/lams: variants listed twice: {dupes}")
    return variants


def run_config(
    config: str | Path | None, overrides: list[str], variant: Variant, seed: int, run_dir: Path
) -> TrainConfig:
    """The config a run trains with: the YAML, the user's overrides, the variant's, the seed."""
    extra = [*overrides, *variant.overrides, f"seed={seed}", f"run_dir={run_dir}"]
    cfg = load_config(config, extra)
    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"table9: trains FoldingNet (task foldingnet), got task {cfg.task!r}")
    return cfg


def plan_runs(
    out: str | Path,
    config: str | Path | None,
    overrides: list[str],
    variants: list[Variant],
    seeds: list[int],
) -> list[PlannedRun]:
    """``<out>/runs/<variant>/seed<s>`` for every variant and seed, labelled by the variant."""
    runs = []
    for v in variants:
        for s in seeds:
            run_dir = Path(out) / "runs" / v.slug / f"seed{s}"
            runs.append(PlannedRun(run_dir, run_config(config, overrides, v, s, run_dir), v.name))
    return runs


def table9_evaluation(which: str) -> EvalCommand:
    """``crfold eval RUN --which WHICH``, current when its eval.json has these settings."""
    settings = {"which": which, "data": None, "overrides": [], "families": list(FAMILIES),
                "seed": DEFAULT_SEED, "mi_batch_size": None}  # fmt: skip
    return EvalCommand(("eval", "{run}", "--which", which, "--quiet"), f"{which}.pt", settings)


def run_table9(
    out: str | Path,
    config: str | Path | None,
    overrides: list[str],
    variants: list[Variant],
    seeds: list[int],
    jobs: int = 1,
    which: str = "last",
    report: str | None = "report",
    quiet: bool = False,
    command: str = COMMAND,
) -> Path | None:
    """Trains and evaluates every (variant, seed) run, then writes the report.

    Args:
        out: the experiment directory.
        config: the YAML config every run starts from (None: the defaults).
        overrides: ``key=value`` changes applied to every run.
        variants: the rows (:func:`plan_variants`).
        seeds: one run per seed and variant.
        jobs: runs trained at the same time (child processes).
        which: checkpoint evaluated ("last": no model selection on the test split).
        report: write ``<out>/<report>.md`` and its plots at the end (None: no report).
        quiet: no progress lines.
        command: the command line quoted in the report.

    Returns:
        The path of the report (None without ``report``).

    Raises:
        ValueError: a bad option or a finished run with another config.
        RunLockedError: runs another process was writing.
        RuntimeError: a run failed (the others still ran; rerun to resume).
        KeyboardInterrupt: stopped by SIGINT/SIGTERM after the children saved their state.
    """
    if not seeds or not variants:
        raise ValueError("seeds and variants: expected at least one of each")
    runs = plan_runs(out, config, overrides, variants, seeds)
    run_plan(runs, jobs=jobs, evaluation=table9_evaluation(which), quiet=quiet)
    if report is None:
        return None
    if not quiet:
        print(f"[{time.strftime('%H:%M:%S')}] report", flush=True)
    return write_report(Path(out), runs, variants, which=which, name=report, command=command)


# ----------------------------------------------------------------------------- the report
MAIN: list[Column] = [
    ("Linear SVM acc. (%)", lambda e: 100 * e["probe"]["svm"]["accuracy"], ".1f", True),
    ("Chamfer, FoldingNet (sqrt, max)", lambda e: e["reconstruction"]["chamfer_foldingnet"],
     ".4f", False),
    ("Chamfer, squared sum", lambda e: e["reconstruction"]["chamfer_squared"], ".4f", False),
]  # fmt: skip
REPRESENTATION: list[Column] = [
    ("Logistic acc. (%)", lambda e: 100 * e["probe"]["logistic"]["accuracy"], ".1f", True),
    ("MI (nats)", lambda e: e["mutual_information"]["nats"], ".2f", True),
    ("Active units", lambda e: e["active_units"]["count"], ".1f", True),
]


def _family(name: str, key: str):
    return lambda e: e["consistency"][name][key]


CONSISTENCY: list[Column] = [
    (f"{f}: shift / code dist.", _family(f, "relative_mu_distance"), ".3f", False) for f in FAMILIES
] + [(f"{f}: KL (nats)", _family(f, "kl"), ".3f", False) for f in FAMILIES]


def _order(variants: list[Variant]) -> list[tuple[str, str]]:
    return [(v.name, v.label) for v in variants]


def cr_comparison(rows: list[dict[str, Any]], variants: list[Variant]) -> str:
    """Every CR row (name starting with "cr") against the ``aug`` row, per metric."""
    base = next((v for v in variants if v.name == BASELINE), None)
    crs = [v for v in variants if v.name.startswith("cr")]
    if base is None or not crs:
        return f"(No comparison: the table needs a `cr` row and the `{BASELINE}` row.)"
    return comparison(rows, _order(crs), (base.name, base.name), [*MAIN, *REPRESENTATION])


def _budget(rows: list[dict[str, Any]]) -> str:
    cfg = rows[0]["run"].config
    train_s = [train_seconds(r["summary"]) for r in rows]
    eval_s = [r["eval"]["seconds"] for r in rows]
    steps = sorted({r["summary"]["step"] for r in rows})
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return "\n".join([
        f"- Data: `{cfg.data}` (classes_subset={cfg.classes_subset}, to_up={cfg.to_up}), "
        f"{cfg.num_points} points per shape; train on `{cfg.train_split}`, evaluate on "
        f"`{cfg.probe_split}` ({rows[0]['eval']['num_samples']} shapes).",
        f"- Model: FoldingNet-VAE, latent {cfg.latent_dim}, k {cfg.k}, grid {cfg.grid_size}² = "
        f"{cfg.grid_size**2} output points, obs_scale {cfg.obs_scale}, β {cfg.beta}, λ {cfg.lam} "
        "(per row where the row sets it).",
        f"- Budget per run: {cfg.epochs} epochs, batch {cfg.batch_size}, Adam lr {cfg.lr}, "
        f"steps {', '.join(map(str, steps))}; threads per run {cfg.num_threads}.",
        f"- Time: training {mean(train_s):.0f} s per run on average "
        f"({sum(train_s) / 60:.1f} min in all), evaluation {mean(eval_s):.0f} s per run.",
        f"- Augmentation t (the pair of aug and cr): rotate {cfg.aug_rotate} "
        f"±{cfg.aug_degrees:g}°, scale {cfg.aug_scale}, translate ±{cfg.aug_translate}, jitter "
        f"σ {cfg.aug_jitter_sigma} (clip {cfg.aug_jitter_clip}).",
    ])  # fmt: skip


def write_report(
    out: Path,
    runs: list[PlannedRun],
    variants: list[Variant],
    *,
    which: str,
    name: str = "report",
    command: str = COMMAND,
) -> Path:
    """Writes ``<out>/<name>.md`` and its plots ``<name>_curves.png``, ``<name>_figure1.png``,
    ``<name>_reconstructions.png`` (without the prefix for the default name, "report").

    Args:
        out: the experiment directory.
        runs: the experiment's runs (:func:`plan_runs`), all evaluated.
        variants: the rows, in table order.
        which: the checkpoint that was evaluated.
        name: the report's name (several reports can share one experiment directory).
        command: the command line that re-runs the experiment (quoted in the report).

    Returns:
        The path of the report.
    """
    rows = load_results(runs)
    seeds = sorted({r.seed for r in runs})
    order = _order(variants)
    shown = dict(order)
    first = [next(r for r in runs if r.label == v.name) for v in variants]
    panels = [(f"{shown[r.label]} (seed {r.seed})", r.run_dir) for r in first]
    prefix = "" if name == "report" else f"{name}_"
    figures = {k: f"{prefix}{k}.png" for k in ("curves", "figure1", "reconstructions")}
    plot_curves([(shown[r.label], r.run_dir) for r in runs], out / figures["curves"])
    plot_figure1(panels, which, out / figures["figure1"])
    plot_reconstructions([(shown[r.label], r.run_dir) for r in first], which,
                         out / figures["reconstructions"])  # fmt: skip
    text = [
        f"# Table 9 on this data: {MODE_LABELS['aug']} vs {MODE_LABELS['cr']}",
        "",
        f"Written by `{COMMAND}` on {time.strftime('%Y-%m-%d %H:%M')}; "
        f"{len(seeds)} seeds ({', '.join(map(str, seeds))}) per row, mean ± sample std "
        f"(n − 1). Evaluated checkpoint: `{which}.pt`. Re-run (resumes, reuses finished runs):",
        "",
        f"    {command}",
        "",
        "## Table 9 (linear SVM on the codes, reconstruction Chamfer)",
        "",
        table(rows, order, MAIN),
        "",
        f"## CR against the + Aug baseline ({BASELINE})",
        "",
        "Difference of the means over seeds, and Welch's two-sided t-test of it (unequal "
        "variances). With 3 seeds a row, only differences of several seed standard deviations "
        'reach p < 0.05; "no significant difference" is not evidence of equality.',
        "",
        cr_comparison(rows, variants),
        "",
        "## Representation",
        "",
        table(rows, order, REPRESENTATION),
        "",
        "## Latent consistency under held-out transforms (lower: more invariant)",
        "",
        "Mean ||mu(t(x)) − mu(x)|| divided by the mean distance between codes of different "
        "shapes, and mean KL(q(z|t(x)) || q(z|x)); transforms in `eval.json` of each run.",
        "",
        table(rows, order, CONSISTENCY[: len(FAMILIES)]),
        "",
        table(rows, order, CONSISTENCY[len(FAMILIES) :]),
        "",
        "## Budget",
        "",
        _budget(rows),
        "",
        "## Figures",
        "",
        f"![training curves]({figures['curves']})",
        "",
        f"![Figure 1 analogue]({figures['figure1']})",
        "",
        f"![reconstructions]({figures['reconstructions']})",
        "",
        "## Per seed",
        "",
        per_seed(rows, shown, [*MAIN, *REPRESENTATION]),
        "",
    ]
    path = out / f"{name}.md"
    atomic_write_text(path, "\n".join(text))
    return path
