"""CIFAR-10 readers: the official python pickle batches and folders / zips of image files.

Pickle batches (``cifar-10-python.tar.gz`` -> ``cifar-10-batches-py/data_batch_1..5`` and
``test_batch``): each a pickled dict ``{b"batch_label", b"labels": [int], b"data": (10000, 3072)
uint8 (R, G, B planes of 32x32, row-major), b"filenames"}``. Pickles can run code on load, so
they are read with a restricted unpickler that allows only what these files contain (numpy's
array reconstruction and dtype, ``_codecs.encode`` of Python-3 re-pickles) and refuses any
other global. The batches are read from a folder or straight from the tar.gz.

Image trees (e.g. the cifar10_jpg zips): ``<split>/<class>/<name>.{png,jpg}`` in a folder
or in zip files; classes are the sorted folder names (CIFAR-10's official label order is
alphabetical, so label indices agree with the pickles).
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["load_cifar10", "read_cifar_batch", "read_image_tree", "restricted_loads"]

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
MAX_BATCH_BYTES = 1 << 30


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a data batch")


def restricted_loads(data: bytes) -> object:
    """Unpickle ``data`` allowing only plain types and numpy arrays (encoding="bytes")."""
    return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


def read_cifar_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one pickled CIFAR-10 batch.

    Args:
        data: the file's bytes.
        where: the file name, for error messages.

    Returns:
        ``(images (N, 3, 32, 32) uint8, labels (N,) int64)``.

    Raises:
        ValueError: naming ``where``, on a refused or corrupt pickle or unexpected contents.
    """
    try:
        obj = restricted_loads(data)
    except Exception as exc:  # UnpicklingError, EOFError, ... all mean a bad batch
        raise ValueError(f"{where}: not a CIFAR-10 batch pickle ({exc})") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a dict, got {type(obj).__name__}")
    obj = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if "data" not in obj or "labels" not in obj:
        raise ValueError(f"{where}: missing 'data' or 'labels' (keys {sorted(map(str, obj))})")
    images, labels = np.asarray(obj["data"]), np.asarray(obj["labels"])
    if images.ndim != 2 or images.shape[1] != 3072 or images.dtype != np.uint8:
        raise ValueError(
            f"{where}: 'data' must be (N, 3072) uint8, got {images.shape} {images.dtype}"
        )
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{where}: 'labels' must be {images.shape[0]} integers, got {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        bad = int(np.flatnonzero((labels < 0) | (labels > 9))[0])
        raise ValueError(f"{where}: label {labels[bad]} at index {bad} is outside 0-9")
    return images.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _batch_names(split: str) -> list[str]:
    if split == "train":
        return [f"data_batch_{i}" for i in range(1, 6)]
    if split == "test":
        return ["test_batch"]
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def load_cifar10(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 from its python release.

    Args:
        root: ``cifar-10-python.tar.gz``, the ``cifar-10-batches-py`` folder, or a folder
            holding either.
        split: "train" (data_batch_1..5) or "test" (test_batch).

    Returns:
        ``(images (N, 3, 32, 32) uint8, labels (N,) int64)``.

    Raises:
        ValueError / FileNotFoundError: naming the file, on missing or malformed batches.
    """
    names = _batch_names(split)
    root = Path(root)
    if root.is_dir() and (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    elif root.is_dir() and (root / "cifar-10-python.tar.gz").is_file():
        root = root / "cifar-10-python.tar.gz"
    parts = []
    if root.is_dir():
        for name in names:
            path = root / name
            if not path.is_file():
                raise FileNotFoundError(f"{root}: no {name} (cifar-10-batches-py layout expected)")
            if path.stat().st_size > MAX_BATCH_BYTES:
                raise ValueError(f"{path}: larger than {MAX_BATCH_BYTES} bytes")
            parts.append(read_cifar_batch(path.read_bytes(), str(path)))
    elif root.is_file():
        try:
            tar = tarfile.open(root, "r:*")
        except (tarfile.TarError, OSError) as exc:
            raise ValueError(f"{root}: not a readable tar archive ({exc})") from exc
        with tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            for name in names:
                member = members.get(name)
                if member is None:
                    raise FileNotFoundError(f"{root}: no member {name}")
                if member.size > MAX_BATCH_BYTES:
                    raise ValueError(f"{root}:{member.name}: larger than {MAX_BATCH_BYTES} bytes")
                data = tar.extractfile(member).read()
                parts.append(read_cifar_batch(data, f"{root}:{member.name}"))
    else:
        raise FileNotFoundError(f"{root}: neither a folder nor a file")
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _decode_rgb(data: bytes, size: int | None, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BICUBIC)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)  # (3, H, W)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError(f"{where}: unreadable image ({exc})") from exc


def read_image_tree(
    root: str | Path, split: str, size: int | None = 32
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images laid out as ``<split>/<class>/<file>`` in a folder or in the zips of a folder.

    Args:
        root: a folder containing ``<split>/`` or zip files whose members start with
            ``<split>/``; or one such zip file.
        split: the top folder name, e.g. "train" or "test".
        size: resize every image to size x size (None keeps the size; then all must agree).

    Returns:
        ``(images (N, 3, S, S) uint8, labels (N,) int64, classes)``; images sorted by path.

    Raises:
        ValueError / FileNotFoundError: naming the file, on no images, unreadable images or
            mixed sizes.
    """
    root = Path(root)
    items: list[tuple[str, str, object]] = []  # (class, member path, source)
    if root.is_dir() and (root / split).is_dir():
        for path in sorted((root / split).glob("*/*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                items.append((path.parent.name, str(path), path))
    else:
        zips = [root] if root.is_file() else sorted(root.glob("*.zip"))
        for zpath in zips:
            try:
                with zipfile.ZipFile(zpath) as zf:
                    names = zf.namelist()
            except (zipfile.BadZipFile, OSError) as exc:
                raise ValueError(f"{zpath}: not a readable zip ({exc})") from exc
            for name in sorted(names):
                parts = name.split("/")
                if len(parts) == 3 and parts[0] == split and name.lower().endswith(IMAGE_SUFFIXES):
                    items.append((parts[1], name, zpath))
    if not items:
        raise FileNotFoundError(f"{root}: no images under {split}/<class>/")
    classes = sorted({c for c, _, _ in items})
    index = {c: i for i, c in enumerate(classes)}
    arrays, labels = [], []
    open_zips: dict[Path, zipfile.ZipFile] = {}
    try:
        for i, (cls, name, src) in enumerate(items):
            if isinstance(src, Path) and src.suffix.lower() == ".zip":
                zf = open_zips.get(src) or open_zips.setdefault(src, zipfile.ZipFile(src))
                data, where = zf.read(name), f"{src}:{name} (image {i})"
            else:
                data, where = Path(name).read_bytes(), f"{name} (image {i})"
            arr = _decode_rgb(data, size, where)
            if arrays and arr.shape != arrays[0].shape:
                raise ValueError(f"{where}: size {arr.shape} differs from {arrays[0].shape}")
            arrays.append(arr)
            labels.append(index[cls])
    finally:
        for zf in open_zips.values():
            zf.close()
    return np.stack(arrays), np.asarray(labels, dtype=np.int64), classes
