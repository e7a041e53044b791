"""Parity with pytorch3d.ops.knn_points and pytorch3d.loss.chamfer_distance, when installed.

PyPI has no Linux build of pytorch3d, so it is never a dependency; users who built it get these
checks. Inputs are random floats (no ties: the two libraries may order exact ties differently).
crfold's own ops pad differently (idx -1), so they are compared where every cloud has at least K
valid targets; the drop-in crfold.ops.pytorch3d is compared everywhere, padding included.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip(
    "pytorch3d", reason="pytorch3d is not installed (no Linux wheel on PyPI; build it to compare)"
)
from pytorch3d.loss import chamfer_distance as p3d_chamfer_distance  # noqa: E402
from pytorch3d.ops import knn_gather as p3d_knn_gather  # noqa: E402
from pytorch3d.ops import knn_points as p3d_knn_points  # noqa: E402

from crfold.ops import chamfer_distance, knn_points  # noqa: E402
from crfold.ops import pytorch3d as dropin  # noqa: E402

from .conftest import make_clouds  # noqa: E402


def _case(device, seed=0):
    x, y = make_clouds(3, 120, 90, 3, dtype=torch.float32, device=device, seed=seed)
    xl = torch.tensor([120, 64, 9], device=device)
    yl = torch.tensor([90, 33, 8], device=device)
    return x, y, xl, yl


@pytest.mark.parametrize("K", [1, 5, 8])
def test_knn_points_matches_pytorch3d(K, devices):
    for device in devices:
        x, y, xl, yl = _case(device, seed=K)
        ours = knn_points(x, y, xl, yl, K=K, return_nn=True)
        theirs = p3d_knn_points(x, y, xl, yl, K=K, return_nn=True, return_sorted=True)
        for b in range(3):
            n = int(xl[b])  # pytorch3d leaves padded queries unspecified: compare valid ones
            assert torch.equal(ours.idx[b, :n], theirs.idx[b, :n])
            torch.testing.assert_close(ours.dists[b, :n], theirs.dists[b, :n])
            torch.testing.assert_close(ours.knn[b, :n], theirs.knn[b, :n])


def test_knn_gradients_match_pytorch3d(devices):
    for device in devices:
        x, y, xl, yl = _case(device, seed=10)
        w = torch.rand(3, 120, 4, generator=torch.Generator().manual_seed(0)).to(device)
        w[1, 64:] = 0  # padded queries: pytorch3d's outputs there are unspecified
        w[2, 9:] = 0
        grads = []
        for fn in (knn_points, p3d_knn_points):
            a, b = x.clone().requires_grad_(), y.clone().requires_grad_()
            d = fn(a, b, xl, yl, K=4).dists
            grads.append(torch.autograd.grad((d * w).sum(), (a, b)))
        for ours, theirs in zip(*grads):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("point_reduction", "batch_reduction", "weighted"),
    [("mean", "mean", False), ("mean", "mean", True), ("sum", "sum", False), ("max", "mean", True)],
)
def test_chamfer_distance_matches_pytorch3d(point_reduction, batch_reduction, weighted, devices):
    for device in devices:
        x, y, xl, yl = _case(device, seed=20)
        w = torch.tensor([0.5, 2.0, 1.0], device=device) if weighted else None
        results = []
        for fn in (chamfer_distance, p3d_chamfer_distance):
            a, b = x.clone().requires_grad_(), y.clone().requires_grad_()
            out = fn(
                a,
                b,
                x_lengths=xl,
                y_lengths=yl,
                point_reduction=point_reduction,
                batch_reduction=batch_reduction,
                weights=w,
            )
            loss = out[0] if isinstance(out, tuple) else out  # pytorch3d: (loss, loss_normals)
            results.append((loss, *torch.autograd.grad(loss, (a, b))))
        for ours, theirs in zip(*results):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- the drop-in


@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("K", [1, 5, 12])  # 12 > 8, the smallest target cloud: padded slots
def test_dropin_knn_points_equals_pytorch3d_with_padding(norm, K, devices):
    for device in devices:
        x, y, xl, yl = _case(device, seed=K + norm)
        ours = dropin.knn_points(x, y, xl, yl, norm=norm, K=K, return_nn=True)
        theirs = p3d_knn_points(x, y, xl, yl, norm=norm, K=K, return_nn=True)
        assert torch.equal(ours.idx, theirs.idx)  # padded slots and queries: 0 in both
        torch.testing.assert_close(ours.dists, theirs.dists)
        torch.testing.assert_close(ours.knn, theirs.knn)
        feats = torch.randn(3, 90, 5, device=device)
        torch.testing.assert_close(
            dropin.knn_gather(feats, ours.idx, yl), p3d_knn_gather(feats, theirs.idx, yl)
        )


@pytest.mark.parametrize("norm", [1, 2])
def test_dropin_knn_gradients_equal_pytorch3d(norm, devices):
    for device in devices:
        x, y, xl, yl = _case(device, seed=30 + norm)
        w = torch.rand(3, 120, 4, generator=torch.Generator().manual_seed(0)).to(device)
        grads = []
        for fn in (dropin.knn_points, p3d_knn_points):
            a, b = x.clone().requires_grad_(), y.clone().requires_grad_()
            d = fn(a, b, xl, yl, norm=norm, K=4).dists
            grads.append(torch.autograd.grad((d * w).sum(), (a, b)))
        for ours, theirs in zip(*grads):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("point_reduction", "batch_reduction"),
    [("mean", "mean"), ("sum", "sum"), ("mean", None), ("max", "mean"), (None, None)],
)
@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("single_directional", [False, True])
@pytest.mark.parametrize("abs_cosine", [True, False])
def test_dropin_chamfer_equals_pytorch3d(
    point_reduction, batch_reduction, norm, single_directional, abs_cosine, devices
):
    for device in devices:
        x, y, xl, yl = _case(device, seed=40 + norm)
        g = torch.Generator().manual_seed(norm)
        normals = [None, None]
        if point_reduction != "max":
            normals = [torch.randn(p.shape, generator=g).to(device) for p in (x, y)]
        w = torch.tensor([0.5, 2.0, 1.0], device=device)
        results = []
        for fn in (dropin.chamfer_distance, p3d_chamfer_distance):
            a, b = x.clone().requires_grad_(), y.clone().requires_grad_()
            loss, loss_n = fn(
                a, b, xl, yl, normals[0], normals[1], w, batch_reduction, point_reduction, norm,
                single_directional, abs_cosine,
            )  # fmt: skip
            outs = [t for t in (loss, loss_n) if t is not None]
            outs = [u for t in outs for u in (t if isinstance(t, tuple) else (t,))]
            total = sum(o.sum() for o in outs)
            results.append((outs, torch.autograd.grad(total, (a, b))))
        (ours, our_grads), (theirs, their_grads) = results
        assert len(ours) == len(theirs)
        for o, t in zip(ours, theirs):
            torch.testing.assert_close(o, t, rtol=1e-5, atol=1e-5)
        for o, t in zip(our_grads, their_grads):
            torch.testing.assert_close(o, t, rtol=1e-4, atol=1e-5)
