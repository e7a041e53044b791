"""Read-only and busy runs: ``crfold eval`` / ``crfold probe`` fail at once, before computing."""

from __future__ import annotations

import shutil

import pytest

import crfold.eval.run as eval_run
from crfold.cli import main
from crfold.eval.output import reading_run, require_run, run_output
from crfold.eval.run import EVAL_FILE, PROBE_FILE, evaluate_run, probe_run
from crfold.io import LOCK_FILE, RunLock, RunLockedError, WriteError


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A copy of the trained run that a test may make read-only or lock."""
    return shutil.copytree(trained_run, tmp_path / "run")


@pytest.fixture
def no_compute(monkeypatch):
    """Records any evaluation or probe that starts (none may, when the run is refused)."""
    started = []
    monkeypatch.setattr(eval_run, "_evaluate", lambda *a, **k: started.append("eval"))
    monkeypatch.setattr(eval_run, "_probe", lambda *a, **k: started.append("probe"))
    return started


def test_run_output_checks_the_checkpoint_the_folder_then_locks(run_copy, tmp_path):
    with pytest.raises(FileNotFoundError, match="best.pt"):
        with run_output(tmp_path / "typo", EVAL_FILE, "test", "best.pt"):
            pass
    with pytest.raises(FileNotFoundError, match="no such run directory"):
        require_run(tmp_path / "typo")
    assert not (tmp_path / "typo").exists()  # nothing is created for a mistyped path
    with run_output(run_copy, EVAL_FILE, "crfold eval (test)", "last.pt") as path:
        assert path == run_copy / EVAL_FILE
        assert "crfold eval (test)" in (run_copy / LOCK_FILE).read_text()


@pytest.mark.parametrize("command, name", [("eval", EVAL_FILE), ("probe", PROBE_FILE)])
def test_a_read_only_run_fails_at_once_naming_the_file(
    run_copy, make_read_only, no_compute, capsys, command, name
):
    make_read_only(run_copy)
    assert main([command, str(run_copy), "--quiet", "--which", "last"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    assert err.startswith(f"crfold {command}: error: could not write {run_copy / name}")
    assert no_compute == []  # refused before anything was computed
    api = evaluate_run if command == "eval" else probe_run
    with pytest.raises(WriteError, match=name):
        api(run_copy, which="last")
    assert no_compute == []


def test_a_read_only_run_can_still_be_evaluated_without_writing(run_copy, make_read_only):
    make_read_only(run_copy)
    res = evaluate_run(run_copy, which="last", families=("jitter",), write=False)
    assert res["num_samples"] == 10 and not (run_copy / EVAL_FILE).exists()


@pytest.mark.parametrize("command", ["eval", "probe"])
def test_a_second_writer_fails_naming_the_holder(
    run_copy, lock_held_elsewhere, no_compute, capsys, command
):
    with lock_held_elsewhere(run_copy, "crfold train (foldingnet)") as pid:
        assert main([command, str(run_copy), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"crfold {command}: error: {run_copy}: in use by" in err
        assert f"pid {pid} " in err and "(crfold train (foldingnet))" in err
        api = evaluate_run if command == "eval" else probe_run
        with pytest.raises(RunLockedError, match=f"pid {pid} "):
            api(run_copy)
    assert no_compute == []
    api(run_copy)  # the holder is gone: the lock is free again
    assert no_compute == [command]


def test_reading_run_locks_a_writable_run_and_reads_a_read_only_one(run_copy, make_read_only):
    with reading_run(run_copy, "crfold render (test)", "best.pt"):
        assert RunLock._held[str(run_copy.resolve())][1] == 1  # [open fd, depth]
        assert "crfold render (test)" in (run_copy / LOCK_FILE).read_text()
    assert str(run_copy.resolve()) not in RunLock._held
    make_read_only(run_copy)  # a read-only copy: its lock file cannot be opened for writing
    with pytest.raises(WriteError, match=LOCK_FILE):
        RunLock(run_copy).acquire()
    with reading_run(run_copy, "crfold render (test)", "best.pt") as path:
        assert path == run_copy and str(run_copy.resolve()) not in RunLock._held
