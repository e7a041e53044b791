"""crfold.ops.knn_points against a float64 brute force and crfold.ops.reference."""

from __future__ import annotations

import os

import pytest
import torch

from crfold.ops import backend, knn_gather, knn_points, reference

from .conftest import brute_knn, check_knn, full_lengths, make_clouds

# Sizes around every plausible tile / block / vector width of the kernels.
BOUNDARY_SIZES = [127, 128, 129, 255, 256, 257, 511, 512, 513, 1023, 1024, 1025]


def ragged(P: int, pattern: list[int]) -> torch.Tensor:
    """(len(pattern),) int64 lengths: entry -1 means ``P``, others are clipped to ``P``."""
    return torch.tensor([P if n < 0 else min(n, P) for n in pattern], dtype=torch.int64)


def ref_knn(p1, p2, lengths1, lengths2, K):
    """crfold.ops.reference on the same inputs (lengths filled in)."""
    l1 = full_lengths(lengths1, p1.shape[0], p1.shape[1]).to(p1.device)
    l2 = full_lengths(lengths2, p2.shape[0], p2.shape[1]).to(p1.device)
    return reference.knn_points_reference(p1, p2, l1, l2, K)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("D", [1, 2, 3, 4, 8, 12])  # 12: past the specialised D
@pytest.mark.parametrize("K", [1, 2, 5, 32])
def test_matches_brute_force_and_reference(K, D, dtype, devices):
    for device in devices:
        p1, p2 = make_clouds(4, 40, 50, D, dtype=dtype, device=device, seed=K * 10 + D)
        l1, l2 = ragged(40, [-1, 17, 1, 0]), ragged(50, [-1, 0, 1, 23])
        out = knn_points(p1, p2, l1.to(device), l2.to(device), K=K)
        exact = dtype == torch.float64
        tol = 1e-12 if exact else 1e-5
        check_knn(out, p1, p2, l1, l2, K, exact_idx=exact, rtol=tol, atol=tol)
        ref_d, ref_i = ref_knn(p1, p2, l1, l2, K)
        assert torch.equal(out.idx, ref_i)
        torch.testing.assert_close(out.dists, ref_d, rtol=tol, atol=tol)
        # Without lengths: every point valid.
        out = knn_points(p1, p2, K=K)
        check_knn(out, p1, p2, None, None, K, exact_idx=exact, rtol=tol, atol=tol)


def test_lengths_zero_and_one_and_k_larger_than_p2():
    p1, p2 = make_clouds(5, 6, 4, dtype=torch.float64, seed=1)
    l1, l2 = torch.tensor([0, 1, 6, 6, 1]), torch.tensor([4, 4, 0, 1, 1])
    out = knn_points(p1, p2, l1, l2, K=6, return_nn=True)
    check_knn(out, p1, p2, l1, l2, K=6)
    # Query cloud 2 has no valid target, cloud 3 exactly one: slots past it are padding.
    assert bool((out.idx[2] == -1).all()) and bool((out.dists[2] == 0).all())
    assert bool((out.idx[3, :, 0] == 0).all()) and bool((out.idx[3, :, 1:] == -1).all())
    assert bool((out.dists[3, :, 1:] == 0).all()) and bool((out.knn[3, :, 1:] == 0).all())
    # Padded queries (past lengths1): dist 0, idx -1, knn 0.
    assert bool((out.idx[0] == -1).all()) and bool((out.idx[1, 1:] == -1).all())
    assert bool((out.dists[1, 1:] == 0).all()) and bool((out.knn[1, 1:] == 0).all())


def test_k_larger_than_p2_without_lengths():
    p1, p2 = make_clouds(2, 7, 3, dtype=torch.float64, seed=2)
    out = knn_points(p1, p2, K=5)
    check_knn(out, p1, p2, K=5)
    assert bool((out.idx[..., 3:] == -1).all()) and bool((out.dists[..., 3:] == 0).all())
    assert bool((out.dists[..., 1:3] >= out.dists[..., 0:2]).all())


def test_padding_values_never_matter():
    p1, p2 = make_clouds(3, 9, 11, dtype=torch.float64, seed=3)
    l1, l2 = torch.tensor([9, 4, 2]), torch.tensor([5, 11, 3])
    a = knn_points(p1, p2, l1, l2, K=4, return_nn=True)
    q, t = p1.clone(), p2.clone()
    for b in range(3):  # huge and tiny values where only padding lives
        q[b, int(l1[b]) :] = 1e6 * (b + 1)
        t[b, int(l2[b]) :] = 0.0
    b_ = knn_points(q, t, l1, l2, K=4, return_nn=True)
    assert torch.equal(a.idx, b_.idx) and torch.equal(a.dists, b_.dists)
    assert torch.equal(a.knn, b_.knn)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("K", [1, 5, 32])
def test_ties_keep_lowest_index(K, dtype):
    # Integer coordinates in [-2, 2]^3: duplicates and equidistant targets everywhere; the
    # arithmetic is exact in every dtype, so the stable-sort order is the only right answer.
    p1, p2 = make_clouds(3, 60, 80, 3, dtype=dtype, seed=K, integer=True)
    l2 = torch.tensor([80, 41, 7])
    out = knn_points(p1, p2, None, l2, K=K)
    check_knn(out, p1, p2, None, l2, K, exact_idx=True, rtol=0, atol=0)


def test_ties_handmade():
    o = [0.0, 0.0, 0.0]
    p2 = torch.tensor([[[2.0, 0, 0], [0, 1, 0], o, [1, 0, 0], o, [0, -1, 0], o, [-1, 0, 0]]])
    p1 = torch.tensor([[o, [0.0, 1, 0]]])
    out = knn_points(p1, p2, K=8)
    assert out.idx[0, 0].tolist() == [2, 4, 6, 1, 3, 5, 7, 0]
    assert out.dists[0, 0].tolist() == [0, 0, 0, 1, 1, 1, 1, 4]
    assert out.idx[0, 1, :4].tolist() == [1, 2, 4, 6]


def test_every_size_from_1_to_70():
    for n in range(1, 71):
        K = 1 + n % 9  # K > n for the smallest sizes
        p1, p2 = make_clouds(2, n, n, 3, dtype=torch.float64, seed=n)
        l2 = torch.tensor([n, max(1, n // 2)])
        check_knn(knn_points(p1, p2, None, l2, K=K), p1, p2, None, l2, K)


@pytest.mark.parametrize("P", BOUNDARY_SIZES)
def test_tile_boundaries(P):
    p1, p2 = make_clouds(2, P, P, 3, dtype=torch.float32, seed=P)
    l1, l2 = torch.tensor([P, 17]), torch.tensor([P - 1, P])
    for K in (1, 3):
        out = knn_points(p1, p2, l1, l2, K=K)
        check_knn(out, p1, p2, l1, l2, K, exact_idx=False, rtol=1e-5, atol=1e-6)
        assert torch.equal(out.idx, ref_knn(p1, p2, l1, l2, K)[1])
    # Few queries against a target cloud of the boundary size, larger K and D (8: the largest
    # specialised D; 12: the generic path).
    for D in (8, 12):
        q, t = make_clouds(1, 37, P, D, dtype=torch.float64, seed=P + D)
        check_knn(knn_points(q, t, K=32), q, t, None, None, 32)


def test_noncontiguous_and_expanded_inputs():
    g = torch.Generator().manual_seed(4)
    base1 = torch.randn(3, 3, 40, generator=g, dtype=torch.float64)
    base2 = torch.randn(3, 90, 3, generator=g, dtype=torch.float64)
    p1 = base1.transpose(1, 2)  # (3, 40, 3), transposed
    p2 = base2[:, ::2]  # (3, 45, 3), strided
    l1, l2 = torch.tensor([40, 31, 7]), torch.tensor([45, 0, 44])
    l1s = torch.tensor([40, 99, 31, 99, 7])[::2]  # non-contiguous lengths: [40, 31, 7]
    assert not p1.is_contiguous() and not p2.is_contiguous() and not l1s.is_contiguous()
    for a, b in ((l1, l2), (l1s, l2)):
        out = knn_points(p1, p2, a, b, K=4)
        check_knn(out, p1, p2, a, b, 4)
        ref = knn_points(p1.contiguous(), p2.contiguous(), a.contiguous(), b, K=4)
        assert torch.equal(out.idx, ref.idx) and torch.equal(out.dists, ref.dists)
    # Expanded (stride-0) batch: every cloud is the same tensor.
    e1 = base1[:1].transpose(1, 2).expand(3, 40, 3)
    e2 = base2[:1].expand(3, 90, 3)
    out = knn_points(e1, e2, None, torch.tensor([90, 5, 1]), K=3)
    check_knn(out, e1, e2, None, torch.tensor([90, 5, 1]), 3)


def test_expanded_inputs_gradient():
    g = torch.Generator().manual_seed(5)
    a = torch.randn(1, 20, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1, 30, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.rand(4, 20, 2, generator=g, dtype=torch.float64)
    (knn_points(a.expand(4, 20, 3), b.expand(4, 30, 3), K=2).dists * w).sum().backward()
    a2, b2 = a.detach().repeat(4, 1, 1), b.detach().repeat(4, 1, 1)
    a2.requires_grad_(), b2.requires_grad_()
    (knn_points(a2, b2, K=2).dists * w).sum().backward()
    torch.testing.assert_close(a.grad, a2.grad.sum(0, keepdim=True))
    torch.testing.assert_close(b.grad, b2.grad.sum(0, keepdim=True))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_matches_float32_of_same_values(dtype):
    p1, p2 = make_clouds(2, 100, 120, 3, dtype=dtype, seed=6)
    l2 = torch.tensor([120, 50])
    p1.requires_grad_(), p2.requires_grad_()
    out = knn_points(p1, p2, None, l2, K=5)
    assert out.dists.dtype == dtype and out.idx.dtype == torch.int64
    q, t = p1.detach().float().requires_grad_(), p2.detach().float().requires_grad_()
    ref = knn_points(q, t, None, l2, K=5)
    assert torch.equal(out.idx, ref.idx)  # computed in float32 on exactly these values
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    torch.testing.assert_close(out.dists.float(), ref.dists, rtol=tol, atol=tol)
    out.dists.sum().backward()
    ref.dists.sum().backward()
    assert p1.grad.dtype == dtype and bool(torch.isfinite(p1.grad).all())
    torch.testing.assert_close(p1.grad.float(), q.grad, rtol=tol, atol=tol)
    torch.testing.assert_close(p2.grad.float(), t.grad, rtol=tol, atol=tol)


def test_return_nn_and_knn_gather():
    p1, p2 = make_clouds(2, 15, 12, 4, dtype=torch.float64, seed=7)
    l1, l2 = torch.tensor([15, 9]), torch.tensor([3, 12])
    p2.requires_grad_()
    out = knn_points(p1, p2, l1, l2, K=5, return_nn=True)
    assert out.knn.shape == (2, 15, 5, 4) and out.knn.dtype == p2.dtype
    for b in range(2):
        for i in range(15):
            for k in range(5):
                j = int(out.idx[b, i, k])
                want = p2[b, j] if j >= 0 else torch.zeros(4, dtype=p2.dtype)
                assert torch.equal(out.knn[b, i, k], want)
    assert torch.equal(knn_gather(p2, out.idx), out.knn)
    assert knn_points(p1, p2, K=2).knn is None
    # knn is differentiable in p2: d(sum knn)/d p2[j] = number of times j was picked.
    out.knn.sum().backward()
    counts = torch.zeros(2, 12, dtype=p2.dtype)
    for b in range(2):
        valid = out.idx[b][out.idx[b] >= 0]
        counts[b] += torch.bincount(valid, minlength=12).to(p2.dtype)
    torch.testing.assert_close(p2.grad, counts[..., None].expand(2, 12, 4))


def test_empty_batch_and_empty_clouds():
    for B, P1, P2 in ((0, 4, 5), (2, 0, 5), (2, 4, 0), (2, 0, 0)):
        p1, p2 = make_clouds(B, P1, P2, dtype=torch.float32, seed=8)
        out = knn_points(p1, p2, K=3, return_nn=True)
        assert out.dists.shape == (B, P1, 3) and out.knn.shape == (B, P1, 3, 3)
        check_knn(out, p1, p2, K=3)


def _large_case(duplicates: bool, seed: int):
    """B=1, P1=2000 queries, P2=30000 targets: past the CPU kernel's kd-tree threshold."""
    g = torch.Generator().manual_seed(seed)
    if not duplicates:
        return torch.rand(1, 2000, 3, generator=g), torch.rand(1, 30000, 3, generator=g)
    # 30000 targets on a 12^3 integer grid: every target has ~17 exact duplicates and many
    # equidistant ones; half the queries sit exactly on targets.
    p2 = torch.randint(0, 12, (1, 30000, 3), generator=g).float()
    q = torch.randint(-1, 13, (1, 1000, 3), generator=g).float()
    return torch.cat([q, p2[:, torch.randperm(30000, generator=g)[:1000]]], dim=1), p2


@pytest.mark.parametrize(
    ("duplicates", "K"),
    [(False, 1), (True, 1), pytest.param(False, 8, marks=pytest.mark.slow)]
    + [pytest.param(True, 4, marks=pytest.mark.slow)],
)
def test_large_cloud_identical_to_brute_force(duplicates, K):
    p1, p2 = _large_case(duplicates, seed=9 + K)
    l2 = torch.tensor([29_999])  # ragged, still far past the threshold
    out = knn_points(p1, p2, None, l2, K=K)
    rows = torch.arange(0, 2000, 7)  # every 7th query, spread over all the kernel's chunks
    want_d, want_i = brute_knn(p1[:, rows], p2, None, l2, K, dtype=torch.float32)
    assert torch.equal(out.idx[:, rows], want_i)
    assert torch.equal(out.dists[:, rows], want_d)  # same float32 arithmetic, bit for bit


def test_backend_is_compiled_when_expected():
    if os.environ.get("CRFOLD_EXPECT_COMPILED") != "1":
        pytest.skip("CRFOLD_EXPECT_COMPILED=1 is not set (CI sets it)")
    assert backend().startswith("compiled"), backend()


# ---------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("K", [1, 3])
def test_gradcheck_float64_ragged(K, devices):
    for device in devices:
        p1, p2 = make_clouds(2, 6, 8, 3, dtype=torch.float64, device=device, seed=10 + K)
        l1 = torch.tensor([6, 3], device=device)
        l2 = torch.tensor([8, 2], device=device)  # K=3 > 2 valid targets in cloud 1
        p1.requires_grad_(), p2.requires_grad_()

        def f(a, b, l1=l1, l2=l2):
            out = knn_points(a, b, l1, l2, K=K, return_nn=True)
            return out.dists, out.knn

        assert torch.autograd.gradcheck(f, (p1, p2), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("K", [1, 4])
def test_gradients_equal_reference_autograd(K, dtype, devices):
    for device in devices:
        # Many queries per target: the p2 gradient accumulates over many contributions.
        p1, p2 = make_clouds(3, 300, 20, 3, dtype=dtype, device=device, seed=20 + K)
        l1 = torch.tensor([300, 120, 0], device=device)
        l2 = torch.tensor([20, 3, 20], device=device)
        w = torch.rand(3, 300, K, dtype=dtype, generator=torch.Generator().manual_seed(K))
        w = w.to(device)
        grads = []
        for fn in (knn_points, ref_knn):
            a, b = p1.clone().requires_grad_(), p2.clone().requires_grad_()
            d = fn(a, b, l1, l2, K=K)[0]
            grads.append(torch.autograd.grad((d * w).sum(), (a, b)))
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        for got, want in zip(*grads):
            torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def test_gradients_bitwise_identical_on_two_runs():
    p1, p2 = make_clouds(2, 3000, 64, 3, dtype=torch.float32, seed=30)
    w = torch.rand(2, 3000, 8, generator=torch.Generator().manual_seed(30))
    runs = []
    for _ in range(2):
        a, b = p1.clone().requires_grad_(), p2.clone().requires_grad_()
        d = knn_points(a, b, None, torch.tensor([64, 50]), K=8).dists
        runs.append(torch.autograd.grad((d * w).sum(), (a, b)))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


# ---------------------------------------------------------------------------- invalid input


def _t(*shape, dtype=torch.float32):
    return torch.zeros(*shape, dtype=dtype)


def _nan_at(shape, where, value=float("nan")):
    t = torch.randn(*shape)
    t[where] = value
    return t


INVALID = [
    ("rank p1", lambda: knn_points(_t(4, 3), _t(1, 4, 3)), r"\bp1\b.*\(B, P, D\)"),
    ("rank p2", lambda: knn_points(_t(1, 4, 3), _t(1, 1, 4, 3)), r"\bp2\b.*\(B, P, D\)"),
    ("batch", lambda: knn_points(_t(2, 4, 3), _t(3, 4, 3)), r"p1 and p2 batch"),
    ("D", lambda: knn_points(_t(2, 4, 3), _t(2, 4, 2)), r"p1 and p2 dimensions D"),
    ("dtype", lambda: knn_points(_t(2, 4, 3), _t(2, 4, 3, dtype=torch.float64)), r"dtype"),
    ("int p1", lambda: knn_points(_t(2, 4, 3, dtype=torch.int64), _t(2, 4, 3)), r"\bp1\b"),
    ("int p2", lambda: knn_points(_t(2, 4, 3), _t(2, 4, 3, dtype=torch.int32)), r"\bp2\b"),
    ("bool p1", lambda: knn_points(_t(2, 4, 3, dtype=torch.bool), _t(2, 4, 3)), r"\bp1\b"),
    ("len1 > P1", lambda: knn_points(_t(2, 4, 3), _t(2, 5, 3), torch.tensor([5, 1])), "lengths1"),
    ("len1 < 0", lambda: knn_points(_t(2, 4, 3), _t(2, 5, 3), torch.tensor([-1, 1])), "lengths1"),
    (
        "len2 > P2",
        lambda: knn_points(_t(2, 4, 3), _t(2, 5, 3), None, torch.tensor([6, 1])),
        "lengths2",
    ),
    (
        "len2 < 0",
        lambda: knn_points(_t(2, 4, 3), _t(2, 5, 3), None, torch.tensor([0, -2])),
        "lengths2",
    ),
    (
        "len1 shape",
        lambda: knn_points(_t(2, 4, 3), _t(2, 5, 3), torch.tensor([[4], [4]])),
        "lengths1",
    ),
    ("len1 B", lambda: knn_points(_t(2, 4, 3), _t(2, 5, 3), torch.tensor([4, 4, 4])), "lengths1"),
    (
        "len2 float",
        lambda: knn_points(_t(2, 4, 3), _t(2, 5, 3), None, torch.tensor([5.0, 5.0])),
        "lengths2",
    ),
    (
        "len1 bool",
        lambda: knn_points(_t(2, 4, 3), _t(2, 5, 3), torch.tensor([True, True])),
        "lengths1",
    ),
    ("len1 list", lambda: knn_points(_t(2, 4, 3), _t(2, 5, 3), [4, 4]), "lengths1"),
    ("K=0", lambda: knn_points(_t(2, 4, 3), _t(2, 5, 3), K=0), r"\bK\b"),
    ("K<0", lambda: knn_points(_t(2, 4, 3), _t(2, 5, 3), K=-3), r"\bK\b"),
    ("K float", lambda: knn_points(_t(2, 4, 3), _t(2, 5, 3), K=2.0), r"\bK\b"),
    ("K bool", lambda: knn_points(_t(2, 4, 3), _t(2, 5, 3), K=True), r"\bK\b"),
    ("nan p1", lambda: knn_points(_nan_at((2, 4, 3), (1, 2, 0)), _t(2, 5, 3)), r"\bp1\b"),
    (
        "inf p2",
        lambda: knn_points(_t(2, 4, 3), _nan_at((2, 5, 3), (0, 4, 2), float("inf"))),
        r"\bp2\b",
    ),
    (
        "-inf p1",
        lambda: knn_points(_nan_at((2, 4, 3), (0, 0, 1), -float("inf")), _t(2, 5, 3)),
        r"\bp1\b",
    ),
    (
        "nan p2 ragged",
        lambda: knn_points(_t(2, 4, 3), _nan_at((2, 5, 3), (1, 2, 2)), None, torch.tensor([5, 3])),
        r"\bp2\b",
    ),
]


@pytest.mark.parametrize(("call", "match"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_input_raises_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_nan_in_padding_does_not_raise_and_valid_outputs_are_right():
    p1, p2 = make_clouds(2, 5, 6, dtype=torch.float64, seed=40)
    l1, l2 = torch.tensor([3, 5]), torch.tensor([6, 2])
    q, t = p1.clone(), p2.clone()
    q[0, 3:] = float("nan")
    t[1, 2:] = float("nan")
    out = knn_points(q, t, l1, l2, K=2)
    assert torch.equal(out.idx, knn_points(p1, p2, l1, l2, K=2).idx)
    rows = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    torch.testing.assert_close(out.dists[rows], brute_knn(p1, p2, l1, l2, 2)[0][rows])


def test_nan_in_padding_is_ignored():
    p1, p2 = make_clouds(3, 5, 6, dtype=torch.float64, seed=41)
    l1, l2 = torch.tensor([3, 5, 5]), torch.tensor([6, 2, 0])
    q, t = p1.clone(), p2.clone()
    for b in range(3):
        q[b, int(l1[b]) :] = float("nan")
        t[b, int(l2[b]) :] = float("nan")
        p1[b, int(l1[b]) :] = 0
        p2[b, int(l2[b]) :] = 0
    grads = []
    for a, b in ((q, t), (p1, p2)):
        a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
        out = knn_points(a, b, l1, l2, K=3, return_nn=True)
        g = torch.autograd.grad(out.dists.sum() + out.knn.sum(), (a, b))
        grads.append((out.dists, out.idx, out.knn, *g))
    for got, want in zip(*grads):
        assert torch.equal(got, want)
