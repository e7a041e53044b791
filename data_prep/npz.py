"""Point-cloud array files (``.npz``) -> the HDF5 layout.

Input keys: ``<split>_points`` ``(N, P, 3)`` float16/32/64 and ``<split>_labels`` ``(N,)`` or
``(N, 1)`` integers for each split present among ``train``, ``val``, ``test``, and optionally
``classes`` ``(C,)`` str (default ``"0"``, ``"1"``, ...), as in
``$CRFOLD_DATA/modelnet40_1024/modelnet40_1024_f16.npz`` (the shared ModelNet40 sample). Each array's header is read and its
size checked against the archive member before the array is loaded; pickled (object) arrays are
refused.
"""

from __future__ import annotations

import hashlib
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from crfold.data import normalize_unit_sphere

from . import output
from .layouts import SPLITS
from .pipeline import PrepareResult
from .sampling import AXES, apply_axis, farthest_point_sample, model_seed, torch_threads

MAX_ARRAY_BYTES = 1 << 34  # 16 GiB: larger arrays are refused before allocation
_FPS_BATCH = 64  # clouds per FPS batch: (64, 3, P) float64 stays in cache


def read_npz_array(zf: zipfile.ZipFile, key: str, source: str) -> np.ndarray:
    """Load one array of an open ``.npz`` after checking its header.

    Raises:
        ValueError: missing key, object dtype, or a shape that needs more bytes than the member
            holds (or more than :data:`MAX_ARRAY_BYTES`).
    """
    member = f"{key}.npy"
    if member not in zf.namelist():
        raise ValueError(
            f"{source}: no array {key!r} (has {sorted(n[:-4] for n in zf.namelist())})"
        )
    info = zf.getinfo(member)
    with zf.open(member) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    if dtype.hasobject:
        raise ValueError(f"{source}: array {key!r} holds Python objects; refusing to unpickle")
    nbytes = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if nbytes > info.file_size or nbytes > MAX_ARRAY_BYTES:
        raise ValueError(
            f"{source}: array {key!r} claims shape {shape} {dtype} ({nbytes} bytes) but the "
            f"archive member holds {info.file_size} bytes (limit {MAX_ARRAY_BYTES})"
        )
    with zf.open(member) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def load_npz_splits(path: str | Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """Read and validate a point-cloud ``.npz``.

    Returns:
        ``({split: (points (N, P, 3) float, labels (N,) int64)}, classes)``.

    Raises:
        ValueError: not a zip/npz, no ``<split>_points``, bad shapes, dtypes or label range.
    """
    path = Path(path)
    src = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ValueError(f"input {src!r} is not a readable .npz: {exc}") from exc
    with zf:
        keys = {n[: -len(".npy")] for n in zf.namelist() if n.endswith(".npy")}
        splits = {}
        for split in SPLITS:
            if f"{split}_points" not in keys:
                continue
            pts = read_npz_array(zf, f"{split}_points", src)
            lab = read_npz_array(zf, f"{split}_labels", src)
            if pts.ndim != 3 or pts.shape[2] != 3 or pts.dtype.kind != "f":
                raise ValueError(f"{src}: {split}_points must be (N, P, 3) float, got {pts.shape}")
            if lab.dtype.kind not in "iu" or lab.reshape(-1).shape != (len(pts),):
                raise ValueError(
                    f"{src}: {split}_labels must be ({len(pts)},) int, got {lab.shape}"
                )
            splits[split] = (pts, lab.reshape(-1).astype(np.int64))
        if not splits:
            raise ValueError(f"{src}: no <split>_points array (train/val/test); has {sorted(keys)}")
        n_classes = 1 + max(int(lab.max(initial=-1)) for _, lab in splits.values())
        if "classes" in keys:
            classes = [str(c) for c in read_npz_array(zf, "classes", src).reshape(-1)]
        else:
            classes = [str(i) for i in range(n_classes)]
    for split, (_, lab) in splits.items():
        if len(lab) and (lab.min() < 0 or lab.max() >= len(classes)):
            raise ValueError(f"{src}: {split}_labels outside [0, {len(classes)}) classes")
    return splits, classes


def _clouds(x, ids, split, num_points, seed, axis, normalize) -> np.ndarray:
    """Clouds ``x`` ``(B, P, 3)`` float with sample indices ``ids`` ``(B,)`` (they seed FPS)
    -> ``(B, num_points, 3)`` float32, subsampled, normalized, re-oriented."""
    x = x.astype(np.float64)
    if num_points < x.shape[1]:
        picked = []
        for b0 in range(0, len(x), _FPS_BATCH):
            xb = x[b0 : b0 + _FPS_BATCH]  # (b, P, 3)
            first = [model_seed(seed, f"{split}/{i}") % xb.shape[1] for i in ids[b0 : b0 + len(xb)]]
            with torch_threads(1):
                idx = farthest_point_sample(torch.from_numpy(xb), num_points, torch.tensor(first))
            picked.append(np.take_along_axis(xb, idx.numpy()[..., None], axis=1))  # (b, N, 3)
        x = np.concatenate(picked)
    if normalize:
        normalize_unit_sphere(torch.from_numpy(x))  # in place (shares memory with x)
    return apply_axis(x, axis).astype(np.float32)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_npz(
    path: str | Path,
    out: str | Path,
    *,
    name: str | None = None,
    axis: str = "none",
    num_points: int | None = None,
    normalize: bool = True,
    seed: int = 0,
    shard_size: int = 2048,
    overwrite: bool = False,
    progress: bool = True,
) -> PrepareResult:
    """Convert a point-cloud ``.npz`` into the HDF5 layout in ``out``.

    Args:
        path: the ``.npz`` (see the module docstring for its keys).
        out: output folder; finished shards of a run with the same parameters are kept.
        name: shard prefix; default the file's stem.
        axis: ``"none"`` or ``"z-up-to-y-up"`` (``(x, y, z) -> (x, z, -y)``).
        num_points: points per cloud; fewer than stored -> farthest-point sampling (seeded per
            sample from ``seed``); ``None`` keeps all.
        normalize: centre each cloud and scale it into the unit sphere (after subsampling).
        seed: seeds the first FPS pick of each sample.
        shard_size: samples per shard file.
        overwrite: replace an output made with other parameters instead of refusing.
        progress: show a tqdm bar over shards.

    Returns:
        A :class:`~data_prep.pipeline.PrepareResult`; samples with NaN/inf coordinates are
        skipped and listed.

    Raises:
        ValueError: bad arguments or input, or :class:`~data_prep.output.ManifestMismatch`.
        RuntimeError: another run holds ``out``.
        WriteError: an output file could not be written (disk full, no permission...); see
            :class:`data_prep.output.WriteError`. Finished shards are kept: rerun to resume.
    """
    from tqdm import tqdm

    t0 = time.perf_counter()
    path, out = Path(path).resolve(), Path(out)
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if not path.is_file():
        raise ValueError(f"input must be an existing .npz file, got {str(path)!r}")
    name = output.check_name(name if name is not None else path.stem)
    splits, classes = load_npz_splits(path)
    width = {p.shape[1] for p, _ in splits.values()}
    num = min(width) if num_points is None else num_points
    if not 1 <= num <= min(width):
        raise ValueError(
            f"num_points must be in [1, {min(width)}] (stored points), got {num_points}"
        )
    manifest = {
        "format": 1,
        "command": "npz",
        "input": str(path),
        "name": name,
        "axis": axis,
        "num_points": num,
        "normalize": normalize,
        "seed": seed,
        "shard_size": shard_size,
        "input_sha256": _sha256(path),
    }
    lock = output.lock_output(out)  # creates out
    try:
        output.prepare_output(out, manifest, overwrite)
        output.write_shape_names(out, classes)
        total = sum(len(p) for p, _ in splits.values())
        result = PrepareResult(name, "npz", str(out), total=total)
        with tqdm(total=total, unit="cloud", desc=f"prepare {name}", disable=not progress) as bar:
            for split in SPLITS:
                if split not in splits:
                    output.remove_stale_shards(out, name, split, 0)
                    continue
                points, labels = splits[split]
                finite = np.isfinite(points).all(axis=(1, 2))  # (N,)
                for i in np.flatnonzero(~finite):
                    result.skipped.append(
                        {"path": f"{path.name}:{split}/{i}", "reason": "non-finite points"}
                    )
                keep = np.flatnonzero(finite)
                files = [f"{path.name}:{split}/{i}" for i in keep]
                done = [0]

                def load(start, stop, keep=keep, points=points, split=split, done=done):
                    ids = keep[start:stop]
                    done[0] += len(ids)
                    bar.update(len(ids))
                    return _clouds(points[ids], ids, split, num, seed, axis, normalize)

                shards = output.write_split(
                    out, name, split, files, labels[keep].tolist(), classes, load, shard_size
                )
                bar.update(len(points) - done[0])  # skipped shards and non-finite samples
                result.computed += done[0]
                result.splits[split] = {"samples": len(keep), "shards": shards}
                result.converted += len(keep)
        result.seconds = time.perf_counter() - t0
        result.per_second = result.computed / result.seconds
        result.save()
        return result
    finally:
        lock.close()
