"""Evaluation metrics shared by crfold (point clouds) and crfold_images (images).

Implemented once, here, after the canonical definitions (jxhe/vae-lagging-encoder for MI and
active units, Burda et al. for IW-NLL; restated in docs/design.md#metrics):

* :func:`mutual_information` - I(x; z) under the aggregate posterior, minibatch estimator; it
  cannot exceed log B (B its minibatch size), and I(x; z) itself cannot exceed log N under the
  empirical distribution of N examples.
* :func:`rate` - E_x[KL(q(z|x) || N(0, I))], the rate: an upper bound of I(x; z) that no
  minibatch caps (I(x; z) = rate - KL(q(z) || p(z)), Eq. 5 of the CR-VAE paper).
* :func:`active_units` - dimensions of mu(x) whose variance over the set is >= 0.01.
* :func:`importance_sampled_log_likelihood`, :func:`iw_nll` - model-agnostic IW-NLL.
* :func:`latent_consistency`, :func:`mean_pairwise_distance` - how far t(x) moves a code.
* :func:`svm_probe`, :func:`logistic_probe` - linear probes on codes (in :mod:`crfold.probe`,
  re-exported here).

Every function accepts torch tensors or numpy arrays; statistics are computed in float64.
Convention: ``logvar = log sigma^2``; log densities and NLLs are in nats, summed over latent (or
data) dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from crfold.consistency import consistency_loss
from crfold.eval.probe import logistic_probe, svm_probe
from crfold.models.common import Posterior

__all__ = [
    "active_units",
    "importance_sampled_log_likelihood",
    "iw_nll",
    "latent_consistency",
    "logistic_probe",
    "mean_pairwise_distance",
    "mutual_information",
    "rate",
    "svm_probe",
]

LOG_2PI = math.log(2.0 * math.pi)


def _as_tensor(x: Any, name: str, ndim: int) -> torch.Tensor:
    """Floating tensor with ``ndim`` dims from a tensor or array; ValueError naming ``name``."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return x.detach()


def _posterior_pair(post: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar), both (N, L), from a Posterior-like object or a ``(mu, logvar)`` pair."""
    if hasattr(post, "mu") and hasattr(post, "logvar"):
        mu, logvar = post.mu, post.logvar
    elif isinstance(post, (tuple, list)) and len(post) == 2:
        mu, logvar = post
    else:
        raise ValueError(f"{name} must be a Posterior or a (mu, logvar) pair, got {type(post)}")
    mu = _as_tensor(mu, f"{name}.mu", 2)
    logvar = _as_tensor(logvar, f"{name}.logvar", 2)
    if mu.shape != logvar.shape:
        raise ValueError(
            f"{name}.mu and {name}.logvar must have the same shape, got "
            f"{tuple(mu.shape)} and {tuple(logvar.shape)}"
        )
    return mu, logvar


def _log_aggregate_density(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """log q(z_i) = logsumexp_j log N(z_i; mu_j, diag(exp(logvar_j))) - log B.

    Args:
        z: (B, L) float64 samples, one per posterior.
        mu, logvar: (B, L) float64 posterior parameters of the same minibatch.
        chunk_size: rows of the (B, B) density matrix formed at once.

    Returns:
        (B,) float64.
    """
    b, latent = mu.shape
    inv_var = torch.exp(-logvar)  # (B, L)
    mu_iv = mu * inv_var  # (B, L)
    # sum_l (z_il - mu_jl)^2 / var_jl expanded into matrix products, so no (B, B, L) tensor.
    const_j = (mu * mu_iv).sum(-1) + logvar.sum(-1) + latent * LOG_2PI  # (B,)
    out = []
    for start in range(0, b, chunk_size):
        zc = z[start : start + chunk_size]  # (C, L)
        quad = (zc * zc) @ inv_var.T - 2.0 * zc @ mu_iv.T  # (C, B)
        log_dens = -0.5 * (quad + const_j)  # (C, B)
        out.append(torch.logsumexp(log_dens, dim=1) - math.log(b))
    return torch.cat(out)


def _posteriors(mu, logvar) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar) as (N, L) tensors of one shape with N >= 1; ValueError naming the problem."""
    mu = _as_tensor(mu, "mu", 2)
    logvar = _as_tensor(logvar, "logvar", 2)
    if mu.shape != logvar.shape:
        raise ValueError(
            f"mu and logvar must have the same shape, got {tuple(mu.shape)} and "
            f"{tuple(logvar.shape)}"
        )
    if mu.shape[0] == 0:
        raise ValueError("mu must hold at least one posterior, got shape (0, L)")
    return mu, logvar


def mutual_information(
    mu: torch.Tensor | np.ndarray,
    logvar: torch.Tensor | np.ndarray,
    batch_size: int | None = None,
    *,
    generator: torch.Generator | None = None,
    chunk_size: int = 1024,
    return_batch_size: bool = False,
) -> float | tuple[float, int]:
    """Mutual information I(x; z) under q, the jxhe/vae-lagging-encoder minibatch estimator.

    The set is split into consecutive minibatches of ``B = batch_size`` posteriors. Per
    minibatch, ``E_q log q(z|x)`` is taken analytically
    (``-L/2 log 2pi - 1/2 sum(1 + logvar)``, averaged over the batch) and ``E_q log q(z)`` by one
    sample ``z_i ~ q(z|x_i)`` per posterior with the aggregate density
    ``log q(z_i) = logsumexp_j log q(z_i|x_j) - log B`` over the same minibatch; MI is the
    difference. Batches are averaged weighted by their size (the last one may be smaller).

    The estimate is biased and depends on B: it cannot exceed log B in expectation (a finite
    minibatch cannot resolve more; single draws may overshoot by the sampling noise of
    ``log q(z_i|x_i)``), so always report B with it. ``batch_size=None`` uses the whole set
    as one batch (B = N), the least biased choice; the (B, B) density matrix is formed
    ``chunk_size`` rows at a time, so memory stays O(chunk_size * B). The quantity estimated is
    bounded too: with x uniform over the N examples (the paper's empirical p_d),
    ``I(x; z) <= H(x) = log N``; :func:`rate` is the uncapped upper bound ``I(x; z) <= rate``.

    Args:
        mu: (N, L) posterior means, floating.
        logvar: (N, L) posterior log variances, same shape.
        batch_size: B, the minibatch size of the estimator; None means N.
        generator: optional torch.Generator (on mu's device) for the samples z_i.
        chunk_size: rows of the density matrix computed at once.
        return_batch_size: also return the B that was used.

    Returns:
        MI in nats as a float, or ``(mi, B)`` when ``return_batch_size``.

    Raises:
        ValueError: on bad shapes, non-floating or non-finite inputs, or batch_size < 1.
    """
    mu, logvar = _posteriors(mu, logvar)
    n, latent = mu.shape
    b = n if batch_size is None else int(batch_size)
    if b < 1:
        raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)  # (N, L)
    mu64, logvar64 = mu.double(), logvar.double()
    z = mu64 + torch.exp(0.5 * logvar64) * eps.double()  # (N, L) one sample per posterior
    total = 0.0
    for start in range(0, n, b):
        m, lv, zb = (t[start : start + b] for t in (mu64, logvar64, z))
        neg_entropy = (-0.5 * latent * LOG_2PI - 0.5 * (1.0 + lv).sum(-1)).mean()
        log_qz = _log_aggregate_density(zb, m, lv, chunk_size)  # (b,)
        total += float(neg_entropy - log_qz.mean()) * m.shape[0]
    mi = total / n
    return (mi, b) if return_batch_size else mi


def rate(mu: torch.Tensor | np.ndarray, logvar: torch.Tensor | np.ndarray) -> float:
    """The rate ``E_x[KL(q(z|x) || N(0, I))]``: the mean analytic KL to the prior, in nats.

    The first term of Eq. 5 of the CR-VAE paper, ``I(x; z) = E_x[KL(q(z|x) || p(z))] -
    KL(q(z) || p(z))``, so ``I(x; z) <= rate``. Unlike :func:`mutual_information` it has no
    log B ceiling: it keeps growing as posteriors sharpen, which is also why it is not a measure
    of information about *which* x was seen (a posterior far from the prior that every x shares
    has a large rate and no MI).

    Args:
        mu: (N, L) posterior means, floating.
        logvar: (N, L) posterior log variances (log sigma^2), same shape.

    Returns:
        The mean over the N posteriors of the KL summed over the L latent dims, a float
        computed in float64.

    Raises:
        ValueError: on bad shapes, non-floating or non-finite inputs, or N = 0.
    """
    mu, logvar = _posteriors(mu, logvar)
    mu64, lv64 = mu.double(), logvar.double()
    kl = 0.5 * (mu64.square() + lv64.exp() - 1.0 - lv64).sum(-1)  # (N,)
    return float(kl.mean())


def active_units(
    mu: torch.Tensor | np.ndarray, threshold: float = 0.01
) -> tuple[int, torch.Tensor]:
    """Active units: dimensions whose posterior mean varies over the set.

    ``Var_x[mu_l(x)]`` is the unbiased (N - 1) variance over the evaluation set; dimension l is
    active when it is ``>= threshold`` (0.01, Burda et al. / jxhe).

    Args:
        mu: (N, L) posterior means of the evaluation set, N >= 2, floating.
        threshold: the activity threshold.

    Returns:
        ``(count, variances)``: the number of active dimensions (int) and the (L,) float64
        per-dimension variances on mu's device.

    Raises:
        ValueError: if mu is not a finite floating (N, L) array with N >= 2.
    """
    mu = _as_tensor(mu, "mu", 2)
    if mu.shape[0] < 2:
        raise ValueError(f"mu must hold at least 2 rows for a variance, got {mu.shape[0]}")
    variances = mu.double().var(dim=0, correction=1)  # (L,)
    return int((variances >= threshold).sum()), variances


def importance_sampled_log_likelihood(log_w: torch.Tensor) -> torch.Tensor:
    """IW estimate of log p(x): ``logsumexp_s log w_s - log S``.

    Args:
        log_w: (S, B) log importance weights ``log p(x_b, z_s) - log q(z_s|x_b)``, z_s ~ q(z|x_b),
            floating; S >= 1. -inf entries (zero weight) are allowed, NaN is not.

    Returns:
        (B,) the estimate for each example, in log_w's dtype. It is a lower bound on log p(x) in
        expectation, increasing in S; with S = 1 it is the single log weight (the ELBO sample).

    Raises:
        ValueError: if log_w is not a 2-D floating tensor with S >= 1, or holds NaN.
    """
    if not isinstance(log_w, torch.Tensor) or not log_w.is_floating_point() or log_w.ndim != 2:
        raise ValueError(f"log_w must be a 2-D floating tensor (S, B), got {log_w!r:.80}")
    if log_w.shape[0] < 1:
        raise ValueError("log_w must hold at least one sample (S >= 1), got S = 0")
    if bool(torch.isnan(log_w).any()):
        raise ValueError("log_w contains NaN")
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def iw_nll(
    model_log_weights: Callable[[Any, int], torch.Tensor],
    x_batches: Iterable[Any] | torch.Tensor,
    num_samples: int = 5000,
    chunk_size: int = 500,
    *,
    progress: bool = False,
) -> float:
    """Importance-weighted negative log-likelihood, model-agnostic, in chunks of samples.

    For each batch the log weights are drawn ``chunk_size`` samples at a time and folded into a
    running logsumexp (float64), so memory is O(chunk_size * B) however large S is. Runs under
    ``torch.no_grad()``.

    Args:
        model_log_weights: ``f(x, n) -> (n, B)`` tensor of log weights
            ``log p(x, z_s) - log q(z_s|x)`` for n fresh samples z_s ~ q(z|x) of each of the B
            examples in batch x. It owns the model, its eval mode and its randomness.
        x_batches: an iterable of batches passed to ``model_log_weights`` as they are (a
            DataLoader, a list of tensors); a single tensor is taken as one batch.
        num_samples: S, the importance samples per example (5000 in the paper's evaluation).
        chunk_size: samples requested per call.
        progress: show a tqdm bar over batches.

    Returns:
        The mean over all examples of ``-(logsumexp_s log w_s - log S)``, in nats.

    Raises:
        ValueError: on num_samples/chunk_size < 1, no batches, or a call that returns a tensor
            of the wrong shape or with NaN.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if isinstance(x_batches, torch.Tensor):
        x_batches = [x_batches]
    total, count = 0.0, 0
    with torch.no_grad():
        for x in tqdm(x_batches, desc="iw-nll", disable=not progress, leave=False):
            running = None  # (B,) float64 logsumexp over the samples so far
            done = 0
            while done < num_samples:
                n = min(chunk_size, num_samples - done)
                log_w = model_log_weights(x, n)
                if not isinstance(log_w, torch.Tensor) or log_w.ndim != 2 or log_w.shape[0] != n:
                    shape = tuple(log_w.shape) if isinstance(log_w, torch.Tensor) else type(log_w)
                    raise ValueError(
                        f"model_log_weights(x, {n}) must return an ({n}, B) tensor, got {shape}"
                    )
                if running is not None and log_w.shape[1] != running.shape[0]:
                    raise ValueError(
                        f"model_log_weights returned B = {log_w.shape[1]} after "
                        f"B = {running.shape[0]} for the same batch"
                    )
                if bool(torch.isnan(log_w).any()):
                    raise ValueError("model_log_weights returned NaN log weights")
                lse = torch.logsumexp(log_w.double(), dim=0)  # (B,)
                running = lse if running is None else torch.logaddexp(running, lse)
                done += n
            log_px = running - math.log(num_samples)  # (B,)
            total += float(-log_px.sum())
            count += log_px.shape[0]
    if count == 0:
        raise ValueError("x_batches yielded no examples")
    return total / count


def mean_pairwise_distance(
    codes: torch.Tensor | np.ndarray,
    *,
    max_exact: int = 2000,
    num_pairs: int = 100_000,
    seed: int = 0,
) -> tuple[float, int]:
    """Mean Euclidean distance ``||c_i - c_j||`` over pairs i != j of codes.

    Exact over all N(N-1)/2 pairs when N <= max_exact; otherwise the mean over ``num_pairs``
    pairs drawn uniformly (with replacement) among ordered pairs i != j by a generator seeded
    with ``seed``, so the result is reproducible.

    Args:
        codes: (N, L) floating, N >= 2.
        max_exact: the largest N computed exactly.
        num_pairs: pairs sampled when N > max_exact.
        seed: seed of the pair sampler.

    Returns:
        ``(mean_distance, pairs_used)``.

    Raises:
        ValueError: on bad shapes, N < 2, non-finite values or num_pairs < 1.
    """
    codes = _as_tensor(codes, "codes", 2).double()
    n = codes.shape[0]
    if n < 2:
        raise ValueError(f"codes must hold at least 2 rows for a pair, got {n}")
    if n <= max_exact:
        d = torch.pdist(codes)  # (N(N-1)/2,)
        return float(d.mean()), d.numel()
    if num_pairs < 1:
        raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(0, n, (num_pairs,), generator=g)
    j = torch.randint(0, n - 1, (num_pairs,), generator=g)
    j = j + (j >= i).long()  # uniform over j != i
    i, j = i.to(codes.device), j.to(codes.device)
    total = 0.0
    for s in range(0, num_pairs, 8192):  # bounded memory: (8192, L) differences at a time
        total += float((codes[i[s : s + 8192]] - codes[j[s : s + 8192]]).norm(dim=1).sum())
    return total / num_pairs, num_pairs


def latent_consistency(
    post_x: Any,
    post_tx: Any,
    *,
    max_exact: int = 2000,
    num_pairs: int = 100_000,
    seed: int = 0,
) -> dict[str, float | int]:
    """How far a transform t moves the codes, relative to how far apart different shapes are.

    Args:
        post_x: q(z|x) of N examples: a Posterior (``.mu``, ``.logvar``, each (N, L)) or a
            ``(mu, logvar)`` pair of tensors/arrays.
        post_tx: q(z|t(x)) of the same N examples in the same order, same form and shape.
        max_exact, num_pairs, seed: how the reference distance is computed, see
            :func:`mean_pairwise_distance`.

    Returns:
        A dict of floats: ``kl`` the mean KL(q(z|t(x)) || q(z|x)) in nats (the CR term,
        ``crfold.consistency.consistency_loss``, summed over latent dims); ``mu_distance`` the
        mean ``||mu(t(x)) - mu(x)||``; ``code_distance`` the mean ``||mu(x_i) - mu(x_j)||`` over
        pairs i != j; ``relative_mu_distance`` their ratio (NaN if every mu(x) is identical);
        ``n`` and ``n_pairs`` (ints). An encoder invariant to
        t gives 0 for ``kl``, ``mu_distance`` and ``relative_mu_distance``.

    Raises:
        ValueError: on malformed posteriors, mismatched shapes, non-finite values or N < 2.
    """
    mu_x, lv_x = _posterior_pair(post_x, "post_x")
    mu_tx, lv_tx = _posterior_pair(post_tx, "post_tx")
    if mu_x.shape != mu_tx.shape:
        raise ValueError(
            f"post_x and post_tx must have the same shape, got {tuple(mu_x.shape)} and "
            f"{tuple(mu_tx.shape)}"
        )
    mu_x, lv_x, mu_tx, lv_tx = (t.double() for t in (mu_x, lv_x, mu_tx, lv_tx))
    kl = consistency_loss(Posterior(mu_tx, lv_tx), Posterior(mu_x, lv_x))  # (N,)
    shift = (mu_tx - mu_x).norm(dim=1)  # (N,)
    ref, n_pairs = mean_pairwise_distance(mu_x, max_exact=max_exact, num_pairs=num_pairs, seed=seed)
    mu_distance = float(shift.mean())
    return {
        "kl": float(kl.mean()),
        "mu_distance": mu_distance,
        "code_distance": ref,
        "relative_mu_distance": mu_distance / ref if ref > 0 else float("nan"),
        "n": int(mu_x.shape[0]),
        "n_pairs": n_pairs,
    }
