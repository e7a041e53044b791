"""Known-answer tests of crfold.metrics: MI, active units, IW-NLL, latent consistency."""

import math

import numpy as np
import pytest
import torch

from crfold.consistency import gaussian_kl
from crfold.metrics import (
    active_units,
    importance_sampled_log_likelihood,
    iw_nll,
    latent_consistency,
    mean_pairwise_distance,
    mutual_information,
    rate,
)
from crfold.models.common import Posterior

LOG_2PI = math.log(2 * math.pi)


def _naive_mi(mu, logvar, eps, batch_size):
    """jxhe/vae-lagging-encoder calc_mi, literally: a (B, B, L) tensor per batch, weighted mean."""
    mu, logvar, eps = mu.double(), logvar.double(), eps.double()
    n, nz = mu.shape
    total = 0.0
    for s in range(0, n, batch_size):
        m, lv, e = mu[s : s + batch_size], logvar[s : s + batch_size], eps[s : s + batch_size]
        b = m.shape[0]
        neg_entropy = (-0.5 * nz * LOG_2PI - 0.5 * (1 + lv).sum(-1)).mean()
        z = (m + torch.exp(0.5 * lv) * e).unsqueeze(1)  # (b, 1, L)
        dev = z - m.unsqueeze(0)  # (b, b, L)
        log_density = -0.5 * (dev**2 / lv.exp().unsqueeze(0)).sum(-1) - 0.5 * (
            nz * LOG_2PI + lv.sum(-1).unsqueeze(0)
        )
        log_qz = torch.logsumexp(log_density, dim=1) - math.log(b)
        total += float(neg_entropy - log_qz.mean()) * b
    return total / n


# ------------------------------------------------------------------------------------------ MI


def test_mi_matches_the_reference_estimator_with_partial_last_batch():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(10, 3, generator=g)
    logvar = 0.5 * torch.randn(10, 3, generator=g)
    eps = torch.randn(10, 3, generator=torch.Generator().manual_seed(7))
    for b in (None, 4, 10, 1):
        mi, used = mutual_information(
            mu,
            logvar,
            batch_size=b,
            generator=torch.Generator().manual_seed(7),
            chunk_size=3,
            return_batch_size=True,
        )
        assert used == (10 if b is None else b)
        assert mi == pytest.approx(_naive_mi(mu, logvar, eps, used), abs=1e-10)


def test_mi_of_codes_independent_of_x_is_zero():
    # All posteriors identical: q(z|x) = q(z), so I(x; z) = 0.
    n, latent = 2000, 4
    mu = torch.full((n, latent), 0.3)
    logvar = torch.full((n, latent), -0.7)
    mi = mutual_information(mu, logvar, generator=torch.Generator().manual_seed(1))
    assert abs(mi) < 0.1
    # Exactly: the analytic entropy term minus the sampled log q(z_i|x_i).
    eps = torch.randn(n, latent, generator=torch.Generator().manual_seed(1))
    post = Posterior(mu.double(), logvar.double())
    sampled = post.log_prob(post.mu + post.std * eps.double()).mean()
    analytic = -0.5 * latent * LOG_2PI - 0.5 * float((1 + logvar.double()).sum(-1)[0])
    mi2 = mutual_information(mu, logvar, generator=torch.Generator().manual_seed(1))
    assert mi2 == pytest.approx(analytic - float(sampled), abs=1e-9)


def test_mi_of_separated_posteriors_reaches_log_b_and_not_beyond():
    n, latent = 200, 2
    mu = torch.zeros(n, latent)
    mu[:, 0] = 100.0 * torch.arange(n)
    logvar = torch.full((n, latent), -2.0)
    for b in (None, 50, 7):
        mi, used = mutual_information(
            mu, logvar, b, generator=torch.Generator().manual_seed(2), return_batch_size=True
        )
        # Every batch here has exactly `used` rows except b=7 (200 = 28*7 + 4): weighted log B.
        sizes = [min(used, n - s) for s in range(0, n, used)]
        expected = sum(math.log(k) * k for k in sizes) / n
        assert mi == pytest.approx(expected, abs=0.1)
        assert mi <= math.log(used) + 0.1


def test_mi_larger_for_separated_than_overlapping_posteriors():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(500, 3, generator=g)
    logvar = torch.zeros(500, 3)
    low = mutual_information(0.1 * base, logvar, generator=torch.Generator().manual_seed(0))
    high = mutual_information(5.0 * base, logvar, generator=torch.Generator().manual_seed(0))
    assert 0 <= low < 0.2 < high <= math.log(500) + 0.1


def test_mi_accepts_numpy_and_is_reproducible():
    rng = np.random.default_rng(0)
    mu, logvar = rng.normal(size=(30, 5)), rng.normal(size=(30, 5)) * 0.1
    a = mutual_information(mu, logvar, 10, generator=torch.Generator().manual_seed(5))
    b = mutual_information(
        torch.from_numpy(mu),
        torch.from_numpy(logvar),
        10,
        generator=torch.Generator().manual_seed(5),
    )
    assert isinstance(a, float) and a == b


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mu": torch.zeros(4, 2), "logvar": torch.zeros(4, 3)}, "same shape"),
        ({"mu": torch.zeros(4), "logvar": torch.zeros(4)}, "mu must be 2-D"),
        ({"mu": torch.zeros(4, 2, dtype=torch.long), "logvar": torch.zeros(4, 2)}, "floating"),
        ({"mu": torch.zeros(4, 2), "logvar": torch.full((4, 2), float("nan"))}, "logvar"),
        ({"mu": torch.zeros(4, 2), "logvar": torch.zeros(4, 2), "batch_size": 0}, "batch_size"),
        ({"mu": torch.zeros(0, 2), "logvar": torch.zeros(0, 2)}, "at least one"),
    ],
)
def test_mi_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mutual_information(**kwargs)


# ------------------------------------------------------------------------------------ rate


def test_rate_is_the_mean_kl_to_the_prior():
    g = torch.Generator().manual_seed(3)
    mu, logvar = torch.randn(37, 5, generator=g), torch.randn(37, 5, generator=g)
    assert rate(mu, logvar) == pytest.approx(float(gaussian_kl(mu, logvar).double().mean()))
    assert rate(torch.zeros(4, 3), torch.zeros(4, 3)) == 0.0  # q(z|x) = p(z)
    # one dimension, mu = 2, sigma = 1: KL = mu^2 / 2 = 2 nats per dimension, summed over L = 3
    assert rate(np.full((2, 3), 2.0), np.zeros((2, 3))) == pytest.approx(6.0)


def test_rate_has_no_log_b_ceiling_while_the_mi_estimate_has():
    """Sharp, separated posteriors: the minibatch MI stops at log B, the rate keeps growing."""
    mu = torch.randn(16, 8, generator=torch.Generator().manual_seed(0)) * 3.0
    mis = []
    for logvar in (-4.0, -12.0):
        lv = torch.full_like(mu, logvar)
        mis.append(mutual_information(mu, lv, generator=torch.Generator().manual_seed(1)))
        assert mis[-1] == pytest.approx(math.log(16), abs=1.0)  # log B up to one draw's noise
        assert rate(mu, lv) > mis[-1]
    assert mis[0] == pytest.approx(mis[1], abs=1e-6)  # the same draws: sharper changes nothing
    assert rate(mu, torch.full_like(mu, -12.0)) > rate(mu, torch.full_like(mu, -4.0)) + 30


def test_rate_of_a_shared_posterior_far_from_the_prior_is_large_and_mi_zero():
    mu, logvar = torch.full((50, 2), 4.0), torch.full((50, 2), -2.0)
    assert rate(mu, logvar) > 15
    assert abs(mutual_information(mu, logvar, generator=torch.Generator().manual_seed(0))) < 0.5


@pytest.mark.parametrize(
    ("mu", "logvar", "match"),
    [
        (torch.zeros(4), torch.zeros(4), "mu must be 2-D"),
        (torch.zeros(4, 2), torch.zeros(4, 3), "same shape"),
        (torch.zeros(4, 2), torch.full((4, 2), float("inf")), "logvar"),
        (torch.zeros(0, 2), torch.zeros(0, 2), "at least one"),
    ],
)
def test_rate_rejects_bad_input(mu, logvar, match):
    with pytest.raises(ValueError, match=match):
        rate(mu, logvar)


# ------------------------------------------------------------------------------- active units


def test_active_units_on_constructed_means():
    g = torch.Generator().manual_seed(0)
    cols = torch.randn(1000, 5, generator=g, dtype=torch.float64)
    cols = (cols - cols.mean(0)) / cols.std(0)  # unbiased variance exactly 1 per column
    mu = cols * torch.tensor([1.0, 1.0, 1.0, 1e-2, 1e-2], dtype=torch.float64)
    count, variances = active_units(mu)
    assert count == 3
    assert variances.shape == (5,)
    torch.testing.assert_close(variances, torch.tensor([1, 1, 1, 1e-4, 1e-4], dtype=torch.float64))
    assert active_units(mu, threshold=1e-5)[0] == 5
    assert active_units(mu.float().numpy())[0] == 3


def test_active_units_uses_the_unbiased_variance():
    mu = torch.tensor([[0.0], [0.2]])  # biased variance 0.01, unbiased 0.02
    count, variances = active_units(mu, threshold=0.015)
    assert count == 1 and variances.item() == pytest.approx(0.02)


def test_active_units_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        active_units(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="mu must be 2-D"):
        active_units(torch.zeros(4))


# ------------------------------------------------------------------------------------ IW-NLL


def test_iw_estimate_with_one_sample_is_the_log_weight():
    log_w = torch.randn(1, 6, dtype=torch.float64)
    torch.testing.assert_close(importance_sampled_log_likelihood(log_w), log_w[0])


def test_iw_estimate_is_at_least_the_mean_log_weight():
    log_w = 3.0 * torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    iw = importance_sampled_log_likelihood(log_w)
    assert iw.shape == (8,)
    assert bool((iw >= log_w.mean(0)).all())
    assert bool((iw <= log_w.max(0).values).all())


def test_iw_estimate_rejects_bad_input():
    with pytest.raises(ValueError, match="log_w"):
        importance_sampled_log_likelihood(torch.zeros(5))
    with pytest.raises(ValueError, match="S >= 1"):
        importance_sampled_log_likelihood(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="NaN"):
        importance_sampled_log_likelihood(torch.tensor([[float("nan")]]))


def _gaussian_model(posterior_mean_scale, posterior_var, seed=0):
    """p(z) = N(0, 1), p(x|z) = N(z, 1); q(z|x) = N(scale * x, var). Exact when (0.5, 0.5)."""
    g = torch.Generator().manual_seed(seed)

    def log_weights(x, n):  # x (B,) -> (n, B)
        one = torch.ones((), dtype=x.dtype)
        q = torch.distributions.Normal(posterior_mean_scale * x, math.sqrt(posterior_var) * one)
        z = q.mean + q.stddev * torch.randn(n, x.shape[0], generator=g, dtype=x.dtype)
        log_p = torch.distributions.Normal(0 * one, one).log_prob(z)
        log_p = log_p + torch.distributions.Normal(z, one).log_prob(x)
        return log_p - q.log_prob(z)

    return log_weights


def test_iw_nll_equals_the_exact_marginal_with_the_exact_posterior():
    x = torch.linspace(-3, 3, 11, dtype=torch.float64)
    exact = float((0.5 * math.log(2 * math.pi * 2.0) + x**2 / 4.0).mean())
    for s, chunk in ((1, 1), (7, 3), (100, 64)):
        nll = iw_nll(_gaussian_model(0.5, 0.5), [x[:4], x[4:]], num_samples=s, chunk_size=chunk)
        assert nll == pytest.approx(exact, abs=1e-10)


def test_iw_nll_tightens_with_more_samples_for_an_approximate_posterior():
    x = torch.randn(200, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = float((0.5 * math.log(2 * math.pi * 2.0) + x**2 / 4.0).mean())
    model = _gaussian_model(0.0, 1.0)  # the prior as proposal: a loose ELBO
    elbo_nll = iw_nll(model, x, num_samples=1)
    iw = iw_nll(model, x, num_samples=1000, chunk_size=500)
    assert elbo_nll > iw + 0.1
    assert iw == pytest.approx(exact, abs=0.02)


def test_iw_nll_chunking_is_exact():
    table = torch.randn(10, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    calls = []

    def replay(x, n):
        start = sum(calls)
        calls.append(n)
        return table[start : start + n]

    nll = iw_nll(replay, [None], num_samples=10, chunk_size=3)
    assert calls == [3, 3, 3, 1]
    assert nll == pytest.approx(-importance_sampled_log_likelihood(table).mean().item(), abs=1e-12)


def test_iw_nll_rejects_bad_input():
    model = _gaussian_model(0.5, 0.5)
    x = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="num_samples"):
        iw_nll(model, [x], num_samples=0)
    with pytest.raises(ValueError, match="no examples"):
        iw_nll(model, [], num_samples=2)
    with pytest.raises(ValueError, match=r"\(2, B\)"):
        iw_nll(lambda x, n: torch.zeros(n + 1, 3), [x], num_samples=2)
    with pytest.raises(ValueError, match="NaN"):
        iw_nll(lambda x, n: torch.full((n, 3), float("nan")), [x], num_samples=2)


# ----------------------------------------------------------------------- latent consistency


def _codes(n=40, latent=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, latent, generator=g), 0.3 * torch.randn(n, latent, generator=g)


def test_latent_consistency_is_zero_for_an_invariant_encoder():
    mu, logvar = _codes()
    out = latent_consistency(Posterior(mu, logvar), Posterior(mu.clone(), logvar.clone()))
    assert out["kl"] == 0 and out["mu_distance"] == 0 and out["relative_mu_distance"] == 0
    assert out["code_distance"] > 0 and out["n"] == 40 and out["n_pairs"] == 40 * 39 // 2


def test_latent_consistency_known_answer():
    mu = torch.tensor([[0.0, 0.0], [3.0, 0.0]])  # code distance exactly 3
    logvar = torch.zeros(2, 2)
    shift = torch.tensor([0.3, 0.4])  # norm 0.5
    out = latent_consistency((mu, logvar), (mu + shift, logvar))
    assert out["kl"] == pytest.approx(0.5 * 0.25)  # unit variances: ||d||^2 / 2
    assert out["mu_distance"] == pytest.approx(0.5)
    assert out["code_distance"] == pytest.approx(3.0)
    assert out["relative_mu_distance"] == pytest.approx(0.5 / 3.0)


def test_latent_consistency_kl_direction_is_transform_to_original():
    mu = torch.zeros(2, 1)
    mu[1] = 1.0
    post_x = (mu, torch.zeros(2, 1))  # variance 1
    post_tx = (mu, torch.full((2, 1), math.log(4.0)))  # variance 4
    # KL(N(0, 4) || N(0, 1)) = (4 - 1 - log 4) / 2; the reverse would be (1/4 - 1 + log 4) / 2.
    assert latent_consistency(post_x, post_tx)["kl"] == pytest.approx(0.5 * (3 - math.log(4)))


def test_latent_consistency_grows_with_the_perturbation():
    mu, logvar = _codes()
    noise = torch.randn(mu.shape, generator=torch.Generator().manual_seed(9))
    small = latent_consistency((mu, logvar), (mu + 0.01 * noise, logvar))
    large = latent_consistency((mu, logvar), (mu + 0.5 * noise, logvar))
    assert 0 < small["kl"] < large["kl"]
    assert 0 < small["relative_mu_distance"] < large["relative_mu_distance"]


def test_mean_pairwise_distance_exact_and_sampled():
    codes = torch.randn(300, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    brute = (codes[:, None] - codes[None]).norm(dim=-1)  # (300, 300), zero diagonal
    exact_ref = float(brute.sum() / (300 * 299))
    exact, pairs = mean_pairwise_distance(codes)
    assert pairs == 300 * 299 // 2 and exact == pytest.approx(exact_ref, rel=1e-10)
    sampled, pairs = mean_pairwise_distance(codes, max_exact=100, num_pairs=50_000, seed=3)
    assert pairs == 50_000 and sampled == pytest.approx(exact_ref, rel=0.02)
    again, _ = mean_pairwise_distance(codes, max_exact=100, num_pairs=50_000, seed=3)
    assert again == sampled


def test_mean_pairwise_distance_never_samples_a_pair_with_itself():
    # Two distinct codes: every i != j pair has distance exactly 1.
    codes = torch.tensor([[0.0], [1.0]])
    assert mean_pairwise_distance(codes, max_exact=1, num_pairs=1000)[0] == 1.0


def test_latent_consistency_rejects_bad_input():
    mu, logvar = _codes()
    with pytest.raises(ValueError, match="same shape"):
        latent_consistency((mu, logvar), (mu[:5], logvar[:5]))
    with pytest.raises(ValueError, match="post_tx"):
        latent_consistency((mu, logvar), mu)
    with pytest.raises(ValueError, match=r"post_x\.logvar"):
        latent_consistency((mu, logvar[:, :2]), (mu, logvar))
    with pytest.raises(ValueError, match="at least 2"):
        latent_consistency((mu[:1], logvar[:1]), (mu[:1], logvar[:1]))
