"""Report helpers of the image experiments: image grids, mean ± std cells, markdown, bar plots,
and the caveats of an evaluation (:func:`format_caveats`, :func:`marked`).

Every file is written atomically (:mod:`crfold.io`); plots use matplotlib's Agg backend.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from crfold.io import atomic_write_bytes, atomic_write_text

__all__ = [
    "bar_plot",
    "format_caveats",
    "markdown_table",
    "marked",
    "mean_std",
    "montage",
    "save_image_grid",
]


def _grid_array(images: torch.Tensor, nrow: int, pad: int = 2) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> (rows*(H+pad)+pad, nrow*(W+pad)+pad, 3) uint8, white padding."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1 or 3, H, W), got {tuple(images.shape)}")
    n, c, h, w = images.shape
    nrow = max(1, min(nrow, n))
    rows = math.ceil(n / nrow)
    x = images.detach().float().clamp(0, 1).expand(n, 3, h, w).cpu().numpy()
    grid = np.ones((rows * (h + pad) + pad, nrow * (w + pad) + pad, 3), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top : top + h, left : left + w] = x[i].transpose(1, 2, 0)
    return (grid * 255).round().astype(np.uint8)


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int = 8) -> Path:
    """Save images (N, C, H, W) in [0, 1] as one PNG grid, ``nrow`` per row (atomic)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_grid_array(images, nrow)).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def mean_std(values: Sequence[float], digits: int = 1, scale: float = 1.0) -> str:
    """``"m ± s"`` (sample std, ddof 1) of finite values; ``"m"`` for one value, "-" for none."""
    vals = np.asarray([v * scale for v in values if v is not None and math.isfinite(v)], float)
    if vals.size == 0:
        return "-"
    if vals.size == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{vals.mean():.{digits}f} ± {vals.std(ddof=1):.{digits}f}"


def marked(text: str, flag: str | None) -> str:
    """A table cell with its flag (:mod:`crfold_images.caveats`) appended: ``"9.8 (chance)"``."""
    return text if flag is None or text == "-" else f"{text} ({flag})"


def format_caveats(result: dict) -> str:
    """The ``caveats`` of an evaluation as lines for a terminal (empty string when none)."""
    lines = result.get("caveats") or []
    if not lines:
        return ""
    return "what these numbers can and cannot show:\n" + "\n".join(f"  - {c}" for c in lines)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table (first column left-aligned, the others right-aligned)."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|")
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _save_figure(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def bar_plot(
    path: str | Path,
    labels: Sequence[str],
    metrics: dict[str, Sequence[Sequence[float]]],
    title: str = "",
) -> Path:
    """One bar panel per metric: the mean over seeds per cell, with ± 1 std error bars.

    Args:
        path: the PNG to write.
        labels: the cell names (x axis), length K.
        metrics: {metric name: K lists of per-seed values}.
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(metrics)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        vals = [np.asarray([v for v in cell if v is not None], float) for cell in metrics[name]]
        means = [v.mean() if v.size else np.nan for v in vals]
        stds = [v.std(ddof=1) if v.size > 1 else 0.0 for v in vals]
        ax.bar(range(len(labels)), means, yerr=stds, capsize=3, color="tab:blue", alpha=0.8)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
        ax.set_title(name)
        finite = [m for m in means if np.isfinite(m)]
        if finite and name.lower().startswith("nll"):  # differences matter, not the offset
            lo, hi = min(finite), max(finite)
            ax.set_ylim(lo - 0.2 * (hi - lo + 1), hi + 0.2 * (hi - lo + 1))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save_figure(fig, path)


def montage(path: str | Path, items: Sequence[tuple[str, str | Path]], title: str = "") -> Path:
    """A figure of the PNGs ``items = [(caption, path)]`` side by side (missing ones skipped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    items = [(c, Path(p)) for c, p in items if Path(p).is_file()]
    if not items:
        raise ValueError("items: no existing image files to show")
    cols = min(4, len(items))
    rows = math.ceil(len(items) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (caption, p) in zip(axes.flat, items):
        with Image.open(p) as im:
            ax.imshow(np.asarray(im.convert("RGB")))
        ax.set_title(caption, fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save_figure(fig, path)


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write a text file (the markdown reports)."""
    return atomic_write_text(path, text)
