"""Kill a `python -m data_prep` run with SIGKILL midway, rerun it: same output as a clean run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from crfold.data import HDF5PointClouds
from data_prep import prepare_folder

from .builders import build_folder

REPO = Path(__file__).resolve().parents[2]
SAMPLING = {"num_points": 256, "dense_factor": 8}


def _cached(out: Path) -> int:
    cache = out / ".cache"
    return sum(1 for p in cache.iterdir() if p.suffix in (".npy", ".err")) if cache.is_dir() else 0


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs POSIX process groups")
def test_sigkill_then_resume_equals_clean_run(tmp_path):
    info = build_folder(tmp_path / "meshes", per_class=6)
    total = len(info["good"]) + len(info["bad"])
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "data_prep", "folder", "--root", str(tmp_path / "meshes")]
    cmd += ["--out", str(killed), "--workers", "1", "--num-points", "256", "--dense-factor", "8"]
    proc = subprocess.Popen(
        cmd, cwd=REPO, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while _cached(killed) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, f"run ended before it could be killed: {proc.communicate()}"
        os.killpg(proc.pid, signal.SIGKILL)  # the main process and its worker, mid-run
    finally:
        proc.wait(timeout=60)
    done_before = _cached(killed)
    assert 3 <= done_before < total
    assert not list(killed.glob("*.h5"))  # shards come last: nothing half-made is visible

    resumed = prepare_folder(
        tmp_path / "meshes", killed, sampling=SAMPLING, workers=0, progress=False
    )
    assert resumed.computed == total - done_before
    assert not [p for p in killed.rglob("*") if ".tmp-" in p.name]
    clean = prepare_folder(
        tmp_path / "meshes", tmp_path / "clean", sampling=SAMPLING, workers=0, progress=False
    )
    assert resumed.splits == clean.splits and resumed.skipped == clean.skipped
    for split in clean.splits:
        a, b = HDF5PointClouds(killed, split), HDF5PointClouds(tmp_path / "clean", split)
        np.testing.assert_array_equal(a.points.numpy(), b.points.numpy())
        assert a.labels.tolist() == b.labels.tolist() and a.sample_files == b.sample_files
    for name in ("manifest.json", "shape_names.txt", "meshes_train0_id2name.json"):
        assert (killed / name).read_text() == (tmp_path / "clean" / name).read_text()
    report = json.loads((killed / "report.json").read_text())
    assert len(report["skipped"]) == len(info["bad"]) and report["exit_status"] == 3
