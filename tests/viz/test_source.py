"""viz.source / viz.session / viz.camera: loading a run, picking shapes, the viewer's state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from viz.camera import fit_camera, view_direction
from viz.session import InterpolationSession
from viz.source import load_source, parse_pair, resolve_shape


def test_load_source_opens_the_runs_validation_split(tiny_run, tiny_source):
    src = tiny_source
    assert src.split == "val" and len(src) == 20 and src.up_axis == "y"
    assert src.cloud(3).shape == (64, 3) and src.cloud(3).dtype == torch.float32
    assert not src.model.training and src.model.latent_dim == 8
    assert src.title(3) == f"#3 {src.classes[src.label(3)]}"
    other = load_source(tiny_run, which="last", split="train", num_points=32)
    assert other.split == "train" and other.cloud(0).shape == (32, 3)
    with pytest.raises(FileNotFoundError):
        load_source(tiny_run / "missing")
    with pytest.raises(ValueError, match="which"):
        load_source(tiny_run, which="first")


def test_resolve_shape_by_index_class_and_rank(tiny_source):
    ds = tiny_source.dataset
    labels = ds.labels.tolist()
    name = ds.classes[labels[5]]
    members = [i for i, y in enumerate(labels) if y == labels[5]]
    assert resolve_shape(ds, 7) == 7 and resolve_shape(ds, "7") == 7 and resolve_shape(ds, -1) == 19
    assert resolve_shape(ds, name) == members[0]
    assert resolve_shape(ds, f"{name.upper()}@1") == members[1]
    assert parse_pair(f"3:{name}@1", ds) == (3, members[1])
    with pytest.raises(ValueError, match="unknown class 'lamp'"):
        resolve_shape(ds, "lamp")
    with pytest.raises(ValueError, match="no rank 99"):
        resolve_shape(ds, f"{name}@99")
    with pytest.raises(ValueError, match="index"):
        resolve_shape(ds, 20)
    with pytest.raises(ValueError, match="A:B"):
        parse_pair("3", ds)


def test_session_decodes_the_interpolation_and_validates(tiny_source):
    s = InterpolationSession(tiny_source, a=0, b=1, t=0.0)
    p0, colors = s.decoded()
    assert p0.shape == (64, 3) and colors.shape == (64, 3) and p0.dtype == np.float32
    s.set_t(1.0)
    p1, _ = s.decoded()
    assert not np.allclose(p0, p1)
    expected = tiny_source.model.decode(s.code(1).unsqueeze(0))[0].detach().numpy()
    np.testing.assert_allclose(p1, expected, atol=1e-6)
    s.grid_size, s.method = 12, "slerp"
    assert s.decoded()[0].shape == (144, 3)
    assert s.file_stem() == "interp_0_1_t1.00_slerp_g12"
    assert s.set_shape("b", tiny_source.classes[tiny_source.label(4)]) == s.b
    row, grid = s.strip(3)
    assert row.decoded.shape == (3, 144, 3) and grid.shape == (144, 2)
    for bad in (lambda: s.set_t(1.2), lambda: setattr(s, "grid_size", 1)):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(ValueError, match="method"):
        s.method = "nearest"
    with pytest.raises(ValueError, match="which"):
        s.set_shape("c", 0)


@pytest.mark.parametrize(
    ("up", "elev", "azim", "expected"),
    [
        ("z", 0, 0, (1, 0, 0)),  # matplotlib: azim 0 looks from +x, azim 90 from +y (z up)
        ("z", 0, 90, (0, 1, 0)),
        ("z", 89.999, 0, (0, 0, 1)),
        ("y", 0, 0, (0, 0, 1)),  # vertical_axis="y" rolls (x, y, z) -> (y, z, x)
        ("y", 0, 90, (1, 0, 0)),
        ("y", 89.999, 0, (0, 1, 0)),
    ],
)
def test_view_direction_follows_matplotlibs_convention(up, elev, azim, expected):
    np.testing.assert_allclose(view_direction(elev, azim, up), expected, atol=1e-4)


def test_fit_camera_frames_every_point():
    rng = np.random.default_rng(0)
    clouds = [rng.normal(size=(50, 3)), rng.normal(size=(30, 3)) + [3, 0, 0]]
    cam = fit_camera(clouds, up_axis="z", elev=10, azim=30, fov=30)
    eye, center = np.asarray(cam.eye), np.asarray(cam.center)
    forward = (center - eye) / np.linalg.norm(center - eye)
    pts = np.concatenate(clouds)
    rays = (pts - eye) / np.linalg.norm(pts - eye, axis=1, keepdims=True)
    assert np.degrees(np.arccos(np.clip(rays @ forward, -1, 1))).max() < 15  # inside fov / 2
    assert cam.up == (0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="elev"):
        fit_camera(clouds, elev=90)
    with pytest.raises(ValueError, match="finite"):
        fit_camera([np.full((3, 3), np.nan)])
