"""Tests for crfold_images.transforms: per-sample random affine warps of image batches."""

from __future__ import annotations

import pytest
import torch

from crfold_images.transforms import AffineParams, RandomAffine2d, affine_warp, paper_augmentation

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _dot(row: int, col: int, size: int = 28) -> torch.Tensor:
    x = torch.zeros(1, 1, size, size)
    x[0, 0, row, col] = 1.0
    return x


def _peak(y: torch.Tensor) -> tuple[int, int]:
    return divmod(int(y.flatten().argmax()), y.shape[-1])


def _params(angle=0.0, dx=0.0, dy=0.0, scale=1.0) -> AffineParams:
    return AffineParams(torch.tensor([angle]), torch.tensor([[dx, dy]]), torch.tensor([scale]))


def test_geometry_translation_rotation_scale():
    x = _dot(14, 19)  # 5.5 px right of the centre (13.5), 0.5 px below it
    assert _peak(affine_warp(x, _params(dx=2.0, dy=-1.0))) == (13, 21)
    assert _peak(affine_warp(x, _params(angle=90.0))) == (19, 13)  # clockwise: right -> down
    assert _peak(affine_warp(x, _params(scale=2.0)))[1] == 24  # 5.5 -> 11 px from the centre


def test_identity_at_zero_strength_is_exact_copy():
    x = torch.rand(5, 3, 32, 32)
    t = RandomAffine2d(degrees=0.0, translate=0.0, scale=(1.0, 1.0))
    assert t.is_identity
    y = t(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y, x) and y.data_ptr() != x.data_ptr()
    # The warp itself is the identity up to rounding at identity parameters.
    assert torch.allclose(affine_warp(x[:1], _params()), x[:1], atol=1e-5)


def test_ranges_respected():
    t = RandomAffine2d(degrees=15.0, translate=2.0, scale=(0.9, 1.1))
    p = t.sample_params(20000, torch.Generator().manual_seed(1))
    assert p.angle.abs().max() <= 15.0 and p.angle.abs().max() > 14.9
    assert p.shift.abs().max() <= 2.0 and p.shift.abs().max() > 1.99
    assert p.scale.min() >= 0.9 and p.scale.max() <= 1.1
    assert abs(float(p.angle.mean())) < 0.3 and abs(float(p.scale.mean()) - 1.0) < 0.003
    # A translate-only warp never moves a dot by more than 2 px on either axis.
    x = _dot(14, 14).expand(64, 1, 28, 28).contiguous()
    y = paper_augmentation("translate")(x, generator=torch.Generator().manual_seed(2))
    for img in y:
        r, c = _peak(img)
        assert abs(r - 14) <= 2 and abs(c - 14) <= 2


def test_per_sample_draws_match_single_warps():
    x = torch.rand(6, 1, 28, 28)
    t = RandomAffine2d()
    params = t.sample_params(6, torch.Generator().manual_seed(3))
    y = t(x, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(y, affine_warp(x, params), atol=1e-6)
    assert len({round(float(a), 4) for a in params.angle}) == 6  # every image its own draw
    for i in range(6):
        pi = AffineParams(params.angle[i : i + 1], params.shift[i : i + 1], params.scale[i : i + 1])
        assert torch.allclose(y[i : i + 1], affine_warp(x[i : i + 1], pi), atol=1e-5)
    # Identical images get different warps.
    same = x[:1].expand(4, 1, 28, 28).contiguous()
    out = t(same, generator=torch.Generator().manual_seed(4))
    assert not torch.allclose(out[0], out[1])


def test_families_alone():
    rot = paper_augmentation("rotate")
    assert (rot.degrees, rot.translate, rot.scale) == (15.0, 0.0, (1.0, 1.0))
    tr = paper_augmentation("translate")
    assert (tr.degrees, tr.translate, tr.scale) == (0.0, 2.0, (1.0, 1.0))
    sc = paper_augmentation("scale")
    assert (sc.degrees, sc.translate, sc.scale) == (0.0, 0.0, (0.9, 1.1))
    both = paper_augmentation("rotate,scale")
    assert (both.degrees, both.translate) == (15.0, 0.0)
    full = paper_augmentation("all")
    assert (full.degrees, full.translate, full.scale) == (15.0, 2.0, (0.9, 1.1))
    with pytest.raises(ValueError, match="families"):
        paper_augmentation("shear")


@pytest.mark.parametrize("device", DEVICES)
def test_seeded_dtype_device(device):
    t = RandomAffine2d()
    x = torch.rand(4, 1, 28, 28, device=device, dtype=torch.float64)
    a = t(x, generator=torch.Generator().manual_seed(5))
    b = t(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.dtype == x.dtype and a.device == x.device
    h = t(x.half(), generator=torch.Generator().manual_seed(5))
    assert h.dtype == torch.float16 and torch.allclose(h.double(), a, atol=2e-2)


def test_invalid_input_and_repr():
    t = RandomAffine2d(degrees=10.0, translate=1.0, scale=(0.8, 1.2), padding_mode="border")
    assert eval(repr(t)).__dict__ == t.__dict__
    with pytest.raises(ValueError, match="x must be"):
        t(torch.rand(28, 28))
    with pytest.raises(ValueError, match="float"):
        t(torch.zeros(1, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="degrees"):
        RandomAffine2d(degrees=-1.0)
    with pytest.raises(ValueError, match="scale"):
        RandomAffine2d(scale=(1.2, 0.8))
    with pytest.raises(ValueError, match="padding_mode"):
        RandomAffine2d(padding_mode="wrap")
    with pytest.raises(ValueError, match="params.angle"):
        affine_warp(torch.rand(2, 1, 8, 8), _params())
