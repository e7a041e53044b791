"""NVAE / CR-NVAE model: shapes, KLs, residual posterior, spectral norms, likelihoods, IW-NLL."""

from __future__ import annotations

import math

import pytest
import torch

from crfold.consistency import consistency_loss
from crfold.metrics import active_units, iw_nll
from crfold_images.nvae.cells import (
    WNConv2d,
    bn_regularization,
    soft_clamp,
    spectral_regularization,
)
from crfold_images.nvae.evaluation import posterior_features
from crfold_images.nvae.likelihood import (
    bernoulli_log_prob,
    dmol_log_prob,
    dmol_num_params,
)
from crfold_images.nvae.model import NVAE, NVAEArch
from crfold_images.nvae.objective import (
    kl_balancing_weights,
    kl_warmup_coefficient,
    nvae_objective,
)

TINY = dict(
    channels=8,
    num_preprocess_blocks=1,
    num_preprocess_cells=1,
    num_postprocess_blocks=1,
    num_postprocess_cells=1,
    groups_per_scale=(2, 2),
    latent_channels=4,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is faster and robust to a loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_mnist(seed: int = 0) -> NVAE:
    torch.manual_seed(seed)
    return NVAE(NVAEArch(in_channels=1, image_size=32, data_size=28, **TINY))


def tiny_colour(seed: int = 0) -> NVAE:
    torch.manual_seed(seed)
    arch = NVAEArch(
        in_channels=3, image_size=16, data_size=16, likelihood="dmol", num_mixtures=2, **TINY
    )
    return NVAE(arch)


def binary_images(b: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((b, 1, 28, 28), 0.3), generator=g)


@pytest.mark.parametrize("make", [tiny_mnist, tiny_colour])
def test_shapes_through_every_scale_and_group(make) -> None:
    model = make()
    a = model.arch
    x = binary_images() if a.likelihood == "bernoulli" else torch.rand(3, 3, 16, 16)
    out = model(x)
    # image 32 (MNIST padded) or 16 -> one preprocessing block halves it; scales: coarse, fine
    fine = a.image_size // 2
    sides = [fine // 2, fine // 2, fine, fine]
    assert model.group_shapes == [(4, s, s) for s in sides]
    chans = [32, 32, 16, 16]  # 8 channels, doubled by the preprocessing and the scale step
    for g in range(4):
        assert out.z[g].shape == (3, 4, sides[g], sides[g])
        assert out.posteriors[g].mu.shape == (3, 4 * sides[g] ** 2)
        assert out.posteriors[g].logvar.shape == out.priors[g].mu.shape == (3, 4 * sides[g] ** 2)
        assert out.enc_feats[g].shape == (3, chans[g], sides[g], sides[g])
        if g > 0:
            assert out.dec_states[g].shape == out.enc_feats[g].shape
            assert out.prior_raw[g].shape == (3, 8, sides[g], sides[g])
    assert out.params.shape == (3, a.out_params, a.data_size, a.data_size)
    for t in (out.log_px, out.elbo, out.log_weight):
        assert t.shape == (3,) and t.dtype == torch.float32 and torch.isfinite(t).all()
    assert out.kl.shape == out.log_q.shape == out.log_p.shape == (3, 4)


def test_kl_per_group_nonnegative_and_matches_monte_carlo() -> None:
    model = tiny_mnist().eval()
    x = binary_images(2)
    out = model(x)
    assert (out.kl >= 0).all() and torch.isfinite(out.kl).all()
    # the analytic KL is the mean of log q - log p over draws z ~ q (z_<g fixed by one path)
    with torch.no_grad():
        mean = model(x, sample=False)
        for g, (q, p) in enumerate(zip(mean.posteriors, mean.priors)):
            q0, p0 = type(q)(q.mu[:1], q.logvar[:1]), type(p)(p.mu[:1], p.logvar[:1])
            z = q0.mu + q0.std * torch.randn(4000, q.mu.shape[1])  # (4000, L) draws for x_0
            mc = (q0.log_prob(z) - p0.log_prob(z)).mean()
            assert mc.item() == pytest.approx(mean.kl[0, g].item(), rel=0.1, abs=0.5)


def test_residual_posterior_equals_prior_when_residuals_are_zero() -> None:
    model = tiny_mnist()
    with torch.no_grad():
        for g in range(1, model.arch.num_groups):
            model.enc_sampler[g].weight_g.zero_()
            model.enc_sampler[g].bias.zero_()
    out = model(binary_images())
    for g in range(1, model.arch.num_groups):
        torch.testing.assert_close(out.posteriors[g].mu, out.priors[g].mu, rtol=0, atol=0)
        torch.testing.assert_close(out.posteriors[g].logvar, out.priors[g].logvar, rtol=0, atol=0)
        assert out.kl[:, g].abs().max() < 1e-5
    assert (out.kl[:, 0] > 0).all()  # the top group is not residual: q differs from N(0, I)


def test_soft_clamp_and_sigma_floor() -> None:
    x = torch.tensor([-100.0, -5.0, 0.0, 2.0, 100.0])
    y = soft_clamp(x)
    assert y.abs().max() <= 5.0 and y[2] == 0 and y[3] == pytest.approx(5 * math.tanh(0.4))
    model = tiny_mnist()
    with torch.no_grad():  # a very negative log sigma: sigma is floored at exp(-5) + 0.01
        model.enc_sampler[0].bias[4:].fill_(-1e4)
        model.enc_sampler[0].weight_g.zero_()
    q = model(binary_images()).posteriors[0]
    expected = 2 * math.log(math.exp(5 * math.tanh(-1e4 / 5)) + 0.01)
    torch.testing.assert_close(q.logvar, torch.full_like(q.logvar, expected))


@pytest.mark.parametrize("shape,groups", [((5, 3, 3, 3), 1), ((6, 1, 5, 5), 6), ((4, 7, 1, 1), 1)])
def test_spectral_norm_power_iteration_matches_matrix_norm(shape, groups) -> None:
    torch.manual_seed(0)
    conv = WNConv2d(shape[1] * groups, shape[0], shape[2], groups=groups)
    with torch.no_grad():
        conv.weight_g.mul_(torch.rand(shape[0]) + 0.5)
    exact = torch.linalg.matrix_norm(conv.normalized_weight().reshape(shape[0], -1), ord=2)
    first = conv.spectral_norm(1)
    assert first.item() <= exact.item() + 1e-5  # u^T W v with unit u, v: a lower bound
    u_before = conv.sn_u.clone()
    for _ in range(300):
        est = conv.spectral_norm(1)  # one iteration per call, persistent u, v
    assert not torch.equal(u_before, conv.sn_u)
    assert est.item() == pytest.approx(exact.item(), rel=1e-4)
    est.backward()  # differentiable in the weight-norm parameters
    assert conv.weight_g.grad is not None and conv.weight.grad is not None


def test_model_regularizers_are_sums_over_layers() -> None:
    model = tiny_mnist()
    convs = [m for m in model.modules() if isinstance(m, WNConv2d)]
    before = [c.sn_u.clone() for c in convs]
    reg = spectral_regularization(model, n_iter=1)
    assert torch.isfinite(reg) and reg > 0
    # every estimate advanced by one iteration (a one-row weight has the trivial u = +-1)
    assert all(not torch.equal(b, c.sn_u) for b, c in zip(before, convs) if b.numel() > 1)
    torch.testing.assert_close(reg, sum(c.spectral_norm(0) for c in convs))
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    torch.testing.assert_close(bn_regularization(model), sum(b.weight.abs().max() for b in bns))


def test_bernoulli_log_prob() -> None:
    logits = torch.randn(2, 1, 4, 4)
    x = torch.bernoulli(torch.full((2, 1, 4, 4), 0.5))
    p = torch.sigmoid(logits)
    manual = (x * p.log() + (1 - x) * (1 - p).log()).sum((1, 2, 3))
    torch.testing.assert_close(bernoulli_log_prob(logits, x), manual)
    with pytest.raises(ValueError, match="logits and x"):
        bernoulli_log_prob(logits, x[:, :, :3])


@pytest.mark.parametrize("channels", [1, 2])
def test_dmol_is_normalized_over_all_pixel_values(channels) -> None:
    torch.manual_seed(channels)
    m, bits = 3, 4  # 16 levels per channel
    levels = torch.arange(2**bits, dtype=torch.float32) / (2**bits - 1) * 2 - 1
    grid = torch.cartesian_prod(*[levels] * channels).reshape(-1, channels)  # (L^C, C)
    params = torch.randn(1, dmol_num_params(channels, m), 1, 1) * 0.5
    params = params.expand(grid.shape[0], -1, -1, -1)
    logp = dmol_log_prob(params, grid[:, :, None, None], m, num_bits=bits)
    assert torch.logsumexp(logp, 0).item() == pytest.approx(0.0, abs=1e-4)
    assert dmol_num_params(3, 10) == 100
    with pytest.raises(ValueError, match="params must have shape"):
        dmol_log_prob(params[:, :-1], grid[:, :, None, None], m)


def test_iw_nll_with_one_sample_equals_the_elbo_of_the_same_sample() -> None:
    model = tiny_mnist().eval()
    x = binary_images(3)
    with torch.no_grad():
        out = model(x, generator=torch.Generator().manual_seed(7))
        lw = model.log_weights(x, 1, generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(lw[0], out.log_weight)
        g = torch.Generator().manual_seed(7)
        nll = iw_nll(lambda xb, n: model.log_weights(xb, n, generator=g), x, 1, 1)
    assert nll == pytest.approx(-out.log_weight.mean().item(), rel=1e-6)
    # the single-sample ELBO and the analytic-KL ELBO agree in expectation
    with torch.no_grad():
        many = model.log_weights(x, 32, generator=torch.Generator().manual_seed(1))
        # K samples: logsumexp - log K >= their mean (Jensen, exactly for the same draws)
        iw = torch.logsumexp(many, 0) - math.log(32)
    assert (iw >= many.mean(0)).all()
    assert many.mean(0).sub(out.elbo).abs().max().item() < 0.05 * out.elbo.abs().max().item()


def test_kl_warmup_and_balancing() -> None:
    assert kl_warmup_coefficient(0, 100) == pytest.approx(1e-4)
    assert kl_warmup_coefficient(15, 100) == pytest.approx(1e-4 + (1 - 1e-4) * 0.5)
    assert kl_warmup_coefficient(30, 100) == kl_warmup_coefficient(99, 100) == 1.0
    kl = torch.tensor([[1.0, 8.0, 0.0], [3.0, 8.0, 0.0]])
    gamma = kl_balancing_weights(kl, [1, 4, 2])
    assert gamma.sum().item() == pytest.approx(3.0)
    per_dim = torch.tensor([2.0, 2.0, 0.0]) + 0.01
    torch.testing.assert_close(gamma, per_dim * 3 / per_dim.sum())
    with pytest.raises(ValueError, match="kl must be"):
        kl_balancing_weights(kl, [1, 4])


def test_cr_objective_sums_the_consistency_over_groups() -> None:
    model = tiny_mnist()
    x = binary_images(2)
    x_aug = binary_images(2, seed=1)
    g = torch.Generator().manual_seed(0)
    terms, out = nvae_objective(model, x, kl_coeff=0.5, x_aug=x_aug, lam=0.1, generator=g)
    post_x = [type(p)(p.mu[:2], p.logvar[:2]) for p in out.posteriors]
    post_aug = [type(p)(p.mu[2:], p.logvar[2:]) for p in out.posteriors]
    expected = consistency_loss(post_aug, post_x).mean()
    torch.testing.assert_close(terms["consistency"], expected)
    assert terms["consistency"] > 0
    recon = terms["recon"] + terms["recon_aug"]
    assert terms["loss"].item() > recon.item()
    # shared path, t(x) = x: identical encoder features and one path, so R = 0 exactly;
    # own paths differ by their draws below the top group, so R > 0 there
    terms_s, _ = nvae_objective(model, x, kl_coeff=1.0, x_aug=x, cr_path="shared", generator=g)
    assert terms_s["consistency"].abs().item() < 1e-6
    terms_o, out_o = nvae_objective(model, x, kl_coeff=1.0, x_aug=x, generator=g)
    assert terms_o["consistency"].item() > 0
    torch.testing.assert_close(out_o.posteriors[0].mu[:2], out_o.posteriors[0].mu[2:])


def test_bad_inputs_raise() -> None:
    model = tiny_mnist()
    with pytest.raises(ValueError, match="x must be"):
        model(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="image_size must be divisible"):
        NVAEArch(image_size=30, data_size=28)
    with pytest.raises(ValueError, match="likelihood"):
        NVAEArch(likelihood="gaussian")
    with pytest.raises(ValueError, match="cr_path"):
        nvae_objective(model, binary_images(), kl_coeff=1.0, cr_path="other")


def test_posterior_features_and_streamed_variance() -> None:
    model = tiny_mnist()
    x = binary_images(7)
    batches = [x[:3], x[3:5], x[5:]]
    feats, top, var = posterior_features(model, batches, "all_pooled")
    assert feats.shape == (7, 4 * 4) and top.shape == (7, 4 * 8 * 8)
    assert model.training  # the train/eval mode is restored
    posts = model.eval().encode(x)  # the features are taken in eval mode (running BN stats)
    every = torch.cat([p.mu for p in posts], dim=1)  # (7, sum of group dims)
    # equal up to float32 batching noise of the encoder (batches of 3, 2, 2 vs one of 7)
    torch.testing.assert_close(var, active_units(every)[1].cpu(), rtol=1e-4, atol=1e-8)
    pooled = torch.cat([p.mu.view(7, 4, -1).mean(-1) for p in posts], dim=1)
    torch.testing.assert_close(feats, pooled, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="kind"):
        posterior_features(model, batches, "pooled")
