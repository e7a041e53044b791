"""data_prep.meshes: header checks before allocation, loading every format, validation."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import trimesh

from data_prep.meshes import (
    MeshError,
    check_off_header,
    check_ply_header,
    check_stl_header,
    load_mesh,
)

from .builders import BAD_OFF, off_same_line_header, write


def test_off_header_counts_and_keyword_end():
    assert check_off_header(b"OFF\n8 12 0\n", 1000) == (8, 12, 3)
    assert check_off_header(b"# made by hand\n\nOFF\n# c\n8 12 0\n", 1000)[:2] == (8, 12)
    assert check_off_header(b"OFF8 12 0\n", 1000) == (8, 12, 3)  # ModelNet40 variant
    assert check_off_header(b"COFF 4 2 0\n", 1000)[:2] == (4, 2)


@pytest.mark.parametrize(
    ("head", "words"),
    [
        (b"OFF\n1000000000000 2 0\n", "claims"),
        (b"OFF1000000 1000000 0\n", "claims"),
        (b"OFF\n-1 4 0\n", "negative"),
        (b"OFF\n", "malformed"),
        (b"OFF\nabc def\n", "malformed"),
        (b"PLY\n3 1 0\n", "not an OFF"),
    ],
)
def test_off_header_rejects(head, words):
    with pytest.raises(MeshError, match=words):
        check_off_header(head, 200)


def test_ply_header_bounds():
    ascii_head = b"ply\nformat ascii 1.0\nelement vertex %d\nproperty float x\nproperty float y\n"
    ascii_head += b"property float z\nelement face 1\nproperty list uchar int vertex_indices\n"
    ascii_head += b"end_header\n"
    check_ply_header(ascii_head % 3, 200)
    with pytest.raises(MeshError, match="needing"):
        check_ply_header(ascii_head % 10**12, 200)
    binary = ascii_head.replace(b"ascii", b"binary_little_endian") % 10
    check_ply_header(binary, 10 * 12 + 13 + 200)
    with pytest.raises(MeshError, match="needing"):
        check_ply_header(binary, 10 * 12)
    with pytest.raises(MeshError, match="end_header"):
        check_ply_header(b"ply\nformat ascii 1.0\n", 100)
    with pytest.raises(MeshError, match="unknown property"):
        check_ply_header(b"ply\nformat ascii 1.0\nelement v 1\nproperty quad x\nend_header\n", 99)


def test_stl_header_bounds():
    head = b"\0" * 80 + struct.pack("<I", 2)
    check_stl_header(head, 84 + 100)
    with pytest.raises(MeshError, match="claims 2 triangles"):
        check_stl_header(head, 84 + 99)
    huge = b"\0" * 80 + struct.pack("<I", 2**32 - 1)
    with pytest.raises(MeshError, match="claims"):
        check_stl_header(huge, 84)
    check_stl_header(b"solid x\n" + b" " * 76 + struct.pack("<I", 2**31), 500)  # ASCII STL


@pytest.mark.parametrize("suffix", [".obj", ".off", ".ply", ".stl", ".glb"])
def test_every_format_loads_the_same_surface(tmp_path, suffix):
    box = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    vertices, faces = load_mesh(write(tmp_path / f"box{suffix}", box))
    assert vertices.dtype == np.float64 and faces.dtype == np.int64
    assert faces.shape == (12, 3)
    area = trimesh.Trimesh(vertices, faces, process=False).area
    assert area == pytest.approx(box.area, rel=1e-5)


def test_off_with_counts_on_the_keyword_line_loads(tmp_path):
    sphere = trimesh.creation.icosphere(subdivisions=1)
    path = write(tmp_path / "x.off", off_same_line_header(sphere))
    assert path.read_bytes().startswith(b"OFF42 80 0")
    vertices, faces = load_mesh(path)
    assert vertices.shape == (42, 3) and faces.shape == (80, 3)


def test_scene_is_flattened_with_transforms(tmp_path):
    scene = trimesh.Scene()
    scene.add_geometry(trimesh.creation.box(), transform=trimesh.transformations.scale_matrix(2))
    scene.add_geometry(trimesh.creation.icosphere(subdivisions=0))
    path = write(tmp_path / "scene.glb", b"")
    path.write_bytes(scene.export(file_type="glb"))
    vertices, faces = load_mesh(path)
    assert faces.shape == (12 + 20, 3)
    assert np.abs(vertices).max() == pytest.approx(1.0)  # the box scaled x2: half-extent 1


@pytest.mark.parametrize("fname", sorted(BAD_OFF))
def test_corrupt_off_files_raise_with_reason(tmp_path, fname):
    data, reason = BAD_OFF[fname]
    path = write(tmp_path / fname, data)
    if reason == "zero surface area":  # loads; rejected when sampling (see test_sampling)
        assert load_mesh(path)[1].shape == (4, 3)
        return
    with pytest.raises(MeshError, match=reason):
        load_mesh(path)


def test_other_bad_inputs(tmp_path):
    with pytest.raises(MeshError, match="missing file"):
        load_mesh(tmp_path / "absent.obj")
    with pytest.raises(MeshError, match="unsupported"):
        load_mesh(write(tmp_path / "a.dae", b"<xml/>"))
    with pytest.raises(MeshError, match="binary data"):
        load_mesh(write(tmp_path / "a.obj", b"v 1 2 3\n\x00\x01"))
    with pytest.raises(MeshError, match="no vertices"):
        load_mesh(write(tmp_path / "b.obj", b"hello\nworld\n"))
    with pytest.raises(MeshError, match="out of range|unreadable"):
        load_mesh(
            write(tmp_path / "c.off", b"OFF\n3 4 0\n0 0 0\n1 0 0\n0 1 0\n" + b"3 0 1 7\n" * 4)
        )
    with pytest.raises(MeshError, match="non-finite"):
        load_mesh(write(tmp_path / "d.obj", b"v inf 0 0\nv 1 0 0\nv 0 1 0\n" + b"f 1 2 3\n" * 4))
    with pytest.raises(MeshError, match="too few faces: 4 < min_faces=5"):
        load_mesh(write(tmp_path / "e.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\n" + b"f 1 2 3\n" * 4), 5)


def test_latin1_obj_loads(tmp_path):
    text = "# caf\xe9\nv 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\n"
    vertices, faces = load_mesh(write(tmp_path / "t.obj", text.encode("latin-1")))
    assert vertices.shape == (4, 3) and faces.shape == (4, 3)
