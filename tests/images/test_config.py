"""Tests for crfold_images.config: ImageConfig on crfold.config's one mechanism."""

from __future__ import annotations

from pathlib import Path

import pytest

from crfold.config import RunConfig, load_config
from crfold_images.config import ImageConfig

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_the_papers():
    cfg = ImageConfig()
    assert isinstance(cfg, RunConfig) and cfg.task == "images"
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.latent_dim) == (1e-4, 64, 100, 50)
    assert cfg.weight_decay == 0.0 and cfg.num_threads is None and cfg.data_root is None
    assert cfg.resolved_lam() == pytest.approx(0.1) and cfg.eval_samples == 5000
    assert cfg.replace(beta=10.0).resolved_lam() == pytest.approx(1.0)  # 0.1 * beta
    assert cfg.replace(beta=10.0, lam=0.01).resolved_lam() == pytest.approx(0.01)
    assert cfg.replace(lam=0.0).resolved_lam() == 0.0  # 0 is a value, None is "not set"
    for key in ("image_size", "val_size", "max_train", "gaussian_sigma", "eval_max_images",
                "mi_batch_size", "lam"):  # fmt: skip
        assert getattr(cfg, key) is None, key
    assert cfg.MODES == ("base", "aug", "cr", "triplet") and not cfg.MODE_ALIASES


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: images\ndataset: mnist5k\nwidth: 0.25\nepochs: 3\n")
    cfg = load_config(path, ["epochs=7", "mode=cr", "lam=0.01", "max_train=none"])
    assert isinstance(cfg, ImageConfig)  # the file's task key picks the class
    assert (cfg.dataset, cfg.width, cfg.epochs, cfg.mode, cfg.lam) == (
        "mnist5k", 0.25, 7, "cr", 0.01,
    )  # fmt: skip
    assert ImageConfig.from_dict(cfg.to_dict()) == cfg
    assert load_config(None, ["task=images", "mode=aug"]).mode == "aug"


def test_resumable_keys():
    resumable = set(ImageConfig.RESUMABLE)
    assert set(RunConfig.RESUMABLE) <= resumable
    evaluation = {"eval_samples", "eval_chunk", "eval_max_images", "eval_batch_size",
                  "mi_batch_size", "probe_max_train", "samples_grid"}  # fmt: skip
    assert evaluation <= resumable and "epochs" in resumable
    saved = ImageConfig(mode="base").to_dict()
    assert ImageConfig(mode="cr", epochs=3, eval_samples=9).run_defining_changes(saved) == ["mode"]


def test_errors_name_the_key(tmp_path):
    def load(*overrides):
        return load_config(None, list(overrides), cls=ImageConfig)

    with pytest.raises(ValueError, match="unknown config key 'epoch'"):
        load("epoch=3")
    with pytest.raises(ValueError, match="unknown config key 'threads'"):
        load("threads=1")  # now the engine's num_threads
    with pytest.raises(ValueError, match="epochs"):
        load("epochs=three")
    with pytest.raises(ValueError, match="mode"):
        load("mode=vae+aug")
    with pytest.raises(ValueError, match="beta"):
        load("objective=iwae", "beta=0.5")
    with pytest.raises(ValueError, match="override"):
        load("epochs")
    with pytest.raises(ValueError, match="task"):
        load("task=nvae")
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml", cls=ImageConfig)
    assert "eval_samples" in ImageConfig.describe()


@pytest.mark.parametrize(
    ("key", "old"),
    [("lam", -1), ("image_size", 0), ("val_size", -1), ("max_train", 0), ("gaussian_sigma", 0),
     ("eval_max_images", 0), ("mi_batch_size", 0), ("probe_max_train", 0)],
)  # fmt: skip
def test_old_sentinels_are_refused_with_a_hint(key, old):
    with pytest.raises(ValueError, match=f"{key}: .*use none"):
        load_config(None, [f"{key}={old}"], cls=ImageConfig)
    assert getattr(load_config(None, [f"{key}=none"], cls=ImageConfig), key) is None


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("images_*.yaml")), ids=str)
def test_shipped_configs_load_and_point_at_no_shared_folder(path):
    cfg = load_config(path)
    assert isinstance(cfg, ImageConfig)
    values = [line.split("#")[0] for line in path.read_text().splitlines()]
    assert not any("../" in v or "shared" in v for v in values)
    assert cfg.data_root is None or not Path(cfg.data_root).is_absolute()


def test_deprecated_wrappers_still_work():
    from crfold_images.config import describe_image_fields, load_image_config

    with pytest.warns(DeprecationWarning):
        assert load_image_config(None, ["mode=cr"]).mode == "cr"
    with pytest.warns(DeprecationWarning):
        assert "eval_samples" in describe_image_fields()


def test_amp_choices_are_crfolds():
    from crfold.amp import AMP_CHOICES

    for amp in AMP_CHOICES:  # "fp16" is a valid setting; only a CPU run refuses it
        assert load_config(None, [f"amp={amp}"], cls=ImageConfig).amp == amp
    with pytest.raises(ValueError, match="amp"):
        load_config(None, ["amp=fp8"], cls=ImageConfig)


def test_lam_per_dim_weighs_lambda_against_nats_per_dimension():
    from crfold_images.task import loss_config

    cfg = ImageConfig(mode="cr", lam=0.1)
    assert not cfg.lam_per_dim  # the paper's Eq. 3: lambda * R against nats per image
    assert cfg.effective_lam(3072) == pytest.approx(0.1)
    per_dim = cfg.replace(lam_per_dim=True)
    assert per_dim.effective_lam(3072) == pytest.approx(307.2)  # lambda * D, D = C * H * W
    assert per_dim.replace(lam=None, beta=0.5).effective_lam(784) == pytest.approx(0.05 * 784)
    assert loss_config(per_dim, 784).lam == pytest.approx(78.4)
    assert loss_config(cfg).lam == loss_config(cfg, 784).lam == pytest.approx(0.1)
    with pytest.raises(ValueError, match="lam_per_dim"):
        loss_config(per_dim)  # the dimensions are needed
    with pytest.raises(ValueError, match="data_dims"):
        cfg.effective_lam(0)
    assert load_config(None, ["task=images", "lam_per_dim=true"]).lam_per_dim is True
    assert "lam_per_dim" not in ImageConfig.RESUMABLE  # another objective: another run
