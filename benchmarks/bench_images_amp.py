"""bf16 autocast vs float32: one training step of the image tasks (MNIST conv VAE, small NVAE).

Prints one GitHub-markdown table, a row per (model, mode): the median step of each precision
and their ratio, measured in one process, the two precisions stepped alternately.

    python benchmarks/bench_images_amp.py                      # width 1 (the paper's VAE), 1 thread
    python benchmarks/bench_images_amp.py --width 0.25 --steps 9 --modes base,cr

A step is what the run engine does per batch for the task (:meth:`crfold.train.Task.loss` of
:class:`crfold_images.task.ImageTask` / :class:`crfold_images.nvae.task.NVAETask`: augmentation,
binarization, the loss under ``crfold.amp.autocast``), then backward and the task's optimizer
(Adam for the VAE, Adamax for NVAE), on one fixed batch (data loading excluded):

* conv VAE: the MNIST architecture (1 x 28 x 28, latent 50, ``--width``; 1.0 is the paper's
  128/256/512/1024 channels) on a batch of 64 images of the embedded ``digits`` set (the same
  shapes as MNIST's);
* NVAE: ``configs/nvae_tiny_cpu.yaml`` (batch 32) on its synthetic ``random`` data set (the
  network and the step do not depend on the pixels' values).

fp32 is ``amp=none``; bf16 is what ``amp=auto`` resolves to on a CPU with AVX512-BF16 or AMX
(:func:`crfold.amp.amp_dtype`), forced with ``amp=bf16`` elsewhere (where it is emulated and
slower). ``--warmup`` untimed steps per precision, then ``--steps`` timed ones, alternating; each
figure is the median of the wall time (``time.perf_counter``) and of the process CPU time
(``time.process_time``). On one thread the CPU time is the robust figure when other jobs share
the cores: it does not count the time the scheduler gave to them.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from pathlib import Path

import torch

from crfold.amp import amp_dtype, cpu_has_native_bf16
from crfold.config import load_config
from crfold.train.runtime import DistInfo, step_generator

ROOT = Path(__file__).resolve().parents[1]


def _image_task(mode: str, width: float):
    from crfold_images.config import ImageConfig
    from crfold_images.task import ImageTask

    cfg = load_config(
        None, ["dataset=digits", f"mode={mode}", f"width={width}", "device=cpu"], cls=ImageConfig
    )
    return cfg, ImageTask(cfg, torch.device("cpu"), DistInfo())


def _nvae_task(mode: str):
    from crfold_images.nvae.config import load_nvae_config
    from crfold_images.nvae.task import NVAETask

    overrides = ["dataset=random", "num_train=64", "num_test=8", f"mode={mode}", "device=cpu"]
    cfg = load_nvae_config(ROOT / "configs" / "nvae_tiny_cpu.yaml", overrides)
    return cfg, NVAETask(cfg, torch.device("cpu"), DistInfo())


def bench(name: str, mode: str, cfg, task, warmup: int, steps: int) -> dict:
    """Median step (wall, CPU) of fp32 and bf16 for one task; both start from the same weights."""
    torch.manual_seed(0)
    model = task.build_model()
    batch = next(iter(task.train_batches(0, 0)))
    runs = {}
    for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        m = copy.deepcopy(model)
        runs[label] = (m, task.build_optimizer(m), dtype, [], [])

    def step(label: str, i: int) -> None:
        m, opt, dtype, walls, cpus = runs[label]
        gen = step_generator(cfg.seed, 0, i, torch.device("cpu"))
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        terms = task.loss(m, m, batch, i, warmup + steps, gen, dtype)
        terms["loss"].backward()
        opt.step()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)

    for i in range(warmup + steps):
        for label in runs:
            step(label, i)
    out = {"model": name, "mode": mode, "batch": int(batch.shape[0])}
    for label, (_, _, _, walls, cpus) in runs.items():
        out[f"{label}_wall"] = statistics.median(walls[warmup:])
        out[f"{label}_cpu"] = statistics.median(cpus[warmup:])
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--width", type=float, default=1.0, help="conv VAE channel multiplier")
    p.add_argument("--modes", default="base", help="comma list of base,aug,cr")
    p.add_argument("--models", default="vae,nvae", help="comma list of vae,nvae")
    p.add_argument("--steps", type=int, default=7, help="timed steps per precision")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per precision")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    auto = amp_dtype("auto", "cpu")
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} thread(s); native bf16: {cpu_has_native_bf16()}, amp=auto -> "
        f"{auto if auto is not None else 'float32'}"
    )
    rows = []
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            if model == "vae":
                cfg, task = _image_task(mode, args.width)
                name = f"conv VAE (MNIST, width {args.width:g})"
            else:
                cfg, task = _nvae_task(mode)
                name = "NVAE (nvae_tiny_cpu)"
            rows.append(bench(name, mode, cfg, task, args.warmup, args.steps))
    print()
    print("| model | mode | batch | fp32 step ms (CPU) | bf16 step ms (CPU) | fp32/bf16 wall | "
          "fp32/bf16 CPU |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['mode']} | {r['batch']} | {1e3 * r['fp32_wall']:.0f} "
            f"({1e3 * r['fp32_cpu']:.0f}) | {1e3 * r['bf16_wall']:.0f} ({1e3 * r['bf16_cpu']:.0f})"
            f" | {r['fp32_wall'] / r['bf16_wall']:.2f}x | {r['fp32_cpu'] / r['bf16_cpu']:.2f}x |"
        )


if __name__ == "__main__":
    main()
