"""Batched, per-sample random affine augmentations of images, on the images' device.

The paper's three families (§4.1): translation uniform in [-2, 2] px (each axis), rotation
uniform in [-15, 15] degrees, scale uniform in [0.9, 1.1]. :class:`RandomAffine2d` draws one
set of parameters per image and warps the whole batch with a single ``affine_grid`` +
``grid_sample`` call; setting a family to zero strength disables it, so each family can be used
alone (Table 5). :func:`paper_augmentation` builds the presets by name.

A call ``t(x, generator=None)`` takes x (B, C, H, W) float16/bfloat16/float32/float64 on any
device and returns a new tensor of the same shape, dtype and device; x is never modified.
Randomness comes from ``generator`` when given: parameters are drawn on the generator's device
(a seeded CPU generator gives the same draw for CUDA images) and moved to x's device. At zero
strength the transform returns an exact copy of x.

Geometry: parameters are in pixels and degrees of the output image; a positive angle rotates
the content clockwise as displayed (row 0 at the top), a positive translation moves it right /
down, a scale > 1 enlarges it about the image centre. Pixels brought in from outside
the image take ``padding_mode`` ("zeros": black, the background of MNIST and Omniglot).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["AffineParams", "RandomAffine2d", "affine_warp", "paper_augmentation"]

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
FAMILIES = ("rotate", "translate", "scale")


@dataclass
class AffineParams:
    """One affine draw per image.

    Attributes:
        angle: (B,) float32 rotation in degrees.
        shift: (B, 2) float32 translation in pixels, (dx right, dy down).
        scale: (B,) float32 isotropic scale factor.
    """

    angle: torch.Tensor
    shift: torch.Tensor
    scale: torch.Tensor


def _check_images(x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a (B, C, H, W) tensor of images, got {shape}")
    if x.dtype not in _FLOATS:
        raise ValueError(f"x must be float16/bfloat16/float32/float64, got {x.dtype}")
    return x


def affine_warp(x: torch.Tensor, params: AffineParams, padding_mode: str = "zeros") -> torch.Tensor:
    """Warp each image by its own rotation, scale and translation (bilinear).

    Args:
        x: (B, C, H, W) floating images.
        params: per-image parameters, each with leading dim B (any device).
        padding_mode: ``grid_sample`` padding: "zeros", "border" or "reflection".

    Returns:
        (B, C, H, W) warped images, dtype and device of x.

    Raises:
        ValueError: on malformed images or parameters of the wrong batch size.
    """
    x = _check_images(x)
    b, _, h, w = x.shape
    for name, t, shape in (
        ("angle", params.angle, (b,)),
        ("shift", params.shift, (b, 2)),
        ("scale", params.scale, (b,)),
    ):
        if t.shape != shape:
            raise ValueError(f"params.{name} must have shape {shape}, got {tuple(t.shape)}")
    if bool((params.scale <= 0).any()):
        raise ValueError("params.scale must be > 0")
    dev = x.device
    rad = params.angle.to(dev, torch.float64) * (math.pi / 180.0)  # (B,)
    s = params.scale.to(dev, torch.float64)  # (B,)
    shift = params.shift.to(dev, torch.float64)  # (B, 2) pixels
    # Forward map in pixel units about the centre: p_out = s * R p_in + shift. grid_sample needs
    # the inverse, p_in = R^T (p_out - shift) / s, expressed in normalized coordinates
    # (pixel = normalized * size / 2 with align_corners=False).
    cos, sin = torch.cos(rad) / s, torch.sin(rad) / s  # (B,)
    inv = torch.stack(
        [torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2
    )  # (B, 2, 2) = R^T / s; R = [[c, -s], [s, c]] turns clockwise as displayed (y down)
    half = torch.tensor([w / 2.0, h / 2.0], dtype=torch.float64, device=dev)  # (2,)
    # Normalized: n_in = D^-1 inv D n_out - D^-1 inv shift, D = diag(half).
    lin = inv * half.view(1, 1, 2) / half.view(1, 2, 1)  # (B, 2, 2)
    offset = -(inv @ shift.unsqueeze(-1)).squeeze(-1) / half  # (B, 2)
    theta = torch.cat([lin, offset.unsqueeze(-1)], dim=-1)  # (B, 2, 3)
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    grid = F.affine_grid(theta.to(work.dtype), list(work.shape), align_corners=False)
    out = F.grid_sample(work, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    return out.to(x.dtype)


class RandomAffine2d:
    """Random rotation, translation and scale, drawn independently for every image.

    Args:
        degrees: rotation angle uniform in [-degrees, degrees]; 0 disables rotation.
        translate: shift uniform in [-translate, translate] pixels on each axis; 0 disables it.
        scale: (lo, hi) with 0 < lo <= hi, factor uniform in [lo, hi]; (1, 1) disables it.
        padding_mode: value outside the image: "zeros", "border" or "reflection".
    """

    def __init__(
        self,
        degrees: float = 15.0,
        translate: float = 2.0,
        scale: tuple[float, float] = (0.9, 1.1),
        padding_mode: str = "zeros",
    ) -> None:
        if not math.isfinite(degrees) or degrees < 0:
            raise ValueError(f"degrees must be a finite number >= 0, got {degrees}")
        if not math.isfinite(translate) or translate < 0:
            raise ValueError(f"translate must be a finite number >= 0, got {translate}")
        if len(scale) != 2 or not (0 < scale[0] <= scale[1] < math.inf):
            raise ValueError(f"scale must be (lo, hi) with 0 < lo <= hi, got {scale}")
        if padding_mode not in ("zeros", "border", "reflection"):
            raise ValueError(
                f"padding_mode must be 'zeros', 'border' or 'reflection', got {padding_mode!r}"
            )
        self.degrees = float(degrees)
        self.translate = float(translate)
        self.scale = (float(scale[0]), float(scale[1]))
        self.padding_mode = padding_mode

    @property
    def is_identity(self) -> bool:
        """True when every family is at zero strength (the transform copies its input)."""
        return self.degrees == 0 and self.translate == 0 and self.scale == (1.0, 1.0)

    def sample_params(
        self, batch: int, generator: torch.Generator | None = None, device: str = "cpu"
    ) -> AffineParams:
        """Draw ``batch`` parameter sets (float32, on the generator's device when given)."""
        dev = generator.device if generator is not None else torch.device(device)

        def uniform(shape: tuple[int, ...], lo: float, hi: float) -> torch.Tensor:
            u = torch.rand(shape, generator=generator, device=dev)
            return lo + (hi - lo) * u

        return AffineParams(
            angle=uniform((batch,), -self.degrees, self.degrees),
            shift=uniform((batch, 2), -self.translate, self.translate),
            scale=uniform((batch,), *self.scale),
        )

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a batch.

        Args:
            x: (B, C, H, W) floating images.
            generator: optional torch.Generator for the draw.

        Returns:
            (B, C, H, W) augmented copy of x.
        """
        x = _check_images(x)
        if self.is_identity:
            return x.clone()
        params = self.sample_params(x.shape[0], generator, device=str(x.device))
        return affine_warp(x, params, self.padding_mode)

    def __repr__(self) -> str:
        return (
            f"RandomAffine2d(degrees={self.degrees!r}, translate={self.translate!r}, "
            f"scale={self.scale!r}, padding_mode={self.padding_mode!r})"
        )


def paper_augmentation(
    families: str = "all",
    *,
    degrees: float = 15.0,
    translate: float = 2.0,
    scale: tuple[float, float] = (0.9, 1.1),
    padding_mode: str = "zeros",
) -> RandomAffine2d:
    """The paper's augmentation, all families or a subset (Table 5).

    Args:
        families: "all", or a comma-separated subset of "rotate", "translate", "scale"
            (e.g. "rotate" for Table 5's rotations-only row).
        degrees, translate, scale: the strengths of the families that are enabled.
        padding_mode: see :class:`RandomAffine2d`.

    Returns:
        A :class:`RandomAffine2d` with the families not named set to zero strength.

    Raises:
        ValueError: on an unknown family name.
    """
    names = set(FAMILIES) if families == "all" else {f.strip() for f in families.split(",")}
    unknown = names - set(FAMILIES)
    if unknown or not names:
        raise ValueError(
            f"families must be 'all' or a comma-separated subset of {FAMILIES}, got {families!r}"
        )
    return RandomAffine2d(
        degrees=degrees if "rotate" in names else 0.0,
        translate=translate if "translate" in names else 0.0,
        scale=scale if "scale" in names else (1.0, 1.0),
        padding_mode=padding_mode,
    )
