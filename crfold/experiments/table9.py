"""The Table-9 spec: FoldingNet-VAE + Aug against CR-FoldingNet on your data, over seeds.

    crfold experiment table9 --config configs/table9_modelnet10.yaml --seeds 3 --jobs 2 \\
        --out runs/table9_modelnet10

trains every variant (by default ``aug``, FoldingNet-VAE + Aug, ``cr``, CR-FoldingNet, and
``untrained``, an encoder trained for one step - the random-features reference every claim that
training helps is measured against, dropped by ``--no-untrained``; ``--modes`` adds ``ae`` and
``base``, the plain VAE; ``--lams`` the Table-4 lambda sweep; ``--ablation`` the Table-5
augmentation ablation) for each seed with the same config, data and budget, evaluates each run
(``crfold eval``: :func:`crfold.eval.run.evaluate_run`, in ``eval.json``) and writes
``report.md`` with the mean ± std tables and the plots. Several reports can share an experiment
directory (``--name``): e.g. a lambda sweep that reuses the Table-9 runs.

The report shows every linear-SVM probe under both protocols (raw codes: FoldingNet's;
standardized: StandardScaler fit on the train codes) and under rotation about the up axis,
Welch tests of every row against the untrained row's standardized probe, and of cr against aug.
The evaluated checkpoint is ``best.pt`` by default: FoldingNet runs select it on a holdout of the
train split (``val_split: holdout``), never on the test split.

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
from ..eval.run import EVAL_VERSION
from ..io import atomic_write_text
from .plots import plot_curves, plot_figure1, plot_gradient_ratios, plot_reconstructions
from .report import (
    Column,
    comparison,
    load_results,
    per_seed,
    probe_accuracy,
    table,
    train_seconds,
)
from .runner import EvalCommand, PlannedRun, run_plan

__all__ = [
    "BASELINE",
    "CONSISTENCY",
    "MAIN",
    "MODE_LABELS",
    "REPRESENTATION",
    "ROTATED",
    "SVM",
    "UNTRAINED",
    "Variant",
    "cr_comparison",
    "normalize_modes",
    "plan_runs",
    "plan_variants",
    "run_config",
    "run_table9",
    "table9_evaluation",
    "untrained_comparison",
    "write_report",
]

COMMAND = "crfold experiment table9"
BASELINE = "aug"  # the "+ Aug" row every CR row is compared with
UNTRAINED = "untrained"  # the random-features row every row is compared with
MODE_LABELS = {
    "ae": "FoldingNet (ae)",
    "base": "FoldingNet-VAE (base)",
    "aug": "FoldingNet-VAE + Aug (aug)",
    "cr": "CR-FoldingNet (cr)",
    UNTRAINED: "untrained encoder (1 step)",
}
EXTEND = ("epochs",)  # keys that may grow: a finished run with fewer epochs is continued
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
    extra: list[tuple[str, tuple[str, ...]]] | None = None,
) -> list[Variant]:
    """The rows: one per mode, then the lambda sweep (cr), the ablation, the extra rows, the
    untrained reference.

    Args:
        modes: training modes, e.g. ["aug", "cr"] (Table 9), optionally "ae", "base" (old names
            "vae", "vae+aug" are mapped, with a DeprecationWarning).
        lams: CR weights for a Table-4 sweep (lam=0 is aug, which is added if absent).
        ablation: add Table-5 rows: aug and cr with one augmentation family at a time.
        untrained: add an encoder trained for one step (the random-features reference; the
            ``crfold experiment table9`` command adds it unless ``--no-untrained``).
        extra: ``(name, overrides)`` rows of their own (``--variant NAME:KEY=V,...``), e.g. a
            cr row at another weighting; a name starting with "cr" is compared with ``aug``.
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
    for name, overrides in extra or []:
        variants.append(Variant(name, tuple(overrides)))
    if untrained:
        variants.append(Variant(UNTRAINED, ("mode=cr", "max_steps=1")))
    names = [v.name for v in variants]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"modes/lams/variant: rows listed twice: {dupes}")
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
                "seed": DEFAULT_SEED, "mi_batch_size": None,
                "version": EVAL_VERSION}  # fmt: skip
    return EvalCommand(("eval", "{run}", "--which", which, "--quiet"), f"{which}.pt", settings)


def run_table9(
    out: str | Path,
    config: str | Path | None,
    overrides: list[str],
    variants: list[Variant],
    seeds: list[int],
    jobs: int = 1,
    which: str = "best",
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
        which: checkpoint evaluated: "best" (selected on the holdout of the train split,
            ``val_split: holdout``) or "last" (no selection).
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
    # FoldingNet's learning rate is constant and its batches are fixed by (seed, epoch), so a
    # finished run continued to more epochs is the run trained for them from the start.
    run_plan(runs, jobs=jobs, evaluation=table9_evaluation(which), extend=EXTEND, quiet=quiet)
    if report is None:
        return None
    if not quiet:
        print(f"[{time.strftime('%H:%M:%S')}] report", flush=True)
    return write_report(Path(out), runs, variants, which=which, name=report, command=command)


# ----------------------------------------------------------------------------- the report
def _svm(key: str, protocol: str, name: str) -> Column:
    short = "raw" if protocol == "raw" else "std."
    return (f"{name}, {short} (%)", probe_accuracy(key, protocol), ".1f", True)


# Linear-SVM accuracy of every row under both protocols: codes as they are (FoldingNet's) and
# standardized; on the test shapes as they are, rotated about the up axis, and with the train
# shapes rotated too.
SVM: list[Column] = [
    _svm(key, protocol, name)
    for key, name in (
        ("probe", "Linear SVM"),
        ("probe_rotated_test", "SVM, rotated test"),
        ("probe_rotated_both", "SVM, rotated train+test"),
    )
    for protocol in ("raw", "standardized")
]
ROTATED = SVM[2:]
MAIN: list[Column] = [
    *SVM[:2],
    ("Chamfer, FoldingNet (sqrt, max)", lambda e: e["reconstruction"]["chamfer_foldingnet"],
     ".4f", False),
    ("Chamfer, squared sum", lambda e: e["reconstruction"]["chamfer_squared"], ".4f", False),
]  # fmt: skip
REPRESENTATION: list[Column] = [
    ("Logistic, raw (%)", probe_accuracy("probe", "raw", "logistic"), ".1f", True),
    ("Logistic, std. (%)", probe_accuracy("probe", "standardized", "logistic"), ".1f", True),
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
    """Every CR row (name starting with "cr") against the ``aug`` row, per metric: both probe
    protocols, the rotated probes, Chamfer, logistic, MI, AU."""
    base = next((v for v in variants if v.name == BASELINE), None)
    crs = [v for v in variants if v.name.startswith("cr")]
    if base is None or not crs:
        return f"(No comparison: the table needs a `cr` row and the `{BASELINE}` row.)"
    columns = [*SVM, *MAIN[2:], *REPRESENTATION]  # MAIN[:2] are SVM[:2]
    return comparison(rows, _order(crs), (base.name, base.name), columns)


def untrained_comparison(rows: list[dict[str, Any]], variants: list[Variant]) -> str:
    """Every row's linear-SVM probes (raw and standardized, plain and rotated) against the same
    probe of the untrained row under the standardized protocol (its raw probes included)."""
    if not any(v.name == UNTRAINED for v in variants):
        return (f"(No comparison: the table has no `{UNTRAINED}` row; `crfold experiment table9` "
                "adds it unless --no-untrained.)")  # fmt: skip
    std = [c for c in SVM if c[0].endswith("std. (%)")]
    against = [std[i // 2] for i in range(len(SVM))]  # raw and std. of each probe vs its std.
    return comparison(rows, _order(variants), (UNTRAINED, UNTRAINED), SVM, against)


def _protocol(rows: list[dict[str, Any]]) -> str:
    cfg = rows[0]["run"].config
    ev = rows[0]["eval"]
    rot = ev.get("probe_rotated_both", {})
    if cfg.probe_split == "holdout":  # a validation measurement: the test split is not read
        fit = (f"the `{cfg.train_split}` split minus its holdout and scored on the `holdout` "
               f"(a seeded, stratified {cfg.val_fraction:g} of every class of "
               f"`{cfg.train_split}`, never trained on; the test split is not read)")  # fmt: skip
    else:
        fit = f"the `{cfg.train_split}` split and scored on the `{cfg.probe_split}` split"
    if ev.get("checkpoint") == "best":
        chosen = (f"`best.pt` is selected on `{cfg.val_split}` (`val_split`), never on the "
                  "scored split.")  # fmt: skip
    else:
        chosen = "`last.pt`: no checkpoint selection."
    return "\n".join([
        f"- Codes: posterior means μ(x) of the encoder (eval mode, no augmentation). Every probe "
        f"is fit on {fit} ({ev['num_samples']} shapes). {chosen}",
        f"- Linear SVM: `LinearSVC(C={cfg.probe_C:g}, random_state=0)`; logistic: "
        f"`LogisticRegression(C={cfg.probe_C:g}, solver='lbfgs', random_state=0)`.",
        "- **raw**: the codes as they are (FoldingNet's protocol). **std.** (standardized): a "
        "StandardScaler fit on the train codes only, applied to both splits. Both are always "
        f"shown; `probe_standardize` (here {cfg.probe_standardize}) only picks which one "
        "`crfold eval` prints first. An encoder whose codes have a tiny scale (an untrained one: "
        "variances ~1e-7) probes near chance raw and well standardized.",
        "- **rotated test**: the same SVM (fit on the train codes as usual) scored on the test "
        "shapes, each under its own random rotation about the up axis (angle uniform in "
        "[−180°, 180°]); **rotated train+test**: an SVM fit on train shapes each under its own "
        "random up-rotation too, scored on the rotated test shapes. Rotations are seeded "
        f"(test seed {rot.get('test_seed', 'n/a')}, train seed {rot.get('train_seed', 'n/a')}, "
        "from the evaluation seed): the same in every run.",
    ])  # fmt: skip


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
    kinds = ("curves", "gradients", "figure1", "reconstructions")
    figures = {k: f"{prefix}{k}.png" for k in kinds}
    plot_curves([(shown[r.label], r.run_dir) for r in runs], out / figures["curves"])
    trained = [(shown[r.label], r.run_dir) for r in runs if r.label != UNTRAINED]
    gradients = plot_gradient_ratios(trained, out / figures["gradients"])
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
        "## Protocol",
        "",
        _protocol(rows),
        "",
        "## Table 9 (linear SVM on the codes, both protocols; reconstruction Chamfer)",
        "",
        table(rows, order, MAIN),
        "",
        "## Linear SVM under rotation about the up axis (what invariance buys)",
        "",
        table(rows, order, ROTATED),
        "",
        f"## Against the untrained encoder ({UNTRAINED}, standardized)",
        "",
        "Claims that training helps are made against the untrained row under the standardized "
        "protocol: random FoldingNet features, standardized, already separate the classes well, "
        "and raw codes of a tiny scale probe near chance whatever they hold. Each row's SVM "
        "accuracy (raw and standardized; plain and rotated) minus the untrained row's "
        "standardized accuracy on the same test shapes, Welch's two-sided t-test over seeds.",
        "",
        untrained_comparison(rows, variants),
        "",
        f"## CR against the + Aug baseline ({BASELINE})",
        "",
        "Difference of the means over seeds (accuracies in points), and Welch's two-sided t-test "
        "of it (unequal variances), under both probe protocols, whichever way it falls. With "
        f"{len(seeds)} seeds a row, only differences of several seed standard deviations reach "
        'p < 0.05; "no significant difference" is not evidence of equality.',
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
        "Encoder-gradient norms of the terms relative to the reconstruction's (`diagnostics` "
        "records, every `grad_norms_every` steps): a ratio of 1e-3 is a term that barely acts."
        if gradients
        else "No gradient diagnostics in these runs (`grad_norms_every: null`).",
        "",
        f"![gradient ratios]({figures['gradients']})",
        "",
        f"![Figure 1 analogue]({figures['figure1']})",
        "",
        f"![reconstructions]({figures['reconstructions']})",
        "",
        "## Per seed",
        "",
        per_seed(rows, shown, [*MAIN, *ROTATED, *REPRESENTATION]),
        "",
    ]
    path = out / f"{name}.md"
    atomic_write_text(path, "\n".join(text))
    return path


def parse_variant(text: str) -> tuple[str, tuple[str, ...]]:
    """``"NAME:KEY=V,KEY=V"`` -> ``(NAME, ("KEY=V", "KEY=V"))`` (a ``--variant`` row).

    Raises:
        ValueError: no name, no ``:``, or an override without ``=``.
    """
    name, sep, rest = text.partition(":")
    pairs = tuple(p.strip() for p in rest.split(",") if p.strip())
    if not sep or not name.strip() or not pairs or any("=" not in p for p in pairs):
        raise ValueError(f"--variant: expected NAME:KEY=VALUE[,KEY=VALUE...], got {text!r}")
    return name.strip(), pairs
