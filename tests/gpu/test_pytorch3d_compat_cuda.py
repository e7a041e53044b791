"""The L1 / L2 kNN and the PyTorch3D drop-in (crfold.ops.pytorch3d) on CUDA, against the CPU.

The CUDA and CPU kernels share their per-pair arithmetic (knn_common.h, no fused multiply-add),
so float64 and integer-valued inputs must give identical indices and distances; float32
gradients may differ by atomics' summation order (tolerance), deterministic mode by nothing.
"""

from __future__ import annotations

import pytest
import torch

from crfold.ops import chamfer_distance as crfold_chamfer
from crfold.ops import knn_points as crfold_knn
from crfold.ops.pytorch3d import chamfer_distance, knn_gather, knn_points

from ..ops.conftest import deterministic_algorithms, make_clouds

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]

DEVICE = "cuda"


def _case(D=3, dtype=torch.float64, seed=0, integer=False, P1=300, P2=700):
    x, y = make_clouds(4, P1, P2, D, dtype=dtype, seed=seed, integer=integer)
    xl = torch.tensor([P1, P1 // 3, 1, 0])
    yl = torch.tensor([P2, 5, 0, P2 // 2])
    return x, y, xl, yl


def _grads(fn, x, y, w_seed=0):
    """Outputs of fn(x, y) and the gradients of a random weighting of its first output."""
    a, b = x.clone().requires_grad_(), y.clone().requires_grad_()
    out = fn(a, b)
    first = out[0] if isinstance(out, tuple) else out
    w = torch.rand(first.shape, generator=torch.Generator().manual_seed(w_seed))
    w = w.to(first.device, first.dtype)
    return out, torch.autograd.grad((first * w).sum(), (a, b))


@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("D", [1, 3, 8, 16])
@pytest.mark.parametrize("K", [1, 4, 17, 128])
def test_knn_cuda_equals_cpu_float64(norm, D, K):
    x, y, xl, yl = _case(D=D, seed=K + D + norm)
    cpu = crfold_knn(x, y, xl, yl, K=K, norm=norm)
    gpu = crfold_knn(x.to(DEVICE), y.to(DEVICE), xl.to(DEVICE), yl.to(DEVICE), K=K, norm=norm)
    assert torch.equal(gpu.idx.cpu(), cpu.idx)
    assert torch.equal(gpu.dists.cpu(), cpu.dists)


@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("K", [1, 5, 32])
def test_knn_cuda_ties_equal_cpu(norm, K):
    # Integer coordinates in float32: exact arithmetic on both devices, lowest-index ties.
    x, y, xl, yl = _case(dtype=torch.float32, seed=K, integer=True, P1=500, P2=3000)
    cpu = crfold_knn(x, y, xl, yl, K=K, norm=norm)
    gpu = crfold_knn(x.to(DEVICE), y.to(DEVICE), xl.to(DEVICE), yl.to(DEVICE), K=K, norm=norm)
    assert torch.equal(gpu.idx.cpu(), cpu.idx)
    assert torch.equal(gpu.dists.cpu(), cpu.dists)


@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_knn_gradients_cuda_equal_cpu(norm, deterministic, dtype):
    x, y, xl, yl = _case(dtype=dtype, seed=3)

    def fn(device):
        return lambda a, b: crfold_knn(a, b, xl.to(device), yl.to(device), K=4, norm=norm).dists

    _, cpu = _grads(fn("cpu"), x, y)
    with deterministic_algorithms(deterministic):
        _, gpu = _grads(fn(DEVICE), x.to(DEVICE), y.to(DEVICE))
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for g, c in zip(gpu, cpu):
        torch.testing.assert_close(g.cpu(), c, rtol=tol, atol=tol)


def test_l1_deterministic_backward_is_bitwise_repeatable():
    x, y, xl, yl = _case(dtype=torch.float32, seed=4, P1=5000, P2=64)
    runs = []
    with deterministic_algorithms(True):
        for _ in range(3):
            _, g = _grads(
                lambda a, b: crfold_knn(a, b, None, None, K=8, norm=1).dists,
                x.to(DEVICE),
                y.to(DEVICE),
            )
            runs.append(g)
    for run in runs[1:]:
        for a, b in zip(runs[0], run):
            assert torch.equal(a, b)


@pytest.mark.parametrize("norm", [1, 2])
def test_dropin_knn_and_gather_cuda_equal_cpu(norm):
    x, y, xl, yl = _case(seed=5)
    cpu = knn_points(x, y, xl, yl, norm=norm, K=6, return_nn=True)
    gpu = knn_points(
        x.to(DEVICE), y.to(DEVICE), xl.to(DEVICE), yl.to(DEVICE), norm=norm, K=6, return_nn=True
    )
    for g, c in zip(gpu, cpu):
        assert torch.equal(g.cpu(), c)
    feats = torch.randn(4, 700, 5, dtype=torch.float64)
    got = knn_gather(feats.to(DEVICE), gpu.idx, yl.to(DEVICE))
    assert torch.equal(got.cpu(), knn_gather(feats, cpu.idx, yl))


@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("point_reduction", ["mean", "sum", "max", None])
def test_dropin_chamfer_cuda_equals_cpu(norm, point_reduction):
    x, y, xl, yl = _case(seed=6)
    g = torch.Generator().manual_seed(6)
    normals = (None, None)
    if point_reduction != "max":
        normals = tuple(torch.randn(p.shape, generator=g, dtype=torch.float64) for p in (x, y))
    batch = None if point_reduction is None else "mean"
    w = torch.tensor([0.5, 2.0, 1.0, 0.0], dtype=torch.float64)
    results = []
    for device in ("cpu", DEVICE):
        n = [None if t is None else t.to(device) for t in normals]

        def fn(a, b, device=device, n=n):
            lengths = (xl.to(device), yl.to(device))
            loss, loss_n = chamfer_distance(
                a, b, *lengths, n[0], n[1], w.to(device), batch, point_reduction, norm
            )
            if point_reduction is None:
                return loss[0], loss[1], loss_n
            return loss, loss_n

        results.append(_grads(fn, x.to(device), y.to(device)))
    (cpu_out, cpu_g), (gpu_out, gpu_g) = results
    for got, want in zip(gpu_out, cpu_out):
        if want is None:
            assert got is None
        elif isinstance(want, tuple):
            for a, b in zip(got, want):
                torch.testing.assert_close(a.cpu(), b, rtol=1e-12, atol=1e-12)
        else:
            torch.testing.assert_close(got.cpu(), want, rtol=1e-12, atol=1e-12)
    for a, b in zip(gpu_g, cpu_g):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("norm", [1, 2])
def test_crfold_chamfer_cuda_equals_cpu(norm):
    x, y, xl, yl = _case(dtype=torch.float32, seed=7)
    results = []
    for d in ("cpu", DEVICE):

        def fn(a, b, d=d):
            return crfold_chamfer(a, b, xl.to(d), yl.to(d), norm=norm)

        results.append(_grads(fn, x.to(d), y.to(d)))
    (cpu, cg), (gpu, gg) = results
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-6, atol=1e-6)
    for a, b in zip(gg, cg):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dropin_half_precision_cuda(dtype):
    x, y, xl, yl = _case(dtype=dtype, seed=8)
    loss, _ = chamfer_distance(x.to(DEVICE), y.to(DEVICE), xl.to(DEVICE), yl.to(DEVICE), norm=1)
    ref, _ = chamfer_distance(x.float(), y.float(), xl, yl, norm=1)
    assert loss.dtype == dtype
    torch.testing.assert_close(loss.float().cpu(), ref, rtol=1e-2, atol=1e-2)
