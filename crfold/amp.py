"""Mixed precision: which autocast dtype a run uses on its device, and the autocast context.

``amp="auto"`` (the default of every crfold config) autocasts to bfloat16 where the hardware
multiplies bfloat16 natively and to nothing (float32) elsewhere:

* a CUDA device of compute capability 8.0 or later (Ampere on: native bfloat16 tensor cores;
  older GPUs only emulate it);
* a CPU with AMX-BF16 or AVX512-BF16, detected from the CPU's feature flags (PyTorch's cpuinfo
  query for AVX512-BF16, the ``flags`` of ``/proc/cpuinfo`` for both), never guessed from the
  model name. On such a CPU one
  thread multiplies bfloat16 matrices 2.8x (AVX512-BF16, AMD Zen 4) to 8x (AMX, Intel Sapphire
  Rapids) faster than float32; without native support bfloat16 is emulated and slower.

``"bf16"`` forces bfloat16 on any device, ``"fp16"`` float16 (CUDA only: it needs a gradient
scaler), ``"none"`` float32. Losses, kNN and Chamfer always run in float32: the callers cast the
network's outputs before them (``crfold.ops`` computes half-precision inputs in float32 anyway).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

AMP_CHOICES = ("auto", "bf16", "fp16", "none")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}
_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # Linux /proc/cpuinfo names

__all__ = ["AMP_CHOICES", "amp_dtype", "autocast", "cpu_has_native_bf16"]


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AMX-BF16 or AVX512-BF16).

    Asks PyTorch's cpuinfo first (``torch.cpu._is_avx512_bf16_supported``, torch >= 2.1; it has
    no AMX-BF16 query, only AMX tiles), then the ``flags`` line of ``/proc/cpuinfo``
    (``avx512_bf16``, ``amx_bf16``); False when neither can tell.
    """
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if probe is not None:
        try:
            if probe():
                return True
        except RuntimeError:  # cpuinfo failed to initialise: fall through to /proc
            pass
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
    )
    return any(f in flags for f in _BF16_CPU_FLAGS)


def amp_dtype(amp: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of setting ``amp`` on ``device``; None means float32 (no autocast).

    Args:
        amp: one of :data:`AMP_CHOICES`.
        device: the device the model runs on.

    Raises:
        ValueError: an unknown ``amp``, or ``"fp16"`` on a CPU (float16 training needs the
            CUDA gradient scaler; use ``"bf16"``).
    """
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp: expected one of {AMP_CHOICES}, got {amp!r}")
    device = torch.device(device)
    if amp == "auto":
        if device.type == "cuda":
            native = torch.cuda.get_device_capability(device)[0] >= 8
            return torch.bfloat16 if native else None
        if device.type == "cpu":
            return torch.bfloat16 if cpu_has_native_bf16() else None
        return None
    if amp == "fp16" and device.type != "cuda":
        raise ValueError(f"amp: fp16 needs a CUDA device (got {device.type}); use bf16 or none")
    return _DTYPES[amp]


def autocast(device: torch.device | str, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``, or a no-op context when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
