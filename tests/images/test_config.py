"""Tests for crfold_images.config: typed overrides, YAML files, validation."""

from __future__ import annotations

import pytest

from crfold_images.config import ImageConfig, describe_image_fields, load_image_config


def test_defaults_are_the_papers():
    cfg = ImageConfig()
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.latent_dim) == (1e-4, 64, 100, 50)
    assert cfg.resolved_lam() == pytest.approx(0.1) and cfg.eval_samples == 5000
    assert cfg.replace(beta=10.0).resolved_lam() == pytest.approx(1.0)  # 0.1 * beta
    assert cfg.replace(beta=10.0, lam=0.01).resolved_lam() == pytest.approx(0.01)


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("dataset: mnist5k\nwidth: 0.25\nepochs: 3\n")
    cfg = load_image_config(path, ["epochs=7", "mode=cr", "lam=0.01"])
    assert (cfg.dataset, cfg.width, cfg.epochs, cfg.mode, cfg.lam) == (
        "mnist5k",
        0.25,
        7,
        "cr",
        0.01,
    )
    assert ImageConfig.from_dict(cfg.to_dict()) == cfg


def test_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="unknown config key 'epoch'"):
        load_image_config(None, ["epoch=3"])
    with pytest.raises(ValueError, match="epochs"):
        load_image_config(None, ["epochs=three"])
    with pytest.raises(ValueError, match="mode"):
        load_image_config(None, ["mode=vae+aug"])
    with pytest.raises(ValueError, match="beta"):
        load_image_config(None, ["objective=iwae", "beta=0.5"])
    with pytest.raises(ValueError, match="override"):
        load_image_config(None, ["epochs"])
    with pytest.raises(FileNotFoundError):
        load_image_config(tmp_path / "missing.yaml")
    assert "eval_samples" in describe_image_fields()


@pytest.mark.parametrize("name", ["images_mnist_hour", "images_smoke"])
def test_shipped_configs_load(name):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "configs" / f"{name}.yaml"
    cfg = load_image_config(path)
    assert isinstance(cfg, ImageConfig)


def test_amp_choices_are_crfolds():
    from crfold.amp import AMP_CHOICES

    for amp in AMP_CHOICES:  # "fp16" is a valid setting; only a CPU run refuses it
        assert load_image_config(None, [f"amp={amp}"]).amp == amp
    with pytest.raises(ValueError, match="amp"):
        load_image_config(None, ["amp=fp8"])
