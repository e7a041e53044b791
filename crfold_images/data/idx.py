"""MNIST / Fashion-MNIST readers: the original idx files (gzip or raw) and the shared 5k CSV.

idx layout (LeCun's spec): 2 zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16,
0x0C int32, 0x0D float32, 0x0E float64), the number of dims n, n big-endian uint32 sizes, then
the data, big-endian, row-major. The header is checked (and the payload size compared with the
file before anything is allocated) so a corrupt or hostile header is a ValueError naming the
file, never an out-of-memory kill.
"""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path

import numpy as np

__all__ = ["find_idx", "load_mnist_idx", "read_idx", "read_mnist_csv"]

_IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
MAX_IDX_BYTES = 1 << 32  # 4 GiB: far above any idx dataset


def _open(path: Path) -> io.BufferedIOBase:
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def _gzip_isize(path: Path) -> int:
    """Uncompressed size mod 2**32 from a gzip file's trailer (single-member files)."""
    with open(path, "rb") as f:
        f.seek(0, io.SEEK_END)
        if f.tell() < 18:
            raise ValueError(f"{path}: truncated gzip file")
        f.seek(-4, io.SEEK_END)
        return struct.unpack("<I", f.read(4))[0]


def read_idx(path: str | Path, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read one idx file (gzip-compressed or raw, detected from its magic bytes).

    Args:
        path: the file.
        max_bytes: the largest payload accepted.

    Returns:
        An array of the file's shape, in native byte order (uint8 for images and labels).

    Raises:
        ValueError: naming the file, on a bad magic, type code, dimension count, a payload larger
            than ``max_bytes``, or a payload shorter or longer than the header says.
        FileNotFoundError: if the file does not exist.
    """
    path = Path(path)
    with _open(path) as f:
        try:
            head = f.read(4)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: unreadable idx file ({exc})") from exc
        if len(head) < 4 or head[:2] != b"\x00\x00":
            raise ValueError(f"{path}: not an idx file (magic {head!r}, expected 00 00 tt nn)")
        code, ndim = head[2], head[3]
        if code not in _IDX_TYPES:
            raise ValueError(f"{path}: unknown idx type code 0x{code:02X}")
        if not 1 <= ndim <= 4:
            raise ValueError(f"{path}: idx header claims {ndim} dims, expected 1 to 4")
        raw_dims = f.read(4 * ndim)
        if len(raw_dims) != 4 * ndim:
            raise ValueError(f"{path}: truncated idx header")
        dims = struct.unpack(f">{ndim}I", raw_dims)
        dtype = _IDX_TYPES[code]
        nbytes = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
        if nbytes > max_bytes:
            raise ValueError(f"{path}: header claims {dims} = {nbytes} bytes, over {max_bytes}")
        if isinstance(f, gzip.GzipFile):  # the gzip trailer stores the size mod 2**32
            remaining = (_gzip_isize(path) - 4 - 4 * ndim) % (1 << 32)
            expected = nbytes % (1 << 32)
        else:
            remaining, expected = path.stat().st_size - 4 - 4 * ndim, nbytes
        if remaining != expected:
            raise ValueError(
                f"{path}: header claims {dims} ({nbytes} bytes) but {remaining} bytes follow"
            )
        try:
            payload = f.read(nbytes)
            extra = f.read(1)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: corrupt compressed payload ({exc})") from exc
    if len(payload) != nbytes or extra:
        more = "more than" if extra else f"only {len(payload)} of"
        raise ValueError(f"{path}: header claims {dims} ({nbytes} bytes) but holds {more} them")
    return np.frombuffer(payload, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def find_idx(root: str | Path, stem: str) -> Path:
    """``root/stem`` or ``root/stem.gz`` (also the ``stem`` with '-idx3-' spelled '.idx3-')."""
    root = Path(root)
    dotted = stem.replace("-idx", ".idx")  # some mirrors spell it train-images.idx3-ubyte
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"{root}: no {stem} or {stem}.gz (MNIST idx layout expected)")


def load_mnist_idx(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST / Fashion-MNIST split from ``root`` (files named as published).

    Args:
        root: folder with ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
            ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``.
        split: "train" or "test".

    Returns:
        ``(images (N, 1, 28, 28) uint8, labels (N,) int64)``.

    Raises:
        ValueError: on malformed files, or images and labels of different counts.
    """
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    img_path = find_idx(root, f"{prefix}-images-idx3-ubyte")
    lab_path = find_idx(root, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{img_path}: expected (N, H, W) uint8 images, got {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{lab_path}: expected ({images.shape[0]},) labels like {img_path.name}, "
            f"got {labels.shape}"
        )
    return images[:, None].copy(), labels.astype(np.int64)


def read_mnist_csv(path: str | Path, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """MNIST as CSV rows of ``size*size`` pixel values 0-255 then the label (gzip or plain).

    A header line (non-numeric first field) is skipped.

    Returns:
        ``(images (N, 1, size, size) uint8, labels (N,) int64)``.

    Raises:
        ValueError: naming the file and the line, on a wrong field count, a non-integer field
            or a pixel outside 0-255.
    """
    path = Path(path)
    width = size * size + 1
    rows: list[np.ndarray] = []
    with _open(path) as f:
        for lineno, raw in enumerate(io.TextIOWrapper(f, encoding="ascii"), start=1):
            line = raw.strip()
            if not line:
                continue
            fields = line.split(",")
            if lineno == 1 and not fields[0].strip().lstrip("-").isdigit():
                continue  # header
            if len(fields) != width:
                raise ValueError(f"{path}:{lineno}: {len(fields)} fields, expected {width}")
            try:
                row = np.array([int(v) for v in fields], dtype=np.int64)
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: non-integer field ({exc})") from exc
            if row[:-1].min() < 0 or row[:-1].max() > 255:
                raise ValueError(f"{path}:{lineno}: pixel values must lie in 0-255")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no data rows")
    data = np.stack(rows)  # (N, size*size + 1)
    images = data[:, :-1].astype(np.uint8).reshape(-1, 1, size, size)
    return images, data[:, -1].copy()
