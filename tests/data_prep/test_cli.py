"""`crfold prepare ...` (an entry-point plugin) and `python -m data_prep ...`: exit status."""

from __future__ import annotations

import json

import numpy as np
import pytest

from crfold import cli as crfold_cli
from data_prep import cli

from .builders import build_folder, build_modelnet

FAST = ["--workers", "0", "--quiet", "--num-points", "64", "--dense-factor", "4"]


def test_prepare_is_a_crfold_subcommand(capsys):
    parser = crfold_cli.build_parser()
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["prepare", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for layout in ("shapenet", "modelnet", "folder", "npz", "Exit status"):
        assert layout in text
    assert crfold_cli.main(["prepare"]) == 2  # no layout: help, usage error


def test_defaults_per_layout():
    parser = cli.build_parser()
    sn = parser.parse_args(["shapenet", "--root", "r", "--out", "o"])
    assert (sn.name, sn.axis, sn.num_points, sn.dense_factor, sn.ratios) == (
        "shapenetcorev2", "none", 2048, 10, "0.7,0.1,0.2",
    )  # fmt: skip
    mn = parser.parse_args(["modelnet", "--root", "r", "--out", "o"])
    assert (mn.name, mn.axis, mn.workers >= 1) == (None, "z-up-to-y-up", True)
    npz = parser.parse_args(["npz", "--input", "x.npz", "--out", "o"])
    assert (npz.num_points, npz.no_normalize, npz.func) == (None, False, cli._run)


def test_exit_status_and_summary(tmp_path, capsys):
    info = build_modelnet(tmp_path / "ModelNet10", per_split=1)
    args = [
        "prepare",
        "modelnet",
        "--root",
        str(tmp_path / "ModelNet10"),
        "--out",
        str(tmp_path / "o"),
    ]
    assert crfold_cli.main(args + FAST) == 3  # converted, but bad meshes were skipped
    out = capsys.readouterr().out
    assert f"{len(info['good'])}/{len(info['good']) + len(info['bad'])} converted" in out
    assert f"{len(info['bad'])} skipped" in out
    assert crfold_cli.main(args + FAST[:-4] + ["--num-points", "32"]) == 2  # other parameters
    assert "--overwrite" in capsys.readouterr().err
    for rel in info["bad"]:
        (tmp_path / "ModelNet10" / rel).unlink()
    assert cli.main(args[1:] + FAST + ["--out", str(tmp_path / "clean")]) == 0
    report = json.loads((tmp_path / "clean" / "report.json").read_text())
    assert report["skipped"] == [] and report["exit_status"] == 0


def test_bad_arguments_are_usage_errors(tmp_path, capsys):
    build_folder(tmp_path / "m", per_class=1)
    assert (
        cli.main(["folder", "--root", str(tmp_path / "absent"), "--out", str(tmp_path / "o")]) == 2
    )
    assert "root must be an existing directory" in capsys.readouterr().err
    bad_ratio = [
        "folder",
        "--root",
        str(tmp_path / "m"),
        "--out",
        str(tmp_path / "o"),
        "--ratios",
        "1,1,1",
    ]
    assert cli.main(bad_ratio + FAST) == 2
    assert "ratios" in capsys.readouterr().err
    assert (
        cli.main(["npz", "--input", str(tmp_path / "none.npz"), "--out", str(tmp_path / "o")]) == 2
    )


def test_npz_command(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "clouds.npz",
        train_points=rng.normal(size=(5, 32, 3)).astype(np.float16),
        train_labels=np.array([0, 1, 0, 1, 1], dtype=np.uint8),
        test_points=rng.normal(size=(2, 32, 3)).astype(np.float16),
        test_labels=np.array([1, 0], dtype=np.uint8),
        classes=np.array(["cat", "dog"]),
    )
    args = ["npz", "--input", str(tmp_path / "clouds.npz"), "--out", str(tmp_path / "o")]
    assert cli.main(args + ["--num-points", "16", "--quiet"]) == 0
    assert "7/7 converted" in capsys.readouterr().out
    assert (tmp_path / "o" / "shape_names.txt").read_text() == "cat\ndog\n"
