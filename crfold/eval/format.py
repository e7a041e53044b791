"""The human lines of the evaluation commands (``crfold eval``, ``crfold probe``).

Both probe protocols are always printed; the headline one (the run's ``probe_standardize``, or
``crfold probe --standardize``) comes first and is marked with ``*``.
"""

from __future__ import annotations

from typing import Any

from .probe import PROTOCOLS

__all__ = ["format_eval", "format_number", "format_probe"]

ROTATED = (
    ("probe_rotated_test", "rotated test"),
    ("probe_rotated_both", "rotated train+test"),
)


def format_number(value: float | None, fmt: str) -> str:
    """``value`` in format ``fmt``; "n/a" for None (a metric that does not apply)."""
    return "n/a" if value is None else f"{value:{fmt}}"


def _protocols(headline: str) -> list[str]:
    """The protocols, the headline first."""
    return [headline, *(p for p in PROTOCOLS if p != headline)]


def _mark(protocol: str, headline: str) -> str:
    return protocol + ("*" if protocol == headline else "")


def _probe_lines(probe: dict[str, Any], rotated: dict[str, Any], indent: str) -> list[str]:
    headline = probe.get("headline", PROTOCOLS[0])
    lines = []
    for protocol in _protocols(headline):
        p = probe[protocol]
        lines.append(
            f"{indent}{_mark(protocol, headline) + ':':<14} SVM {p['svm']['accuracy']:.4f}, "
            f"logistic {p['logistic']['accuracy']:.4f}"
        )
    for key, name in ROTATED:
        if key in rotated:
            accs = ", ".join(
                f"{protocol} {rotated[key][protocol]['svm']['accuracy']:.4f}"
                for protocol in _protocols(headline)
            )
            lines.append(f"{indent}SVM {name} (up axis): {accs}")
    return lines


def format_eval(res: dict[str, Any]) -> str:
    """A few human lines of an eval.json dict (what ``crfold eval`` prints)."""
    rec, probe = res["reconstruction"], res["probe"]
    svm = probe[PROTOCOLS[0]]["svm"]
    lines = [
        f"{res['run_dir']} ({res['checkpoint']}.pt, step {res['step']}, mode {res['mode']}): "
        f"{res['num_samples']} shapes of {res['split']}",
        f"  Chamfer FoldingNet {rec['chamfer_foldingnet']:.5f}, "
        f"squared {rec['chamfer_squared']:.5f}",
        f"  probes ({res['train_split']} -> {res['split']}, C={svm['C']:g}; raw: FoldingNet's "
        "protocol, standardized: StandardScaler fit on train; * headline):",
        *_probe_lines(probe, res, "    "),
        f"  MI {format_number(res['mutual_information']['nats'], '.3f')} nats "
        f"(B = {res['mutual_information']['batch_size']}), active units "
        f"{res['active_units']['count']}/{res['active_units']['latent_dim']}",
        "  latent consistency (mean KL(q(z|t(x)) || q(z|x)), shift / mean code distance):",
    ]
    for name, c in res["consistency"].items():
        lines.append(
            f"    {name:<12} KL {format_number(c['kl'], '.4g'):>10}   "
            f"shift/dist {c['relative_mu_distance']:.4f}"
        )
    return "\n".join(lines)


def format_probe(res: dict[str, Any], run_dir: str) -> str:
    """A few human lines of a probe.json dict (what ``crfold probe`` prints)."""
    svm = res["svm"]
    headline = res.get("headline", PROTOCOLS[1] if svm["standardize"] else PROTOCOLS[0])
    lines = [
        f"{run_dir} ({res['checkpoint']}.pt, step {res['step']}): codes of {res['train_split']} "
        f"({svm['n_train']}) -> {res['test_split']} ({svm['n_test']}), C={svm['C']}; "
        f"raw: FoldingNet's protocol, standardized: StandardScaler fit on train; * headline",
        f"  {'probe':<12}{'protocol':<14}{'test shapes':<20}{'accuracy':>10}{'mean class':>12}",
    ]

    def line(name: str, protocol: str, test: str, r: dict[str, Any]) -> str:
        note = "" if r["converged"] else "  (not converged)"
        return (
            f"  {name:<12}{_mark(protocol, headline):<14}{test:<20}{r['accuracy']:>10.4f}"
            f"{r['mean_class_accuracy']:>12.4f}{note}"
        )

    protocols = _protocols(headline)
    for name, key in (("linear SVM", "svm"), ("logistic", "logistic")):
        for protocol in protocols:
            r = (
                res[protocol][key]
                if protocol in res
                else (res[key] if protocol == headline else None)
            )
            if r is not None:
                lines.append(line(name, protocol, "as they are", r))
    for key, test in ROTATED:
        if key in res:
            for protocol in protocols:
                lines.append(line("linear SVM", protocol, test, res[key][protocol]["svm"]))
    return "\n".join(lines)
