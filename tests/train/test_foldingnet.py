"""crfold.train: the loop in every mode, run directories, exact resume, signals, DDP."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from crfold.config import TrainConfig, load_config
from crfold.io import load_checkpoint
from crfold.train import Trainer, train
from crfold.train.foldingnet import build_model, build_transform, compute_terms
from crfold.train.runtime import read_metrics, step_generator
from crfold.transforms import default_cr_transform

REPO = Path(__file__).resolve().parents[2]


def _state(run_dir: Path, name: str = "last") -> dict:
    return load_checkpoint(Path(run_dir) / f"{name}.pt")


@pytest.mark.parametrize("mode", ["ae", "base", "aug", "cr"])
def test_each_mode_trains_and_writes_the_run_dir(tiny_config, tmp_path, mode):
    run = tmp_path / "run"
    summary = train(tiny_config(run, f"mode={mode}", "lam=0.5", "beta=2"), quiet=True)
    assert summary["status"] == "completed" and summary["step"] == 2 and summary["epoch"] == 1
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "summary.json"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((run / "summary.json").read_text())["step"] == 2
    assert load_config(run / "config.yaml").mode == mode
    records = read_metrics(run)
    steps = [r for r in records if r["kind"] == "train"]
    (epoch,) = [r for r in records if r["kind"] == "epoch"]
    assert [r["step"] for r in steps] == [1, 2]
    assert {"val_loss", "val_chamfer", "train_loss", "train_chamfer"} <= set(epoch)
    for r in steps:
        assert all(math.isfinite(r[k]) for k in ("loss", "recon", "kl", "consistency", "chamfer"))
        if mode == "ae":
            assert r["kl"] == 0 and r["consistency"] == 0 and r["loss"] == pytest.approx(r["recon"])
        elif mode == "base":
            assert r["consistency"] == 0 and r["kl"] > 0
            assert r["loss"] == pytest.approx(r["recon"] + 2 * r["kl"], rel=1e-5)
        else:
            lam = 0.5 if mode == "cr" else 0.0  # aug is CR with lambda = 0
            expect = (
                r["recon"] + r["recon_aug"] + 2 * (r["kl"] + r["kl_aug"]) + lam * r["consistency"]
            )
            assert r["consistency"] > 0 and r["loss"] == pytest.approx(expect, rel=1e-5)
    state = _state(run)
    assert state["config"]["mode"] == mode and state["step"] == 2 and state["epoch"] == 1
    assert state["batch_in_epoch"] == 0 and "head" not in state


def test_compute_terms_modes_agree_where_they_should(tiny_overrides):
    cfg = load_config(overrides=[*tiny_overrides, "mode=cr", "lam=0"])
    torch.manual_seed(0)
    model = build_model(cfg)
    x = torch.randn(4, 64, 3)
    t = build_transform(cfg, "y")
    gen = lambda: step_generator(0, 0, 5, torch.device("cpu"))  # noqa: E731
    cr0 = compute_terms(model, x, cfg, t, gen())
    model.mode = "vae+aug"
    aug = compute_terms(model, x, cfg.replace(mode="aug", lam=3.0), t, gen())
    assert torch.equal(cr0["loss"], aug["loss"])  # aug ignores lam: CR with lambda = 0
    model.mode = "cr"
    cr = compute_terms(model, x, cfg.replace(lam=3.0), t, gen())
    assert torch.allclose(cr["loss"], cr0["loss"] + 3.0 * cr0["consistency"])
    with pytest.raises(ValueError, match="transform"):
        compute_terms(model, x, cfg, None, gen())


def test_default_transform_is_the_papers_recipe():
    assert build_transform(TrainConfig(), "z") == default_cr_transform("z")
    cfg = load_config(
        overrides=["aug_rotate=so3", "aug_scale=0.5,2", "aug_translate=0", "aug_jitter_sigma=0"]
    )
    assert repr(build_transform(cfg, "y")) == (
        "Compose(transforms=[RandomRotation(axis=None, degrees=180.0, steps=None, up='y'), "
        "RandomScale(low=0.5, high=2.0, isotropic=False)])"
    )


def _weights_equal(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        for k in pa:
            assert torch.equal(pa[k], pb[k]), k


def _epoch_records(run: Path) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k != "samples_per_s"}
        for r in read_metrics(run)
        if r["kind"] == "epoch"
    ]


def test_resume_is_bitwise_identical(tiny_config, tmp_path):
    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    train(tiny_config(straight, "epochs=2"), quiet=True)
    # Stop inside epoch 1 (after 1 of its 2 steps), resume to the end of epoch 1, then to 2.
    s1 = train(tiny_config(pieces, "max_steps=1"), quiet=True)
    assert s1["status"] == "max_steps" and _state(pieces)["batch_in_epoch"] == 1
    train(tiny_config(pieces), resume=True, quiet=True)
    assert _state(pieces)["epoch"] == 1 and _state(pieces)["batch_in_epoch"] == 0
    s3 = train(tiny_config(pieces, "epochs=2"), resume=True, quiet=True)
    assert s3["status"] == "completed" and s3["step"] == 4
    _weights_equal(_state(straight), _state(pieces))
    _weights_equal(_state(straight, "best"), _state(pieces, "best"))
    assert _epoch_records(straight) == _epoch_records(pieces)
    steps = [r["step"] for r in read_metrics(pieces) if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4]


def test_run_dir_guards(tiny_config, tmp_path):
    with pytest.raises(FileNotFoundError, match="resume"):
        train(tiny_config(tmp_path / "none"), resume=True, quiet=True)
    train(tiny_config(tmp_path / "once", "max_steps=1"), quiet=True)
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_config(tmp_path / "once"), quiet=True)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "crfold", "train", *args]


def test_sigterm_saves_and_resumes(tiny_config, tiny_overrides, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = _cli("--quiet", *tiny_overrides, "epochs=1000", f"run_dir={run}")
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    metrics = run / "metrics.jsonl"
    while not (metrics.exists() and metrics.read_text().count('"kind": "train"') >= 3):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()
    assert b"SIGTERM received" in err and b"Traceback" not in err
    assert b"interrupted" in out and b"--resume" in out
    state = _state(run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and state["step"] == summary["step"] >= 3
    resumed = train(
        tiny_config(run, f"max_steps={state['step'] + 1}", "epochs=1000"), resume=True, quiet=True
    )
    assert resumed["status"] == "max_steps" and resumed["step"] == state["step"] + 1


@pytest.mark.slow
def test_ddp_two_processes_on_gloo(tiny_overrides, tmp_path):
    run = tmp_path / "ddp"
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    args += [
        "-m",
        "crfold",
        "train",
        "--quiet",
        *tiny_overrides,
        "epochs=2",
        "device=cpu",
        f"run_dir={run}",
    ]
    res = subprocess.run(args, cwd=REPO, capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    # Each rank sees 8 of the 16 shapes: one step of 8 per epoch; only rank 0 logs and prints.
    assert res.stdout.decode().count("completed after 2 steps") == 1
    records = read_metrics(run)
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(epochs) == 2 and all(math.isfinite(r["val_loss"]) for r in epochs)
    state = _state(run)
    assert state["world_size"] == 2 and state["step"] == 2
    assert not any(k.startswith("module.") for k in state["model"])


def test_data_options_are_checked(tiny_config, tmp_path):
    from crfold.train.foldingnet import open_split

    with pytest.raises(ValueError, match="to_up"):
        open_split(tiny_config(tmp_path, "to_up=y"), "train")
    with pytest.raises(ValueError, match="num_points"):
        open_split(tiny_config(tmp_path, "num_points=8"), "train")
    cfg = load_config(REPO / "configs" / "shapenet_paper.yaml")  # its data path is a placeholder
    with pytest.raises(FileNotFoundError, match="shapenetcorev2_hdf5_2048"):
        open_split(cfg, "train")


@pytest.mark.slow
def test_modelnet40_cpu_config_runs_on_the_shared_sample(tiny_overrides, shared_data, tmp_path):
    """The shipped config as a user runs it: its data path is found under $CRFOLD_DATA."""
    overrides = [*tiny_overrides, "classes_subset=modelnet10", "max_steps=2", "val_split=holdout"]
    cfg = load_config(REPO / "configs" / "modelnet40_cpu.yaml", [*overrides, f"run_dir={tmp_path}"])
    summary = train(cfg, quiet=True)
    assert summary["status"] == "max_steps" and summary["step"] == 2
    assert math.isfinite(summary["val_loss"]) and (tmp_path / "best.pt").is_file()


def test_bf16_autocast_keeps_the_losses_in_float32(tiny_overrides):
    cfg = load_config(overrides=[*tiny_overrides, "mode=cr"])
    torch.manual_seed(0)
    model = build_model(cfg)
    x = torch.randn(4, 64, 3)
    t = build_transform(cfg, "y")
    ref = compute_terms(model, x, cfg, t, step_generator(0, 0, 1, torch.device("cpu")))
    bf = compute_terms(
        model, x, cfg, t, step_generator(0, 0, 1, torch.device("cpu")), amp_dtype=torch.bfloat16
    )
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in bf.values())
    assert float(bf["recon"].detach()) == pytest.approx(float(ref["recon"].detach()), rel=0.05)
    bf["loss"].backward()
    assert model.encoder.mu.weight.grad.dtype == torch.float32


def test_checkpoint_every_saves_last_inside_the_epoch(tiny_config, tmp_path, monkeypatch):
    saves = []
    real = Trainer.save

    def spy(self, name):
        saves.append((name, self.step, self.batch_in_epoch))
        real(self, name)

    monkeypatch.setattr(Trainer, "save", spy)
    # 16 shapes / batch 4 = 4 steps per epoch, 2 epochs; a save every 3 steps
    cfg = tiny_config(tmp_path / "run", "batch_size=4", "epochs=2", "checkpoint_every=3")
    train(cfg, quiet=True)
    lasts = [(step, batch) for name, step, batch in saves if name == "last"]
    # mid-epoch saves at steps 3 and 6; the epoch ends (4, 8) save once each
    assert lasts == [(3, 3), (4, 0), (6, 2), (8, 0)]
    state = _state(tmp_path / "run")
    assert state["step"] == 8
    with pytest.raises(ValueError, match="checkpoint_every"):
        tiny_config(tmp_path / "x", "checkpoint_every=0")
