"""viz.render without Open3D: the matplotlib fallback, figure layout, messages, the CLI."""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

import viz.render as render
from viz.camera import fit_camera
from viz.cli import register_render, register_view
from viz.interp import grid_colors, interpolation_row
from viz.session import InterpolationSession


def _decoded_cells(source, grid_size=16):
    """The decoded clouds at t = 0 and t = 1 of shapes 0 and 1, grid-coloured."""
    s = InterpolationSession(source, 0, 1, t=0.0, grid_size=grid_size)
    c0 = s.decoded()
    s.set_t(1.0)
    c1 = s.decoded()
    return [c0, c1], fit_camera([c0[0], c1[0]], up_axis=source.up_axis)


def _non_white(img: np.ndarray) -> float:
    return float((img.min(-1) < 250).mean())


def test_matplotlib_fallback_renders_requested_size_and_differs(tiny_source):
    clouds, camera = _decoded_cells(tiny_source)
    images = render.render_clouds_matplotlib(clouds, camera, 120, 90, point_size=4)
    assert images.shape == (2, 90, 120, 3) and images.dtype == np.uint8
    assert 0.005 < _non_white(images[0]) < 0.9  # drawn points on a white background
    assert (np.abs(images[0].astype(int) - images[1]).max(-1) > 30).mean() > 0.002
    # The points carry their grid colours (saturated, not grey).
    sat = images[0].max(-1).astype(int) - images[0].min(-1)
    assert (sat > 80).mean() > 0.002


def test_auto_falls_back_to_matplotlib_with_a_message(tiny_source, monkeypatch):
    clouds, camera = _decoded_cells(tiny_source)
    messages = []

    def broken_worker(*args, **kwargs):
        raise RuntimeError("Open3D renderer failed (exit status -6): Unable to create Vulkan")

    monkeypatch.setattr(render, "_run_open3d_worker", broken_worker)
    monkeypatch.setattr(render.importlib.util, "find_spec", lambda name: object())
    images, used = render.render_clouds(clouds, camera, 64, 48, on_fallback=messages.append)
    assert used == "matplotlib" and images.shape == (2, 48, 64, 3)
    assert len(messages) == 1 and "Unable to create Vulkan" in messages[0]
    assert "matplotlib" in messages[0]
    with pytest.raises(RuntimeError, match="Vulkan"):
        render.render_clouds(clouds, camera, 64, 48, backend="open3d")
    with pytest.warns(RuntimeWarning, match="Open3D cannot render here"):
        render.render_clouds(clouds[:1], camera, 32, 32)


def test_missing_open3d_names_the_extra(tiny_source, monkeypatch):
    clouds, camera = _decoded_cells(tiny_source)
    monkeypatch.setitem(sys.modules, "open3d", None)  # `import open3d` raises ImportError
    monkeypatch.setattr(render.importlib.util, "find_spec", lambda name: None)
    from viz._open3d import require_open3d

    with pytest.raises(ImportError, match=r"pip install crfold\[viz\]"):
        require_open3d()
    with pytest.raises(ImportError, match=r"pip install crfold\[viz\]"):
        render.render_clouds(clouds, camera, 32, 32, backend="open3d")
    messages = []
    _, used = render.render_clouds(clouds, camera, 32, 32, on_fallback=messages.append)
    assert used == "matplotlib" and "crfold[viz]" in messages[0]


def test_render_figure_layout_and_captions(tiny_source):
    model = tiny_source.model
    rows = []
    for a, b in ((0, 1), (2, 3)):
        titles = (tiny_source.title(a), tiny_source.title(b))
        row, grid = interpolation_row(
            model, tiny_source.cloud(a), tiny_source.cloud(b), 3, titles=titles
        )
        rows.append(row)
    res = render.render_figure(rows, grid, cell_size=40, backend="matplotlib")
    assert res.image.size == (5 * 40, 2 * 40) and res.backend == "matplotlib"
    assert res.cells.shape == (2, 5, 40, 40, 3)
    labels = render.figure_labels(rows)
    assert labels[0] == [rows[0].title_a, "t = 0.00", "t = 0.50", "t = 1.00", rows[0].title_b]
    assert labels[1][1:4] == ["", "", ""]
    plain = render.render_figure(rows, grid, cell_size=40, backend="matplotlib", labels=False)
    assert np.asarray(plain.image).tobytes() != np.asarray(res.image).tobytes()  # captions drawn
    clouds = render.figure_clouds(rows, grid)
    np.testing.assert_array_equal(clouds[0][1][1], grid_colors(grid).numpy())
    with pytest.raises(ValueError, match="cell_size"):
        render.render_figure(rows, grid, cell_size=4, backend="matplotlib")
    with pytest.raises(ValueError, match="backend"):
        render.render_clouds(clouds[0], res.camera, 8, 8, backend="vtk")


def _parser():
    parser = argparse.ArgumentParser(prog="crfold")
    sub = parser.add_subparsers(dest="command")
    register_view(sub)
    register_render(sub)
    return parser


def test_cli_render_matplotlib_writes_the_figure(tiny_run, tmp_path, tiny_source, capsys):
    name = tiny_source.classes[tiny_source.label(2)]
    out = tmp_path / "fig.png"
    args = _parser().parse_args(
        [
            "render",
            str(tiny_run),
            "--pairs",
            "0:1",
            f"{name}:3",
            "--steps",
            "4",
            "--cell-size",
            "32",
            "--out",
            str(out),
            "--backend",
            "matplotlib",
            "--slerp",
        ]
    )
    assert args.func(args) == 0
    assert Image.open(out).size == (6 * 32, 2 * 32)
    assert "2 pairs x 4 steps, matplotlib" in capsys.readouterr().out
    bad = _parser().parse_args(["render", str(tiny_run), "--pairs", "0:lamp", "--out", str(out)])
    assert bad.func(bad) == 2
    assert "unknown class 'lamp'" in capsys.readouterr().err


def test_cli_view_without_a_display_says_how(tiny_run, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    args = _parser().parse_args(["view", str(tiny_run)])
    assert args.func(args) == 2
    assert "xvfb-run" in capsys.readouterr().err
    assert "DISPLAY" not in os.environ


def _render_args(run, out, *more):
    return _parser().parse_args(
        ["render", str(run), "--pairs", "0:1", "--steps", "2", "--cell-size", "32",
         "--backend", "matplotlib", "--out", str(out), *more]
    )  # fmt: skip


@pytest.fixture
def no_render(monkeypatch):
    """Records any figure that starts rendering (none may, when the command is refused)."""
    started = []
    monkeypatch.setattr(render, "render_figure", lambda *a, **k: started.append(1))
    return started


def test_cli_render_into_a_read_only_folder_fails_at_once(
    trained_run, tmp_path, make_read_only, no_render, capsys
):
    (tmp_path / "figures").mkdir()
    out = make_read_only(tmp_path / "figures")
    args = _render_args(trained_run, out / "fig.png")
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and f"crfold render: error: could not write {out / 'fig.png'}" in err
    )
    assert no_render == []
    bad = _render_args(trained_run, tmp_path / "fig.txt")
    assert bad.func(bad) == 2 and "--out: expected an image file name" in capsys.readouterr().err


def test_cli_render_reads_a_read_only_run(trained_run, tmp_path, make_read_only, capsys):
    run = make_read_only(shutil.copytree(trained_run, tmp_path / "run"))
    args = _render_args(run, tmp_path / "fig.png")
    assert args.func(args) == 0  # a run needs no write access to be drawn
    assert Image.open(tmp_path / "fig.png").size == (4 * 32, 32)
    assert "wrote" in capsys.readouterr().out


def test_cli_render_of_a_run_another_process_writes_names_it(
    trained_run, tmp_path, lock_held_elsewhere, no_render, capsys
):
    with lock_held_elsewhere(trained_run, "crfold train (foldingnet)") as pid:
        args = _render_args(trained_run, tmp_path / "fig.png")
        assert args.func(args) == 2
    err = capsys.readouterr().err
    assert f"crfold render: error: {trained_run}: in use by pid {pid} " in err
    assert "(crfold train (foldingnet))" in err and err.count("\n") == 1
    assert no_render == [] and not (tmp_path / "fig.png").exists()
