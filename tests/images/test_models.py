"""Tests for crfold_images.models: conv / MLP nets, pixel likelihoods, the ImageVAE interface."""

from __future__ import annotations

import math

import pytest
import torch

from crfold.models.common import Posterior, VAEOutput
from crfold_images.models import ImageVAE, binarize
from crfold_images.models.conv import padded_size
from crfold_images.models.likelihoods import Bernoulli, DiscretizedLogistic, Gaussian, make


@pytest.mark.parametrize(
    ("arch", "channels", "size", "likelihood", "k"),
    [
        ("conv", 1, 28, "bernoulli", 1),
        ("conv", 3, 32, "logistic", 2),
        ("conv", 3, 64, "gaussian", 1),
        ("mlp", 1, 28, "bernoulli", 1),
    ],
)
def test_shapes_and_interface(arch, channels, size, likelihood, k):
    torch.manual_seed(0)
    model = ImageVAE(channels, size, latent_dim=7, arch=arch, width=0.0625, likelihood=likelihood)
    x = torch.rand(3, channels, size, size)
    if likelihood == "bernoulli":
        x = binarize(x)
    post = model.encode(x)
    assert isinstance(post, Posterior) and post.mu.shape == (3, 7) == post.logvar.shape
    params = model.decode(post.mu)
    assert params.shape == (3, k * channels, size, size)
    out = model(x, generator=torch.Generator().manual_seed(1))
    assert isinstance(out, VAEOutput) and out.z.shape == (3, 7)
    nll = model.recon_nll(out.recon, x)
    assert nll.shape == (3,) and bool(torch.isfinite(nll).all())
    model.eval()
    assert model.log_weights(x, 5).shape == (5, 3)
    assert model.sample(4).shape == (4, channels, size, size)
    rec = model.reconstruct(x)
    assert rec.shape == x.shape and rec.min() >= 0 and rec.max() <= 1


def test_conv_widths_follow_the_wae_layout():
    model = ImageVAE(1, 28, 50, "conv", width=1.0)
    convs = [m for m in model.encoder.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [128, 256, 512, 1024]
    assert all(c.stride == (2, 2) for c in convs)
    assert model.encoder.pad == 2 and model.decoder.crop == 2  # 28 -> 32 -> 28
    narrow = ImageVAE(1, 28, 50, "conv", width=0.25)
    convs = [m for m in narrow.encoder.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256]


def test_padding_does_not_leak_into_likelihood():
    """The 28 px likelihood covers exactly the 784 real pixels (crop after the decoder)."""
    model = ImageVAE(1, 28, 4, "conv", width=0.0625)
    params = model.decode(torch.zeros(2, 4))
    assert params.shape == (2, 1, 28, 28)
    nll = model.recon_nll(torch.zeros_like(params), torch.zeros(2, 1, 28, 28))
    assert torch.allclose(nll, torch.full((2,), 784 * math.log(2.0)))


def test_padded_size():
    assert [padded_size(s) for s in (28, 32, 64, 60)] == [32, 32, 64, 64]
    with pytest.raises(ValueError, match="image size"):
        padded_size(30)


def test_invalid_model_arguments():
    with pytest.raises(ValueError, match="arch"):
        ImageVAE(arch="resnet")
    with pytest.raises(ValueError, match="likelihood"):
        ImageVAE(likelihood="poisson")
    with pytest.raises(ValueError, match="width"):
        ImageVAE(width=0.0)
    model = ImageVAE(1, 28, 5, "mlp", width=0.1)
    with pytest.raises(ValueError, match="x must be"):
        model.encode(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="z must be"):
        model.decode(torch.rand(2, 6))


def test_bernoulli_nll_matches_log_prob():
    logits = torch.randn(4, 1, 5, 5)
    x = binarize(torch.rand(4, 1, 5, 5), torch.Generator().manual_seed(0))
    ref = -torch.distributions.Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(Bernoulli().nll(logits, x), ref, atol=1e-4)


def test_gaussian_nll_matches_normal_fixed_and_learned():
    params = torch.randn(2, 3, 4, 4)
    x = torch.rand(2, 3, 4, 4)
    lik = Gaussian(3, sigma=0.2)
    ref = -torch.distributions.Normal(torch.sigmoid(params), 0.2).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(lik.nll(params, x), ref, atol=1e-4)
    learned = make("gaussian", 3, None)
    assert learned.log_sigma.requires_grad and not lik.log_sigma.requires_grad
    learned.nll(params, x).sum().backward()
    assert learned.log_sigma.grad is not None


def test_discretized_logistic_is_a_distribution_over_256_levels():
    """The probabilities of all 256 levels sum to 1 for any (mu, log s), edges included."""
    levels = torch.arange(256, dtype=torch.float64) / 255.0  # (256,)
    for mu, log_s in [(0.0, -2.0), (0.7, -4.0), (-1.2, 0.5), (0.999, -6.5)]:
        params = (
            torch.tensor([mu, log_s], dtype=torch.float64).view(1, 2, 1, 1).expand(256, 2, 1, 1)
        )
        nll = DiscretizedLogistic().nll(params, levels.view(256, 1, 1, 1))
        total = torch.logsumexp(-nll, 0).exp()
        assert abs(float(total) - 1.0) < 2e-3, (mu, log_s, float(total))


def test_binarize_is_seeded_and_unbiased():
    p = torch.full((200, 1, 10, 10), 0.3)
    a = binarize(p, torch.Generator().manual_seed(0))
    b = binarize(p, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and set(a.unique().tolist()) <= {0.0, 1.0}
    assert abs(float(a.mean()) - 0.3) < 0.01
    assert torch.equal(binarize(torch.ones(2, 1, 3, 3)), torch.ones(2, 1, 3, 3))
