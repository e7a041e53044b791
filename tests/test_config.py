"""crfold.config: typed fields, key=value parsing, YAML override files, round trips."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from crfold.config import (
    TrainConfig,
    describe_fields,
    load_config,
    load_saved_config,
    parse_override,
)


def test_defaults_are_the_paper_settings():
    cfg = TrainConfig()
    assert (cfg.data, cfg.mode, cfg.latent_dim, cfg.k, cfg.grid_size) == (
        "synthetic",
        "cr",
        512,
        16,
        45,
    )
    assert (cfg.beta, cfg.lam, cfg.lr, cfg.weight_decay, cfg.batch_size) == (
        1.0,
        0.1,
        1e-4,
        1e-6,
        16,
    )
    assert cfg.aug_rotate == "up" and cfg.aug_translate == 0.2 and cfg.aug_jitter_clip == 0.02
    assert load_config() == cfg


@pytest.mark.parametrize(
    "text, key, expected",
    [
        ("epochs=7", "epochs", 7),
        ("lr=1e-3", "lr", 1e-3),
        ("lr=2", "lr", 2.0),
        ("use_covariance=false", "use_covariance", False),
        ("use_covariance=Yes", "use_covariance", True),
        ("num_points=none", "num_points", None),
        ("num_points=256", "num_points", 256),
        ("aug_rotate=None", "aug_rotate", None),
        ("aug_scale=0.5,2", "aug_scale", [0.5, 2.0]),
        ("aug_scale=[0.8, 1.25]", "aug_scale", [0.8, 1.25]),
        ("classes_subset=chair,table", "classes_subset", ["chair", "table"]),
        ("mode=aug", "mode", "aug"),
        ("data=/a/b=c.npz", "data", "/a/b=c.npz"),
    ],
)
def test_overrides_are_parsed_by_field_type(text, key, expected):
    value = getattr(load_config(overrides=[text]), key)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    "text, named",
    [
        ("epochs=1.5", "epochs"),
        ("epochs=true", "epochs"),
        ("lr=fast", "lr"),
        ("use_covariance=maybe", "use_covariance"),
        ("epochs=none", "epochs"),
        ("aug_scale=a,b", "aug_scale[0]"),
        ("mode=gan", "mode"),
        ("aug_degrees=200", "aug_degrees"),
        ("aug_scale=2,1", "aug_scale"),
        ("batch_size=0", "batch_size"),
        ("lr=0", "lr"),
        ("lam=-1", "lam"),
        ("amp=fp8", "amp"),
        ("aug_degrees=90 aug_steps=24", "aug_degrees"),
        ("aug_degrees=90 aug_rotate=so3", "aug_degrees"),
        ("aug_rotate=so3 aug_steps=24", "aug_steps"),
    ],
)
def test_bad_values_fail_naming_the_key(text, named):
    with pytest.raises(ValueError, match=named.replace("[", r"\[").replace("]", r"\]")):
        load_config(overrides=text.split())


def test_unknown_keys_fail_naming_the_key(tmp_path):
    with pytest.raises(ValueError, match="'learning_rate'"):
        load_config(overrides=["learning_rate=1"])
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: 3\nlatentdim: 8\n")
    with pytest.raises(ValueError, match="latentdim"):
        load_config(path)
    with pytest.raises(ValueError, match="key=value"):
        load_config(overrides=["epochs"])
    with pytest.raises(ValueError, match="key=value"):
        parse_override("=3")


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    # PyYAML reads "1e-4" as a string: it is parsed with the field's type like an override.
    path.write_text("lr: 1e-4\nepochs: 3\nmode: base\naug_scale: [0.5, 2]\nnum_points: null\n")
    cfg = load_config(path, ["epochs=5"])
    assert cfg.lr == 1e-4 and isinstance(cfg.lr, float)
    assert cfg.epochs == 5 and cfg.mode == "base" and cfg.aug_scale == [0.5, 2.0]
    assert cfg.num_points is None
    # Only the listed keys change (lr and num_points keep their default values).
    default = TrainConfig()
    changed = {
        f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(default, f.name)
    }
    assert changed == {"epochs", "mode", "aug_scale"}


def test_yaml_type_errors_and_empty_file(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("epochs: true\n")
    with pytest.raises(ValueError, match="epochs"):
        load_config(path)
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config(path)
    path.write_text("")
    assert load_config(path) == TrainConfig()
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_base_config_is_overridden():
    base = TrainConfig(epochs=3, lam=0.5)
    cfg = load_config(overrides=["epochs=4"], base=base)
    assert (cfg.epochs, cfg.lam) == (4, 0.5)
    assert load_config(base=base.to_dict()) == base


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_save_round_trip(tmp_path, suffix):
    cfg = load_config(overrides=["aug_scale=0.5,2", "classes_subset=a,b", "mode=ae", "grad_clip=1"])
    path = cfg.save(tmp_path / f"config{suffix}")
    assert load_saved_config(path) == cfg
    loaded = json.loads(path.read_text()) if suffix == ".json" else yaml.safe_load(path.read_text())
    assert loaded == cfg.to_dict()
    with pytest.raises(ValueError, match="path"):
        cfg.save(tmp_path / "config.txt")


def test_to_dict_is_plain_and_replace_checks_types():
    cfg = TrainConfig()
    plain = cfg.to_dict()
    assert set(plain) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert all(v is None or isinstance(v, (str, int, float, bool, list)) for v in plain.values())
    assert cfg.replace(epochs=2).epochs == 2 and cfg.epochs == 100
    with pytest.raises(ValueError, match="epochs"):
        cfg.replace(epochs="two")
    with pytest.raises(ValueError, match="unknown config key 'nope'"):
        cfg.replace(nope=1)


def test_obs_scale_default_follows_the_model():
    from crfold.models.foldingnet import DEFAULT_OBS_SCALE

    assert TrainConfig().obs_scale == DEFAULT_OBS_SCALE


def test_every_field_has_help_in_describe_fields():
    text = describe_fields()
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata["help"]
        assert f"  {f.name} (" in text


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["demo.yaml", "modelnet40_cpu.yaml", "shapenet_paper.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.mode == "cr"
    if name == "shapenet_paper.yaml":  # the paper / FoldingNet settings
        assert (cfg.num_points, cfg.batch_size, cfg.lr, cfg.weight_decay) == (2048, 16, 1e-4, 1e-6)
        assert (cfg.epochs, cfg.grid_size, cfg.latent_dim, cfg.lam) == (300, 45, 512, 0.1)
    if name == "modelnet40_cpu.yaml":
        assert cfg.data.endswith("modelnet40_1024_f16.npz") and cfg.to_up == "y"
