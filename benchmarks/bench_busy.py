"""Busy-neighbour benchmark: does a second thread still help crfold's op when other processes hold
the cores?

    python benchmarks/bench_busy.py                     # 2 busy processes, both wait policies
    python benchmarks/bench_busy.py --busy 0            # the same rounds on an idle machine

The script starts ``--busy`` pure-Python busy loops (killed when it ends, also on an error or
Ctrl-C), then times crfold's Chamfer forward+backward at one size (default 16x2048x2025x3,
float32; inputs of ``bench_chamfer.make_clouds``) in ``--rounds`` rounds per thread count,
alternating 1 and 2 threads, each round the median of ``--calls`` calls after one warm-up. It
prints one table (OpenMP wait policy, threads, round, forward+backward ms, ratio to the median
1-thread round) and the worst 2-thread ratio per policy.

The wait policy decides what an idle OpenMP thread does (spin on a core, or sleep); libgomp reads
it once at start, so each policy runs in a fresh process: ``default`` (libgomp's spin-then-sleep:
``OMP_WAIT_POLICY`` and ``GOMP_SPINCOUNT`` unset) and ``passive`` (``OMP_WAIT_POLICY=PASSIVE``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import _common as common
import torch
from bench_chamfer import Size, _crfold, _size_str, make_clouds, parse_sizes

BUSY_SIZE: Size = (16, 2048, 2025, 3)
BUSY_HEADER = ("OpenMP wait", "threads", "round", "forward+backward ms", "ratio to 1-thread median")
ROUND_THREADS = (1, 2)
# OMP_WAIT_POLICY of the child process per --wait-policy name (None: unset).
WAIT_POLICIES = {"default": None, "passive": "PASSIVE"}


def measure_rounds(size: Size, rounds: int, calls: int) -> dict[int, list[float]]:
    """crfold forward+backward seconds per round, for each thread count of ``ROUND_THREADS``.

    The rounds alternate thread counts (1, 2, 1, 2, ...), so that a change in the machine's load
    hits both alike; a round is the median of ``calls`` calls after one warm-up call (which also
    absorbs the cost of changing the number of threads). Restores the number of threads.

    Returns:
        ``{threads: [seconds of round 1, ..., round rounds]}``.
    """
    x, y = make_clouds(*size, "cpu")
    xg, yg = x.requires_grad_(), y.requires_grad_()

    def step() -> None:
        xg.grad = yg.grad = None
        _crfold(xg, yg).backward()

    before = torch.get_num_threads()
    times: dict[int, list[float]] = {t: [] for t in ROUND_THREADS}
    try:
        for _ in range(rounds):
            for t in ROUND_THREADS:
                torch.set_num_threads(t)
                times[t].append(common.median_seconds(step, "cpu", calls, warmup=1))
    finally:
        torch.set_num_threads(before)
    return times


def rounds_rows(policy: str, times: dict[int, list[float]]) -> tuple[list[list[object]], float]:
    """Table rows of :func:`measure_rounds`' result, and the worst ratio of a multi-thread round
    to the median 1-thread round."""
    base = statistics.median(times[1])
    rows = [
        [policy, t, r + 1, common.fmt_ms(sec), f"{sec / base:.2f}"]
        for t in sorted(times)
        for r, sec in enumerate(times[t])
    ]
    worst = max(sec / base for t in times if t > 1 for sec in times[t])
    return rows, worst


def run_busy(args: argparse.Namespace, policies: list[str]) -> int:
    """The rounds table with ``args.busy`` spinning processes, one child process per policy."""
    size = args.sizes[0]
    argv = [str(Path(__file__).resolve()), "--rounds-cell", "--sizes", _size_str(size)]
    argv += ["--rounds", str(args.rounds), "--calls", str(args.calls)]
    timeout = 120 + 20 * args.rounds * (args.calls + 1)
    from crfold.ops import backend

    rows, worst = [], {}
    with common.busy_processes(args.busy):
        for policy in policies:
            env = common.environ_with(OMP_WAIT_POLICY=WAIT_POLICIES[policy], GOMP_SPINCOUNT=None)
            result = common.run_isolated(argv, timeout=timeout, env=env)
            policy_rows, worst[policy] = rounds_rows(
                policy, {int(t): sec for t, sec in result.items()}
            )
            rows += policy_rows
    notes = [
        f"crfold backend: {backend()}",
        f"torch {torch.__version__}; crfold forward+backward at {_size_str(size)} (float32) beside "
        f"{args.busy} busy process(es) (pure-Python loops)",
        f"a round: median of {args.calls} calls after 1 warm-up; rounds alternate "
        f"{' and '.join(map(str, ROUND_THREADS))} threads; each OpenMP wait policy in a fresh "
        "process",
    ]
    prefix = "# " if args.fmt == "csv" else ""
    print("\n".join(prefix + n for n in notes) + ("\n" if args.fmt == "markdown" else ""))
    print(common.format_table(BUSY_HEADER, rows, args.fmt))
    for policy, ratio in worst.items():
        print(f"{prefix}worst 2-thread round ({policy}): {ratio:.2f}x the 1-thread median")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="crfold's Chamfer at 1 vs 2 threads beside busy processes, in rounds."
    )
    p.add_argument("--busy", type=int, default=2, metavar="N",
                   help="spinning processes started beside the rounds (default: 2; 0: none)")  # fmt: skip
    p.add_argument("--sizes", type=parse_sizes, default=[BUSY_SIZE],
                   help=f"one BxP1xP2xD (default: {_size_str(BUSY_SIZE)})")  # fmt: skip
    p.add_argument("--rounds", type=int, default=5,
                   help="rounds per thread count (default: 5)")  # fmt: skip
    p.add_argument("--calls", type=int, default=10,
                   help="timed calls per round, median shown (default: 10)")  # fmt: skip
    p.add_argument("--wait-policy", default="default,passive",
                   help="comma-separated OpenMP wait policies to run, of "
                   f"{', '.join(WAIT_POLICIES)} (default: %(default)s)")  # fmt: skip
    p.add_argument("--csv", dest="fmt", action="store_const", const="csv", default="markdown",
                   help="print CSV instead of markdown")  # fmt: skip
    p.add_argument("--rounds-cell", action="store_true", help=argparse.SUPPRESS)  # child: rounds
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("rounds", "calls"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.rounds_cell:  # child process: time the rounds and report them
        common.emit_result(measure_rounds(args.sizes[0], args.rounds, args.calls))
        return 0
    policies = [w.strip() for w in args.wait_policy.split(",") if w.strip()]
    if args.busy < 0 or not policies or not set(policies) <= set(WAIT_POLICIES):
        parser.error(f"--busy must be >= 0 and --wait-policy a list of {', '.join(WAIT_POLICIES)}")
    return run_busy(args, policies)


if __name__ == "__main__":
    sys.exit(main())
