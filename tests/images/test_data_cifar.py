"""Tests for crfold_images.data.cifar: python pickle batches (restricted unpickler), image trees."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crfold_images.data import load_cifar10, load_dataset, read_image_tree, restricted_loads

# Real samples of the data sets: under $CRFOLD_DATA, else the checkout's sibling shared/data.
SHARED = Path(
    os.environ.get("CRFOLD_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data"
)


def _batch(n: int, seed: int) -> tuple[dict, np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    batch = {b"batch_label": b"training batch", b"labels": labels, b"data": data,
             b"filenames": [f"img_{i}.png".encode() for i in range(n)]}  # fmt: skip
    return batch, data, labels


def write_cifar(root: Path, n: int = 5) -> dict[str, tuple[np.ndarray, list[int]]]:
    """cifar-10-batches-py/{data_batch_1..5, test_batch}, pickled with protocol 2."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    out = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batch, data, labels = _batch(n, i)
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        out[name] = (data, labels)
    return out


def test_pickle_batches_folder_and_tar(tmp_path):
    ref = write_cifar(tmp_path)
    x, y = load_cifar10(tmp_path, "train")
    assert x.shape == (25, 3, 32, 32) and x.dtype == np.uint8
    assert np.array_equal(x[:5].reshape(5, -1), ref["data_batch_1"][0])
    assert y.tolist()[5:10] == ref["data_batch_2"][1]
    # Red plane first: pixel (0, 0) of channel 0 is byte 0, of channel 1 byte 1024.
    assert x[0, 1, 0, 0] == ref["data_batch_1"][0][0, 1024]
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    xt, yt = load_cifar10(tmp_path / "cifar-10-python.tar.gz", "test")
    assert (
        np.array_equal(xt.reshape(5, -1), ref["test_batch"][0])
        and yt.tolist() == ref["test_batch"][1]
    )
    s = load_dataset("cifar10", tmp_path / "cifar-10-batches-py")
    assert (len(s.train), s.val, len(s.test), s.likelihood) == (25, None, 5, "logistic")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > evil_marker",))


def test_malicious_pickle_is_refused_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(tmp_path)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": _Evil()}, protocol=2))
    with pytest.raises(ValueError, match="data_batch_3.*not allowed"):
        load_cifar10(tmp_path, "train")
    assert not (tmp_path / "evil_marker").exists()
    with pytest.raises(pickle.UnpicklingError):
        restricted_loads(pickle.dumps(np.random.default_rng(0)))


def test_bad_batch_contents(tmp_path):
    write_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    batch, _, _ = _batch(4, 0)
    batch[b"labels"] = [0, 1, 12, 3]
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(ValueError, match="test_batch.*index 2"):
        load_cifar10(tmp_path, "test")
    (folder / "data_batch_1").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        load_cifar10(tmp_path, "train")


def _jpg(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_image_tree_folder_and_zip(tmp_path):
    colours = {"airplane": (255, 0, 0), "cat": (0, 255, 0), "truck": (0, 0, 255)}
    for split in ("train", "test"):
        for cls, col in colours.items():
            (tmp_path / "tree" / split / cls).mkdir(parents=True)
            for i in range(2):
                (tmp_path / "tree" / split / cls / f"{i:04d}.jpg").write_bytes(_jpg(col))
    x, y, classes = read_image_tree(tmp_path / "tree", "train")
    assert classes == ["airplane", "cat", "truck"] and y.tolist() == [0, 0, 1, 1, 2, 2]
    assert x.shape == (6, 3, 32, 32) and x[0, 0].mean() > 240 and x[0, 1].mean() < 15
    with zipfile.ZipFile(tmp_path / "cifar10_test_jpg.zip", "w") as zf:
        for cls, col in colours.items():
            zf.writestr(f"test/{cls}/0000.jpg", _jpg(col))
    xz, yz, _ = read_image_tree(tmp_path / "cifar10_test_jpg.zip", "test", size=16)
    assert xz.shape == (3, 3, 16, 16) and yz.tolist() == [0, 1, 2]
    with zipfile.ZipFile(tmp_path / "broken.zip", "w") as zf:
        zf.writestr("test/cat/0001.jpg", b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match="0001.jpg"):
        read_image_tree(tmp_path / "broken.zip", "test")


def test_shared_cifar_jpg_sample():
    root = SHARED / "cifar10_jpg"
    if not (root / "cifar10_test_jpg.zip").is_file():
        pytest.skip(f"shared CIFAR-10 JPEG sample not found at {root}")
    x, y, classes = read_image_tree(root / "cifar10_test_jpg.zip", "test")
    assert x.shape == (10000, 3, 32, 32) and np.bincount(y).tolist() == [1000] * 10
    assert classes[0] == "airplane" and classes[-1] == "truck"
