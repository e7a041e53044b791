"""crfold.io: atomic writes, weights_only loading, RNG states."""

from __future__ import annotations

import json
import pathlib
import random
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from crfold.io import (
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)


def _leftovers(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_round_trip_of_tensors_and_plain_containers(tmp_path):
    state = {
        "model": {"w": torch.randn(3, 4), "b": torch.arange(4)},
        "config": {"lr": 1e-4, "mode": "cr", "aug_scale": [0.5, 2.0], "grad_clip": None},
        "epoch": 3,
        "ok": True,
        "pair": (1, "a"),
    }
    path = save_checkpoint(tmp_path / "sub" / "last.pt", state)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert torch.equal(loaded["model"]["b"], state["model"]["b"])
    assert loaded["config"] == state["config"] and loaded["epoch"] == 3 and loaded["ok"] is True
    assert tuple(loaded["pair"]) == (1, "a")
    assert _leftovers(path.parent) == []


def test_failed_save_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": torch.tensor(1)})
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - torch.save cannot pickle a lambda
        save_checkpoint(path, {"step": torch.tensor(2), "bad": lambda: None})
    assert path.read_bytes() == before
    assert int(load_checkpoint(path)["step"]) == 1
    assert _leftovers(tmp_path) == []


def test_atomic_write_interrupted_midway(tmp_path):
    path = tmp_path / "report.json"
    atomic_write_text(path, "old")

    def write_then_fail(f):
        f.write(b"half a fi")
        raise KeyboardInterrupt  # e.g. a kill while writing

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, write_then_fail)
    assert path.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_atomic_write_json(tmp_path):
    path = atomic_write_json(tmp_path / "a" / "probe.json", {"acc": 0.5, "classes": ["x", "y"]})
    assert json.loads(path.read_text()) == {"acc": 0.5, "classes": ["x", "y"]}
    with pytest.raises(ValueError, match="JSON"):
        atomic_write_json(path, {"bad": object()})
    assert json.loads(path.read_text())["acc"] == 0.5


class _Evil:
    """Unpickling this would touch a file: a checkpoint must never get to run it."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@dataclass
class _Meta:
    lr: float = 1e-4


def test_pickled_objects_are_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "payload": _Evil(marker)}, path)
    with pytest.raises(ValueError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()
    torch.save({"config": _Meta()}, tmp_path / "meta.pt")
    with pytest.raises(ValueError, match="weights_only"):
        load_checkpoint(tmp_path / "meta.pt")


def test_bad_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="garbage.pt"):
        load_checkpoint(tmp_path / "garbage.pt")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="dict"):
        load_checkpoint(tmp_path / "list.pt")
    with pytest.raises(ValueError, match="state"):
        save_checkpoint(tmp_path / "x.pt", [1, 2])


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)  # noqa: NPY002 - the legacy global state is what is saved
    save_checkpoint(tmp_path / "rng.pt", {"rng": get_rng_state()})

    def draw():
        return (torch.rand(3), random.random(), random.gauss(0, 1), np.random.rand(2))  # noqa: NPY002

    first = draw()
    draw()
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    again = draw()
    assert torch.equal(first[0], again[0])
    assert first[1:3] == again[1:3]
    assert np.array_equal(first[3], again[3])


def test_the_old_module_path_re_exports_with_a_deprecation_warning():
    import importlib
    import sys

    sys.modules.pop("crfold.checkpoint", None)
    with pytest.warns(
        DeprecationWarning, match="crfold.checkpoint is deprecated: import from crfold.io"
    ):
        old = importlib.import_module("crfold.checkpoint")

    assert old.load_checkpoint is load_checkpoint and old.save_checkpoint is save_checkpoint


def test_check_writable_names_the_file_the_caller_would_write(tmp_path, monkeypatch):
    from crfold.io import WriteError, check_writable

    check_writable(tmp_path / "new", "eval.json")  # made if absent, and writable
    assert (tmp_path / "new").is_dir() and list((tmp_path / "new").iterdir()) == []

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr("tempfile.mkstemp", read_only)
    with pytest.raises(
        WriteError, match=r"could not write .*run/eval\.json: Read-only file system"
    ):
        check_writable(tmp_path / "run", "eval.json")


def test_a_write_error_pickles_and_stays_an_oserror():
    import errno
    import pickle

    from crfold.io import WriteError

    exc = WriteError.from_os_error("out/x.h5", OSError(errno.ENOSPC, "No space left on device"))
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is WriteError and isinstance(again, OSError) and str(again) == str(exc)
    assert again.errno == errno.ENOSPC and again.filename == "out/x.h5"
