"""Smoke tests of benchmarks/bench_busy.py (the busy-neighbour rounds) at tiny sizes.

They check that the spinning processes are always gone afterwards, the rounds and their ratios,
and the printed table; they never assert on timings.
"""

from __future__ import annotations

import importlib
import statistics
from pathlib import Path

import pytest
import torch

from .test_bench_chamfer import markdown_rows

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture()
def bench(monkeypatch):
    """The script as a module (its directory on sys.path, as when it runs as a script)."""
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    return importlib.import_module("bench_busy")


@pytest.fixture()
def common(bench):
    return bench.common


def test_busy_processes_spin_and_are_gone_afterwards(common):
    with common.busy_processes(2) as procs:
        assert len(procs) == 2 and all(p.poll() is None for p in procs)  # running
    assert all(p.returncode is not None for p in procs)  # killed and reaped
    with pytest.raises(KeyboardInterrupt), common.busy_processes(1) as procs:
        raise KeyboardInterrupt  # Ctrl-C inside the block
    assert procs[0].returncode is not None


def test_rounds_rows_ratios_and_worst(bench):
    times = {1: [0.010, 0.030, 0.020], 2: [0.005, 0.060, 0.010]}  # 1-thread median: 20 ms
    rows, worst = bench.rounds_rows("passive", times)
    assert [r[:3] for r in rows] == [["passive", t, r] for t in (1, 2) for r in (1, 2, 3)]
    assert [r[3] for r in rows] == ["10.0", "30.0", "20.0", "5.00", "60.0", "10.0"]
    assert [r[4] for r in rows] == ["0.50", "1.50", "1.00", "0.25", "3.00", "0.50"]
    assert worst == pytest.approx(3.0)


def test_measure_rounds_on_a_tiny_size_beside_a_busy_process(bench):
    threads = torch.get_num_threads()
    with bench.common.busy_processes(1) as procs:
        times = bench.measure_rounds((1, 40, 33, 3), rounds=2, calls=2)
    assert procs[0].returncode is not None
    assert torch.get_num_threads() == threads  # restored
    assert sorted(times) == [1, 2]
    assert all(len(v) == 2 and min(v) > 0 for v in times.values())
    rows, worst = bench.rounds_rows("default", times)
    assert len(rows) == 4 and worst == pytest.approx(max(times[2]) / statistics.median(times[1]))


@pytest.mark.slow
def test_main_busy_mode_prints_the_rounds_table(bench, capsys):
    argv = ["--busy", "1", "--sizes", "1x40x33x3", "--rounds", "2", "--calls", "1"]
    assert bench.main([*argv, "--wait-policy", "passive"]) == 0
    out = capsys.readouterr().out
    header, rows = markdown_rows(out)
    assert header == ["OpenMP wait", "threads", "round", "forward+backward ms",
                      "ratio to 1-thread median"]  # fmt: skip
    assert [r[:3] for r in rows] == [["passive", t, r] for t in "12" for r in "12"]
    assert "worst 2-thread round (passive): " in out
