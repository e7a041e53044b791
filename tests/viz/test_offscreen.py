"""Open3D's OffscreenRenderer on a tiny checkpoint (no display needed; skipped without Open3D)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from PIL import Image

pytest.importorskip(
    "open3d",
    reason="Open3D is not installed or cannot load (pip install crfold[viz])",
    exc_type=ImportError,
)

from viz.camera import fit_camera  # noqa: E402
from viz.cli import register_render  # noqa: E402
from viz.offscreen import load_job, save_job  # noqa: E402
from viz.render import render_clouds  # noqa: E402
from viz.session import InterpolationSession  # noqa: E402


def test_offscreen_render_has_the_requested_size_is_not_blank_and_follows_t(tiny_source):
    s = InterpolationSession(tiny_source, 0, 1, t=0.0, grid_size=16)
    c0 = s.decoded()
    s.set_t(1.0)
    c1 = s.decoded()
    camera = fit_camera([c0[0], c1[0]], up_axis=tiny_source.up_axis)
    images, used = render_clouds([c0, c1], camera, 160, 120, point_size=4, backend="open3d")
    assert used == "open3d"
    assert images.shape == (2, 120, 160, 3) and images.dtype == np.uint8
    for img in images:
        drawn = (img.min(-1) < 250).mean()
        assert 0.005 < drawn < 0.9, drawn  # points on the white background, not blank
        assert (img.max(-1).astype(int) - img.min(-1) > 80).mean() > 0.002  # grid colours
    changed = (np.abs(images[0].astype(int) - images[1]).max(-1) > 30).mean()
    assert changed > 0.002, changed  # t = 0 and t = 1 decode different clouds


def test_render_job_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    clouds = [(rng.normal(size=(10, 3)), rng.random((10, 3))) for _ in range(2)]
    cam = fit_camera([c[0] for c in clouds], up_axis="z", elev=12, azim=34)
    save_job(tmp_path / "job.npz", clouds, cam, 33, 21, 2.5)
    got, cam2, w, h, ps = load_job(tmp_path / "job.npz")
    assert (w, h, ps) == (33, 21, 2.5) and cam2 == cam
    np.testing.assert_allclose(got[1][0], clouds[1][0].astype(np.float32))


def test_cli_render_with_open3d(tiny_run, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    register_render(parser.add_subparsers())
    out = tmp_path / "fig.png"
    args = parser.parse_args(
        [
            "render",
            str(tiny_run),
            "--pairs",
            "0:1",
            "2:3",
            "--steps",
            "3",
            "--cell-size",
            "64",
            "--out",
            str(out),
            "--backend",
            "open3d",
        ]
    )
    assert args.func(args) == 0
    assert "open3d" in capsys.readouterr().out
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape == (2 * 64, 5 * 64, 3)
    assert (img.min(-1) < 250).mean() > 0.01
