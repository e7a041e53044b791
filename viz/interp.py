"""Latent interpolation math shared by the viewer and the rendered figures (no Open3D here).

Encode two clouds to their posterior means, walk between the codes (linear or spherical), decode
every step with the folding decoder, and colour each decoded point by the 2-D grid coordinate it
was folded from (the colours show how the grid is folded onto the surface).

>>> z_a, z_b = encode_pair(model, cloud_a, cloud_b)              # (L,), (L,)
>>> ts = torch.linspace(0, 1, 5)
>>> points, grid = decode_path(model, z_a, z_b, ts, "slerp")     # (5, M, 3), (M, 2)
>>> colors = grid_colors(grid)                                   # (M, 3) in [0, 1]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

METHODS = ("lerp", "slerp")
INPUT_COLOR = (0.55, 0.55, 0.58)  # the (uncoloured) input clouds: a neutral grey
_PARALLEL_EPS = 1e-6  # below this sin(angle), slerp degenerates to lerp


def _check_code_pair(z_a: torch.Tensor, z_b: torch.Tensor) -> None:
    for name, z in (("z_a", z_a), ("z_b", z_b)):
        if not isinstance(z, torch.Tensor) or z.dim() != 1 or not z.dtype.is_floating_point:
            got = f"{tuple(z.shape)} {z.dtype}" if isinstance(z, torch.Tensor) else type(z)
            raise ValueError(f"{name}: expected a 1-D floating tensor (L,), got {got}")
    if z_a.shape != z_b.shape:
        raise ValueError(
            f"z_a, z_b: expected the same shape, got {tuple(z_a.shape)}, {tuple(z_b.shape)}"
        )


def _as_ts(t: float | Sequence[float] | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """t as a (T,) float64 tensor on ``like``'s device; every value must lie in [0, 1]."""
    ts = torch.as_tensor(t, dtype=torch.float64, device=like.device).reshape(-1)
    if ts.numel() == 0 or not torch.isfinite(ts).all() or (ts < 0).any() or (ts > 1).any():
        raise ValueError(f"t: expected values in [0, 1], got {t!r}")
    return ts


def lerp(z_a: torch.Tensor, z_b: torch.Tensor, t) -> torch.Tensor:
    """Linear interpolation ``(1 - t) z_a + t z_b``.

    Args:
        z_a: (L,) float code at t = 0.
        z_b: (L,) float code at t = 1, same dtype.
        t: a number or a sequence / (T,) tensor of numbers in [0, 1].

    Returns:
        (T, L) codes in the dtype of ``z_a`` (T = 1 for a scalar t); row 0 equals ``z_a`` exactly
        at t = 0 and ``z_b`` exactly at t = 1.
    """
    _check_code_pair(z_a, z_b)
    ts = _as_ts(t, z_a).unsqueeze(1)  # (T, 1)
    a, b = z_a.double().unsqueeze(0), z_b.double().unsqueeze(0)  # (1, L)
    out = (1.0 - ts) * a + ts * b  # (T, L)
    out = torch.where(ts == 0, a, torch.where(ts == 1, b, out))  # exact endpoints
    return out.to(z_a.dtype)


def slerp(z_a: torch.Tensor, z_b: torch.Tensor, t) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985; White 2016 for generative models' latents).

    ``sin((1 - t) w) / sin(w) z_a + sin(t w) / sin(w) z_b`` with ``w`` the angle between the
    codes. For unit-norm codes it follows the great circle; for codes of different norms it is the
    usual generative-model slerp (the norm varies smoothly between ``|z_a|`` and ``|z_b|``). Falls
    back to :func:`lerp` when the codes are (anti)parallel or zero, where the great circle is not
    defined. Computed in float64.

    Args:
        z_a: (L,) float code at t = 0.
        z_b: (L,) float code at t = 1, same dtype.
        t: a number or a sequence / (T,) tensor of numbers in [0, 1].

    Returns:
        (T, L) codes in the dtype of ``z_a``; exactly ``z_a`` at t = 0 and ``z_b`` at t = 1.
    """
    _check_code_pair(z_a, z_b)
    ts = _as_ts(t, z_a).unsqueeze(1)  # (T, 1)
    a, b = z_a.double(), z_b.double()  # (L,)
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return lerp(z_a, z_b, t)
    cos = torch.clamp(torch.dot(a / na, b / nb), -1.0, 1.0)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    if sin < _PARALLEL_EPS:
        return lerp(z_a, z_b, t)
    wa = torch.sin((1.0 - ts) * omega) / sin  # (T, 1)
    wb = torch.sin(ts * omega) / sin  # (T, 1)
    out = wa * a + wb * b  # (T, L)
    out = torch.where(ts == 0, a, torch.where(ts == 1, b, out))  # exact endpoints
    return out.to(z_a.dtype)


def interpolate(z_a: torch.Tensor, z_b: torch.Tensor, t, method: str = "lerp") -> torch.Tensor:
    """:func:`lerp` or :func:`slerp` by name: (T, L) codes for t in [0, 1]."""
    if method == "lerp":
        return lerp(z_a, z_b, t)
    if method == "slerp":
        return slerp(z_a, z_b, t)
    raise ValueError(f"method: expected one of {METHODS}, got {method!r}")


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def encode_cloud(model: torch.nn.Module, cloud: torch.Tensor) -> torch.Tensor:
    """Posterior mean of one cloud (eval mode, no gradient; the model's mode is restored).

    Args:
        model: a FoldingNet(-VAE) (``encode(x) -> Posterior``).
        cloud: (N, 3) float cloud, no padding.

    Returns:
        (L,) float32 code mu(x) on the CPU.
    """
    if not isinstance(cloud, torch.Tensor) or cloud.dim() != 2 or cloud.shape[-1] != 3:
        got = tuple(cloud.shape) if isinstance(cloud, torch.Tensor) else type(cloud)
        raise ValueError(f"cloud: expected a (N, 3) tensor, got {got}")
    was_training = model.training
    model.eval()
    try:
        mu = model.encode(cloud.to(_model_device(model)).float().unsqueeze(0)).mu[0]  # (L,)
    finally:
        model.train(was_training)
    return mu.float().cpu()


def encode_pair(
    model: torch.nn.Module, cloud_a: torch.Tensor, cloud_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means of two clouds: ``(mu_a (L,), mu_b (L,))`` float32 CPU.

    See :func:`encode_cloud`; ``cloud_a`` (N_a, 3) and ``cloud_b`` (N_b, 3) may differ in N.
    """
    return encode_cloud(model, cloud_a), encode_cloud(model, cloud_b)


@torch.no_grad()
def decode_codes(
    model: torch.nn.Module, z: torch.Tensor, grid_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode codes with the grid they fold (eval mode, no gradient).

    Args:
        model: a FoldingNet(-VAE) (``decode_with_grid(z, grid_size)``).
        z: (T, L) float codes.
        grid_size: decoder grid side G (decode density, M = G**2 points); None: the model's.

    Returns:
        (points (T, M, 3) float32 CPU, grid (M, 2) float32 CPU); ``points[:, m]`` folds ``grid[m]``.
    """
    if not isinstance(z, torch.Tensor) or z.dim() != 2:
        raise ValueError(f"z: expected a (T, L) tensor, got {getattr(z, 'shape', type(z))}")
    was_training = model.training
    model.eval()
    device = _model_device(model)
    try:
        points, grid = model.decode_with_grid(z.to(device).float(), grid_size)
    finally:
        model.train(was_training)
    return points.float().cpu(), grid.float().cpu()


def decode_path(
    model: torch.nn.Module,
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    t,
    method: str = "lerp",
    grid_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode the interpolation between two codes at every t.

    Args:
        model: a FoldingNet(-VAE).
        z_a, z_b: (L,) float codes at t = 0 and t = 1.
        t: a number or a sequence / (T,) tensor in [0, 1].
        method: "lerp" or "slerp".
        grid_size: decode density (grid side G); None: the model's.

    Returns:
        (points (T, M, 3) float32, grid (M, 2) float32), on the CPU.
    """
    return decode_codes(model, interpolate(z_a, z_b, t, method), grid_size)


def grid_colors(grid: torch.Tensor) -> torch.Tensor:
    """RGB colour of every grid point from its 2-D coordinate (a bilinear 2-D colour map).

    With (u, v) the grid coordinates rescaled to [0, 1]: ``(r, g, b) = (u, v, 1 - (u + v) / 2)``,
    so the four corners are blue (0, 0), magenta-red (1, 0), green (0, 1) and yellow (1, 1).

    Args:
        grid: (M, 2) float grid coordinates (any range; each axis is rescaled by its min and max).

    Returns:
        (M, 3) float32 colours in [0, 1], on the grid's device.
    """
    if not isinstance(grid, torch.Tensor) or grid.dim() != 2 or grid.shape[1] != 2:
        raise ValueError(
            f"grid: expected a (M, 2) tensor, got {getattr(grid, 'shape', type(grid))}"
        )
    if grid.shape[0] == 0:
        raise ValueError("grid: expected at least one point, got M = 0")
    g = grid.float()
    lo, hi = g.amin(0), g.amax(0)  # (2,)
    uv = (g - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))  # (M, 2) in [0, 1]
    u, v = uv[:, 0], uv[:, 1]
    return torch.stack([u, v, 1.0 - 0.5 * (u + v)], dim=1).clamp_(0.0, 1.0)


def input_colors(num_points: int) -> torch.Tensor:
    """(num_points, 3) float32 colours of an input cloud: all :data:`INPUT_COLOR`."""
    return torch.tensor(INPUT_COLOR, dtype=torch.float32).expand(num_points, 3).clone()


@dataclass
class InterpolationRow:
    """One row of an interpolation figure: two inputs and the decoded path between them.

    Attributes:
        input_a: (N_a, 3) float32 input cloud at t = 0.
        input_b: (N_b, 3) float32 input cloud at t = 1.
        decoded: (T, M, 3) float32 decoded clouds, one per t.
        ts: (T,) float64 interpolation parameters.
        title_a, title_b: captions of the inputs (e.g. "#12 chair").
    """

    input_a: torch.Tensor
    input_b: torch.Tensor
    decoded: torch.Tensor
    ts: torch.Tensor
    title_a: str = ""
    title_b: str = ""


def interpolation_row(
    model: torch.nn.Module,
    cloud_a: torch.Tensor,
    cloud_b: torch.Tensor,
    steps: int,
    method: str = "lerp",
    grid_size: int | None = None,
    titles: tuple[str, str] = ("", ""),
) -> tuple[InterpolationRow, torch.Tensor]:
    """Encode two clouds and decode ``steps`` evenly spaced points t = 0 .. 1 between them.

    Args:
        model: a FoldingNet(-VAE).
        cloud_a, cloud_b: (N, 3) float input clouds.
        steps: number of decoded clouds, >= 2 (t = linspace(0, 1, steps)).
        method: "lerp" or "slerp".
        grid_size: decode density (grid side); None: the model's.
        titles: captions of the two inputs.

    Returns:
        (the row, grid (M, 2) float32 shared by every decoded cloud).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps: expected an int >= 2, got {steps!r}")
    z_a, z_b = encode_pair(model, cloud_a, cloud_b)
    ts = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    decoded, grid = decode_path(model, z_a, z_b, ts, method, grid_size)
    row = InterpolationRow(cloud_a.float().cpu(), cloud_b.float().cpu(), decoded, ts, *titles)
    return row, grid
