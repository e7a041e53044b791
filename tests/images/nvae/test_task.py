"""The NVAE task on the run engine: modes, run directory, exact resume, configs, data, CLI."""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import runpy
import sys
from pathlib import Path

import pytest
import torch

from crfold.cli import main as crfold_main
from crfold.config import RunConfig, load_config
from crfold.io import load_checkpoint
from crfold.train import Trainer, train
from crfold.train.runtime import DistInfo, read_metrics, step_generator
from crfold_images.nvae.config import NVAEConfig, NVAETrainConfig, load_nvae_config
from crfold_images.nvae.data import DATA_FOLDERS, data_root, default_root, load_images
from crfold_images.nvae.task import NVAETask, learning_rate

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
TINY_YAML = str(CONFIGS / "nvae_tiny_cpu.yaml")
# The tiny architecture of nvae_tiny_cpu.yaml on 8 synthetic train images: 2 steps of 4 per epoch.
TINY = [
    "dataset=random",
    "num_train=8",
    "num_test=4",
    "device=cpu",
    "amp=none",
    "batch_size=4",
    "epochs=1",
    "iw_samples=3",
    "iw_chunk=2",
    "eval_batch_size=4",
    "log_every=1",
    "checkpoint_every=1",
]
LAYOUT = ("config.yaml", "last.pt", "metrics.jsonl", "summary.json", "eval.json")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is faster and robust to a loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(*extra: str, run_dir: Path | None = None) -> NVAEConfig:
    more = [f"run_dir={run_dir}"] if run_dir is not None else []
    return load_nvae_config(TINY_YAML, [*TINY, *extra, *more])


def tiny_task(cfg: NVAEConfig) -> NVAETask:
    return NVAETask(cfg, torch.device("cpu"), DistInfo())


def train_records(run: Path) -> list[dict]:
    return [r for r in read_metrics(run) if r["kind"] == "train"]


# --------------------------------------------------------------------------- training
@pytest.mark.parametrize("mode", ["base", "aug", "cr"])
def test_each_mode_trains_and_writes_the_engine_layout(tmp_path: Path, mode: str) -> None:
    run = tmp_path / "run"
    summary = train(tiny_config(f"mode={mode}", "lam=0.5", run_dir=run), quiet=True)
    assert summary["status"] == "completed" and summary["step"] == 2 and summary["epoch"] == 1
    for name in LAYOUT:
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").glob("events.out.tfevents.*"))
    # no validation (train/test only): no best.pt; nothing of the old trainer
    for name in ("best.pt", "ckpt_last.pt", "results.json"):
        assert not (run / name).exists(), name
    assert summary["best_val_loss"] is None and "val_loss" not in summary
    result = json.loads((run / "eval.json").read_text())
    assert result["step"] == 2 and result["which"] == "last" and result["mode"] == mode
    for key in ("nll_nats", "bpd"):
        assert math.isfinite(result[key]) and result[key] > 0
    assert result["bpd"] == pytest.approx(result["nll_nats"] / (math.log(2) * 784))
    assert result["feature_dims"] == 4 * 4  # G groups x Z channels, spatially pooled
    assert 0 <= result["au_features"] <= 16 and 0 <= result["au_top"] <= 4 * 8 * 8
    assert 0 <= result["active_units"] <= result["latent_dims"] == 4 * (2 * 8 * 8 + 2 * 16 * 16)
    assert 0.0 <= result["probe_accuracy"] <= 1.0
    # -ELBO and rate on one draw per test image; -ELBO bounds the IW-NLL from above in
    # expectation (3 importance samples here: only loosely).
    assert result["rate"] >= 0 and result["neg_elbo"] > result["rate"]
    assert result["neg_elbo_bpd"] == pytest.approx(result["neg_elbo"] / (math.log(2) * 784))
    assert result["data_dims"] == 784 and result["likelihood"] == "bernoulli"
    assert result["iw_images"] == result["n_test"] == 4  # iw_images None: every test image
    assert result["num_classes"] >= 2 and isinstance(result["flags"], dict)
    assert all(isinstance(c, str) for c in result["caveats"])
    assert result["lam_effective"] == (0.5 if mode == "cr" else 0.0)
    cfg = load_config(run / "config.yaml")
    assert isinstance(cfg, NVAEConfig) and cfg.mode == mode
    records = train_records(run)
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert ("consistency" in r) == (mode != "base") and "skipped" not in r
        assert r["loss"] == pytest.approx(r["objective"] + 1e-2 * r["reg"], rel=1e-5)
        elbos = r["recon"] + r["kl_coeff"] * r["kl"]
        if mode != "base":
            elbos += r["recon_aug"] + r["kl_coeff"] * r["kl_aug"]
        lam = 0.5 if mode == "cr" else 0.0  # aug: the consistency term is logged, not weighted
        assert r.get("lam", 0.0) == pytest.approx(lam) and ("lam" in r) == (mode != "base")
        expect = elbos + lam * r.get("consistency", 0.0)
        assert r["objective"] == pytest.approx(expect, rel=1e-5)
        assert r["kl_coeff"] < 1 if r["step"] == 1 else r["kl_coeff"] == 1.0
    assert load_checkpoint(run / "last.pt")["task_state"] == {}  # no random state in the task


def test_aug_trains_on_x_and_tx_without_the_consistency_term() -> None:
    """aug = cr with lam = 0: the same draws and terms, the consistency term not in the loss."""
    terms = {}
    for mode in ("base", "aug", "cr"):
        cfg = tiny_config(f"mode={mode}", "lam=0.5", "spectral_lambda=0")
        task = tiny_task(cfg)
        torch.manual_seed(0)
        model = task.build_model()
        batch = next(iter(task.train_batches(0, 0)))
        gen = step_generator(cfg.seed, 0, 0, torch.device("cpu"))
        terms[mode] = task.loss(model, model, batch, 0, 2, gen, None)
        if mode == "aug":  # the gradient is that of the two ELBOs alone
            model.zero_grad()
            terms[mode]["loss"].backward()
            grads = [p.grad.clone() for p in model.parameters()]
            model.zero_grad()
            t = terms[mode]
            k = t["kl_coeff"]
            elbos = t["recon"] + k * t["kl"] + t["recon_aug"] + k * t["kl_aug"]
            torch.testing.assert_close(t["loss"], elbos, rtol=0, atol=0)
            terms["aug_grads"] = grads
    base, aug, cr = terms["base"], terms["aug"], terms["cr"]
    assert "recon_aug" not in base and "consistency" not in base
    for key in ("recon", "kl", "recon_aug", "kl_aug", "consistency"):
        torch.testing.assert_close(aug[key], cr[key], rtol=0, atol=0, msg=key)
    assert aug["consistency"] > 0 and not torch.equal(aug["recon"], aug["recon_aug"])  # t(x) != x
    torch.testing.assert_close(cr["loss"] - aug["loss"], 0.5 * cr["consistency"])


def test_lam_warmup_and_lam_per_dim_scale_the_consistency_weight() -> None:
    """lam_warmup: lambda * beta_t, the KL term's warm-up factor; lam_per_dim: lambda * D."""
    assert not NVAEConfig().lam_warmup and not NVAEConfig().lam_per_dim  # the defaults
    terms = {}
    for name, extra in (("const", []), ("warm", ["lam_warmup=true"]),
                        ("per_dim", ["lam_per_dim=true"]), ("aug", ["mode=aug"])):  # fmt: skip
        cfg = tiny_config("mode=cr", "lam=0.5", "spectral_lambda=0", *extra)
        task = tiny_task(cfg)
        torch.manual_seed(0)
        model = task.build_model()
        batch = next(iter(task.train_batches(0, 0)))
        gen = step_generator(cfg.seed, 0, 0, torch.device("cpu"))
        terms[name] = task.loss(model, model, batch, 0, 2, gen, None)
        if name == "warm":
            assert task.consistency_weight(1e-4) == pytest.approx(0.5e-4)
            assert task.consistency_weight(1.0) == pytest.approx(0.5)  # after the warm-up
        if name == "per_dim":
            assert task.lam == pytest.approx(0.5 * 784)  # 1 x 28 x 28 data
    beta_0 = float(terms["warm"]["kl_coeff"])
    assert beta_0 < 0.01  # step 0 of the warm-up
    for name, lam in (("const", 0.5), ("warm", 0.5 * beta_0), ("per_dim", 0.5 * 784)):
        t = terms[name]
        assert float(t["lam"]) == pytest.approx(lam)
        torch.testing.assert_close(t["consistency"], terms["aug"]["consistency"], rtol=0, atol=0)
        atol = 4e-7 * float(t["loss"].detach().abs())  # float32 rounding of a loss of ~1e3 nats
        diff = t["loss"] - terms["aug"]["loss"]
        torch.testing.assert_close(diff, lam * t["consistency"], rtol=1e-5, atol=atol)


def test_interrupted_by_max_steps_then_resumed_equals_uninterrupted(tmp_path: Path) -> None:
    # 2 epochs of 2 steps; the lr and KL warm-ups span several steps, so the schedules matter
    extra = ("mode=cr", "epochs=2", "lr_warmup_epochs=1", "kl_warmup_fraction=0.5")
    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    train(tiny_config(*extra, run_dir=straight), quiet=True)
    s1 = train(tiny_config(*extra, "max_steps=1", run_dir=pieces), quiet=True, evaluate=False)
    assert s1["status"] == "max_steps" and load_checkpoint(pieces / "last.pt")["step"] == 1
    torch.manual_seed(123)  # disturb the global RNG: the checkpoint restores it
    s2 = train(tiny_config(*extra, run_dir=pieces), resume=True, quiet=True)
    assert s2["status"] == "completed" and s2["step"] == 4
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(pieces / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    assert any(k.endswith("sn_u") for k in a["model"])  # power-iteration state persists
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        for k in pa:
            assert torch.equal(pa[k], pb[k]), k
    assert train_records(straight) == train_records(pieces)
    assert [r["step"] for r in train_records(pieces)] == [1, 2, 3, 4]
    ea, eb = (json.loads((d / "eval.json").read_text()) for d in (straight, pieces))
    assert ea.pop("config").pop("run_dir") != eb.pop("config").pop("run_dir")  # the rest equal
    assert ea == eb


def test_resume_refuses_a_different_architecture_and_allows_eval_keys(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(tiny_config("max_steps=1", run_dir=run), quiet=True, evaluate=False)
    with pytest.raises(ValueError, match="latent_channels"):
        train(tiny_config("latent_channels=2", run_dir=run), resume=True, quiet=True)
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_config(run_dir=run), quiet=True)
    summary = train(tiny_config("iw_samples=2", "probe=false", "iw_images=3", run_dir=run),
                    resume=True, quiet=True)  # fmt: skip
    assert summary["step"] == 2
    result = json.loads((run / "eval.json").read_text())
    assert result["num_samples"] == 2 and "probe_accuracy" not in result
    assert result["iw_images"] == 3 and result["n_test"] == 4  # the IW-NLL's subset only


def test_batches_one_seeded_shuffle_per_epoch() -> None:
    task = tiny_task(tiny_config("num_train=10"))  # 10 // 4 = 2 steps; 2 images left out
    assert task.batches_per_epoch() == 2 and task.batch == 4
    e0 = list(task.train_batches(0, 0))
    assert len(e0) == 2 and all(b.shape == (4, 1, 28, 28) and b.dtype == torch.float32 for b in e0)
    assert 0 <= float(torch.cat(e0).min()) and float(torch.cat(e0).max()) <= 1
    torch.testing.assert_close(list(task.train_batches(0, 1))[0], e0[1], rtol=0, atol=0)  # skip
    assert torch.equal(task.epoch_order(0), tiny_task(tiny_config("num_train=10")).epoch_order(0))
    assert not torch.equal(task.epoch_order(0), task.epoch_order(1))
    assert not torch.equal(task.epoch_order(0), tiny_task(tiny_config("num_train=10", "seed=1"))
                           .epoch_order(0))  # fmt: skip
    assert task.validate(None, None) == {} and task.state_dict() == {}


def test_schedules_span_the_epochs_not_max_steps() -> None:
    assert learning_rate(0, 100, 10, 1e-2, 1e-4) == pytest.approx(1e-3)
    assert learning_rate(9, 100, 10, 1e-2, 1e-4) == pytest.approx(1e-2)
    assert learning_rate(10, 100, 10, 1e-2, 1e-4) == pytest.approx(1e-2)
    assert learning_rate(55, 100, 10, 1e-2, 1e-4) == pytest.approx((1e-2 + 1e-4) / 2)
    assert learning_rate(100, 100, 10, 1e-2, 1e-4) == pytest.approx(1e-4)
    task = tiny_task(tiny_config("epochs=10", "lr_warmup_epochs=2", "max_steps=3"))
    assert task.schedule_steps == 20 and task.lr_warmup == 4
    for step in (0, 3, 10, 19):
        expect = learning_rate(step, 20, 4, 1e-2, 1e-4)
        assert task.learning_rate(step, 3) == task.learning_rate(step, 20) == expect
    assert task.kl_coefficient(0) == pytest.approx(1e-4)
    assert task.kl_coefficient(3) == pytest.approx(1e-4 + (1 - 1e-4) * 3 / 6)
    assert task.kl_coefficient(6) == 1.0


def test_bf16_autocast_on_cpu_trains_with_float32_losses(tmp_path: Path) -> None:
    trainer = Trainer(tiny_config("mode=cr", "amp=bf16", run_dir=tmp_path), quiet=True)
    try:
        assert trainer.amp_dtype == torch.bfloat16 and trainer.scaler is None
        stem_dtypes = []
        trainer.model.stem.register_forward_hook(lambda m, i, o: stem_dtypes.append(o.dtype))
        for batch in trainer.task.train_batches(0, 0):
            record = trainer.train_step(batch)
            assert "skipped" not in record and all(math.isfinite(v) for v in record.values())
        assert set(stem_dtypes) == {torch.bfloat16}  # the convs did run in bf16
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = trainer.model(next(iter(trainer.task.train_batches(0, 0))).round())
        for t in (out.params, out.kl, out.log_px, out.log_q, out.posteriors[-1].logvar):
            assert t.dtype == torch.float32  # latent parameters, KLs and log-probs stay float32
    finally:
        trainer.close()


def test_amp_settings(tmp_path: Path) -> None:
    from crfold.amp import AMP_CHOICES, amp_dtype

    for amp in AMP_CHOICES:  # "fp16" is a valid setting; only a CPU run refuses it
        assert tiny_config(f"amp={amp}").amp == amp
    with pytest.raises(ValueError, match="amp"):
        tiny_config("amp=fp8")
    auto = Trainer(tiny_config("amp=auto", run_dir=tmp_path / "auto"), quiet=True)
    auto.close()
    assert auto.amp_dtype == amp_dtype("auto", "cpu")  # bf16 where the CPU has native bf16
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        Trainer(tiny_config("amp=fp16", run_dir=tmp_path / "fp16"), quiet=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_step_on_cuda(tmp_path: Path, amp: str) -> None:
    trainer = Trainer(tiny_config("mode=cr", "device=cuda", f"amp={amp}", run_dir=tmp_path))
    try:
        assert trainer.amp_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        assert (trainer.scaler is not None) == (amp == "fp16")
        batch = next(iter(trainer.task.train_batches(0, 0)))
        assert batch.device.type == "cuda"
        record = trainer.train_step(batch)
        assert "skipped" not in record and math.isfinite(record["loss"])
        with torch.autocast("cuda", dtype=trainer.amp_dtype):
            out = trainer.model(batch.round())
        for t in (out.kl, out.log_px, out.log_q, out.posteriors[-1].logvar):
            assert t.dtype == torch.float32  # latent parameters, KLs and log-probs stay float32
    finally:
        trainer.close()


# --------------------------------------------------------------------------- configs
def test_config_is_a_run_config_with_the_nvae_defaults() -> None:
    cfg = NVAEConfig()
    assert isinstance(cfg, RunConfig) and NVAETrainConfig is NVAEConfig
    assert (cfg.task, cfg.mode, cfg.dataset, cfg.data_root) == ("nvae", "base", "mnist", None)
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay) == (400, 200, 1e-2, 3e-4)
    assert (cfg.log_every, cfg.checkpoint_every, cfg.max_bad_steps) == (50, 500, 50)
    assert NVAEConfig.MODES == ("base", "aug", "cr")
    assert NVAEConfig.TASK_CLASS == "crfold_images.nvae.task:NVAETask"
    eval_keys = {"iw_samples", "iw_chunk", "iw_images", "eval_batch_size", "probe_features",
                 "probe_C", "probe"}  # fmt: skip
    # epochs shapes the learning-rate and KL schedules: a longer NVAE run is another run
    assert set(NVAEConfig.RESUMABLE) == (set(RunConfig.RESUMABLE) - {"epochs"}) | eval_keys
    assert "../shared" not in NVAEConfig.describe()  # no default points at ../shared
    assert type(load_config(overrides=["task=nvae"])) is NVAEConfig


@pytest.mark.parametrize("name", ["mnist", "cifar10", "celeba64", "tiny_cpu"])
def test_shipped_configs_resolve(name: str) -> None:
    path = CONFIGS / f"nvae_{name}.yaml"
    cfg = load_config(path)  # the file's `task: nvae` picks the class
    assert isinstance(cfg, NVAEConfig) and cfg.data_root is None
    assert cfg.arch().num_groups == sum(cfg.groups_per_scale)
    assert NVAEConfig.from_dict(cfg.to_dict()) == cfg
    text = path.read_text()
    assert "shared/" not in text and "REFERENCES.md" not in text and "nvae_train" not in text


def test_config_overrides_are_typed_and_checked() -> None:
    cfg = tiny_config("lam=0.5", "groups_per_scale=[1,3]", "kl_balance=false")
    assert cfg.lam == 0.5 and cfg.groups_per_scale == [1, 3] and cfg.kl_balance is False
    with pytest.raises(ValueError, match="unknown config key 'lamda'"):
        tiny_config("lamda=0.5")
    with pytest.raises(ValueError, match="unknown config key 'ckpt_every'"):
        tiny_config("ckpt_every=5")  # now checkpoint_every, the engine's key
    with pytest.raises(ValueError, match="batch_size"):
        tiny_config("batch_size=two")
    with pytest.raises(ValueError, match="mode"):
        tiny_config("mode=triplet")
    with pytest.raises(ValueError, match="image_size must be divisible"):
        tiny_config("groups_per_scale=[1,1,1,1,1,1]")
    with pytest.raises(ValueError, match="kl_warmup_fraction"):
        tiny_config("kl_warmup_fraction=1.5")
    with pytest.raises(ValueError, match="aug: families"):
        tiny_config("aug=flip")
    with pytest.raises(ValueError, match="dataset"):
        tiny_config("dataset=svhn")


def test_old_mode_names_map_to_the_shared_vocabulary(tmp_path: Path) -> None:
    for old, new in (("cr-nvae", "cr"), ("nvae", "base"), ("nvae+aug", "aug")):
        with pytest.warns(
            DeprecationWarning, match=re.escape(f"mode '{old}' is the old name of mode '{new}'")
        ):
            assert tiny_config(f"mode={old}").mode == new
    yaml_file = tmp_path / "old.yaml"
    yaml_file.write_text("task: nvae\nmode: cr-nvae\n")
    with pytest.warns(DeprecationWarning, match="old name"):
        assert load_config(yaml_file).mode == "cr"
    with pytest.raises(ValueError, match="mode"):
        tiny_config("mode=cr-vae")


# --------------------------------------------------------------------------- data paths
def test_missing_data_root_names_crfold_data(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CRFOLD_DATA", raising=False)
    cfg = tiny_config("dataset=mnist")
    with pytest.raises(FileNotFoundError, match="data_root: mnist does not exist.*CRFOLD_DATA"):
        load_images(cfg)
    monkeypatch.setenv("CRFOLD_DATA", str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError, match=r"nor under CRFOLD_DATA=.*data_root=PATH"):
        load_images(tiny_config("dataset=cifar10", "in_channels=3", "data_size=32"))
    with pytest.raises(FileNotFoundError, match="data_root: nowhere does not exist"):
        load_images(tiny_config("dataset=mnist", "data_root=nowhere"))


def test_data_root_defaults_to_the_dataset_folder_under_crfold_data(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRFOLD_DATA", str(tmp_path / "data"))
    assert DATA_FOLDERS["cifar10"] == "cifar10_jpg" and DATA_FOLDERS["celeba64"] == "celeba"
    for dataset, folder in DATA_FOLDERS.items():
        (tmp_path / "data" / folder).mkdir(parents=True)
        if dataset != "fashion_mnist" or not Path("/usr/share/datasets/fashion-mnist").exists():
            assert default_root(dataset) == tmp_path / "data" / folder
            assert data_root(dataset, None) == tmp_path / "data" / folder
    (tmp_path / "data" / "mine").mkdir()
    assert data_root("mnist", "mine") == tmp_path / "data" / "mine"  # relative: under the root
    assert data_root("mnist", str(tmp_path)) == tmp_path
    with pytest.raises(ValueError, match="random"):
        default_root("random")


def test_cli_reports_missing_data_with_crfold_data(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CRFOLD_DATA", raising=False)
    args = ["nvae", "train", "--config", TINY_YAML, "--run-dir", str(tmp_path / "run"), "--quiet"]
    assert crfold_main(args) == 2
    err = capsys.readouterr().err
    assert "crfold train: error: data_root: mnist does not exist" in err and "CRFOLD_DATA" in err


# --------------------------------------------------------------------------- command line
def test_crfold_nvae_train_writes_the_run_and_resumes(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    args = ["nvae", "train", "--config", TINY_YAML, "--run-dir", str(run), "--quiet"]
    assert crfold_main([*args, *TINY, "mode=cr", "max_steps=1", "--no-eval"]) == 0
    assert (run / "last.pt").is_file() and not (run / "eval.json").exists()
    assert load_config(run / "config.yaml").mode == "cr"
    # --resume: the saved config is the base; only the budget changes
    resume = ["nvae", "train", "--resume", "--run-dir", str(run), "--quiet", "max_steps=none"]
    assert crfold_main(resume) == 0
    for name in LAYOUT:
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "nvae" and summary["mode"] == "cr" and summary["step"] == 2
    assert json.loads((run / "eval.json").read_text())["step"] == 2
    out = capsys.readouterr().out
    assert "completed after 2 steps" in out and "eval.json" in out
    assert crfold_main(["nvae", "train", "--config", TINY_YAML, "--print-config"]) == 0
    assert "task: nvae" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        crfold_main(["nvae", "train", "--help"])
    assert "iw_samples" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_deprecated_module_paths(tmp_path: Path, capsys, monkeypatch) -> None:
    import crfold_images.nvae.model as new

    sys.modules.pop("crfold_images.models.nvae", None)
    with pytest.warns(DeprecationWarning, match="moved to crfold_images.nvae.model"):
        old = importlib.import_module("crfold_images.models.nvae")
    assert old is new
    from crfold_images.models import NVAE
    from crfold_images.models.nvae_config import NVAETrainConfig as Old
    from crfold_images.models.nvae_objective import nvae_objective  # noqa: F401

    assert NVAE is new.NVAE and Old is NVAEConfig
    # python -m crfold_images.models.nvae_train ARGS = crfold nvae train ARGS
    run = tmp_path / "run"
    argv = ["nvae_train", "--config", TINY_YAML, "--run-dir", str(run), "--quiet", *TINY]
    monkeypatch.setattr(sys, "argv", [*argv, "max_steps=1", "--no-eval"])
    with pytest.warns(DeprecationWarning), pytest.raises(SystemExit) as exit_:
        runpy.run_module("crfold_images.models.nvae_train", run_name="__main__")
    assert exit_.value.code == 0 and load_checkpoint(run / "last.pt")["step"] == 1
    assert os.path.isfile(run / "config.yaml")
