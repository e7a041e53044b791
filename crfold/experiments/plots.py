"""The figures of an experiment's report (matplotlib, PNG; Agg backend, no display).

* :func:`plot_curves`: curves of ``metrics.jsonl`` against the step, any task (by default the
  training loss, consistency KL and validation Chamfer);
* :func:`plot_figure1`: the paper's Figure 1 on this data - a 2-D PCA of mu(x) over the test
  split, and for a few shapes mu(t(x)) under random draws of the run's training augmentation t,
  with an arrow from each mu(x) to each of its mu(t(x)): short arrows mean an encoder that maps
  x and t(x) to the same place;
* :func:`plot_reconstructions`: test inputs and decode(mu(x)) of each run, one class a row;
* :func:`plot_gradient_ratios`: from the ``diagnostics`` records, the encoder-gradient norm of
  beta*KL and of lam*R relative to the reconstruction's, against the step (does CR act?).

Each takes ``(title, run directory)`` pairs of ``crfold train`` runs and writes one PNG; the last
two read FoldingNet runs (they import the FoldingNet task when called, not at import).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CURVE_PANELS",
    "GRADIENT_PANELS",
    "plot_curves",
    "plot_figure1",
    "plot_gradient_ratios",
    "plot_reconstructions",
]

# (record kind, key, panel title) of metrics.jsonl records (crfold.train.runtime.RunLog)
CURVE_PANELS = (
    ("train", "loss", "training loss (nats / shape)"),
    ("train", "consistency", "KL(q(z|t(x)) || q(z|x)) (nats)"),
    ("epoch", "val_chamfer", "validation Chamfer (FoldingNet)"),
)

# (numerator, denominator, panel title) of the gradient-norm keys of a "diagnostics" record
GRADIENT_PANELS = (
    ("grad_kl", "grad_recon", "encoder gradient: beta*KL / reconstruction"),
    ("grad_consistency", "grad_recon", "encoder gradient: lam*R / reconstruction"),
)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_series(
    runs: list[tuple[str, Path]],
    path: Path,
    titles: list[str],
    points: Callable[[list[dict], int], list[tuple[int, float]]],
    scale: Callable[[int, Any], None],
) -> bool:
    """One panel per title, a line per run of ``points(records, panel)`` (step, value) pairs.

    Runs of one name share a colour; ``scale(panel, axes)`` sets each panel's y axis once all
    lines are drawn. Returns whether any run drew a point.
    """
    from ..train.runtime import METRICS_FILE, read_metrics

    plt = _plt()
    fig, axes = plt.subplots(1, len(titles), figsize=(5 * len(titles), 4), squeeze=False)
    axes = axes[0]
    colors = {name: f"C{i % 10}" for i, name in enumerate(dict.fromkeys(n for n, _ in runs))}
    labelled: set[str] = set()
    drawn = False
    for name, run_dir in runs:
        # a run shorter than log_every and than an epoch (e.g. "untrained") logged nothing
        recs = read_metrics(run_dir) if (Path(run_dir) / METRICS_FILE).is_file() else []
        for i, (ax, title) in enumerate(zip(axes, titles)):
            pts = points(recs, i)
            if pts:
                steps, vals = zip(*pts)
                ax.plot(steps, vals, color=colors[name], alpha=0.8, lw=1, marker=".",
                        label=None if name in labelled else name)  # fmt: skip
                drawn = True
            ax.set_title(title)
            ax.set_xlabel("step")
        labelled.add(name)
    for i, ax in enumerate(axes):
        scale(i, ax)
    if axes[0].get_legend_handles_labels()[0]:  # runs without records drew nothing
        axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def plot_curves(
    runs: list[tuple[str, Path]],
    path: Path,
    panels: tuple[tuple[str, str, str], ...] = CURVE_PANELS,
    log_panels: tuple[int, ...] = (0, 1),
) -> None:
    """Curves of each run's ``metrics.jsonl`` against the step, one panel per metric.

    Args:
        runs: (row name, run directory) pairs; runs of one name share a colour.
        path: the PNG to write.
        panels: (record kind, key, title) per panel (:data:`CURVE_PANELS`).
        log_panels: panels with a symlog y axis.
    """

    def points(recs: list[dict], i: int) -> list[tuple[int, float]]:
        kind, key, _ = panels[i]
        return [(m["step"], m[key]) for m in recs if m.get("kind") == kind and key in m]

    def scale(i: int, ax: Any) -> None:
        if i in log_panels:
            ax.set_yscale("symlog")

    _plot_series(runs, path, [t for _, _, t in panels], points, scale)


def plot_gradient_ratios(
    runs: list[tuple[str, Path]],
    path: Path,
    panels: tuple[tuple[str, str, str], ...] = GRADIENT_PANELS,
) -> bool:
    """Ratios of encoder-gradient norms against the step, from the runs' ``diagnostics`` records.

    A ratio near 1 means the term pulls the encoder as hard as the reconstruction; 1e-3 means it
    barely acts. Runs without diagnostics (``grad_norms_every: null``, or a run shorter than it)
    draw nothing, and neither does a term that is off (0, as aug's lam*R).

    Args:
        runs: (row name, run directory) pairs; runs of one name share a colour.
        path: the PNG to write.
        panels: (numerator key, denominator key, title) per panel (:data:`GRADIENT_PANELS`).

    Returns:
        Whether any run had diagnostics (the PNG is written either way).
    """

    def points(recs: list[dict], i: int) -> list[tuple[int, float]]:
        num, den, _ = panels[i]
        return [(m["step"], m[num] / m[den]) for m in recs
                if m.get("kind") == "diagnostics" and m.get(num) and m.get(den)]  # fmt: skip

    def scale(i: int, ax: Any) -> None:
        if ax.has_data():  # a log axis without positive values warns
            ax.set_yscale("log")

    return _plot_series(runs, path, [t for _, _, t in panels], points, scale)


def _pick_shapes(labels: torch.Tensor, count: int) -> list[int]:
    """The first test shape of each of ``count`` classes (spread over the label range)."""
    classes = sorted(set(labels.tolist()))
    chosen = [
        classes[i] for i in np.linspace(0, len(classes) - 1, min(count, len(classes))).astype(int)
    ]
    return [int((labels == c).nonzero()[0]) for c in dict.fromkeys(chosen)]


@torch.no_grad()
def _figure1_panel(
    ax, title: str, run_dir: Path, which: str, shapes: int, draws: int, seed: int
) -> None:
    from ..eval.encode import encode_dataset, load_run
    from ..train.foldingnet import build_transform, open_split, up_axis

    model, cfg = load_run(run_dir, which)
    test = open_split(cfg, cfg.probe_split)
    mu, labels = encode_dataset(model, test)
    mu_np = mu.double().numpy()
    centre = mu_np.mean(0)
    _, _, vt = np.linalg.svd(mu_np - centre, full_matrices=False)
    proj = lambda z: (np.asarray(z, dtype=np.float64) - centre) @ vt[:2].T  # noqa: E731
    ax.scatter(*proj(mu_np).T, s=3, c="0.85", label="mu(x), all test shapes")
    t = build_transform(cfg, up_axis(cfg, test))
    gen = torch.Generator().manual_seed(seed)
    for i, idx in enumerate(_pick_shapes(labels, shapes)):
        x = test[idx][0].unsqueeze(0).expand(draws, -1, -1).float()  # (draws, N, 3)
        mu_t = model.encode(t(x, generator=gen)).mu.double().numpy()
        p0, pt = proj(mu_np[idx : idx + 1])[0], proj(mu_t)
        color = f"C{i % 10}"
        for q in pt:
            ax.annotate("", xy=q, xytext=p0, arrowprops={"arrowstyle": "->", "color": color,
                                                          "lw": 0.8, "alpha": 0.7})  # fmt: skip
        ax.scatter(*pt.T, s=10, color=color, alpha=0.7)
        ax.scatter(*p0, s=60, color=color, edgecolors="k", marker="*",
                   label=test.classes[int(labels[idx])])  # fmt: skip
    ax.set_title(title)
    ax.set_xlabel("PC 1 of mu(x)")
    ax.set_ylabel("PC 2")


def plot_figure1(
    runs: list[tuple[str, Path]], which: str, path: Path, shapes: int = 5, draws: int = 8
) -> None:
    """The Figure-1 analogue, one panel per run (see the module docstring).

    Args:
        runs: (panel title, FoldingNet run directory) pairs.
        which: the checkpoint ("best" or "last").
        path: the PNG to write.
        shapes: test shapes shown (the first of as many classes, spread over the labels).
        draws: transforms t drawn per shape (seeded: the same draws for every panel).
    """
    plt = _plt()
    cols = min(len(runs), 3)
    nrows = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.5 * cols, 5 * nrows), squeeze=False)
    for ax, (title, run_dir) in zip(axes.flat, runs):
        _figure1_panel(ax, title, Path(run_dir), which, shapes, draws, seed=0)
    for ax in list(axes.flat)[len(runs) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="best")
    fig.suptitle("mu(x) (stars) and mu(t(x)) for random training augmentations t (arrows)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@torch.no_grad()
def plot_reconstructions(
    runs: list[tuple[str, Path]], which: str, path: Path, shapes: int = 4
) -> None:
    """Test inputs (first column) and decode(mu(x)) of each run, one class a row.

    Args:
        runs: (column title, FoldingNet run directory) pairs; the first one's config says
            which data is shown.
        which: the checkpoint ("best" or "last").
        path: the PNG to write.
        shapes: rows (the first test shape of as many classes).
    """
    from ..eval.encode import load_run
    from ..train.foldingnet import open_split

    plt = _plt()
    _, cfg = load_run(runs[0][1], which)
    test = open_split(cfg, cfg.probe_split)
    idxs = _pick_shapes(torch.as_tensor(test.labels), shapes)
    inputs = [test[i][0].float() for i in idxs]  # each (N, 3)
    lim = 1.0 * max(float(x.abs().max()) for x in inputs)
    columns = [("input", inputs)]
    for title, run_dir in runs:
        model, _ = load_run(run_dir, which)
        recon = [model.decode(model.encode(x[None]).mu)[0].float() for x in inputs]
        columns.append((title, recon))
    nrow, ncol = len(idxs), len(columns)
    fig = plt.figure(figsize=(2.4 * ncol, 2.4 * nrow))
    for col, (title, clouds) in enumerate(columns):
        for row, pts in enumerate(clouds):
            ax = fig.add_subplot(nrow, ncol, row * ncol + col + 1, projection="3d")
            p = pts.numpy()  # (M, 3), y up: drawn as the plot's vertical axis
            ax.scatter(p[:, 0], p[:, 2], p[:, 1], s=2, c=p[:, 1], cmap="viridis", vmin=-lim,
                       vmax=lim, depthshade=False)  # fmt: skip
            ax.view_init(elev=20, azim=-60)
            ax.set_box_aspect((1, 1, 1), zoom=1.5)
            for setter in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
                setter(-lim, lim)
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title, fontsize=10)
            if col == 0:
                ax.text2D(0.0, 0.5, test.classes[int(test.labels[idxs[row]])], fontsize=9,
                          rotation=90, va="center", transform=ax.transAxes)  # fmt: skip
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.0, top=0.95, wspace=0.0, hspace=0.0)
    fig.savefig(path, dpi=100)
    plt.close(fig)
