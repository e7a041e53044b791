"""torch.compile of the public ops: the forward equals eager mode and the backward runs.

``fullgraph=True`` needs the compiled op (registered with ``torch.library``, fake kernel and
autograd formula); the pure-torch reference fallback loops over data-dependent lengths, so on it
only the graph-break mode is tested. Inductor compiles take tens of seconds on 2 cores: those
tests are marked slow, the fast ones use the ``aot_eager`` backend, which still traces the op
through its fake kernel and AOTAutograd.
"""

from __future__ import annotations

import pytest
import torch

from crfold.ops import backend, chamfer_distance, knn_points

from .conftest import make_clouds

BACKENDS = ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)]
CHAMFER_KWARGS = [
    {},
    dict(point_reduction="max", direction_reduction="max", squared=False),
    dict(point_reduction="sum", batch_reduction=None, single_directional=True),
]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _need_compiled_op() -> None:
    if backend().startswith("reference"):
        pytest.skip(
            "fullgraph tracing needs the compiled op; the reference fallback has "
            f"data-dependent control flow ({backend()})"
        )


def knn_features(p1, p2, lengths1, lengths2):
    """A function calling knn_points: (B, P1) features from the 4 nearest neighbours."""
    out = knn_points(p1, p2, lengths1, lengths2, K=4, return_nn=True)
    feat = out.dists.clamp_min(1e-12).sqrt().mean(-1) + out.knn.sum(dim=(-2, -1))  # (B, P1)
    return feat, out.idx


def _inputs(B=3, P1=64, P2=50, seed=0):
    x, y = make_clouds(B, P1, P2, dtype=torch.float32, seed=seed)
    xl = torch.tensor([P1, P1 // 2, 1][:B])
    yl = torch.tensor([P2, 0, P2 - 3][:B])
    return x, y, xl, yl


def _check_against_eager(fn, compiled, args):
    """Forward equal to eager; gradients w.r.t. the two clouds equal to eager's."""
    results = []
    for f in (fn, compiled):
        x, y = (a.clone().requires_grad_() for a in args[:2])
        out = f(x, y, *args[2:])
        first = out[0] if isinstance(out, tuple) else out
        grads = torch.autograd.grad(first.sum(), (x, y))
        results.append((out, grads))
    (eager_out, eager_grads), (comp_out, comp_grads) = results
    if isinstance(eager_out, tuple):
        for e, c in zip(eager_out, comp_out):
            if e is None:
                assert c is None
            elif e.dtype == torch.int64:
                assert torch.equal(e, c)
            else:
                torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-6)
    else:
        torch.testing.assert_close(comp_out, eager_out, rtol=1e-5, atol=1e-6)
    for e, c in zip(eager_grads, comp_grads):
        assert bool(torch.isfinite(c).all())
        torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("compile_backend", BACKENDS)
def test_chamfer_fullgraph(compile_backend):
    _need_compiled_op()
    for kw in CHAMFER_KWARGS:
        torch._dynamo.reset()

        def fn(x, y, xl, yl, kw=kw):
            return chamfer_distance(x, y, xl, yl, **kw)

        compiled = torch.compile(fn, fullgraph=True, backend=compile_backend)
        _check_against_eager(fn, compiled, _inputs())
        _check_against_eager(fn, compiled, _inputs(P1=40, P2=71, seed=1))  # new shapes


def test_chamfer_function_object_compiles_fullgraph():
    _need_compiled_op()
    compiled = torch.compile(chamfer_distance, fullgraph=True, backend="aot_eager")
    x, y, xl, yl = _inputs()
    torch.testing.assert_close(compiled(x, y, xl, yl), chamfer_distance(x, y, xl, yl))


@pytest.mark.parametrize("compile_backend", BACKENDS)
def test_knn_fullgraph(compile_backend):
    _need_compiled_op()
    compiled = torch.compile(knn_features, fullgraph=True, backend=compile_backend)
    _check_against_eager(knn_features, compiled, _inputs())
    _check_against_eager(knn_features, compiled, _inputs(B=2, P1=33, P2=129, seed=2))


def test_with_graph_breaks_on_any_backend():
    """Without fullgraph, compiled callers work on the reference fallback too."""
    compiled = torch.compile(knn_features, backend="aot_eager")
    _check_against_eager(knn_features, compiled, _inputs())

    def fn(x, y, xl, yl):
        return chamfer_distance(x, y, xl, yl, squared=False)

    _check_against_eager(fn, torch.compile(fn, backend="aot_eager"), _inputs(seed=3))
