"""Tests for crfold.consistency: Gaussian KL, the consistency term and the CR objective."""

from __future__ import annotations

import math

import pytest
import torch

from crfold.consistency import consistency_loss, cr_objective, gaussian_kl, vae_objective
from crfold.models.common import Posterior, standard_normal_log_prob

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _posterior(b: int, dim: int, seed: int, dtype=torch.float64, device="cpu") -> Posterior:
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(b, dim, generator=g, dtype=dtype)
    logvar = 0.8 * torch.randn(b, dim, generator=g, dtype=dtype)
    return Posterior(mu.to(device), logvar.to(device))


def _mc_kl(q: Posterior, log_p, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte-Carlo KL(q||p) = E_q[log q(z) - log p(z)]: (mean (B,), standard error (B,))."""
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(n, *q.mu.shape, generator=g, dtype=q.mu.dtype)  # (n, B, L)
    z = q.mu + q.std * eps
    vals = q.log_prob(z) - log_p(z)  # (n, B)
    return vals.mean(0), vals.std(0) / math.sqrt(n)


def test_gaussian_kl_prior_matches_monte_carlo():
    q = _posterior(3, 5, seed=0)
    closed = gaussian_kl(q.mu, q.logvar)
    mc, se = _mc_kl(q, standard_normal_log_prob, n=200_000, seed=1)
    assert closed.shape == (3,)
    assert torch.all((closed - mc).abs() < 5 * se + 1e-9), (closed, mc, se)


def test_gaussian_kl_between_posteriors_matches_monte_carlo():
    q, p = _posterior(3, 5, seed=2), _posterior(3, 5, seed=3)
    closed = gaussian_kl(q.mu, q.logvar, p.mu, p.logvar)
    mc, se = _mc_kl(q, p.log_prob, n=200_000, seed=4)
    assert torch.all((closed - mc).abs() < 5 * se + 1e-9), (closed, mc, se)


def test_gaussian_kl_leading_shapes_and_broadcast_prior():
    mu, logvar = (
        torch.randn(2, 3, 4, dtype=torch.float64),
        torch.randn(2, 3, 4, dtype=torch.float64),
    )
    kl = gaussian_kl(mu, logvar)
    assert kl.shape == (2, 3)
    assert torch.allclose(kl[1, 2], gaussian_kl(mu[1, 2], logvar[1, 2]))
    # an explicit N(0, I) given as broadcast (L,) tensors equals the default prior
    zeros = torch.zeros(4, dtype=torch.float64)
    assert torch.allclose(gaussian_kl(mu, logvar, zeros, zeros), kl)
    assert torch.allclose(gaussian_kl(mu, logvar, zeros, None), kl)
    assert torch.allclose(gaussian_kl(mu, logvar, None, zeros), kl)


def test_gaussian_kl_non_unit_prior_variance():
    # KL is invariant under z -> c z applied to both distributions (mu -> c mu, var -> c^2 var),
    # which exercises the general (non-unit prior variance) branch against itself at two scales.
    mu_q, lv_q = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    mu_p, lv_p = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    c = 3.0
    a = gaussian_kl(mu_q, lv_q, mu_p, lv_p)
    b = gaussian_kl(c * mu_q, lv_q + 2 * math.log(c), c * mu_p, lv_p + 2 * math.log(c))
    assert torch.allclose(a, b)


def test_direction_and_paper_formula():
    aug, orig = _posterior(4, 7, seed=5), _posterior(4, 7, seed=6)
    r = consistency_loss(aug, orig)
    # Algorithm 1: R = 1/2 sum((s~^2 + (m~ - m)^2) / s^2 - 1 + 2 log(s / s~)), ~ = transformed
    s_t, s = aug.std, orig.std
    paper = 0.5 * ((s_t**2 + (aug.mu - orig.mu) ** 2) / s**2 - 1 + 2 * torch.log(s / s_t)).sum(-1)
    assert torch.allclose(r, paper)
    assert torch.allclose(r, gaussian_kl(aug.mu, aug.logvar, orig.mu, orig.logvar))
    swapped = consistency_loss(orig, aug)
    assert not torch.allclose(r, swapped), "KL is asymmetric; the argument order matters"


def test_zero_when_equal_and_non_negative():
    q = _posterior(5, 8, seed=7)
    same = consistency_loss(q, Posterior(q.mu.clone(), q.logvar.clone()))
    assert torch.allclose(same, torch.zeros(5, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))
    for seed in range(20):
        a, b = _posterior(6, 4, seed=100 + seed), _posterior(6, 4, seed=200 + seed)
        assert torch.all(consistency_loss(a, b) >= 0)
        assert torch.all(gaussian_kl(a.mu, a.logvar) >= 0)


def test_gradients_reach_both_posteriors():
    aug, orig = _posterior(3, 4, seed=8), _posterior(3, 4, seed=9)
    leaves = [t.clone().requires_grad_(True) for t in (aug.mu, aug.logvar, orig.mu, orig.logvar)]
    r = consistency_loss(Posterior(leaves[0], leaves[1]), Posterior(leaves[2], leaves[3]))
    r.sum().backward()
    for name, leaf in zip(["aug.mu", "aug.logvar", "orig.mu", "orig.logvar"], leaves):
        assert leaf.grad is not None and leaf.grad.abs().sum() > 0, name
    # exact values: dR/dmu~ = (mu~ - mu) / s^2 = -dR/dmu
    assert torch.allclose(leaves[0].grad, (aug.mu - orig.mu) / orig.std**2)
    assert torch.allclose(leaves[2].grad, -leaves[0].grad)


def test_gradcheck_float64():
    aug, orig = _posterior(2, 3, seed=10), _posterior(2, 3, seed=11)
    inputs = tuple(
        t.clone().requires_grad_(True) for t in (aug.mu, aug.logvar, orig.mu, orig.logvar)
    )
    assert torch.autograd.gradcheck(
        lambda a, b, c, d: consistency_loss(Posterior(a, b), Posterior(c, d)), inputs
    )


def _terms(b=4, dim=6, seed=12):
    g = torch.Generator().manual_seed(seed)
    recon_x, kl_x, recon_a, kl_a = (
        torch.rand(b, generator=g, dtype=torch.float64) * 10 for _ in range(4)
    )
    return recon_x, kl_x, recon_a, kl_a, _posterior(b, dim, seed + 1), _posterior(b, dim, seed + 2)


def test_cr_objective_terms_and_beta_only_on_prior_kl():
    rx, kx, ra, ka, px, pa = _terms()
    out1 = cr_objective(rx, kx, ra, ka, px, pa, beta=1.0, lam=0.3)
    out2 = cr_objective(rx, kx, ra, ka, px, pa, beta=2.5, lam=0.3)
    assert set(out1) == {"loss", "recon", "kl", "recon_aug", "kl_aug", "consistency"}
    r = consistency_loss(pa, px).mean()
    assert torch.allclose(out1["consistency"], r)
    expected = rx.mean() + kx.mean() + ra.mean() + ka.mean() + 0.3 * r
    assert torch.allclose(out1["loss"], expected)
    # beta scales only the two prior KLs: the difference is 1.5 * (kl + kl_aug)
    assert torch.allclose(out2["loss"] - out1["loss"], 1.5 * (kx.mean() + ka.mean()))
    assert torch.allclose(out2["consistency"], out1["consistency"])
    for k in ("recon", "kl", "recon_aug", "kl_aug"):
        assert out1[k].dim() == 0 and torch.equal(out1[k], out2[k])


def test_cr_objective_lambda_zero_is_two_elbos():
    rx, kx, ra, ka, px, pa = _terms(seed=20)
    out = cr_objective(rx, kx, ra, ka, px, pa, beta=0.7, lam=0.0)
    two = vae_objective(rx, kx, beta=0.7)["loss"] + vae_objective(ra, ka, beta=0.7)["loss"]
    assert torch.allclose(out["loss"], two)
    assert out["consistency"] > 0  # still reported


def test_cr_objective_lambda_scales_consistency():
    rx, kx, ra, ka, px, pa = _terms(seed=30)
    a = cr_objective(rx, kx, ra, ka, px, pa, lam=0.1)["loss"]
    b = cr_objective(rx, kx, ra, ka, px, pa, lam=1.1)["loss"]
    assert torch.allclose(b - a, consistency_loss(pa, px).mean())


def test_cr_objective_gradients_reach_both_posteriors():
    rx, kx, ra, ka, px, pa = _terms(seed=40)
    leaves = [t.clone().requires_grad_(True) for t in (px.mu, px.logvar, pa.mu, pa.logvar)]
    out = cr_objective(rx, kx, ra, ka, Posterior(*leaves[:2]), Posterior(*leaves[2:]), lam=0.1)
    out["loss"].backward()
    assert all(leaf.grad is not None and leaf.grad.abs().sum() > 0 for leaf in leaves)


def test_hierarchical_posteriors_sum_over_groups():
    a1, a2, o1, o2 = (_posterior(3, d, seed=s) for d, s in ((4, 50), (2, 51), (4, 52), (2, 53)))
    r = consistency_loss([a1, a2], [o1, o2])
    assert torch.allclose(r, consistency_loss(a1, o1) + consistency_loss(a2, o2))


def test_vae_objective():
    rx, kx, *_ = _terms(seed=60)
    out = vae_objective(rx, kx, beta=0.5)
    assert set(out) == {"loss", "recon", "kl"}
    assert torch.allclose(out["loss"], rx.mean() + 0.5 * kx.mean())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_devices_and_dtypes(device, dtype):
    aug, orig = _posterior(3, 4, 70, dtype, device), _posterior(3, 4, 71, dtype, device)
    r = consistency_loss(aug, orig)
    assert r.device.type == device and r.dtype == dtype
    ref = consistency_loss(_posterior(3, 4, 70), _posterior(3, 4, 71))
    assert torch.allclose(r.double().cpu(), ref, rtol=1e-5, atol=1e-5)


def test_validation_errors():
    q = _posterior(3, 4, seed=80)
    with pytest.raises(ValueError, match="logvar_q"):
        gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="mu_p"):
        gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="logvar_p"):
        gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4), None, torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="mu_q"):
        gaussian_kl(torch.zeros(3, 4, dtype=torch.int64), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="mu_q"):
        gaussian_kl(torch.tensor(0.0), torch.tensor(0.0))
    with pytest.raises(ValueError, match="post_aug"):
        consistency_loss((q.mu, q.logvar), q)
    with pytest.raises(ValueError, match="post_orig"):
        consistency_loss(q, "q")
    with pytest.raises(ValueError, match="post_aug and post_orig"):
        consistency_loss(q, _posterior(3, 5, seed=81))
    with pytest.raises(ValueError, match="latent groups"):
        consistency_loss([q, q], [q])
    rx, kx, ra, ka, px, pa = _terms(b=3, dim=4)
    with pytest.raises(ValueError, match="kl_aug"):
        cr_objective(rx, kx, ra, ka[:2], px, pa)
    with pytest.raises(ValueError, match="recon_nll_x"):
        cr_objective(rx.mean(), kx, ra, ka, px, pa)
    with pytest.raises(ValueError, match="batch size 3"):
        cr_objective(rx, kx, ra, ka, _posterior(2, 4, 1), _posterior(2, 4, 2))
    with pytest.raises(ValueError, match="lam"):
        cr_objective(rx, kx, ra, ka, px, pa, lam=-0.1)
    with pytest.raises(ValueError, match="beta"):
        vae_objective(rx, kx, beta=float("nan"))
    with pytest.raises(ValueError, match="kl"):
        vae_objective(rx, kx[:, None])
