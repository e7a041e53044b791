"""Select CR-FoldingNet's objective weighting on the validation holdout (never on test).

    python scripts/select_weighting.py --config configs/table9_modelnet40.yaml \\
        --out results/table9_modelnet40/selection --steps 550 --jobs 2

For every (reconstruction reading, beta, lambda) of the grid it trains a ``cr`` run for
``--steps`` steps (the shared experiment runner: child processes, resumable, one writer per run),
then scores the run on the ``val_split=holdout`` part of the train split: the encoder's posterior
means of the kept train shapes fit a LinearSVC (C = the config's ``probe_C``), scored on the held-out
shapes, raw (FoldingNet's protocol) and standardized. An untrained encoder (one step) is scored the
same way as the reference. It also reads the last encoder-gradient-norm record of each run
(``grad_norms_every``) to show how much the consistency term acts. The selected weighting is the
one with the best standardized holdout accuracy (ties: the smaller lambda). Writes
``<out>/selection.md`` and ``selection.json``; the test split is never read.

The grid by default: lambda in {0.1, 1, 10, 100} x {the Gaussian Chamfer (beta 1), FoldingNet's
mean Chamfer with beta 1e-3 and 1e-2}: the issue's grid (docs/training.md, "obs_scale").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from crfold.config import load_config  # noqa: E402
from crfold.eval.encode import encode_posteriors, load_run  # noqa: E402
from crfold.eval.probe import svm_probe  # noqa: E402
from crfold.experiments.runner import PlannedRun, run_plan  # noqa: E402
from crfold.io import atomic_write_json, atomic_write_text  # noqa: E402
from crfold.train.foldingnet import training_splits  # noqa: E402
from crfold.train.runtime import read_metrics  # noqa: E402

READINGS = (("gaussian", 1.0), ("mean_chamfer", 1e-3), ("mean_chamfer", 1e-2))


def plan(args: argparse.Namespace) -> list[PlannedRun]:
    base = load_config(args.config, [f"max_steps={args.steps}", f"seed={args.seed}", *args.set])
    out = Path(args.out) / "runs"
    runs = [
        PlannedRun(
            out / "untrained",
            base.replace(mode="cr", max_steps=1, grad_norms_every=None),
            "untrained",
        )
    ]
    for recon, beta in READINGS:
        for lam in args.lams:
            name = f"{recon}-b{beta:g}-lam{lam:g}"
            cfg = base.replace(mode="cr", recon=recon, beta=beta, lam=lam)
            runs.append(PlannedRun(out / name, cfg, name))
    return runs


def _last_diagnostics(run_dir: Path) -> dict[str, float]:
    if not (run_dir / "metrics.jsonl").is_file():
        return {}
    records = [r for r in read_metrics(run_dir) if r.get("kind") == "diagnostics"]
    return records[-1] if records else {}


def score(run: PlannedRun, C: float) -> dict[str, float]:
    """Holdout SVM accuracies (raw, standardized) of the run's last.pt, and its diagnostics."""
    model, cfg = load_run(run.run_dir, "last")
    train, held = training_splits(cfg)
    z_tr, _, y_tr = encode_posteriors(model, train, cfg.eval_batch_size or 64)
    z_va, _, y_va = encode_posteriors(model, held, cfg.eval_batch_size or 64)
    row = {"run": run.label, "recon": cfg.recon, "beta": cfg.beta, "lam": cfg.lam}
    for name, std in (("raw", False), ("standardized", True)):
        row[f"holdout_svm_{name}"] = svm_probe(z_tr, y_tr, z_va, y_va, C=C, standardize=std)[
            "accuracy"
        ]
    row["code_std"] = float(z_tr.std(0).mean())
    diag = _last_diagnostics(run.run_dir)
    for key in ("grad_recon", "grad_kl", "grad_consistency", "step"):
        if key in diag:
            row[key] = diag[key]
    if diag.get("grad_recon"):
        row["consistency_to_recon"] = diag.get("grad_consistency", 0.0) / diag["grad_recon"]
    summary = json.loads((run.run_dir / "summary.json").read_text())
    row["steps"] = summary["step"]
    row["train_seconds"] = summary["total_seconds"]
    return row


def report(rows: list[dict], args: argparse.Namespace, seconds: float) -> str:
    trained = [r for r in rows if r["run"] != "untrained"]
    best = max(trained, key=lambda r: (r["holdout_svm_standardized"], -r["lam"]))
    lines = [
        "# Selection of the objective weighting on the validation holdout\n",
        f"Command: `python scripts/select_weighting.py --config {args.config} --out {args.out} "
        f"--steps {args.steps} --jobs {args.jobs} --lams {','.join(f'{v:g}' for v in args.lams)}"
        + "".join(f" --set {s}" for s in args.set)
        + "`\n",
        f"Protocol: each row is one `cr` run (seed {args.seed}) of {args.steps} steps on the train "
        "split minus its holdout (`val_split: holdout`, a seeded, stratified 10 % of every class). "
        "LinearSVC(C, random_state=0) on the posterior means of the kept train shapes, scored on "
        "the held-out shapes; raw codes (FoldingNet's protocol) and standardized (StandardScaler fit "
        "on the kept train codes). The test split is not read. Gradient norms: the last "
        "`diagnostics` record (encoder parameters; consistency term weighted by lambda). "
        f"Wall time {seconds / 60:.0f} min on the 2-core CPU, `--jobs {args.jobs}`.\n",
        "| run | recon | beta | lambda | holdout SVM raw % | holdout SVM std % | "
        "grad recon | grad KL | grad λR | λR / recon | code std |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:

        def g(key, r=r, fmt="{:.3g}"):
            return fmt.format(r[key]) if r.get(key) is not None else "n/a"

        lines.append(
            f"| {r['run']} | {r['recon']} | {r['beta']:g} | {r['lam']:g} | "
            f"{100 * r['holdout_svm_raw']:.1f} | {100 * r['holdout_svm_standardized']:.1f} | "
            f"{g('grad_recon')} | {g('grad_kl')} | {g('grad_consistency')} | "
            f"{g('consistency_to_recon')} | {g('code_std')} |"
        )
    lines.append(
        f"\nSelected (best standardized holdout accuracy, ties to the smaller lambda): "
        f"**recon={best['recon']} beta={best['beta']:g} lam={best['lam']:g}** "
        f"({100 * best['holdout_svm_standardized']:.1f} % standardized, "
        f"{100 * best['holdout_svm_raw']:.1f} % raw). One seed and a short budget: a choice "
        "for the Table-9 runs, not a result.\n"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=550)
    p.add_argument("--lams", default="0.1,1,10,100")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    args.lams = [float(v) for v in args.lams.split(",") if v.strip()]
    t0 = time.perf_counter()
    runs = plan(args)
    run_plan(runs, jobs=args.jobs, evaluation=None)
    torch.set_num_threads(1)
    C = runs[0].config.probe_C
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # torch and liblinear release the GIL
        rows = list(pool.map(lambda run: score(run, C), runs))
    out = Path(args.out)
    atomic_write_json(out / "selection.json", rows)
    atomic_write_text(out / "selection.md", report(rows, args, time.perf_counter() - t0))
    print((out / "selection.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
