"""Property tests: on random small batches, the public ops equal the float64 brute force.

``HYPOTHESIS_EXAMPLES`` sets the number of examples per property (200 by default, as in CI).
"""

from __future__ import annotations

import os

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crfold.ops import chamfer_distance, knn_points

from .conftest import brute_chamfer, check_knn, make_clouds

SETTINGS = settings(max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", 200)), deadline=None)


@st.composite
def clouds(draw, max_points: int = 12):
    """A random padded batch: p1 (B, P1, D), p2 (B, P2, D), lengths (B,) int64 or None.

    Sizes include 0 (empty batch, empty clouds); coordinates are either standard normal or
    small integers (exact ties and duplicates); dtype float32 or float64.
    """
    B = draw(st.integers(0, 3))
    P1, P2 = draw(st.integers(0, max_points)), draw(st.integers(0, max_points))
    D = draw(st.sampled_from([1, 2, 3, 4, 8]))
    integer = draw(st.booleans())
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    seed = draw(st.integers(0, 2**31 - 1))
    p1, p2 = make_clouds(B, P1, P2, D, dtype=dtype, seed=seed, integer=integer)

    def lengths(P: int):
        if not draw(st.booleans()):
            return None
        values = draw(st.lists(st.integers(0, P), min_size=B, max_size=B))
        return torch.tensor(values, dtype=torch.int64)

    return p1, p2, lengths(P1), lengths(P2), integer


@SETTINGS
@given(data=clouds(), K=st.integers(1, 14), return_nn=st.booleans())
def test_knn_equals_brute_force(data, K, return_nn):
    p1, p2, l1, l2, integer = data
    out = knn_points(p1, p2, l1, l2, K=K, return_nn=return_nn)
    exact = integer or p1.dtype == torch.float64
    tol = 1e-12 if p1.dtype == torch.float64 else 1e-5
    check_knn(out, p1, p2, l1, l2, K, exact_idx=exact, rtol=tol, atol=tol)
    if return_nn:
        B, P1, _ = p1.shape
        want = torch.zeros(B, P1, K, p2.shape[2], dtype=p2.dtype)  # (B, P1, K, D)
        for b, i, k in (out.idx >= 0).nonzero().tolist():
            want[b, i, k] = p2[b, out.idx[b, i, k]]
        assert torch.equal(out.knn, want)
    else:
        assert out.knn is None


@SETTINGS
@given(
    data=clouds(),
    squared=st.booleans(),
    point_reduction=st.sampled_from(["mean", "sum", "max", None]),
    batch_reduction=st.sampled_from(["mean", "sum", None]),
    direction_reduction=st.sampled_from(["sum", "max", "mean"]),
    single_directional=st.booleans(),
    weighted=st.booleans(),
)
def test_chamfer_equals_brute_force(
    data,
    squared,
    point_reduction,
    batch_reduction,
    direction_reduction,
    single_directional,
    weighted,
):
    x, y, xl, yl, _ = data
    if point_reduction is None:
        batch_reduction = None
    g = torch.Generator().manual_seed(x.shape[1] * 31 + y.shape[1])
    weights = torch.rand(x.shape[0], generator=g, dtype=x.dtype) if weighted else None
    kw = dict(
        squared=squared,
        point_reduction=point_reduction,
        batch_reduction=batch_reduction,
        direction_reduction=direction_reduction,
        single_directional=single_directional,
        weights=weights,
    )
    got = chamfer_distance(x, y, xl, yl, **kw)
    want = brute_chamfer(x, y, xl, yl, **kw)
    tol = 1e-12 if x.dtype == torch.float64 else 1e-5
    if point_reduction is None:
        torch.testing.assert_close(got[0].double(), want[0], rtol=tol, atol=tol)
        assert (got[1] is None) == single_directional
        if not single_directional:
            torch.testing.assert_close(got[1].double(), want[1], rtol=tol, atol=tol)
    else:
        assert got.shape == want.shape
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)
