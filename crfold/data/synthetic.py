"""The embedded default dataset: procedural shapes sampled uniformly on their surfaces.

Ten classes of primitives with random proportions (y is up). Every shape is sampled uniformly
by area: faces/parts are chosen with probability proportional to their area, and curved parts
are sampled by inverse CDF (cylinder, cone, capsule, spheres) or exact rejection (torus,
ellipsoid). Clouds are then centred on their mean and scaled into the unit ball. Everything is
vectorized numpy and deterministic from the seed: 2,000 shapes x 1,024 points take about a
second on one core.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from .base import PointCloudSet, check_int

# fmt: off
SYNTHETIC_CLASSES = ("box", "sphere", "cylinder", "cone", "torus",
                     "capsule", "ellipsoid", "pyramid", "prism", "octahedron")
# fmt: on
DEFAULT_NUM_SHAPES = {"train": 2000, "val": 500, "test": 500}
_SPLIT_CODES = {"train": 0, "test": 1, "val": 2}

Params = dict[str, np.ndarray]


def _choose(rng: np.random.Generator, weights: np.ndarray, p: int) -> np.ndarray:
    """(n, p) part indices drawn with probability proportional to weights (n, K)."""
    cdf = np.cumsum(weights, axis=1)
    cdf /= cdf[:, -1:]
    u = rng.random((weights.shape[0], p))
    return np.minimum((u[:, :, None] >= cdf[:, None, :]).sum(-1), weights.shape[1] - 1)


def _on_sphere(rng: np.random.Generator, n: int, p: int) -> np.ndarray:
    """(n, p, 3) uniform points on the unit sphere."""
    v = rng.standard_normal((n, p, 3))
    return v / np.sqrt((v * v).sum(-1, keepdims=True))


def _mesh(rng: np.random.Generator, verts: np.ndarray, faces: Sequence, p: int) -> np.ndarray:
    """(n, p, 3) uniform points on triangle meshes: verts (n, V, 3), faces (F, 3) indices."""
    tri = verts[:, np.asarray(faces)]  # (n, F, 3, 3)
    area = 0.5 * np.linalg.norm(
        np.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0]), axis=-1
    )
    f = _choose(rng, area, p)  # (n, p)
    t = np.take_along_axis(tri, f[:, :, None, None], axis=1)  # (n, p, 3, 3)
    s, r = np.sqrt(rng.random((*f.shape, 1))), rng.random((*f.shape, 1))
    return (1 - s) * t[:, :, 0] + s * (1 - r) * t[:, :, 1] + s * r * t[:, :, 2]


def _rejection(
    rng: np.random.Generator, n: int, p: int, propose: Callable[[int], tuple]
) -> np.ndarray:
    """(n, p, 3): keeps each proposal with its acceptance probability until p per shape.

    ``propose(m)`` returns candidates (n, m, 3) and acceptance probabilities (n, m) in [0, 1].
    """
    out = np.empty((n, p, 3))
    filled = np.zeros(n, dtype=np.int64)
    while (filled < p).any():
        cand, prob = propose(2 * p)
        accept = rng.random(prob.shape) < prob  # (n, m)
        slot = np.cumsum(accept, axis=1) - 1 + filled[:, None]
        take = accept & (slot < p)
        rows = np.broadcast_to(np.arange(n)[:, None], take.shape)
        out[rows[take], slot[take]] = cand[take]
        filled = np.minimum(filled + accept.sum(1), p)
    return out


# Samplers: (rng, n shapes, p points) -> (points (n, p, 3) float64 on the surface, params).


def _box(rng, n, p):
    e = rng.uniform(0.25, 1.0, (n, 3))  # half extents
    area = np.stack([e[:, 1] * e[:, 2], e[:, 0] * e[:, 2], e[:, 0] * e[:, 1]], axis=1)
    axis = _choose(rng, area, p)[..., None]  # (n, p, 1): the face normal's axis
    pts = rng.uniform(-1.0, 1.0, (n, p, 3)) * e[:, None]
    side = np.where(rng.random((n, p, 1)) < 0.5, -1.0, 1.0)
    face = np.take_along_axis(np.broadcast_to(e[:, None], pts.shape), axis, 2) * side
    np.put_along_axis(pts, axis, face, axis=2)
    return pts, {"half_extents": e}


def _sphere(rng, n, p):
    return _on_sphere(rng, n, p), {"radius": np.ones(n)}


def _ring(rng, n, p):
    """(n, p) cos and sin of uniform angles."""
    phi = rng.uniform(0.0, 2 * np.pi, (n, p))
    return np.cos(phi), np.sin(phi)


def _cylinder(rng, n, p):
    r, h = rng.uniform(0.3, 1.0, (n, 1)), rng.uniform(0.3, 1.2, (n, 1))  # radius, half height
    part = _choose(rng, np.concatenate([4 * np.pi * r * h, 2 * np.pi * r**2], 1), p)  # side, caps
    c, s = _ring(rng, n, p)
    rho = np.where(part == 0, r, r * np.sqrt(rng.random((n, p))))
    side_y = rng.uniform(-1.0, 1.0, (n, p)) * h
    cap_y = np.where(rng.random((n, p)) < 0.5, -h, h)
    y = np.where(part == 0, side_y, cap_y)
    return np.stack([rho * c, y, rho * s], -1), {"radius": r[:, 0], "half_height": h[:, 0]}


def _cone(rng, n, p):
    r, h = rng.uniform(0.3, 1.0, (n, 1)), rng.uniform(0.5, 2.0, (n, 1))  # base radius, height
    lateral, base = np.pi * r * np.sqrt(r**2 + h**2), np.pi * r**2
    part = _choose(rng, np.concatenate([lateral, base], 1), p)
    t = np.sqrt(rng.random((n, p)))  # distance from the apex / slant length, density 2t
    rho = np.where(part == 0, r * t, r * np.sqrt(rng.random((n, p))))
    y = np.where(part == 0, h * (1 - t), 0.0)  # base at y = 0, apex at y = h
    c, s = _ring(rng, n, p)
    return np.stack([rho * c, y, rho * s], -1), {"radius": r[:, 0], "height": h[:, 0]}


def _torus(rng, n, p):
    big, small = np.ones((n, 1)), rng.uniform(0.15, 0.6, (n, 1))  # axis y

    def propose(m):
        theta = rng.uniform(0.0, 2 * np.pi, (n, m))  # around the tube
        c, s = _ring(rng, n, m)
        rho = big + small * np.cos(theta)
        pts = np.stack([rho * c, small * np.sin(theta), rho * s], -1)
        return pts, rho / (big + small)  # area element is proportional to rho

    pts = _rejection(rng, n, p, propose)
    return pts, {"major_radius": big[:, 0], "minor_radius": small[:, 0]}


def _capsule(rng, n, p):
    r, h = rng.uniform(0.25, 0.6, (n, 1)), rng.uniform(0.3, 1.0, (n, 1))  # radius, half length
    part = _choose(rng, np.concatenate([4 * np.pi * r * h, 4 * np.pi * r**2], 1), p)
    c, s = _ring(rng, n, p)
    side = np.stack([r * c, rng.uniform(-1.0, 1.0, (n, p)) * h, r * s], -1)
    ball = _on_sphere(rng, n, p) * r[:, :, None]
    ball[..., 1] += np.where(ball[..., 1] >= 0, h, -h)  # hemispheres moved to the ends
    pts = np.where((part == 0)[..., None], side, ball)
    return pts, {"radius": r[:, 0], "half_length": h[:, 0]}


def _ellipsoid(rng, n, p):
    axes = np.concatenate([np.ones((n, 1)), rng.uniform(0.3, 0.7, (n, 2))], 1)
    axes = rng.permuted(axes, axis=1)  # semi-axes (a, b, c), clearly not a sphere
    a, b, c = (axes[:, i : i + 1] for i in range(3))
    g_max = np.max(np.concatenate([b * c, a * c, a * b], 1), axis=1, keepdims=True)

    def propose(m):
        u = _on_sphere(rng, n, m)
        g = np.sqrt((b * c * u[..., 0]) ** 2 + (a * c * u[..., 1]) ** 2 + (a * b * u[..., 2]) ** 2)
        return u * axes[:, None], g / g_max  # area element of the map u -> axes * u

    return _rejection(rng, n, p, propose), {"semi_axes": axes}


def _pyramid(rng, n, p):
    a, b = rng.uniform(0.3, 1.0, (n, 1)), rng.uniform(0.3, 1.0, (n, 1))  # base half widths
    h = rng.uniform(0.5, 2.0, (n, 1))
    z0 = np.zeros((n, 1))
    base = [np.concatenate(v, 1) for v in ((-a, z0, -b), (a, z0, -b), (a, z0, b), (-a, z0, b))]
    verts = np.stack([*base, np.concatenate([z0, h, z0], 1)], 1)  # (n, 5, 3), apex last
    faces = [(0, 1, 2), (0, 2, 3), (0, 1, 4), (1, 2, 4), (2, 3, 4), (3, 0, 4)]
    params = {"half_widths": np.concatenate([a, b], 1), "height": h[:, 0]}
    return _mesh(rng, verts, faces, p), params


def _prism(rng, n, p):
    ang = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.4, 0.4, (n, 3))
    rad = rng.uniform(0.5, 1.0, (n, 3))
    length = rng.uniform(0.3, 1.5, (n, 1, 1))  # half length along y
    tri = np.stack([rad * np.cos(ang), np.zeros((n, 3)), rad * np.sin(ang)], -1)  # (n, 3, 3)
    verts = np.concatenate([tri - [0, 1, 0] * length, tri + [0, 1, 0] * length], 1)  # (n, 6, 3)
    faces = [(0, 1, 2), (3, 4, 5), (0, 1, 4), (0, 4, 3), (1, 2, 5), (1, 5, 4), (2, 0, 3), (2, 3, 5)]
    params = {"half_length": length[:, 0, 0], "triangle_xz": tri[..., [0, 2]]}  # (n,), (n, 3, 2)
    return _mesh(rng, verts, faces, p), params


def _octahedron(rng, n, p):
    axes = rng.uniform(0.4, 1.0, (n, 3))
    unit = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
    verts = unit[None] * axes[:, None]  # (n, 6, 3)
    faces = [(x, y, z) for x in (0, 1) for y in (2, 3) for z in (4, 5)]
    return _mesh(rng, verts, faces, p), {"semi_axes": axes}


_SAMPLERS = {
    "box": _box, "sphere": _sphere, "cylinder": _cylinder, "cone": _cone, "torus": _torus,
    "capsule": _capsule, "ellipsoid": _ellipsoid, "pyramid": _pyramid, "prism": _prism,
    "octahedron": _octahedron,
}  # fmt: skip


def sample_shapes(
    kind: str, num_shapes: int, num_points: int, rng: np.random.Generator
) -> tuple[np.ndarray, Params]:
    """Raw surface samples of one class, before centring and scaling.

    Args:
        kind: one of ``SYNTHETIC_CLASSES``.
        num_shapes: n, shapes to draw (each with its own random proportions).
        num_points: p, points per shape, uniform by surface area.
        rng: the numpy Generator all randomness comes from.

    Returns:
        points (n, p, 3) float64 in the shape's own frame (y up), and the shape parameters
        (a dict of (n,) or (n, k) float64 arrays, e.g. ``radius``, ``half_extents``).
    """
    if kind not in _SAMPLERS:
        raise ValueError(f"kind: expected one of {SYNTHETIC_CLASSES}, got {kind!r}")
    return _SAMPLERS[kind](rng, num_shapes, num_points)


def make_synthetic(
    num_per_class: int | Sequence[int],
    num_points: int = 1024,
    seed: int = 0,
    rotate: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Generates the labelled procedural set.

    Args:
        num_per_class: shapes per class, one int for all or one per class of
            ``SYNTHETIC_CLASSES``.
        num_points: points per shape.
        seed: non-negative generation seed; class k draws from its own child stream, so a
            class's shapes do not depend on how many shapes other classes have.
        rotate: rotate every shape by a uniform random angle about the up (y) axis.

    Returns:
        points (N, num_points, 3) float32, each cloud centred on its mean with max norm 1;
        labels (N,) int64 in a seeded shuffled order; classes (list of the class names).
    """
    c = len(SYNTHETIC_CLASSES)
    counts = [num_per_class] * c if np.ndim(num_per_class) == 0 else list(num_per_class)
    if len(counts) != c:
        raise ValueError(f"num_per_class: expected an int or {c} ints, got {num_per_class!r}")
    counts = [check_int("num_per_class", count, 0) for count in counts]
    if not sum(counts):
        raise ValueError("num_per_class: expected at least one shape in total, got 0")
    check_int("num_points", num_points, 1)
    check_int("seed", seed, 0)
    *class_seeds, order_seed = np.random.SeedSequence(seed).spawn(c + 1)
    clouds, labels = [], []
    for k, (kind, count) in enumerate(zip(SYNTHETIC_CLASSES, counts)):
        if count:
            class_rng = np.random.default_rng(class_seeds[k])
            clouds.append(sample_shapes(kind, count, num_points, class_rng)[0])
            labels.append(np.full(count, k, dtype=np.int64))
    pts, lab = np.concatenate(clouds), np.concatenate(labels)  # (N, P, 3), (N,)
    rng = np.random.default_rng(order_seed)
    perm = rng.permutation(len(pts))
    if rotate:
        phi = rng.uniform(0.0, 2 * np.pi, (len(pts), 1))
        cos, sin = np.cos(phi), np.sin(phi)
        x, z = pts[..., 0].copy(), pts[..., 2].copy()
        pts[..., 0], pts[..., 2] = cos * x + sin * z, -sin * x + cos * z
    pts = pts[perm].astype(np.float32)
    pts -= pts.mean(axis=1, keepdims=True)
    pts /= np.sqrt((pts * pts).sum(-1)).max(axis=1)[:, None, None]
    return pts, lab[perm], list(SYNTHETIC_CLASSES)


class SyntheticShapes(PointCloudSet):
    """The embedded default: ``make_synthetic`` wrapped as a dataset (y up, unit ball).

    Args:
        split: "train", "val" or "test"; each split draws from its own stream derived from
            (seed, split), so splits never share shapes.
        num_shapes: total shapes, spread over the classes as evenly as possible (the first
            ``num_shapes % C`` classes get one more); default 2000 for train, 500 otherwise.
        num_points: points generated per shape (all returned).
        seed: non-negative base seed.
        rotate: random rotation about the up (y) axis.

    Attributes:
        points (N, num_points, 3) float32, labels (N,) int64, classes, num_classes, up_axis "y".
    """

    def __init__(
        self,
        split: str = "train",
        num_shapes: int | None = None,
        num_points: int = 1024,
        seed: int = 0,
        rotate: bool = False,
    ) -> None:
        if split not in _SPLIT_CODES:
            raise ValueError(f"split: expected one of {tuple(_SPLIT_CODES)}, got {split!r}")
        num_shapes = DEFAULT_NUM_SHAPES[split] if num_shapes is None else num_shapes
        check_int("num_shapes", num_shapes, 1)
        check_int("seed", seed, 0)
        c = len(SYNTHETIC_CLASSES)
        counts = [num_shapes // c + (k < num_shapes % c) for k in range(c)]
        split_seed = int(np.random.SeedSequence([seed, _SPLIT_CODES[split]]).generate_state(1)[0])
        pts, lab, classes = make_synthetic(counts, num_points, split_seed, rotate)
        super().__init__(torch.from_numpy(pts), torch.from_numpy(lab), classes, None, seed, "y")
        self.split = split
        self.rotate = rotate
