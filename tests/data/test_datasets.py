"""crfold.data.datasets: the published HDF5 layouts (written here by h5py), npz, bad data."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from crfold.data import (
    MODELNET10_CLASSES,
    HDF5PointClouds,
    ModelNet40NPZ,
    SyntheticShapes,
    open_dataset,
)

h5py = pytest.importorskip("h5py")

SHARED_NPZ = (
    Path(__file__).resolve().parents[2]
    / ".."
    / "shared"
    / "data"
    / "modelnet40_1024"
    / "modelnet40_1024_f16.npz"
)
P = 32  # points per stored cloud
SHAPENET_NAMES = ["airplane", "bag", "chair"]


def clouds(n: int, offset: float, p: int = P, seed: int = 0) -> np.ndarray:
    """(n, p, 3) float32 distinct random points; cloud i has x[0, 0] = offset + i (traceable)."""
    x = np.random.default_rng(seed).standard_normal((n, p, 3)).astype(np.float32)
    x[:, 0, 0] = offset + np.arange(n)
    return x


def write_shard(path: Path, data, labels, label_dtype=np.int64, label_2d=True, **extra) -> None:
    with h5py.File(path, "w") as f:
        if data is not None:
            f.create_dataset("data", data=data)
        if labels is not None:
            labels = np.asarray(labels).astype(label_dtype)
            f.create_dataset("label", data=labels.reshape(-1, 1) if label_2d else labels)
        for key, value in extra.items():
            f.create_dataset(key, data=value)


def write_json(path: Path, items) -> None:
    path.write_text(json.dumps(items))


@pytest.fixture
def shapenet(tmp_path) -> tuple[Path, dict]:
    """shapenetcorev2_hdf5_2048 layout: train0..train10 (natural order matters), val0, test0/1."""
    root = tmp_path / "shapenetcorev2_hdf5_2048"
    root.mkdir()
    rng = np.random.default_rng(1)
    truth = {}
    shards = [f"train{i}" for i in range(11)] + ["val0", "test0", "test1"]
    for k, stem in enumerate(shards):
        n = 2 if stem.startswith("train") else 3
        data = clouds(n, 100 * k, seed=k)
        labels = rng.integers(0, 3, n) if stem != "test1" else np.zeros(n, int)  # test: no 1/2
        if stem == "train0":
            labels[:2] = [1, 2]  # every class appears in train
        write_shard(root / f"{stem}.h5", data, labels)
        write_json(root / f"{stem}_id2name.json", [SHAPENET_NAMES[c] for c in labels])
        write_json(root / f"{stem}_id2file.json", [f"{stem}/model_{i}.ply" for i in range(n)])
        truth[stem] = (data, labels)
    return root, truth


@pytest.fixture
def modelnet(tmp_path) -> tuple[Path, dict]:
    """modelnet40_ply_hdf5_2048 layout: ply_data_train0/1.h5, ply_data_test0.h5, uint8 labels."""
    root = tmp_path / "modelnet40_ply_hdf5_2048"
    root.mkdir()
    names = [f"shape{i}" for i in range(40)]
    (root / "shape_names.txt").write_text("\n".join(names) + "\n")
    truth = {}
    for k, stem in enumerate(["ply_data_train0", "ply_data_train1", "ply_data_test0"]):
        data, labels = clouds(4, 10 * k, seed=k), np.array([0, 39, 7, 7]) + k % 2
        labels[1] = 39
        normal = np.zeros_like(data)
        write_shard(root / f"{stem}.h5", data, labels, np.uint8, normal=normal, faceId=labels)
        split, index = stem.removeprefix("ply_data_")[:-1], stem[-1]
        write_json(root / f"ply_data_{split}_{index}_id2file.json", [f"f{i}.ply" for i in range(4)])
        truth[stem] = (data, labels)
    (root / "train_files.txt").write_text("ply_data_train0.h5\nply_data_train1.h5\n")
    return root, truth


def test_shapenet_layout_values_order_and_names(shapenet):
    root, truth = shapenet
    ds = HDF5PointClouds(root, "train")
    order = [f"train{i}" for i in range(11)]  # natural order: train2 before train10
    assert [p.name for p in ds.files] == [f"{s}.h5" for s in order]
    np.testing.assert_array_equal(ds.points.numpy(), np.concatenate([truth[s][0] for s in order]))
    np.testing.assert_array_equal(ds.labels.numpy(), np.concatenate([truth[s][1] for s in order]))
    assert ds.points.dtype == torch.float32 and ds.labels.dtype == torch.int64
    assert ds.classes == SHAPENET_NAMES and ds.num_classes == 3
    assert ds.layout == "shapenetcorev2_hdf5_2048" and ds.up_axis == "y"
    assert ds.sample_files[:2] == ["train0/model_0.ply", "train0/model_1.ply"]
    points, label = ds[3]
    assert points.shape == (P, 3) and isinstance(label, int)
    np.testing.assert_array_equal(points.numpy(), truth["train1"][0][1])
    points[:] = 0  # a copy: the dataset is untouched
    assert ds.points[3].abs().sum() > 0


def test_splits_val_trainval_test_share_classes(shapenet):
    root, truth = shapenet
    assert len(HDF5PointClouds(root, "val")) == 3
    assert len(HDF5PointClouds(root, "trainval")) == 22 + 3
    test = HDF5PointClouds(root, "test")
    assert len(test) == 6 and test.classes == SHAPENET_NAMES  # names from all splits' sidecars


def test_modelnet_layout(modelnet):
    root, truth = modelnet
    ds = HDF5PointClouds(root, "train")
    assert ds.layout == "modelnet40_ply_hdf5_2048" and ds.num_classes == 40
    assert ds.classes[39] == "shape39"
    stems = ["ply_data_train0", "ply_data_train1"]
    np.testing.assert_array_equal(ds.labels.numpy(), np.concatenate([truth[s][1] for s in stems]))
    np.testing.assert_array_equal(ds.points.numpy(), np.concatenate([truth[s][0] for s in stems]))
    assert ds.sample_files == [f"f{i}.ply" for i in range(4)] * 2
    assert len(HDF5PointClouds(root, "test")) == 4
    with pytest.raises(FileNotFoundError, match=r"'trainval'.*'\*val\*\.h5'"):
        HDF5PointClouds(root, "trainval")


@pytest.mark.parametrize("label_dtype", [np.uint8, np.int32, np.int64])
@pytest.mark.parametrize("label_2d", [True, False])
@pytest.mark.parametrize("data_dtype", [np.float16, np.float32, np.float64])
def test_dtypes_and_label_shapes_fallback_names(tmp_path, label_dtype, label_2d, data_dtype):
    data = clouds(3, 0).astype(data_dtype)
    write_shard(tmp_path / "train0.h5", data, [0, 4, 2], label_dtype, label_2d)
    ds = HDF5PointClouds(tmp_path, "train")
    np.testing.assert_array_equal(ds.points.numpy(), data.astype(np.float32))
    assert ds.labels.tolist() == [0, 4, 2] and ds.labels.dtype == torch.int64
    assert ds.classes == [f"class_{i}" for i in range(5)] and ds.sample_files is None


def test_subsampling_seeded_without_replacement(shapenet):
    root, _ = shapenet
    full = HDF5PointClouds(root, "train")
    a = HDF5PointClouds(root, "train", num_points=10, seed=3)
    b = HDF5PointClouds(root, "train", num_points=10, seed=3)
    c = HDF5PointClouds(root, "train", num_points=10, seed=4)
    for i in (0, 5):
        pa, la = a[i]
        assert pa.shape == (10, 3) and la == full[i][1]
        assert torch.equal(pa, a[i][0]) and torch.equal(pa, b[i][0])  # per (seed, index)
        assert not torch.equal(pa, c[i][0])
        assert len(torch.unique(pa, dim=0)) == 10  # no repeated points
        match = (pa[:, None] == full.points[i][None]).all(-1)  # (10, P)
        assert bool(match.any(1).all())  # a subset of the stored cloud
    assert not torch.equal(a[0][0], a[1][0][: len(a[0][0])])
    assert torch.equal(HDF5PointClouds(root, "train", num_points=P)[2][0], full.points[2])
    with pytest.raises(ValueError, match="num_points"):
        HDF5PointClouds(root, "train", num_points=P + 1)


def test_normalize_and_dataloader(shapenet):
    root, _ = shapenet
    ds = HDF5PointClouds(root, "val", num_points=16, normalize=True)
    assert ds.points.mean(1).abs().max() < 1e-5
    assert torch.allclose(ds.points.norm(dim=-1).amax(1), torch.ones(len(ds)))
    x, y = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert x.shape == (3, 16, 3) and x.dtype == torch.float32 and y.dtype == torch.int64


# ----------------------------------------------------------------- bad data
def test_nonfinite_points_name_file_and_sample(tmp_path):
    for value in (np.nan, np.inf):
        data = clouds(5, 0)
        data[3, 7, 1] = value
        write_shard(tmp_path / "train1.h5", data, np.zeros(5))
        with pytest.raises(ValueError, match=r"train1\.h5.*sample 3.*non-finite"):
            HDF5PointClouds(tmp_path, "train")


@pytest.mark.parametrize(
    "data, labels, pattern",
    [
        (np.zeros((4, 8), np.float32), np.zeros(4), r"key 'data'.*shape \(4, 8\)"),
        (np.zeros((4, 8, 2), np.float32), np.zeros(4), r"key 'data'.*expected \(N, P, 3\)"),
        (np.zeros((4, 8, 3), np.int32), np.zeros(4), r"key 'data'.*dtype int32"),
        (np.zeros((0, 8, 3), np.float32), np.zeros(0), r"key 'data'.*no samples"),
        (np.zeros((4, 8, 3), np.float32), np.zeros(3), r"key 'label'.*length mismatch"),
        (np.zeros((4, 8, 3), np.float32), np.array([0, 1, -2, 0]), r"sample 2.*negative"),
        (None, np.zeros(4), r"missing dataset key 'data'"),
        (np.zeros((4, 8, 3), np.float32), None, r"missing dataset key 'label'"),
    ],
)
def test_malformed_shards_name_the_file(tmp_path, data, labels, pattern):
    write_shard(tmp_path / "test0.h5", data, labels)
    with pytest.raises(ValueError, match=r"test0\.h5.*" + pattern):
        HDF5PointClouds(tmp_path, "test")


def test_float_labels_rejected(tmp_path):
    write_shard(tmp_path / "train0.h5", clouds(2, 0), [0.0, 1.5], np.float32)
    with pytest.raises(ValueError, match=r"train0\.h5.*dtype float32"):
        HDF5PointClouds(tmp_path)


def test_empty_and_corrupt_files(tmp_path):
    (tmp_path / "train0.h5").write_bytes(b"")
    with pytest.raises(ValueError, match=r"train0\.h5: empty file"):
        HDF5PointClouds(tmp_path)
    (tmp_path / "train0.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r"train0\.h5: not a readable HDF5 file"):
        HDF5PointClouds(tmp_path)


def test_truncated_file(tmp_path):
    write_shard(tmp_path / "train0.h5", clouds(64, 0, p=256), np.zeros(64))
    raw = (tmp_path / "train0.h5").read_bytes()
    (tmp_path / "train0.h5").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"train0\.h5"):
        HDF5PointClouds(tmp_path)


def test_no_shards_names_root_split_and_glob(tmp_path):
    write_shard(tmp_path / "train0.h5", clouds(2, 0), [0, 1])
    with pytest.raises(FileNotFoundError) as err:
        HDF5PointClouds(tmp_path, "test")
    assert str(tmp_path) in str(err.value) and "'test'" in str(err.value)
    assert "*test*.h5" in str(err.value)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        HDF5PointClouds(tmp_path / "missing")
    with pytest.raises(ValueError, match="split"):
        HDF5PointClouds(tmp_path, "validation")


def test_sizes_checked_before_allocating(tmp_path):
    with h5py.File(tmp_path / "train0.h5", "w") as f:  # claims 10^12 points, stores nothing
        f.create_dataset("data", shape=(10**8, 10**4, 3), dtype="f4", chunks=(1, 16, 3))
        f.create_dataset("label", shape=(10**8, 1), dtype="i8", chunks=(1024, 1))
    assert (tmp_path / "train0.h5").stat().st_size < 10**7
    with pytest.raises(ValueError, match=r"train0\.h5.*exceeds max_bytes"):
        HDF5PointClouds(tmp_path)
    write_shard(tmp_path / "train0.h5", clouds(4, 0), np.zeros(4))
    with pytest.raises(ValueError, match="exceeds max_bytes"):
        HDF5PointClouds(tmp_path, max_bytes=4 * P * 3 * 4 - 1)


def test_inconsistent_class_files(shapenet, modelnet):
    root, _ = shapenet
    write_json(root / "val0_id2name.json", ["zebra"] * 3)  # clashes with the other shards
    with pytest.raises(ValueError, match=r"val0_id2name\.json: sample \d names label"):
        HDF5PointClouds(root, "train")
    write_json(root / "val0_id2name.json", ["bag"])
    with pytest.raises(ValueError, match=r"val0_id2name\.json: 1 entries"):
        HDF5PointClouds(root, "train")
    root, _ = modelnet
    (root / "shape_names.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match=r"ply_data_\w+\.h5: sample 1 has label 39.*2 classes"):
        HDF5PointClouds(root, "train")


def test_mixed_point_counts(tmp_path):
    write_shard(tmp_path / "train0.h5", clouds(2, 0), [0, 1])
    write_shard(tmp_path / "train1.h5", clouds(2, 0, p=16), [0, 1])
    with pytest.raises(ValueError, match=r"train1\.h5: 16 points per sample"):
        HDF5PointClouds(tmp_path)


# ----------------------------------------------------------------- npz
def write_npz(path: Path, n_train=6, n_test=4, classes=("a", "b", "c"), **override) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "train_points": rng.uniform(-1, 1, (n_train, P, 3)).astype(np.float16),
        "train_labels": (np.arange(n_train) % len(classes)).astype(np.uint8),
        "test_points": rng.uniform(-1, 1, (n_test, P, 3)).astype(np.float16),
        "test_labels": (np.arange(n_test) % len(classes)).astype(np.uint8),
        "classes": np.array(classes),
    }
    arrays.update(override)
    np.savez_compressed(path, **{k: v for k, v in arrays.items() if v is not None})
    return arrays


def test_npz_reader_small_file(tmp_path):
    arrays = write_npz(tmp_path / "m.npz")
    ds = ModelNet40NPZ(tmp_path / "m.npz", "train")
    assert ds.points.dtype == torch.float32 and ds.up_axis == "z" and ds.classes == ["a", "b", "c"]
    np.testing.assert_array_equal(ds.points.numpy(), arrays["train_points"].astype(np.float32))
    assert ds.labels.tolist() == [0, 1, 2, 0, 1, 2] and len(ModelNet40NPZ(ds.files[0], "test")) == 4
    y_up = ModelNet40NPZ(tmp_path / "m.npz", "train", to_up="y")
    x, y, z = ds.points.unbind(-1)
    assert torch.equal(y_up.points, torch.stack([x, z, -y], -1)) and y_up.up_axis == "y"
    back = ModelNet40NPZ(tmp_path / "m.npz", "train", up="y", to_up="z")  # the inverse map
    assert torch.equal(back.points, torch.stack([x, -z, y], -1))
    sub = ModelNet40NPZ(tmp_path / "m.npz", "train", classes_subset=["c", "a"], num_points=8)
    assert sub.classes == ["c", "a"] and sub.labels.tolist() == [1, 0, 1, 0]
    assert torch.equal(sub.points[0], ds.points[0]) and sub[0][0].shape == (8, 3)
    with pytest.raises(ValueError, match="classes_subset"):
        ModelNet40NPZ(tmp_path / "m.npz", classes_subset=["a", "zebra"])


def test_npz_bad_data(tmp_path):
    pts = np.zeros((5, P, 3), np.float16)
    pts[4, 0, 2] = np.nan
    write_npz(tmp_path / "nan.npz", n_train=5, train_points=pts)
    with pytest.raises(ValueError, match=r"nan\.npz: sample 4 of 'train_points'.*non-finite"):
        ModelNet40NPZ(tmp_path / "nan.npz")
    write_npz(tmp_path / "nolab.npz", test_labels=None)
    with pytest.raises(ValueError, match=r"nolab\.npz: missing key 'test_labels'"):
        ModelNet40NPZ(tmp_path / "nolab.npz", "test")
    with pytest.raises(ValueError, match=r"missing key 'val_points'"):
        ModelNet40NPZ(tmp_path / "nolab.npz", "val")
    write_npz(tmp_path / "len.npz", train_labels=np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match=r"len\.npz key 'train_labels'.*length mismatch"):
        ModelNet40NPZ(tmp_path / "len.npz")
    write_npz(tmp_path / "rank.npz", train_points=np.zeros((6, P), np.float32))
    with pytest.raises(ValueError, match=r"rank\.npz key 'train_points'.*expected \(N, P, 3\)"):
        ModelNet40NPZ(tmp_path / "rank.npz")
    write_npz(tmp_path / "big.npz", train_labels=np.array([0, 1, 2, 3, 0, 1], np.uint8))
    with pytest.raises(ValueError, match=r"big\.npz: sample 3 has label 3, 3 classes"):
        ModelNet40NPZ(tmp_path / "big.npz")
    write_npz(tmp_path / "cls.npz", classes=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"cls\.npz: key 'classes'"):
        ModelNet40NPZ(tmp_path / "cls.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match=r"junk\.npz: not a readable npz"):
        ModelNet40NPZ(tmp_path / "junk.npz")


def test_npz_header_checked_before_allocating(tmp_path):
    buf = io.BytesIO()  # a header claiming 10^12 float16 points, followed by no data
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f2", "fortran_order": False, "shape": (10**9, 1000, 3)}
    )
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as zf:
        zf.writestr("train_points.npy", buf.getvalue())
        zf.writestr("train_labels.npy", buf.getvalue())
    with pytest.raises(ValueError, match=r"huge\.npz key 'train_points'.*exceeds max_bytes"):
        ModelNet40NPZ(tmp_path / "huge.npz")


@pytest.fixture(scope="module")
def shared_npz() -> Path:
    if not SHARED_NPZ.is_file():
        pytest.skip(f"shared ModelNet40 sample absent ({SHARED_NPZ})")
    return SHARED_NPZ


def test_shared_modelnet40_sample(shared_npz):
    train = ModelNet40NPZ(shared_npz, "train", num_points=512)
    assert len(train) == 9843 and train.num_classes == 40 and train.classes[0] == "airplane"
    assert train.labels.bincount().min() > 0 and train[0][0].shape == (512, 3)
    test = ModelNet40NPZ(shared_npz, "test")
    test_y = ModelNet40NPZ(shared_npz, "test", to_up="y")
    assert len(test) == 2468 and test_y.up_axis == "y"
    z_extent = test.points[..., 2].amax(1) - test.points[..., 2].amin(1)  # (N,)
    y_extent = test_y.points[..., 1].amax(1) - test_y.points[..., 1].amin(1)
    assert torch.equal(z_extent, y_extent)
    assert torch.equal(test_y.points[..., 2], -test.points[..., 1])
    ten = ModelNet40NPZ(shared_npz, "test", classes_subset=MODELNET10_CLASSES)
    assert len(ten) == 908 and ten.classes == list(MODELNET10_CLASSES)  # ModelNet10's test split
    assert ten.labels.bincount().tolist() == [50, 100, 100, 86, 86, 100, 86, 100, 100, 100]


# ----------------------------------------------------------------- factory
def test_open_dataset(tmp_path, shapenet):
    root, _ = shapenet
    assert isinstance(open_dataset(str(root), "val", num_points=8), HDF5PointClouds)
    write_npz(tmp_path / "m.npz")
    ds = open_dataset(tmp_path / "m.npz", "test", 16, seed=1, to_up="y")
    assert isinstance(ds, ModelNet40NPZ) and ds.up_axis == "y" and ds[0][0].shape == (16, 3)
    syn = open_dataset("synthetic", "test", num_points=64, num_shapes=20)
    assert isinstance(syn, SyntheticShapes) and syn.points.shape == (20, 64, 3)
    with pytest.raises(FileNotFoundError, match="spec"):
        open_dataset(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="spec"):
        open_dataset(tmp_path / "notes.txt")
