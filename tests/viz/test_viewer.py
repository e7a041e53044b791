"""GUI smoke test: the viewer under Xvfb, driven from code (skipped without Xvfb or Open3D)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip(
    "open3d",
    reason="Open3D is not installed or cannot load (pip install crfold[viz])",
    exc_type=ImportError,
)

ROOT = Path(__file__).resolve().parents[2]

# Runs in a child process: Open3D's gui.Application is a per-process singleton, and a renderer
# failure aborts the process rather than raising.
SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from viz.session import InterpolationSession
    from viz.source import load_source
    from viz.viewer import InterpolationViewer

    run, out = sys.argv[1], sys.argv[2]
    session = InterpolationSession(load_source(run), a=0, b=1, t=0.0)
    viewer = InterpolationViewer(session, out_dir=out, width=900, height=600, strip_steps=3)
    viewer.pump(seconds=0.5)
    at0 = viewer.decoded_points.copy()
    viewer.set_t(0.8)                       # what dragging the slider does
    viewer.pump(seconds=0.3)
    extent = float(np.ptp(at0, axis=0).max())
    res = {"slider": viewer.slider.double_value, "t": session.t,
           "moved": float(np.abs(viewer.decoded_points - at0).max()) / extent}
    viewer.set_method("slerp"); viewer.set_grid_size(12)
    viewer.set_shape("b", session.source.classes[session.source.label(2)])
    res["points"] = int(viewer.decoded_points.shape[0])
    res["png"] = str(viewer.save_png(wait=True))
    res["ply"] = str(viewer.save_ply())
    res["window"] = str(viewer.save_window_screenshot(out + "/window.png"))
    res["strip"] = str(viewer.export_strip(wait=True))
    viewer.set_show_inputs(False)
    viewer.pump(seconds=0.2)
    res["inputs_box"] = viewer.inputs_box.checked
    viewer.close()
    print("RESULT " + json.dumps(res))
    """
)


@pytest.fixture(scope="module")
def xvfb_display():
    """Starts ``Xvfb`` on a free display number (``-displayfd``); yields ":N"."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb): no X server for the GUI test")
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", "1", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline().strip()
    if not line.isdigit():
        proc.kill()
        proc.wait()
        pytest.skip(f"Xvfb could not start an X server (got {line!r})")
    yield f":{line}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.timeout(300)
def test_viewer_under_xvfb_moves_the_slider_and_saves(tiny_run, tmp_path, xvfb_display):
    env = dict(os.environ, DISPLAY=xvfb_display, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_run), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        cwd=ROOT,
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    res = json.loads(lines[-1][len("RESULT ") :])
    assert res["slider"] == pytest.approx(0.8) and res["t"] == pytest.approx(0.8)
    assert res["moved"] > 0.01  # z(0.8) decodes another cloud than z(0) (relative to its size)
    assert res["points"] == 144 and res["inputs_box"] is False  # grid 12 x 12, inputs hidden
    png = np.asarray(Image.open(res["png"]).convert("RGB"))
    assert png.shape[0] > 100 and png.shape[1] > 100
    assert (png.min(-1) < 250).mean() > 0.001  # the clouds are drawn
    assert Path(res["ply"]).stat().st_size > 144 * 12
    assert Image.open(res["strip"]).size == (5 * 256, 256)  # A, 3 steps, B
    window = Image.open(res["window"])
    assert window.size[0] >= 900 * 0.9 and window.size[1] >= 600 * 0.9
    assert np.asarray(window.convert("L")).std() > 5  # the panel and the scene, not one colour


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_view_command_screenshot_mode(tiny_run, tmp_path, xvfb_display):
    env = dict(os.environ, DISPLAY=xvfb_display, PYTHONPATH=str(ROOT))
    out = tmp_path / "viewer.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "viz.interpolate",
            str(tiny_run),
            "--a",
            "2",
            "--b",
            "3",
            "--t",
            "0.25",
            "--size",
            "800x500",
            "--screenshot",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"wrote {out}" in proc.stdout
    assert Image.open(out).size == (800, 500)
