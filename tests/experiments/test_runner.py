"""crfold.experiments.runner: the task-agnostic plan runner (states, config guard, locks, eval)."""

from __future__ import annotations

import json
import os
import time

import pytest

from crfold.config import load_config
from crfold.experiments.runner import (
    EngineEval,
    EvalCommand,
    PlannedRun,
    config_differences,
    run_plan,
    train_state,
)
from crfold.io import RunLockedError


def _plan(tiny_config, root, name, *more, label=""):
    run_dir = root / "runs" / name
    return PlannedRun(run_dir, tiny_config(None, *more), label or name)


def test_planned_run_paths_and_config(tiny_config, tmp_path):
    run = _plan(tiny_config, tmp_path, "cr", "seed=3")
    assert run.log == tmp_path / "runs" / "cr.log" and run.seed == 3 and run.label == "cr"
    assert run.planned_config().run_dir == str(run.run_dir) and run.config.run_dir is None
    assert run == PlannedRun(run.run_dir, tiny_config(None, "seed=4"), "cr")  # by dir and label


def test_train_state_and_the_config_guard(tiny_config, tmp_path):
    run = _plan(tiny_config, tmp_path, "cr")
    cfg = run.planned_config()
    assert train_state(run) == "new"
    run.run_dir.mkdir(parents=True)
    cfg.replace(lr=0.5).save(run.run_dir / "config.yaml")
    with pytest.raises(ValueError, match=r"different config \(keys lr\)"):
        train_state(run)
    with pytest.raises(ValueError, match=r"different config \(keys lr\)"):  # before any training
        run_plan([run], quiet=True)
    assert not (run.run_dir / "last.pt").exists()
    cfg.replace(num_threads=2, checkpoint_every=5).save(run.run_dir / "config.yaml")
    assert train_state(run) == "new"  # runtime keys may differ
    (run.run_dir / "last.pt").write_bytes(b"")
    assert train_state(run) == "partial"
    (run.run_dir / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    assert train_state(run) == "partial"
    (run.run_dir / "summary.json").write_text(json.dumps({"status": "completed"}))
    assert train_state(run) == "done"
    # keys that may grow (an image table's --epochs): a finished run is continued, not redone
    longer = PlannedRun(run.run_dir, run.config.replace(epochs=3), "cr")
    with pytest.raises(ValueError, match=r"keys epochs"):
        train_state(longer)
    assert train_state(longer, extend=("epochs",)) == "partial"
    cfg.replace(epochs=5).save(run.run_dir / "config.yaml")
    with pytest.raises(ValueError, match="more epochs than planned"):
        train_state(longer, extend=("epochs",))


def test_a_saved_run_with_an_old_mode_name_is_the_same_config(tiny_config, tmp_path):
    run = _plan(tiny_config, tmp_path, "aug", "mode=aug")
    run.run_dir.mkdir(parents=True)
    saved = run.planned_config().to_dict()
    saved["mode"] = "vae+aug"  # a run trained before the rename
    (run.run_dir / "config.yaml").write_text(json.dumps(saved))  # JSON is YAML
    with pytest.warns(DeprecationWarning, match="vae\\+aug"):
        assert train_state(run) == "new"


def test_config_differences_names_keys_of_either_side(tiny_config):
    a, b = tiny_config(), tiny_config(None, "lam=0.3", "num_threads=4")
    assert config_differences(a, b) == ["lam"]
    assert sorted(config_differences(a, b, ignore=())) == ["lam", "num_threads"]


def test_run_plan_checks_its_arguments(tiny_config, tmp_path):
    run = _plan(tiny_config, tmp_path, "cr")
    with pytest.raises(ValueError, match="jobs"):
        run_plan([run], jobs=0)
    with pytest.raises(ValueError, match="at least one run"):
        run_plan([])
    with pytest.raises(ValueError, match="planned twice"):
        run_plan([run, PlannedRun(run.run_dir, run.config, "other")])


def _touch(path, text="{}", age=0.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    t = time.time() - age
    os.utime(path, (t, t))


def test_eval_command_is_current_only_for_a_newer_eval_json_with_its_settings(tmp_path):
    ev = EvalCommand(("eval", "{run}", "--which", "last"), "last.pt", {"which": "last"})
    assert ev.argv(tmp_path) == ["eval", str(tmp_path), "--which", "last"]
    assert not ev.is_current(tmp_path)
    _touch(tmp_path / "last.pt", "x", age=10)
    _touch(tmp_path / "eval.json", json.dumps({"settings": {"which": "last"}}))
    assert ev.is_current(tmp_path)
    _touch(tmp_path / "eval.json", json.dumps({"settings": {"which": "best"}}))
    assert not ev.is_current(tmp_path)  # computed with other settings
    _touch(tmp_path / "eval.json", json.dumps({"settings": {"which": "last"}}), age=20)
    assert not ev.is_current(tmp_path)  # older than the checkpoint
    _touch(tmp_path / "eval.json", "{not json")
    assert not ev.is_current(tmp_path)
    engine = EngineEval()
    assert engine.argv(tmp_path) is None
    _touch(tmp_path / "eval.json", json.dumps({"step": 2}))
    assert engine.is_current(tmp_path)


def test_a_busy_run_is_reported_with_its_holder_and_the_others_still_run(
    tiny_config, tmp_path, lock_held_elsewhere, capsys
):
    free = _plan(tiny_config, tmp_path, "free", "max_steps=1")
    busy = _plan(tiny_config, tmp_path, "busy", "max_steps=1")
    busy.run_dir.mkdir(parents=True)
    with lock_held_elsewhere(busy.run_dir, "crfold train (foldingnet)") as pid:
        with pytest.raises(RunLockedError, match=rf"busy: in use by pid {pid} .*crfold train"):
            run_plan([busy, free], jobs=2)
    assert json.loads((free.run_dir / "summary.json").read_text())["status"] == "max_steps"
    assert not (busy.run_dir / "last.pt").exists()
    assert f"train {free.run_dir}" in capsys.readouterr().out
    # rerun: the free run is reused, the busy one (now free) trains
    run_plan([busy, free], jobs=2)
    out = capsys.readouterr().out
    assert f"train {busy.run_dir}" in out and str(free.run_dir) not in out
    assert (busy.run_dir / "last.pt").is_file()
    assert not list(tmp_path.glob("runs/*.lock"))  # the lock lies in the run directory itself


def test_a_failed_run_names_its_error_and_log(tiny_config, tmp_path):
    bad = _plan(tiny_config, tmp_path, "bad", "num_points=4")  # fewer than k + 1 points
    with pytest.raises(RuntimeError, match=r"training .*bad exited with 2 \(crfold train: error: "):
        run_plan([bad], quiet=True)
    assert "num_points" in bad.log.read_text()


def test_another_task_plugs_in_with_the_engines_evaluation(tmp_path):
    """The image VAE (task=images) through the same runner: no FoldingNet import needed."""
    pytest.importorskip("crfold_images.task")
    cfg = load_config(
        overrides=["task=images", "dataset=digits", "epochs=1", "max_train=64", "width=0.0625",
                   "eval_samples=2", "eval_chunk=8", "eval_max_images=16", "probe_max_train=64",
                   "samples_grid=2", "num_threads=1", "mode=cr"]
    )  # fmt: skip
    run = PlannedRun(tmp_path / "runs" / "digits-cr", cfg, "CR-VAE")
    run_plan([run], evaluation=EngineEval(), quiet=True)
    first = json.loads((run.run_dir / "eval.json").read_text())
    (run.run_dir / "eval.json").unlink()
    run_plan([run], evaluation=EngineEval(), quiet=True)  # resumed: only evaluated again
    again = json.loads((run.run_dir / "eval.json").read_text())
    assert again["step"] == first["step"]
    assert json.loads((run.run_dir / "summary.json").read_text())["task"] == "images"


def test_engine_eval_is_current_only_under_the_planned_evaluation_settings(tmp_path):
    import json as _json

    from crfold.config import load_config as _load
    from crfold.experiments.runner import EngineEval as _EngineEval

    (tmp_path / "last.pt").write_bytes(b"x")
    cfg = _load(overrides=["task=images", "eval_samples=8"])
    eval_json = {"step": 3, "config": cfg.to_dict()}
    (tmp_path / "eval.json").write_text(_json.dumps(eval_json))
    ev = _EngineEval()
    assert ev.is_current(tmp_path) and ev.is_current(tmp_path, cfg)
    assert ev.is_current(tmp_path, cfg.replace(num_threads=1, device="cpu"))  # runtime only
    assert not ev.is_current(tmp_path, cfg.replace(eval_samples=16))  # evaluated differently
