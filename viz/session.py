"""The state behind the viewer, without any GUI: two shapes, t, the method, the decode density.

The viewer only forwards its widgets to an :class:`InterpolationSession` and draws what it
returns, so everything it computes is testable without Open3D or a display.

>>> s = InterpolationSession(load_source("runs/demo"), a="chair", b="airplane")
>>> s.set_t(0.25); s.method = "slerp"
>>> points, colors = s.decoded()          # (M, 3) float32, (M, 3) float32 in [0, 1]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .interp import METHODS, decode_path, encode_cloud, grid_colors, interpolation_row
from .source import InterpolationSource, resolve_shape

GRID_SIZE_LIMITS = (2, 128)  # decode density: grid side G, M = G**2 points


class InterpolationSession:
    """Two shapes of a source, their codes, and the decoded cloud at ``t``.

    Args:
        source: the model and its split.
        a, b: the two shapes (index, class name or ``class@rank``; see ``resolve_shape``).
        t: interpolation parameter in [0, 1].
        method: "lerp" or "slerp".
        grid_size: decode density (grid side G in [2, 128]); None: the model's.
    """

    def __init__(
        self,
        source: InterpolationSource,
        a: int | str = 0,
        b: int | str = 1,
        t: float = 0.5,
        method: str = "lerp",
        grid_size: int | None = None,
    ):
        self.source = source
        self._codes: dict[int, torch.Tensor] = {}
        self.a = resolve_shape(source.dataset, a)
        self.b = resolve_shape(source.dataset, b)
        self.t = 0.0
        self.set_t(t)
        self.method = method
        self.grid_size = source.model.grid_size if grid_size is None else grid_size

    # ------------------------------------------------------------------ validated settings
    @property
    def method(self) -> str:
        return self._method

    @method.setter
    def method(self, value: str) -> None:
        if value not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {value!r}")
        self._method = value

    @property
    def grid_size(self) -> int:
        return self._grid_size

    @grid_size.setter
    def grid_size(self, value: int) -> None:
        lo, hi = GRID_SIZE_LIMITS
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"grid_size: expected an int in [{lo}, {hi}], got {value!r}")
        self._grid_size = value

    def set_t(self, t: float) -> None:
        """Sets t; ValueError unless 0 <= t <= 1."""
        t = float(t)
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"t: expected a number in [0, 1], got {t}")
        self.t = t

    def set_shape(self, which: str, spec: int | str) -> int:
        """Sets shape ``which`` ("a" or "b") from an index / class spec; returns its index."""
        if which not in ("a", "b"):
            raise ValueError(f"which: expected 'a' or 'b', got {which!r}")
        index = resolve_shape(self.source.dataset, spec)
        setattr(self, which, index)
        return index

    # ------------------------------------------------------------------ what is drawn
    def code(self, index: int) -> torch.Tensor:
        """(L,) float32 posterior mean of sample ``index`` (cached)."""
        if index not in self._codes:
            self._codes[index] = encode_cloud(self.source.model, self.source.cloud(index))
        return self._codes[index]

    def inputs(self) -> tuple[np.ndarray, np.ndarray]:
        """The two input clouds: ((N_a, 3), (N_b, 3)) float32 arrays."""
        return self.source.cloud(self.a).numpy(), self.source.cloud(self.b).numpy()

    def decoded(self) -> tuple[np.ndarray, np.ndarray]:
        """The decoded cloud at the current t and its grid colours.

        Returns:
            (points (M, 3) float32, colors (M, 3) float32 in [0, 1]), M = grid_size**2.
        """
        points, grid = decode_path(
            self.source.model,
            self.code(self.a),
            self.code(self.b),
            self.t,
            self.method,
            self.grid_size,
        )
        return points[0].numpy(), grid_colors(grid).numpy()

    def titles(self) -> tuple[str, str]:
        return self.source.title(self.a), self.source.title(self.b)

    def strip(self, steps: int):
        """The current pair as one figure row of ``steps`` decoded clouds (interpolation_row)."""
        return interpolation_row(
            self.source.model,
            self.source.cloud(self.a),
            self.source.cloud(self.b),
            steps,
            self.method,
            self.grid_size,
            self.titles(),
        )

    def file_stem(self) -> str:
        """A file name stem that records the view, e.g. ``interp_12_40_t0.50_lerp_g45``."""
        return f"interp_{self.a}_{self.b}_t{self.t:.2f}_{self.method}_g{self.grid_size}"

    def default_path(self, out_dir: str | Path, suffix: str, prefix: str = "") -> Path:
        """``out_dir / (prefix + file_stem() + suffix)``."""
        return Path(out_dir) / f"{prefix}{self.file_stem()}{suffix}"
