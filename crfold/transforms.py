"""Batched point-cloud augmentations and the paired views (x, t(x)) of consistency regularization.

Every transform is a tiny class: ``__init__`` stores the arguments, ``__call__`` does the work and
``__repr__`` reproduces the arguments (``eval(repr(t))`` builds an equal transform). A call

    y = t(x, lengths=None, *, generator=None)

takes x (B, N, 3) float16/bfloat16/float32/float64 on any device and returns a new tensor of the
same shape, dtype and device; x is never modified. Each sample gets its own random draw.
Randomness comes from ``generator`` when given: the parameters are drawn on the generator's
device (a CPU generator works for CUDA points) and moved to x's device, so a seeded CPU generator
gives the same augmentation on every device. Without a generator, the global RNG of x's device is
used. Half/bfloat16 inputs are computed in float32 and cast back.

Ragged batches: with ``lengths`` (B,) int64, points at index >= lengths[b] are padding and are
passed through unchanged; ``Normalize`` computes centroid and radius over the valid points only.

Axes: the shared ModelNet40 sample is z-up, the ShapeNet HDF5 release is y-up; rotations about
``axis="up"`` resolve to the ``up`` argument.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "Compose",
    "Normalize",
    "PointTransform",
    "RandomJitter",
    "RandomRotation",
    "RandomScale",
    "RandomTranslation",
    "default_cr_transform",
    "paired_views",
]

_AXES = {"x": 0, "y": 1, "z": 2}
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_points(x: object, lengths: object) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a (B, N, 3) tensor of points, got {shape}")
    if x.dtype not in _FLOATS:
        raise ValueError(f"x must be float16/bfloat16/float32/float64, got {x.dtype}")
    if lengths is None:
        return
    if not isinstance(lengths, torch.Tensor) or lengths.shape != (x.shape[0],):
        shape = tuple(lengths.shape) if isinstance(lengths, torch.Tensor) else type(lengths)
        raise ValueError(f"lengths must be a ({x.shape[0]},) int64 tensor, got {shape}")
    if lengths.dtype != torch.int64:
        raise ValueError(f"lengths must be int64, got {lengths.dtype}")
    if lengths.numel() and (lengths.min() < 0 or lengths.max() > x.shape[1]):
        raise ValueError(f"lengths must lie in [0, N={x.shape[1]}], got {lengths.tolist()}")


def _valid_mask(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, N, 1) bool, True on valid points."""
    idx = torch.arange(x.shape[1], device=x.device)
    return (idx[None, :] < lengths.to(x.device)[:, None])[..., None]


def _uniform(shape, generator, device, dtype) -> torch.Tensor:
    """U[0, 1) draw on the generator's device (or ``device``), moved to ``device``."""
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=where, dtype=dtype).to(device)


def _normal(shape, generator, device, dtype) -> torch.Tensor:
    """N(0, 1) draw on the generator's device (or ``device``), moved to ``device``."""
    where = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=where, dtype=dtype).to(device)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


class PointTransform:
    """Base class: validation, ragged pass-through of padding, repr and equality.

    Subclasses list their constructor arguments in ``_fields`` (stored as attributes of the same
    name) and implement ``_apply(x, lengths, generator)`` on a validated (B, N, 3) tensor in the
    compute dtype (float32 for half inputs), returning a new tensor.
    """

    _fields: tuple[str, ...] = ()

    def __call__(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Apply the transform.

        Args:
            x: (B, N, 3) float points; padding after ``lengths`` is left as it is.
            lengths: optional (B,) int64 number of valid points per cloud.
            generator: optional torch.Generator (any device) for reproducible draws.

        Returns:
            (B, N, 3) new tensor, same dtype and device as x.
        """
        _check_points(x, lengths)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        out = self._apply(x.to(_compute_dtype(x)), lengths, generator)
        out = out.to(x.dtype)
        if lengths is not None:
            out = torch.where(_valid_mask(x, lengths), out, x)
        return out

    def _apply(self, x, lengths, generator):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))


class RandomRotation(PointTransform):
    """Random rotation about the origin: uniform on SO(3), or about one coordinate axis.

    Args:
        axis: None for a rotation uniform on SO(3) (Haar measure, from a uniform unit quaternion);
            "x", "y" or "z" for a rotation about that axis; "up" for the axis named by ``up``.
        degrees: about one axis, the angle is uniform in [-degrees, degrees], 0 <= degrees <= 180.
            Must stay 180 with ``axis=None``.
        steps: about one axis, draw the angle from the k = ``steps`` discrete angles 2*pi*i/k,
            i = 0..k-1 (e.g. 24 for 15-degree steps); ``degrees`` must then stay 180.
        up: the dataset's up axis, "x", "y" or "z" (ShapeNet HDF5: "y"; ModelNet40 sample: "z").
    """

    _fields = ("axis", "degrees", "steps", "up")

    def __init__(
        self,
        axis: str | None = None,
        degrees: float = 180.0,
        steps: int | None = None,
        up: str = "y",
    ):
        if up not in _AXES:
            raise ValueError(f"up must be one of 'x', 'y', 'z', got {up!r}")
        if axis is not None and axis != "up" and axis not in _AXES:
            raise ValueError(f"axis must be None, 'x', 'y', 'z' or 'up', got {axis!r}")
        if not 0.0 <= float(degrees) <= 180.0:
            raise ValueError(f"degrees must lie in [0, 180], got {degrees}")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)):
            raise ValueError(f"steps must be None or an int >= 1, got {steps!r}")
        if steps is not None and steps < 1:
            raise ValueError(f"steps must be None or an int >= 1, got {steps}")
        if axis is None and (steps is not None or float(degrees) != 180.0):
            raise ValueError("axis=None draws uniformly on SO(3): leave degrees=180 and steps=None")
        if steps is not None and float(degrees) != 180.0:
            raise ValueError("steps=k draws among 2*pi*i/k over the full circle: leave degrees=180")
        self.axis, self.degrees, self.steps, self.up = axis, float(degrees), steps, up

    @property
    def axis_index(self) -> int | None:
        """0, 1 or 2 for the rotation axis (with "up" resolved), None for SO(3)."""
        return None if self.axis is None else _AXES[self.up if self.axis == "up" else self.axis]

    def matrices(
        self,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Draw (batch_size, 3, 3) rotation matrices R (orthonormal, det +1); points map to x R^T."""
        a = self.axis_index
        if a is None:
            q = _normal((batch_size, 4), generator, device, dtype)  # uniform on S^3 once normed
            w, i, j, k = (q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)).unbind(-1)
            rows = [
                [1 - 2 * (j * j + k * k), 2 * (i * j - w * k), 2 * (i * k + w * j)],
                [2 * (i * j + w * k), 1 - 2 * (i * i + k * k), 2 * (j * k - w * i)],
                [2 * (i * k - w * j), 2 * (j * k + w * i), 1 - 2 * (i * i + j * j)],
            ]
            return torch.stack([torch.stack(r, -1) for r in rows], -2)  # (B, 3, 3)
        if self.steps is not None:
            where = generator.device if generator is not None else device
            idx = torch.randint(self.steps, (batch_size,), generator=generator, device=where)
            theta = idx.to(device=device, dtype=dtype) * (2.0 * math.pi / self.steps)
        else:
            u = _uniform((batch_size,), generator, device, dtype)
            theta = (2.0 * u - 1.0) * math.radians(self.degrees)
        c, s = torch.cos(theta), torch.sin(theta)  # (B,)
        b, cc = (a + 1) % 3, (a + 2) % 3  # the plane (b, cc) rotates, b -> cc by +theta
        rot = torch.zeros(batch_size, 3, 3, device=device, dtype=dtype)
        rot[:, a, a] = 1.0
        rot[:, b, b], rot[:, b, cc], rot[:, cc, b], rot[:, cc, cc] = c, -s, s, c
        return rot

    def _apply(self, x, lengths, generator):
        rot = self.matrices(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
        return x @ rot.transpose(-1, -2)  # (B, N, 3)


class RandomTranslation(PointTransform):
    """Random translation of each cloud.

    Args:
        shift: maximum shift (>= 0).
        per_axis: True: each coordinate shifted independently by U(-shift, shift) (a cube, the
            FoldingNet/PointNet recipe). False: a shift vector uniform in the ball of radius
            ``shift`` (rotation invariant).
    """

    _fields = ("shift", "per_axis")

    def __init__(self, shift: float = 0.2, per_axis: bool = True):
        if not math.isfinite(float(shift)) or float(shift) < 0:
            raise ValueError(f"shift must be a finite number >= 0, got {shift}")
        self.shift, self.per_axis = float(shift), bool(per_axis)

    def _apply(self, x, lengths, generator):
        b = x.shape[0]
        if self.per_axis:
            t = (2.0 * _uniform((b, 1, 3), generator, x.device, x.dtype) - 1.0) * self.shift
        else:  # direction uniform on the sphere, radius with density ~ r^2
            d = _normal((b, 1, 3), generator, x.device, x.dtype)
            r = _uniform((b, 1, 1), generator, x.device, x.dtype).pow(1.0 / 3.0)
            t = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12) * r * self.shift
        return x + t  # (B, N, 3)


class RandomScale(PointTransform):
    """Random scaling about the origin by factors uniform in [low, high].

    Args:
        low, high: factor range, 0 < low <= high (default U(2/3, 3/2) as in FoldingNet ports).
        isotropic: one factor per cloud (True) or one per axis (False, anisotropic).
    """

    _fields = ("low", "high", "isotropic")

    def __init__(self, low: float = 2.0 / 3.0, high: float = 1.5, isotropic: bool = False):
        low, high = float(low), float(high)
        if not (0.0 < low <= high and math.isfinite(high)):
            raise ValueError(f"low and high must satisfy 0 < low <= high < inf, got {low}, {high}")
        self.low, self.high, self.isotropic = low, high, bool(isotropic)

    def _apply(self, x, lengths, generator):
        shape = (x.shape[0], 1, 1 if self.isotropic else 3)
        u = _uniform(shape, generator, x.device, x.dtype)
        return x * (self.low + (self.high - self.low) * u)  # (B, N, 3)


class RandomJitter(PointTransform):
    """Per-point Gaussian noise clip(sigma * N(0, 1), -clip, clip).

    Args:
        sigma: noise standard deviation (>= 0).
        clip: clipping bound (> 0), or None for unclipped noise.
    """

    _fields = ("sigma", "clip")

    def __init__(self, sigma: float = 0.01, clip: float | None = 0.02):
        if not math.isfinite(float(sigma)) or float(sigma) < 0:
            raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
        if clip is not None and not float(clip) > 0:
            raise ValueError(f"clip must be None or a number > 0, got {clip}")
        self.sigma, self.clip = float(sigma), None if clip is None else float(clip)

    def _apply(self, x, lengths, generator):
        noise = self.sigma * _normal(x.shape, generator, x.device, x.dtype)
        if self.clip is not None:
            noise = noise.clamp(-self.clip, self.clip)
        return x + noise  # (B, N, 3)


class Normalize(PointTransform):
    """Centre each cloud on its centroid and scale it into the unit sphere (max norm 1).

    Deterministic (``generator`` is ignored). With ``lengths``, centroid and radius use the valid
    points only. A cloud whose points all coincide is only centred; an empty one is unchanged.
    """

    def _apply(self, x, lengths, generator):
        if x.shape[1] == 0:
            return x.clone()
        if lengths is None:
            centred = x - x.mean(dim=1, keepdim=True)  # (B, N, 3)
            radius = centred.norm(dim=-1).amax(dim=1)  # (B,)
        else:
            mask = _valid_mask(x, lengths).to(x.dtype)  # (B, N, 1)
            count = lengths.to(device=x.device, dtype=x.dtype).clamp_min(1.0)[:, None, None]
            centred = x - (x * mask).sum(dim=1, keepdim=True) / count
            radius = (centred.norm(dim=-1) * mask[..., 0]).amax(dim=1)
        radius = torch.where(radius > 0, radius, torch.ones_like(radius))
        return centred / radius[:, None, None]


class Compose(PointTransform):
    """Apply transforms in order (each with the same ``lengths`` and ``generator``).

    Args:
        transforms: a sequence of ``PointTransform`` instances.
    """

    _fields = ("transforms",)

    def __init__(self, transforms: Sequence[PointTransform]):
        if isinstance(transforms, PointTransform) or not isinstance(transforms, Sequence):
            raise ValueError(f"transforms must be a list of transforms, got {type(transforms)}")
        for i, t in enumerate(transforms):
            if not isinstance(t, PointTransform):
                raise ValueError(f"transforms[{i}] must be a PointTransform, got {type(t)}")
        self.transforms = list(transforms)

    def _apply(self, x, lengths, generator):
        # Runs in the compute dtype (float32 for half inputs); the base class casts back once.
        out = x.clone() if not self.transforms else x
        for t in self.transforms:
            out = t(out, lengths, generator=generator)
        return out


def paired_views(
    x: torch.Tensor,
    transform: PointTransform,
    generator: torch.Generator | None = None,
    lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pair (x, t(x)) for consistency regularization.

    Args:
        x: (B, N, 3) float points (returned as is, not copied; transforms never modify it).
        transform: the semantics-preserving transformation t.
        generator: optional torch.Generator for the draw of t.
        lengths: optional (B,) int64 valid points per cloud.

    Returns:
        (x, t(x)), both (B, N, 3), same dtype and device.
    """
    if not isinstance(transform, PointTransform):
        raise ValueError(f"transform must be a PointTransform, got {type(transform).__name__}")
    return x, transform(x, lengths, generator=generator)


def default_cr_transform(
    up: str = "y", *, shift: float = 0.2, sigma: float = 0.01, clip: float = 0.02
) -> Compose:
    """The paper's FoldingNet-style recipe: rotation about the up axis, translation, jitter.

    Rotation uniform in [-180, 180] degrees about ``up``, per-axis shift U(-shift, shift),
    jitter clip(sigma * N(0, 1), +-clip).

    Args:
        up: the dataset's up axis ("y" for the ShapeNet HDF5 release, "z" for the ModelNet40
            sample).
        shift: per-axis translation bound.
        sigma, clip: jitter standard deviation and clipping bound.

    Returns:
        ``Compose([RandomRotation("up", 180, up=up), RandomTranslation(shift), RandomJitter(...)])``.
    """
    return Compose(
        [
            RandomRotation(axis="up", degrees=180.0, up=up),
            RandomTranslation(shift=shift, per_axis=True),
            RandomJitter(sigma=sigma, clip=clip),
        ]
    )
