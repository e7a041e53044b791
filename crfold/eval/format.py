"""The human lines of the evaluation commands (``crfold eval``, ``crfold probe``)."""

from __future__ import annotations

from typing import Any

__all__ = ["format_eval", "format_number", "format_probe"]


def format_number(value: float | None, fmt: str) -> str:
    """``value`` in format ``fmt``; "n/a" for None (a metric that does not apply)."""
    return "n/a" if value is None else f"{value:{fmt}}"


def format_eval(res: dict[str, Any]) -> str:
    """A few human lines of an eval.json dict (what ``crfold eval`` prints)."""
    rec, probe = res["reconstruction"], res["probe"]
    lines = [
        f"{res['run_dir']} ({res['checkpoint']}.pt, step {res['step']}, mode {res['mode']}): "
        f"{res['num_samples']} shapes of {res['split']}",
        f"  Chamfer FoldingNet {rec['chamfer_foldingnet']:.5f}, "
        f"squared {rec['chamfer_squared']:.5f}",
        f"  probes ({res['train_split']} -> {res['split']}): SVM {probe['svm']['accuracy']:.4f}, "
        f"logistic {probe['logistic']['accuracy']:.4f}",
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
    svm, logi = res["svm"], res["logistic"]
    lines = [
        f"{run_dir} ({res['checkpoint']}.pt, step {res['step']}): codes of {res['train_split']} "
        f"({svm['n_train']}) -> {res['test_split']} ({svm['n_test']}), C={svm['C']}, "
        f"standardize={svm['standardize']}",
        f"  {'probe':<10}{'accuracy':>10}{'mean class':>12}",
    ]
    for name, r in (("linear SVM", svm), ("logistic", logi)):
        note = "" if r["converged"] else "  (not converged)"
        lines.append(f"  {name:<10}{r['accuracy']:>10.4f}{r['mean_class_accuracy']:>12.4f}{note}")
    return "\n".join(lines)
