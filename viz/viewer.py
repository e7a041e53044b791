"""The interactive latent-interpolation viewer (``open3d.visualization.gui``).

A 3-D scene with the decoded cloud (coloured by grid coordinate) between the two input clouds
(grey, toggleable), and a panel: the two shapes (index or class), t, slerp, the decode density,
and buttons that save a PNG of the 3-D view, the decoded cloud as PLY, and a rendered strip of the
whole interpolation. Every control is also a method (``set_t``, ``set_shape``, ``save_png``, ...)
so the viewer can be driven from code; :meth:`InterpolationViewer.pump` runs the event loop for a
while without blocking (``gui.Application.run`` blocks until the window closes).

Run it with ``crfold view RUN`` or ``python -m viz.interpolate RUN``; on a machine without a
display, under ``xvfb-run``.
"""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path

import numpy as np

from ._open3d import point_cloud, require_open3d, unlit_material
from .camera import view_direction
from .interp import INPUT_COLOR
from .session import GRID_SIZE_LIMITS, InterpolationSession

PANEL_EM = 19  # width of the control panel, in font heights
INPUT_GAP = 2.2  # the inputs sit this many cloud radii left and right of the decoded cloud
FOV = 60.0  # vertical field of view of the 3-D view, degrees


def application():
    """The initialized ``gui.Application`` singleton (initialized on first use)."""
    gui = require_open3d().visualization.gui
    app = gui.Application.instance
    if not getattr(application, "_initialized", False):
        app.initialize()
        application._initialized = True
    return app


class InterpolationViewer:
    """An Open3D window on an :class:`~viz.session.InterpolationSession`.

    Args:
        session: the state (shapes, t, method, grid size).
        out_dir: where the buttons save their files (names record the view).
        strip_steps: decoded clouds in an exported strip (>= 2).
        show_inputs: draw the input clouds beside the decoded one.
        width, height: window size in pixels.
        point_size: point diameter in pixels.
        elev, azim: initial view angles (matplotlib's convention, as ``crfold render``).
    """

    def __init__(
        self,
        session: InterpolationSession,
        out_dir: str | Path = ".",
        strip_steps: int = 7,
        show_inputs: bool = True,
        width: int = 1280,
        height: int = 720,
        point_size: float = 4.0,
        elev: float = 20.0,
        azim: float = -60.0,
    ):
        o3d = require_open3d()
        self._gui, self._rendering = o3d.visualization.gui, o3d.visualization.rendering
        self._o3d = o3d
        self.session = session
        self.out_dir = Path(out_dir)
        self.strip_steps = strip_steps
        self.show_inputs = show_inputs
        self.elev, self.azim = elev, azim
        self._material = unlit_material(point_size)
        self._pending: list[threading.Thread] = []
        self.last_saved: Path | None = None
        self._framed = False
        self.decoded_points: np.ndarray | None = None  # (M, 3) float32, the cloud shown
        self.app = application()
        self.window = self.app.create_window("crfold: latent interpolation", width, height)
        self._build()
        self._refresh_inputs(reset_camera=True)
        self._refresh_decoded()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        gui, w = self._gui, self.window
        em = w.theme.font_size
        self.scene = gui.SceneWidget()
        self.scene.scene = self._rendering.Open3DScene(w.renderer)
        self.scene.scene.set_background([1.0, 1.0, 1.0, 1.0])
        self.scene.scene.view.set_post_processing(False)  # exact colours, white background
        panel = gui.ScrollableVert(0.4 * em, gui.Margins(0.6 * em, 0.6 * em, 0.6 * em, 0.6 * em))
        self.panel = panel
        classes = self.session.source.classes
        self._pickers = {}
        for which in ("a", "b"):
            panel.add_child(gui.Label(f"Shape {which.upper()}"))
            row = gui.Horiz(0.4 * em)
            index = gui.NumberEdit(gui.NumberEdit.INT)
            index.set_limits(0, len(self.session.source) - 1)
            index.set_on_value_changed(lambda v, k=which: self._on_index(k, int(v)))
            combo = gui.Combobox()
            for name in classes:
                combo.add_item(name)
            combo.set_on_selection_changed(lambda text, _, k=which: self._on_class(k, text))
            row.add_child(index)
            row.add_child(combo)
            panel.add_child(row)
            title = gui.Label("")
            panel.add_child(title)
            self._pickers[which] = (index, combo, title)
        panel.add_fixed(0.5 * em)
        self.t_label = gui.Label("")
        panel.add_child(self.t_label)
        self.slider = gui.Slider(gui.Slider.DOUBLE)
        self.slider.set_limits(0.0, 1.0)
        self.slider.set_on_value_changed(self._on_t)
        panel.add_child(self.slider)
        self.slerp_box = gui.Checkbox("spherical interpolation (slerp)")
        self.slerp_box.set_on_checked(lambda on: self.set_method("slerp" if on else "lerp"))
        panel.add_child(self.slerp_box)
        self.grid_label = gui.Label("")
        panel.add_child(self.grid_label)
        self.grid_slider = gui.Slider(gui.Slider.INT)
        self.grid_slider.set_limits(*GRID_SIZE_LIMITS)
        self.grid_slider.set_on_value_changed(lambda v: self.set_grid_size(int(v)))
        panel.add_child(self.grid_slider)
        self.inputs_box = gui.Checkbox("show input clouds")
        self.inputs_box.set_on_checked(self.set_show_inputs)
        panel.add_child(self.inputs_box)
        panel.add_fixed(0.5 * em)
        for text, action in (
            ("Reset view", lambda: self.reset_camera()),
            ("Save PNG (3-D view)", lambda: self.save_png()),
            ("Save PLY (decoded cloud)", lambda: self.save_ply()),
            ("Export strip (rendered)", lambda: self.export_strip()),
        ):
            button = gui.Button(text)
            button.set_on_clicked(action)
            panel.add_child(button)
        self.status = gui.Label(f"files go to {self.out_dir.resolve()}")
        panel.add_child(self.status)
        w.add_child(self.scene)
        w.add_child(panel)
        w.set_on_layout(self._on_layout)
        self._sync_widgets()

    def _on_layout(self, ctx) -> None:
        r = self.window.content_rect
        width = min(r.width // 2, int(PANEL_EM * self.window.theme.font_size))
        self.scene.frame = self._gui.Rect(r.x, r.y, r.width - width, r.height)
        self.panel.frame = self._gui.Rect(r.get_right() - width, r.y, width, r.height)
        if not self._framed:  # the first layout: now the 3-D view's aspect ratio is known
            self._framed = True
            self.reset_camera()

    def _sync_widgets(self) -> None:
        """Shows the session's state in the widgets (after a change from code)."""
        s = self.session
        for which in ("a", "b"):
            index, combo, title = self._pickers[which]
            i = getattr(s, which)
            index.set_value(i)
            combo.selected_index = s.source.label(i)
            title.text = f"  {s.source.title(i)}"
        self.slider.double_value = s.t
        self.t_label.text = f"t = {s.t:.3f}  (z = (1 - t) z_A + t z_B)"
        self.slerp_box.checked = s.method == "slerp"
        self.grid_slider.int_value = s.grid_size
        self.grid_label.text = f"decode density: grid {s.grid_size}² = {s.grid_size**2} points"
        self.inputs_box.checked = self.show_inputs
        self.window.post_redraw()

    # ------------------------------------------------------------------ scene
    def _offset(self) -> np.ndarray:
        """(3,) translation from the decoded cloud to input B (input A gets its negative)."""
        d = view_direction(self.elev, self.azim, self.session.source.up_axis)
        up = np.zeros(3)
        up["xyz".index(self.session.source.up_axis)] = 1.0
        right = np.cross(-d, up)
        right /= np.linalg.norm(right)
        pa, pb = self.session.inputs()
        radius = max(np.linalg.norm(p - p.mean(0), axis=1).max() for p in (pa, pb))
        return right * INPUT_GAP * max(radius, 1e-3)

    def _set_geometry(self, name: str, points: np.ndarray, colors: np.ndarray) -> None:
        scene = self.scene.scene
        if scene.has_geometry(name):
            scene.remove_geometry(name)
        scene.add_geometry(name, point_cloud(points, colors), self._material)

    def _refresh_inputs(self, reset_camera: bool = False) -> None:
        (pa, pb), off = self.session.inputs(), self._offset()
        grey = np.asarray(INPUT_COLOR, np.float32)  # (3,)
        self._set_geometry("input_a", pa - off, np.broadcast_to(grey, pa.shape))
        self._set_geometry("input_b", pb + off, np.broadcast_to(grey, pb.shape))
        for name in ("input_a", "input_b"):
            self.scene.scene.show_geometry(name, self.show_inputs)
        if reset_camera:
            self.reset_camera()

    def _refresh_decoded(self) -> None:
        points, colors = self.session.decoded()  # (M, 3), (M, 3)
        self.decoded_points = points
        self._set_geometry("decoded", points, colors)
        self._sync_widgets()

    def reset_camera(self) -> None:
        """Frames the decoded cloud and both inputs (side by side) from the initial view angles.

        The distance fits the row of three clouds to the width of the 3-D view and one cloud to
        its height, whichever needs the camera farther away.
        """
        (pa, pb), off = self.session.inputs(), self._offset()
        decoded = pa if self.decoded_points is None else self.decoded_points  # (M, 3)
        clouds = [pa - off, pb + off, decoded]
        allp = np.concatenate(clouds)  # (P, 3)
        center = 0.5 * (allp.min(0) + allp.max(0))  # (3,)
        radius = max(float(np.linalg.norm(c - c.mean(0), axis=1).max()) for c in clouds)
        radius = max(radius, 1e-3)
        half_w, half_h = float(np.linalg.norm(off)) + radius, radius
        frame = self.scene.frame
        aspect = frame.width / frame.height if frame.height > 0 else 16 / 9
        tan_v = math.tan(math.radians(FOV) / 2)
        dist = 1.05 * max(half_w / (tan_v * aspect), half_h / tan_v) + 0.5 * radius
        eye = center + dist * view_direction(self.elev, self.azim, self.session.source.up_axis)
        up = np.zeros(3)
        up["xyz".index(self.session.source.up_axis)] = 1.0
        bounds = self._o3d.geometry.AxisAlignedBoundingBox(allp.min(0), allp.max(0))
        self.scene.setup_camera(FOV, bounds, center.astype(np.float32))
        self.scene.look_at(*(np.asarray(v, np.float32) for v in (center, eye, up)))
        self.window.post_redraw()

    # ------------------------------------------------------------------ controls (also from code)
    def _on_t(self, value: float) -> None:
        self.set_t(value)

    def set_t(self, t: float) -> None:
        """Moves the slider to ``t`` and decodes z(t) (as dragging the slider does)."""
        self.session.set_t(min(max(float(t), 0.0), 1.0))
        self._refresh_decoded()

    def set_method(self, method: str) -> None:
        self.session.method = method
        self._refresh_decoded()

    def set_grid_size(self, grid_size: int) -> None:
        self.session.grid_size = grid_size
        self._refresh_decoded()

    def set_show_inputs(self, show: bool) -> None:
        self.show_inputs = bool(show)
        for name in ("input_a", "input_b"):
            self.scene.scene.show_geometry(name, self.show_inputs)
        self._sync_widgets()

    def set_shape(self, which: str, spec: int | str) -> None:
        """Picks shape ``which`` ("a"/"b") by index, class name or ``class@rank``."""
        self.session.set_shape(which, spec)
        self._refresh_inputs()
        self._refresh_decoded()

    def _on_index(self, which: str, index: int) -> None:
        self._guard(lambda: self.set_shape(which, index))

    def _on_class(self, which: str, name: str) -> None:
        source = self.session.source
        if source.classes[source.label(getattr(self.session, which))] != name:
            self._guard(lambda: self.set_shape(which, name))

    def _guard(self, action) -> None:
        """Runs a widget action; a ValueError is shown in the status line instead of raised."""
        try:
            action()
        except ValueError as exc:
            self.status.text = str(exc)
            self._sync_widgets()

    # ------------------------------------------------------------------ outputs
    def _saved(self, path: Path) -> None:
        self.last_saved = path
        self.status.text = f"saved {path}"
        self.window.post_redraw()

    def save_png(self, path: str | Path | None = None, wait: bool = False) -> Path:
        """Saves the 3-D view as PNG (asynchronous: the file appears after the next frame).

        Args:
            path: destination; None: ``out_dir/<view>.png``.
            wait: pump the event loop until the file is written (from code, not from a callback).
        """
        path = Path(path) if path else self.session.default_path(self.out_dir, ".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        done = threading.Event()

        def write(image) -> None:
            self._o3d.io.write_image(str(path), image)
            self._saved(path)
            done.set()

        self.scene.scene.scene.render_to_image(write)
        self.window.post_redraw()
        if wait:
            self.pump(until=done.is_set, timeout=60.0)
            if not done.is_set():
                raise RuntimeError(f"save_png: no frame was rendered for {path}")
        return path

    def save_ply(self, path: str | Path | None = None) -> Path:
        """Writes the decoded cloud at the current t, with its grid colours, as PLY."""
        path = Path(path) if path else self.session.default_path(self.out_dir, ".ply")
        path.parent.mkdir(parents=True, exist_ok=True)
        points, colors = self.session.decoded()
        if not self._o3d.io.write_point_cloud(str(path), point_cloud(points, colors)):
            raise RuntimeError(f"save_ply: Open3D could not write {path}")
        self._saved(path)
        return path

    def export_strip(self, path: str | Path | None = None, wait: bool = False) -> Path:
        """Renders the whole interpolation of the current pair as one figure row (PNG).

        Runs in a background thread (the renderer runs in a child process; see
        :func:`viz.render.render_figure`); ``wait`` blocks until it is written.
        """
        from .render import render_figure

        path = Path(path) if path else self.session.default_path(self.out_dir, ".png", "strip_")
        path.parent.mkdir(parents=True, exist_ok=True)
        row, grid = self.session.strip(self.strip_steps)
        up = self.session.source.up_axis
        self.status.text = f"rendering {path.name} ..."

        def work() -> None:
            result = render_figure(
                [row], grid, up, elev=self.elev, azim=self.azim, on_fallback=lambda m: print(m)
            )
            result.image.save(path)
            self.app.post_to_main_thread(self.window, lambda: self._saved(path))

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        self._pending.append(thread)
        if wait:
            thread.join()
        return path

    def save_window_screenshot(self, path: str | Path) -> Path:
        """Saves the whole window (panel included) from the X server; else the 3-D view."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.pump(seconds=0.5)
        display = os.environ.get("DISPLAY")
        try:
            from PIL import ImageGrab

            f = self.window.os_frame
            box = (f.x, f.y, f.x + f.width, f.y + f.height)
            ImageGrab.grab(bbox=box, xdisplay=display).save(path)
        except (ImportError, OSError, ValueError, TypeError):
            return self.save_png(path, wait=True)
        self._saved(path)
        return path

    # ------------------------------------------------------------------ event loop
    def pump(self, seconds: float = 0.0, until=None, timeout: float = 30.0) -> None:
        """Runs the event loop (redrawing) for ``seconds``, or until ``until()`` is true."""
        end = time.monotonic() + (timeout if until is not None else seconds)
        while True:
            self.window.post_redraw()
            self.app.run_one_tick()
            if (until is not None and until()) or time.monotonic() >= end:
                return
            time.sleep(0.02)

    def run(self) -> None:
        """Runs the event loop until the window is closed."""
        self.app.run()

    def close(self) -> None:
        """Waits for pending strip exports, closes the window and lets the loop finish."""
        for thread in self._pending:
            thread.join()
        self.window.close()
        self.app.run_one_tick()
