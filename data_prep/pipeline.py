"""Run a conversion: per-model work in worker processes, cached; shards assembled from the cache.

Each model's cloud is written to ``<out>/.cache/<hash>.npy`` (or its failure to ``<hash>.err``)
the moment it is done, atomically. A rerun with the same parameters skips every cached model and
every finished shard, so killing a run (even with SIGKILL) loses at most the models in flight,
and the final output equals that of one uninterrupted run.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import output
from .layouts import SPLITS, Collection
from .sampling import SamplingParams, mesh_to_points, torch_threads

EXIT_OK = 0
EXIT_SKIPPED = 3  # output written, but some inputs were bad and are listed in report.json


def default_workers() -> int:
    """``min(usable CPUs, 4)``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 4))


@dataclass
class PrepareResult:
    """What a conversion did (also saved as ``report.json``).

    Attributes:
        name: dataset name (shard prefix).
        command: ``shapenet``, ``modelnet``, ``folder`` or ``npz``.
        out: the output folder.
        total: inputs considered (models or clouds).
        converted: inputs now in the shards.
        computed: inputs processed by this run (the rest came from the cache of an earlier run).
        skipped: ``{"path", "reason"}`` for each bad input.
        excluded: ``{"path", "reason"}`` for inputs left out on purpose (e.g. not in split file).
        splits: split -> ``{"samples": n, "shards": [file names]}``.
        seconds: wall time of this run; ``per_second``: ``computed / seconds`` of processing.
    """

    name: str
    command: str
    out: str
    total: int = 0
    converted: int = 0
    computed: int = 0
    skipped: list[dict] = field(default_factory=list)
    excluded: list[dict] = field(default_factory=list)
    splits: dict = field(default_factory=dict)
    seconds: float = 0.0
    per_second: float = 0.0

    @property
    def exit_status(self) -> int:
        """0 if every input was converted, 3 if some were skipped (the output is still complete)."""
        return EXIT_SKIPPED if self.skipped else EXIT_OK

    def summary(self) -> str:
        """One paragraph for the terminal."""
        shards = sum(len(s["shards"]) for s in self.splits.values())
        counts = ", ".join(f"{k} {v['samples']}" for k, v in self.splits.items())
        text = (
            f"{self.name}: {self.converted}/{self.total} converted ({counts}) in {shards} shards; "
            f"{len(self.skipped)} skipped (reasons in {Path(self.out) / output.REPORT}); "
            f"{self.computed} processed this run in {self.seconds:.1f} s "
            f"({self.per_second:.2f}/s), {self.total - self.computed} reused"
        )
        if self.excluded:
            text += f"; {len(self.excluded)} excluded (see report)"
        return text

    def save(self) -> None:
        """Write ``report.json`` atomically."""
        report = asdict(self) | {"exit_status": self.exit_status}
        output.atomic_write_json(Path(self.out) / output.REPORT, report)


def cache_key(root: Path, rel: str) -> str:
    """File stem of a model's cache entry: a hash of its path, size and modification time, so
    an edited or replaced mesh is converted again."""
    try:
        st = (root / rel).stat()
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        stamp = "missing"
    return hashlib.sha256(f"{rel}\0{stamp}".encode()).hexdigest()[:32]


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def convert_one(root: str, rel: str, entry: str, params: SamplingParams) -> str | None:
    """Convert one model and cache the result; runs in a worker process.

    Args:
        root: collection root; rel: the model's path relative to it.
        entry: cache path without suffix (``<out>/.cache/<key>``).
        params: sampling parameters.

    Returns:
        ``None`` on success (``<entry>.npy`` written), else the reason (``<entry>.err`` written).
    """
    try:
        cloud = mesh_to_points(Path(root) / rel, rel, params)  # (P, 3) float32
    except Exception as exc:  # noqa: BLE001 - every failure is reported, never fatal
        reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        output.atomic_write_json(Path(f"{entry}.err"), {"path": rel, "reason": reason})
        return reason
    buf = io.BytesIO()
    np.save(buf, cloud, allow_pickle=False)
    output.atomic_write_bytes(Path(f"{entry}.npy"), buf.getvalue())
    return None


def _run_pending(root, tasks: list[tuple[str, str]], params, workers, bar) -> None:
    """Run :func:`convert_one` on ``tasks`` ``[(rel, entry)]``, in-process or in a pool."""
    if workers == 0 or len(tasks) <= 1:
        with torch_threads(1):
            for rel, entry in tasks:
                convert_one(str(root), rel, entry, params)
                bar.update(1)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork of a process with torch threads
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker)
    try:
        futures = [pool.submit(convert_one, str(root), r, e, params) for r, e in tasks]
        for fut in as_completed(futures):
            fut.result()
            bar.update(1)
    except BrokenProcessPool:
        raise RuntimeError(
            "a worker process died (out of memory, or a crash inside a mesh parser); finished "
            "models are cached: rerun to resume, or run with --workers 0 to find the model"
        ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def convert_collection(
    collection: Collection,
    root: str | Path,
    out: str | Path,
    *,
    name: str,
    command: str,
    params: SamplingParams,
    extra_params: dict | None = None,
    workers: int | None = None,
    shard_size: int = 2048,
    overwrite: bool = False,
    progress: bool = True,
    keep_cache: bool = True,
) -> PrepareResult:
    """Convert the meshes of ``collection`` into the HDF5 layout in ``out``.

    Args:
        collection: what a scanner of :mod:`data_prep.layouts` found under ``root``.
        root: the collection root (item paths are relative to it).
        out: output folder; resumed if it holds a run with the same parameters.
        name: shard file prefix (see :func:`data_prep.output.check_name`).
        command: the layout's command name (recorded in the manifest).
        params: sampling parameters.
        extra_params: layout options that change the output (split file, ratios...).
        workers: worker processes (0: in this process); default :func:`default_workers`.
        shard_size: samples per shard file.
        overwrite: replace an output made with other parameters instead of refusing.
        progress: show a tqdm bar.
        keep_cache: keep the per-model clouds in ``out/.cache`` after a complete run; without
            them a later run (e.g. after adding models) converts every model again.

    Returns:
        The :class:`PrepareResult` (also written to ``out/report.json``).

    Raises:
        ValueError: bad arguments, or :class:`~data_prep.output.ManifestMismatch`.
        RuntimeError: another run holds ``out``, or a worker process died.
        WriteError: an output or cache file could not be written (disk full, no permission...);
            see :class:`data_prep.output.WriteError`. Finished files are kept: rerun to resume.
    """
    from tqdm import tqdm

    output.check_name(name)
    workers = default_workers() if workers is None else workers
    if workers < 0 or shard_size < 1:
        raise ValueError(f"workers must be >= 0 and shard_size >= 1, got {workers}, {shard_size}")
    t0 = time.perf_counter()
    root, out = Path(root).resolve(), Path(out)
    manifest = {"format": 1, "command": command, "root": str(root), "name": name}
    manifest |= asdict(params) | (extra_params or {}) | {"shard_size": shard_size}
    lock = output.lock_output(out)  # creates out
    try:
        output.prepare_output(out, manifest, overwrite)
        output.write_shape_names(out, collection.classes)
        cache = out / output.CACHE
        with output.writing(cache):
            cache.mkdir(exist_ok=True)
        output.remove_temporaries(cache)
        keys = {it.path: cache_key(root, it.path) for it in collection.items}
        done = {p.name for p in cache.iterdir()}
        tasks = [
            (r, str(cache / k)) for r, k in keys.items() if not {f"{k}.npy", f"{k}.err"} & done
        ]
        rels = list(keys)
        bar = tqdm(
            total=len(rels),
            initial=len(rels) - len(tasks),
            unit="mesh",
            desc=f"prepare {name}",
            disable=not progress,
            dynamic_ncols=True,
        )
        t1 = time.perf_counter()
        with bar:
            _run_pending(root, tasks, params, workers, bar)
        t_proc = time.perf_counter() - t1
        result = PrepareResult(name, command, str(out), total=len(rels), computed=len(tasks))
        result.excluded = [{"path": p, "reason": r} for p, r in collection.excluded]
        _assemble(collection, keys, cache, out, params, shard_size, result)
        result.seconds = time.perf_counter() - t0
        result.per_second = len(tasks) / t_proc if tasks and t_proc > 0 else 0.0
        result.save()
        for p in cache.iterdir():  # entries of edited or removed meshes; clouds if not kept
            if p.stem not in keys.values() or (p.suffix == ".npy" and not keep_cache):
                p.unlink()
        return result
    finally:
        lock.close()


def _assemble(collection, keys, cache: Path, out: Path, params, shard_size, result) -> None:
    """Write every split's shards from the cache; fill ``result`` (converted, skipped, splits)."""
    label_of = {c: i for i, c in enumerate(collection.classes)}
    for split in SPLITS:
        good = []
        for it in collection.items:
            if it.split != split:
                continue
            if (cache / f"{keys[it.path]}.npy").is_file():
                good.append(it)
            else:
                err = json.loads((cache / f"{keys[it.path]}.err").read_text())
                result.skipped.append({"path": it.path, "reason": err["reason"]})
        if not good:
            output.remove_stale_shards(out, result.name, split, 0)
            continue

        def load(start, stop, good=good):
            entries = [cache / f"{keys[it.path]}.npy" for it in good[start:stop]]
            return np.stack([_load_cached(e, params) for e in entries])  # (B, P, 3)

        shards = output.write_split(
            out,
            result.name,
            split,
            files=[it.path for it in good],
            labels=[label_of[it.label] for it in good],
            classes=collection.classes,
            load_points=load,
            shard_size=shard_size,
            digests=[keys[it.path] for it in good],
        )
        result.splits[split] = {"samples": len(good), "shards": shards}
        result.converted += len(good)


def _load_cached(path: Path, params: SamplingParams) -> np.ndarray:
    cloud = np.load(path, allow_pickle=False)
    if cloud.shape != (params.num_points, 3) or cloud.dtype != np.float32:
        path.unlink()
        raise ValueError(
            f"cache file {str(path)!r} holds {cloud.shape} {cloud.dtype}, expected "
            f"({params.num_points}, 3) float32; it was deleted, rerun to recompute it"
        )
    return cloud
