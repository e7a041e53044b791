"""Reads point clouds from an npz: the shared ModelNet40 sample or any file of its layout.

:class:`ModelNet40NPZ` reads ``<split>_points`` (N, P, 3) float16/32, ``<split>_labels`` (N,)
integer and an optional ``classes`` (C,) str from one ``.npz``, checking every member's .npy
header before anything is allocated and loading with ``allow_pickle=False``; it can rotate the
clouds to another up axis and keep a subset of the classes (e.g. ``MODELNET10_CLASSES``).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .base import (
    DEFAULT_MAX_BYTES,
    PointCloudSet,
    _check_budget,
    _check_label_meta,
    _check_points_meta,
    _first_nonfinite,
    _to_labels,
    change_up_axis,
)


def _npz_header(zf: zipfile.ZipFile, path: Path, key: str) -> tuple[tuple, np.dtype] | None:
    """(shape, dtype) of member ``key`` of an npz from its header only, or None if absent."""
    if f"{key}.npy" not in zf.namelist():
        return None
    fmt = np.lib.format
    try:
        with zf.open(f"{key}.npy") as fp:
            version = fmt.read_magic(fp)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read(fp)
    except (ValueError, OSError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: key {key!r} has an unreadable .npy header ({err})") from err
    return shape, dtype


def _read_npz(path: Path, split: str, max_bytes: int) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Reads ``<split>_points``/``<split>_labels``/``classes`` of an npz, headers checked first."""
    pkey, lkey = f"{split}_points", f"{split}_labels"
    try:
        with zipfile.ZipFile(path) as zf:
            head = {k: _npz_header(zf, path, k) for k in (pkey, lkey, "classes")}
            members = [m.removesuffix(".npy") for m in zf.namelist()]
    except zipfile.BadZipFile as err:
        raise ValueError(f"{path}: not a readable npz file ({err})") from err
    for key in (pkey, lkey):
        if head[key] is None:
            raise ValueError(f"{path}: missing key {key!r} for split {split!r} (has {members})")
    shape = head[pkey][0]
    _check_points_meta(shape, head[pkey][1], f"{path} key {pkey!r}")
    _check_budget(shape[0], shape[1], max_bytes, f"{path} key {pkey!r}")
    _check_label_meta(*head[lkey], shape[0], f"{path} key {lkey!r}")
    if head["classes"] and (len(head["classes"][0]) != 1 or head["classes"][1].kind not in "US"):
        raise ValueError(
            f"{path}: key 'classes' has shape/dtype {head['classes']}, expected (C,) str"
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            points = torch.from_numpy(f[pkey].astype(np.float32))  # (N, P, 3)
            labels = _to_labels(f[lkey], f"{path} key {lkey!r}")  # (N,)
            names = [str(c) for c in f["classes"].tolist()] if head["classes"] else None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"{path}: corrupt npz ({err})") from err
    bad = _first_nonfinite(points)
    if bad is not None:
        raise ValueError(f"{path}: sample {bad} of {pkey!r} has non-finite (NaN/inf) coordinates")
    if names is None:
        return points, labels, [f"class_{i}" for i in range(int(labels.max()) + 1)]
    if int(labels.max()) >= len(names):
        i = int(torch.nonzero(labels >= len(names))[0, 0])
        raise ValueError(f"{path}: sample {i} has label {int(labels[i])}, {len(names)} classes")
    return points, labels, names


class ModelNet40NPZ(PointCloudSet):
    """The shared ModelNet40 sample (``modelnet40_1024_f16.npz``) or any npz of the same layout.

    Keys ``<split>_points`` (N, P, 3) float16/32, ``<split>_labels`` (N,) integer, optional
    ``classes`` (C,) str. The headers are checked before anything is allocated, then the file is
    read with ``allow_pickle=False``; points are cast to float32.

    Args:
        path: the .npz file.
        split: "train" or "test" (any split the file has keys for).
        num_points: points per sample (seeded, without replacement); None keeps all.
        seed: subsampling seed.
        up: the up axis of the stored clouds ("z" for the shared sample).
        to_up: None keeps the stored frame; "y" or "z" rotates once at load
            (see :func:`change_up_axis`: z-up -> y-up is (x, y, z) -> (x, z, -y)).
        classes_subset: keep only these classes (e.g. ``MODELNET10_CLASSES``), relabelled 0..k-1
            in the given order.
        max_bytes: refuse to load more than this many bytes of float32 points.
    """

    def __init__(
        self,
        path: str | Path,
        split: str = "train",
        num_points: int | None = None,
        seed: int = 0,
        up: str = "z",
        to_up: str | None = None,
        classes_subset: Sequence[str] | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"path: no such npz file {path}")
        if up not in ("y", "z") or to_up not in (None, "y", "z"):
            raise ValueError(f"up/to_up: expected 'y'/'z' (to_up also None), got {up!r}/{to_up!r}")
        points, labels, classes = _read_npz(path, split, max_bytes)
        change_up_axis(points, up, to_up or up)
        if classes_subset is not None:
            subset = list(classes_subset)
            if not subset or len(set(subset)) != len(subset) or set(subset) - set(classes):
                raise ValueError(f"classes_subset: expected distinct names of {classes}: {subset}")
            lut = torch.full((len(classes),), -1, dtype=torch.int64)
            lut[[classes.index(c) for c in subset]] = torch.arange(len(subset))
            keep = lut[labels] >= 0
            points, labels, classes = points[keep], lut[labels[keep]], subset
        super().__init__(points, labels, classes, num_points, seed, up_axis=to_up or up)
        self.split = split
        self.files = [path]
