"""Finding the meshes of a published collection layout, their class names and their splits.

Each scanner returns a :class:`Collection`: items (relative path, class, split) sorted by path,
plus the models it left out on purpose (for example, absent from an official split file).
Splits made here are deterministic: within each class, models are ordered by a hash of their
id and cut by the requested ratios (:func:`stratified_split`), so every class appears in every
split it has enough models for, and the result does not depend on the file system's order.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .meshes import MESH_SUFFIXES

SPLITS = ("train", "val", "test")
SHAPENET_MESH = Path("models") / "model_normalized.obj"


@dataclass(frozen=True)
class MeshItem:
    """One model: ``path`` relative to the collection root (POSIX), class name, split."""

    path: str
    label: str
    split: str


@dataclass
class Collection:
    """What a scanner found.

    Attributes:
        items: models to convert, sorted by path.
        classes: class names; a label is the index into this list (sorted alphabetically).
        excluded: ``(path, reason)`` of models deliberately left out (not bad meshes).
    """

    items: list[MeshItem]
    classes: list[str]
    excluded: list[tuple[str, str]] = field(default_factory=list)


def parse_ratios(ratios) -> tuple[float, float, float]:
    """Validate ``(train, val, test)`` fractions (or the string ``"0.7,0.1,0.2"``)."""
    if isinstance(ratios, str):
        try:
            ratios = [float(r) for r in ratios.split(",")]
        except ValueError:
            raise ValueError(
                f"ratios must be three numbers 'train,val,test', got {ratios!r}"
            ) from None
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) != 3 or min(ratios) < 0 or not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
        raise ValueError(f"ratios must be three fractions >= 0 summing to 1, got {ratios}")
    return ratios


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def stratified_split(keys_by_class: dict[str, list[str]], ratios) -> dict[str, str]:
    """Assign each key a split: per class, order keys by hash, cut at the ratio counts.

    Counts per class are ``ratios * n`` rounded by largest remainder (they sum to ``n``).

    Args:
        keys_by_class: class name -> model ids (unique).
        ratios: ``(train, val, test)`` fractions summing to 1.

    Returns:
        model id -> ``"train"``, ``"val"`` or ``"test"``.
    """
    ratios = parse_ratios(ratios)
    out: dict[str, str] = {}
    for keys in keys_by_class.values():
        keys = sorted(keys, key=lambda k: (_hash(k), k))
        exact = [r * len(keys) for r in ratios]
        counts = [math.floor(x) for x in exact]
        by_remainder = sorted(range(3), key=lambda i: (counts[i] - exact[i], i))
        for i in by_remainder[: len(keys) - sum(counts)]:  # largest remainders, train first
            counts[i] += 1
        bounds = [counts[0], counts[0] + counts[1]]
        for i, k in enumerate(keys):
            out[k] = "train" if i < bounds[0] else "val" if i < bounds[1] else "test"
    return out


def _check_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"root must be an existing directory, got {str(root)!r}")
    return root


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _finish(items: list[MeshItem], excluded, root: Path, what: str) -> Collection:
    if not items:
        raise ValueError(f"root {str(root)!r} holds no {what}")
    items.sort(key=lambda it: it.path)
    return Collection(items, sorted({it.label for it in items}), sorted(excluded))


def read_taxonomy(path: str | Path) -> dict[str, str]:
    """ShapeNet ``taxonomy.json`` -> ``{synsetId: first comma-separated name}``."""
    try:
        entries = json.loads(Path(path).read_text())
        return {str(e["synsetId"]): str(e["name"]).split(",")[0].strip() for e in entries}
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(
            f"taxonomy {str(path)!r}: expected a JSON list of {{'synsetId', 'name'}}: {exc}"
        ) from exc


def read_split_csv(path: str | Path) -> dict[tuple[str, str], str]:
    """ShapeNet's official split file (``all.csv``: ``id,synsetId,subSynsetId,modelId,split``).

    Returns:
        ``{(synsetId, modelId): split}`` plus ``{("", modelId): split}`` for lookups by model id.
    """
    out: dict[tuple[str, str], str] = {}
    try:
        with open(path, newline="") as f:
            for row_no, row in enumerate(csv.DictReader(f), start=2):
                split = row["split"].strip()
                if split not in SPLITS:
                    raise ValueError(f"row {row_no}: split {split!r} is not one of {SPLITS}")
                model = row["modelId"].strip()
                out[(row.get("synsetId", "").strip(), model)] = split
                out[("", model)] = split
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ValueError(
            f"split_file {str(path)!r}: expected a CSV with columns synsetId,modelId,split: {exc}"
        ) from exc
    return out


def scan_shapenet(
    root: str | Path,
    split_file: str | Path | None = None,
    taxonomy: str | Path | None = None,
    ratios=(0.7, 0.1, 0.2),
) -> Collection:
    """ShapeNetCore.v2: ``<synset>/<model>/models/model_normalized.obj``.

    Args:
        root: the collection root.
        split_file: the official ``all.csv``; models it does not list are excluded. ``None``:
            :func:`stratified_split` by model id with ``ratios``.
        taxonomy: ``taxonomy.json`` naming the synsets; default ``root/taxonomy.json`` when it
            exists, else the folder names are the class names.
        ratios: ``(train, val, test)`` fractions when there is no split file.
    """
    root = _check_root(root)
    if taxonomy is None and (root / "taxonomy.json").is_file():
        taxonomy = root / "taxonomy.json"
    names = read_taxonomy(taxonomy) if taxonomy is not None else {}
    official = read_split_csv(split_file) if split_file is not None else None
    found: list[tuple[str, str, str]] = []  # (synset, model id, class name)
    for synset in _subdirs(root):
        for model in _subdirs(synset):
            found.append((synset.name, model.name, names.get(synset.name, synset.name)))
    by_class: dict[str, list[str]] = defaultdict(list)
    for synset, model, label in found:
        by_class[label].append(f"{synset}/{model}")
    split_of = stratified_split(by_class, ratios) if official is None else {}
    items, excluded = [], []
    for synset, model, label in found:
        rel = f"{synset}/{model}/{SHAPENET_MESH.as_posix()}"
        if official is None:
            split = split_of[f"{synset}/{model}"]
        else:
            split = official.get((synset, model), official.get(("", model)))
            if split is None:
                excluded.append((rel, "not listed in split_file"))
                continue
        items.append(MeshItem(rel, label, split))
    return _finish(items, excluded, root, "<synset>/<model>/models/model_normalized.obj")


def scan_modelnet(root: str | Path) -> Collection:
    """ModelNet10/40: ``<class>/train/*.off`` and ``<class>/test/*.off`` (splits as given)."""
    root = _check_root(root)
    items = []
    for class_dir in _subdirs(root):
        for split in ("train", "test"):
            split_dir = class_dir / split
            if split_dir.is_dir():
                for f in sorted(split_dir.iterdir()):
                    if f.is_file() and f.suffix.lower() == ".off":
                        items.append(
                            MeshItem(f.relative_to(root).as_posix(), class_dir.name, split)
                        )
    return _finish(items, [], root, "<class>/{train,test}/*.off")


def scan_folder(root: str | Path, ratios=(0.7, 0.1, 0.2)) -> Collection:
    """Any class-per-folder collection: ``<class>/**/*.{obj,off,ply,stl,glb}``.

    Splits come from :func:`stratified_split` on the paths relative to the root.
    """
    root = _check_root(root)
    found: list[tuple[str, str]] = []
    for class_dir in _subdirs(root):
        for f in sorted(class_dir.rglob("*")):
            rel = f.relative_to(root)
            hidden = any(part.startswith(".") for part in rel.parts)
            if f.is_file() and f.suffix.lower() in MESH_SUFFIXES and not hidden:
                found.append((rel.as_posix(), class_dir.name))
    by_class: dict[str, list[str]] = defaultdict(list)
    for rel, label in found:
        by_class[label].append(rel)
    split_of = stratified_split(by_class, ratios)
    items = [MeshItem(rel, label, split_of[rel]) for rel, label in found]
    return _finish(items, [], root, f"<class>/*{{{','.join(MESH_SUFFIXES)}}} meshes")
