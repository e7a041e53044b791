"""Reads the published HDF5 point-cloud layouts into memory (:class:`HDF5PointClouds`).

Layouts read (both y-up):

* ``shapenetcorev2_hdf5_2048`` (the AnTao97/PointCloudDatasets release): shards ``train0.h5``,
  ``train1.h5``, ..., ``val0.h5``, ..., ``test0.h5``, ...; keys ``data`` (N, 2048, 3) float32 and
  ``label`` (N, 1) int64. Beside each shard ``train0_id2name.json`` (a JSON list: the category
  name of every sample, e.g. ``"airplane"``) and ``train0_id2file.json`` (the source file of every
  sample). Class names come from the id2name sidecars of every shard in the folder.
* ``modelnet40_ply_hdf5_2048`` (the PointNet release): ``ply_data_train0.h5`` ...
  ``ply_data_train4.h5``, ``ply_data_test0.h5``, ``ply_data_test1.h5``; keys ``data`` (N, 2048, 3)
  float32 and ``label`` (N, 1) uint8 (``normal``/``faceId`` are ignored); ``shape_names.txt`` (line
  i = name of label i); sidecars ``ply_data_train_0_id2file.json``.

Class names: ``shape_names.txt`` if present, else the ``*_id2name.json`` sidecars, else
``class_<i>``. Every file is untrusted: shapes and dtypes are checked from the metadata before
anything is allocated, and bad data raises a ValueError naming the file (and the sample index).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from .base import (
    DEFAULT_MAX_BYTES,
    SPLITS,
    PointCloudSet,
    _check_budget,
    _check_label_meta,
    _check_points_meta,
    _first_nonfinite,
    _to_labels,
    normalize_unit_sphere,
)


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def _h5py():
    try:
        import h5py
    except ImportError as err:  # pragma: no cover - h5py is in the data extra
        raise ImportError("reading HDF5 shards needs h5py: pip install crfold[data]") from err
    return h5py


def _sidecar(shard: Path, kind: str) -> Path | None:
    """The ``*_id2name.json`` / ``*_id2file.json`` beside ``shard`` (both published namings)."""
    stem = shard.stem
    names = [f"{stem}_{kind}.json"]
    m = re.fullmatch(r"(.*?)(\d+)", stem)
    if m:
        names.append(f"{m.group(1)}_{m.group(2)}_{kind}.json")  # ply_data_train_0_id2file.json
    for name in names:
        if (shard.parent / name).is_file():
            return shard.parent / name
    return None


def _read_json_list(path: Path, n: int) -> list[str]:
    try:
        items = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable JSON file ({err})") from err
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise ValueError(f"{path}: expected a JSON list of strings")
    if len(items) != n:
        raise ValueError(f"{path}: {len(items)} entries, expected one per sample ({n})")
    return items


class _Shard:
    """One HDF5 shard, opened, validated from metadata, labels read (data not read)."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        h5py = _h5py()
        self.path = path
        if path.stat().st_size == 0:
            raise ValueError(f"{path}: empty file")
        try:
            self.file = h5py.File(path, "r")
        except OSError as err:
            raise ValueError(f"{path}: not a readable HDF5 file ({err})") from err
        try:
            for key in ("data", "label"):
                if key not in self.file or not isinstance(self.file[key], h5py.Dataset):
                    raise ValueError(f"{path}: missing dataset key {key!r}")
            self.data = self.file["data"]
            _check_points_meta(self.data.shape, self.data.dtype, f"{path} key 'data'")
            self.n, self.p = self.data.shape[:2]
            _check_budget(self.n, self.p, max_bytes, f"{path} key 'data'")
            label = self.file["label"]
            _check_label_meta(label.shape, label.dtype, self.n, f"{path} key 'label'")
            self.labels = _to_labels(self._read(label), f"{path} key 'label'")
        except BaseException:
            self.file.close()
            raise

    def _read(self, dataset, out: np.ndarray | None = None) -> np.ndarray:
        try:
            if out is None:
                return dataset[()]
            dataset.read_direct(out)
            return out
        except (OSError, RuntimeError, TypeError) as err:
            raise ValueError(f"{self.path}: corrupt dataset {dataset.name!r} ({err})") from err

    def read_points(self, out: torch.Tensor) -> None:
        """Reads ``data`` into ``out`` (n, P, 3) float32 and checks it is finite."""
        self._read(self.data, out.numpy())
        bad = _first_nonfinite(out)
        if bad is not None:
            raise ValueError(f"{self.path}: sample {bad} has non-finite (NaN/inf) coordinates")

    def close(self) -> None:
        self.file.close()


def _split_shards(root: Path, split: str) -> list[Path]:
    parts = ("train", "val") if split == "trainval" else (split,)
    shards = []
    for part in parts:
        pattern = f"*{part}*.h5"
        found = sorted((p for p in root.glob(pattern) if p.is_file()), key=_natural_key)
        if not found:
            raise FileNotFoundError(
                f"{root}: no HDF5 shards for split {split!r} (glob {pattern!r} matched nothing)"
            )
        shards += found
    return shards


def _class_names(root: Path, shards: list[_Shard]) -> list[str]:
    """Class names of a layout from shape_names.txt, else id2name sidecars, else class_<i>."""
    top = max(int(s.labels.max()) for s in shards) + 1
    names_file = root / "shape_names.txt"
    if names_file.is_file():
        names = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
        for s in shards:
            over = torch.nonzero(s.labels >= len(names))
            if len(over):
                i = int(over[0, 0])
                msg = f"label {int(s.labels[i])} but {names_file} names {len(names)} classes"
                raise ValueError(f"{s.path}: sample {i} has {msg}")
        return names
    mapping: dict[int, str] = {}
    for s in shards:
        sidecar = _sidecar(s.path, "id2name")
        if sidecar is None:
            continue
        for i, (label, name) in enumerate(zip(s.labels.tolist(), _read_json_list(sidecar, s.n))):
            if mapping.setdefault(label, name) != name:
                msg = f"names label {label} {name!r}, elsewhere {mapping[label]!r}"
                raise ValueError(f"{sidecar}: sample {i} {msg}")
    return [mapping.get(i, f"class_{i}") for i in range(top)]


class HDF5PointClouds(PointCloudSet):
    """A split of a ``shapenetcorev2_hdf5_2048`` / ``modelnet40_ply_hdf5_2048`` folder, in memory.

    Args:
        root: the folder holding the ``.h5`` shards (layout detected from the shard names).
        split: "train", "val", "test" or "trainval" (train + val); shards are those matching
            ``*<split>*.h5``, in natural order.
        num_points: points per sample, drawn without replacement, seeded per (seed, index);
            None keeps all.
        seed: subsampling seed.
        normalize: centre each cloud and scale it into the unit ball once at load.
        max_bytes: refuse (ValueError) to load more than this many bytes of float32 points.

    Attributes:
        points: (N, P, 3) float32; labels: (N,) int64; classes: list[str]; files: shard paths;
        sample_files: per-sample source files from ``*_id2file.json`` sidecars, or None;
        layout: detected layout name; up_axis: "y".

    Class names (and so ``num_classes``) are read from every shard of ``root``, all splits, so
    train and test agree even when a class is absent from one split.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        num_points: int | None = None,
        seed: int = 0,
        normalize: bool = False,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"root: {root} is not a directory")
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
        paths = _split_shards(root, split)
        every = sorted(set(root.glob("*.h5")) | set(paths), key=_natural_key)
        shards = {}
        try:
            for path in every:
                shards[path] = _Shard(path, max_bytes)
            classes = _class_names(root, list(shards.values()))
            points, labels = self._load([shards[p] for p in paths], max_bytes)
        finally:
            for shard in shards.values():
                shard.close()
        if normalize:
            normalize_unit_sphere(points)
        super().__init__(points, labels, classes, num_points, seed, up_axis="y")
        self.files = paths
        self.layout = (
            "modelnet40_ply_hdf5_2048"
            if all(p.name.startswith("ply_data_") for p in paths)
            else "shapenetcorev2_hdf5_2048"
        )
        sidecars = [_sidecar(p, "id2file") for p in paths]
        self.sample_files = None
        if all(s is not None for s in sidecars):
            self.sample_files = [
                f for s, p in zip(sidecars, paths) for f in _read_json_list(s, shards[p].n)
            ]

    @staticmethod
    def _load(shards: list[_Shard], max_bytes: int) -> tuple[torch.Tensor, torch.Tensor]:
        p = shards[0].p
        for s in shards:
            if s.p != p:
                raise ValueError(f"{s.path}: {s.p} points per sample, {shards[0].path} has {p}")
        n = sum(s.n for s in shards)
        _check_budget(n, p, max_bytes, f"{len(shards)} shards starting at {shards[0].path}")
        points = torch.empty((n, p, 3), dtype=torch.float32)  # (N, P, 3)
        start = 0
        for s in shards:
            s.read_points(points[start : start + s.n])
            start += s.n
        return points, torch.cat([s.labels for s in shards])
