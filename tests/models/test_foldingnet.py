"""FoldingNet-VAE: encoder input, graph pooling, shapes per mode, gradients, losses, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crfold.models import (
    AE_LOGVAR,
    DEFAULT_OBS_SCALE,
    MODES,
    FoldingNetVAE,
    Posterior,
    VAEOutput,
    foldingnet_chamfer,
    graph_max_pool,
    knn_excluding_self,
    local_covariance,
    reconstruction_nll,
)

SMALL = dict(latent_dim=16, k=8, grid_size=8)


def _cloud(B=2, N=64, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, N, 3, generator=g, dtype=dtype)


def _cloud_with_duplicates(N=48, k=8, seed=1):
    """(1, N, 3) float64 with exact duplicates.

    Points 5, 12 and 30 copy point 20 (so 20 has lower-index duplicates), and points 34..34+k+2
    copy point 33: with k + 4 identical points, the last ones are crowded out of their own
    ``K = k + 1`` neighbour list.
    """
    x = _cloud(1, N, seed, torch.float64)
    x[0, [5, 12, 30]] = x[0, 20].clone()
    x[0, 34 : 34 + k + 3] = x[0, 33].clone()
    return x


def _np_neighbours(x: np.ndarray, k: int) -> np.ndarray:
    """(N, 3) -> (N, k): first k other points by (squared distance, index)."""
    N = x.shape[0]
    out = np.empty((N, k), dtype=np.int64)
    for i in range(N):
        d = ((x - x[i]) ** 2).sum(-1)
        order = [j for j in np.argsort(d, kind="stable") if j != i]
        out[i] = order[:k]
    return out


def _np_covariance(x: np.ndarray, k: int) -> np.ndarray:
    nb = _np_neighbours(x, k)
    return np.stack([np.cov(x[nb[i]].T, ddof=1).reshape(9) for i in range(x.shape[0])])


# --- encoder input --------------------------------------------------------------------------


@pytest.mark.parametrize("k", [8, 16])
def test_local_covariance_matches_numpy(k):
    x = _cloud(2, 48, seed=k, dtype=torch.float64)
    got = local_covariance(x, k=k)
    assert got.shape == (2, 48, 9) and got.dtype == torch.float64
    for b in range(2):
        np.testing.assert_allclose(got[b].numpy(), _np_covariance(x[b].numpy(), k), atol=1e-12)


def test_local_covariance_with_duplicates_matches_numpy():
    x = _cloud_with_duplicates()
    got = local_covariance(x, k=8)[0].numpy()
    np.testing.assert_allclose(got, _np_covariance(x[0].numpy(), 8), atol=1e-12)
    np.testing.assert_allclose(got[44], 0.0, atol=1e-12)  # all neighbours are copies


def test_knn_excluding_self_drops_the_query_not_the_first_column():
    k = 8
    x = _cloud_with_duplicates(k=k)
    idx = knn_excluding_self(x, k)[0]  # (N, k)
    N = x.shape[1]
    assert not (idx == torch.arange(N)[:, None]).any()
    np.testing.assert_array_equal(idx.numpy(), _np_neighbours(x[0].numpy(), k))
    # Point 20's lower-index duplicates come first and are kept.
    assert idx[20, :3].tolist() == [5, 12, 30]
    # Point 44 is crowded out of its own K = k + 1 list: the farthest column goes instead.
    assert idx[44].tolist() == list(range(33, 33 + k))


def test_local_covariance_float32_close_to_float64():
    x = _cloud(1, 64, seed=3, dtype=torch.float64)
    c64 = local_covariance(x, 16)
    c32 = local_covariance(x.float(), 16)
    assert c32.dtype == torch.float32
    torch.testing.assert_close(c32.double(), c64, atol=1e-5, rtol=1e-4)


def test_graph_max_pool_matches_naive_loop():
    g = torch.Generator().manual_seed(4)
    B, N, C, k = 2, 10, 5, 3
    feats = torch.randn(B, N, C, generator=g)
    nb = torch.randint(0, N, (B, N, k), generator=g)
    got = graph_max_pool(feats, nb)
    want = torch.empty_like(feats)
    for b in range(B):
        for i in range(N):
            for c in range(C):
                vals = [feats[b, i, c].item()] + [feats[b, j, c].item() for j in nb[b, i].tolist()]
                want[b, i, c] = max(vals)
    torch.testing.assert_close(got, want, atol=0, rtol=0)


# --- model -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_shapes_every_mode(mode):
    torch.manual_seed(0)
    model = FoldingNetVAE(mode=mode, **SMALL)
    out = model(_cloud())
    assert isinstance(out, VAEOutput) and isinstance(out.posterior, Posterior)
    assert out.recon.shape == (2, 64, 3)
    assert out.posterior.mu.shape == out.posterior.logvar.shape == out.z.shape == (2, 16)
    assert model.decode(out.z, grid_size=45).shape == (2, 2025, 3)
    assert model.decode(out.z, grid_size=20).shape == (2, 400, 3)


def test_decode_with_grid_order_and_cache():
    torch.manual_seed(0)
    model = FoldingNetVAE(**SMALL)
    z = torch.randn(3, 16)
    pts, grid = model.decode_with_grid(z, grid_size=5)
    assert pts.shape == (3, 25, 3) and grid.shape == (25, 2)
    torch.testing.assert_close(pts, model.decode(z, grid_size=5))
    u = torch.linspace(-0.3, 0.3, 5)
    torch.testing.assert_close(grid[1], torch.stack([u[0], u[1]]))  # second coordinate fastest
    torch.testing.assert_close(grid[5], torch.stack([u[1], u[0]]))
    assert grid.min() == -0.3 and grid.max() == pytest.approx(0.3)
    assert model.decoder.grid(5) is grid  # cached per (size, device, dtype)
    assert model.decode_with_grid(z)[1].shape == (64, 2)  # default grid_size=8


def test_fold_equals_concatenation_mlp():
    torch.manual_seed(0)
    fold = FoldingNetVAE(**SMALL).decoder.fold1
    grid = torch.rand(7, 2)
    z = torch.randn(2, 16)
    cat = torch.cat([grid.expand(2, 7, 2), z[:, None].expand(2, 7, 16)], dim=-1)  # (2, 7, 18)
    naive = fold.fc3(torch.relu(fold.fc2(torch.relu(fold.fc1(cat)))))
    torch.testing.assert_close(fold(grid, z), naive, atol=1e-5, rtol=1e-5)


def _kl_to_prior(p: Posterior) -> torch.Tensor:
    return 0.5 * (p.mu**2 + p.logvar.exp() - 1.0 - p.logvar).sum(-1)


@pytest.mark.parametrize("mode", ["ae", "vae", "cr"])
def test_gradients_reach_every_parameter(mode):
    torch.manual_seed(0)
    model = FoldingNetVAE(mode=mode, **SMALL)
    x = _cloud()
    out = model(x)
    loss = model.reconstruction_nll(out.recon, x)
    if mode != "ae":
        loss = loss + _kl_to_prior(out.posterior)
    loss.mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_ae_mode_is_deterministic_and_z_is_mu():
    torch.manual_seed(0)
    model = FoldingNetVAE(mode="ae", **SMALL)
    assert model.encoder.logvar is None
    x = _cloud()
    a, b = model(x), model(x)
    torch.testing.assert_close(a.z, a.posterior.mu, atol=0, rtol=0)
    torch.testing.assert_close(a.recon, b.recon, atol=0, rtol=0)
    assert (a.posterior.logvar == AE_LOGVAR).all()


def test_vae_mode_is_stochastic_but_reproducible_with_generator():
    torch.manual_seed(0)
    model = FoldingNetVAE(mode="vae", **SMALL)
    x = _cloud()
    a, b = model(x), model(x)
    assert not torch.equal(a.z, b.z) and not torch.equal(a.z, a.posterior.mu)
    c = model(x, generator=torch.Generator().manual_seed(7))
    d = model(x, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(c.z, d.z, atol=0, rtol=0)
    torch.testing.assert_close(c.recon, d.recon, atol=0, rtol=0)


def test_encoder_is_permutation_invariant():
    torch.manual_seed(0)
    model = FoldingNetVAE(**SMALL)
    x = _cloud()
    perm = torch.randperm(64)
    p1, p2 = model.encode(x), model.encode(x[:, perm])
    torch.testing.assert_close(p1.mu, p2.mu, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(p1.logvar, p2.logvar, atol=1e-5, rtol=1e-5)


def test_decode_after_inference_mode_still_trains():
    torch.manual_seed(0)
    model = FoldingNetVAE(**SMALL)
    z = torch.randn(2, 16)
    with torch.inference_mode():
        model.decode(z)  # builds and caches the grid
    model.decode(z).sum().backward()
    assert model.decoder.fold1.fc1.weight.grad is not None


def _linear_params(i: int, o: int) -> int:
    return i * o + o


@pytest.mark.parametrize("mode", ["ae", "vae"])
@pytest.mark.parametrize("use_covariance", [True, False])
def test_parameter_count_and_layer_shapes_follow_spec(mode, use_covariance):
    L = 512
    model = FoldingNetVAE(latent_dim=L, mode=mode, use_covariance=use_covariance)
    enc, dec = model.encoder, model.decoder
    c_in = 12 if use_covariance else 3
    enc_layers = [(c_in, 64), (64, 64), (64, 64), (64, 128), (128, 1024), (1024, 512), (512, L)]
    if mode != "ae":
        enc_layers.append((512, L))
    fold_layers = [(2 + L, 512), (512, 512), (512, 3), (3 + L, 512), (512, 512), (512, 3)]
    assert sum(p.numel() for p in enc.parameters()) == sum(_linear_params(*s) for s in enc_layers)
    assert sum(p.numel() for p in dec.parameters()) == sum(_linear_params(*s) for s in fold_layers)
    assert enc.mlp1[0].weight.shape == (64, c_in)
    assert enc.graph1.weight.shape == (128, 64) and enc.graph2.weight.shape == (1024, 128)
    assert enc.fc.weight.shape == (512, 1024) and enc.mu.weight.shape == (L, 512)
    assert dec.fold1.fc1.weight.shape == (512, 2 + L) and dec.fold2.fc1.weight.shape == (512, 3 + L)
    assert dec.fold1.fc3.weight.shape == dec.fold2.fc3.weight.shape == (3, 512)
    assert dec.grid().shape == (2025, 2)


def test_invalid_input_raises_value_error_naming_argument():
    model = FoldingNetVAE(**SMALL)
    with pytest.raises(ValueError, match="x must have shape"):
        model.encode(torch.randn(64, 3))
    with pytest.raises(ValueError, match="x must have shape"):
        model.encode(torch.randn(2, 64, 2))
    with pytest.raises(ValueError, match="x must have at least k \\+ 1 = 9"):
        model.encode(torch.randn(2, 8, 3))
    with pytest.raises(ValueError, match="x must be a floating-point"):
        model.encode(torch.zeros(2, 64, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="z must have shape"):
        model.decode(torch.randn(2, 15))
    with pytest.raises(ValueError, match="grid_size"):
        model.decode(torch.randn(2, 16), grid_size=1)
    with pytest.raises(ValueError, match="mode"):
        FoldingNetVAE(mode="gan")
    with pytest.raises(ValueError, match="k must be"):
        FoldingNetVAE(k=1)
    with pytest.raises(ValueError, match="obs_scale"):
        FoldingNetVAE(obs_scale=0.0)
    with pytest.raises(ValueError, match="x must have at least"):
        local_covariance(torch.randn(1, 16, 3), k=16)
    with pytest.raises(ValueError, match="neighbours must have shape"):
        local_covariance(torch.randn(1, 20, 3), k=4, neighbours=torch.zeros(1, 20, 3).long())
    with pytest.raises(ValueError, match="recon must have shape"):
        reconstruction_nll(torch.randn(2, 5, 2), torch.randn(2, 5, 3))


# --- losses ----------------------------------------------------------------------------------


def _np_sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)  # (M, N)


def test_foldingnet_chamfer_matches_brute_force():
    recon, x = (
        _cloud(3, 30, seed=5, dtype=torch.float64),
        _cloud(3, 41, seed=6, dtype=torch.float64),
    )
    recon[1] = x[1, :30]  # exact matches: D = 1e-3 there, never NaN
    got = foldingnet_chamfer(recon, x)
    assert got.shape == (3,)
    for b in range(3):
        D = np.sqrt(_np_sq_dists(recon[b].numpy(), x[b].numpy()) + 1e-6)
        want = max(D.min(1).mean(), D.min(0).mean())
        assert got[b].item() == pytest.approx(want, rel=1e-12)


def test_reconstruction_nll_formula_and_obs_scale_scaling():
    recon, x = (
        _cloud(2, 25, seed=7, dtype=torch.float64),
        _cloud(2, 33, seed=8, dtype=torch.float64),
    )
    nll = reconstruction_nll(recon, x, obs_scale=0.1)
    assert nll.shape == (2,)
    for b in range(2):
        d = _np_sq_dists(recon[b].numpy(), x[b].numpy())
        want = (d.min(1).sum() + d.min(0).sum()) / (2 * 0.1**2)
        assert nll[b].item() == pytest.approx(want, rel=1e-12)
    torch.testing.assert_close(reconstruction_nll(recon, x, obs_scale=0.05), 4.0 * nll)
    model = FoldingNetVAE(obs_scale=0.1, **SMALL)
    torch.testing.assert_close(model.reconstruction_nll(recon, x), nll)
    assert FoldingNetVAE(**SMALL).obs_scale == DEFAULT_OBS_SCALE == 0.1


def test_mean_chamfer_loss_formula_and_the_two_readings():
    from crfold.models.foldingnet import RECON_TERMS, mean_chamfer_loss

    recon, x = (
        _cloud(2, 25, seed=9, dtype=torch.float64),
        _cloud(2, 33, seed=10, dtype=torch.float64),
    )
    got = mean_chamfer_loss(recon, x)
    assert got.shape == (2,)
    for b in range(2):
        d = _np_sq_dists(recon[b].numpy(), x[b].numpy())
        want = d.min(1).mean() + d.min(0).mean()  # mean per direction, summed over the two
        assert got[b].item() == pytest.approx(want, rel=1e-12)
    model = FoldingNetVAE(obs_scale=0.1, **SMALL)
    assert RECON_TERMS == ("gaussian", "mean_chamfer")
    torch.testing.assert_close(
        model.reconstruction_loss(recon, x), model.reconstruction_nll(recon, x)
    )
    torch.testing.assert_close(model.reconstruction_loss(recon, x, "mean_chamfer"), got)
    # equal cloud sizes: the Gaussian NLL is the mean Chamfer times N / (2 sigma^2)
    same = _cloud(2, 25, seed=11, dtype=torch.float64)
    torch.testing.assert_close(
        model.reconstruction_loss(recon, same), mean_chamfer_loss(recon, same) * 25 / (2 * 0.01)
    )
    with pytest.raises(ValueError, match="kind"):
        model.reconstruction_loss(recon, x, "l2")
    with pytest.raises(ValueError, match="recon"):
        mean_chamfer_loss(torch.randn(2, 5, 2), x)
