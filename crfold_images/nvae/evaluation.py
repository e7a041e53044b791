"""Evaluation of a trained (CR-)NVAE: IW-NLL (nats and bits/dim), -ELBO and rate, linear probe,
active units.

* IW-NLL: :func:`crfold.metrics.iw_nll` over :meth:`NVAE.log_weights` (K importance samples,
  1000 by default as in NVAE's evaluation), in eval mode; reported in nats per image and in bits
  per dimension ``nats / (ln 2 * C * H * W)`` (the data's dims: 784 for MNIST).
* Probe features (documented choice): the posterior *means* of every group along the mean path
  (z_g = mu_q for all groups), each averaged over its spatial positions and concatenated:
  ``G * Z`` features (300 for paper-scale MNIST, 600 for CIFAR-10). ``"top"`` uses only group 0's
  full mean map (Z * h_0 * w_0), ``"all"`` every group's full map (large at paper scale: 14,400
  dims for MNIST, 153,600 for CIFAR-10). The pooled choice keeps information from every scale at
  a size a linear probe can fit; posterior means (not samples) follow docs/design.md#probe.
* -ELBO and rate (:func:`elbo_and_rate`): one z ~ q(z|x) per test image along its own top-down
  path; the rate ``E_x[sum_g KL(q(z_g|x, z_<g) || p(z_g|z_<g))]`` is the whole hierarchy's KL to
  its prior, an upper bound of I(x; z). No minibatch MI is computed for NVAE: its latents are
  hierarchical and the paper reports none for it.
* Active units (Burda et al.: Var_x[mu] >= 0.01 over the test set): ``active_units`` counts every
  latent dim of every group (the whole hierarchy, variances streamed), ``au_top`` the top
  group's, ``au_features`` the probe features'. Spatial pooling shrinks the variance of a
  feature, so ``au_features`` is lower than the per-dim counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from crfold.metrics import active_units, iw_nll, logistic_probe
from crfold_images.nvae.model import NVAE

__all__ = ["FEATURES", "elbo_and_rate", "iw_nll_nvae", "nvae_evaluate", "posterior_features"]

FEATURES = ("all_pooled", "top", "all")
AU_THRESHOLD = 0.01  # Burda et al.: a dim is active when Var_x[mu] >= 0.01


def _eval_mode(model: NVAE) -> bool:
    was_training = model.training
    model.eval()
    return was_training


def iw_nll_nvae(
    model: NVAE,
    batches: Iterable[torch.Tensor],
    num_samples: int = 1000,
    chunk_size: int = 100,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Importance-weighted NLL of ``model`` over ``batches``.

    Args:
        model: the NVAE (put in eval mode for the call, restored after).
        batches: iterable of (B, C, data_size, data_size) image batches in the model's range
            (binarized for Bernoulli), already on the model's device.
        num_samples: K importance samples per image.
        chunk_size: samples per forward pass (memory ~ chunk_size * B images).
        generator: optional generator for the draws.

    Returns:
        ``{"nll_nats": float, "bpd": float, "num_samples": K}``.
    """
    was_training = _eval_mode(model)
    try:
        nll = iw_nll(
            lambda x, n: model.log_weights(x, n, generator=generator),
            batches,
            num_samples=num_samples,
            chunk_size=chunk_size,
        )
    finally:
        model.train(was_training)
    a = model.arch
    dims = a.in_channels * a.data_size * a.data_size
    return {"nll_nats": nll, "bpd": nll / (math.log(2.0) * dims), "num_samples": num_samples}


@torch.no_grad()
def elbo_and_rate(
    model: NVAE, batches: Iterable[torch.Tensor], generator: torch.Generator | None = None
) -> dict[str, float]:
    """Mean -ELBO and rate over ``batches``, one posterior draw per image, in eval mode.

    Args:
        model: the NVAE (put in eval mode for the call, restored after).
        batches: iterable of (B, C, H, W) image batches on the model's device.
        generator: optional generator for the draws.

    Returns:
        ``{"neg_elbo": nats, "neg_elbo_bpd": bits/dim, "rate": nats}``: the means over the images
        of ``-(log p(x|z) - sum_g KL_g)`` and of ``sum_g KL_g`` (analytic per group, along the
        drawn path).
    """
    was_training = _eval_mode(model)
    total_elbo, total_kl, n = 0.0, 0.0, 0
    try:
        for x in batches:
            out = model(x, generator=generator)
            total_elbo += float(out.elbo.double().sum())
            total_kl += float(out.kl.double().sum())
            n += x.shape[0]
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("batches yielded no images")
    a = model.arch
    dims = a.in_channels * a.data_size * a.data_size
    neg_elbo = -total_elbo / n
    return {"neg_elbo": neg_elbo, "neg_elbo_bpd": neg_elbo / (math.log(2.0) * dims),
            "rate": total_kl / n}  # fmt: skip


class _RunningVariance:
    """Unbiased per-dimension variance over streamed rows, float64, shifted by the first row.

    Equals ``crfold.metrics.active_units``'s variance on the stacked (N, D) matrix (tested),
    without holding it: all groups' full maps reach 153,600 dims for paper-scale CIFAR-10.
    """

    def __init__(self) -> None:
        self.n, self.shift, self.s1, self.s2 = 0, None, None, None

    def update(self, rows: torch.Tensor) -> None:  # rows (B, D)
        rows = rows.double()
        if self.shift is None:
            self.shift = rows[0].clone()
            self.s1 = torch.zeros_like(self.shift)
            self.s2 = torch.zeros_like(self.shift)
        d = rows - self.shift
        self.n += rows.shape[0]
        self.s1 += d.sum(0)
        self.s2 += d.square().sum(0)

    def variance(self) -> torch.Tensor:  # (D,) float64
        if self.n < 2:
            raise ValueError(f"need at least 2 rows for a variance, got {self.n}")
        return (self.s2 - self.s1.square() / self.n) / (self.n - 1)


@torch.no_grad()
def posterior_features(
    model: NVAE, batches: Iterable[torch.Tensor], kind: str = "all_pooled"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Posterior-mean features of every image, along the mean path, in eval mode.

    Args:
        model: the NVAE.
        batches: iterable of (B, C, H, W) image batches on the model's device.
        kind: "all_pooled", "top" or "all" (see the module docstring).

    Returns:
        ``(features, top, variances)``: (N, D) float32 CPU features of ``kind``; (N, Z h_0 w_0)
        the top group's means; (sum_g Z h_g w_g,) float64 variance over the N images of every
        latent dim of every group (for the active units of the whole hierarchy).
    """
    if kind not in FEATURES:
        raise ValueError(f"kind must be one of {FEATURES}, got {kind!r}")
    was_training = _eval_mode(model)
    feats, tops, running = [], [], _RunningVariance()
    try:
        for x in batches:
            posts = model.encode(x)  # G x (B, Z h w)
            every = torch.cat([p.mu for p in posts], dim=1)  # (B, sum_g Z h_g w_g)
            running.update(every)
            tops.append(posts[0].mu.cpu())
            if kind == "top":
                feats.append(posts[0].mu.cpu())
            elif kind == "all":
                feats.append(every.cpu())
            else:
                zc = model.arch.latent_channels
                pooled = [p.mu.view(p.mu.shape[0], zc, -1).mean(-1) for p in posts]  # (B, Z)
                feats.append(torch.cat(pooled, dim=1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(feats), torch.cat(tops), running.variance().cpu()


def nvae_evaluate(
    model: NVAE,
    test_batches: Callable[[], Iterable[torch.Tensor]],
    *,
    num_samples: int = 1000,
    chunk_size: int = 100,
    probe: tuple[Callable[[], Iterable[torch.Tensor]], torch.Tensor, torch.Tensor] | None = None,
    features: str = "all_pooled",
    probe_C: float = 1.0,
    generator: torch.Generator | None = None,
    iw_batches: Callable[[], Iterable[torch.Tensor]] | None = None,
) -> dict[str, float | int | str]:
    """IW-NLL, active units and (optionally) a logistic probe of a trained model.

    Args:
        model: the NVAE.
        test_batches: a callable returning a fresh iterable of test image batches (used three
            times).
        num_samples, chunk_size, generator: the IW-NLL settings (:func:`iw_nll_nvae`).
        probe: ``(train_batches, train_labels, test_labels)`` - a callable giving the probe's
            train image batches, (N_train,) int64 labels and (N_test,) int64 labels matching
            ``test_batches``; None skips the probe.
        features: probe/AU features, see :func:`posterior_features`.
        probe_C: inverse regularisation of the logistic probe.
        iw_batches: the IW-NLL's test batches when they are a subset of ``test_batches``
            (its cost is K forward passes per image); None: ``test_batches``.

    Returns:
        dict: ``nll_nats``, ``bpd``, ``num_samples``, ``data_dims``; ``neg_elbo``,
        ``neg_elbo_bpd`` and ``rate`` (:func:`elbo_and_rate`); ``active_units`` over every
        latent dim of every group (of ``latent_dims``), ``au_top`` (top group),
        ``au_features`` (the probe features, of ``feature_dims``); ``features``; with ``probe``,
        ``probe_accuracy``.
    """
    result: dict[str, float | int | str] = dict(
        iw_nll_nvae(model, (iw_batches or test_batches)(), num_samples, chunk_size, generator)
    )
    a = model.arch
    result["data_dims"] = a.in_channels * a.data_size * a.data_size
    result.update(elbo_and_rate(model, test_batches(), generator))
    test_feats, test_top, variances = posterior_features(model, test_batches(), features)
    result["active_units"] = int((variances >= AU_THRESHOLD).sum())
    result["latent_dims"] = int(variances.numel())
    result["au_top"] = active_units(test_top, AU_THRESHOLD)[0]
    result["au_features"] = active_units(test_feats, AU_THRESHOLD)[0]
    result["feature_dims"] = int(test_feats.shape[1])
    result["features"] = features
    if probe is not None:
        train_batches, train_labels, test_labels = probe
        train_feats = posterior_features(model, train_batches(), features)[0]
        res = logistic_probe(
            train_feats, train_labels, test_feats, test_labels, C=probe_C, standardize=True
        )
        result["probe_accuracy"] = float(res["accuracy"])
    return result
