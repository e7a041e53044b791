"""(CR-)NVAE training loop: one CPU step per mode, checkpoints, exact resume, configs, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from crfold.checkpoint import load_checkpoint
from crfold_images.models.nvae_config import NVAETrainConfig, load_nvae_config
from crfold_images.models.nvae_data import synthetic_images
from crfold_images.models.nvae_train import Trainer, learning_rate, main, run

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = [
    "dataset=random",
    "device=cpu",
    "batch_size=4",
    "max_steps=2",
    "iw_samples=3",
    "iw_chunk=2",
    "eval_batch_size=4",
    "log_every=1",
    "ckpt_every=1",
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is faster and robust to a loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(*extra: str) -> NVAETrainConfig:
    return load_nvae_config(CONFIGS / "nvae_tiny_cpu.yaml", [*TINY, *extra])


def tiny_data():
    return synthetic_images(8, 4, channels=1, size=28, seed=0)


@pytest.mark.parametrize("mode", ["nvae", "cr-nvae"])
def test_one_step_train_on_cpu(tmp_path: Path, mode: str) -> None:
    cfg = tiny_config(f"mode={mode}", "max_steps=1")
    result = run(cfg, tmp_path, data=tiny_data(), quiet=True)
    for key in ("nll_nats", "bpd"):
        assert math.isfinite(result[key]) and result[key] > 0
    assert result["bpd"] == pytest.approx(result["nll_nats"] / (math.log(2) * 784))
    assert result["feature_dims"] == 4 * 4  # G groups x Z channels, spatially pooled
    assert 0 <= result["au_features"] <= 16 and 0 <= result["au_top"] <= 4 * 8 * 8
    assert 0 <= result["active_units"] <= result["latent_dims"] == 4 * (2 * 8 * 8 + 2 * 16 * 16)
    assert 0.0 <= result["probe_accuracy"] <= 1.0
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1] and records[0]["finite"]
    assert ("consistency" in records[0]) == (mode == "cr-nvae")
    assert load_checkpoint(tmp_path / "ckpt_last.pt")["step"] == 1
    assert json.loads((tmp_path / "results.json").read_text())["mode"] == mode
    assert (tmp_path / "config.yaml").is_file()


def test_checkpoint_round_trip_and_exact_resume(tmp_path: Path) -> None:
    cfg = tiny_config("mode=cr-nvae")
    # uninterrupted: two steps
    straight = Trainer(cfg, tmp_path / "a", tiny_data())
    straight.train_step()
    straight.train_step()
    # interrupted after one step: checkpoint, then a fresh process state resumes from it
    first = Trainer(cfg, tmp_path / "b", tiny_data())
    (tmp_path / "b").mkdir()
    first.train_step()
    first.save()
    state = load_checkpoint(tmp_path / "b" / "ckpt_last.pt")  # weights_only=True
    assert state["step"] == 1 and state["config"] == cfg.to_dict()
    assert any(k.endswith("sn_u") for k in state["model"])  # power-iteration state persists
    torch.manual_seed(123)  # disturb the global RNG: the checkpoint restores it
    resumed = Trainer(cfg, tmp_path / "b", tiny_data())
    resumed.load_state_dict(state)
    for (name, a), b in zip(first.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    resumed.train_step()
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values()
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    # run() resumes from the directory and stops at max_steps
    run(cfg, tmp_path / "b", data=tiny_data(), evaluate=False, quiet=True)
    assert load_checkpoint(tmp_path / "b" / "ckpt_last.pt")["step"] == 2


def test_resume_refuses_a_different_architecture(tmp_path: Path) -> None:
    run(tiny_config("max_steps=1"), tmp_path, data=tiny_data(), evaluate=False, quiet=True)
    with pytest.raises(ValueError, match="architecture differs"):
        run(tiny_config("latent_channels=2"), tmp_path, data=tiny_data(), quiet=True)


def test_cli_runs_the_tiny_config(tmp_path: Path, capsys) -> None:
    args = ["--config", str(CONFIGS / "nvae_tiny_cpu.yaml"), "--run-dir", str(tmp_path)]
    args += ["--quiet", *TINY, "max_steps=1", "num_train=8", "num_test=4", "probe=false"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["step"] == 1 and "probe_accuracy" not in printed


@pytest.mark.parametrize("name", ["mnist", "cifar10", "celeba64", "tiny_cpu"])
def test_shipped_configs_resolve(name: str) -> None:
    cfg = load_nvae_config(CONFIGS / f"nvae_{name}.yaml")
    arch = cfg.arch()
    assert arch.num_groups == sum(cfg.groups_per_scale)
    assert NVAETrainConfig.from_dict(cfg.to_dict()) == cfg


def test_config_overrides_are_typed_and_checked() -> None:
    cfg = tiny_config("lam=0.5", "groups_per_scale=[1,3]", "kl_balance=false")
    assert cfg.lam == 0.5 and cfg.groups_per_scale == [1, 3] and cfg.kl_balance is False
    with pytest.raises(ValueError, match="unknown config key 'lamda'"):
        tiny_config("lamda=0.5")
    with pytest.raises(ValueError, match="batch_size"):
        tiny_config("batch_size=two")
    with pytest.raises(ValueError, match="mode"):
        tiny_config("mode=cr")
    with pytest.raises(ValueError, match="image_size must be divisible"):
        tiny_config("groups_per_scale=[1,1,1,1,1,1]")


def test_bf16_autocast_on_cpu_trains_with_float32_losses(tmp_path: Path) -> None:
    trainer = Trainer(tiny_config("mode=cr-nvae", "amp=bf16"), tmp_path, tiny_data())
    assert trainer.amp_dtype == torch.bfloat16 and not trainer.scaler.is_enabled()
    stem_dtypes = []
    trainer.model.stem.register_forward_hook(lambda m, i, o: stem_dtypes.append(o.dtype))
    for _ in range(2):
        record = trainer.train_step()
        assert record["finite"] and all(math.isfinite(v) for v in record.values()), record
    assert set(stem_dtypes) == {torch.bfloat16}  # the convs did run in bf16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = trainer.model(trainer._observe(trainer._batch(0)))
    for t in (out.params, out.kl, out.log_px, out.log_q, out.posteriors[-1].logvar):
        assert t.dtype == torch.float32  # latent parameters, KLs and log-probs stay float32


def test_amp_settings(tmp_path: Path) -> None:
    from crfold.amp import AMP_CHOICES, amp_dtype

    for amp in AMP_CHOICES:  # "fp16" is a valid setting; only a CPU run refuses it
        assert tiny_config(f"amp={amp}").amp == amp
    with pytest.raises(ValueError, match="amp"):
        tiny_config("amp=fp8")
    auto = Trainer(tiny_config("amp=auto"), tmp_path / "auto", tiny_data())
    assert auto.amp_dtype == amp_dtype("auto", "cpu")  # bf16 where the CPU has native bf16
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        Trainer(tiny_config("amp=fp16"), tmp_path / "fp16", tiny_data())


def test_learning_rate_schedule() -> None:
    assert learning_rate(0, 100, 10, 1e-2, 1e-4) == pytest.approx(1e-3)
    assert learning_rate(9, 100, 10, 1e-2, 1e-4) == pytest.approx(1e-2)
    assert learning_rate(10, 100, 10, 1e-2, 1e-4) == pytest.approx(1e-2)
    assert learning_rate(55, 100, 10, 1e-2, 1e-4) == pytest.approx((1e-2 + 1e-4) / 2)
    assert learning_rate(100, 100, 10, 1e-2, 1e-4) == pytest.approx(1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_step_on_cuda(tmp_path: Path, amp: str) -> None:
    cfg = tiny_config("mode=cr-nvae", "device=cuda", f"amp={amp}")
    trainer = Trainer(cfg, tmp_path, tiny_data())
    assert trainer.amp_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    assert trainer.scaler.is_enabled() == (amp == "fp16")
    record = trainer.train_step()
    assert record["finite"] and math.isfinite(record["loss"])
    with torch.autocast("cuda", dtype=trainer.amp_dtype):
        out = trainer.model(trainer._observe(trainer._batch(0)))
    for t in (out.kl, out.log_px, out.log_q, out.posteriors[-1].logvar):
        assert t.dtype == torch.float32  # latent parameters, KLs and log-probs stay float32
