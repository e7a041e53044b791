"""Tests for crfold_images.metrics: the evaluation wrappers on constructed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crfold_images.config import ImageConfig
from crfold_images.data import ArrayImageSet
from crfold_images.data.sets import ImageSplits
from crfold_images.metrics import encode_set, evaluate_model, iter_prepared, subset_indices
from crfold_images.models import ImageVAE
from crfold_images.transforms import RandomAffine2d

CFG = ImageConfig(eval_samples=64, eval_chunk=32, eval_batch_size=50, probe_max_train=None)


def _blocks(n_per_class: int, seed: int) -> ArrayImageSet:
    """0/255 images of 4 classes: class c has a bright 7x7 block in quadrant c, plus noise."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in range(4):
        for _ in range(n_per_class):
            a = (rng.random((28, 28)) < 0.01).astype(np.uint8) * 255
            r, col = divmod(c, 2)
            a[3 + 14 * r : 10 + 14 * r, 3 + 14 * col : 10 + 14 * col] = 255
            images.append(a)
            labels.append(c)
    return ArrayImageSet(np.stack(images)[:, None], np.array(labels))


def _splits() -> ImageSplits:
    return ImageSplits("blocks", _blocks(15, 0), None, _blocks(10, 1), 1, 28, 4, "bernoulli")


class _LinearEncoder(torch.nn.Module):
    """mu = W x (a fixed random projection), logvar = const: an encoder with known codes."""

    def __init__(self, latent: int, logvar: float = -2.0, scale: float = 1.0):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(784, latent, generator=g) * scale / 28.0)
        self.logvar = logvar

    def forward(self, x):
        mu = x.flatten(1) @ self.w
        return mu, torch.full_like(mu, self.logvar)


def _model(encoder: torch.nn.Module, latent: int = 6) -> ImageVAE:
    torch.manual_seed(0)
    model = ImageVAE(1, 28, latent, "mlp", width=0.05)
    model.encoder = encoder
    return model


def test_collapsed_encoder_has_no_active_units_and_zero_mi():
    enc = _LinearEncoder(6, logvar=0.0, scale=0.0)  # every posterior is N(0, I)
    out = evaluate_model(_model(enc), _splits(), CFG, torch.device("cpu"), "bernoulli",
                         transform=RandomAffine2d())  # fmt: skip
    assert out["au"] == 0 and out["latent_dim"] == 6
    # Identical posteriors: MI is 0 up to the Monte Carlo noise of one z per image.
    assert abs(out["mi"]) < 0.5 and out["mi_batch_size"] == 40
    assert out["consistency_kl"] == pytest.approx(0.0, abs=1e-9)
    assert out["consistency_mu_distance"] == pytest.approx(0.0, abs=1e-9)
    assert out["probe_accuracy"] <= 0.5  # nothing to separate: constant codes
    assert out["rate"] == pytest.approx(0.0, abs=1e-9)  # q(z|x) = p(z) for every x
    # What these numbers show: nothing; eval.json says so instead of printing them silently.
    assert out["flags"]["au"] == "collapsed"
    if out["probe_accuracy"] <= 0.25 + 2 * math.sqrt(0.25 * 0.75 / 40):
        assert out["flags"]["probe_accuracy"] == "chance"
    assert out["caveats"][0].startswith(next(iter(out["flags"])))
    assert out["num_classes"] == 4 and out["likelihood"] == "bernoulli"


def test_informative_encoder_all_units_active_probe_perfect():
    model = _model(_LinearEncoder(16, logvar=-6.0, scale=3.0), latent=16)
    out = evaluate_model(model, _splits(), CFG, torch.device("cpu"), "bernoulli")
    assert out["au"] == 16
    assert out["probe_accuracy"] == 1.0 and out["n_test"] == 40
    # Sharp, distinct posteriors: the minibatch MI reaches its ceiling log B.
    assert out["mi"] == pytest.approx(math.log(40), abs=0.05)
    assert "consistency_kl" not in out  # no transform given
    # Jensen: the importance-sampled NLL is below -ELBO.
    assert out["iw_nll"] <= out["neg_elbo"] + 1e-6
    assert (out["iw_samples"], out["iw_images"]) == (64, 40)
    # The rate bounds I(x; z) from above and, unlike the estimate, has no log B ceiling.
    assert out["rate"] > out["mi"] + 10 and out["mi_ceiling"] == pytest.approx(math.log(40))
    assert out["flags"] == {"mi": "ceiling"}  # every separated encoder reaches log B
    assert any("log B = 3.69 nats" in c for c in out["caveats"])
    assert out["data_dims"] == 784
    assert out["iw_nll_bpd"] == pytest.approx(out["iw_nll"] / (math.log(2) * 784))
    assert out["neg_elbo_bpd"] == pytest.approx(out["neg_elbo"] / (math.log(2) * 784))


def test_subsets_are_fixed_random_samples_not_prefixes():
    idx = subset_indices(1000, 100, split_id=1)
    assert torch.equal(idx, subset_indices(1000, 100, split_id=1))
    assert idx.shape == (100,) and bool((idx[1:] > idx[:-1]).all()) and int(idx.max()) > 500
    assert torch.equal(subset_indices(50, None), torch.arange(50))
    grouped = ArrayImageSet(np.zeros((100, 1, 28, 28), np.uint8), np.repeat(np.arange(10), 10))
    labels = torch.cat([y for _, y in iter_prepared(grouped, "bernoulli", "cpu", 16, limit=30)])
    assert len(labels.unique()) >= 6  # class-grouped files still give a mixed sample


def test_evaluation_binarization_is_fixed():
    test = ArrayImageSet(np.full((6, 1, 28, 28), 128, np.uint8), np.zeros(6, np.int64))
    a = [x for x, _ in iter_prepared(test, "bernoulli", torch.device("cpu"), 4)]
    b = [x for x, _ in iter_prepared(test, "bernoulli", torch.device("cpu"), 4)]
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert set(torch.cat(a).unique().tolist()) == {0.0, 1.0}
    g = [x for x, _ in iter_prepared(test, "gaussian", torch.device("cpu"), 4)]
    assert torch.allclose(torch.cat(g), torch.full((6, 1, 28, 28), 128 / 255))
    post, labels = encode_set(_model(_LinearEncoder(3)), iter_prepared(test, "bernoulli", "cpu", 4))
    assert post.mu.shape == (6, 3) and labels.shape == (6,)
