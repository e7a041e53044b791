"""Loading untrusted mesh files (OBJ, OFF, PLY, STL, GLB) into validated triangle arrays.

Headers that announce element counts (OFF, PLY, binary STL) are checked against the file size
*before* anything is parsed, so a header claiming 10^12 vertices is a :class:`MeshError`, not an
out-of-memory kill. OFF files are read by this module's header check, repaired in memory when the
counts follow ``OFF`` on the same line (``OFF123 456 0``, common in ModelNet40), then parsed by
trimesh. Every other format goes to :func:`trimesh.load` with materials skipped (ShapeNet OBJs
reference texture images that are absent). Scenes are flattened into one mesh.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

MESH_SUFFIXES = (".obj", ".off", ".ply", ".stl", ".glb")

# Smallest possible encodings, used as lower bounds on the bytes a declared count needs.
_OFF_MIN_VERTEX_BYTES = 6  # "0 0 0\n"
_OFF_MIN_FACE_BYTES = 8  # "3 0 1 2\n"
_PLY_SIZES = {
    "char": 1, "uchar": 1, "int8": 1, "uint8": 1,
    "short": 2, "ushort": 2, "int16": 2, "uint16": 2,
    "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4,
    "double": 8, "float64": 8,
}  # fmt: skip
_HEADER_PEEK = 1 << 16  # bytes read to find a header


class MeshError(ValueError):
    """A mesh file that cannot be turned into a point cloud; the message says why."""


def check_off_header(head: bytes, file_size: int) -> tuple[int, int, int]:
    """Parse and bound-check an OFF header.

    Args:
        head: the first bytes of the file (at least the header; 64 KiB is plenty).
        file_size: size of the whole file in bytes.

    Returns:
        ``(num_vertices, num_faces, keyword_end)``: the declared counts and the byte offset just
        past the ``OFF`` keyword (where a newline must be inserted for the ``OFF123 456 0``
        variant).

    Raises:
        MeshError: no OFF keyword, missing or non-integer counts, or counts that cannot fit in
            ``file_size`` bytes.
    """
    match = re.match(rb"\s*(?:#[^\n]*\n\s*)*((?:ST)?C?N?4?n?OFF)", head)
    if match is None:
        raise MeshError("not an OFF file: the first word is not OFF")
    keyword_end = match.end(1)
    tokens: list[bytes] = []
    for line in head[keyword_end:].splitlines():
        line = line.split(b"#", 1)[0]
        tokens.extend(line.split())
        if len(tokens) >= 2:
            break
    try:
        nv, nf = int(tokens[0]), int(tokens[1])
    except (IndexError, ValueError):
        raise MeshError(
            "malformed OFF header: expected 'num_vertices num_faces num_edges'"
        ) from None
    if nv < 0 or nf < 0:
        raise MeshError(f"malformed OFF header: negative counts ({nv} vertices, {nf} faces)")
    needed = nv * _OFF_MIN_VERTEX_BYTES + nf * _OFF_MIN_FACE_BYTES
    if needed > file_size:
        raise MeshError(
            f"OFF header claims {nv} vertices and {nf} faces (at least {needed} bytes) but the "
            f"file has {file_size} bytes"
        )
    return nv, nf, keyword_end


def check_ply_header(head: bytes, file_size: int) -> None:
    """Bound-check the element counts declared in a PLY header against the file size.

    Raises:
        MeshError: no ``end_header`` in the first 64 KiB, an unknown format or property type, or
            declared elements that need more bytes than the file has.
    """
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise MeshError("not a PLY file or header longer than 64 KiB (no 'end_header')")
    lines = head[:end].decode("ascii", errors="replace").splitlines()
    fmt = next((ln.split()[1] for ln in lines if ln.startswith("format ")), None)
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise MeshError(f"PLY header has unknown format {fmt!r}")
    needed = 0
    count, per_item = 0, 0
    for line in lines + ["element end 0"]:
        words = line.split()
        if not words:
            continue
        if words[0] == "element":
            needed += count * per_item
            try:
                count, per_item = int(words[2]), 0
            except (IndexError, ValueError):
                raise MeshError(f"malformed PLY element line {line!r}") from None
            if count < 0:
                raise MeshError(f"PLY header declares a negative count: {line!r}")
        elif words[0] == "property":
            try:
                if words[1] == "list":  # a face list holds at least a count and 3 indices
                    binary = _PLY_SIZES[words[2]] + 3 * _PLY_SIZES[words[3]]
                    per_item += 8 if fmt == "ascii" else binary
                else:
                    binary = _PLY_SIZES[words[1]]
                    per_item += 2 if fmt == "ascii" else binary
            except (IndexError, KeyError):
                raise MeshError(f"PLY header has an unknown property line {line!r}") from None
    if needed > file_size:
        raise MeshError(
            f"PLY header declares elements needing {needed} bytes; file has {file_size}"
        )


def check_stl_header(head: bytes, file_size: int) -> None:
    """Bound-check the triangle count of a binary STL (ASCII STL is left to the parser).

    Raises:
        MeshError: a binary STL whose declared triangle count needs more bytes than the file has.
    """
    if len(head) < 84:
        return
    count = int(np.frombuffer(head[80:84], dtype="<u4")[0])
    binary_size = 84 + 50 * count
    if head.lstrip().startswith(b"solid") and binary_size != file_size:
        return  # ASCII STL: memory use is proportional to the file size
    if binary_size > file_size:
        raise MeshError(
            f"binary STL header claims {count} triangles but file has {file_size} bytes"
        )


def load_mesh(path: str | Path, min_faces: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Load and validate one mesh file.

    Args:
        path: an ``.obj``, ``.off``, ``.ply``, ``.stl`` or ``.glb`` file. Scenes (several
            geometries, node transforms) are flattened into one mesh.
        min_faces: fewer triangles than this is a :class:`MeshError`.

    Returns:
        ``(vertices, faces)``: vertices ``(V, 3)`` float64, all finite; faces ``(F, 3)`` int64
        indices into ``vertices``, ``F >= min_faces``.

    Raises:
        MeshError: unreadable or unsupported file, header counts larger than the file, no
            geometry, too few faces, NaN/inf vertices, face indices out of range.
    """
    import trimesh

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise MeshError(f"unsupported mesh format {suffix!r}; expected one of {MESH_SUFFIXES}")
    if not path.is_file():
        raise MeshError("missing file")
    try:
        size = path.stat().st_size
        if size == 0:
            raise MeshError("empty file (0 bytes)")
        with open(path, "rb") as f:
            head = f.read(_HEADER_PEEK)
        kwargs = {"force": "mesh", "process": False}
        if suffix == ".off":
            _, _, keyword_end = check_off_header(head, size)
            data = path.read_bytes()
            data = data[:keyword_end] + b"\n" + data[keyword_end:]  # "OFF123 4 0" -> "OFF\n123 .."
            mesh = trimesh.load(io.BytesIO(data), file_type="off", **kwargs)
        elif suffix == ".obj":
            mesh = trimesh.load(_obj_text(path), file_type="obj", skip_materials=True, **kwargs)
        else:
            if suffix == ".ply":
                check_ply_header(head, size)
            elif suffix == ".stl":
                check_stl_header(head, size)
            mesh = trimesh.load(str(path), file_type=suffix[1:], **kwargs)
    except MeshError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure means "unreadable"
        raise MeshError(f"unreadable: {type(exc).__name__}: {exc}") from exc
    return _validate(mesh, min_faces)


def _obj_text(path: Path) -> io.BytesIO:
    """An OBJ file as UTF-8 bytes: Latin-1 text is re-encoded (trimesh would otherwise need
    ``charset_normalizer`` to guess), binary data is refused."""
    data = path.read_bytes()
    if b"\x00" in data[:_HEADER_PEEK]:
        raise MeshError("binary data (NUL bytes) in an OBJ file, which is text")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        data = data.decode("latin-1").encode("utf-8")
    return io.BytesIO(data)


def _validate(mesh, min_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Check a loaded trimesh object; return ``(vertices (V,3) float64, faces (F,3) int64)``."""
    vertices = getattr(mesh, "vertices", None)
    faces = getattr(mesh, "faces", None)
    vertices = np.asarray(vertices if vertices is not None else np.zeros((0, 3)), dtype=np.float64)
    faces = np.asarray(faces if faces is not None else np.zeros((0, 3)), dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) == 0:
        raise MeshError("empty mesh: no vertices")
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise MeshError("empty mesh: no faces")
    if len(faces) < min_faces:
        raise MeshError(f"too few faces: {len(faces)} < min_faces={min_faces}")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise MeshError(f"face index out of range [0, {len(vertices)})")
    if not np.isfinite(vertices).all():
        bad = int((~np.isfinite(vertices)).any(axis=1).sum())
        raise MeshError(f"non-finite vertex coordinates (NaN/inf) in {bad} vertices")
    return vertices, faces
