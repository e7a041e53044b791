"""The ``norm`` argument of crfold's own kNN / Chamfer: the L1 distance (``norm=1``) in the CPU
kernel (brute force and kd-tree), the pure-torch reference and the autograd formula, against a
float64 brute force written here; and ``norm=2`` unchanged.

The L1 gradient convention is ``sign(x - y)`` with ``sign(0) = 0``.
"""

from __future__ import annotations

import pytest
import torch

from crfold.ops import backend, chamfer_distance, knn_points, reference

from .conftest import full_lengths, make_clouds

compiled_only = pytest.mark.skipif(
    not backend().startswith("compiled"), reason="tests the compiled CPU kernel"
)


def l1_brute_knn(p1, p2, lengths1=None, lengths2=None, K=1):
    """(dists (B, P1, K) float64, idx (B, P1, K)) by dense L1 distances and a stable sort; dist 0
    and idx -1 at padding. Differentiable in float64 copies when p1/p2 require grad."""
    B, P1, _ = p1.shape
    P2 = p2.shape[1]
    l1, l2 = full_lengths(lengths1, B, P1), full_lengths(lengths2, B, P2)
    rows, idx = [], torch.full((B, P1, K), -1, dtype=torch.int64)
    for b in range(B):
        n1, n2 = int(l1[b]), int(l2[b])
        for i in range(P1):
            if i >= n1 or n2 == 0:
                rows.append(p1.new_zeros(K, dtype=torch.float64))
                continue
            d = (p1[b, i].double() - p2[b, :n2].double()).abs().sum(-1)  # (n2,)
            order = torch.argsort(d.detach(), stable=True)[:K]
            idx[b, i, : order.numel()] = order
            rows.append(torch.cat([d[order], d.new_zeros(K - order.numel())]))
    dists = torch.stack(rows).reshape(B, P1, K) if rows else p1.new_zeros(B, P1, K).double()
    return dists, idx


def _ragged(B, P1, P2):
    l1 = torch.tensor([P1, P1 // 2, 1, 0, P1][:B])
    l2 = torch.tensor([P2, 0, 1, P2 // 3, 2][:B])
    return l1, l2


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("D", [1, 2, 3, 4, 8, 12])  # 12: past the specialised D
@pytest.mark.parametrize("K", [1, 2, 5, 40])  # 40 > P2
def test_l1_matches_brute_force_and_reference(K, D, dtype):
    p1, p2 = make_clouds(5, 30, 37, D, dtype=dtype, seed=K * 10 + D)
    l1, l2 = _ragged(5, 30, 37)
    out = knn_points(p1, p2, l1, l2, K=K, norm=1)
    want_d, want_i = l1_brute_knn(p1, p2, l1, l2, K)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert out.dists.dtype == dtype
    assert torch.equal(out.idx, want_i)
    torch.testing.assert_close(out.dists.double(), want_d, rtol=tol, atol=tol)
    ref_d, ref_i = reference.knn_points_reference(p1, p2, l1, l2, K, norm=1)
    assert torch.equal(ref_i, want_i)
    torch.testing.assert_close(out.dists, ref_d, rtol=tol, atol=tol)


@pytest.mark.parametrize(
    ("B", "P1", "P2", "D", "K"),
    [
        (2, 40, 300, 3, 5),  # kd-tree (K > 1 from 256 targets)
        (1, 30, 13000, 3, 1),  # kd-tree (K = 1 from 12,288 targets)
        (2, 40, 300, 9, 5),  # brute force (the kd-tree takes D <= 8)
    ],
)
def test_l1_exact_ties_on_both_cpu_paths(B, P1, P2, D, K):
    # Integer coordinates: exact distances, many ties; lowest index first on every path.
    p1, p2 = make_clouds(B, P1, P2, D, dtype=torch.float32, seed=P2 + K, integer=True)
    l2 = torch.tensor([P2, P2 - 17][:B])
    out = knn_points(p1, p2, None, l2, K=K, norm=1, return_nn=True)
    want_d, want_i = l1_brute_knn(p1, p2, None, l2, K)
    assert torch.equal(out.idx, want_i)
    assert torch.equal(out.dists.double(), want_d)
    assert torch.equal(out.knn, reference.gather_points(p2, want_i))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_l1_half_precision_is_computed_in_float32(dtype):
    p1, p2 = make_clouds(2, 50, 60, 3, dtype=dtype, seed=3)
    out = knn_points(p1, p2, K=3, norm=1)
    ref = knn_points(p1.float(), p2.float(), K=3, norm=1)
    assert out.dists.dtype == dtype and torch.equal(out.idx, ref.idx)
    assert torch.equal(out.dists, ref.dists.to(dtype))


@pytest.mark.parametrize("K", [1, 3])
def test_l1_gradients_match_brute_force(K):
    p1, p2 = make_clouds(5, 20, 25, 3, dtype=torch.float64, seed=K)
    l1, l2 = _ragged(5, 20, 25)
    w = torch.rand(5, 20, K, generator=torch.Generator().manual_seed(K), dtype=torch.float64)
    grads = []
    for fn in (
        lambda a, b: knn_points(a, b, l1, l2, K=K, norm=1).dists,
        lambda a, b: reference.knn_points_reference(a, b, l1, l2, K, norm=1)[0],
        lambda a, b: l1_brute_knn(a, b, l1, l2, K)[0],
    ):
        a, b = p1.clone().requires_grad_(), p2.clone().requires_grad_()
        grads.append(torch.autograd.grad((fn(a, b) * w).sum(), (a, b)))
    for got in grads[:2]:
        for g, want in zip(got, grads[2]):
            torch.testing.assert_close(g, want, rtol=1e-12, atol=1e-12)


def test_l1_gradcheck_float64():
    p1, p2 = make_clouds(2, 6, 8, 3, dtype=torch.float64, seed=11)
    p1.requires_grad_(), p2.requires_grad_()
    l1, l2 = torch.tensor([6, 3]), torch.tensor([8, 2])

    def f(a, b):
        return knn_points(a, b, l1, l2, K=3, norm=1).dists

    assert torch.autograd.gradcheck(f, (p1, p2), eps=1e-6, atol=1e-7)


def test_l1_subgradient_is_zero_at_equal_coordinates():
    p1 = torch.tensor([[[0.0, 1.0, 2.0], [5.0, 5.0, 5.0]]], requires_grad=True)
    p2 = torch.tensor([[[0.0, 3.0, 1.0]]], requires_grad=True)
    for fn in (
        lambda a, b: knn_points(a, b, K=1, norm=1).dists,
        lambda a, b: reference.knn_points_reference(
            a, b, torch.tensor([2]), torch.tensor([1]), 1, norm=1
        )[0],
    ):
        g1, g2 = torch.autograd.grad(fn(p1, p2).sum(), (p1, p2))
        assert g1.tolist() == [[[0.0, -1.0, 1.0], [1.0, 1.0, 1.0]]]
        assert g2.tolist() == [[[-1.0, 0.0, -2.0]]]


@compiled_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "K, P2, D",
    [
        (1, 200, 3),  # brute force, K = 1 (per-lane running minimum)
        (4, 200, 3),  # brute force, K > 1
        (4, 200, 12),  # brute force, generic D (past the specialised D = 1..8)
        (4, 300, 3),  # kd-tree (K > 1 from 256 targets)
    ],
)
def test_l2_is_bit_identical_to_the_reference_on_exact_inputs(K, P2, D, dtype):
    """The guard that adding L1 left L2 alone: on integer coordinates (in [-2, 2]) and integer
    upstream gradients, every squared distance, product and sum is exact in float32 and
    float64, whatever the order of summation, so the compiled forward and backward must equal
    the pure-torch reference bit for bit (the many exact ties test lowest-index tie breaking)."""
    p1, p2 = make_clouds(3, 250, P2, D, dtype=dtype, seed=K * 100 + P2 + D, integer=True)
    l1, l2 = torch.tensor([250, 97, 0]), torch.tensor([P2, P2 - 1, 5])
    g = torch.randint(-3, 4, (3, 250, K), generator=torch.Generator().manual_seed(1)).to(dtype)
    got, want = [], []
    for fn, out in (
        (lambda a, b: knn_points(a, b, l1, l2, K=K), got),
        (lambda a, b: reference.knn_points_reference(a, b, l1, l2, K), want),
    ):
        a, b = p1.clone().requires_grad_(), p2.clone().requires_grad_()
        dists, idx = fn(a, b)[:2]
        out.extend([dists, idx, *torch.autograd.grad((dists * g).sum(), (a, b))])
    for name, x, y in zip(("dists", "idx", "grad p1", "grad p2"), got, want, strict=True):
        assert x.dtype == y.dtype and torch.equal(x, y), name
    assert bool((got[0] > 0).any()) and bool((got[2] != 0).any())  # not vacuous


@compiled_only
@pytest.mark.skipif(not torch.backends.openmp.is_available(), reason="needs OpenMP threads")
def test_l1_bit_identical_across_thread_counts():
    p1, p2 = make_clouds(4, 1500, 700, 3, seed=13)
    l1, l2 = torch.tensor([1500, 1467, 1, 750]), torch.tensor([700, 695, 0, 700])
    before = torch.get_num_threads()
    runs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for K in (1, 4):
                a, b = p1.clone().requires_grad_(), p2.clone().requires_grad_()
                out = knn_points(a, b, l1, l2, K=K, norm=1)
                w = torch.rand(out.dists.shape, generator=torch.Generator().manual_seed(K))
                runs.append(
                    (out.dists, out.idx, *torch.autograd.grad((out.dists * w).sum(), (a, b)))
                )
    finally:
        torch.set_num_threads(before)
    for one, two in zip(runs[:2], runs[2:]):
        for x, y in zip(one, two):
            assert torch.equal(x, y)


def test_l1_chamfer_matches_brute_force():
    x, y = make_clouds(4, 20, 15, 3, dtype=torch.float64, seed=14)
    xl, yl = torch.tensor([20, 7, 0, 1]), torch.tensor([15, 3, 4, 0])
    a, b = x.clone().requires_grad_(), y.clone().requires_grad_()
    got = chamfer_distance(a, b, xl, yl, norm=1, point_reduction=None, batch_reduction=None)
    want = (
        l1_brute_knn(a, b, xl, yl, 1)[0][..., 0],
        l1_brute_knn(b, a, yl, xl, 1)[0][..., 0],
    )
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    loss = chamfer_distance(x, y, xl, yl, norm=1)
    mean = want[0].sum(1) / xl.clamp_min(1) + want[1].sum(1) / yl.clamp_min(1)
    torch.testing.assert_close(loss, mean.mean().detach())
    ga = torch.autograd.grad(chamfer_distance(a, b, xl, yl, norm=1), a)[0]
    wa = torch.autograd.grad(mean.mean(), a)[0]
    torch.testing.assert_close(ga, wa, rtol=1e-12, atol=1e-12)


def test_norm_argument_errors():
    x, y = make_clouds(2, 5, 6, seed=15)
    for bad in (0, 3, 2.0, True, "l1"):
        with pytest.raises(ValueError, match="norm"):
            knn_points(x, y, norm=bad)
        with pytest.raises(ValueError, match="norm"):
            chamfer_distance(x, y, norm=bad)
    with pytest.raises(ValueError, match="squared"):
        chamfer_distance(x, y, norm=1, squared=False)
    with pytest.raises(ValueError, match="norm"):
        reference.knn_points_reference(x, y, torch.tensor([5, 5]), torch.tensor([6, 6]), 1, 3)


@compiled_only
def test_compiled_op_rejects_a_bad_norm():
    x, y = make_clouds(1, 5, 6, seed=16)
    l1, l2 = torch.tensor([5]), torch.tensor([6])
    with pytest.raises(ValueError, match="norm must be 1 or 2"):
        torch.ops.crfold.knn_forward(x, y, l1, l2, 1, 3)


@compiled_only
def test_l1_traces_fullgraph():
    torch._dynamo.reset()

    def fn(a, b, la, lb):
        return knn_points(a, b, la, lb, K=3, norm=1).dists.sum()

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    x, y = make_clouds(2, 30, 20, seed=17)
    xl, yl = torch.tensor([30, 4]), torch.tensor([20, 0])
    grads = []
    for f in (fn, compiled):
        a, b = x.clone().requires_grad_(), y.clone().requires_grad_()
        out = f(a, b, xl, yl)
        grads.append((out, *torch.autograd.grad(out, (a, b))))
    for e, c in zip(*grads):
        torch.testing.assert_close(c, e)
    torch._dynamo.reset()
