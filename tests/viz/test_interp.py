"""viz.interp: lerp / slerp, encoding and decoding a path, grid colours (no Open3D needed)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from crfold.models import FoldingNetVAE
from viz.interp import (
    decode_codes,
    decode_path,
    encode_pair,
    grid_colors,
    input_colors,
    interpolate,
    interpolation_row,
    lerp,
    slerp,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return FoldingNetVAE(latent_dim=8, k=8, grid_size=6, mode="vae")


def test_lerp_endpoints_and_midpoint():
    a, b = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([5.0, 0.0, -1.0])
    out = lerp(a, b, [0.0, 0.25, 1.0])
    assert out.shape == (3, 3) and out.dtype == torch.float32
    assert torch.equal(out[0], a) and torch.equal(out[2], b)
    torch.testing.assert_close(out[1], 0.75 * a + 0.25 * b)
    assert lerp(a, b, 0.5).shape == (1, 3)


def test_slerp_endpoints_exact_and_stays_on_the_sphere():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(16, generator=g), torch.randn(16, generator=g)
    a, b = a / a.norm(), b / b.norm()
    ts = torch.linspace(0, 1, 9)
    out = slerp(a, b, ts)
    assert torch.equal(out[0], a) and torch.equal(out[-1], b)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(9), atol=1e-6, rtol=0)
    # Equal angular steps along the great circle (lerp's chords are not equal in angle).
    angles = torch.arccos((out[:-1] * out[1:]).sum(1).clamp(-1, 1))
    torch.testing.assert_close(angles, angles.mean().expand(8), atol=1e-5, rtol=0)
    assert not torch.allclose(lerp(a, b, 0.5), slerp(a, b, 0.5), atol=1e-3)


def test_slerp_of_orthogonal_unit_vectors_is_the_known_arc():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    out = slerp(a, b, [1 / 3])[0]
    torch.testing.assert_close(out, torch.tensor([np.cos(np.pi / 6), np.sin(np.pi / 6)]).float())


def test_slerp_falls_back_to_lerp_for_parallel_or_zero_codes():
    a = torch.tensor([1.0, 2.0, 2.0])
    torch.testing.assert_close(slerp(a, 3 * a, [0.5]), lerp(a, 3 * a, [0.5]))
    torch.testing.assert_close(slerp(a, -a, [0.5]), lerp(a, -a, [0.5]))
    z = torch.zeros(3)
    torch.testing.assert_close(slerp(z, a, [0.5]), lerp(z, a, [0.5]))
    assert torch.isfinite(slerp(a, a, torch.linspace(0, 1, 5))).all()


def test_interpolate_dispatches_and_rejects_bad_input():
    a, b = torch.randn(4), torch.randn(4)
    torch.testing.assert_close(interpolate(a, b, 0.3, "slerp"), slerp(a, b, 0.3))
    torch.testing.assert_close(interpolate(a, b, 0.3), lerp(a, b, 0.3))
    with pytest.raises(ValueError, match="method"):
        interpolate(a, b, 0.3, "cubic")
    with pytest.raises(ValueError, match="t: expected values in"):
        lerp(a, b, 1.5)
    with pytest.raises(ValueError, match="z_b"):
        lerp(a, torch.randn(5), 0.5)
    with pytest.raises(ValueError, match="z_a"):
        slerp(torch.randn(2, 4), b, 0.5)


def test_grid_colors_map_the_corners_and_stay_in_range(model):
    grid = model.decoder.grid(6)  # (36, 2), first coordinate slowest
    colors = grid_colors(grid)
    assert colors.shape == (36, 3) and colors.dtype == torch.float32
    assert colors.min() >= 0 and colors.max() <= 1
    torch.testing.assert_close(colors[0], torch.tensor([0.0, 0.0, 1.0]))  # (u, v) = (0, 0)
    torch.testing.assert_close(colors[5], torch.tensor([0.0, 1.0, 0.5]))  # (0, 1)
    torch.testing.assert_close(colors[30], torch.tensor([1.0, 0.0, 0.5]))  # (1, 0)
    torch.testing.assert_close(colors[35], torch.tensor([1.0, 1.0, 0.0]))  # (1, 1)
    assert len({tuple(c) for c in colors.tolist()}) == 36  # every grid point its own colour
    with pytest.raises(ValueError, match="grid"):
        grid_colors(torch.zeros(4, 3))
    assert input_colors(5).shape == (5, 3)


def test_encode_pair_is_mu_in_eval_mode_and_restores_training(model):
    x = torch.randn(2, 40, 3)
    model.train()
    za, zb = encode_pair(model, x[0], x[1])
    assert model.training and za.shape == (8,) and not za.requires_grad
    model.eval()
    torch.testing.assert_close(torch.stack([za, zb]), model.encode(x).mu.detach())
    with pytest.raises(ValueError, match="cloud"):
        encode_pair(model, x, x[1])


def test_decode_path_endpoints_decode_the_codes(model):
    za, zb = torch.randn(8), torch.randn(8)
    points, grid = decode_path(model, za, zb, [0.0, 0.5, 1.0], "slerp", grid_size=5)
    assert points.shape == (3, 25, 3) and grid.shape == (25, 2)
    ends, _ = decode_codes(model, torch.stack([za, zb]), grid_size=5)
    torch.testing.assert_close(points[[0, 2]], ends)
    assert not torch.allclose(points[0], points[2])


def test_interpolation_row(model):
    a, b = torch.randn(40, 3), torch.randn(50, 3)
    row, grid = interpolation_row(model, a, b, 4, titles=("A", "B"))
    assert row.decoded.shape == (4, 36, 3) and grid.shape == (36, 2)
    torch.testing.assert_close(row.ts, torch.linspace(0, 1, 4, dtype=torch.float64))
    assert row.input_b.shape == (50, 3) and (row.title_a, row.title_b) == ("A", "B")
    with pytest.raises(ValueError, match="steps"):
        interpolation_row(model, a, b, 1)


def test_no_viz_module_imports_open3d_at_import_time():
    code = (
        "import sys, viz.camera, viz.interp, viz.session, viz.source, viz.render, viz.cli, "
        "viz.viewer, viz.offscreen, viz.interpolate; print('open3d' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
