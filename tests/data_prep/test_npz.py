"""data_prep.npz: point-cloud arrays -> HDF5 layout; untrusted archives are checked first."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from crfold.data import HDF5PointClouds
from data_prep.npz import convert_npz, load_npz_splits
from data_prep.sampling import apply_axis

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
MODELNET_NPZ = SHARED / "modelnet40_1024" / "modelnet40_1024_f16.npz"


def _unit(x: np.ndarray) -> np.ndarray:
    """Reference normalization of (N, P, 3): centre on the mean, farthest point at norm 1."""
    x = x - x.mean(axis=1, keepdims=True)
    return x / np.linalg.norm(x, axis=-1).max(axis=1)[:, None, None]


def _npz(path: Path, n=(6, 2, 3), p: int = 32, seed: int = 0, **extra) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {"classes": np.array(["bed", "chair", "desk"])}
    for split, count in zip(("train", "val", "test"), n):
        arrays[f"{split}_points"] = (rng.normal(size=(count, p, 3)) * 2 + 1).astype(np.float16)
        arrays[f"{split}_labels"] = rng.integers(0, 3, size=count).astype(np.uint8)
    arrays |= extra
    np.savez_compressed(path, **arrays)
    return arrays


def test_convert_keeps_points_with_axis_and_normalization(tmp_path):
    arrays = _npz(tmp_path / "toy.npz")
    result = convert_npz(tmp_path / "toy.npz", tmp_path / "o", axis="z-up-to-y-up", progress=False)
    assert result.name == "toy" and result.exit_status == 0 and result.converted == 11
    for split in ("train", "val", "test"):
        ds = HDF5PointClouds(tmp_path / "o", split=split)
        want = apply_axis(_unit(arrays[f"{split}_points"].astype(np.float64)), "z-up-to-y-up")
        np.testing.assert_allclose(ds.points.numpy(), want, rtol=0, atol=1e-6)
        assert ds.labels.tolist() == arrays[f"{split}_labels"].tolist()
        assert ds.classes == ["bed", "chair", "desk"]
        assert ds.sample_files == [f"toy.npz:{split}/{i}" for i in range(len(ds))]
    again = convert_npz(tmp_path / "toy.npz", tmp_path / "o", axis="z-up-to-y-up", progress=False)
    assert again.computed == 0  # finished shards are kept


def test_fps_subsample_is_a_seeded_subset(tmp_path):
    arrays = _npz(tmp_path / "toy.npz", n=(4, 0, 1))
    kw = {"num_points": 8, "normalize": False, "progress": False}
    convert_npz(tmp_path / "toy.npz", tmp_path / "a", **kw)
    ds = HDF5PointClouds(tmp_path / "a", split="train")
    assert ds.points.shape == (4, 8, 3)
    for i in range(4):
        src = arrays["train_points"][i].astype(np.float32)  # (32, 3)
        rows = [np.flatnonzero((src == q).all(axis=1)) for q in ds.points[i].numpy()]
        assert all(len(r) >= 1 for r in rows) and len({int(r[0]) for r in rows}) == 8
    convert_npz(tmp_path / "toy.npz", tmp_path / "b", **kw)
    convert_npz(tmp_path / "toy.npz", tmp_path / "c", seed=1, **kw)
    b, c = HDF5PointClouds(tmp_path / "b", "train"), HDF5PointClouds(tmp_path / "c", "train")
    assert np.array_equal(ds.points, b.points) and not np.array_equal(ds.points, c.points)
    with pytest.raises(FileNotFoundError):  # empty val split: no shard written
        HDF5PointClouds(tmp_path / "a", split="val")


def test_non_finite_clouds_are_skipped_and_reported(tmp_path):
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(4, 16, 3)).astype(np.float32)
    pts[2, 5, 1] = np.nan
    np.savez(tmp_path / "n.npz", train_points=pts, train_labels=np.array([0, 1, 0, 1]))
    result = convert_npz(tmp_path / "n.npz", tmp_path / "o", progress=False)
    assert result.exit_status == 3 and result.converted == 3
    assert result.skipped == [{"path": "n.npz:train/2", "reason": "non-finite points"}]
    assert json.loads((tmp_path / "o" / "report.json").read_text())["skipped"] == result.skipped
    ds = HDF5PointClouds(tmp_path / "o", "train")
    assert ds.classes == ["0", "1"] and ds.sample_files[2] == "n.npz:train/3"


def _zip_with(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def test_untrusted_archives_are_checked_before_loading(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10**9, 1024, 3)}
    )
    absurd = _zip_with(
        tmp_path / "absurd.npz", {"train_points.npy": header.getvalue() + b"\0" * 64}
    )
    with pytest.raises(ValueError, match="claims shape"):
        load_npz_splits(absurd)
    objects = tmp_path / "objects.npz"
    np.savez(objects, train_points=np.array([object()] * 3, dtype=object), train_labels=np.zeros(3))
    with pytest.raises(ValueError, match="Python objects"):
        load_npz_splits(objects)
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_npz_splits(tmp_path / "text.npz")


@pytest.mark.parametrize(
    ("arrays", "words"),
    [
        ({"points": np.zeros((2, 4, 3))}, "no <split>_points"),
        ({"train_points": np.zeros((2, 4, 3))}, "no array 'train_labels'"),
        ({"train_points": np.zeros((2, 4, 2)), "train_labels": np.zeros(2, int)}, r"\(N, P, 3\)"),
        ({"train_points": np.zeros((2, 4, 3)), "train_labels": np.zeros(3, int)}, r"\(2,\) int"),
        ({"train_points": np.zeros((2, 4, 3)), "train_labels": np.zeros(2)}, r"\(2,\) int"),
        (
            {"train_points": np.zeros((2, 4, 3)), "train_labels": np.array([0, 2]),
             "classes": np.array(["a", "b"])},
            r"outside \[0, 2\)",
        ),
    ],
)  # fmt: skip
def test_bad_arrays_are_rejected(tmp_path, arrays, words):
    path = _zip_with(tmp_path / "x.npz", {f"{k}.npy": _npy(v) for k, v in arrays.items()})
    with pytest.raises(ValueError, match=words):
        load_npz_splits(path)


def test_bad_arguments(tmp_path):
    _npz(tmp_path / "toy.npz")
    with pytest.raises(ValueError, match=r"num_points must be in \[1, 32\]"):
        convert_npz(tmp_path / "toy.npz", tmp_path / "o", num_points=33, progress=False)
    with pytest.raises(ValueError, match="axis"):
        convert_npz(tmp_path / "toy.npz", tmp_path / "o", axis="up", progress=False)
    with pytest.raises(ValueError, match="name"):
        convert_npz(tmp_path / "toy.npz", tmp_path / "o", name="x_val", progress=False)


def test_shared_modelnet40_npz_header():
    if not MODELNET_NPZ.is_file():
        pytest.skip(f"shared ModelNet40 sample absent: {MODELNET_NPZ}")
    splits, classes = load_npz_splits(MODELNET_NPZ)
    assert len(classes) == 40 and classes[0] == "airplane"
    assert splits["train"][0].shape == (9843, 1024, 3) and splits["test"][0].shape == (
        2468,
        1024,
        3,
    )


@pytest.mark.slow  # about 12 s: 12,311 clouds, gzip
def test_shared_modelnet40_npz_converts(tmp_path):
    if not MODELNET_NPZ.is_file():
        pytest.skip(f"shared ModelNet40 sample absent: {MODELNET_NPZ}")
    result = convert_npz(
        MODELNET_NPZ, tmp_path, name="modelnet40_1024", axis="z-up-to-y-up", progress=False
    )
    assert result.exit_status == 0 and result.splits["train"]["samples"] == 9843
    ds = HDF5PointClouds(tmp_path, split="test")
    assert ds.points.shape == (2468, 1024, 3) and len(ds.classes) == 40
    raw = np.load(MODELNET_NPZ)["test_points"][:5].astype(np.float64)
    want = apply_axis(_unit(raw), "z-up-to-y-up")
    np.testing.assert_allclose(ds.points[:5].numpy(), want, atol=1e-6)
