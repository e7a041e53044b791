"""Tests for the image task on the run engine: crfold images train, train_run, resume, refusal."""

from __future__ import annotations

import json
import math

import pytest
import torch

from crfold.cli import main as crfold_main
from crfold.config import load_config
from crfold.io import load_checkpoint
from crfold_images.config import ImageConfig
from crfold_images.train import RESULT_FILE, train_run

TINY = ["max_train=96", "batch_size=32", "width=0.0625", "eval_samples=4", "eval_chunk=4",
        "eval_max_images=24", "probe_max_train=150", "samples_grid=4", "latent_dim=8",
        "device=cpu", "amp=none"]  # fmt: skip
RUN_FILES = ("config.yaml", "last.pt", "metrics.jsonl", "summary.json", "eval.json")


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """The engine sets num_threads process-wide; the other tests keep torch's setting."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def tiny(*overrides: str) -> ImageConfig:
    return load_config(None, [*TINY, *overrides], cls=ImageConfig)


def records(run_dir) -> list[dict]:
    return [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln]


def weights(run_dir, name: str = "last") -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / f"{name}.pt")["model"]


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_crfold_images_train_writes_the_engines_run_directory(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["images", "train", "--run-dir", str(run), "--quiet", *TINY, "epochs=1", "mode=cr"]
    assert crfold_main(argv) == 0
    for name in (*RUN_FILES, "best.pt", "samples.png", "recon.png"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    saved = load_config(run / "config.yaml")
    assert isinstance(saved, ImageConfig) and saved.mode == "cr" and saved.run_dir == str(run)
    result = json.loads((run / "eval.json").read_text())
    for key in ("mi", "au", "iw_nll", "neg_elbo", "probe_accuracy", "consistency_kl"):
        assert key in result, key
    assert result["step"] == result["steps"] == 3 and result["epochs"] == 1
    assert result["n_train"] == 96 and result["likelihood"] == "bernoulli"
    assert 0 <= result["au"] <= 8 and result["iw_nll"] > 0 and result["train_seconds"] > 0
    kinds = [r["kind"] for r in records(run)]
    assert kinds.count("epoch") == 1 and kinds[-1] == "eval"
    epoch = next(r for r in records(run) if r["kind"] == "epoch")
    assert epoch["val_loss"] == epoch["val_neg_elbo"] > 0 and "train_consistency" in epoch
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["task"] == "images"
    assert "run " in capsys.readouterr().out


def test_crfold_images_train_is_crfold_train_task_images(tmp_path, capsys):
    args = [*TINY, "epochs=1"]
    assert crfold_main(["images", "train", "--print-config", *args]) == 0
    a = capsys.readouterr().out
    assert crfold_main(["train", "--print-config", "task=images", *args]) == 0
    assert capsys.readouterr().out == a and "dataset: digits" in a
    with pytest.raises(SystemExit):
        crfold_main(["images", "train", "--help"])
    text = capsys.readouterr().out
    assert "eval_samples" in text and "data_root" in text and "[may change on --resume]" in text


def test_train_run_returns_eval_and_skips_a_finished_run(tmp_path):
    cfg = tiny("epochs=1", "arch=mlp")
    result = train_run(cfg, tmp_path / "run", quiet=True)
    assert RESULT_FILE == "eval.json"
    assert result == json.loads((tmp_path / "run" / "eval.json").read_text())
    mtime = (tmp_path / "run" / "last.pt").stat().st_mtime_ns
    assert train_run(cfg, tmp_path / "run", quiet=True) == result  # finished: read back
    again = train_run(cfg.replace(eval_samples=8), tmp_path / "run", quiet=True)
    assert again["iw_samples"] == 8 and result["iw_samples"] != 8  # other settings: evaluated again
    assert (tmp_path / "run" / "last.pt").stat().st_mtime_ns == mtime  # nothing retrained


def test_fewer_epochs_than_trained_is_an_error(tmp_path):
    cfg = tiny("epochs=2", "arch=mlp", "max_train=64")
    train_run(cfg, tmp_path / "run", quiet=True)
    with pytest.raises(ValueError, match="already trained 2 epochs, more than 1"):
        train_run(cfg.replace(epochs=1), tmp_path / "run", quiet=True)


def test_interrupted_then_resumed_run_equals_an_uninterrupted_one(tmp_path, capsys):
    """max_steps stops inside epoch 2 (3 steps an epoch); the resume ends where a straight run
    does, bitwise on CPU: the order, the draws, the optimizer and the RNG states continue."""
    common = ["--quiet", "--no-eval", *TINY, "epochs=2", "mode=cr", "arch=mlp"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert crfold_main(["images", "train", "--run-dir", str(straight), *common]) == 0
    assert crfold_main(["images", "train", "--run-dir", str(resumed), *common, "max_steps=4"]) == 0
    stopped = json.loads((resumed / "summary.json").read_text())
    assert (stopped["status"], stopped["step"], stopped["batch_in_epoch"]) == ("max_steps", 4, 1)
    assert not same_weights(weights(straight), weights(resumed))
    argv = ["images", "train", "--resume", "--run-dir", str(resumed), "--quiet", "--no-eval"]
    assert crfold_main([*argv, "max_steps=none"]) == 0
    assert load_checkpoint(resumed / "last.pt")["step"] == 6
    assert same_weights(weights(straight), weights(resumed))
    assert same_weights(weights(straight, "best"), weights(resumed, "best"))
    val = [[r["val_loss"] for r in records(d) if r["kind"] == "epoch"] for d in (straight, resumed)]
    assert val[0] == val[1] and len(val[0]) == 2


def test_extending_a_finished_run_resumes_exactly(tmp_path):
    two = tiny("epochs=2", "mode=aug", "arch=mlp")
    first = train_run(two, tmp_path / "straight", quiet=True)
    assert train_run(two.replace(epochs=1), tmp_path / "resumed", quiet=True)["epochs"] == 1
    result = train_run(two, tmp_path / "resumed", quiet=True)  # epochs may change on resume
    assert result["epochs"] == 2 and result["steps"] == 6
    assert result["iw_nll"] == first["iw_nll"]
    assert same_weights(weights(tmp_path / "straight"), weights(tmp_path / "resumed"))


def test_resume_with_a_changed_run_defining_key_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--quiet", "--no-eval", *TINY, "epochs=1", "arch=mlp", "max_steps=1"]
    assert crfold_main(["images", "train", "--run-dir", str(run), *common]) == 0
    capsys.readouterr()
    argv = ["images", "train", "--resume", "--run-dir", str(run), "mode=cr", "max_steps=none"]
    assert crfold_main(argv) == 2
    err = capsys.readouterr().err
    assert "mode: 'base' -> 'cr'" in err and "define the run" in err
    with pytest.raises(ValueError, match="mode"):
        train_run(tiny("epochs=1", "arch=mlp", "mode=cr"), run, quiet=True)
    assert load_checkpoint(run / "last.pt")["step"] == 1  # untouched


def test_batches_keep_a_last_partial_batch_of_two_or_more():
    from crfold_images.task import batch_starts

    assert batch_starts(96, 32) == [0, 32, 64]
    assert batch_starts(97, 32) == [0, 32, 64]  # a batch of one image is dropped
    assert batch_starts(98, 32) == [0, 32, 64, 96]
    assert batch_starts(1, 32) == []


def test_data_root_resolves_under_crfold_data(tmp_path, monkeypatch):
    from crfold_images.task import load_splits
    from tests.images.test_data_idx import write_mnist

    write_mnist(tmp_path / "data" / "mnist", n_train=60, n_test=20)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CRFOLD_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="data_root"):
        load_splits(ImageConfig(dataset="mnist"))  # no root given
    with pytest.raises(FileNotFoundError, match="CRFOLD_DATA"):
        load_splits(ImageConfig(dataset="mnist", data_root="mnist"))
    monkeypatch.setenv("CRFOLD_DATA", str(tmp_path / "data"))
    splits = load_splits(ImageConfig(dataset="mnist", data_root="mnist"))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (50, 10, 20)


def test_bf16_autocast_on_cpu_trains_with_float32_losses(tmp_path):
    from crfold.amp import autocast
    from crfold.train import Trainer

    runs = {
        amp: Trainer(tiny("epochs=1", "mode=cr", f"amp={amp}", f"run_dir={tmp_path / amp}"))
        for amp in ("none", "bf16")
    }
    try:
        bf16 = runs["bf16"]
        assert runs["none"].amp_dtype is None and bf16.amp_dtype == torch.bfloat16
        head_dtypes = []
        bf16.model.encoder.head.register_forward_hook(lambda m, i, o: head_dtypes.append(o.dtype))
        images, _ = bf16.task.splits.train.get_batch(torch.arange(32))
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
            assert t.dtype == torch.float32  # posterior, likelihood parameters and NLL: float32
    finally:
        for run in runs.values():
            run.log.close()
            run.close()


def test_fp16_on_cpu_is_refused(tmp_path):
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        train_run(tiny("epochs=1", "amp=fp16"), tmp_path / "run", quiet=True)
    assert not (tmp_path / "run" / "last.pt").exists()  # refused before training


def test_lam_per_dim_multiplies_the_consistency_weight_by_the_data_dims():
    """The same step, lam_per_dim off and on: the losses differ by lambda * (D - 1) * R only."""
    from crfold.train.runtime import DistInfo, step_generator
    from crfold_images.task import ImageTask

    terms = {}
    for per_dim in (False, True):
        cfg = tiny("mode=cr", "lam=0.1", f"lam_per_dim={per_dim}")
        task = ImageTask(cfg, torch.device("cpu"), DistInfo())
        torch.manual_seed(0)
        model = task.build_model()
        batch = next(iter(task.train_batches(0, 0)))
        gen = step_generator(cfg.seed, 0, 0, torch.device("cpu"))
        terms[per_dim] = task.loss(model, model, batch, 0, 1, gen, None)
    assert task.loss_cfg.lam == pytest.approx(0.1 * 784)  # digits: 1 x 28 x 28
    off, on = terms[False], terms[True]
    for key in ("recon", "kl", "recon_aug", "kl_aug", "consistency"):
        torch.testing.assert_close(off[key], on[key], rtol=0, atol=0, msg=key)
    torch.testing.assert_close(on["loss"] - off["loss"], 0.1 * 783 * off["consistency"])
    # = 784 * [(L(x) + L(t(x))) / 784 + 0.1 * R]: lambda weighs R against nats per dimension
    elbos = off["loss"] - 0.1 * off["consistency"]
    torch.testing.assert_close(on["loss"], 784 * (elbos / 784 + 0.1 * off["consistency"]))


def test_amp_auto_is_the_default_and_reaches_the_nets(tmp_path):
    """amp=auto resolves per device (bf16 on a CPU with native bf16) and the step runs in it."""
    from crfold.amp import amp_dtype
    from crfold.train import Trainer

    assert ImageConfig().amp == "auto"
    trainer = Trainer(tiny("epochs=1", "amp=auto", f"run_dir={tmp_path / 'run'}"), quiet=True)
    try:
        assert trainer.amp_dtype == amp_dtype("auto", "cpu")
        dtypes = []
        trainer.model.encoder.head.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
        images, _ = trainer.task.splits.train.get_batch(torch.arange(32))
        terms = trainer.train_step(images)
        assert set(dtypes) == {trainer.amp_dtype or torch.float32}
        assert all(math.isfinite(v) for v in terms.values())
    finally:
        trainer.log.close()
        trainer.close()
