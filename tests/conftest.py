"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def devices() -> list[str]:
    """Devices every device-generic test runs on: ``["cpu"]``, plus ``"cuda"`` when available."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# --------------------------------------------------------------------------- runs and data
# (eval, probe, render, experiments; the values of TINY are those of tests/test_train.py)
REPO = Path(__file__).resolve().parents[1]
# The shared real-data samples beside the checkout (tests may name it; code and configs may not).
SHARED_DATA = REPO.parent / "shared" / "data"
# A tiny model and set: 16 train shapes (2 steps of 8 per epoch), 8 validation shapes (the
# synthetic data's own val split; the default holdout is tested on its own).
TINY = [
    "val_split=val",
    "latent_dim=16",
    "grid_size=6",
    "num_points=64",
    "k=8",
    "synthetic_train_shapes=16",
    "synthetic_test_shapes=8",
    "batch_size=8",
    "epochs=1",
    "log_every=1",
]


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One torch thread: on a shared 2-core machine, spinning OpenMP threads slow tiny models."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_overrides() -> list[str]:
    """The ``key=value`` overrides of the tiny FoldingNet config (a copy per call is yours)."""
    return list(TINY)


def _tiny_config(run_dir: str | Path | None = None, *more: str):
    from crfold.config import load_config

    where = [] if run_dir is None else [f"run_dir={run_dir}"]
    return load_config(overrides=[*TINY, *where, *more])


@pytest.fixture(scope="session")
def tiny_config() -> Callable[..., object]:
    """``tiny_config(run_dir=None, *overrides)``: the tiny FoldingNet TrainConfig."""
    return _tiny_config


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, one_torch_thread) -> Path:
    """One trained tiny FoldingNet run (cr, 2 epochs, validated on the synthetic val split) for the
    whole session.

    20 train shapes (2 per class of the 10), 10 test shapes: each class in both splits. Tests
    may add files (eval.json, probe.json) but must not change its checkpoints.
    """
    from crfold.train import train

    run = tmp_path_factory.mktemp("trained") / "run"
    cfg = _tiny_config(run, "synthetic_train_shapes=20", "synthetic_test_shapes=10", "epochs=2")
    train(cfg, quiet=True)
    return run


@pytest.fixture
def shared_data(monkeypatch) -> Path:
    """``$CRFOLD_DATA``: as set (CI sets it), else the shared data samples beside the checkout;
    skips when neither is there."""
    root = Path(os.environ.get("CRFOLD_DATA") or SHARED_DATA)
    if not root.is_dir():
        pytest.skip(f"no data samples: CRFOLD_DATA is not set and {SHARED_DATA} is absent")
    monkeypatch.setenv("CRFOLD_DATA", str(root))
    return root


def _can_write(folder: Path) -> bool:
    probe = folder / ".probe-write"
    try:
        probe.write_text("x")
    except OSError:
        return False
    probe.unlink()
    return True


@pytest.fixture
def make_read_only() -> Iterator[Callable[[Path], Path]]:
    """``make_read_only(folder)``: ``folder`` and the files in it cannot be written (no file
    created, none opened for writing) until the test ends.

    chmod a-w for a normal user; as root (which chmod does not stop) the immutable attribute
    (``chattr +i``). Skips where neither works.
    """
    undo: list[Callable[[], None]] = []

    def make(folder: Path) -> Path:
        folder = Path(folder)
        paths = [*sorted(p for p in folder.iterdir() if p.is_file()), folder]
        for path in paths:
            if os.geteuid() != 0:
                mode = path.stat().st_mode
                path.chmod(0o555 if path.is_dir() else 0o444)
                undo.append(lambda path=path, mode=mode: path.chmod(mode))
            else:
                res = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
                if res.returncode != 0:
                    pytest.skip(f"cannot make {path} read-only as root: {res.stderr.decode()}")
                undo.append(lambda path=path: subprocess.run(["chattr", "-i", str(path)]))
        if _can_write(folder):
            pytest.skip(f"{folder} is still writable (file system ignores the attribute)")
        return folder

    yield make
    for step in reversed(undo):
        step()


@contextmanager
def _lock_held_elsewhere(run_dir: Path, command: str) -> Iterator[int]:
    code = (
        "import sys, time\n"
        "from crfold.io import RunLock\n"
        "RunLock(sys.argv[1], sys.argv[2]).acquire()\n"
        "print('locked', flush=True)\n"
        "time.sleep(300)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(run_dir), command],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def lock_held_elsewhere() -> Callable[[Path, str], object]:
    """``with lock_held_elsewhere(run_dir, command) as pid:`` another process holds the run's
    :class:`crfold.io.RunLock` (as a running ``crfold train`` would)."""
    return _lock_held_elsewhere
