"""Runs never lose or mix data: the run-directory lock, resume checks, failed saves, bad files.

Each guarantee of the run engine (crfold.train.engine, crfold.io) with a test: two concurrent
``crfold train`` commands on one run dir, ``--resume`` with a changed ``mode`` or ``data``, a save
that fails half-way (simulated ENOSPC), a corrupt checkpoint, a malformed YAML, and one
permission rule for every run file.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import crfold.train.engine as engine
from crfold.cli import main
from crfold.config import load_config
from crfold.io import (
    LOCK_FILE,
    RunLock,
    RunLockedError,
    WriteError,
    atomic_write,
    load_checkpoint,
    read_yaml,
)
from crfold.train import Trainer, train

REPO = Path(__file__).resolve().parents[2]
RUN_FILES = ("config.yaml", "last.pt", "best.pt", "metrics.jsonl", "summary.json")


def _crfold(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "crfold", *args], cwd=REPO, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw,
    )  # fmt: skip


def _wait_for_lock(run: Path, proc: subprocess.Popen, timeout: float = 120.0) -> str:
    """The holder line of ``run``'s lock file once ``proc`` has written it."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        lock = run / LOCK_FILE
        if lock.is_file() and lock.read_text().strip():
            return lock.read_text()
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("the first command never took the lock")


# --------------------------------------------------------------------------- one writer
def test_two_concurrent_train_commands_on_one_run_dir(tiny_overrides, tmp_path):
    run = tmp_path / "run"
    first = _crfold("train", "--quiet", "--run-dir", str(run), *tiny_overrides[:-2], "epochs=100000",
                    "log_every=1")  # fmt: skip
    try:
        holder = _wait_for_lock(run, first)
        assert f"pid {first.pid}" in holder and "crfold train" in holder
        second = _crfold("train", "--quiet", "--run-dir", str(run), *tiny_overrides, "mode=base")
        out, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        assert f"in use by pid {first.pid}" in err and len(err.strip().splitlines()) == 1
        # The first run's files are its own: the second wrote nothing.
        assert load_config(run / "config.yaml").mode == "cr"
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM, err
    assert load_checkpoint(run / "last.pt")["config"]["mode"] == "cr"


def test_lock_is_released_when_the_holder_dies_and_is_reentrant_in_process(tiny_config, tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from crfold.io import RunLock; "
         f"RunLock({str(run)!r}, 'holder').acquire(); print('locked', flush=True); time.sleep(600)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"in use by pid {holder.pid} .*holder"):
            RunLock(run).acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(run, "a"), RunLock(run, "nested"):  # the kernel dropped the dead holder's lock
        summary = train(
            tiny_config(run), quiet=True
        )  # the trainer's own lock nests in this process
    assert summary["status"] == "completed"


# --------------------------------------------------------------------------- resume
def test_resume_refuses_a_changed_mode_and_names_it(tiny_config, tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny_config(run, "max_steps=1"), quiet=True)
    before = (run / "config.yaml").read_text()
    code = main(["train", "--resume", "--run-dir", str(run), "--quiet", "mode=base"])
    err = capsys.readouterr().err
    assert code == 2 and "mode: 'cr' -> 'base'" in err and len(err.strip().splitlines()) == 1
    assert (run / "config.yaml").read_text() == before  # nothing rewritten


def test_resume_refuses_other_data_and_other_objective_weights(tiny_config, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(run, "max_steps=1"), quiet=True)
    for change, key in (("data=elsewhere.npz", "data"), ("lam=0.5", "lam"), ("seed=3", "seed"),
                        ("latent_dim=32", "latent_dim"), ("synthetic_train_shapes=24",
                                                          "synthetic_train_shapes")):  # fmt: skip
        with pytest.raises(ValueError, match=f"{key}: .* -> "):
            Trainer(tiny_config(run, change), resume=True, quiet=True)
    # Keys of the budget, logging and runtime may change; the lock was released by each refusal.
    summary = train(tiny_config(run, "epochs=2", "log_every=3", "num_threads=1", "amp=none"),
                    resume=True, quiet=True)  # fmt: skip
    assert summary["status"] == "completed" and summary["epoch"] == 2


def test_resume_accepts_old_mode_names_of_the_same_run(tiny_config, tmp_path):
    run = tmp_path / "run"
    with pytest.warns(DeprecationWarning, match="old name"):
        cfg = tiny_config(run, "mode=vae+aug", "max_steps=1")
    train(cfg, quiet=True)
    with pytest.warns(DeprecationWarning):
        again = tiny_config(run, "mode=vae+aug")
    assert train(again, resume=True, quiet=True)["status"] == "completed"


def test_help_lists_the_keys_that_may_change_on_resume(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for key in ("epochs", "max_steps", "log_every", "num_threads"):
        assert any(line.strip().startswith(f"{key} (") and "may change on --resume" in line
                   for line in out.replace("\n      ", " ").splitlines()), key  # fmt: skip
    assert "mode (str" in out and "mode (str, default 'cr'): ae | base" in out.replace(
        "\n      ", " "
    )


# --------------------------------------------------------------------------- failed saves
def _failing_save(fail_on: set[str], calls: list[str]):
    real = engine.save_checkpoint

    def save(path, state):
        calls.append(Path(path).name)
        if Path(path).name in fail_on:
            raise WriteError.from_os_error(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        return real(path, state)

    return save


def test_disk_full_on_best_pt_after_last_pt_is_repaired_on_resume(
    tiny_config, tmp_path, monkeypatch
):
    run = tmp_path / "run"
    calls: list[str] = []
    monkeypatch.setattr(engine, "save_checkpoint", _failing_save({"best.pt"}, calls))
    with pytest.raises(WriteError, match=r"could not write .*best\.pt: No space left on device"):
        train(tiny_config(run, "epochs=2"), quiet=True)
    assert calls == ["last.pt", "best.pt"] and not (run / "best.pt").exists()
    monkeypatch.undo()
    summary = train(tiny_config(run, "epochs=2"), resume=True, quiet=True)
    assert summary["status"] == "completed" and summary["epoch"] == 2
    assert load_checkpoint(run / "best.pt")["step"] == load_checkpoint(run / "last.pt")["best_step"]


def test_a_save_failing_half_way_leaves_the_run_resumable_to_the_same_weights(
    tiny_config, tmp_path, monkeypatch
):
    ref = tmp_path / "ref"
    train(tiny_config(ref, "epochs=2"), quiet=True)
    run = tmp_path / "run"
    train(tiny_config(run, "epochs=1"), quiet=True)
    old = (run / "last.pt").read_bytes()
    real_save = torch.save

    def half_then_enospc(state, f):  # writes part of the archive, then the disk is full
        real_save(state, f)
        f.truncate(f.tell() // 2)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", half_then_enospc)
    with pytest.raises(WriteError, match="last.pt: No space left on device"):
        train(tiny_config(run, "epochs=2"), resume=True, quiet=True)
    monkeypatch.undo()
    assert (run / "last.pt").read_bytes() == old  # the previous checkpoint, intact
    assert not list(run.glob(".*.tmp"))  # no temporary file left behind
    train(tiny_config(run, "epochs=2"), resume=True, quiet=True)
    a, b = load_checkpoint(ref / "last.pt")["model"], load_checkpoint(run / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_write_errors_are_one_line_naming_the_path_in_the_cli(
    tiny_overrides, tmp_path, monkeypatch, capsys
):
    run = tmp_path / "run"
    monkeypatch.setattr(engine, "save_checkpoint", _failing_save({"last.pt"}, []))
    code = main(["train", "--quiet", "--run-dir", str(run), *tiny_overrides])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("crfold train: error: could not write ") and "last.pt" in err
    assert "(ENOSPC)" in err


def test_atomic_write_reports_eacces_in_one_line(tmp_path, monkeypatch):
    def deny(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr("tempfile.mkstemp", deny)
    with pytest.raises(WriteError) as info:
        atomic_write(tmp_path / "ro" / "x.json", lambda f: f.write(b"{}"))
    assert (
        str(info.value)
        == f"could not write {tmp_path / 'ro' / 'x.json'}: Permission denied (EACCES)"
    )


# --------------------------------------------------------------------------- bad files
@pytest.mark.parametrize("content", [os.urandom(4096), b"", b"PK\x03\x04 truncated zip"])
def test_a_corrupt_checkpoint_is_one_line_naming_the_file(tiny_config, tmp_path, content, capsys):
    run = tmp_path / "run"
    train(tiny_config(run, "max_steps=1"), quiet=True)
    (run / "last.pt").write_bytes(content)
    code = main(["train", "--resume", "--run-dir", str(run), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(run / "last.pt") in err
    assert "not a checkpoint" in err or "not a readable checkpoint" in err


def test_a_truncated_checkpoint_is_refused(tiny_config, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(run, "max_steps=1"), quiet=True)
    data = (run / "last.pt").read_bytes()
    (run / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.pt: not a"):
        load_checkpoint(run / "cut.pt")


def test_a_malformed_yaml_is_one_line_naming_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\nmode: [cr\nlam: 0.1\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: not valid YAML \(line \d+: "):
        read_yaml(bad)
    code = main(["train", "--config", str(bad), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(bad) in err
    (tmp_path / "list.yaml").write_text("- epochs\n")
    with pytest.raises(ValueError, match="list.yaml: expected a mapping of config keys"):
        load_config(tmp_path / "list.yaml")


# --------------------------------------------------------------------------- permissions
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_run_files_follow_the_umask(tiny_config, tmp_path, umask):
    old = os.umask(umask)
    try:
        run = tmp_path / "run"
        train(tiny_config(run), quiet=True)
    finally:
        os.umask(old)
    for name in RUN_FILES:
        assert (run / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
