"""Tests for crfold_images.models.objectives: VAE / IWAE / beta-VAE in base, aug, cr, triplet."""

from __future__ import annotations

import math

import pytest
import torch

from crfold.consistency import consistency_loss, gaussian_kl
from crfold.metrics import iw_nll
from crfold.models.common import standard_normal_log_prob
from crfold_images.models import ImageVAE, LossConfig, binarize, image_vae_loss
from crfold_images.models.objectives import iwae_terms, triplet_term, vae_terms
from crfold_images.models.vae import draw_latents


def _model_and_data(seed: int = 0, b: int = 8):
    torch.manual_seed(seed)
    model = ImageVAE(1, 28, latent_dim=6, arch="mlp", width=0.1).eval()
    g = torch.Generator().manual_seed(seed + 100)
    x = binarize(torch.rand(b, 1, 28, 28, generator=g) * 0.5, g)
    x_aug = binarize(torch.rand(b, 1, 28, 28, generator=g) * 0.5, g)
    return model, x, x_aug


def _gen(seed: int = 7) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_iwae_with_k1_equals_the_elbo_with_the_same_noise():
    model, x, _ = _model_and_data()
    neg_bound, post = iwae_terms(model, x, 1, _gen())
    recon, kl_mc, post2 = vae_terms(model, x, _gen(), kl_estimator="mc")
    assert torch.allclose(post.mu, post2.mu)
    assert torch.allclose(neg_bound, recon + kl_mc, atol=1e-4)
    # Through the whole objective too: loss and its gradient.
    iw = image_vae_loss(model, x, None, LossConfig(objective="iwae", iwae_k=1), _gen())
    el = image_vae_loss(model, x, None, LossConfig(kl_estimator="mc"), _gen())
    assert torch.allclose(iw["loss"], el["loss"], atol=1e-4)
    g_iw = torch.autograd.grad(iw["loss"], list(model.parameters()))
    el = image_vae_loss(model, x, None, LossConfig(kl_estimator="mc"), _gen())
    g_el = torch.autograd.grad(el["loss"], list(model.parameters()))
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(g_iw, g_el))


@torch.no_grad()
def test_analytic_and_mc_kl_agree_in_expectation():
    model, x, _ = _model_and_data(b=4)
    _, kl_a, post = vae_terms(model, x, _gen(), "analytic")
    _, kl_mc, _ = vae_terms(model, x, _gen(), "mc")
    z = post.sample(_gen())  # the draw vae_terms made with the same generator
    assert torch.allclose(kl_mc, post.log_prob(z) - standard_normal_log_prob(z), atol=1e-5)
    zs = draw_latents(post, 20000, _gen(1))  # (S, B, L)
    mc = (post.log_prob(zs) - standard_normal_log_prob(zs)).mean(0)
    assert torch.allclose(kl_a, mc, atol=0.05 + 0.02 * float(kl_a.abs().max()))


def test_iwae_bound_tightens_with_k():
    model, x, _ = _model_and_data(b=8)
    with torch.no_grad():
        k1 = torch.stack([iwae_terms(model, x, 1, _gen(s))[0] for s in range(50)]).mean()
        k50 = torch.stack([iwae_terms(model, x, 50, _gen(s))[0] for s in range(5)]).mean()
    assert float(k50) <= float(k1) + 1e-3


def test_iw_nll_is_below_negative_elbo_for_large_s():
    """IW-NLL (S = 500) <= -ELBO on average (Jensen), through crfold.metrics.iw_nll."""
    model, x, _ = _model_and_data(b=8)
    g = _gen(3)
    nll = iw_nll(lambda xb, n: model.log_weights(xb, n, generator=g), [x], 500, 250)
    with torch.no_grad():
        post = model.encode(x)
        neg_elbo = (
            torch.stack(
                [model.recon_nll(model.decode(post.sample(_gen(s))), x) for s in range(20)]
            ).mean()
            + gaussian_kl(post.mu, post.logvar).mean()
        )
    assert nll <= float(neg_elbo)
    assert nll > 0


def test_beta_multiplies_only_the_prior_kl():
    model, x, x_aug = _model_and_data()
    for beta in (0.5, 10.0):
        base = image_vae_loss(model, x, None, LossConfig(beta=beta), _gen())
        assert torch.allclose(base["loss"], base["recon"] + beta * base["kl"])
        cr = image_vae_loss(
            model, x, x_aug, LossConfig(mode="cr", beta=beta, lam=0.1 * beta), _gen()
        )
        expect = (cr["recon"] + cr["recon_aug"] + beta * (cr["kl"] + cr["kl_aug"])
                  + 0.1 * beta * cr["consistency"])  # fmt: skip
        assert torch.allclose(cr["loss"], expect)


def test_modes_aug_and_cr():
    model, x, x_aug = _model_and_data()
    aug = image_vae_loss(model, x, x_aug, LossConfig(mode="aug"), _gen())
    assert torch.allclose(aug["loss"], aug["recon"] + aug["kl"] + aug["recon_aug"] + aug["kl_aug"])
    cr = image_vae_loss(model, x, x_aug, LossConfig(mode="cr", lam=0.1), _gen())
    assert torch.allclose(cr["loss"], aug["loss"] + 0.1 * cr["consistency"], atol=1e-4)
    post_x, post_a = model.encode(x), model.encode(x_aug)
    assert torch.allclose(cr["consistency"], consistency_loss(post_a, post_x).mean(), atol=1e-4)
    # Same images: no consistency penalty; the aug loss is twice the base loss (same noise).
    same = image_vae_loss(model, x, x.clone(), LossConfig(mode="cr"), _gen())
    assert float(same["consistency"].detach()) < 1e-5
    # The CR gradient reaches the encoder through both posteriors.
    model.zero_grad()
    image_vae_loss(model, x, x_aug, LossConfig(mode="cr", lam=1.0), _gen())[
        "consistency"
    ].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


def test_triplet_mode_and_term():
    model, x, x_aug = _model_and_data()
    aug = image_vae_loss(model, x, x_aug, LossConfig(mode="aug"), _gen())
    trip = image_vae_loss(model, x, x_aug, LossConfig(mode="triplet", triplet_weight=2.0), _gen())
    assert torch.allclose(trip["loss"], aug["loss"] + 2.0 * trip["triplet"], atol=1e-4)
    # Constructed case: positives equal anchors, negatives far -> zero loss; swapped -> margin+.
    a = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    assert torch.allclose(triplet_term(a, a.clone(), 1.0, _gen()), torch.zeros(3), atol=1e-5)
    far = triplet_term(a, a + 20.0, 1.0, _gen())
    assert bool((far > 1.0).all())
    with pytest.raises(ValueError, match="at least 2"):
        triplet_term(a[:1], a[:1], 1.0)


def test_negatives_never_the_anchor():
    for seed in range(20):
        mu = torch.eye(5) * 100.0  # distinct codes: a self-negative would give loss = margin
        pos = mu.clone()
        loss = triplet_term(mu, pos, 1.0, _gen(seed))
        assert torch.allclose(loss, torch.zeros(5), atol=1e-4)


def test_loss_config_validation():
    with pytest.raises(ValueError, match="beta must be 1"):
        LossConfig(objective="iwae", beta=0.5)
    with pytest.raises(ValueError, match="mode"):
        LossConfig(mode="contrastive")
    with pytest.raises(ValueError, match="lam"):
        LossConfig(lam=-0.1)
    model, x, _ = _model_and_data()
    with pytest.raises(ValueError, match="x_aug"):
        image_vae_loss(model, x, None, LossConfig(mode="cr"))


def test_all_terms_are_per_sample_sums_in_nats():
    """recon is summed over the 784 pixels: an all-zero-logit decoder gives 784 log 2."""
    model, x, _ = _model_and_data()
    torch.nn.init.zeros_(model.decoder.net[-1].weight)
    torch.nn.init.zeros_(model.decoder.net[-1].bias)
    terms = image_vae_loss(model, x, None, LossConfig(), _gen())
    assert math.isclose(float(terms["recon"].detach()), 784 * math.log(2.0), rel_tol=1e-5)
