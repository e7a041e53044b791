"""Tests for crfold.transforms: batched point-cloud augmentations and paired views."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

import crfold.transforms as T
from crfold.transforms import (
    Compose,
    Normalize,
    RandomJitter,
    RandomRotation,
    RandomScale,
    RandomTranslation,
    default_cr_transform,
    paired_views,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

RANDOM = [
    RandomRotation(),
    RandomRotation(axis="z", degrees=30.0),
    RandomRotation(axis="up", steps=24, up="y"),
    RandomTranslation(0.2),
    RandomTranslation(0.3, per_axis=False),
    RandomScale(),
    RandomScale(0.5, 2.0, isotropic=True),
    RandomJitter(0.01, 0.02),
    RandomJitter(0.05, None),
    default_cr_transform("z"),
]
ALL = RANDOM + [Normalize(), Compose([]), Compose([Normalize(), RandomScale(0.9, 1.1)])]


def _cloud(b=4, n=64, seed=0, dtype=torch.float32, device="cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, 3, generator=g, dtype=dtype).to(device)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("t", ALL, ids=repr)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_shape_dtype_device_and_not_in_place(t, device, dtype):
    x = _cloud(dtype=dtype, device=device)
    before = x.clone()
    y = t(x, generator=_gen(1))
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert torch.equal(x, before), "the input was modified"
    assert y.data_ptr() != x.data_ptr()
    assert torch.isfinite(y.float()).all()


@pytest.mark.parametrize("t", [t for t in RANDOM if getattr(t, "steps", None) is None], ids=repr)
def test_independent_draw_per_sample(t):
    # (discrete-angle rotations may repeat a draw; test_steps_gives_only_discrete_angles sees all)
    x = _cloud(b=1, n=32).expand(8, 32, 3).contiguous()  # eight copies of one cloud
    y = t(x, generator=_gen(2))
    for i in range(8):
        for j in range(i + 1, 8):
            assert not torch.allclose(y[i], y[j]), (i, j)


@pytest.mark.parametrize("t", ALL, ids=repr)
def test_repr_round_trip(t):
    namespace = {name: getattr(T, name) for name in T.__all__}
    t2 = eval(repr(t), namespace)
    assert type(t2) is type(t) and t2 == t and repr(t2) == repr(t)
    x = _cloud(seed=3)
    assert torch.equal(t(x, generator=_gen(4)), t2(x, generator=_gen(4)))


@pytest.mark.parametrize("t", RANDOM, ids=repr)
def test_generator_reproducibility(t):
    x = _cloud(seed=5)
    a, b = t(x, generator=_gen(6)), t(x, generator=_gen(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, t(x, generator=_gen(7)))
    torch.manual_seed(8)
    c = t(x)
    torch.manual_seed(8)
    assert torch.equal(c, t(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_generator_gives_same_draw_on_cuda():
    t = default_cr_transform("y")
    x = _cloud(seed=9, dtype=torch.float64)
    a = t(x, generator=_gen(10))
    b = t(x.cuda(), generator=_gen(10))
    assert b.is_cuda and torch.allclose(a, b.cpu(), atol=1e-12)


def _angles(rot: torch.Tensor) -> torch.Tensor:
    """Rotation angle in [0, pi] of (B, 3, 3) matrices."""
    cos = ((rot.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    return torch.arccos(cos)


def _angle_cdf(theta):
    return (theta - torch.sin(torch.as_tensor(theta)).numpy()) / math.pi


def test_so3_rotation_is_uniform():
    rot = RandomRotation().matrices(20_000, generator=_gen(11), dtype=torch.float64)
    z = rot[:, :, 2]  # R e_z, uniform on the sphere: each coordinate is U(-1, 1) (Archimedes)
    for k in range(3):
        assert stats.kstest(z[:, k].numpy(), stats.uniform(loc=-1, scale=2).cdf).pvalue > 1e-3
    azimuth = torch.atan2(z[:, 1], z[:, 0]).numpy()
    assert stats.kstest(azimuth, stats.uniform(loc=-math.pi, scale=2 * math.pi).cdf).pvalue > 1e-3
    # the Haar measure puts angle density (1 - cos t) / pi on [0, pi]: CDF (t - sin t) / pi
    assert stats.kstest(_angles(rot).numpy(), _angle_cdf).pvalue > 1e-3


def test_so3_test_has_power():
    # a single-axis rotation with uniform angle is not uniform on SO(3): the same test rejects it
    rot = RandomRotation("z").matrices(20_000, generator=_gen(12), dtype=torch.float64)
    assert stats.kstest(_angles(rot).numpy(), _angle_cdf).pvalue < 1e-6


@pytest.mark.parametrize(
    "t",
    [
        RandomRotation(),
        RandomRotation("x"),
        RandomRotation("y", 45.0),
        RandomRotation("z", steps=7),
    ],
    ids=repr,
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rotations_orthonormal_det_one(t, dtype):
    rot = t.matrices(500, generator=_gen(13), dtype=dtype)
    eye = torch.eye(3, dtype=dtype).expand(500, 3, 3)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(rot @ rot.transpose(-1, -2), eye, atol=tol)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(500, dtype=dtype), atol=tol)


def test_call_applies_the_drawn_matrices():
    t = RandomRotation()
    x = _cloud(b=5, n=16, seed=14, dtype=torch.float64)
    rot = t.matrices(5, generator=_gen(15), dtype=torch.float64)
    assert torch.allclose(t(x, generator=_gen(15)), x @ rot.transpose(-1, -2))


@pytest.mark.parametrize(
    "axis, up, index", [("x", "y", 0), ("y", "z", 1), ("z", "y", 2), ("up", "y", 1), ("up", "z", 2)]
)
def test_axis_rotation_keeps_axis_coordinate(axis, up, index):
    t = RandomRotation(axis, degrees=180.0, up=up)
    assert t.axis_index == index
    x = _cloud(b=16, seed=16, dtype=torch.float64)
    y = t(x, generator=_gen(17))
    assert torch.allclose(y[..., index], x[..., index], atol=1e-12)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-12)
    assert not torch.allclose(y, x)


def test_up_resolves_to_named_axis():
    x = _cloud(seed=18)
    a = RandomRotation("up", up="z")(x, generator=_gen(19))
    assert torch.equal(a, RandomRotation("z")(x, generator=_gen(19)))


def test_axis_rotation_angle_range_and_sense():
    rot = RandomRotation("z", degrees=30.0).matrices(4000, generator=_gen(20), dtype=torch.float64)
    theta = torch.rad2deg(torch.atan2(rot[:, 1, 0], rot[:, 0, 0]))  # counter-clockwise about z
    assert theta.abs().max() <= 30.0 + 1e-9
    assert theta.min() < -29.0 and theta.max() > 29.0
    assert stats.kstest(theta.numpy(), stats.uniform(loc=-30, scale=60).cdf).pvalue > 1e-3
    # right-handed: a positive angle about z takes e_x towards e_y
    quarter = RandomRotation("z", steps=4).matrices(200, generator=_gen(21), dtype=torch.float64)
    ex_image = quarter[:, :, 0]
    pos = (quarter[:, 1, 0] - 1).abs() < 1e-9
    assert pos.any() and torch.allclose(ex_image[pos], torch.tensor([0.0, 1.0, 0.0]).double())


@pytest.mark.parametrize("steps", [1, 4, 24])
def test_steps_gives_only_discrete_angles(steps):
    rot = RandomRotation("y", steps=steps).matrices(600, generator=_gen(22), dtype=torch.float64)
    theta = torch.atan2(rot[:, 0, 2], rot[:, 2, 2])  # about y: e_z -> e_x for a positive angle
    k = torch.remainder(theta / (2 * math.pi / steps), steps)
    nearest = torch.round(k)
    assert torch.allclose(k, nearest, atol=1e-9)  # only multiples of 2*pi/steps
    assert set(torch.remainder(nearest, steps).long().tolist()) == set(range(steps))


def test_translation_range_and_rigidity():
    x = _cloud(b=200, n=8, seed=23)
    d = RandomTranslation(0.2)(x, generator=_gen(24)) - x  # (B, N, 3)
    assert torch.allclose(d, d[:, :1].expand_as(d), atol=1e-6)  # one shift per cloud
    assert d.abs().max() <= 0.2 + 1e-6 and d.abs().max() > 0.19
    d = RandomTranslation(0.3, per_axis=False)(x, generator=_gen(25)) - x
    assert torch.allclose(d, d[:, :1].expand_as(d), atol=1e-6)
    assert d[:, 0].norm(dim=-1).max() <= 0.3 + 1e-6
    assert d[:, 0].abs().max() > 0.2  # not a single scalar shift on all axes
    assert not torch.allclose(d[:, 0, 0], d[:, 0, 1])


@pytest.mark.parametrize("isotropic", [False, True])
def test_scale_range(isotropic):
    x = _cloud(b=300, n=4, seed=26, dtype=torch.float64) + 5.0  # keep away from 0
    ratio = RandomScale(2 / 3, 1.5, isotropic=isotropic)(x, generator=_gen(27)) / x  # (B, N, 3)
    assert ratio.min() >= 2 / 3 - 1e-12 and ratio.max() <= 1.5 + 1e-12
    assert ratio.min() < 0.7 and ratio.max() > 1.45
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio))  # one factor per cloud (per axis)
    same_axes = torch.allclose(ratio[..., 0], ratio[..., 1])
    assert same_axes == isotropic


def test_jitter_is_clipped_and_has_scale():
    x = _cloud(b=8, n=512, seed=28, dtype=torch.float64)
    d = RandomJitter(0.01, 0.02)(x, generator=_gen(29)) - x
    assert d.abs().max() <= 0.02 + 1e-12
    assert (d.abs() == 0.02).any()  # the tails were clipped
    d = RandomJitter(0.01, None)(x, generator=_gen(29)) - x
    assert abs(d.std().item() - 0.01) < 5e-4 and d.abs().max() > 0.02
    assert not torch.allclose(d[:, 0], d[:, 1])  # per-point noise


def test_normalize_centroid_and_radius():
    x = _cloud(b=6, n=100, seed=30, dtype=torch.float64) * 3.0 + 7.0
    y = Normalize()(x)
    assert torch.allclose(y.mean(dim=1), torch.zeros(6, 3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(y.norm(dim=-1).amax(dim=1), torch.ones(6, dtype=torch.float64))
    # degenerate clouds (all points equal) are centred, not divided by zero
    flat = Normalize()(torch.full((2, 5, 3), 4.0))
    assert torch.equal(flat, torch.zeros(2, 5, 3))


def test_normalize_ragged_uses_valid_points_only():
    x = _cloud(b=3, n=50, seed=31, dtype=torch.float64) + 2.0
    lengths = torch.tensor([50, 20, 0])
    y = Normalize()(x, lengths)
    assert torch.allclose(y[0], Normalize()(x[:1])[0])
    assert torch.allclose(y[1, :20], Normalize()(x[1:2, :20])[0])
    assert torch.equal(y[1, 20:], x[1, 20:]) and torch.equal(y[2], x[2])  # padding untouched


@pytest.mark.parametrize("t", RANDOM, ids=repr)
def test_ragged_padding_passes_through(t):
    x = _cloud(b=3, n=20, seed=32)
    lengths = torch.tensor([20, 7, 0])
    y = t(x, lengths, generator=_gen(33))
    assert torch.equal(y[1, 7:], x[1, 7:]) and torch.equal(y[2], x[2])
    assert not torch.allclose(y[1, :7], x[1, :7])


def test_compose_order_and_shared_generator():
    rot, shift = RandomRotation("z", steps=4), RandomTranslation(0.5)
    x = _cloud(seed=34, dtype=torch.float64)
    g = _gen(35)
    manual = shift(rot(x, generator=g), generator=g)
    assert torch.allclose(Compose([rot, shift])(x, generator=_gen(35)), manual)


def test_default_cr_transform_and_paired_views():
    t = default_cr_transform("z")
    assert [type(s) for s in t.transforms] == [RandomRotation, RandomTranslation, RandomJitter]
    assert t.transforms[0].axis_index == 2
    x = _cloud(b=8, seed=36)
    x0, xt = paired_views(x, t, generator=_gen(37))
    assert x0 is x and xt.shape == x.shape and not torch.allclose(xt, x)
    # rotation about z + shift 0.2 + jitter 0.02: the z coordinate moves by at most 0.22
    assert (xt[..., 2] - x[..., 2]).abs().max() <= 0.22 + 1e-5
    assert torch.equal(xt, paired_views(x, t, generator=_gen(37))[1])


def test_validation_errors():
    t = RandomJitter()
    with pytest.raises(ValueError, match="x must be a \\(B, N, 3\\)"):
        t(torch.zeros(10, 3))
    with pytest.raises(ValueError, match="x must be a \\(B, N, 3\\)"):
        t(torch.zeros(2, 10, 2))
    with pytest.raises(ValueError, match="x must be float"):
        t(torch.zeros(2, 10, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="lengths"):
        t(torch.zeros(2, 10, 3), torch.tensor([10]))
    with pytest.raises(ValueError, match="lengths"):
        t(torch.zeros(2, 10, 3), torch.tensor([10, 11]))
    with pytest.raises(ValueError, match="lengths must be int64"):
        t(torch.zeros(2, 10, 3), torch.tensor([10, 1], dtype=torch.int32))
    with pytest.raises(ValueError, match="generator"):
        t(torch.zeros(2, 10, 3), generator=0)
    with pytest.raises(ValueError, match="axis"):
        RandomRotation("w")
    with pytest.raises(ValueError, match="up"):
        RandomRotation("up", up="vertical")
    with pytest.raises(ValueError, match="degrees"):
        RandomRotation("x", degrees=270)
    with pytest.raises(ValueError, match="axis=None"):
        RandomRotation(None, steps=4)
    with pytest.raises(ValueError, match="steps"):
        RandomRotation("x", steps=0)
    with pytest.raises(ValueError, match="shift"):
        RandomTranslation(-1.0)
    with pytest.raises(ValueError, match="low and high"):
        RandomScale(1.5, 0.5)
    with pytest.raises(ValueError, match="clip"):
        RandomJitter(0.01, 0.0)
    with pytest.raises(ValueError, match="transforms\\[1\\]"):
        Compose([RandomJitter(), lambda x: x])
    with pytest.raises(ValueError, match="transform"):
        paired_views(torch.zeros(1, 4, 3), lambda x: x)
