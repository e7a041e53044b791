"""Timing, memory and table helpers shared by the scripts in ``benchmarks/``.

Every figure a benchmark prints comes from these helpers, so all tables mean the same thing:

* **time**: ``time.perf_counter`` around one call, with ``torch.cuda.synchronize`` before and
  after the call on CUDA; the reported figure is the median of ``repeats`` calls made after
  ``warmup`` untimed calls.
* **peak extra memory** (:class:`PeakMemory`): on CUDA, ``torch.cuda.max_memory_allocated``
  minus what was allocated when the meter started (so the inputs are excluded); on CPU, the
  growth of the process's resident-set high-water mark (``VmHWM``, i.e. ``ru_maxrss`` without
  what it inherits across ``exec``, see :func:`peak_rss_mb`) since the meter started.
  PyTorch's CPU allocations bypass ``tracemalloc``, hence RSS. The high-water mark never goes
  down, so a CPU measurement is only meaningful in a fresh process that does one measured thing:
  run it through :func:`run_isolated` (the child reports with :func:`emit_result`).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch

RESULT_MARK = "@@bench-result "  # prefix of the one stdout line a child process reports on


def importable(module: str | None) -> bool:
    """Whether ``module`` imports (None: nothing to import). A broken install counts as absent."""
    if module is None:
        return True
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - any failure to import means "not available"
        return False
    return True


def require(module: str, hint: str):
    """Import an optional dependency, or raise ImportError saying how to get it (``hint``)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{module} is needed here ({hint})") from exc


def synchronize(device: torch.device | str) -> None:
    """Wait for queued kernels on ``device`` (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device | str) -> float:
    """Wall-clock seconds of one call of ``fn``, synchronizing ``device`` around it."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def median_seconds(
    fn: Callable[[], object],
    device: torch.device | str,
    repeats: int,
    warmup: int = 1,
    budget: float | None = None,
) -> float:
    """Median wall-clock seconds of up to ``repeats`` calls of ``fn`` after ``warmup`` calls.

    With a ``budget`` (seconds), timing stops early, after at least one timed call, once one more
    call of the last call's duration would take the timed total over the budget; slow cells then
    cost about ``warmup + 1`` calls instead of ``warmup + repeats``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    times: list[float] = []
    while len(times) < repeats:
        times.append(time_call(fn, device))
        if budget is not None and sum(times) + times[-1] > budget:
            break
    return statistics.median(times)


def release_free_heap() -> None:
    """Return the C heap's free pages to the OS (glibc ``malloc_trim``; no-op elsewhere).

    Without it, allocations made after a baseline may reuse pages that are already resident
    (freed while importing or warming up) and not show in the RSS at all.
    """
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    """Reset the process's RSS high-water mark to the current RSS, where Linux allows it.

    Writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0) resets ``VmHWM`` (see
    :func:`peak_rss_mb`), so a baseline taken right after is the current RSS rather than an
    earlier transient peak (e.g. while importing). Returns whether the reset happened.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """The process's resident-set high-water mark in MB.

    On Linux this is ``VmHWM`` from ``/proc/self/status``: the high-water mark of this address
    space, which :func:`reset_peak_rss` can reset. ``ru_maxrss`` (used elsewhere) is the same
    figure except that it also keeps the mark of the image replaced at ``exec``: a child started
    by a 1 GB parent reports ``ru_maxrss >= 1 GB`` from the start, hiding its own smaller peaks.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6  # kB
    except (OSError, ValueError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6  # macOS: bytes, else KiB


class PeakMemory:
    """Peak memory allocated beyond what existed when the meter was created.

    Create it right after the inputs exist; :meth:`extra_mb` then gives the peak extra memory
    (MB = 1e6 bytes) of everything run since. CUDA: ``max_memory_allocated`` growth (the
    allocator's peak statistic is reset at creation). CPU: RSS high-water growth, see the module
    docstring (use one fresh process per measurement).

    Args:
        device: the device whose memory is measured.
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device) / 1e6
        else:
            release_free_heap()
            reset_peak_rss()
            self.base = peak_rss_mb()

    def extra_mb(self) -> float:
        """Peak extra memory in MB since the meter was created (never negative)."""
        if self.device.type == "cuda":
            synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / 1e6
        else:
            peak = peak_rss_mb()
        return max(0.0, peak - self.base)


def emit_result(result: dict) -> None:
    """Print ``result`` as the JSON line that :func:`run_isolated` reads back."""
    print(RESULT_MARK + json.dumps(result), flush=True)


class IsolatedRunError(RuntimeError):
    """A child started by :func:`run_isolated` failed, timed out or reported nothing."""


def run_isolated(args: Sequence[str], timeout: float, env: Mapping[str, str] | None = None) -> dict:
    """Run ``python ARGS`` in a fresh interpreter and return the dict it reported.

    Args:
        args: the arguments after the interpreter, e.g. ``[script_path, "--cell", ...]``.
        timeout: seconds before the child is killed.
        env: the child's environment (default: this process's).

    Returns:
        The dict the child printed with :func:`emit_result` (the last such line).

    Raises:
        IsolatedRunError: on a non-zero exit, a timeout or a missing result line; the message
            ends with the tail of the child's stderr.
    """
    cmd = [sys.executable, *args]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env
        )
    except subprocess.TimeoutExpired as exc:
        raise IsolatedRunError(f"timed out after {timeout:.0f} s") from exc
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise IsolatedRunError(f"exit status {proc.returncode}: {tail}")
    return json.loads(lines[-1][len(RESULT_MARK) :])


# A pure-Python busy loop. It checks every ~10-50 ms that the process that started it is still its
# parent, so it also ends when that process dies without cleaning up (SIGKILL).
_SPIN = """
import os
parent = os.getppid()
while os.getppid() == parent:
    for _ in range(1_000_000):
        pass
"""


@contextlib.contextmanager
def busy_processes(n: int) -> Iterator[list[subprocess.Popen]]:
    """Keep ``n`` processes spinning on the CPU while the ``with`` block runs.

    They stand for other jobs on a shared machine (one busy core each). They are killed and
    reaped when the block ends, also on an exception or Ctrl-C.

    Args:
        n: number of spinning processes (0: none).

    Yields:
        The started processes (``Popen``), e.g. to check that they are gone afterwards.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen([sys.executable, "-c", _SPIN], stdin=subprocess.DEVNULL))
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def environ_with(**overrides: str | None) -> dict[str, str]:
    """A copy of ``os.environ`` with ``overrides`` applied (a None value removes the variable)."""
    env = dict(os.environ)
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def fmt_ms(seconds: float | None) -> str:
    """Milliseconds with 3-4 significant digits, ``-`` for None."""
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:.0f}"
    return f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]], fmt: str) -> str:
    """Render ``rows`` under ``header`` as a GitHub-markdown table or as CSV.

    Args:
        header: column names.
        rows: one sequence of cells per row, each of ``len(header)`` cells (rendered with str).
        fmt: ``"markdown"`` or ``"csv"``.

    Returns:
        The table text, lines joined by newlines, no trailing newline.
    """
    if fmt not in ("markdown", "csv"):
        raise ValueError(f"fmt must be 'markdown' or 'csv', got {fmt!r}")
    cells = [[str(c) for c in row] for row in rows]
    for row in cells:
        if len(row) != len(header):
            raise ValueError(f"each row must have {len(header)} cells, got {len(row)}: {row}")
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(cells)
        return buf.getvalue().rstrip("\n")
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]

    def line(items: Sequence[str]) -> str:
        return "| " + " | ".join(s.ljust(w) for s, w in zip(items, widths)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in cells)])
