"""Max-pool benchmark: crfold's compiled graph / global max-pools against pure-torch versions.

Prints ONE GitHub-markdown table with a row per (pool, dtype, implementation) and the columns
pool, B, N, C, k, dtype, implementation, forward ms, forward+backward ms, speedup (fwd+bwd) vs
torch. The crfold backend is printed above it.

    python benchmarks/bench_pool.py                    # FoldingNet's encoder sizes, fp32 and bf16
    python benchmarks/bench_pool.py --batch 16 --dtypes float32 --repeats 3

Sizes are those of FoldingNet's encoder in a ``cr`` step at the paper's size (2B = 32 clouds of
2048 points, k = 16): the two graph max-pools (C = 64 and 128 channels) and the global max-pool
over the points (C = 1024). Implementations:

* ``crfold``: :func:`crfold.ops.graph_max_pool` / :func:`crfold.ops.global_max_pool`;
* ``torch argmax+gather``: :mod:`crfold.ops.reference` (the encoder's pools before the compiled
  ops: each channel's winner by ``argmax`` without autograd, then a differentiable gather);
* ``torch gather+amax``: what a plain PyTorch FoldingNet writes: a differentiable
  ``(B, N, k+1, C)`` gather then ``amax`` for the graph pool, ``amax(dim=1)`` for the global one.

Times: median of ``--repeats`` calls after one warm-up (``benchmarks/_common.py``), inputs
standard normal (seeded), the backward of ``out.sum()``. The speedup column divides the
``torch gather+amax`` forward+backward time by the row's.
"""

from __future__ import annotations

import argparse
import sys

import _common as common
import torch

from crfold.ops import backend, global_max_pool, graph_max_pool, reference

HEADER = ("pool", "B", "N", "C", "k", "dtype", "implementation", "forward ms")
HEADER += ("forward+backward ms", "speedup vs gather+amax")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def naive_graph_pool(features: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """Plain PyTorch: gather every candidate (B, N, k+1, C), then the max over them."""
    B, N, _ = features.shape
    own = torch.arange(N, device=features.device).view(1, N, 1).expand(B, N, 1)
    cand = torch.cat([own, neighbours], dim=2)  # (B, N, k + 1)
    batch = torch.arange(B, device=features.device).view(-1, 1, 1)
    return features[batch, cand].amax(dim=2)


IMPLS = {
    "graph": {
        "crfold": graph_max_pool,
        "torch argmax+gather": reference.graph_max_pool_reference,
        "torch gather+amax": naive_graph_pool,
    },
    "global": {
        "crfold": lambda f, _nb: global_max_pool(f),
        "torch argmax+gather": lambda f, _nb: reference.global_max_pool_reference(f),
        "torch gather+amax": lambda f, _nb: f.amax(dim=1),
    },
}


def time_pool(fn, features, neighbours, repeats: int) -> tuple[float, float]:
    """Median forward and forward+backward seconds of ``fn(features, neighbours)``."""
    device = features.device
    with torch.no_grad():
        fwd = common.median_seconds(lambda: fn(features, neighbours), device, repeats)
    x = features.detach().clone().requires_grad_()

    def step():
        x.grad = None
        fn(x, neighbours).sum().backward()

    return fwd, common.median_seconds(step, device, repeats)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Graph / global max-pool: crfold against pure torch.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--batch", type=int, default=32, help="clouds (2B of a cr step at B = 16)")
    p.add_argument("--points", type=int, default=2048, help="points per cloud N")
    p.add_argument("--k", type=int, default=16, help="graph neighbours")
    p.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated dtypes")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per cell")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    args = p.parse_args(argv)
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if not dtypes or any(d not in DTYPES for d in dtypes):
        p.error(f"--dtypes must be a comma-separated subset of {sorted(DTYPES)}")
    if min(args.batch, args.repeats, args.k) < 1 or args.points < args.k + 1:
        p.error("need --batch, --repeats, --k >= 1 and --points > k")
    print(f"crfold backend: {backend()}")
    device = torch.device(args.device)
    print(f"# device {device} ({torch.get_num_threads()} threads), median of {args.repeats}")
    g = torch.Generator().manual_seed(0)
    B, N, k = args.batch, args.points, args.k
    neighbours = torch.randint(0, N, (B, N, k), generator=g).to(device)
    rows = []
    for pool, channels in (("graph", (64, 128)), ("global", (1024,))):
        for C in channels:
            for name in dtypes:
                f = torch.randn(B, N, C, generator=g).to(device, DTYPES[name])
                times = {
                    impl: time_pool(fn, f, neighbours, args.repeats)
                    for impl, fn in IMPLS[pool].items()
                }
                base = times["torch gather+amax"][1]
                for impl, (fwd, both) in times.items():
                    rows.append(
                        [pool, B, N, C, k if pool == "graph" else "-", name, impl]
                        + [common.fmt_ms(fwd), common.fmt_ms(both), f"{base / both:.1f}x"]
                    )
    print(common.format_table(HEADER, rows, "markdown"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
