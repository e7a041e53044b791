"""The key kNN / Chamfer checks of tests/ops, repeated on a CUDA device.

The CUDA kernel is compared with the float64 brute force and with the CPU path on the same
inputs; float32 results may differ from the CPU's by rounding (the GPU may fuse multiply-adds),
so float32 indices are checked up to near-ties, float64 and integer-valued inputs exactly.
"""

from __future__ import annotations

import pytest
import torch

from crfold.ops import chamfer_distance, knn_points, reference

from ..ops.conftest import (
    brute_chamfer,
    brute_knn,
    check_knn,
    deterministic_algorithms,
    make_clouds,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]

DEVICE = "cuda"
# Around every plausible tile / block / warp multiple of the CUDA kernel.
BOUNDARY_SIZES = [31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257]
BOUNDARY_SIZES += [511, 512, 513, 1023, 1024, 1025, 2047, 2048, 2049, 4095, 4096, 4097]


def _lengths(*values):
    return torch.tensor(values, device=DEVICE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("D", [1, 2, 3, 4, 8, 9, 16])
@pytest.mark.parametrize("K", [1, 2, 4, 5, 16, 17, 32, 64, 65, 128])
def test_matches_brute_force_and_cpu(K, D, dtype):
    p1, p2 = make_clouds(4, 70, 150, D, dtype=dtype, device=DEVICE, seed=K + D)
    l1, l2 = _lengths(70, 17, 1, 0), _lengths(150, 0, 1, 40)
    out = knn_points(p1, p2, l1, l2, K=K)
    exact = dtype == torch.float64
    tol = 1e-12 if exact else 1e-5
    check_knn(out, p1, p2, l1, l2, K, exact_idx=exact, rtol=tol, atol=tol)
    cpu = knn_points(p1.cpu(), p2.cpu(), l1.cpu(), l2.cpu(), K=K)
    torch.testing.assert_close(out.dists.cpu(), cpu.dists, rtol=tol, atol=tol)
    if exact:
        assert torch.equal(out.idx.cpu(), cpu.idx)


def test_limits_of_the_cuda_kernel_are_value_errors():
    p1, p2 = make_clouds(1, 4, 200, device=DEVICE)
    with pytest.raises(ValueError, match=r"\bK\b"):
        knn_points(p1, p2, K=129)
    p1, p2 = make_clouds(1, 4, 200, 17, device=DEVICE)
    with pytest.raises(ValueError, match=r"\bD\b"):
        knn_points(p1, p2, K=1)


def test_lengths_zero_one_and_k_larger_than_p2():
    p1, p2 = make_clouds(5, 6, 4, dtype=torch.float64, device=DEVICE, seed=1)
    l1, l2 = _lengths(0, 1, 6, 6, 1), _lengths(4, 4, 0, 1, 1)
    out = knn_points(p1, p2, l1, l2, K=6, return_nn=True)
    check_knn(out, p1, p2, l1, l2, K=6)
    assert bool((out.knn[out.idx < 0] == 0).all())
    out = knn_points(p1, p2, K=7)  # K > P2 without lengths
    check_knn(out, p1, p2, None, None, K=7)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("K", [1, 5, 32])
def test_ties_keep_lowest_index(K, dtype):
    p1, p2 = make_clouds(3, 90, 300, 3, dtype=dtype, device=DEVICE, seed=K, integer=True)
    l2 = _lengths(300, 41, 7)
    out = knn_points(p1, p2, None, l2, K=K)
    check_knn(out, p1, p2, None, l2, K, exact_idx=True, rtol=0, atol=0)


@pytest.mark.parametrize("P", BOUNDARY_SIZES)
def test_tile_and_block_boundaries(P):
    # B=1 (the target split across blocks) and B=3 ragged; float64 for exact indices.
    for B, l1, l2 in ((1, (P,), (P,)), (3, (P, min(P, 50), 1), (P - 1, P, 1))):
        p1, p2 = make_clouds(B, P, P, 3, dtype=torch.float64, device=DEVICE, seed=P + B)
        l1, l2 = _lengths(*l1), _lengths(*l2)
        check_knn(knn_points(p1, p2, l1, l2, K=4), p1, p2, l1, l2, 4)
    q, t = make_clouds(1, 37, P, 8, dtype=torch.float64, device=DEVICE, seed=P)
    check_knn(knn_points(q, t, K=32), q, t, None, None, 32)


def test_noncontiguous_and_expanded_inputs():
    g = torch.Generator().manual_seed(4)
    base1 = torch.randn(3, 3, 40, generator=g, dtype=torch.float64).to(DEVICE)
    base2 = torch.randn(3, 90, 3, generator=g, dtype=torch.float64).to(DEVICE)
    p1, p2 = base1.transpose(1, 2), base2[:, ::2]
    l1 = torch.tensor([40, 99, 31, 99, 7], device=DEVICE)[::2]
    check_knn(knn_points(p1, p2, l1, None, K=4), p1, p2, l1, None, 4)
    e1, e2 = base1[:1].transpose(1, 2).expand(3, 40, 3), base2[:1].expand(3, 90, 3)
    check_knn(knn_points(e1, e2, None, None, K=3), e1, e2, None, None, 3)


def test_lengths_on_cpu_are_accepted():
    p1, p2 = make_clouds(2, 20, 30, dtype=torch.float64, device=DEVICE, seed=5)
    l1, l2 = torch.tensor([20, 3]), torch.tensor([7, 30])
    check_knn(knn_points(p1, p2, l1, l2, K=2), p1, p2, l1, l2, 2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_matches_float32_of_same_values(dtype):
    p1, p2 = make_clouds(2, 300, 500, 3, dtype=dtype, device=DEVICE, seed=6)
    p1.requires_grad_(), p2.requires_grad_()
    out = knn_points(p1, p2, None, _lengths(500, 123), K=5)
    assert out.dists.dtype == dtype
    q, t = p1.detach().float().requires_grad_(), p2.detach().float().requires_grad_()
    ref = knn_points(q, t, None, _lengths(500, 123), K=5)
    assert torch.equal(out.idx, ref.idx)
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    torch.testing.assert_close(out.dists.float(), ref.dists, rtol=tol, atol=tol)
    out.dists.sum().backward()
    ref.dists.sum().backward()
    torch.testing.assert_close(p1.grad.float(), q.grad, rtol=tol, atol=tol)
    torch.testing.assert_close(p2.grad.float(), t.grad, rtol=tol, atol=tol)


def test_large_cloud_matches_cpu():
    g = torch.Generator().manual_seed(7)
    p1 = torch.randint(0, 30, (1, 3000, 3), generator=g).float()
    p2 = torch.randint(0, 30, (1, 40000, 3), generator=g).float()  # many exact ties
    out = knn_points(p1.to(DEVICE), p2.to(DEVICE), K=4)
    rows = torch.arange(0, 3000, 11)
    want_d, want_i = brute_knn(p1[:, rows], p2, K=4, dtype=torch.float32)
    assert torch.equal(out.idx[:, rows].cpu(), want_i)
    assert torch.equal(out.dists[:, rows].cpu(), want_d)


# ---------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("K", [1, 3])
def test_gradcheck_float64(K):
    p1, p2 = make_clouds(2, 6, 8, 3, dtype=torch.float64, device=DEVICE, seed=10 + K)
    p1.requires_grad_(), p2.requires_grad_()
    l1, l2 = _lengths(6, 3), _lengths(8, 2)

    def f(a, b):
        return knn_points(a, b, l1, l2, K=K).dists

    assert torch.autograd.gradcheck(f, (p1, p2), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("deterministic", [False, True])
def test_gradients_equal_reference_autograd(deterministic):
    p1, p2 = make_clouds(3, 2000, 40, 3, dtype=torch.float64, device=DEVICE, seed=20)
    l1, l2 = _lengths(2000, 700, 0), _lengths(40, 3, 40)
    w = torch.rand(3, 2000, 4, dtype=torch.float64, device=DEVICE)
    grads = []
    for fn in (knn_points, reference.knn_points_reference):
        a, b = p1.clone().requires_grad_(), p2.clone().requires_grad_()
        with deterministic_algorithms(deterministic):
            d = fn(a, b, l1, l2, K=4)[0]
            grads.append(torch.autograd.grad((d * w).sum(), (a, b)))
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_deterministic_gradients_are_bitwise_identical():
    p1, p2 = make_clouds(2, 20000, 64, 3, dtype=torch.float32, device=DEVICE, seed=30)
    w = torch.rand(2, 20000, 8, device=DEVICE)
    runs = []
    with deterministic_algorithms(True):
        for _ in range(3):
            a, b = p1.clone().requires_grad_(), p2.clone().requires_grad_()
            d = knn_points(a, b, None, _lengths(64, 50), K=8).dists
            runs.append(torch.autograd.grad((d * w).sum(), (a, b)))
            loss = chamfer_distance(a, b, squared=False)
            runs[-1] += torch.autograd.grad(loss, (a, b))
    for run in runs[1:]:
        for x, y in zip(runs[0], run):
            assert torch.equal(x, y)


# ---------------------------------------------------------------------------- chamfer


@pytest.mark.parametrize("point_reduction", ["mean", "sum", "max", None])
@pytest.mark.parametrize("direction_reduction", ["sum", "max", "mean"])
def test_chamfer_matches_brute_force(point_reduction, direction_reduction):
    x, y = make_clouds(4, 130, 257, dtype=torch.float64, device=DEVICE, seed=40)
    xl, yl = _lengths(130, 5, 0, 1), _lengths(257, 0, 6, 1)
    batch = None if point_reduction is None else "mean"
    w = torch.tensor([0.5, 2.0, 0.0, 1.5], dtype=torch.float64, device=DEVICE)
    for squared in (True, False):
        kw = dict(
            squared=squared,
            point_reduction=point_reduction,
            batch_reduction=batch,
            direction_reduction=direction_reduction,
            weights=w,
        )
        got = chamfer_distance(x, y, xl, yl, **kw)
        want = brute_chamfer(x, y, xl, yl, **kw)
        if point_reduction is None:
            got, want = torch.cat(got, 1), torch.cat(want, 1)  # (B, P1 + P2) per-point terms
        torch.testing.assert_close(got.cpu(), want, rtol=1e-12, atol=1e-12)


def test_chamfer_empty_clouds_and_coincident_points():
    x, y = make_clouds(2, 5, 4, dtype=torch.float32, device=DEVICE, seed=41)
    x.requires_grad_(), y.requires_grad_()
    loss = chamfer_distance(x, y, _lengths(0, 5), _lengths(4, 0), squared=False)
    gx, gy = torch.autograd.grad(loss, (x, y))
    assert loss.item() == 0 and bool(torch.isfinite(gx).all()) and bool(torch.isfinite(gy).all())
    z = x.detach().clone().requires_grad_()
    loss = chamfer_distance(z, z.detach().flip(1), squared=False, point_reduction="max")
    (gz,) = torch.autograd.grad(loss, (z,))
    assert loss.item() == 0 and bool((gz == 0).all())


def test_runs_on_the_current_stream():
    p1, p2 = make_clouds(2, 3000, 3000, dtype=torch.float32, device=DEVICE, seed=50)
    want = knn_points(p1, p2, K=3)
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = knn_points(p1, p2, K=3)
        done = got.idx.clone()
    stream.synchronize()
    assert torch.equal(done, want.idx) and torch.equal(got.dists, want.dists)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_second_device():
    p1, p2 = make_clouds(2, 100, 120, dtype=torch.float64, device="cuda:1", seed=51)
    out = knn_points(p1, p2, K=3)
    assert out.idx.device == p1.device
    check_knn(out, p1, p2, None, None, 3)
