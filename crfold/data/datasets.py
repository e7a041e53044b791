"""Point-cloud datasets: the published HDF5 layouts, the shared ModelNet40 npz, and a factory.

Layouts read by :class:`HDF5PointClouds` (both y-up):

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
import operator
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

SPLITS = ("train", "val", "test", "trainval")
# fmt: off
MODELNET10_CLASSES = ("bathtub", "bed", "chair", "desk", "dresser",
                      "monitor", "night_stand", "sofa", "table", "toilet")
# fmt: on
DEFAULT_MAX_BYTES = 16 * 2**30  # refuse to allocate more than this for one dataset


class PointCloudSet(Dataset):
    """In-memory labelled point clouds with seeded per-sample subsampling.

    Args:
        points: (N, P, 3) float32 clouds, all with P points (no padding).
        labels: (N,) int64 class indices in [0, len(classes)).
        classes: class names, index = label.
        num_points: points returned per sample; None (or P) returns all P in stored order.
        seed: subsampling seed; sample i always gets the same subset for a given seed.
        up_axis: "y" or "z", the up direction of the stored clouds.
    """

    def __init__(
        self,
        points: torch.Tensor,
        labels: torch.Tensor,
        classes: Sequence[str],
        num_points: int | None = None,
        seed: int = 0,
        up_axis: str = "y",
    ) -> None:
        if points.ndim != 3 or points.shape[-1] != 3 or points.dtype != torch.float32:
            raise ValueError(f"points: expected (N, P, 3) float32, got {tuple(points.shape)}")
        if labels.shape != points.shape[:1] or labels.dtype != torch.int64:
            raise ValueError(f"labels: expected ({len(points)},) int64, got {tuple(labels.shape)}")
        if num_points is not None:
            num_points = check_int("num_points", num_points, 1, points.shape[1])
        seed = check_int("seed", seed)
        if up_axis not in ("y", "z"):
            raise ValueError(f"up_axis: expected 'y' or 'z', got {up_axis!r}")
        self.points = points  # (N, P, 3) float32
        self.labels = labels  # (N,) int64
        self.classes = list(classes)
        self.num_points = num_points
        self.seed = seed
        self.up_axis = up_axis

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return self.points.shape[0]

    def subsample_index(self, index: int) -> torch.Tensor:
        """(num_points,) int64 distinct point indices of sample ``index`` (seeded, no repeats)."""
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + index) % 2**64)
        return torch.randperm(self.points.shape[1], generator=g)[: self.num_points]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """Returns (points (num_points, 3) float32, a copy; label int)."""
        i = operator.index(index)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        i %= len(self)
        cloud = self.points[i]  # (P, 3)
        if self.num_points is not None and self.num_points < cloud.shape[0]:
            return cloud[self.subsample_index(i)], int(self.labels[i])
        return cloud.clone(), int(self.labels[i])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(samples={len(self)}, points={self.points.shape[1]}, "
            f"num_points={self.num_points}, classes={self.num_classes}, up={self.up_axis!r})"
        )


def check_int(name: str, value, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int if it is an integer (not bool) in [low, high]; else a ValueError."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or (low is not None and value < low)
        or (high is not None and value > high)
    ):
        raise ValueError(f"{name}: expected an int in [{low}, {high}], got {value!r}")
    return int(value)


def normalize_unit_sphere(points: torch.Tensor) -> torch.Tensor:
    """Centres every cloud on its mean and scales it into the unit ball, in place.

    Args:
        points: (N, P, 3) float tensor; a degenerate cloud (all points equal) is only centred.

    Returns:
        The same tensor, (N, P, 3).
    """
    for chunk in points.split(4096):  # bounded temporaries
        chunk -= chunk.mean(dim=1, keepdim=True)
        radius = chunk.norm(dim=-1).amax(dim=1)  # (n,)
        chunk /= torch.where(radius > 0, radius, torch.ones_like(radius))[:, None, None]
    return points


def _first_nonfinite(points: torch.Tensor) -> int | None:
    """Index of the first sample of (n, P, 3) holding a NaN/inf, or None."""
    bad = (~torch.isfinite(points)).flatten(1).any(dim=1)  # (n,)
    return int(bad.nonzero()[0, 0]) if bool(bad.any()) else None


def _check_label_meta(shape: tuple, dtype: np.dtype, n: int, where: str) -> None:
    """Checks label metadata before reading: (n,) or (n, 1), an integer dtype."""
    if tuple(shape) not in ((n,), (n, 1)):
        raise ValueError(f"{where}: labels length mismatch, shape {shape} for {n} samples")
    if dtype.kind not in "iu":
        raise ValueError(f"{where}: labels dtype {dtype}, expected an integer dtype")


def _to_labels(labels: np.ndarray, where: str) -> torch.Tensor:
    """(n,) or (n, 1) integer labels, checked >= 0 -> (n,) int64 tensor."""
    labels = labels.reshape(-1).astype(np.int64)
    negative = np.flatnonzero(labels < 0)
    if negative.size:
        raise ValueError(f"{where}: sample {negative[0]} has negative label {labels[negative[0]]}")
    return torch.from_numpy(labels)


def _check_points_meta(shape: tuple, dtype: np.dtype, where: str) -> None:
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"{where}: points shape {shape}, expected (N, P, 3)")
    if dtype.kind != "f":
        raise ValueError(f"{where}: points dtype {dtype}, expected a float dtype")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"{where}: holds no samples (shape {shape})")


def _check_budget(n: int, p: int, max_bytes: int, where: str) -> None:
    if n * p * 3 * 4 > max_bytes:
        raise ValueError(f"{where}: {n} x {p} x 3 float32 exceeds max_bytes={max_bytes}")


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


def change_up_axis(points: torch.Tensor, src: str, dst: str) -> torch.Tensor:
    """Rotates clouds from ``src``-up to ``dst``-up ("y"/"z") about the x axis, in place.

    z-up -> y-up is (x, y, z) -> (x, z, -y) (-90 degrees about x, +z goes to +y); y-up -> z-up
    is its inverse (x, y, z) -> (x, -z, y). Both are proper rotations (det +1).

    Args:
        points: (..., 3) float tensor.

    Returns:
        The same tensor, (..., 3).
    """
    if src not in ("y", "z") or dst not in ("y", "z"):
        raise ValueError(f"src/dst: expected 'y' or 'z', got {src!r}/{dst!r}")
    if src != dst:
        y, z = points[..., 1].clone(), points[..., 2].clone()
        points[..., 1], points[..., 2] = (z, -y) if dst == "y" else (-z, y)
    return points


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


def open_dataset(
    spec: str | Path,
    split: str = "train",
    num_points: int | None = None,
    seed: int = 0,
    **kwargs,
) -> PointCloudSet:
    """Opens a dataset by name or path (what the training CLI calls).

    Args:
        spec: "synthetic" (the embedded procedural set, :class:`SyntheticShapes`), a path to an
            ``.npz`` (:class:`ModelNet40NPZ`) or a folder of HDF5 shards (:class:`HDF5PointClouds`).
        split: the split to read.
        num_points: points per sample (for "synthetic": points generated, default 1024).
        seed: subsampling seed (for "synthetic": generation seed).
        **kwargs: passed to the dataset class (e.g. ``to_up="y"``, ``normalize=True``).
    """
    if str(spec) == "synthetic":
        from .synthetic import SyntheticShapes

        n = 1024 if num_points is None else num_points
        return SyntheticShapes(split=split, num_points=n, seed=seed, **kwargs)
    path = Path(spec).expanduser()
    if path.is_dir():
        return HDF5PointClouds(path, split, num_points, seed, **kwargs)
    if path.is_file() and path.suffix == ".npz":
        return ModelNet40NPZ(path, split, num_points, seed, **kwargs)
    if not path.exists():
        raise FileNotFoundError(f"spec: {spec!r} is not 'synthetic' and no such file or folder")
    raise ValueError(f"spec: expected 'synthetic', an .npz or a folder of .h5 shards: {spec!r}")
