"""Open3D offscreen rendering of point clouds (``OffscreenRenderer``, no display needed).

:func:`render_open3d` renders in this process. Open3D aborts the whole process (it does not
raise) when its renderer cannot start, e.g. without a Vulkan/EGL driver, so
:func:`viz.render.render_clouds` runs it in a child process (``python -m viz.offscreen IN OUT``,
:func:`main`) and falls back to matplotlib when the child fails.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from ._open3d import point_cloud, require_open3d, unlit_material
from .camera import Camera


def render_open3d(
    clouds: Sequence[tuple[np.ndarray, np.ndarray]],
    camera: Camera,
    width: int,
    height: int,
    point_size: float = 3.0,
    background: Sequence[float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """Renders each cloud alone with the same camera (one OffscreenRenderer for all).

    Args:
        clouds: K pairs ``(points (N_i, 3) float, colors (N_i, 3) float in [0, 1])``.
        camera: the shared :class:`~viz.camera.Camera` (perspective, its ``fov``).
        width, height: image size in pixels, >= 1.
        point_size: point diameter in pixels.
        background: RGB in [0, 1].

    Returns:
        (K, height, width, 3) uint8 images.
    """
    o3d = require_open3d()
    rendering = o3d.visualization.rendering
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
    renderer = rendering.OffscreenRenderer(int(width), int(height))
    try:
        scene = renderer.scene
        scene.set_background([*map(float, background), 1.0])
        scene.view.set_post_processing(False)  # flat colours: no tone mapping or anti-aliasing
        mat = unlit_material(point_size)
        images = []
        for points, colors in clouds:
            scene.clear_geometry()
            scene.add_geometry("cloud", point_cloud(points, colors), mat)
            cam = scene.camera
            cam.set_projection(
                camera.fov,
                width / height,
                0.01 * camera.radius,
                100.0 * camera.radius,
                rendering.Camera.FovType.Vertical,
            )
            cam.look_at(list(camera.center), list(camera.eye), list(camera.up))
            img = np.asarray(renderer.render_to_image())  # (H, W, 3) uint8
            images.append(img[..., :3].copy())
    finally:
        del renderer
    return np.stack(images) if images else np.zeros((0, height, width, 3), np.uint8)


def save_job(path, clouds, camera: Camera, width: int, height: int, point_size: float) -> None:
    """Writes a render job for :func:`main` to ``path`` (.npz)."""
    arrays = {}
    for i, (p, c) in enumerate(clouds):
        arrays[f"points_{i}"] = np.asarray(p, dtype=np.float32).reshape(-1, 3)
        arrays[f"colors_{i}"] = np.asarray(c, dtype=np.float32).reshape(-1, 3)
    np.savez(
        path,
        count=len(clouds),
        size=np.array([width, height]),
        point_size=float(point_size),
        center=camera.center,
        eye=camera.eye,
        up=camera.up,
        view=np.array([camera.fov, camera.radius, camera.elev, camera.azim]),
        up_axis=camera.up_axis,
        **arrays,
    )


def load_job(path) -> tuple[list[tuple[np.ndarray, np.ndarray]], Camera, int, int, float]:
    """Reads a job written by :func:`save_job`: (clouds, camera, width, height, point_size)."""
    with np.load(path) as f:
        n = int(f["count"])
        clouds = [(f[f"points_{i}"], f[f"colors_{i}"]) for i in range(n)]
        fov, radius, elev, azim = (float(v) for v in f["view"])
        camera = Camera(
            tuple(f["center"].tolist()),
            tuple(f["eye"].tolist()),
            tuple(f["up"].tolist()),
            fov,
            radius,
            elev,
            azim,
            str(f["up_axis"]),
        )
        width, height = (int(v) for v in f["size"])
        return clouds, camera, width, height, float(f["point_size"])


def main(argv: list[str] | None = None) -> int:
    """``python -m viz.offscreen JOB.npz OUT.npz``: renders a job, writes ``images`` to OUT."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m viz.offscreen JOB.npz OUT.npz", file=sys.stderr)
        return 2
    clouds, camera, width, height, point_size = load_job(args[0])
    images = render_open3d(clouds, camera, width, height, point_size)
    np.savez(args[1], images=images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
