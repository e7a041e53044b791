"""Small mesh collections in the published layouts, with deliberately corrupt files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import trimesh

# Corrupt inputs and the words their skip reason must contain.
BAD_OFF = {
    "nan_vertex.off": (
        b"OFF\n4 4 0\n0 0 0\nnan 0 0\n0 1 0\n0 0 1\n3 0 1 2\n3 0 1 3\n3 0 2 3\n3 1 2 3\n",
        "non-finite",
    ),
    "zero_area.off": (
        b"OFF\n4 4 0\n0 0 0\n1 0 0\n2 0 0\n3 0 0\n3 0 1 2\n3 0 1 3\n3 0 2 3\n3 1 2 3\n",
        "zero surface area",
    ),
    "absurd_header.off": (b"OFF\n1000000000000 2000000000000 0\n0 0 0\n", "claims"),
    "empty.off": (b"", "empty file"),
    "one_face.off": (b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n", "too few faces"),
    "garbage.off": (bytes(range(256)) * 8, "not an OFF file"),
}


def shape(kind: str, rng: np.random.Generator) -> trimesh.Trimesh:
    """A small primitive with random proportions (few faces, so loading is fast)."""
    if kind == "box":
        return trimesh.creation.box(extents=rng.uniform(0.5, 2.0, 3))
    if kind == "sphere":
        mesh = trimesh.creation.icosphere(subdivisions=1, radius=float(rng.uniform(0.5, 1.5)))
        mesh.apply_scale(rng.uniform(0.7, 1.3, 3))
        return mesh
    if kind == "cylinder":
        r, h = rng.uniform(0.2, 1.0), rng.uniform(0.5, 2.0)
        return trimesh.creation.cylinder(radius=r, height=h, sections=10)
    if kind == "cone":
        return trimesh.creation.cone(radius=float(rng.uniform(0.3, 1.0)), height=1.5, sections=10)
    raise ValueError(f"kind: unknown shape {kind!r}")


def write(path: Path, data: bytes | trimesh.Trimesh) -> Path:
    """Write raw bytes or a mesh (format from the suffix) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_bytes(_as_bytes(data.export(file_type=path.suffix[1:])))
    return path


def _as_bytes(data) -> bytes:
    return data.encode() if isinstance(data, str) else data


def off_same_line_header(mesh: trimesh.Trimesh) -> bytes:
    """The ModelNet40 malformed variant: counts on the OFF line (``OFF8 12 0``)."""
    text = _as_bytes(mesh.export(file_type="off"))
    assert text.startswith(b"OFF\n")
    return b"OFF" + text[4:]


def build_modelnet(root: Path, per_split: int = 3, seed: int = 0) -> dict:
    """``<class>/{train,test}/<class>_NNNN.off`` for 3 classes plus the corrupt files of BAD_OFF.

    Returns:
        ``{"good": {rel: (class, split)}, "bad": {rel: reason words}}``.
    """
    rng = np.random.default_rng(seed)
    good, bad = {}, {}
    for cls in ("box", "cone", "sphere"):
        for split in ("train", "test"):
            for i in range(per_split):
                rel = f"{cls}/{split}/{cls}_{split}_{i:04d}.off"
                mesh = shape(cls, rng)
                data = off_same_line_header(mesh) if i == 0 else mesh
                write(root / rel, data)
                good[rel] = (cls, split)
    for j, (fname, (data, reason)) in enumerate(sorted(BAD_OFF.items())):
        cls = ("box", "cone", "sphere")[j % 3]
        rel = f"{cls}/{('train', 'test')[j % 2]}/{fname}"
        write(root / rel, data)
        bad[rel] = reason
    return {"good": good, "bad": bad}


def build_folder(root: Path, per_class: int = 5, seed: int = 1) -> dict:
    """``<class>/*.{obj,off,ply,stl,glb}``: every format in every class, plus corrupt files."""
    rng = np.random.default_rng(seed)
    formats = (".obj", ".off", ".ply", ".stl", ".glb")
    good, bad = {}, {}
    for cls in ("box", "cylinder", "sphere"):
        for i in range(per_class):
            rel = f"{cls}/{cls}_{i}{formats[i % len(formats)]}"
            write(root / rel, shape(cls, rng))
            good[rel] = cls
    write(root / "box/notes.txt", b"not a mesh, ignored")
    bad["box/garbage.ply"] = write(root / "box/garbage.ply", b"\x00\x13garbage" * 100) and "PLY"
    bad["sphere/empty.obj"] = write(root / "sphere/empty.obj", b"") and "empty file"
    flat = trimesh.Trimesh(vertices=[[0, 0, 0], [1, 0, 0], [2, 0, 0]], faces=[[0, 1, 2]] * 4)
    bad["cylinder/flat.stl"] = write(root / "cylinder/flat.stl", flat) and "zero surface area"
    return {"good": good, "bad": bad}


TAXONOMY = {"02691156": "airplane,aeroplane,plane", "03001627": "chair", "04379243": "table"}
SYNSET_SHAPE = {"02691156": "cone", "03001627": "box", "04379243": "cylinder"}


def build_shapenet(root: Path, per_class: int = 4, seed: int = 2, taxonomy: bool = True) -> dict:
    """``<synset>/<model>/models/model_normalized.obj`` (+ ``taxonomy.json``), plus a garbage
    OBJ and a model folder without its mesh.

    Returns:
        ``{"good": {rel: class name}, "bad": {rel: reason words}, "models": {model: synset}}``.
    """
    rng = np.random.default_rng(seed)
    good, bad, models = {}, {}, {}
    for synset, kind in SYNSET_SHAPE.items():
        name = TAXONOMY[synset].split(",")[0] if taxonomy else synset
        for _ in range(per_class):
            model = rng.bytes(8).hex()
            rel = f"{synset}/{model}/models/model_normalized.obj"
            write(root / rel, shape(kind, rng))
            good[rel], models[model] = name, synset
    bad_rel = "03001627/badbadbadbad/models/model_normalized.obj"
    bad[bad_rel] = write(root / bad_rel, b"v 0 0\nf 1 2 3 4 x\n\x00\xff" * 50) and "binary data"
    (root / "04379243/nomeshnomesh/models").mkdir(parents=True)
    bad["04379243/nomeshnomesh/models/model_normalized.obj"] = "missing file"
    models.update(badbadbadbad="03001627", nomeshnomesh="04379243")
    if taxonomy:
        entries = [{"synsetId": s, "name": n, "children": []} for s, n in TAXONOMY.items()]
        entries.append({"synsetId": "99999999", "name": "child,only", "children": []})
        (root / "taxonomy.json").write_text(json.dumps(entries))
    return {"good": good, "bad": bad, "models": models}
