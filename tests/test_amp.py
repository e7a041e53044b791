"""crfold.amp: which autocast dtype each ``amp`` setting resolves to, and CPU bf16 detection."""

from __future__ import annotations

import pytest
import torch

from crfold import amp


@pytest.fixture()
def fresh_detection():
    amp.cpu_has_native_bf16.cache_clear()
    yield
    amp.cpu_has_native_bf16.cache_clear()


def test_explicit_settings():
    assert amp.amp_dtype("none", "cpu") is None
    assert amp.amp_dtype("bf16", "cpu") is torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        amp.amp_dtype("fp16", "cpu")
    with pytest.raises(ValueError, match="amp: expected one of"):
        amp.amp_dtype("fp8", "cpu")


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_cpu_follows_the_detection(monkeypatch, native):
    monkeypatch.setattr(amp, "cpu_has_native_bf16", lambda: native)
    assert amp.amp_dtype("auto", "cpu") is (torch.bfloat16 if native else None)


def test_auto_on_cuda_needs_native_bf16(monkeypatch):
    for major, expected in ((7, None), (8, torch.bfloat16), (9, torch.bfloat16)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d, m=major: (m, 0))
        assert amp.amp_dtype("auto", "cuda:1") is expected


@pytest.mark.parametrize(
    "flags, expected",
    [("fpu avx2 avx512f avx512_bf16 sha_ni", True), ("fpu amx_bf16 amx_tile", True),
     ("fpu avx2 avx512f avx512_vnni", False)],
)  # fmt: skip
def test_detection_reads_cpuinfo_flags(monkeypatch, tmp_path, fresh_detection, flags, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    real_path = amp.Path
    monkeypatch.setattr(amp, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    assert amp.cpu_has_native_bf16() is expected


def test_detection_agrees_with_torch_on_this_machine(fresh_detection):
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if probe is None:
        pytest.skip("this torch has no cpuinfo probe")
    if probe():
        assert amp.cpu_has_native_bf16()


def test_autocast_context():
    with amp.autocast("cpu", None):
        assert not torch.is_autocast_enabled("cpu")
    with amp.autocast("cpu", torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        y = torch.nn.functional.linear(torch.randn(2, 3), torch.randn(4, 3))
    assert y.dtype == torch.bfloat16
