"""The ``crfold`` command: train, probe, eval (in-process through ``crfold.cli.main``)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from crfold.cli import build_parser, main
from crfold.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def _help(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*args, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_lists_the_subcommands(capsys):
    text = _help(capsys)
    assert "train" in text and "probe" in text and "backend" in text


def test_train_help_explains_options_and_every_config_key(capsys):
    text = _help(capsys, "train")
    for option in ("--config", "--resume", "--run-dir", "--quiet", "KEY=VALUE"):
        assert option in text
    for f in dataclasses.fields(TrainConfig):
        assert f"  {f.name} (" in text, f.name
    assert "lam (float, default 0.1)" in text


def test_probe_help_shows_defaults(capsys):
    text = _help(capsys, "probe")
    assert "--C" in text and "--standardize" in text and "(default: best)" in text


def test_eval_help_says_where_data_is_looked_up(capsys):
    text = _help(capsys, "eval")
    assert "--data" in text and "CRFOLD_DATA" in text and "--set KEY=VALUE" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["foo=1"], "unknown config key 'foo'"),
        (["epochs=two"], "epochs: expected int"),
        (["epochs"], "key=value"),
        (["--resume"], "--resume"),
        (["--config", "missing.yaml"], "missing.yaml"),
    ],
)
def test_train_errors_exit_2_with_a_message(capsys, args, message):
    assert main(["train", *args]) == 2
    assert message in capsys.readouterr().err


def test_print_config_applies_file_then_overrides_then_run_dir(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text("epochs: 3\nlam: 0.3\n")
    rc = main(["train", "--print-config", "--config", str(path), "lam=0.2", "--run-dir", "r1"])
    assert rc == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert (cfg["epochs"], cfg["lam"], cfg["run_dir"]) == (3, 0.2, "r1")


def test_train_resume_and_probe(tmp_path, capsys, tiny_overrides):
    run = tmp_path / "run"
    assert main(["train", "--quiet", "--run-dir", str(run), *tiny_overrides, "max_steps=1"]) == 0
    assert "max_steps after 1 steps" in capsys.readouterr().out
    # --resume starts from the run's saved config: TINY need not be repeated.
    parser_args = build_parser().parse_args(
        ["train", "--resume", "--run-dir", str(run), "--print-config"]
    )
    assert parser_args.func(parser_args) == 0
    assert yaml.safe_load(capsys.readouterr().out)["latent_dim"] == 16
    # The saved config keeps max_steps=1: lifting it is an override like more epochs.
    assert main(["train", "--quiet", "--resume", "--run-dir", str(run)]) == 0
    assert "max_steps after 1 steps" in capsys.readouterr().out
    assert main(["train", "--quiet", "--resume", "--run-dir", str(run), "max_steps=none"]) == 0
    assert "completed after 2 steps" in capsys.readouterr().out
    assert main(["train", "--quiet", "--run-dir", str(run), *tiny_overrides]) == 2
    assert "already holds a run" in capsys.readouterr().err

    assert main(["probe", str(run), "--quiet", "--which", "last", "--C", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "linear SVM" in out and "logistic" in out and "probe.json" in out
    assert json.loads((run / "probe.json").read_text())["svm"]["C"] == 0.5
    assert main(["probe", str(tmp_path / "nothing")]) == 2
    assert "best.pt" in capsys.readouterr().err


def test_python_dash_m_crfold():
    res = subprocess.run(
        [sys.executable, "-m", "crfold", "train", "--help"],
        cwd=REPO,
        capture_output=True,
        timeout=120,
    )
    assert res.returncode == 0 and b"--resume" in res.stdout


def test_demo_script_trains_probes_and_prints_the_table(tmp_path, tiny_overrides):
    run = tmp_path / "demo"
    args = [sys.executable, "scripts/demo.py", "--quiet", "--run-dir", str(run), *tiny_overrides]
    res = subprocess.run(args, cwd=REPO, capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    out = res.stdout.decode()
    for row in ("reconstruction Chamfer", "linear SVM accuracy", "logistic accuracy"):
        assert row in out
    assert (run / "probe.json").is_file() and (run / "best.pt").is_file()
    # Run again: the previous demo run is replaced, a folder that is not a run is refused.
    assert subprocess.run(args, cwd=REPO, capture_output=True, timeout=300).returncode == 0
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    args[4] = str(other)
    res = subprocess.run(args, cwd=REPO, capture_output=True, timeout=300)
    assert res.returncode != 0 and b"not a crfold run" in res.stderr
    assert (other / "notes.txt").read_text() == "keep me"
