"""Smoke tests of benchmarks/bench_chamfer.py and its helpers in benchmarks/_common.py.

They check what the script prints (one table, its columns, its skip rows) and that the memory
meter sees an allocation; they never assert on timings.
"""

from __future__ import annotations

import csv
import importlib
import io
from pathlib import Path

import pytest
import torch

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
HEADER = [
    "B",
    "P1",
    "P2",
    "D",
    "implementation",
    "forward ms",
    "forward+backward ms",
    "pairs/s",
    "peak extra memory (MB)",
]


@pytest.fixture()
def bench(monkeypatch):
    """The script as a module (its directory on sys.path, as when it runs as a script)."""
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    return importlib.import_module("bench_chamfer")


@pytest.fixture()
def common(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    return importlib.import_module("_common")


def markdown_rows(text: str) -> tuple[list[str], list[list[str]]]:
    """Header and body rows of the one markdown table in ``text``."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    assert len(cells) >= 2 and set(lines[1]) <= {"|", "-"}, text
    return cells[0], cells[2:]


def test_main_prints_one_markdown_table(bench, capsys):
    argv = ["--sizes", "2x1024x1024x3", "--repeats", "1", "--impls", "crfold,cdist,ckdtree"]
    assert bench.main([*argv, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("crfold backend: ")
    header, rows = markdown_rows(out)
    assert header == HEADER
    assert [r[4] for r in rows] == ["crfold", "torch.cdist+min", "scipy cKDTree"]
    for r in rows:
        assert r[:4] == ["2", "1024", "1024", "3"]
        assert float(r[5]) > 0 and float(r[7]) > 0  # forward ms, pairs/s: measured, not notes
        assert float(r[8]) >= 0  # peak extra memory (MB)
        assert (r[6] == "-") == (r[4] == "scipy cKDTree")  # forward only
    # cdist+min materialises a (2, 1024, 1024) float32 matrix (8.4 MB) in a child process started
    # by this (much larger) pytest process: the child's own peak must still show.
    assert float(rows[1][8]) >= 8


@pytest.mark.slow
def test_default_implementations(bench, capsys):
    assert bench.main(["--sizes", "2x40x33x3", "--repeats", "1", "--device", "cpu"]) == 0
    _, rows = markdown_rows(capsys.readouterr().out)
    labels = [r[4] for r in rows]
    assert labels[:4] == ["crfold", "torch.cdist+min", "reference", "scipy cKDTree"]
    assert all(float(r[5]) > 0 for r in rows)


def test_csv_output_and_skip_rows(bench, capsys):
    # Neither row runs anything: the dense matrix needs 40 GB, and cKDTree's estimated time
    # (from two small calibration runs) exceeds a tiny --max-seconds.
    argv = ["--sizes", "1x100000x100000x3", "--impls", "cdist,scipy ckdtree", "--csv"]
    assert bench.main([*argv, "--device", "cpu", "--max-seconds", "1e-9"]) == 0
    out = capsys.readouterr().out
    body = [ln for ln in out.splitlines() if not ln.startswith("# ")]
    rows = list(csv.reader(io.StringIO("\n".join(body))))
    assert rows[0] == HEADER
    assert rows[1][4:6] == ["torch.cdist+min", "skipped (needs 40 GB)"]
    assert rows[2][4] == "scipy cKDTree" and rows[2][5].startswith("skipped (~")
    assert rows[1][6:] == rows[2][6:] == ["-", "-", "-"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--sizes", "16x2048x3"],
        ["--sizes", "0x10x10x3"],
        ["--impls", "faiss"],
        ["--repeats", "0"],
        ["--markdown", "--csv"],
    ],
)
def test_bad_arguments_exit_with_usage_error(bench, argv, capsys):
    with pytest.raises(SystemExit) as info:
        bench.main(argv)
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_parse_sizes(bench):
    assert bench.parse_sizes("16x2048x2025x3, 1X10X20X8") == [(16, 2048, 2025, 3), (1, 10, 20, 8)]


def test_make_clouds_is_seeded_and_in_unit_cube(bench):
    x, y = bench.make_clouds(2, 5, 7, 3, "cpu")
    x2, y2 = bench.make_clouds(2, 5, 7, 3, "cpu")
    assert x.shape == (2, 5, 3) and y.shape == (2, 7, 3) and x.dtype == torch.float32
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert 0 <= float(x.min()) and float(x.max()) < 1


def test_implementations_agree(bench):
    # Every runnable implementation computes the same quantity (float32 tolerance).
    x, y = bench.make_clouds(2, 50, 45, 3, "cpu")
    values = {
        k: float(impl.fn(x, y))
        for k, impl in bench.IMPLS.items()
        if "cpu" in impl.devices and bench.common.importable(impl.module)
    }
    assert {"crfold", "cdist", "reference", "ckdtree"} <= set(values)
    for k, v in values.items():
        assert v == pytest.approx(values["reference"], rel=1e-4), k


def test_peak_memory_sees_a_cpu_allocation(common):
    if not common.reset_peak_rss():
        pytest.skip("this kernel does not allow resetting the RSS high-water mark")
    meter = common.PeakMemory("cpu")
    buf = torch.ones(64 * 2**20)  # 256 MiB, touched
    assert meter.extra_mb() >= 200
    del buf


def test_format_table(common):
    md = common.format_table(["a", "bb"], [[1, "x"], [22, "-"]], "markdown")
    assert md.splitlines() == ["| a  | bb |", "|----|----|", "| 1  | x  |", "| 22 | -  |"]
    assert common.format_table(["a", "b"], [[1, "x,y"]], "csv") == 'a,b\n1,"x,y"'
    with pytest.raises(ValueError, match="fmt"):
        common.format_table(["a"], [], "html")
    with pytest.raises(ValueError, match="2 cells"):
        common.format_table(["a", "b"], [[1]], "csv")


def test_median_seconds_counts_calls(common):
    calls = []
    t = common.median_seconds(lambda: calls.append(1), "cpu", repeats=3, warmup=2)
    assert len(calls) == 5 and t >= 0
    with pytest.raises(ValueError, match="repeats"):
        common.median_seconds(lambda: None, "cpu", repeats=0)
