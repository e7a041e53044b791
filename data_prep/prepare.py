"""One function per input layout: scan the collection, then convert it (Python API of the CLI)."""

from __future__ import annotations

import re
from pathlib import Path

from .layouts import parse_ratios, scan_folder, scan_modelnet, scan_shapenet
from .pipeline import PrepareResult, convert_collection
from .sampling import SamplingParams


def default_name(root: str | Path) -> str:
    """A shard prefix from a folder name: ``ModelNet40`` -> ``modelnet40``."""
    name = re.sub(r"[^a-z0-9_.-]+", "_", Path(root).resolve().name.lower()).strip("_.")
    return name or "dataset"


def _convert(collection, root, out, command, name, sampling, extra, **run) -> PrepareResult:
    params = SamplingParams(**sampling)
    name = name if name is not None else default_name(root)
    return convert_collection(
        collection, root, out, name=name, command=command, params=params, extra_params=extra, **run
    )


def prepare_shapenet(
    root: str | Path,
    out: str | Path,
    *,
    split_file: str | Path | None = None,
    taxonomy: str | Path | None = None,
    ratios=(0.7, 0.1, 0.2),
    name: str | None = "shapenetcorev2",
    sampling: dict | None = None,
    **run,
) -> PrepareResult:
    """ShapeNetCore.v2 (``<synset>/<model>/models/model_normalized.obj``) -> HDF5 layout.

    Args:
        root: the ShapeNetCore.v2 folder.
        out: output folder.
        split_file: official ``all.csv``; ``None`` splits by model id with ``ratios``.
        taxonomy: ``taxonomy.json``; default ``root/taxonomy.json`` if present, else folder names.
        ratios: ``(train, val, test)`` fractions, used without ``split_file``.
        name: shard prefix.
        sampling: :class:`~data_prep.sampling.SamplingParams` fields (``num_points``,
            ``dense_factor``, ``seed``, ``min_faces``, ``axis``).
        **run: :func:`~data_prep.pipeline.convert_collection` options (``workers``,
            ``shard_size``, ``overwrite``, ``progress``, ``keep_cache``).
    """
    ratios = parse_ratios(ratios)
    collection = scan_shapenet(root, split_file=split_file, taxonomy=taxonomy, ratios=ratios)
    extra = {
        "split_file": str(Path(split_file).resolve()) if split_file is not None else None,
        "taxonomy": str(Path(taxonomy).resolve()) if taxonomy is not None else None,
        "ratios": list(ratios) if split_file is None else None,
    }
    return _convert(collection, root, out, "shapenet", name, sampling or {}, extra, **run)


def prepare_modelnet(
    root: str | Path,
    out: str | Path,
    *,
    name: str | None = None,
    sampling: dict | None = None,
    **run,
) -> PrepareResult:
    """ModelNet10/40 (``<class>/{train,test}/*.off``) -> HDF5 layout (official splits).

    ``name`` defaults to the root folder's name in lower case (``modelnet40``); ``sampling`` and
    ``**run`` as in :func:`prepare_shapenet`, except that ``axis`` defaults to
    ``"z-up-to-y-up"``: ModelNet meshes are z-up, the published HDF5 layout is y-up.
    """
    collection = scan_modelnet(root)
    sampling = {"axis": "z-up-to-y-up"} | (sampling or {})
    return _convert(collection, root, out, "modelnet", name, sampling, {}, **run)


def prepare_folder(
    root: str | Path,
    out: str | Path,
    *,
    ratios=(0.7, 0.1, 0.2),
    name: str | None = None,
    sampling: dict | None = None,
    **run,
) -> PrepareResult:
    """Any ``<class>/**/*.{obj,off,ply,stl,glb}`` collection -> HDF5 layout.

    Splits per class by a hash of each file's relative path with ``ratios``. ``name`` defaults
    to the root folder's name; ``sampling`` and ``**run`` as in :func:`prepare_shapenet`.
    """
    ratios = parse_ratios(ratios)
    collection = scan_folder(root, ratios=ratios)
    extra = {"ratios": list(ratios)}
    return _convert(collection, root, out, "folder", name, sampling or {}, extra, **run)
