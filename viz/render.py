"""Rendered interpolation figures (the paper's Figure 2): rows = pairs, columns = steps.

Every cell is one cloud drawn alone with the same camera (:func:`viz.camera.fit_camera` over all
clouds of the figure): the input A, the decoded clouds at t = 0 .. 1 (coloured by their grid
coordinate), the input B. Open3D's OffscreenRenderer draws the cells when it can (no display
needed); otherwise matplotlib's 3-D scatter does, with a message saying why.

>>> rows, grid = ..., ...                                     # viz.interp.interpolation_row
>>> result = render_figure(rows, grid, up_axis="z", cell_size=256)
>>> result.image.save("fig.png"); result.backend              # "open3d" or "matplotlib"
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .camera import Camera, fit_camera
from .interp import InterpolationRow, grid_colors, input_colors

BACKENDS = ("auto", "open3d", "matplotlib")
WORKER_TIMEOUT_S = 300.0
_TEXT_COLOR = (60, 60, 60)


def default_point_size(cell: int) -> float:
    """Point diameter in pixels for a cell of ``cell`` pixels (3 px at 256)."""
    return max(1.5, 3.0 * cell / 256)


# --------------------------------------------------------------------------- cell renderers
def render_clouds_matplotlib(
    clouds: Sequence[tuple[np.ndarray, np.ndarray]],
    camera: Camera,
    width: int,
    height: int,
    point_size: float = 3.0,
) -> np.ndarray:
    """matplotlib 3-D scatter of each cloud (orthographic, same view and limits for all).

    Args and returns as :func:`viz.offscreen.render_open3d`: K ``(points (N, 3), colors (N, 3))``
    -> (K, height, width, 3) uint8.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100
    c, r = np.asarray(camera.center), camera.radius
    images = []
    for points, colors in clouds:
        fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_axes((0, 0, 1, 1), projection="3d")
        ax.set_proj_type("ortho")
        ax.view_init(elev=camera.elev, azim=camera.azim, vertical_axis=camera.up_axis)
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        size_pt = point_size * 72.0 / dpi  # marker diameter: pixels -> points
        ax.scatter(
            p[:, 0],
            p[:, 1],
            p[:, 2],
            c=np.clip(colors, 0, 1),
            s=size_pt**2,
            marker="o",
            linewidths=0,
            depthshade=False,
        )
        ax.set_xlim(c[0] - r, c[0] + r)
        ax.set_ylim(c[1] - r, c[1] + r)
        ax.set_zlim(c[2] - r, c[2] + r)
        ax.set_box_aspect((1, 1, 1), zoom=1.4)
        ax.set_axis_off()
        canvas.draw()
        img = np.asarray(canvas.buffer_rgba())[..., :3]  # (H', W', 3)
        images.append(_fit(img, width, height))
    return np.stack(images) if images else np.zeros((0, height, width, 3), np.uint8)


def _fit(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Crops / pads (white) an (H', W', 3) uint8 image to exactly (height, width, 3)."""
    out = np.full((height, width, 3), 255, np.uint8)
    h, w = min(height, img.shape[0]), min(width, img.shape[1])
    out[:h, :w] = img[:h, :w]
    return out


def _run_open3d_worker(clouds, camera: Camera, width: int, height: int, point_size: float):
    """Renders with Open3D in a child process (an Open3D renderer failure aborts its process).

    Raises:
        RuntimeError: the child failed; the message holds the end of its output.
    """
    from .offscreen import save_job

    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    with tempfile.TemporaryDirectory(prefix="crfold-render-") as tmp:
        job, out = Path(tmp) / "job.npz", Path(tmp) / "out.npz"
        save_job(job, clouds, camera, width, height, point_size)
        cmd = [sys.executable, "-m", "viz.offscreen", str(job), str(out)]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=env, timeout=WORKER_TIMEOUT_S
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(
                f"Open3D renderer did not finish in {WORKER_TIMEOUT_S:.0f} s"
            ) from exc
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-4:]
            raise RuntimeError(
                f"Open3D renderer failed (exit status {proc.returncode}): " + " | ".join(tail)
            )
        with np.load(out) as f:
            return f["images"]


def render_clouds(
    clouds: Sequence[tuple[np.ndarray, np.ndarray]],
    camera: Camera,
    width: int,
    height: int,
    point_size: float | None = None,
    backend: str = "auto",
    on_fallback: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, str]:
    """Renders each cloud alone with ``camera``, with Open3D if possible.

    Args:
        clouds: K pairs ``(points (N_i, 3) float, colors (N_i, 3) float in [0, 1])``.
        camera: the shared camera.
        width, height: cell size in pixels, >= 1.
        point_size: point diameter in pixels; None: :func:`default_point_size`.
        backend: "auto" (Open3D, else matplotlib with a message), "open3d" (errors raise) or
            "matplotlib".
        on_fallback: called with the message when "auto" falls back; None: ``warnings.warn``.

    Returns:
        ((K, height, width, 3) uint8 images, the backend that drew them).

    Raises:
        ImportError: ``backend="open3d"`` without Open3D (names the extra).
        RuntimeError: ``backend="open3d"`` and the renderer failed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
    size = default_point_size(min(width, height)) if point_size is None else point_size
    if backend == "matplotlib":
        return render_clouds_matplotlib(clouds, camera, width, height, size), "matplotlib"
    if importlib.util.find_spec("open3d") is None:
        reason = "Open3D is not installed (pip install crfold[viz])"
        if backend == "open3d":
            from ._open3d import require_open3d

            require_open3d()  # raises the ImportError that names the extra
    else:
        try:
            return _run_open3d_worker(clouds, camera, width, height, size), "open3d"
        except RuntimeError as exc:
            if backend == "open3d":
                raise
            reason = str(exc)
    message = f"Open3D cannot render here ({reason}); drawing with matplotlib instead"
    (on_fallback or (lambda m: warnings.warn(m, RuntimeWarning, stacklevel=3)))(message)
    return render_clouds_matplotlib(clouds, camera, width, height, size), "matplotlib"


# --------------------------------------------------------------------------- figures
@dataclass
class RenderResult:
    """A rendered figure: ``image`` (PIL RGB), ``cells`` (R, C, H, W, 3) uint8, ``backend``."""

    image: object
    cells: np.ndarray
    backend: str
    camera: Camera


def figure_clouds(
    rows: Sequence[InterpolationRow], grid: torch.Tensor
) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """The cells of a figure: per row ``[input A, decoded t_0 .. t_T-1, input B]`` as
    ``(points (N, 3) float32, colors (N, 3) float32)``; decoded clouds coloured by ``grid``."""
    colors = grid_colors(grid).numpy()  # (M, 3)
    out = []
    for row in rows:
        cells = [(row.input_a.numpy(), input_colors(row.input_a.shape[0]).numpy())]
        cells += [(d.numpy(), colors) for d in row.decoded]
        cells.append((row.input_b.numpy(), input_colors(row.input_b.shape[0]).numpy()))
        out.append(cells)
    return out


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed-size bitmap font
        return ImageFont.load_default()


def compose(cells: np.ndarray, labels: Sequence[Sequence[str]] | None = None):
    """Tiles (R, C, H, W, 3) uint8 cells into one (R*H, C*W) PIL image, a caption in each cell.

    Args:
        cells: (R, C, H, W, 3) uint8.
        labels: R lists of C captions (empty strings draw nothing); None: no captions.
    """
    from PIL import Image, ImageDraw

    if cells.ndim != 5 or cells.shape[-1] != 3 or cells.dtype != np.uint8:
        raise ValueError(f"cells: expected (R, C, H, W, 3) uint8, got {cells.shape} {cells.dtype}")
    R, C, H, W, _ = cells.shape
    tiled = cells.transpose(0, 2, 1, 3, 4).reshape(R * H, C * W, 3)
    image = Image.fromarray(np.ascontiguousarray(tiled), "RGB")
    if labels is not None:
        draw = ImageDraw.Draw(image)
        font = _font(max(9, H // 16))
        pad = max(2, H // 64)
        for r, row in enumerate(labels):
            for c, text in enumerate(row):
                if text:
                    draw.text((c * W + pad, r * H + pad), text, fill=_TEXT_COLOR, font=font)
    return image


def figure_labels(rows: Sequence[InterpolationRow]) -> list[list[str]]:
    """Captions: the input titles in the end cells, ``t = 0.25`` over the first row's steps."""
    labels = []
    for i, row in enumerate(rows):
        steps = [f"t = {float(t):.2f}" if i == 0 else "" for t in row.ts]
        labels.append([row.title_a, *steps, row.title_b])
    return labels


def render_figure(
    rows: Sequence[InterpolationRow],
    grid: torch.Tensor,
    up_axis: str = "y",
    cell_size: int = 256,
    elev: float = 20.0,
    azim: float = -60.0,
    point_size: float | None = None,
    backend: str = "auto",
    labels: bool = True,
    on_fallback: Callable[[str], None] | None = None,
) -> RenderResult:
    """Renders the interpolation grid: R rows, T + 2 columns of ``cell_size``² cells.

    Args:
        rows: R :class:`~viz.interp.InterpolationRow` with the same number T of steps.
        grid: (M, 2) grid of the decoded clouds (for their colours).
        up_axis: vertical axis of the data ("y" or "z").
        cell_size: side of each square cell in pixels; the image is (T + 2) * cell_size wide and
            R * cell_size high.
        elev, azim: view angles in degrees (matplotlib's convention).
        point_size: point diameter in pixels; None: scaled with ``cell_size``.
        backend: "auto" | "open3d" | "matplotlib" (see :func:`render_clouds`).
        labels: draw the captions of :func:`figure_labels`.
        on_fallback: called with the message when "auto" falls back to matplotlib.

    Returns:
        The :class:`RenderResult`.
    """
    if not rows:
        raise ValueError("rows: expected at least one interpolation row, got none")
    if len({len(r.ts) for r in rows}) != 1:
        raise ValueError("rows: expected the same number of steps in every row")
    if isinstance(cell_size, bool) or not isinstance(cell_size, int) or cell_size < 8:
        raise ValueError(f"cell_size: expected an int >= 8, got {cell_size!r}")
    per_row = figure_clouds(rows, grid)
    flat = [cell for row in per_row for cell in row]
    camera = fit_camera([p for p, _ in flat], up_axis=up_axis, elev=elev, azim=azim)
    images, used = render_clouds(
        flat, camera, cell_size, cell_size, point_size, backend, on_fallback
    )
    cells = images.reshape(len(per_row), len(per_row[0]), cell_size, cell_size, 3)
    image = compose(cells, figure_labels(rows) if labels else None)
    return RenderResult(image, cells, used, camera)
