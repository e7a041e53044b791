"""bf16 autocast vs float32 for the image trainers: step speed on this CPU, then training parity.

Two measurements, written to ``--out`` (``README.md`` with the tables, ``parity.json``):

* **speed**: samples/s of one training step (forward, backward, optimizer) in float32
  (``amp=none``) and bf16 (``amp=bf16``) for the conv VAE at ``--image-config`` (modes base and
  cr; a fixed batch of the config's ``batch_size`` training images, so data loading is left out)
  and the NVAE at ``--nvae-config`` (modes base and cr; the task's own batches). The two
  precisions are two trainers of the same seed stepped alternately (the order flips every step),
  so background load hits both alike; ``--warmup`` steps each are dropped, the median of
  ``--speed-steps`` is kept; per thread count of ``--threads``. The cr modes also encode t(x):
  samples/s counts the B images of a batch, not the 2B rows.
* **parity**: the same seed trained in both precisions, each in a child process of one thread
  (``--jobs`` at once): the conv VAE ``--conv-epochs`` epochs (modes base and cr; the trainer's
  float32 validation -ELBO after every epoch), the NVAE ``--nvae-steps`` steps (mode base;
  ``max_steps``, with the lr and KL schedules spanning the whole epochs that cover those steps;
  then the float32 -ELBO and IW-NLL of the first ``--nvae-test`` test images). Parity holds
  when the final validation -ELBO of bf16 is within ``--tolerance`` (relative) of float32's.
  For scale, a third run per model trains float32 with the next seed (``fp32ref``): the
  seed-to-seed spread of the same short run.

    .venv/bin/python scripts/bf16_parity_images.py --out results/bf16_parity_images

A finished parity run (its ``parity_run.json``) is reused; delete ``--out``/runs to redo them.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

PRECISIONS = {"fp32": "none", "bf16": "bf16"}  # name -> amp setting
PARITY_RUNS = {"fp32": ("none", 0), "bf16": ("bf16", 0), "fp32ref": ("none", 1)}  # amp, +seed
CONV_MODES = ("base", "cr")
NVAE_MODES = ("base", "cr")  # named nvae and cr-nvae in results from before the run engine
NVAE_PARITY_MODE = "base"


# ------------------------------------------------------------------------------------- builders
def conv_config(args: argparse.Namespace, amp: str, mode: str, run_dir: Path, *extra: str) -> Any:
    """The conv-VAE config (``ImageConfig``) of ``--image-config`` for ``run_dir``."""
    from crfold.config import load_config
    from crfold_images.config import ImageConfig

    overrides = [f"amp={amp}", f"mode={mode}", f"seed={args.seed}", f"run_dir={run_dir}", *extra]
    return load_config(args.image_config, overrides, cls=ImageConfig)


def conv_run(args: argparse.Namespace, amp: str, mode: str, run_dir: Path, *extra: str) -> Any:
    """A conv-VAE trainer of the run engine (``crfold.train.Trainer``) in ``run_dir``.

    The caller closes it (``trainer.log.close(); trainer.close()``: the run-directory lock).
    """
    from crfold.train import Trainer

    return Trainer(conv_config(args, amp, mode, run_dir, *extra), quiet=True)


def nvae_config(args: argparse.Namespace, amp: str, mode: str, run_dir: Path, *extra: str) -> Any:
    """The NVAE config (``NVAEConfig``) of ``--nvae-config`` for ``run_dir``."""
    from crfold.config import load_config
    from crfold_images.nvae.config import NVAEConfig

    overrides = [f"amp={amp}", f"mode={mode}", f"seed={args.seed}", f"run_dir={run_dir}", *extra]
    return load_config(args.nvae_config, overrides, cls=NVAEConfig)


def nvae_run(args: argparse.Namespace, amp: str, mode: str, run_dir: Path, *extra: str) -> Any:
    """An NVAE trainer of the run engine (``crfold.train.Trainer``, task nvae) in ``run_dir``.

    It resumes ``run_dir/last.pt`` when there is one. The caller closes it
    (``trainer.log.close(); trainer.close()``), or ``trainer.run()`` does.
    """
    from crfold.train import Trainer

    cfg = nvae_config(args, amp, mode, run_dir, *extra)
    return Trainer(cfg, resume=(run_dir / "last.pt").is_file(), quiet=True)


def nvae_steps_per_epoch(cfg: Any) -> int:
    """Optimizer steps in one epoch of ``cfg`` (``NVAETask.batches_per_epoch``, before a run)."""
    from crfold_images.nvae.data import load_images

    n = load_images(cfg).train_x.shape[0]
    return n // min(cfg.batch_size, n)


def _batches(task: Any) -> Any:
    """The task's training batches, epoch after epoch, without end."""
    epoch = 0
    while True:
        yield from task.train_batches(epoch, 0)
        epoch += 1


# ---------------------------------------------------------------------------------------- speed
def _alternate(steps: dict[str, Any], warmup: int, n: int) -> dict[str, float]:
    """Median seconds of ``steps[name]()`` per precision, stepped alternately."""
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(n):
        for name in names if i % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def speed(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Samples/s of a training step, float32 vs bf16, per model, mode and thread count."""
    rows = []
    before = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        for threads in args.threads:
            torch.set_num_threads(threads)
            for mode in CONV_MODES:
                runs = {
                    name: conv_run(
                        args,
                        amp,
                        mode,
                        Path(tmp) / f"conv-{mode}-{name}-{threads}",
                        f"num_threads={threads}",
                    )
                    for name, amp in PRECISIONS.items()
                }
                first = next(iter(runs.values()))
                batch = first.cfg.batch_size
                images, _ = first.task.splits.train.get_batch(torch.arange(batch))  # (B, 1, 28, 28)
                images = images.to(first.device)
                steps = {n: (lambda r=r, x=images: r.train_step(x)) for n, r in runs.items()}
                med = _alternate(steps, args.warmup, args.speed_steps)
                for r in runs.values():
                    r.log.close()
                    r.close()
                rows.append(_speed_row("conv VAE", mode, threads, batch, med))
                print(_fmt_speed(rows[-1]), flush=True)
            for mode in NVAE_MODES:
                runs = {
                    name: nvae_run(
                        args,
                        amp,
                        mode,
                        Path(tmp) / f"nvae-{mode}-{name}-{threads}",
                        f"num_threads={threads}",
                    )
                    for name, amp in PRECISIONS.items()
                }
                batches = {n: _batches(r.task) for n, r in runs.items()}
                steps = {
                    n: (lambda r=r, it=batches[n]: r.train_step(next(it))) for n, r in runs.items()
                }
                med = _alternate(steps, args.warmup, args.speed_steps)
                batch = next(iter(runs.values())).task.batch
                for r in runs.values():
                    r.log.close()
                    r.close()
                rows.append(_speed_row("NVAE tiny", mode, threads, batch, med))
                print(_fmt_speed(rows[-1]), flush=True)
    torch.set_num_threads(before)
    return rows


def _speed_row(model: str, mode: str, threads: int, batch: int, med: dict[str, float]):
    return {
        "model": model, "mode": mode, "threads": threads, "batch": batch,
        "fp32_samples_per_s": batch / med["fp32"], "bf16_samples_per_s": batch / med["bf16"],
        "bf16_speedup": med["fp32"] / med["bf16"], "fp32_step_s": med["fp32"],
        "bf16_step_s": med["bf16"],
    }  # fmt: skip


def _fmt_speed(r: dict[str, Any]) -> str:
    return (
        f"| {r['model']} | {r['mode']} | {r['threads']} | {r['batch']} "
        f"| {r['fp32_samples_per_s']:.0f} | {r['bf16_samples_per_s']:.0f} "
        f"| {r['bf16_speedup']:.2f}x |"
    )


# --------------------------------------------------------------------------------------- parity
def parity_names(reference: bool = True) -> list[str]:
    """Run names ``<model>-<mode>-<fp32 | bf16 | fp32ref>``."""
    tags = list(PARITY_RUNS) if reference else list(PRECISIONS)
    names = [f"conv-{mode}-{t}" for mode in CONV_MODES for t in tags]
    return names + [f"nvae-{NVAE_PARITY_MODE}-{t}" for t in tags]


def parity_one(args: argparse.Namespace, name: str) -> None:
    """Child process: train (or reuse) one parity run and write its ``parity_run.json``."""
    torch.set_num_threads(1)
    run_dir = Path(args.out) / "runs" / name
    if (run_dir / "parity_run.json").is_file():
        return
    model, rest = name.split("-", 1)  # conv-cr-bf16 -> conv, cr, bf16
    mode, tag = rest.rsplit("-", 1)
    amp, seed = PARITY_RUNS[tag][0], args.seed + PARITY_RUNS[tag][1]
    record = {"name": name, "model": model, "mode": mode, "amp": amp, "seed": seed}
    t0 = time.perf_counter()
    if model == "conv":
        record.update(_conv_parity(args, amp, mode, run_dir, f"seed={seed}"))
    else:
        record.update(_nvae_parity(args, amp, mode, run_dir, f"seed={seed}"))
    record["wall_seconds"] = time.perf_counter() - t0
    (run_dir / "parity_run.json").write_text(json.dumps(record, indent=2))


def _conv_parity(
    args: argparse.Namespace, amp: str, mode: str, run_dir: Path, seed: str
) -> dict[str, Any]:
    from crfold.train import train
    from crfold_images.task import load_splits

    cfg = conv_config(args, amp, mode, run_dir, f"epochs={args.conv_epochs}", "num_threads=1", seed)
    summary = train(cfg, resume=(run_dir / "last.pt").is_file(), quiet=True, evaluate=False)
    if summary["status"] != "completed":
        raise RuntimeError(f"{run_dir}: {summary['status']}")
    rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln]
    val = [r["val_neg_elbo"] for r in rows if r.get("kind") == "epoch" and "val_neg_elbo" in r]
    splits = load_splits(cfg)
    seconds = summary["total_seconds"]
    return {
        "steps": summary["step"], "epochs": summary["epoch"], "batch_size": cfg.batch_size,
        "val_neg_elbo": val[-1], "val_neg_elbo_per_epoch": val,
        "n_val": len(splits.val), "train_seconds": seconds,
        "train_samples_per_s": summary["epoch"] * len(splits.train) / max(seconds, 1e-9),
    }  # fmt: skip


@torch.no_grad()
def _nvae_neg_elbo(trainer: Any, seed: int) -> float:
    """Float32 mean -ELBO (analytic KL, one z per image, eval mode) over the test images."""
    cfg, model = trainer.cfg, trainer.model
    test = trainer.task.data.observed("test", cfg.likelihood, cfg.data_seed)  # (N, C, H, W)
    g = torch.Generator(device=trainer.device).manual_seed(seed)
    model.eval()
    total = 0.0
    for i in range(0, test.shape[0], cfg.eval_batch_size):
        out = model(test[i : i + cfg.eval_batch_size].to(trainer.device), generator=g)
        total += float(-out.elbo.sum())
    model.train()
    return total / test.shape[0]


def _nvae_parity(
    args: argparse.Namespace, amp: str, mode: str, run_dir: Path, seed: str
) -> dict[str, Any]:
    extra = [f"num_test={args.nvae_test}", "probe=false", "num_threads=1", seed]
    # max_steps stops the run; the lr and KL schedules span `epochs`: the epochs covering it.
    per_epoch = nvae_steps_per_epoch(nvae_config(args, amp, mode, run_dir, *extra))
    epochs = -(-args.nvae_steps // per_epoch)
    extra += [f"epochs={epochs}", f"max_steps={args.nvae_steps}"]
    trainer = nvae_run(args, amp, mode, run_dir, *extra)
    summary = trainer.run(evaluate=False)  # closes the log and the run-directory lock
    if summary["status"] == "interrupted" or trainer.step != args.nvae_steps:
        raise RuntimeError(f"{run_dir}: {summary['status']} at step {trainer.step}")
    neg_elbo = _nvae_neg_elbo(trainer, args.seed + 1)  # the same draws for every run
    result = trainer.task.evaluate(trainer.model, trainer.run_dir)  # float32 IW-NLL
    seconds, batch = summary["total_seconds"], trainer.task.batch
    return {
        "steps": trainer.step, "epochs": epochs, "batch_size": batch, "val_neg_elbo": neg_elbo,
        "iw_nll": result["nll_nats"], "iw_samples": result["num_samples"],
        "n_val": int(result["n_test"]), "train_seconds": seconds,
        "train_samples_per_s": trainer.step * batch / max(seconds, 1e-9),
    }  # fmt: skip


def parity(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run the parity children (``--jobs`` at once) and pair fp32 with bf16 per model/mode."""
    base = [sys.executable, __file__, "--out", args.out, "--seed", str(args.seed)]
    base += ["--image-config", args.image_config, "--nvae-config", args.nvae_config]
    base += ["--conv-epochs", str(args.conv_epochs), "--nvae-steps", str(args.nvae_steps)]
    base += ["--nvae-test", str(args.nvae_test)]
    pending = parity_names(args.reference)
    while pending:
        batch, pending = pending[: args.jobs], pending[args.jobs :]
        procs = [subprocess.Popen([*base, "--only", name]) for name in batch]
        if any(proc.wait() for proc in procs):
            raise RuntimeError(f"a parity run of {batch} failed")
    runs = {}
    for name in parity_names(args.reference):
        runs[name] = json.loads((Path(args.out) / "runs" / name / "parity_run.json").read_text())
    pairs = []
    for key in dict.fromkeys(n.rsplit("-", 1)[0] for n in parity_names()):  # conv-base, ...
        a, b = runs[f"{key}-fp32"], runs[f"{key}-bf16"]
        rel = abs(b["val_neg_elbo"] - a["val_neg_elbo"]) / abs(a["val_neg_elbo"])
        pair = {
            "model": a["model"], "mode": a["mode"], "steps": a["steps"],
            "batch_size": a["batch_size"], "n_val": a["n_val"],
            "fp32": a, "bf16": b, "val_neg_elbo_rel_diff": rel,
            "parity": rel <= args.tolerance,
        }  # fmt: skip
        if args.reference:
            ref = runs[f"{key}-fp32ref"]
            pair["fp32ref"] = ref
            pair["seed_rel_diff"] = abs(ref["val_neg_elbo"] - a["val_neg_elbo"]) / abs(
                a["val_neg_elbo"]
            )
        pairs.append(pair)
    return pairs


# --------------------------------------------------------------------------------------- report
def previous_speed(out: str) -> list[dict[str, Any]]:
    """The speed rows of an earlier run's ``parity.json`` (kept by ``--skip-speed``)."""
    path = Path(out) / "parity.json"
    return json.loads(path.read_text()).get("speed", []) if path.is_file() else []


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def report(args: argparse.Namespace, speed_rows: list[dict], pairs: list[dict]) -> None:
    from crfold.amp import amp_dtype, cpu_has_native_bf16

    out = Path(args.out)
    env = {
        "cpu": _cpu_name(), "cpu_has_native_bf16": cpu_has_native_bf16(),
        "auto_on_cpu": str(amp_dtype("auto", "cpu")), "torch": torch.__version__,
        "python": platform.python_version(),
    }  # fmt: skip
    summary = {"env": env, "args": vars(args), "speed": speed_rows, "parity": pairs}
    (out / "parity.json").write_text(json.dumps(summary, indent=2))
    kept = [a for a in sys.argv[1:] if a not in ("--skip-speed", "--skip-parity")]
    cmd = " ".join([".venv/bin/python scripts/bf16_parity_images.py", *kept])
    text = [
        "# bf16 autocast vs float32 for the image trainers (conv VAE, NVAE) on CPU",
        "",
        f"{env['cpu']} (native bf16: {env['cpu_has_native_bf16']}; `amp=auto` on this CPU: "
        f"{env['auto_on_cpu']}), torch {env['torch']}. Seed {args.seed}. Written by "
        "`scripts/bf16_parity_images.py`; the numbers are also in `parity.json`.",
        "",
        "Re-run (about 15 CPU-minutes; a finished parity run under `runs/` is reused, "
        "`--skip-speed` keeps the speed table of `parity.json`):",
        "",
        f"    {cmd}",
        "",
    ]
    if speed_rows:
        text += [
            "## Speed of a training step",
            "",
            f"Conv VAE: `{args.image_config}` (MNIST 28x28, width 0.25, a fixed batch of "
            f"`batch_size` images, no data loading). NVAE: `{args.nvae_config}` (its own "
            f"batches). fp32 and bf16 trainers stepped alternately; median of "
            f"{args.speed_steps} steps after {args.warmup} warm-up steps each. The cr modes "
            "encode and decode 2B rows per batch of B; samples/s counts B. The two cores are "
            "shared with other jobs: compare the two precisions of a row, not rows of "
            "different runs; a 2-thread row slower than its 1-thread row means the second core "
            "was busy with other work while it ran.",
            "",
            "| model | mode | threads | batch | fp32 samples/s | bf16 samples/s | bf16 speed-up |",
            "|---|---|---|---|---|---|---|",
            *(_fmt_speed(r) for r in speed_rows),
            "",
        ]
    if pairs:
        text += [
            "## Training parity",
            "",
            f"Same seed, same data order and draws, one thread per run ({args.jobs} runs side "
            "by side). Validation -ELBO in nats (float32, no autocast, one z per image): the "
            "conv VAE's on the 833 validation images of `mnist5k` (the trainer's own value "
            f"after the last epoch), the NVAE's on the first {args.nvae_test} official test "
            "images (eval mode, analytic KL; IW-NLL with the config's `iw_samples`). Parity: "
            f"relative difference <= {100 * args.tolerance:.0f} %. For scale, the last two "
            f"columns hold float32 with seed {args.seed + 1} and its difference from seed "
            f"{args.seed}'s float32 (the seed-to-seed spread of the same short run). Training "
            "samples/s of runs sharing the cores are indicative only.",
            "",
            "| model | mode | steps | batch | fp32 -ELBO | bf16 -ELBO | rel. diff | parity "
            "| fp32 / bf16 train samples/s | fp32 next seed | seed rel. diff |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for p in pairs:
            a, b = p["fp32"], p["bf16"]
            ref = (
                f"{p['fp32ref']['val_neg_elbo']:.2f} | {100 * p['seed_rel_diff']:.2f} %"
                if "fp32ref" in p
                else "- | -"
            )
            text.append(
                f"| {'conv VAE' if p['model'] == 'conv' else 'NVAE tiny'} | {p['mode']} "
                f"| {p['steps']} | {p['batch_size']} | {a['val_neg_elbo']:.2f} "
                f"| {b['val_neg_elbo']:.2f} | {100 * p['val_neg_elbo_rel_diff']:.2f} % "
                f"| {'yes' if p['parity'] else 'NO'} "
                f"| {a['train_samples_per_s']:.0f} / {b['train_samples_per_s']:.0f} | {ref} |"
            )
        text.append("")
        for p in pairs:
            a, b = p["fp32"], p["bf16"]
            if "val_neg_elbo_per_epoch" in a:
                pe = ", ".join(
                    f"{x:.1f}/{y:.1f}"
                    for x, y in zip(a["val_neg_elbo_per_epoch"], b["val_neg_elbo_per_epoch"])
                )
                text.append(f"* conv VAE {p['mode']}, val -ELBO per epoch (fp32/bf16): {pe}")
                if "fp32ref" in p:
                    ref = ", ".join(f"{x:.1f}" for x in p["fp32ref"]["val_neg_elbo_per_epoch"])
                    text.append(f"  (fp32, seed {args.seed + 1}: {ref})")
            if "iw_nll" in a:
                ref = (
                    f" (fp32, seed {args.seed + 1}: {p['fp32ref']['iw_nll']:.2f})"
                    if ("fp32ref" in p)
                    else ""
                )
                text.append(
                    f"* NVAE {p['mode']}, IW-NLL (K = {a['iw_samples']}, fp32/bf16): "
                    f"{a['iw_nll']:.2f} / {b['iw_nll']:.2f} nats{ref}"
                )
        text.append("")
    (out / "README.md").write_text("\n".join(text))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/bf16_parity_images", help="output folder")
    p.add_argument("--image-config", default="configs/images_mnist_hour.yaml")
    p.add_argument("--nvae-config", default="configs/nvae_tiny_cpu.yaml")
    p.add_argument("--seed", type=int, default=0, help="seed of every run")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="speed: thread counts")
    p.add_argument("--warmup", type=int, default=3, help="speed: warm-up steps per precision")
    p.add_argument("--speed-steps", type=int, default=9, help="speed: timed steps per precision")
    p.add_argument("--conv-epochs", type=int, default=5, help="parity: conv VAE epochs")
    p.add_argument("--nvae-steps", type=int, default=200, help="parity: NVAE steps")
    p.add_argument("--nvae-test", type=int, default=1000, help="parity: NVAE test images")
    p.add_argument("--tolerance", type=float, default=0.03, help="parity: relative -ELBO diff")
    p.add_argument("--jobs", type=int, default=2, help="parity runs trained at once")
    p.add_argument("--skip-speed", action="store_true", help="only the parity runs")
    p.add_argument("--skip-parity", action="store_true", help="only the speed table")
    p.add_argument(
        "--no-reference", dest="reference", action="store_false",
        help="parity: skip the float32 run of the next seed (the seed-to-seed scale)",
    )  # fmt: skip
    p.add_argument("--only", choices=parity_names(), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.only:
        parity_one(args, args.only)
        return 0
    Path(args.out).mkdir(parents=True, exist_ok=True)
    speed_rows = previous_speed(args.out) if args.skip_speed else speed(args)
    pairs = [] if args.skip_parity else parity(args)
    report(args, speed_rows, pairs)
    for pair in pairs:
        print(
            f"{pair['model']} {pair['mode']}: fp32 {pair['fp32']['val_neg_elbo']:.2f} bf16 "
            f"{pair['bf16']['val_neg_elbo']:.2f} rel {100 * pair['val_neg_elbo_rel_diff']:.2f} %"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
