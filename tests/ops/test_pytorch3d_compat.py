"""crfold.ops.pytorch3d, the PyTorch3D drop-in, against naive float64 implementations of
PyTorch3D's documented semantics (written here, in the style of PyTorch3D's own tests:
``_knn_points_naive`` and a per-cloud loop Chamfer).

The naive versions loop over clouds, build dense distance matrices in float64 and apply
PyTorch3D's conventions directly: padded slots ``dists 0, idx 0``; ``knn_gather`` zeros the
slots ``k >= lengths``; Chamfer terms multiplied by the cloud's weight, 0 at padding; the normal
term ``1 - |cos|`` (or ``1 - cos``) with the nearest neighbour's normal, a zero normal where the
other cloud is empty. pytorch3d itself is not needed (its own parity checks are in
test_pytorch3d_parity.py, which runs where it is installed).
"""

from __future__ import annotations

import inspect

import pytest
import torch

from crfold.ops.pytorch3d import chamfer_distance, knn_gather, knn_points

from .conftest import make_clouds

# ---------------------------------------------------------------------------- naive oracles


def _lengths(lengths, B, P):
    if lengths is None:
        return [P] * B
    return [int(v) for v in lengths]


def naive_dist(a: torch.Tensor, b: torch.Tensor, norm: int) -> torch.Tensor:
    """(n1, n2) distances of a (n1, D) and b (n2, D): squared L2 or L1, differentiable."""
    diff = a[:, None, :] - b[None, :, :]
    return (diff * diff).sum(-1) if norm == 2 else diff.abs().sum(-1)


def naive_knn(p1, p2, lengths1=None, lengths2=None, K=1, norm=2):
    """PyTorch3D's knn_points semantics in float64: ``(dists, idx, knn)`` with 0 padding, ties by
    the lowest index; ``dists`` and ``knn`` differentiable in p1/p2 (float64 copies of them are
    used when those already are float64 leaves)."""
    B, P1, D = p1.shape
    P2 = p2.shape[1]
    l1, l2 = _lengths(lengths1, B, P1), _lengths(lengths2, B, P2)
    dists = [[None] * P1 for _ in range(B)]
    idx = torch.zeros(B, P1, K, dtype=torch.int64)
    for b in range(B):
        n1, n2 = l1[b], l2[b]
        for i in range(P1):
            row = torch.zeros(K, dtype=p1.dtype)
            if i < n1 and n2 > 0:
                d = naive_dist(p1[b, i : i + 1], p2[b, :n2], norm)[0]  # (n2,)
                order = torch.argsort(d.detach(), stable=True)[: min(K, n2)]
                idx[b, i, : order.numel()] = order
                row = torch.cat([d[order], d.new_zeros(K - order.numel())])
            dists[b][i] = row
    dists = torch.stack([torch.stack(r) for r in dists]) if B and P1 else p1.new_zeros(B, P1, K)
    return dists, idx, naive_gather(p2, idx, lengths2)


def naive_gather(x, idx, lengths=None):
    """``x[b, idx[b, l, k]]`` with 0 where ``k >= lengths[b]`` (PyTorch3D's knn_gather)."""
    B, M, U = x.shape
    L, K = idx.shape[1:]
    ln = _lengths(lengths, B, M)
    rows = []
    for b in range(B):
        for i in range(L):
            for k in range(K):
                rows.append(x[b, idx[b, i, k]] if k < ln[b] else x.new_zeros(U))
    return torch.stack(rows).reshape(B, L, K, U) if rows else x.new_zeros(B, L, K, U)


def _cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Cosine similarity along the last dimension; 0 when either vector is 0."""
    na, nb = a.norm(dim=-1), b.norm(dim=-1)
    return (a * b).sum(-1) / (na.clamp_min(eps) * nb.clamp_min(eps))


def naive_chamfer_direction(x, y, lx, ly, xn, yn, w, point_reduction, norm, abs_cosine):
    """One direction, per cloud: (list of per-cloud terms or reductions, same for normals)."""
    B = x.shape[0]
    terms, nterms = [], []
    for b in range(B):
        n1, n2 = lx[b], ly[b]
        t = x.new_zeros(x.shape[1])
        tn = x.new_zeros(x.shape[1])
        if n1 > 0 and n2 > 0:
            d = naive_dist(x[b, :n1], y[b, :n2], norm)  # (n1, n2)
            j = torch.argmin(d.detach(), dim=1)  # first minimum: lowest index
            t = torch.cat([d[torch.arange(n1), j], x.new_zeros(x.shape[1] - n1)])
            if xn is not None:
                c = _cosine(xn[b, :n1], yn[b, j])
                c = c.abs() if abs_cosine else c
                tn = torch.cat([1 - c, x.new_zeros(x.shape[1] - n1)])
        elif n1 > 0 and xn is not None:  # empty y cloud: zero neighbour normal, term 1
            tn = torch.cat([x.new_ones(n1), x.new_zeros(x.shape[1] - n1)])
        wb = 1.0 if w is None else w[b]
        t, tn = t * wb, tn * wb
        if point_reduction == "max":
            t = t.max() if t.numel() else t.new_zeros(())
        elif point_reduction in ("sum", "mean"):
            t, tn = t.sum(), tn.sum()
            if point_reduction == "mean":
                t, tn = t / max(n1, 1), tn / max(n1, 1)
        terms.append(t)
        nterms.append(tn)
    return torch.stack(terms), torch.stack(nterms)


def naive_chamfer(
    x,
    y,
    x_lengths=None,
    y_lengths=None,
    x_normals=None,
    y_normals=None,
    weights=None,
    batch_reduction="mean",
    point_reduction="mean",
    norm=2,
    single_directional=False,
    abs_cosine=True,
):
    """PyTorch3D's chamfer_distance semantics by per-cloud loops (differentiable)."""
    B = x.shape[0]
    lx, ly = _lengths(x_lengths, B, x.shape[1]), _lengths(y_lengths, B, y.shape[1])
    normals = x_normals is not None and y_normals is not None
    xn, yn = (x_normals, y_normals) if normals else (None, None)
    args = (weights, point_reduction, norm, abs_cosine)
    cx, nx = naive_chamfer_direction(x, y, lx, ly, xn, yn, *args)
    if single_directional:
        loss, loss_n = cx, nx
    else:
        cy, ny = naive_chamfer_direction(y, x, ly, lx, yn, xn, *args)
        if point_reduction == "max":
            loss, loss_n = torch.maximum(cx, cy), None
        elif point_reduction is None:
            loss, loss_n = (cx, cy), (nx, ny)
        else:
            loss, loss_n = cx + cy, nx + ny
    if not normals or point_reduction == "max":
        loss_n = None
    if batch_reduction is not None:
        loss = loss.sum()
        loss_n = None if loss_n is None else loss_n.sum()
        if batch_reduction == "mean":
            div = B if weights is None else float(weights.sum())
            div = div if div > 0 else 1.0
            loss = loss / div
            loss_n = None if loss_n is None else loss_n / div
    return loss, loss_n


class FakePointclouds:
    """The methods of pytorch3d.structures.Pointclouds that the drop-in reads."""

    def __init__(self, points, lengths, normals=None):
        self._points, self._lengths, self._normals = points, lengths, normals

    def points_padded(self):
        return self._points

    def num_points_per_cloud(self):
        return self._lengths

    def normals_padded(self):
        return self._normals


def _assert_tree_close(got, want, **tol):
    if want is None:
        assert got is None
    elif isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, **tol)
    else:
        assert isinstance(got, torch.Tensor)
        torch.testing.assert_close(got, want, **tol)


def _leaves(t):
    if t is None:
        return []
    return list(t) if isinstance(t, tuple) else [t]


def _ragged_case(seed=0, dtype=torch.float64, D=3):
    """Ragged batch: full, partial, single-point and empty clouds on both sides."""
    x, y = make_clouds(4, 12, 9, D, dtype=dtype, seed=seed)
    xl, yl = torch.tensor([12, 5, 1, 0]), torch.tensor([9, 2, 0, 4])
    return x, y, xl, yl


# ---------------------------------------------------------------------------- signatures


def test_signatures_and_defaults_are_pytorch3ds():
    def params(fn):
        return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]

    e = inspect.Parameter.empty
    assert params(knn_points) == [
        ("p1", e), ("p2", e), ("lengths1", None), ("lengths2", None), ("norm", 2), ("K", 1),
        ("version", -1), ("return_nn", False), ("return_sorted", True),
    ]  # fmt: skip
    assert params(knn_gather) == [("x", e), ("idx", e), ("lengths", None)]
    assert params(chamfer_distance) == [
        ("x", e), ("y", e), ("x_lengths", None), ("y_lengths", None), ("x_normals", None),
        ("y_normals", None), ("weights", None), ("batch_reduction", "mean"),
        ("point_reduction", "mean"), ("norm", 2), ("single_directional", False),
        ("abs_cosine", True),
    ]  # fmt: skip
    # Every parameter can be passed positionally, as in PyTorch3D.
    kinds = {p.kind for fn in (knn_points, knn_gather, chamfer_distance)
             for p in inspect.signature(fn).parameters.values()}  # fmt: skip
    assert kinds == {inspect.Parameter.POSITIONAL_OR_KEYWORD}


def test_knn_result_type_and_positional_call():
    x, y, xl, yl = _ragged_case()
    out = knn_points(x, y, xl, yl, 1, 3, -1, True, True)  # PyTorch3D's positional order
    assert type(out).__name__ == "KNN" and out._fields == ("dists", "idx", "knn")
    dists, idx, nn = out  # unpacks as a tuple
    assert dists.shape == (4, 12, 3) and dists.dtype == torch.float64
    assert idx.shape == (4, 12, 3) and idx.dtype == torch.int64
    assert nn.shape == (4, 12, 3, 3)
    assert knn_points(x, y, K=2).knn is None


# ---------------------------------------------------------------------------- knn_points


@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("K", [1, 3, 8])  # 8 > P2 of some clouds (and of all, ragged: 9, 2, 0, 4)
@pytest.mark.parametrize("ragged", [False, True])
def test_knn_points_matches_naive(norm, K, ragged):
    x, y, xl, yl = _ragged_case(seed=K + norm)
    if not ragged:
        xl = yl = None
    out = knn_points(x, y, xl, yl, norm=norm, K=K, return_nn=True)
    want_d, want_i, want_nn = naive_knn(x, y, xl, yl, K, norm)
    assert torch.equal(out.idx, want_i)
    torch.testing.assert_close(out.dists, want_d, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.knn, want_nn, rtol=0, atol=0)


@pytest.mark.parametrize("norm", [1, 2])
def test_knn_points_float32_square_batch(norm):
    x, y = make_clouds(3, 100, 70, 3, dtype=torch.float32, seed=5)
    out = knn_points(x, y, norm=norm, K=5, return_nn=True)
    want_d, want_i, _ = naive_knn(x.double(), y.double(), K=5, norm=norm)
    assert torch.equal(out.idx, want_i)
    torch.testing.assert_close(out.dists.double(), want_d, rtol=1e-5, atol=1e-5)
    assert torch.equal(out.knn, naive_gather(y, out.idx))  # the gather of the (checked) idx


def test_padding_values_are_pytorch3ds():
    x, y, xl, yl = _ragged_case(seed=1)
    out = knn_points(x, y, xl, yl, K=6, return_nn=True)
    # Cloud 1: 5 valid queries, 2 targets -> slots 2.. are padding: dist 0, idx 0, knn 0.
    assert bool((out.idx[1, :, 2:] == 0).all()) and bool((out.dists[1, :, 2:] == 0).all())
    assert bool((out.knn[1, :, 2:] == 0).all())
    # Padded queries of cloud 1 (5..11): dists 0 and idx 0; knn holds y[1, 0] in the slots
    # below the cloud's length (what knn_gather(p2, idx, lengths2) gives, as in PyTorch3D).
    assert bool((out.idx[1, 5:] == 0).all()) and bool((out.dists[1, 5:] == 0).all())
    assert torch.equal(out.knn[1, 5:, :2], y[1, 0].expand(7, 2, 3))
    # Cloud 2: no target at all; cloud 3: no query at all.
    assert bool((out.idx[2] == 0).all()) and bool((out.dists[2] == 0).all())
    assert bool((out.knn[2] == 0).all())
    assert bool((out.idx[3] == 0).all()) and bool((out.dists[3] == 0).all())
    # K > P2 without lengths.
    out = knn_points(x[:, :, :], y[:, :4], K=7, return_nn=True)
    assert bool((out.idx[..., 4:] == 0).all()) and bool((out.dists[..., 4:] == 0).all())
    assert bool((out.knn[..., 4:, :] == 0).all())


def test_return_sorted_false_and_version_are_accepted():
    x, y, xl, yl = _ragged_case(seed=2)
    ref = knn_points(x, y, xl, yl, K=4)
    for kwargs in ({"return_sorted": False}, {"version": 0}, {"version": 3}):
        out = knn_points(x, y, xl, yl, K=4, **kwargs)
        assert torch.equal(out.idx, ref.idx) and torch.equal(out.dists, ref.dists)
    # Sorted is one valid order of an unsorted result.
    valid = out.dists[0]
    assert bool((valid[:, 1:] >= valid[:, :-1]).all())


@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_knn_gradients_match_float64_naive(norm, dtype):
    x, y, xl, yl = _ragged_case(seed=3 + norm, dtype=dtype)
    w = torch.rand(4, 12, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a, b = x.clone().requires_grad_(), y.clone().requires_grad_()
    out = knn_points(a, b, xl, yl, norm=norm, K=3, return_nn=True)
    loss = (out.dists.double() * w).sum() + out.knn.double().sum()
    ga, gb = torch.autograd.grad(loss, (a, b))
    a64, b64 = x.double().requires_grad_(), y.double().requires_grad_()
    d, _, nn = naive_knn(a64, b64, xl, yl, 3, norm)
    wa, wb = torch.autograd.grad((d * w).sum() + nn.sum(), (a64, b64))
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(ga.double(), wa, rtol=tol, atol=tol)
    torch.testing.assert_close(gb.double(), wb, rtol=tol, atol=tol)


@pytest.mark.parametrize("norm", [1, 2])
def test_knn_gradcheck_float64(norm):
    x, y = make_clouds(2, 5, 6, 3, dtype=torch.float64, seed=7)
    xl, yl = torch.tensor([5, 2]), torch.tensor([6, 1])
    x.requires_grad_(), y.requires_grad_()

    def f(a, b):
        out = knn_points(a, b, xl, yl, norm=norm, K=2, return_nn=True)
        return out.dists, out.knn

    assert torch.autograd.gradcheck(f, (x, y), eps=1e-6, atol=1e-7)


def test_l1_gradient_is_zero_where_coordinates_coincide():
    # sign(0) = 0: a coordinate equal to its neighbour's gets no gradient (crfold's convention).
    x = torch.tensor([[[1.0, 2.0, 3.0]]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[[1.0, 0.0, 5.0]]], dtype=torch.float64, requires_grad=True)
    gx, gy = torch.autograd.grad(knn_points(x, y, norm=1).dists.sum(), (x, y))
    assert gx.tolist() == [[[0.0, 1.0, -1.0]]] and gy.tolist() == [[[0.0, -1.0, 1.0]]]


def test_knn_points_rejects_bad_arguments():
    x, y, xl, yl = _ragged_case()
    with pytest.raises(ValueError, match="norm"):
        knn_points(x, y, norm=3)
    with pytest.raises(ValueError, match=r"\bK\b"):
        knn_points(x, y, K=0)
    with pytest.raises(ValueError, match="batch"):
        knn_points(x, y[:2])
    with pytest.raises(ValueError, match="lengths1"):
        knn_points(x, y, torch.tensor([13, 1, 1, 1]))
    bad = x.clone()
    bad[1, 3, 0] = float("nan")
    with pytest.raises(ValueError, match=r"p1.*non-finite"):
        knn_points(bad, y, xl, yl)
    bad[1, 3, 0] = 0.0
    bad[1, 7, 0] = float("nan")  # padding of cloud 1 (5 points): may hold anything
    assert torch.equal(knn_points(bad, y, xl, yl, K=2).idx, knn_points(x, y, xl, yl, K=2).idx)


def test_knn_points_takes_a_pointclouds():
    x, y, xl, yl = _ragged_case(seed=8)
    want = knn_points(x, y, xl, yl, K=2, return_nn=True)
    normals = torch.randn_like(y)  # ignored by kNN
    out = knn_points(FakePointclouds(x, xl), FakePointclouds(y, yl, normals), K=2, return_nn=True)
    for got, ref in zip(out, want):
        assert torch.equal(got, ref)
    with pytest.raises(ValueError, match="lengths of p1"):
        knn_points(FakePointclouds(x, xl), y, xl)


# ---------------------------------------------------------------------------- knn_gather


def test_knn_gather_semantics_and_gradient():
    g = torch.Generator().manual_seed(9)
    x = torch.randn(3, 6, 5, generator=g, dtype=torch.float64, requires_grad=True)  # U = 5 != D
    idx = torch.randint(0, 6, (3, 4, 3), generator=g)
    lengths = torch.tensor([6, 2, 0])
    for ln in (None, lengths):
        out = knn_gather(x, idx, ln)
        assert out.shape == (3, 4, 3, 5)
        torch.testing.assert_close(out, naive_gather(x, idx, ln), rtol=0, atol=0)
    assert bool((out[1, :, 2:] == 0).all()) and bool((out[2] == 0).all())
    w = torch.randn(3, 4, 3, 5, generator=g, dtype=torch.float64)
    (gx,) = torch.autograd.grad((knn_gather(x, idx, lengths) * w).sum(), x)
    (want,) = torch.autograd.grad((naive_gather(x, idx, lengths) * w).sum(), x)
    torch.testing.assert_close(gx, want)
    nan = x.detach().clone()
    nan[1, 3:] = float("nan")  # past cloud 1's length, never gathered in its valid slots
    assert not bool(torch.isnan(knn_gather(nan, idx.clamp_max(2), lengths)[1]).any())


def test_knn_gather_rejects_bad_arguments():
    x = torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match="idx must lie"):
        knn_gather(x, torch.full((2, 1, 1), 4))
    with pytest.raises(ValueError, match="idx must lie"):
        knn_gather(x, torch.full((2, 1, 1), -1))
    with pytest.raises(ValueError, match="batch"):
        knn_gather(x, torch.zeros(3, 1, 1, dtype=torch.int64))
    with pytest.raises(ValueError, match="integer"):
        knn_gather(x, torch.zeros(2, 1, 1))
    with pytest.raises(ValueError, match="lengths"):
        knn_gather(x, torch.zeros(2, 1, 1, dtype=torch.int64), torch.tensor([5, 1]))
    assert knn_gather(x[:, :0], torch.zeros(2, 3, 2, dtype=torch.int64)).shape == (2, 3, 2, 3)


# ---------------------------------------------------------------------------- chamfer_distance

REDUCTIONS = [(p, b) for p in ("mean", "sum", "max") for b in ("mean", "sum", None)]
REDUCTIONS += [(None, None)]


@pytest.mark.parametrize(("point_reduction", "batch_reduction"), REDUCTIONS)
@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("single_directional", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_chamfer_matches_naive(
    point_reduction, batch_reduction, norm, single_directional, weighted
):
    seed = len(str(point_reduction)) + 3 * norm + single_directional
    x, y, xl, yl = _ragged_case(seed=seed)
    g = torch.Generator().manual_seed(seed)
    xn = torch.randn(4, 12, 3, generator=g, dtype=torch.float64)
    yn = torch.randn(4, 9, 3, generator=g, dtype=torch.float64)
    if point_reduction == "max":  # PyTorch3D takes no normals with "max"
        xn = yn = None
    w = torch.tensor([0.5, 2.0, 1.0, 0.0], dtype=torch.float64) if weighted else None
    leaves = [t.clone().requires_grad_() for t in (x, y)]
    leaves += [None if n is None else n.clone().requires_grad_() for n in (xn, yn)]
    kwargs = dict(
        weights=w,
        batch_reduction=batch_reduction,
        point_reduction=point_reduction,
        norm=norm,
        single_directional=single_directional,
    )
    got = chamfer_distance(leaves[0], leaves[1], xl, yl, leaves[2], leaves[3], **kwargs)
    ref_leaves = [None if t is None else t.detach().clone().requires_grad_() for t in leaves]
    want = naive_chamfer(
        ref_leaves[0], ref_leaves[1], xl, yl, ref_leaves[2], ref_leaves[3], **kwargs
    )
    assert isinstance(got, tuple) and len(got) == 2
    for g_, w_ in zip(got, want):
        _assert_tree_close(g_, w_, rtol=1e-12, atol=1e-12)
    if point_reduction is None:
        assert isinstance(got[0], torch.Tensor if single_directional else tuple)
    # Gradients of every output with respect to the points and the normals.
    outs = _leaves(got[0]) + _leaves(got[1])
    ref_outs = _leaves(want[0]) + _leaves(want[1])
    wts = [torch.rand(o.shape, generator=g, dtype=torch.float64) for o in outs]
    inputs = [t for t in leaves if t is not None]
    ref_inputs = [t for t in ref_leaves if t is not None]
    grads = torch.autograd.grad(sum((o * v).sum() for o, v in zip(outs, wts)), inputs)
    ref = torch.autograd.grad(sum((o * v).sum() for o, v in zip(ref_outs, wts)), ref_inputs)
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("abs_cosine", [True, False])
def test_normal_term_abs_cosine_both_ways(abs_cosine):
    x, y = make_clouds(2, 8, 10, 3, dtype=torch.float64, seed=11)
    g = torch.Generator().manual_seed(11)
    xn = torch.randn(2, 8, 3, generator=g, dtype=torch.float64)
    yn = torch.randn(2, 10, 3, generator=g, dtype=torch.float64)
    loss, loss_n = chamfer_distance(x, y, x_normals=xn, y_normals=yn, abs_cosine=abs_cosine)
    want = naive_chamfer(x, y, x_normals=xn, y_normals=yn, abs_cosine=abs_cosine)
    torch.testing.assert_close(loss, want[0])
    torch.testing.assert_close(loss_n, want[1])
    _, flipped = chamfer_distance(x, y, x_normals=xn, y_normals=-yn, abs_cosine=abs_cosine)
    if abs_cosine:  # orientation ignored
        torch.testing.assert_close(flipped, loss_n)
    else:  # 1 - cos becomes 1 + cos: the two sum to 2 per point, 4 per cloud over directions
        torch.testing.assert_close(flipped + loss_n, torch.tensor(4.0, dtype=torch.float64))
    # Same normals on both sides of identical clouds: no loss at all.
    loss, loss_n = chamfer_distance(x, x, x_normals=xn, y_normals=xn, abs_cosine=abs_cosine)
    assert float(loss) == 0.0 and abs(float(loss_n)) < 1e-12


def test_one_sided_normals_give_no_normal_loss():
    x, y, xl, yl = _ragged_case(seed=12)
    loss, loss_n = chamfer_distance(x, y, xl, yl, x_normals=torch.randn(4, 12, 3).double())
    assert loss_n is None
    torch.testing.assert_close(loss, chamfer_distance(x, y, xl, yl)[0])


def test_max_takes_the_larger_direction():
    x = torch.tensor([[[0.0, 0.0], [1.0, 0.0]]])
    y = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]]])  # y -> x max: 16, x -> y max: 0
    loss, loss_n = chamfer_distance(x, y, point_reduction="max")
    assert float(loss) == 16.0 and loss_n is None
    assert float(chamfer_distance(x, y, point_reduction="max", norm=1)[0]) == 4.0
    assert float(chamfer_distance(x, y, point_reduction="max", single_directional=True)[0]) == 0.0


def test_empty_and_ragged_clouds_give_no_nan():
    x, y, xl, yl = _ragged_case(seed=13)
    xn, yn = torch.randn_like(x), torch.randn_like(y)
    for pr, br in REDUCTIONS:
        n = (None, None) if pr == "max" else (xn, yn)
        loss, loss_n = chamfer_distance(x, y, xl, yl, *n, point_reduction=pr, batch_reduction=br)
        for t in _leaves(loss) + _leaves(loss_n):
            assert bool(torch.isfinite(t).all())
    # A point whose other cloud is empty: distance term 0, normal term 1 (a zero neighbour
    # normal, as PyTorch3D's knn_gather gives).
    (cx, cy), (nx, ny) = chamfer_distance(
        x, y, xl, yl, xn, yn, point_reduction=None, batch_reduction=None
    )
    assert bool((cx[2, :1] == 0).all()) and bool((nx[2, :1] == 1).all())  # y[2] is empty
    assert bool((cy[3, :4] == 0).all()) and bool((ny[3, :4] == 1).all())  # x[3] is empty
    assert bool((cx[1, 5:] == 0).all()) and bool((nx[1, 5:] == 0).all())  # padding


def test_weights_all_zero():
    x, y, xl, yl = _ragged_case(seed=14)
    a, b = x.clone().requires_grad_(), y.clone().requires_grad_()
    loss, loss_n = chamfer_distance(a, b, xl, yl, weights=torch.zeros(4, dtype=torch.float64))
    assert float(loss.detach()) == 0.0 and loss_n is None
    ga, gb = torch.autograd.grad(loss, (a, b))
    assert not bool(ga.any()) and not bool(gb.any())
    _, loss_n = chamfer_distance(x, y, xl, yl, torch.randn_like(x), torch.randn_like(y),
                                 torch.zeros(4, dtype=torch.float64))  # fmt: skip
    assert float(loss_n) == 0.0


def test_pointclouds_input_with_normals():
    x, y, xl, yl = _ragged_case(seed=15)
    xn, yn = torch.randn_like(x), torch.randn_like(y)
    want = chamfer_distance(x, y, xl, yl, xn, yn)
    pcx, pcy = FakePointclouds(x, xl, xn), FakePointclouds(y, yl, yn)
    got = chamfer_distance(pcx, pcy)
    _assert_tree_close(got, want)
    # As in PyTorch3D, a Pointclouds' own lengths and normals win over the arguments.
    again = chamfer_distance(pcx, pcy, torch.tensor([1, 1, 1, 1]), None, torch.zeros_like(xn))
    _assert_tree_close(again, want)
    # Without normals in one Pointclouds there is no normal term.
    assert chamfer_distance(FakePointclouds(x, xl), pcy)[1] is None
    # Mixed: a Pointclouds and a tensor with its normals.
    mixed = chamfer_distance(pcx, y, y_lengths=yl, y_normals=yn)
    torch.testing.assert_close(mixed[1], want[1])
    with pytest.raises(ValueError, match="max"):
        chamfer_distance(pcx, pcy, point_reduction="max")
    assert chamfer_distance(FakePointclouds(x, xl), pcy, point_reduction="max")[1] is None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes(dtype):
    x, y, xl, yl = _ragged_case(seed=16, dtype=dtype)
    xn, yn = torch.randn_like(x), torch.randn_like(y)
    loss, loss_n = chamfer_distance(x, y, xl, yl, xn, yn, norm=1)
    assert loss.dtype == dtype and loss_n.dtype == dtype
    want = naive_chamfer(x.double(), y.double(), xl, yl, xn.double(), yn.double(), norm=1)
    tol = {torch.float16: 1e-2, torch.bfloat16: 5e-2}.get(dtype, 1e-5)
    torch.testing.assert_close(loss.double(), want[0], rtol=tol, atol=tol)
    torch.testing.assert_close(loss_n.double(), want[1], rtol=tol, atol=tol)
    assert knn_points(x, y, xl, yl, K=2).dists.dtype == dtype


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_reduction": "max"}, "batch_reduction"),
        ({"point_reduction": "median"}, "point_reduction"),
        ({"point_reduction": None}, "batch_reduction must be None"),
        ({"norm": 3}, "norm"),
        ({"norm": 2.0}, "norm"),
        ({"point_reduction": "max", "x_normals": "x"}, "normals"),
        ({"weights": torch.tensor([1.0, -1.0, 1.0, 1.0])}, "weights"),
        ({"weights": torch.ones(3)}, "weights"),
        ({"weights": torch.ones(4, dtype=torch.int64)}, "weights"),
        ({"x_normals": torch.ones(4, 11, 3)}, "x_normals"),
        ({"x_normals": "x", "y_normals": torch.ones(4, 9, 2)}, "same size D"),
        ({"x_lengths": torch.tensor([13, 1, 1, 1])}, "x_lengths"),
    ],
)
def test_chamfer_rejects_bad_arguments(kwargs, match):
    x, y, _, _ = _ragged_case()
    if kwargs.get("x_normals") == "x":
        kwargs = {**kwargs, "x_normals": torch.randn_like(x)}
    with pytest.raises(ValueError, match=match):
        chamfer_distance(x, y, **kwargs)


def test_chamfer_nan_raises_and_padding_nan_is_ignored():
    x, y, xl, yl = _ragged_case(seed=17)
    bad = y.clone()
    bad[0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"\by\b.*non-finite"):
        chamfer_distance(x, bad, xl, yl)
    bad = y.clone()
    bad[1, 5:] = float("nan")  # padding of y[1] (2 points)
    torch.testing.assert_close(
        chamfer_distance(x, bad, xl, yl)[0], chamfer_distance(x, y, xl, yl)[0]
    )


def test_traces_fullgraph():
    from crfold.ops import backend

    if backend().startswith("reference"):
        pytest.skip("fullgraph tracing needs the compiled op")
    torch._dynamo.reset()
    x, y, xl, yl = _ragged_case(seed=18, dtype=torch.float32)
    xn, yn = torch.randn_like(x), torch.randn_like(y)

    def fn(a, b, xl, yl, xn, yn):
        loss, loss_n = chamfer_distance(a, b, xl, yl, xn, yn, torch.ones(4), "mean", "mean", 1)
        knn = knn_points(a, b, xl, yl, 2, 3, return_nn=True)
        return loss + loss_n + knn.dists.sum() + knn.knn.sum()

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    results = []
    for f in (fn, compiled):
        a, b = x.clone().requires_grad_(), y.clone().requires_grad_()
        out = f(a, b, xl, yl, xn, yn)
        results.append((out, *torch.autograd.grad(out, (a, b))))
    for e, c in zip(*results):
        torch.testing.assert_close(c, e)
    torch._dynamo.reset()
