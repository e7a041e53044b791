"""Training-throughput benchmark: crfold's FoldingNet-VAE step against a plain-PyTorch step.

Prints ONE GitHub-markdown table with a row per (size, mode, implementation) and the columns
size, mode, implementation, samples/s, step ms, speedup vs plain. The crfold backend, the
resolved ``amp=auto`` dtype, the settings and a loss-agreement check are printed above it.

    python benchmarks/bench_train.py                          # paper and table9 sizes, vae and cr
    python benchmarks/bench_train.py --sizes paper --modes base --steps 5
    python benchmarks/bench_train.py --sizes 8x1024x128x23    # B x points x latent x grid side

Sizes: ``paper`` is FoldingNet's (B = 16 clouds of 2048 points, latent 512, 45² grid), ``table9``
the CPU size of ``configs/table9_modelnet10.yaml`` (B = 8 clouds of 256 points, latent 128, 16²
grid); k = 16 in both.

One optimizer step is the training step of ``crfold train``: :func:`crfold.train.foldingnet.compute_terms`
(``cr``: x and t(x) through one forward of 2B clouds; beta 1, lambda 0.1), backward, Adam (lr 1e-4,
weight decay 1e-6), on one fixed batch of the embedded synthetic shapes (data loading excluded).
The implementations run the very same model class, initial weights, batch and random draws:

* ``plain``: float32 and PyTorch ops only, what a plain-PyTorch FoldingNet does: a dense kNN graph
  (``torch.cdist`` of every cloud with itself, diagonal masked, ``topk``), the graph max-pool in
  pure torch (:func:`crfold.ops.reference.graph_max_pool_reference`: argmax without autograd,
  then a gather of the winners; cheaper in memory than a differentiable gather + max), the dense
  128 -> 1024 layer followed by ``amax`` over the points, and a dense Chamfer (``torch.cdist``,
  squared, min in both directions). These are swapped in with ``unittest.mock.patch`` for the
  duration of the step (so is the logged Chamfer metric, with cdist); every layer stays as it is.
* ``crfold-fp32``: the model as shipped on crfold's compiled ops (kNN, Chamfer, graph max-pool),
  float32.
* ``crfold``: the same with crfold's default precision, ``amp=auto``: bf16 autocast on CUDA and on
  CPUs with native bf16 matmul (AVX512-BF16 or AMX), float32 elsewhere
  (:func:`crfold.amp.amp_dtype`). kNN, Chamfer and the losses stay float32.

Measurement: ``--warmup`` untimed steps per implementation (the first also builds the extension,
~30 s, cached), then ``--steps`` timed steps, alternating the implementations step by step so that
load from other processes hits them alike; the figure is the median step (``time.perf_counter``,
``torch.cuda.synchronize`` around each step on CUDA). samples/s = B / median step (x only, not
t(x)); speedup = plain step / this step. Before timing, the losses are computed once without
gradient on the same weights and draws; their relative differences to plain are printed (~1e-7 for
crfold-fp32: the same objective; ~1e-3 for bf16).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import statistics
import sys
from dataclasses import dataclass
from unittest import mock

import _common as common
import torch

from crfold.amp import amp_dtype
from crfold.config import TrainConfig
from crfold.data.synthetic import make_synthetic
from crfold.models import FoldingNetEncoder, FoldingNetVAE, foldingnet
from crfold.ops import backend, reference
from crfold.train import foldingnet as train_steps
from crfold.transforms import default_cr_transform

MODES = ("ae", "base", "cr")
IMPLS = ("plain", "crfold-fp32", "crfold")
HEADER = ("size", "mode", "implementation", "samples/s", "step ms", "speedup vs plain")
LR, WEIGHT_DECAY = 1e-4, 1e-6  # FoldingNet / the paper's Adam settings
BETA, LAM = 1.0, 0.1
K = 16
AGREEMENT_BATCH = 4  # clouds of the batch on which the losses are compared


@dataclass(frozen=True)
class Size:
    name: str
    batch: int
    points: int
    latent: int
    grid: int


PRESETS = {
    "paper": Size("paper", 16, 2048, 512, 45),
    "table9": Size("table9", 8, 256, 128, 16),
}


def dense_knn_excluding_self(x: torch.Tensor, k: int) -> torch.Tensor:
    """Plain kNN graph: (B, N, 3) -> (B, N, k) int64 nearest other points, by a dense matrix."""
    with torch.no_grad():
        d = torch.cdist(x, x)  # (B, N, N)
        d.diagonal(dim1=1, dim2=2).fill_(float("inf"))  # never the point itself
        return d.topk(k, dim=-1, largest=False).indices  # (B, N, k)


def cdist_chamfer_sum(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Plain squared Chamfer summed over the points of both directions: (B, M, 3), (B, N, 3) ->
    (B,), via the dense (B, M, N) distance matrix."""
    d = torch.cdist(recon, x).square()  # (B, M, N)
    return d.min(dim=2).values.sum(dim=1) + d.min(dim=1).values.sum(dim=1)  # (B,)


def cdist_foldingnet_chamfer(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Plain FoldingNet metric (the step's logged Chamfer, no gradient): (B,) via cdist."""
    d = torch.cdist(recon, x).square()  # (B, M, N)
    m_r = torch.sqrt(d.min(dim=2).values + foldingnet.FOLDINGNET_EPS).mean(dim=1)
    m_x = torch.sqrt(d.min(dim=1).values + foldingnet.FOLDINGNET_EPS).mean(dim=1)
    return torch.maximum(m_r, m_x)


def _plain_graph2_max(self, h: torch.Tensor) -> torch.Tensor:
    """Plain max over the points: the dense 128 -> 1024 layer, then amax (B, N, 1024) -> (B, 1024)."""
    return self.graph2(h).amax(dim=1)


def _plain_nll(self: FoldingNetVAE, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) Chamfer NLL in nats with the dense Chamfer (the model's Gaussian scale)."""
    return cdist_chamfer_sum(recon, x) / (2.0 * self.obs_scale**2)


def _ops(impl: str):
    """Context in which the model runs on ``impl``'s ops."""
    if impl != "plain":
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(
        mock.patch.object(foldingnet, "knn_excluding_self", dense_knn_excluding_self)
    )
    stack.enter_context(
        mock.patch.object(foldingnet, "graph_max_pool", reference.graph_max_pool_reference)
    )
    stack.enter_context(mock.patch.object(FoldingNetEncoder, "_graph2_max", _plain_graph2_max))
    stack.enter_context(mock.patch.object(FoldingNetVAE, "reconstruction_nll", _plain_nll))
    stack.enter_context(
        mock.patch.object(train_steps, "foldingnet_chamfer", cdist_foldingnet_chamfer)
    )
    return stack


def impl_dtype(impl: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``impl`` on ``device`` (None: float32)."""
    return amp_dtype("auto", device) if impl == "crfold" else None


def objective(model, x, mode: str, impl: str, transform, generator) -> dict[str, torch.Tensor]:
    """The training loss terms of one batch ``x`` (B, N, 3) for ``mode`` with ``impl``'s ops."""
    cfg = TrainConfig(mode=mode, beta=BETA, lam=LAM, k=model.k)
    with _ops(impl):
        return train_steps.compute_terms(
            model, x, cfg, transform, generator, amp_dtype=impl_dtype(impl, x.device)
        )


class TrainStep:
    """One optimizer step (forward, loss, backward, Adam) of ``model`` on a fixed batch."""

    def __init__(self, model, x, mode: str, impl: str, transform, seed: int):
        self.model, self.x, self.mode, self.impl, self.transform = model, x, mode, impl, transform
        self.optimizer = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        self.generator = torch.Generator(x.device).manual_seed(seed)

    def __call__(self) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = objective(self.model, self.x, self.mode, self.impl, self.transform, self.generator)
        loss["loss"].backward()
        self.optimizer.step()
        return float(loss["loss"].detach())


def make_batch(batch: int, points: int, device, seed: int = 0) -> torch.Tensor:
    """(batch, points, 3) float32 synthetic shapes (unit ball, y up), cycling over the classes."""
    x, _, _ = make_synthetic(math.ceil(batch / 10), points, seed=seed)
    return torch.from_numpy(x[:batch]).to(device)


def loss_agreement(model, x, mode: str, transform, seed: int) -> dict[str, float]:
    """|impl loss - plain loss| / |plain loss| on the same weights and draws, per crfold impl."""
    values = {}
    for impl in IMPLS:
        gen = torch.Generator(x.device).manual_seed(seed)
        with torch.no_grad():
            values[impl] = float(objective(model, x, mode, impl, transform, gen)["loss"])
    plain = values["plain"]
    return {impl: abs(values[impl] - plain) / max(abs(plain), 1e-30) for impl in IMPLS[1:]}


def bench_cell(args, size: Size, mode: str, device) -> tuple[dict[str, float], dict[str, float]]:
    """Median step seconds per implementation and the loss agreements, for one size and mode."""
    x = make_batch(size.batch, size.points, device, args.seed)  # (B, N, 3)
    torch.manual_seed(args.seed)
    model = FoldingNetVAE(
        latent_dim=size.latent, k=K, grid_size=size.grid, mode="ae" if mode == "ae" else "vae"
    )
    model.to(device).train()
    transform = default_cr_transform()
    agreement = loss_agreement(model, x[:AGREEMENT_BATCH], mode, transform, args.seed)
    steps = {
        impl: TrainStep(copy.deepcopy(model), x, mode, impl, transform, args.seed) for impl in IMPLS
    }
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {impl: [] for impl in IMPLS}
    for _ in range(args.steps):
        for impl, step in steps.items():
            times[impl].append(common.time_call(step, device))
    return {impl: statistics.median(t) for impl, t in times.items()}, agreement


def table_rows(results: dict[tuple[str, str], dict[str, float]], sizes) -> list[list[str]]:
    """Rows of the table from median step seconds ``results[(size, mode)][impl]``."""
    batch = {s.name: s.batch for s in sizes}
    rows = []
    for (size, mode), per_impl in results.items():
        for impl in IMPLS:
            seconds = per_impl[impl]
            speedup = per_impl["plain"] / seconds
            rows.append(
                [
                    size,
                    mode,
                    impl,
                    f"{batch[size] / seconds:.2f}",
                    common.fmt_ms(seconds),
                    f"{speedup:.2f}x",
                ]
            )
    return rows


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def parse_size(text: str) -> Size:
    """``paper``, ``table9`` or ``BxNxLxG`` (batch, points, latent, grid side)."""
    if text in PRESETS:
        return PRESETS[text]
    parts = text.split("x")
    try:
        b, n, latent, g = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"a size is paper, table9 or BxNxLxG, got {text!r}") from None
    if min(b, latent) < 1 or n < K + 1 or g < 2:
        raise ValueError(f"size {text!r}: need B, L >= 1, N >= {K + 1}, G >= 2")
    return Size(text, b, n, latent, g)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="FoldingNet-VAE training samples/s: crfold against a plain-PyTorch step.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--sizes", default="paper,table9", help="comma-separated: paper, table9 or BxNxLxG"
    )
    parser.add_argument("--modes", default="base,cr", help="comma-separated of ae,base,cr")
    parser.add_argument("--steps", type=_positive, default=3, help="timed steps per cell")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per cell first")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--seed", type=int, default=0, help="weights, data and draws")
    args = parser.parse_args(argv)
    try:
        args.sizes = [parse_size(s.strip()) for s in args.sizes.split(",") if s.strip()]
    except ValueError as exc:
        parser.error(f"--sizes: {exc}")
    if not args.sizes:
        parser.error("--sizes: give at least one size")
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in args.modes if m not in MODES]
    if bad or not args.modes:
        parser.error(f"--modes must be a comma-separated subset of {MODES}, got {bad or 'none'}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device not in ("cpu", "cuda") or (
        args.device == "cuda" and not torch.cuda.is_available()
    ):
        parser.error(f"--device must be cpu or an available cuda, got {args.device}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"crfold backend: {backend()}")  # builds (or loads) the extension before timing
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    auto = amp_dtype("auto", device)
    sizes = "; ".join(
        f"{s.name} = B {s.batch} x {s.points} points, latent {s.latent}, grid {s.grid}x{s.grid}"
        for s in args.sizes
    )
    print(
        f"# device {name} ({torch.get_num_threads()} threads); crfold amp=auto -> "
        f"{'float32' if auto is None else str(auto).replace('torch.', '')}; k {K}; {sizes}; "
        f"median of {args.steps} steps after {args.warmup} warm-up"
    )
    results, agreements = {}, []
    for size in args.sizes:
        for mode in args.modes:
            results[(size.name, mode)], agreement = bench_cell(args, size, mode, device)
            agreements += [f"{size.name}/{mode}/{impl} {v:.1e}" for impl, v in agreement.items()]
    print("# loss agreement vs plain (relative, same weights/draws): " + ", ".join(agreements))
    print(common.format_table(HEADER, table_rows(results, args.sizes), "markdown"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
