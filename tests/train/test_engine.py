"""The run engine with a toy task: non-finite steps, evaluation reuse, summaries, the lock.

A linear regression is enough to exercise what the engine owns, independent of any model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from crfold.config import RunConfig, option
from crfold.io import RunLock, RunLockedError, load_checkpoint
from crfold.train import Task, Trainer
from crfold.train.runtime import read_metrics


@dataclass
class ToyConfig(RunConfig):
    TASK = "toy"
    task: str = option("toy", "toy")
    batch_size: int = option(4, "rows per step")
    epochs: int = option(2, "epochs")
    lr: float = option(0.05, "lr")
    log_every: int = option(1, "every step")
    nan_steps: list[int] = option([], "steps whose loss is NaN")


class ToyTask(Task):
    """y = 2 x0 - x1 from 12 fixed rows, 3 steps an epoch; NaN losses at ``nan_steps``."""

    def __init__(self, cfg, device, info):
        super().__init__(cfg, device, info)
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(12, 2, generator=g)
        self.y = self.x @ torch.tensor([2.0, -1.0])
        self.evaluations = 0

    def build_model(self):
        return torch.nn.Linear(2, 1)

    def batches_per_epoch(self):
        return 3

    def train_batches(self, epoch, skip):
        for i in range(skip, 3):
            yield self.x[4 * i : 4 * i + 4], self.y[4 * i : 4 * i + 4]

    def loss(self, model, forward, batch, step, total_steps, generator, amp):
        x, y = batch
        loss = ((forward(x).squeeze(-1) - y) ** 2).mean()
        if step in self.cfg.nan_steps:
            loss = loss * float("nan")
        return {"loss": loss}

    def validate(self, model, amp):
        with torch.no_grad():
            return {"val_loss": float(((model(self.x).squeeze(-1) - self.y) ** 2).mean())}

    def evaluate(self, model, run_dir):
        self.evaluations += 1
        return {"weight0": float(model.weight[0, 0].detach())}


def toy(run_dir, **changes) -> tuple[ToyConfig, ToyTask]:
    cfg = ToyConfig(run_dir=str(run_dir), device="cpu", amp="none", **changes)
    return cfg, ToyTask(cfg, torch.device("cpu"), None)


def run(run_dir, resume=False, **changes):
    cfg, task = toy(run_dir, **changes)
    trainer = Trainer(cfg, resume=resume, quiet=True, task=task)
    return trainer.run(), task


def test_non_finite_steps_are_skipped_and_kept_out_of_the_means(tmp_path):
    summary, _ = run(tmp_path / "r", nan_steps=[1], max_bad_steps=1)
    assert summary["status"] == "completed" and summary["step"] == 6
    records = read_metrics(tmp_path / "r")
    train = [r for r in records if r["kind"] == "train"]
    assert [r.get("skipped") for r in train] == [None, 1.0, None, None, None, None]
    epoch1 = next(r for r in records if r["kind"] == "epoch")
    finite = [r["loss"] for r in train[:3] if "skipped" not in r]
    assert epoch1["train_loss"] == pytest.approx(sum(finite) / 2)  # 2 counted batches of 4


def test_too_many_non_finite_steps_stop_the_run(tmp_path):
    with pytest.raises(FloatingPointError, match="2 in a row"):
        run(tmp_path / "r", nan_steps=[1, 2], max_bad_steps=1)
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        run(tmp_path / "s", nan_steps=[0])  # max_bad_steps 0: at once


def test_evaluation_is_reused_only_for_the_same_step(tmp_path):
    summary, task = run(tmp_path / "r", epochs=1)
    assert (
        task.evaluations == 1
        and json.loads((tmp_path / "r" / "eval.json").read_text())["step"] == 3
    )
    _, task = run(tmp_path / "r", resume=True, epochs=1)  # nothing to train: the same state
    assert task.evaluations == 0
    _, task = run(tmp_path / "r", resume=True, epochs=2)  # extended: evaluated again
    assert (
        task.evaluations == 1
        and json.loads((tmp_path / "r" / "eval.json").read_text())["step"] == 6
    )


def test_a_stage_in_progress_is_not_a_finished_summary(tmp_path, monkeypatch):
    run(tmp_path / "r", epochs=1)
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "completed"

    def killed(self, stop):  # the process dies inside the next stage's first epoch
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_train_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "r", resume=True, epochs=2)
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "running"


def test_resume_keeps_the_last_epoch_means_in_the_summary(tmp_path):
    first, _ = run(tmp_path / "r", epochs=1)
    again, _ = run(tmp_path / "r", resume=True, epochs=1)
    assert again["train_loss"] == first["train_loss"]
    assert (
        load_checkpoint(tmp_path / "r" / "last.pt")["last_train"]["train_loss"]
        == first["train_loss"]
    )


def test_the_lock_is_held_while_training_and_released_in_any_order(tmp_path):
    cfg, task = toy(tmp_path / "r")
    trainer = Trainer(cfg, quiet=True, task=task)
    assert (tmp_path / "r" / ".lock").read_text().startswith("pid ")
    trainer.run()
    a, b = RunLock(tmp_path / "r").acquire(), RunLock(tmp_path / "r").acquire()  # nested
    a.release()
    b.release()  # the last hold closes the file whatever the order
    assert RunLock._held == {}


def test_a_busy_directory_is_refused_before_anything_is_built(tmp_path, lock_held_elsewhere):
    with lock_held_elsewhere(tmp_path / "r", "crfold train"):
        with pytest.raises(RunLockedError, match="in use by pid"):
            run(tmp_path / "r")
    assert not (tmp_path / "r" / "config.yaml").exists()
