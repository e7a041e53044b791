"""What an image evaluation can and cannot show: the flags and caveats printed with its numbers.

Every ``eval.json`` of the ``images`` and ``nvae`` tasks carries ``flags`` ({metric: flag}) and
``caveats`` (sentences), and every image table marks its flagged cells, so that a number that
shows nothing is never printed silently. A metric is flagged (:func:`flag`) when:

* ``chance`` - **at/below chance: run too short to show anything**. A linear probe whose accuracy
  is at most ``1/K + 2 * sqrt((1/K) * (1 - 1/K) / n)`` (K classes, n test images: chance plus two
  standard errors of a classifier that guesses), or an MI estimate <= 0 nats (no information
  about x detectable in the codes).
* ``ceiling`` - an MI estimate within :data:`CEILING_MARGIN` nats of its ceiling log B (B the
  minibatch of the estimator): every encoder whose posteriors are separated reaches log B, so
  differences between models cannot show in it; compare the ``rate``, AU and the probe instead.
* ``collapsed`` - no active unit (AU = 0): every posterior mean is constant, the encoder
  ignores x.
* ``density`` - an NLL of the Gaussian likelihood: a density on [0, 1] pixels, not a
  probability; it is not comparable with the discrete likelihoods' (Bernoulli, logistic) nor
  with the paper's numbers.

:func:`caveats` adds what the numbers cannot show even when nothing is flagged: the log B ceiling
of the MI, the scale of a colour NLL in bits per dimension, a single seed. See docs/images.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "CEILING_MARGIN",
    "FLAG_TEXT",
    "caveats",
    "chance_accuracy",
    "flag",
    "flags",
    "probe_at_chance",
    "standing_caveats",
]

CEILING_MARGIN = 0.1  # nats below log B from which an MI estimate is at its ceiling
FLAG_TEXT = {
    "chance": "at/below chance: run too short to show anything",
    "ceiling": "at the MI estimator's ceiling log B: differences between models cannot show",
    "collapsed": "no active unit: the encoder ignores x (collapsed, or the run is too short)",
    "density": "a Gaussian density, not a probability: not comparable with discrete NLLs",
}
# eval.json keys of each metric kind: the image task's and the NVAE task's names.
_PROBE_KEYS = ("probe_accuracy",)
_MI_KEYS = ("mi",)
_AU_KEYS = ("au", "active_units")
_NLL_KEYS = ("iw_nll", "neg_elbo", "nll_nats")


def chance_accuracy(num_classes: int) -> float:
    """1 / K, the accuracy of guessing among K classes.

    Raises:
        ValueError: K < 2 (no classification).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes: a probe needs at least 2 classes, got {num_classes}")
    return 1.0 / num_classes


def probe_at_chance(accuracy: float, num_classes: int, n_test: int) -> bool:
    """Whether ``accuracy`` is at most chance plus two standard errors of a guessing probe.

    Args:
        accuracy: the probe's test accuracy in [0, 1].
        num_classes: K >= 2.
        n_test: test examples the accuracy was measured on (>= 1).
    """
    p = chance_accuracy(num_classes)
    return accuracy <= p + 2.0 * math.sqrt(p * (1.0 - p) / max(int(n_test), 1))


def flag(metric: str, value: float | None, context: Mapping[str, Any]) -> str | None:
    """The flag of one number (a key of :data:`FLAG_TEXT`), or None when it can show something.

    Args:
        metric: an eval.json key (``probe_accuracy``, ``mi``, ``au`` / ``active_units``,
            ``iw_nll`` / ``neg_elbo`` / ``nll_nats``); other keys are never flagged.
        value: its value (a run's, or a mean over seeds); None is never flagged.
        context: the eval.json it comes from, for ``num_classes``, ``n_test``,
            ``mi_batch_size`` and ``likelihood`` (missing ones skip the checks that need them).
    """
    if value is None or not math.isfinite(value):
        return None
    if metric in _PROBE_KEYS:
        k, n = context.get("num_classes"), context.get("n_test")
        if k and k >= 2 and n and probe_at_chance(value, int(k), int(n)):
            return "chance"
    elif metric in _MI_KEYS:
        if value <= 0.0:
            return "chance"
        b = context.get("mi_batch_size")
        if b and b > 1 and value >= math.log(b) - CEILING_MARGIN:
            return "ceiling"
    elif metric in _AU_KEYS:
        if value <= 0:
            return "collapsed"
    elif metric in _NLL_KEYS and context.get("likelihood") == "gaussian":
        return "density"
    return None


def flags(result: Mapping[str, Any]) -> dict[str, str]:
    """{metric: flag} of every flagged number of an eval.json-like dict."""
    out = {}
    for key in (*_PROBE_KEYS, *_MI_KEYS, *_AU_KEYS, *_NLL_KEYS):
        value = result.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            f = flag(key, float(value), result)
            if f is not None:
                out[key] = f
    return out


def caveats(result: Mapping[str, Any], seeds: int | None = None) -> list[str]:
    """Sentences saying what the numbers of ``result`` can and cannot show.

    Args:
        result: an eval.json-like dict (the image task's or the NVAE task's keys).
        seeds: the seeds a table averages over (a single seed gets a caveat); None: one run.

    Returns:
        One sentence per flagged number (``"<metric> = <value>: <flag text>"``), then
        :func:`standing_caveats`.
    """
    flagged = [f"{key} = {result[key]:.4g}: {FLAG_TEXT[f]}" for key, f in flags(result).items()]
    return flagged + standing_caveats(result, seeds)


def standing_caveats(result: Mapping[str, Any], seeds: int | None = None) -> list[str]:
    """The caveats that hold whatever the values: the MI's log B ceiling, what the rate is,
    bits per dimension for colour likelihoods, a single seed (``seeds == 1``)."""
    out = []
    b = result.get("mi_batch_size")
    if isinstance(result.get("mi"), (int, float)) and b:
        out.append(
            f"MI is a minibatch estimate with B = {b}: it cannot exceed log B = "
            f"{math.log(b):.2f} nats, and I(x; z) itself cannot exceed log N of the N test "
            "images; MI values above that (the paper's 124.5 nats for the MNIST VAE) are not "
            "comparable"
        )
    if isinstance(result.get("rate"), (int, float)):
        out.append(
            "rate = E[KL(q(z|x) || p(z))] bounds I(x; z) from above; it grows as posteriors "
            "sharpen and is not capped by B"
        )
    dims = result.get("data_dims")
    if dims and result.get("likelihood") in ("logistic", "dmol"):
        out.append(
            f"the NLL sums over {dims} pixel values per image: nats per image scale with the "
            "number of dimensions, so colour models compare in bits/dim (nats / (ln 2 * "
            f"{dims})); the paper's CelebA NLLs (65-93 nats) are not on this scale"
        )
    if seeds == 1:
        out.append("one seed: no spread, differences between rows may be noise")
    return out
