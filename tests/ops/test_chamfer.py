"""crfold.ops.chamfer_distance against a float64 brute force written from the definition."""

from __future__ import annotations

import itertools

import pytest
import torch

from crfold.ops import chamfer_distance, safe_sqrt

from .conftest import brute_chamfer, make_clouds

POINT = ["mean", "sum", "max", None]
BATCH = ["mean", "sum", None]
DIRECTION = ["sum", "max", "mean", None]  # None: PyTorch3D's rule (max for point "max")
XL, YL = [13, 5, 0, 1], [17, 0, 6, 1]  # ragged, with empty and single-point clouds


def ragged_case(device="cpu", dtype=torch.float64, seed=0, grad=False):
    x, y = make_clouds(4, 13, 17, 3, dtype=dtype, device=device, seed=seed)
    if grad:
        x.requires_grad_(), y.requires_grad_()
    return x, y, torch.tensor(XL, device=device), torch.tensor(YL, device=device)


def assert_same(got, want, tol=1e-12):
    """Compare a chamfer result (tensor or per-point tuple) with the brute force's."""
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == 2
        torch.testing.assert_close(got[0].cpu(), want[0], rtol=tol, atol=tol)
        assert (got[1] is None) == (want[1] is None)
        if want[1] is not None:
            torch.testing.assert_close(got[1].cpu(), want[1], rtol=tol, atol=tol)
    else:
        assert got.shape == want.shape
        torch.testing.assert_close(got.cpu(), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("single_directional", [False, True])
@pytest.mark.parametrize("direction_reduction", DIRECTION)
@pytest.mark.parametrize("batch_reduction", BATCH)
@pytest.mark.parametrize("point_reduction", POINT)
def test_every_reduction_combination(
    point_reduction, batch_reduction, direction_reduction, single_directional, devices
):
    kw = dict(
        point_reduction=point_reduction,
        batch_reduction=batch_reduction,
        direction_reduction=direction_reduction,
        single_directional=single_directional,
    )
    for device, squared in itertools.product(devices, (True, False)):
        x, y, xl, yl = ragged_case(device, seed=1)
        if point_reduction is None and batch_reduction is not None:
            with pytest.raises(ValueError, match="batch_reduction"):
                chamfer_distance(x, y, xl, yl, squared=squared, **kw)
            continue
        got = chamfer_distance(x, y, xl, yl, squared=squared, **kw)
        assert_same(got, brute_chamfer(x, y, xl, yl, squared=squared, **kw))
        # Without lengths: every point valid.
        got = chamfer_distance(x, y, squared=squared, **kw)
        assert_same(got, brute_chamfer(x, y, squared=squared, **kw))


def test_per_point_terms_are_zero_at_padding():
    x, y, xl, yl = ragged_case(seed=2)
    tx, ty = chamfer_distance(x, y, xl, yl, point_reduction=None, batch_reduction=None)
    assert tx.shape == (4, 13) and ty.shape == (4, 17)
    for b in range(4):
        assert bool((tx[b, XL[b] :] == 0).all()) and bool((ty[b, YL[b] :] == 0).all())
    assert bool((tx[1] == 0).all()) and bool((ty[2] == 0).all())  # the other cloud is empty


@pytest.mark.parametrize("point_reduction", POINT)
@pytest.mark.parametrize("batch_reduction", BATCH)
def test_weights(point_reduction, batch_reduction):
    if point_reduction is None and batch_reduction is not None:
        pytest.skip("invalid combination, tested above")
    x, y, xl, yl = ragged_case(seed=3)
    w = torch.tensor([0.5, 2.0, 0.0, 1.5], dtype=torch.float64)
    kw = dict(point_reduction=point_reduction, batch_reduction=batch_reduction, weights=w)
    assert_same(chamfer_distance(x, y, xl, yl, **kw), brute_chamfer(x, y, xl, yl, **kw))


def test_weighted_batch_mean_is_sum_wc_over_sum_w():
    x, y, xl, yl = ragged_case(seed=4)
    w = torch.tensor([0.25, 3.0, 1.0, 0.0], dtype=torch.float64)
    c = chamfer_distance(x, y, xl, yl, batch_reduction=None)  # (4,) unweighted
    got = chamfer_distance(x, y, xl, yl, batch_reduction="mean", weights=w)
    torch.testing.assert_close(got, (w * c).sum() / w.sum())
    got = chamfer_distance(x, y, xl, yl, batch_reduction="sum", weights=w)
    torch.testing.assert_close(got, (w * c).sum())
    # Weights all 0: the weighted mean is 0, not 0/0, and the gradient is finite.
    x.requires_grad_()
    zero = chamfer_distance(x, y, xl, yl, weights=torch.zeros(4, dtype=torch.float64))
    zero.backward()
    assert zero.item() == 0 and bool(torch.isfinite(x.grad).all())


@pytest.mark.parametrize("point_reduction", POINT)
@pytest.mark.parametrize("squared", [True, False])
def test_empty_clouds_give_zero_and_no_nan(point_reduction, squared):
    batch = None if point_reduction is None else "mean"
    cases = [
        (4, 5, [0, 0], [0, 0]),
        (4, 5, [0, 3], [2, 0]),
        (0, 5, None, None),
        (4, 0, None, None),
        (0, 0, None, None),
    ]
    for P1, P2, xl, yl in cases:
        x, y = make_clouds(2, P1, P2, dtype=torch.float64, seed=5)
        x.requires_grad_(), y.requires_grad_()
        xl = None if xl is None else torch.tensor(xl)
        yl = None if yl is None else torch.tensor(yl)
        kw = dict(squared=squared, point_reduction=point_reduction, batch_reduction=batch)
        got = chamfer_distance(x, y, xl, yl, **kw)
        terms = got if isinstance(got, tuple) else (got,)
        assert_same(got, brute_chamfer(x, y, xl, yl, **kw))
        total = sum(t.sum() for t in terms)
        assert bool(torch.isfinite(total))
        assert total.item() == 0  # every cloud here is empty or faces an empty one
        if total.requires_grad:
            gx, gy = torch.autograd.grad(total, (x, y), allow_unused=True)
            for g in (gx, gy):
                assert g is None or bool(torch.isfinite(g).all())


def test_empty_batch():
    x, y = make_clouds(0, 4, 5, dtype=torch.float32)
    assert chamfer_distance(x, y).item() == 0
    assert chamfer_distance(x, y, batch_reduction="sum").item() == 0
    assert chamfer_distance(x, y, batch_reduction=None).shape == (0,)


def test_unsquared_gradient_at_coincident_points_is_zero():
    x, _ = make_clouds(2, 30, 1, dtype=torch.float32, seed=6)
    x.requires_grad_()
    y = x.detach().flip(1).clone().requires_grad_()  # the same points, in another order
    for point_reduction in ("mean", "sum", "max"):
        loss = chamfer_distance(x, y, squared=False, point_reduction=point_reduction)
        gx, gy = torch.autograd.grad(loss, (x, y))
        assert loss.item() == 0 and bool((gx == 0).all()) and bool((gy == 0).all())
    # Some coincident points among others: the right value and a finite gradient.
    x2, y2 = make_clouds(1, 20, 25, dtype=torch.float64, seed=7)
    y2[0, :10] = x2[0, :10]
    x2.requires_grad_(), y2.requires_grad_()
    loss = chamfer_distance(x2, y2, squared=False)
    gx, gy = torch.autograd.grad(loss, (x2, y2))
    assert bool(torch.isfinite(gx).all()) and bool(torch.isfinite(gy).all())
    torch.testing.assert_close(loss.detach(), brute_chamfer(x2, y2, squared=False).detach())


def test_safe_sqrt():
    d = torch.tensor([0.0, 4.0, 0.0, 2.25], dtype=torch.float64, requires_grad=True)
    s = safe_sqrt(d)
    (g,) = torch.autograd.grad(s.sum(), d)
    assert s.tolist() == [0.0, 2.0, 0.0, 1.5]
    assert g.tolist() == [0.0, 0.25, 0.0, 1 / 3]


# ---------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("point_reduction", POINT)
def test_gradcheck_float64(point_reduction):
    x, y = make_clouds(4, 6, 7, 3, dtype=torch.float64, seed=8)  # small: gradcheck is O(numel)
    x.requires_grad_(), y.requires_grad_()
    xl, yl = torch.tensor([6, 2, 0, 1]), torch.tensor([7, 0, 3, 1])
    batch = None if point_reduction is None else "mean"
    for squared, direction in ((True, "sum"), (False, "max"), (True, "mean")):
        w = torch.tensor([1.0, 0.5, 2.0, 1.0], dtype=torch.float64)

        def f(a, b, squared=squared, direction=direction, w=w):
            out = chamfer_distance(
                a,
                b,
                xl,
                yl,
                squared=squared,
                point_reduction=point_reduction,
                batch_reduction=batch,
                direction_reduction=direction,
                weights=w,
            )
            return out if isinstance(out, torch.Tensor) else tuple(out)

        assert torch.autograd.gradcheck(f, (x, y), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("point_reduction", ["mean", "sum", "max"])
@pytest.mark.parametrize("direction_reduction", DIRECTION)
def test_gradient_equals_brute_force_autograd(point_reduction, direction_reduction):
    x, y, xl, yl = ragged_case(seed=9, grad=True)
    kw = dict(point_reduction=point_reduction, direction_reduction=direction_reduction)
    got = torch.autograd.grad(chamfer_distance(x, y, xl, yl, **kw), (x, y))
    want = torch.autograd.grad(brute_chamfer(x, y, xl, yl, **kw), (x, y))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_point_max_takes_the_larger_direction_by_default_as_pytorch3d():
    x, y, xl, yl = ragged_case(seed=15)
    tx, ty = chamfer_distance(x, y, xl, yl, point_reduction=None, batch_reduction=None)
    cx, cy = tx.amax(dim=1), ty.amax(dim=1)  # (B,) per-cloud largest terms
    got = chamfer_distance(x, y, xl, yl, point_reduction="max", batch_reduction=None)
    assert torch.equal(got, torch.maximum(cx, cy))
    summed = chamfer_distance(
        x, y, xl, yl, point_reduction="max", batch_reduction=None, direction_reduction="sum"
    )
    assert torch.equal(summed, cx + cy)
    # The other point reductions keep summing the directions by default.
    for pr in ("mean", "sum"):
        default = chamfer_distance(x, y, xl, yl, point_reduction=pr, batch_reduction=None)
        explicit = chamfer_distance(
            x, y, xl, yl, point_reduction=pr, batch_reduction=None, direction_reduction="sum"
        )
        assert torch.equal(default, explicit)


@pytest.mark.parametrize("squared", [True, False])
def test_point_max_gradient_goes_to_the_first_tied_point(squared):
    # x[1] and x[3] tie for the largest term (4 squared, 2 unsquared), x[2] is close behind.
    x = torch.tensor(
        [[[0.0, 0, 0], [2, 0, 0], [0, 1.5, 0], [0, 0, -2]]], dtype=torch.float64, requires_grad=True
    )
    y = torch.zeros(1, 1, 3, dtype=torch.float64, requires_grad=True)
    loss = chamfer_distance(x, y, squared=squared, point_reduction="max", single_directional=True)
    assert loss.item() == (4.0 if squared else 2.0)
    gx, gy = torch.autograd.grad(loss, (x, y))
    want = torch.zeros_like(x)
    want[0, 1, 0] = 4.0 if squared else 1.0  # the whole gradient to x[1], none to x[3]
    assert torch.equal(gx, want)
    assert torch.equal(gy, -want.sum(dim=1, keepdim=True))


def test_gradients_bitwise_identical_on_two_runs():
    x, y = make_clouds(4, 1500, 1200, dtype=torch.float32, seed=10)
    runs = []
    for _ in range(2):
        a, b = x.clone().requires_grad_(), y.clone().requires_grad_()
        loss = chamfer_distance(a, b, torch.tensor([1500, 700, 3, 1500]), squared=False)
        runs.append(torch.autograd.grad(loss, (a, b)))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


# ---------------------------------------------------------------------------- dtypes, layouts


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_close_to_float32(dtype):
    x, y = make_clouds(3, 200, 150, dtype=dtype, seed=11)
    xl = torch.tensor([200, 90, 1])
    tol = 2e-2 if dtype == torch.bfloat16 else 2e-3
    for pr in ("mean", "sum", "max"):
        kw = dict(point_reduction=pr, batch_reduction=None)
        got = chamfer_distance(x, y, xl, **kw)
        assert got.dtype == dtype
        want = chamfer_distance(x.float(), y.float(), xl, **kw)
        torch.testing.assert_close(got.float(), want, rtol=tol, atol=tol)


def test_noncontiguous_and_expanded_inputs():
    g = torch.Generator().manual_seed(12)
    x = torch.randn(3, 3, 30, generator=g, dtype=torch.float64).transpose(1, 2)  # (3, 30, 3)
    y = torch.randn(1, 50, 3, generator=g, dtype=torch.float64)[:, ::2].expand(3, 25, 3)
    xl = torch.tensor([30, 99, 4, 99, 30])[::2]
    assert not x.is_contiguous() and not y.is_contiguous() and not xl.is_contiguous()
    for pr in POINT:
        kw = dict(point_reduction=pr, batch_reduction=None)
        assert_same(chamfer_distance(x, y, xl, **kw), brute_chamfer(x, y, xl, **kw))


# ---------------------------------------------------------------------------- invalid input


def _cd(**kw):
    x, y = make_clouds(2, 4, 5, dtype=torch.float32)
    return lambda: chamfer_distance(x, y, **kw)


def _t(*shape, dtype=torch.float32):
    return torch.zeros(*shape, dtype=dtype)


INVALID = [
    ("point_reduction", _cd(point_reduction="avg"), "point_reduction"),
    ("batch_reduction", _cd(batch_reduction="max"), "batch_reduction"),
    ("direction_reduction", _cd(direction_reduction="min"), "direction_reduction"),
    ("direction bool", _cd(direction_reduction=True), "direction_reduction"),
    ("point None batch mean", _cd(point_reduction=None), "batch_reduction"),
    ("point None batch sum", _cd(point_reduction=None, batch_reduction="sum"), "batch_reduction"),
    ("weights shape", _cd(weights=torch.ones(3)), "weights"),
    ("weights int", _cd(weights=torch.ones(2, dtype=torch.int64)), "weights"),
    ("weights negative", _cd(weights=torch.tensor([1.0, -0.5])), "weights"),
    ("rank x", lambda: chamfer_distance(_t(4, 3), _t(1, 5, 3)), r"\bx\b"),
    ("rank y", lambda: chamfer_distance(_t(1, 4, 3), _t(5, 3)), r"\by\b"),
    ("batch", lambda: chamfer_distance(_t(2, 4, 3), _t(3, 5, 3)), r"batch"),
    ("D", lambda: chamfer_distance(_t(2, 4, 3), _t(2, 5, 2)), r"\bD\b"),
    ("dtype", lambda: chamfer_distance(_t(2, 4, 3), _t(2, 5, 3, dtype=torch.float64)), "dtype"),
    ("int x", lambda: chamfer_distance(_t(2, 4, 3, dtype=torch.int32), _t(2, 5, 3)), r"\bx\b"),
]


@pytest.mark.parametrize(("call", "match"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_input_raises_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _nan_x():
    x, y = make_clouds(2, 4, 5, dtype=torch.float32)
    x[1, 2, 0] = float("nan")
    return x, y


NAMING = [
    ("x_lengths range", lambda: _cd(x_lengths=torch.tensor([5, 1]))(), r"\bx_lengths\b"),
    ("y_lengths range", lambda: _cd(y_lengths=torch.tensor([-1, 1]))(), r"\by_lengths\b"),
    ("x_lengths float", lambda: _cd(x_lengths=torch.tensor([4.0, 1.0]))(), r"\bx_lengths\b"),
    ("nan x", lambda: chamfer_distance(*_nan_x()), r"\bx\b"),
    ("inf y", lambda: chamfer_distance(*reversed(_nan_x())), r"\by\b"),
]


@pytest.mark.parametrize(("call", "match"), [c[1:] for c in NAMING], ids=[c[0] for c in NAMING])
def test_lengths_and_nan_errors_name_chamfer_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call", [c[1] for c in NAMING], ids=[c[0] for c in NAMING])
def test_lengths_and_nan_errors_are_value_errors(call):
    with pytest.raises(ValueError):
        call()


def test_nan_in_padding_does_not_raise():
    x, y = make_clouds(2, 6, 5, dtype=torch.float64, seed=13)
    x[0, 4:] = float("nan")
    y[1, 3:] = float("inf")
    tx, _ = chamfer_distance(
        x, y, torch.tensor([4, 6]), torch.tensor([5, 3]), point_reduction=None, batch_reduction=None
    )
    assert bool(torch.isfinite(tx[:, :4]).all())


def test_nan_in_padding_is_ignored():
    x, y = make_clouds(2, 6, 5, dtype=torch.float64, seed=14)
    xl, yl = torch.tensor([4, 6]), torch.tensor([5, 3])
    xn, yn = x.clone(), y.clone()
    xn[0, 4:], yn[1, 3:] = float("nan"), float("nan")
    x[0, 4:], y[1, 3:] = 0.0, 0.0
    res = []
    for a, b in ((xn, yn), (x, y)):
        a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
        loss = chamfer_distance(a, b, xl, yl)
        res.append((loss, *torch.autograd.grad(loss, (a, b))))
    for got, want in zip(*res):
        assert torch.equal(got, want)
