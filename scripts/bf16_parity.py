"""bf16 vs fp32 training parity: the same runs (config, seeds, data order, draws) in both precisions.

Trains ``--steps`` optimizer steps of ``crfold train`` for each of ``--seeds`` seeds twice, once
with ``amp=none`` (float32) and once with ``amp=bf16`` (autocast; kNN, Chamfer and the losses stay
float32); ``crfold train`` then validates on the config's ``val_split`` (z = mu, no
augmentation). Writes to ``--out``:

* ``parity.json``: per run the validation loss, KL and Chamfer (FoldingNet's metric), seconds and
  samples/s; per precision the mean and std of the validation Chamfer over the seeds, their
  relative difference, Welch's t-test, and the verdict against the tolerance (3 %);
* ``loss_curves.png``: the training loss and Chamfer of every run against the step;
* ``README.md``: the tables, the verdict and the command.

    python scripts/bf16_parity.py --data PATH/modelnet40_1024_f16.npz --out results/bf16_parity

Why several seeds: 300 steps are early in training, where the loss still falls steeply and two
float32 runs that differ in any rounding drift apart by several percent; the seeds measure that
spread, and parity is judged on the means. The runs are child processes of one thread each, two at
a time (``--jobs 2``). A finished run (its ``summary.json``) is reused; delete ``--out`` to start
over.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

PRECISIONS = {"fp32": "none", "bf16": "bf16"}  # name -> amp setting
TOLERANCE = 0.03  # relative difference of the final validation Chamfer that counts as parity


def run_name(precision: str, seed: int) -> str:
    return f"{precision}-s{seed}"


def train_one(args: argparse.Namespace, name: str) -> None:
    """Child process: train (or reuse) one precision's run; its summary.json holds the final
    validation (crfold train validates when max_steps stops it)."""
    import torch

    from crfold.amp import amp_dtype
    from crfold.config import load_config
    from crfold.train import Trainer

    precision, seed = name.split("-s")
    run_dir = Path(args.out) / "runs" / name
    overrides = [
        f"data={args.data}",
        f"amp={PRECISIONS[precision]}",
        f"max_steps={args.steps}",
        f"seed={seed}",
        f"run_dir={run_dir}",
        "num_threads=1",
        "log_every=10",
        *args.set,
    ]
    cfg = load_config(args.config, overrides)
    summary_file = run_dir / "summary.json"
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
    else:
        summary = Trainer(cfg, resume=(run_dir / "last.pt").is_file(), quiet=True).run()
    seconds = summary["total_seconds"]
    record = {
        "precision": precision,
        "seed": int(seed),
        "amp": cfg.amp,
        "autocast_dtype": str(amp_dtype(cfg.amp, "cpu")),
        "steps": summary["step"],
        "train_seconds": seconds,
        "samples_per_s": summary["step"] * cfg.batch_size / max(seconds, 1e-9),
        "torch": torch.__version__,
        **{k: summary[k] for k in ("val_loss", "val_recon", "val_kl", "val_chamfer")},
    }
    (run_dir / "parity_val.json").write_text(json.dumps(record, indent=2))


def curves(run_dir: Path) -> tuple[list[int], list[float], list[float]]:
    from crfold.train.runtime import read_metrics

    rows = [r for r in read_metrics(run_dir) if r.get("kind") == "train"]
    return [r["step"] for r in rows], [r["loss"] for r in rows], [r["chamfer"] for r in rows]


def report(args: argparse.Namespace) -> int:
    """Compare the precisions over the seeds, plot the curves, write parity.json and README.md."""
    import statistics

    import matplotlib
    from scipy import stats

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    seeds = list(range(args.seeds))
    recs = {
        run_name(p, s): json.loads((out / "runs" / run_name(p, s) / "parity_val.json").read_text())
        for p in PRECISIONS
        for s in seeds
    }
    cd = {p: [recs[run_name(p, s)]["val_chamfer"] for s in seeds] for p in PRECISIONS}
    mean = {p: statistics.fmean(v) for p, v in cd.items()}
    std = {p: statistics.stdev(v) if len(v) > 1 else float("nan") for p, v in cd.items()}
    rel = abs(mean["bf16"] - mean["fp32"]) / mean["fp32"]
    welch = stats.ttest_ind(cd["bf16"], cd["fp32"], equal_var=False) if len(seeds) > 1 else None
    p_value = float(welch.pvalue) if welch is not None else None
    direction = "lower (better)" if mean["bf16"] < mean["fp32"] else "higher (worse)"
    if rel <= TOLERANCE:
        verdict = "parity holds"
    else:
        verdict = f"parity not shown: the bf16 mean is {100 * rel:.1f} % {direction}"
    summary = {
        "runs": recs,
        "val_chamfer": {p: {"mean": mean[p], "std": std[p], "per_seed": cd[p]} for p in PRECISIONS},
        "val_chamfer_rel_diff_of_means": rel,
        "welch_p": p_value,
        "tolerance": TOLERANCE,
        "verdict": verdict,
    }
    (out / "parity.json").write_text(json.dumps(summary, indent=2))

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    colors = {"fp32": "tab:blue", "bf16": "tab:orange"}
    for name, rec in recs.items():
        steps, loss, chamfer = curves(out / "runs" / name)
        style = dict(color=colors[rec["precision"]], alpha=0.8, lw=1)
        label = rec["precision"] if rec["seed"] == 0 else None
        axes[0].plot(steps, loss, label=label, **style)
        axes[1].plot(steps, chamfer, label=label, **style)
    axes[0].set(xlabel="step", ylabel="training loss (nats / cloud)", yscale="log")
    axes[1].set(xlabel="step", ylabel="training Chamfer (FoldingNet metric)")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(f"fp32 vs bf16 autocast, {args.steps} steps, seeds {seeds}")
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=110)

    rows = [
        "| run | val Chamfer | val loss | val KL | seconds | samples/s |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in recs.items():
        rows.append(
            f"| {name} | {r['val_chamfer']:.5f} | {r['val_loss']:.1f} | {r['val_kl']:.1f} "
            f"| {r['train_seconds']:.0f} | {r['samples_per_s']:.1f} |"
        )
    means = [
        f"| {p} | {mean[p]:.5f} ± {std[p]:.5f} | {', '.join(f'{v:.4f}' for v in cd[p])} |"
        for p in PRECISIONS
    ]
    p_text = f"Welch's t-test p = {p_value:.2f}" if p_value is not None else "one seed: no test"
    cmd = " ".join(["python scripts/bf16_parity.py", *sys.argv[1:]])
    text = [
        "# bf16 autocast vs float32: training parity",
        "",
        f"Config `{args.config}` with `max_steps={args.steps}`, seeds {seeds}, one thread per "
        "run, two runs at a time; `crfold train`'s final validation on the config's `val_split` "
        f"with z = mu. torch {recs[run_name('fp32', 0)]['torch']}.",
        "",
        "| precision | val Chamfer, mean ± std over seeds | per seed |",
        "|---|---|---|",
        *means,
        "",
        f"Relative difference of the means: **{100 * rel:.2f} %** (tolerance "
        f"{100 * TOLERANCE:.0f} %): **{verdict}**; {p_text}.",
        "",
        *rows,
        "",
        "The samples/s of runs sharing two cores with other work are indicative only; "
        "`make bench-train` measures speed.",
        "",
        "![loss curves](loss_curves.png)",
        "",
        f"Re-run: `{cmd}`",
        "",
    ]
    (out / "README.md").write_text("\n".join(text))
    print("\n".join(means + rows))
    print(f"val Chamfer rel. diff of means {100 * rel:.2f} %: {verdict}; {p_text}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the data set (e.g. the ModelNet40 .npz)")
    p.add_argument("--config", default="configs/modelnet40_cpu.yaml", help="the run's config")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps of each run")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1, each in both precisions")
    p.add_argument("--out", default="results/bf16_parity", help="output folder")
    p.add_argument("--jobs", type=int, default=2, help="runs trained at once")
    p.add_argument("--set", nargs="*", default=[], help="more KEY=VALUE config overrides")
    p.add_argument("--only", help=argparse.SUPPRESS)  # a child process: train one run
    args = p.parse_args(argv)
    if args.only:
        train_one(args, args.only)
        return 0
    Path(args.out).mkdir(parents=True, exist_ok=True)
    base = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:])]
    pending = [run_name(p, s) for s in range(args.seeds) for p in PRECISIONS]
    while pending:
        batch, pending = pending[: args.jobs], pending[args.jobs :]
        procs = [subprocess.Popen([*base, "--only", name]) for name in batch]
        codes = [proc.wait() for proc in procs]
        if any(codes):
            print(f"error: a run failed (exit codes {codes})", file=sys.stderr)
            return 1
    return report(args)


if __name__ == "__main__":
    sys.exit(main())
