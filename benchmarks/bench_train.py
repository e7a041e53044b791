"""Training-throughput benchmark: FoldingNet-VAE steps on crfold's ops vs a plain-PyTorch step.

Prints ONE GitHub-markdown table with a row per (mode, implementation) and the columns mode,
implementation, samples/s, step ms, speedup vs plain. The crfold backend
(``crfold.ops.backend()``), the settings and a loss-agreement check are printed above it.

    python benchmarks/bench_train.py                     # 2048 points, batch 16, ae / vae / cr
    python benchmarks/bench_train.py --modes cr --steps 10 --device cuda

One optimizer step = forward + loss + backward + Adam step (lr 1e-4, weight decay 1e-6) of
:class:`crfold.models.FoldingNetVAE` (FoldingNet's architecture: 12-channel input, k = 16
graph, 45² grid) on one fixed batch of the embedded synthetic shapes (data loading excluded):

* ``ae``: z = mu, loss = Chamfer NLL (``vae_objective`` with a zero KL);
* ``vae``: a reparameterized z, ``vae_objective(model.reconstruction_nll(...), gaussian_kl(...))``;
* ``cr``: also t(x) from ``default_cr_transform()`` (drawn each step), ``cr_objective`` with
  beta = 1, lambda = 0.1: two encoder and decoder passes per step. samples/s counts x only.

Implementations, on the very same model class, initial weights, batch and random draws:

* ``crfold``: the model as shipped: the encoder's kNN graph from ``crfold.ops.knn_points``
  (compiled kernel) and ``model.reconstruction_nll`` (``crfold.ops.chamfer_distance``).
* ``plain``: what a plain-PyTorch FoldingNet does: a dense kNN graph (``torch.cdist`` of every
  cloud with itself, the diagonal masked, ``topk``) and a dense Chamfer (``torch.cdist`` between
  reconstruction and input, squared, min in both directions). The encoder builds its graph by
  calling ``crfold.models.foldingnet.knn_excluding_self``; the plain step swaps that one function
  (``unittest.mock.patch.object``, for the duration of the step) and leaves every layer as is.

Measurement: one warm-up step per implementation (it also builds the kNN extension on first
use, ~30 s, cached), then ``--steps`` timed steps, alternating crfold and plain step by step so
that load from other processes hits both alike; the figure is the median step
(``time.perf_counter``, ``torch.cuda.synchronize`` around each step on CUDA). samples/s =
batch / median step; speedup = plain step / crfold step. Before timing, the two losses are
computed once (no gradient, on the first 4 clouds) on the same weights and draws; their relative
difference is printed (~1e-7 in float32: the implementations compute the same objective).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import statistics
import sys
from unittest import mock

import _common as common
import torch

from crfold.consistency import cr_objective, gaussian_kl, vae_objective
from crfold.data.synthetic import make_synthetic
from crfold.models import FoldingNetVAE, foldingnet
from crfold.ops import backend
from crfold.transforms import default_cr_transform

MODES = ("ae", "vae", "cr")
IMPLS = ("crfold", "plain")
HEADER = ("mode", "implementation", "samples/s", "step ms", "speedup vs plain")
LR, WEIGHT_DECAY = 1e-4, 1e-6  # FoldingNet / the paper's Adam settings
BETA, LAM = 1.0, 0.1
AGREEMENT_BATCH = 4  # clouds of the batch on which the two losses are compared


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


def _ops(impl: str):
    """Context in which the model's encoder uses ``impl``'s kNN graph."""
    if impl == "crfold":
        return contextlib.nullcontext()
    return mock.patch.object(foldingnet, "knn_excluding_self", dense_knn_excluding_self)


def _recon_nll(model: FoldingNetVAE, recon: torch.Tensor, x: torch.Tensor, impl: str):
    """(B,) Chamfer NLL in nats with ``impl``'s Chamfer (the same Gaussian scale)."""
    if impl == "crfold":
        return model.reconstruction_nll(recon, x)
    return cdist_chamfer_sum(recon, x) / (2.0 * model.obs_scale**2)


def objective(model, x, mode: str, impl: str, transform, generator) -> dict[str, torch.Tensor]:
    """The training loss terms of one batch ``x`` (B, N, 3) for ``mode`` with ``impl``'s ops."""
    with _ops(impl):
        out = model(x, generator)
        nll = _recon_nll(model, out.recon, x, impl)  # (B,)
        if mode == "ae":
            return vae_objective(nll, torch.zeros_like(nll))
        kl = gaussian_kl(out.posterior.mu, out.posterior.logvar)  # (B,)
        if mode == "vae":
            return vae_objective(nll, kl, beta=BETA)
        x_aug = transform(x, generator=generator)  # (B, N, 3)
        out_aug = model(x_aug, generator)
        nll_aug = _recon_nll(model, out_aug.recon, x_aug, impl)
        kl_aug = gaussian_kl(out_aug.posterior.mu, out_aug.posterior.logvar)
        return cr_objective(
            nll, kl, nll_aug, kl_aug, out.posterior, out_aug.posterior, beta=BETA, lam=LAM
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


def loss_agreement(model, x, mode: str, transform, seed: int) -> float:
    """|crfold loss - plain loss| / |plain loss| on the same weights and random draws."""
    values = {}
    for impl in IMPLS:
        gen = torch.Generator(x.device).manual_seed(seed)
        with torch.no_grad():
            values[impl] = float(objective(model, x, mode, impl, transform, gen)["loss"])
    return abs(values["crfold"] - values["plain"]) / max(abs(values["plain"]), 1e-30)


def bench_mode(args, mode: str, x: torch.Tensor) -> tuple[dict[str, float], float]:
    """Median step seconds per implementation and the loss agreement, for one mode."""
    torch.manual_seed(args.seed)
    model = FoldingNetVAE(latent_dim=args.latent, k=args.k, grid_size=args.grid, mode=mode)
    model.to(x.device).train()
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
            times[impl].append(common.time_call(step, x.device))
    return {impl: statistics.median(t) for impl, t in times.items()}, agreement


def table_rows(results: dict[str, dict[str, float]], batch: int) -> list[list[str]]:
    """Rows of the table from median step seconds ``results[mode][impl]``."""
    rows = []
    for mode, per_impl in results.items():
        for impl in IMPLS:
            seconds = per_impl[impl]
            speedup = per_impl["plain"] / seconds
            rows.append(
                [mode, impl, f"{batch / seconds:.2f}", common.fmt_ms(seconds), f"{speedup:.2f}x"]
            )
    return rows


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="FoldingNet-VAE training samples/s: crfold ops vs a plain-PyTorch step.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--points", type=_positive, default=2048, help="points per input cloud")
    parser.add_argument("--batch", type=_positive, default=16, help="clouds per step")
    parser.add_argument("--steps", type=_positive, default=3, help="timed steps per cell")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per cell first")
    parser.add_argument("--latent", type=_positive, default=512, help="latent dim L")
    parser.add_argument("--grid", type=_positive, default=45, help="decoder grid side")
    parser.add_argument("--k", type=_positive, default=16, help="encoder kNN graph size")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated of ae,vae,cr")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--seed", type=int, default=0, help="weights, data and draws")
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in args.modes if m not in MODES]
    if bad or not args.modes:
        parser.error(f"--modes must be a comma-separated subset of {MODES}, got {bad or 'none'}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.k < 2 or args.points < args.k + 1:
        parser.error(f"need --k >= 2 and --points >= k + 1, got k={args.k}, points={args.points}")
    if args.grid < 2:
        parser.error(f"--grid must be >= 2, got {args.grid}")
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device not in ("cpu", "cuda") or (
        args.device == "cuda" and not torch.cuda.is_available()
    ):
        parser.error(f"--device must be cpu or an available cuda, got {args.device}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"crfold backend: {backend()}")  # builds (or loads) the kNN extension before timing
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"# device {name} ({torch.get_num_threads()} threads), batch {args.batch} x "
        f"{args.points} points, grid {args.grid}x{args.grid}, latent {args.latent}, k {args.k}, "
        f"median of {args.steps} steps after {args.warmup} warm-up"
    )
    x = make_batch(args.batch, args.points, device, args.seed)  # (B, N, 3)
    results, agreements = {}, []
    for mode in args.modes:
        results[mode], agreement = bench_mode(args, mode, x)
        agreements.append(f"{mode} {agreement:.1e}")
    print(
        "# loss agreement crfold vs plain (relative, same weights/draws): " + ", ".join(agreements)
    )
    print(common.format_table(HEADER, table_rows(results, args.batch), "markdown"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
