"""Tests for crfold_images.data.idx and the MNIST-family splits of load_dataset."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from crfold_images.data import load_dataset, load_mnist_idx, read_idx, read_mnist_csv

# Real samples of the data sets: under $CRFOLD_DATA, else the checkout's sibling shared/data.
SHARED = Path(
    os.environ.get("CRFOLD_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data"
)


def idx_bytes(arr: np.ndarray) -> bytes:
    """LeCun's idx layout: 00 00 type ndim, big-endian uint32 dims, big-endian data."""
    code = {np.uint8: 0x08, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D}[arr.dtype.type]
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_mnist(root: Path, n_train: int = 60, n_test: int = 20, gz: bool = True, seed: int = 0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte"
            raw = idx_bytes(arr)
            if gz:
                (root / (name + ".gz")).write_bytes(gzip.compress(raw))
            else:
                (root / name).write_bytes(raw)
        data[prefix] = (images, labels)
    return data


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_gz_and_raw(tmp_path, gz):
    data = write_mnist(tmp_path, gz=gz)
    images, labels = load_mnist_idx(tmp_path, "train")
    assert images.shape == (60, 1, 28, 28) and images.dtype == np.uint8
    assert np.array_equal(images[:, 0], data["train"][0])
    assert labels.dtype == np.int64 and np.array_equal(labels, data["train"][1])
    x, _ = load_mnist_idx(tmp_path, "test")
    assert x.shape == (20, 1, 28, 28)


def test_read_idx_other_types(tmp_path):
    for arr in (
        np.arange(-5, 7, dtype=np.int16).reshape(3, 4),
        np.linspace(0, 1, 6, dtype=np.float32),
    ):
        p = tmp_path / "a.idx"
        p.write_bytes(idx_bytes(arr))
        out = read_idx(p)
        assert np.array_equal(out, arr) and out.dtype.isnative


def test_bad_headers_are_errors_naming_the_file(tmp_path):
    good = idx_bytes(np.zeros((4, 28, 28), np.uint8))
    cases = {
        "magic.idx": b"\x01\x00" + good[2:],
        "type.idx": good[:2] + b"\x07" + good[3:],
        "ndim.idx": good[:3] + b"\x09" + good[4:],
        "short.idx": good[:-10],
        "long.idx": good + b"\x00",
    }
    for name, raw in cases.items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(ValueError, match=name):
            read_idx(tmp_path / name)
    # A header claiming 10^12 pixels is refused before anything is allocated (raw and gzip).
    huge = bytes([0, 0, 8, 3]) + struct.pack(">3I", 10**6, 1000, 1000)
    (tmp_path / "huge.idx").write_bytes(huge + b"\x00" * 16)
    (tmp_path / "huge.idx.gz").write_bytes(gzip.compress(huge + b"\x00" * 16))
    for name in ("huge.idx", "huge.idx.gz"):
        with pytest.raises(ValueError, match="huge"):
            read_idx(tmp_path / name)
    # Within the limit but not matching the gzip trailer's size.
    lying = bytes([0, 0, 8, 2]) + struct.pack(">2I", 1000, 1000) + b"\x00" * 10
    (tmp_path / "lying.gz").write_bytes(gzip.compress(lying))
    with pytest.raises(ValueError, match="lying.gz"):
        read_idx(tmp_path / "lying.gz")


def test_label_count_mismatch(tmp_path):
    write_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(19, np.uint8)))
    with pytest.raises(ValueError, match="t10k-labels"):
        load_mnist_idx(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="train-images"):
        load_mnist_idx(tmp_path / "missing", "train")


def test_csv_reader(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 784))
    labels = np.arange(7) % 10
    lines = [",".join(map(str, list(im) + [lab])) for im, lab in zip(images, labels)]
    path = tmp_path / "mnist_5k.csv.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    x, y = read_mnist_csv(path)
    assert x.shape == (7, 1, 28, 28) and np.array_equal(x.reshape(7, -1), images)
    assert np.array_equal(y, labels)
    bad = tmp_path / "bad.csv"
    bad.write_text(lines[0] + "\n" + lines[1].replace(",", ",300,", 1) + "\n")
    with pytest.raises(ValueError, match="bad.csv:2"):
        read_mnist_csv(bad)


def test_mnist_paper_split_and_budget(tmp_path):
    write_mnist(tmp_path, n_train=120, n_test=30)
    s = load_dataset("mnist", tmp_path)
    assert (len(s.train), len(s.val), len(s.test)) == (100, 20, 30)  # 1/6 held out
    assert (s.channels, s.image_size, s.num_classes, s.likelihood) == (1, 28, 10, "bernoulli")
    again = load_dataset("mnist", tmp_path)
    assert np.array_equal(s.val.images.numpy(), again.val.images.numpy())  # fixed split
    small = load_dataset("mnist", tmp_path, max_train=40, val_size=0, image_size=32)
    assert len(small.train) == 40 and small.val is None and small.image_size == 32
    images, labels = small.train.get_batch(np.arange(3))
    assert images.shape == (3, 1, 32, 32) and labels.shape == (3,)


def test_shared_mnist_sample():
    root = SHARED / "mnist"
    if not (root / "mnist_5k.csv.gz").is_file():
        pytest.skip(f"shared MNIST sample not found at {root}")
    s = load_dataset("mnist5k", root)
    assert (len(s.train), len(s.val), len(s.test)) == (4167, 833, 10000)
    assert s.test.labels[:5].tolist() == [7, 2, 1, 0, 4]  # the official t10k order
    counts = np.bincount(np.concatenate([s.train.labels.numpy(), s.val.labels.numpy()]))
    assert counts.tolist() == [500] * 10
    assert 30 < float(s.test.images.float().mean()) < 40  # MNIST's mean intensity ~33
