"""Sweep the Chamfer-vs-KL weight (``obs_scale``) of the FoldingNet-VAE on real data.

``obs_scale`` is the sigma of the Gaussian reading of the squared Chamfer: the reconstruction term
is ``chamfer_sum / (2 sigma^2)`` nats, so a large sigma lets the KL win (posterior collapse: few
active units), a small one makes the VAE an auto-encoder with a weak prior. Each value trains one
run (``crfold train``, in parallel jobs), then reports active units, mutual information, SVM and
logistic probe accuracy and Chamfer, as a markdown table.

    python scripts/sweep_obs_scale.py --values 0.01,0.02,0.05,0.1 --out results/obs_scale_sweep \
        -- --config configs/modelnet40_cpu.yaml classes_subset=[modelnet10] epochs=1

Everything after ``--`` is passed to ``crfold train``. Finished runs are reused (rerun to resume).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from crfold.eval.encode import encode_posteriors, load_run, open_split
from crfold.eval.reconstruction import reconstruction_metrics
from crfold.eval.run import probe_run
from crfold.io import atomic_write_json, atomic_write_text
from crfold.metrics import active_units, mutual_information


def train_one(run_dir: Path, value: float, train_args: list[str], threads: int) -> None:
    if (run_dir / "summary.json").exists():
        return
    flags = [a for a in train_args if "=" not in a or a.startswith("--")]
    keys = [a for a in train_args if a not in flags]
    cmd = [sys.executable, "-m", "crfold", "train", *flags, "--run-dir", str(run_dir), "--quiet"]
    if (run_dir / "last.pt").exists():
        cmd.append("--resume")
    cmd += [*keys, f"obs_scale={value}", f"num_threads={threads}"]
    log = (run_dir.parent / f"{run_dir.name}.log").open("w")
    subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)


def evaluate_one(run_dir: Path) -> dict:
    model, cfg = load_run(run_dir, which="last")
    test = open_split(cfg, cfg.probe_split)
    mu, logvar, _ = encode_posteriors(model, test, batch_size=64)
    au, _ = active_units(mu)
    mi = mutual_information(mu, logvar, batch_size=256, generator=torch.Generator().manual_seed(0))
    probe = probe_run(run_dir, which="last")
    rec = reconstruction_metrics(model, test)
    return {
        "obs_scale": cfg.obs_scale,
        "active_units": int(au),
        "latent_dim": cfg.latent_dim,
        "mi": float(mi),
        "svm": probe["svm"]["accuracy"],
        "logistic": probe["logistic"]["accuracy"],
        **{k: float(v) for k, v in rec.items()},
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    train_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--values", default="0.01,0.02,0.05,0.1", help="obs_scale values")
    p.add_argument("--out", default="results/obs_scale_sweep", help="output folder")
    p.add_argument("--jobs", type=int, default=2, help="runs trained at once")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    args = p.parse_args(own)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    values = [float(v) for v in args.values.split(",")]
    runs = {v: out / f"obs_scale_{v:g}" for v in values}
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda v: train_one(runs[v], v, train_args, args.threads), values))
    rows = [evaluate_one(runs[v]) for v in values]
    atomic_write_json(out / "sweep.json", {"train_args": train_args, "rows": rows})
    keys = [k for k in rows[0] if k not in ("latent_dim",)]
    lines = [
        f"# obs_scale sweep\n\n`crfold train {' '.join(train_args)}` per value; "
        f"latent_dim {rows[0]['latent_dim']}.\n",
        "| " + " | ".join(keys) + " |",
        "|" + "---|" * len(keys),
    ]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[k]:.4g}" for k in keys) + " |")
    atomic_write_text(out / "sweep.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
