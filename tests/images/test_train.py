"""Tests for crfold_images.train: one run end to end on the embedded default, resume, skip."""

from __future__ import annotations

import json
import math

import pytest
import torch

from crfold.checkpoint import load_checkpoint
from crfold_images.config import load_image_config
from crfold_images.train import train_run

TINY = ["max_train=96", "batch_size=32", "width=0.0625", "eval_samples=4", "eval_chunk=4",
        "eval_max_images=24", "probe_max_train=150", "samples_grid=4", "latent_dim=8",
        "threads=1"]  # fmt: skip


def test_one_epoch_run_writes_everything_and_is_skipped_on_rerun(tmp_path):
    cfg = load_image_config(None, [*TINY, "epochs=1", "mode=cr"])
    result = train_run(cfg, tmp_path / "run", quiet=True)
    for key in ("mi", "au", "iw_nll", "neg_elbo", "probe_accuracy", "consistency_kl"):
        assert key in result, key
    assert result["epochs"] == 1 and result["steps"] == 3 and result["n_train"] == 96
    assert 0 <= result["au"] <= 8 and result["iw_nll"] > 0
    files = ("config.json", "last.pt", "metrics.jsonl", "result.json", "samples.png", "recon.png")
    for name in files:
        assert (tmp_path / "run" / name).is_file(), name
    assert any((tmp_path / "run" / "tensorboard").iterdir())
    records = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert {r["kind"] for r in records} == {"val", "eval"}
    mtime = (tmp_path / "run" / "last.pt").stat().st_mtime_ns
    assert train_run(cfg, tmp_path / "run", quiet=True) == result
    assert (tmp_path / "run" / "last.pt").stat().st_mtime_ns == mtime  # nothing retrained


def test_extending_a_run_resumes_exactly(tmp_path):
    two = load_image_config(None, [*TINY, "epochs=2", "mode=aug", "arch=mlp"])
    train_run(two, tmp_path / "straight", quiet=True)
    train_run(two.replace(epochs=1), tmp_path / "resumed", quiet=True)
    train_run(two, tmp_path / "resumed", quiet=True)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert a["step"] == b["step"] == 6
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_different_config_in_the_same_directory_is_refused(tmp_path):
    cfg = load_image_config(None, [*TINY, "epochs=1", "arch=mlp"])
    train_run(cfg.replace(epochs=0 + 1), tmp_path / "run", quiet=True)
    (tmp_path / "run" / "result.json").unlink()
    with pytest.raises(ValueError, match="different config"):
        train_run(cfg.replace(mode="cr"), tmp_path / "run", quiet=True)


def _one_step_run(tmp_path, amp):
    from crfold_images.train import _Run

    cfg = load_image_config(None, [*TINY, "epochs=1", "mode=cr", f"amp={amp}", "device=cpu"])
    return _Run(cfg, tmp_path / amp, quiet=True)


def test_bf16_autocast_on_cpu_trains_with_float32_losses(tmp_path):
    from crfold.amp import autocast

    runs = {amp: _one_step_run(tmp_path, amp) for amp in ("none", "bf16")}
    bf16 = runs["bf16"]
    assert runs["none"].amp_dtype is None and bf16.amp_dtype == torch.bfloat16
    head_dtypes = []
    bf16.model.encoder.head.register_forward_hook(lambda m, i, o: head_dtypes.append(o.dtype))
    images, _ = bf16.splits.train.get_batch(torch.arange(32))
    losses = {amp: [run.train_step(images) for _ in range(2)] for amp, run in runs.items()}
    for terms in losses["bf16"]:
        assert all(math.isfinite(v) for v in terms.values()), terms
    assert set(head_dtypes) == {torch.bfloat16}  # the nets did run in bf16
    # same seed, same draws: the first step's loss of both precisions agree closely
    assert losses["bf16"][0]["loss"] == pytest.approx(losses["none"][0]["loss"], rel=1e-2)
    x = images.float() / 255.0
    with autocast("cpu", torch.bfloat16):
        out = bf16.model(x)
        nll = bf16.model.recon_nll(out.recon, x)
    for t in (out.posterior.mu, out.posterior.logvar, out.recon, out.z, nll):
        assert t.dtype == torch.float32  # posterior, likelihood parameters and NLL stay float32
    for run in runs.values():
        run.log.close()


def test_fp16_on_cpu_is_refused(tmp_path):
    cfg = load_image_config(None, [*TINY, "epochs=1", "amp=fp16", "device=cpu"])
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        train_run(cfg, tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()  # refused before anything was written
