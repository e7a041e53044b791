"""data_prep.output: shards and sidecars, manifest checks, overwrite, stale shards, locking."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from data_prep import output


def _points(n: int, p: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, p, 3)).astype(np.float32)


def test_write_shard_layout_and_completeness(tmp_path):
    path = tmp_path / "demo_train0.h5"
    pts, labels = _points(3), np.array([0, 1, 1])
    output.write_shard(path, pts, labels, ["a", "b", "b"], ["a/1.obj", "b/2.obj", "b/3.obj"])
    with h5py.File(path) as f:
        assert f["data"].dtype == np.float32 and f["data"].compression == "gzip"
        np.testing.assert_array_equal(f["data"][:], pts)
        assert f["label"].dtype == np.int64 and f["label"][:].tolist() == [[0], [1], [1]]
    assert json.loads((tmp_path / "demo_train0_id2name.json").read_text()) == ["a", "b", "b"]
    assert json.loads((tmp_path / "demo_train0_id2file.json").read_text())[2] == "b/3.obj"
    names, files = ["a", "b", "b"], ["a/1.obj", "b/2.obj", "b/3.obj"]
    assert output.shard_complete(path, names, files)
    assert not output.shard_complete(path, names, files[:2])
    assert not output.shard_complete(path, ["a", "a", "b"], files)
    (tmp_path / "demo_train0_id2file.json").unlink()
    assert not output.shard_complete(path, names, files)
    assert not any(".tmp-" in p.name for p in tmp_path.iterdir())


def test_write_shard_rejects_bad_arrays(tmp_path):
    with pytest.raises(ValueError, match="float32"):
        output.write_shard(
            tmp_path / "x.h5", _points(2).astype(np.float64), np.zeros(2), "ab", "ab"
        )
    with pytest.raises(ValueError, match="N=2"):
        output.write_shard(tmp_path / "x.h5", _points(2), np.zeros(3), "ab", "ab")


def test_write_split_shards_skips_finished_and_removes_stale(tmp_path):
    pts = _points(5)
    files, labels = [f"f{i}" for i in range(5)], [0, 1, 0, 1, 0]
    calls = []

    def load(start, stop):
        calls.append((start, stop))
        return pts[start:stop]

    shards = output.write_split(tmp_path, "d", "test", files, labels, ["x", "y"], load, 2)
    assert shards == ["d_test0.h5", "d_test1.h5", "d_test2.h5"] and calls == [
        (0, 2),
        (2, 4),
        (4, 5),
    ]
    calls.clear()
    output.write_split(tmp_path, "d", "test", files, labels, ["x", "y"], load, 2)
    assert calls == []  # all finished
    output.write_split(tmp_path, "d", "test", files[:3], labels[:3], ["x", "y"], load, 2)
    assert calls == [(2, 3)]
    assert sorted(p.name for p in tmp_path.glob("*.h5")) == ["d_test0.h5", "d_test1.h5"]
    assert not (tmp_path / "d_test2_id2file.json").exists()


def test_manifest_refuses_other_parameters_unless_overwrite(tmp_path):
    params = {"name": "old", "num_points": 16}
    output.prepare_output(tmp_path, params, overwrite=False)
    output.prepare_output(tmp_path, params, overwrite=False)  # same parameters: resume
    output.write_shard(tmp_path / "old_train0.h5", _points(1), np.zeros(1), ["a"], ["f"])
    (tmp_path / "keep_me.h5").write_bytes(b"someone else's file")
    (tmp_path / output.CACHE).mkdir()
    with pytest.raises(output.ManifestMismatch, match=r"num_points: 16 -> 32.*--overwrite"):
        output.prepare_output(tmp_path, {"name": "old", "num_points": 32}, overwrite=False)
    assert (tmp_path / "old_train0.h5").exists()
    output.prepare_output(tmp_path, {"name": "new", "num_points": 32}, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep_me.h5", "manifest.json"]
    assert json.loads((tmp_path / "manifest.json").read_text())["name"] == "new"


def test_foreign_shards_without_manifest_refused(tmp_path):
    (tmp_path / "x_train0.h5").write_bytes(b"")
    with pytest.raises(output.ManifestMismatch, match="no manifest.json"):
        output.prepare_output(tmp_path, {"name": "x"}, overwrite=False)


def test_temporaries_of_a_killed_run_are_removed(tmp_path):
    (tmp_path / "d_train0.h5.tmp-123").write_bytes(b"partial")
    output.prepare_output(tmp_path, {"name": "d"}, overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_names_and_shape_names(tmp_path):
    assert output.check_name("modelnet40_1024") == "modelnet40_1024"
    for bad in ("", "a b", "a/b", "my_test", "interval", "Train"):
        with pytest.raises(ValueError, match="name"):
            output.check_name(bad)
    output.write_shape_names(tmp_path, ["airplane", "remote control"])
    assert (tmp_path / "shape_names.txt").read_text() == "airplane\nremote control\n"
    with pytest.raises(ValueError, match="class names"):
        output.write_shape_names(tmp_path, ["a\nb"])


def test_lock_refuses_a_second_writer(tmp_path):
    first = output.lock_output(tmp_path)
    try:
        with pytest.raises(RuntimeError, match="another data_prep run"):
            output.lock_output(tmp_path)
    finally:
        first.close()
    output.lock_output(tmp_path).close()
