"""One camera for every cell of a figure, shared by the Open3D and matplotlib renderers.

The view direction follows matplotlib's ``view_init(elev, azim, vertical_axis=up)`` convention,
so both backends look at the clouds from the same side. The camera looks at the centre of the
bounding sphere of all clouds of a figure and sits far enough for that sphere to fit its field of
view: every cell is drawn at the same scale from the same point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

UP_AXES = ("x", "y", "z")


def view_direction(elev: float, azim: float, up_axis: str = "y") -> np.ndarray:
    """Unit vector from the target towards the eye, as matplotlib's 3-D axes place it.

    Args:
        elev: elevation above the horizontal plane, degrees.
        azim: azimuth about the up axis, degrees.
        up_axis: "x", "y" or "z", the vertical axis of the data.

    Returns:
        (3,) float64 unit vector.
    """
    if up_axis not in UP_AXES:
        raise ValueError(f"up_axis: expected one of {UP_AXES}, got {up_axis!r}")
    e, a = math.radians(elev), math.radians(azim)
    p = np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])
    return np.roll(p, UP_AXES.index(up_axis) - 2)  # as matplotlib's Axes3D._roll_to_vertical


@dataclass(frozen=True)
class Camera:
    """A look-at camera.

    Attributes:
        center: (3,) point looked at.
        eye: (3,) camera position.
        up: (3,) up direction of the image.
        fov: vertical field of view, degrees.
        radius: radius of the bounding sphere the view was fitted to (about ``center``).
        elev, azim, up_axis: the view as given to :func:`fit_camera` (matplotlib's convention).
    """

    center: tuple[float, float, float]
    eye: tuple[float, float, float]
    up: tuple[float, float, float]
    fov: float
    radius: float
    elev: float
    azim: float
    up_axis: str


def fit_camera(
    clouds: Sequence[np.ndarray],
    up_axis: str = "y",
    elev: float = 20.0,
    azim: float = -60.0,
    fov: float = 30.0,
    margin: float = 1.05,
) -> Camera:
    """The camera that frames all ``clouds`` at once (same camera for every cell of a figure).

    Args:
        clouds: (N_i, 3) float arrays (any N_i >= 1; together at least one finite point).
        up_axis: "x", "y" or "z", the vertical axis of the data.
        elev, azim: view angles in degrees (matplotlib's convention), |elev| < 90.
        fov: vertical field of view in degrees, in (0, 180).
        margin: factor > 0 on the bounding-sphere radius (room around the shapes).

    Returns:
        The :class:`Camera` looking at the centre of the common bounding box.
    """
    if not -90 < elev < 90:
        raise ValueError(
            f"elev: expected degrees in (-90, 90) (the up axis must stay up), got {elev}"
        )
    if not 0 < fov < 180:
        raise ValueError(f"fov: expected degrees in (0, 180), got {fov}")
    if not margin > 0:
        raise ValueError(f"margin: expected a number > 0, got {margin}")
    pts = [np.asarray(c, dtype=np.float64).reshape(-1, 3) for c in clouds]
    allp = np.concatenate(pts) if pts else np.zeros((0, 3))
    allp = allp[np.isfinite(allp).all(1)]
    if allp.shape[0] == 0:
        raise ValueError("clouds: expected at least one finite point, got none")
    center = 0.5 * (allp.min(0) + allp.max(0))  # (3,)
    radius = float(np.linalg.norm(allp - center, axis=1).max()) * margin
    radius = max(radius, 1e-6)
    dist = radius / math.sin(math.radians(fov) / 2)
    eye = center + dist * view_direction(elev, azim, up_axis)
    up = np.zeros(3)
    up[UP_AXES.index(up_axis)] = 1.0
    return Camera(
        tuple(center.tolist()),
        tuple(eye.tolist()),
        tuple(up.tolist()),
        float(fov),
        radius,
        float(elev),
        float(azim),
        up_axis,
    )
