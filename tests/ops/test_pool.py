"""The compiled max-pools (graph and global) against their pure-torch twins and an independent loop.

Values and gradients must equal :mod:`crfold.ops.reference` (the implementation the encoder had
before the compiled ops) exactly in float32/float64, on random and heavily tied inputs, ragged
sizes, non-contiguous inputs and under ``torch.compile(fullgraph=True)``; the CPU backward must
be bitwise deterministic across thread counts.
"""

from __future__ import annotations

import pytest
import torch

from crfold.models import FoldingNetEncoder, foldingnet
from crfold.ops import backend, global_max_pool, graph_max_pool
from crfold.ops.reference import global_max_pool_reference, graph_max_pool_reference

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
# (B, N, C, k): channel counts around the vector widths, N = k + 1, single points and channels.
SIZES = [(1, 17, 1, 16), (2, 33, 15, 4), (3, 64, 64, 16), (2, 50, 129, 7), (1, 5, 33, 1)]


def _inputs(B, N, C, k, dtype=torch.float32, seed=0, tied=False, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    if tied:  # few distinct values: most (point, channel) pairs have several maximal candidates
        f = torch.randint(-2, 3, (B, N, C), generator=g).to(dtype)
    else:
        f = torch.randn(B, N, C, generator=g, dtype=torch.float64).to(dtype)
    nb = torch.randint(0, N, (B, N, k), generator=g)
    return f.to(device), nb.to(device)


def _loop_graph_pool(f: torch.Tensor, nb: torch.Tensor):
    """Independent oracle: (values, winners) by explicit loops (first maximal candidate wins)."""
    B, N, C = f.shape
    vals = torch.empty_like(f)
    win = torch.empty(B, N, C, dtype=torch.int64)
    for b in range(B):
        for i in range(N):
            cand = [i] + nb[b, i].tolist()
            col = f[b, cand].double()  # (k + 1, C)
            best = col.argmax(dim=0)  # first maximal index
            win[b, i] = torch.tensor(cand)[best]
            vals[b, i] = f[b, win[b, i], torch.arange(C)]
    return vals, win


def _grads(fn, f, nb, g_out):
    x = f.clone().requires_grad_()
    out = fn(x, nb) if nb is not None else fn(x)
    out.backward(g_out)
    return out.detach(), x.grad


def _need_compiled():
    if backend().startswith("reference"):
        pytest.skip(f"the compiled op is not available ({backend()})")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("tied", [False, True])
def test_graph_pool_matches_loop_and_reference(size, tied):
    f, nb = _inputs(*size, tied=tied, seed=sum(size))
    vals, win = _loop_graph_pool(f, nb)
    g_out = torch.randn(f.shape, generator=torch.Generator().manual_seed(1))
    out, grad = _grads(graph_max_pool, f, nb, g_out)
    ref_out, ref_grad = _grads(graph_max_pool_reference, f, nb, g_out)
    assert torch.equal(out, vals) and torch.equal(out, ref_out)
    assert torch.equal(grad, ref_grad)
    expect = torch.zeros_like(f).scatter_add_(1, win, g_out)  # gradient only at the winners
    torch.testing.assert_close(grad, expect, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_graph_pool_dtypes(dtype, devices):
    for device in devices:
        f, nb = _inputs(2, 40, 24, 6, dtype=dtype, tied=True, device=device)
        g_out = torch.randn(f.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
        out, grad = _grads(graph_max_pool, f, nb, g_out.to(device))
        ref_out, ref_grad = _grads(graph_max_pool_reference, f, nb, g_out.to(device))
        assert out.dtype == dtype and grad.dtype == dtype
        assert torch.equal(out, ref_out)
        if dtype in (torch.float32, torch.float64) and device == "cpu":
            assert torch.equal(grad, ref_grad)
        else:  # 16-bit gradients are summed in float32 here, in the dtype by the reference
            torch.testing.assert_close(grad.double(), ref_grad.double(), rtol=1e-2, atol=1e-2)


def test_graph_pool_non_contiguous_inputs():
    f, nb = _inputs(2, 30, 20, 5, seed=3)
    f_t = f.transpose(1, 2).contiguous().transpose(1, 2)  # same values, channel stride N
    nb_t = nb.transpose(0, 1).contiguous().transpose(0, 1)
    assert not f_t.is_contiguous() and not nb_t.is_contiguous()
    g_out = torch.randn(f.shape)
    out, grad = _grads(graph_max_pool, f_t, nb_t, g_out)
    ref_out, ref_grad = _grads(graph_max_pool_reference, f, nb, g_out)
    assert torch.equal(out, ref_out) and torch.equal(grad, ref_grad)


def test_graph_pool_nan_wins_and_propagates():
    f = torch.zeros(1, 3, 2)
    f[0, 1, 0] = float("nan")
    nb = torch.tensor([[[1, 2], [0, 2], [0, 1]]])
    out = graph_max_pool(f, nb)
    ref = graph_max_pool_reference(f, nb)
    assert torch.equal(out.isnan(), ref.isnan()) and bool(out[0, :, 0].isnan().all())


def test_graph_pool_gradcheck_float64():
    f, nb = _inputs(2, 12, 5, 3, dtype=torch.float64, seed=4)
    f.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: graph_max_pool(x, nb), (f,))


def test_global_pool_gradcheck_float64():
    f, _ = _inputs(2, 12, 5, 3, dtype=torch.float64, seed=5)
    f.requires_grad_()
    assert torch.autograd.gradcheck(global_max_pool, (f,))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("tied", [False, True])
def test_global_pool_matches_reference_and_amax(size, tied):
    f, _ = _inputs(*size, tied=tied, seed=sum(size) + 1)
    g_out = torch.randn(f.shape[0], f.shape[2])
    out, grad = _grads(global_max_pool, f, None, g_out)
    ref_out, ref_grad = _grads(global_max_pool_reference, f, None, g_out)
    assert torch.equal(out, f.amax(dim=1)) and torch.equal(out, ref_out)
    assert torch.equal(grad, ref_grad)
    win = f.argmax(dim=1)  # (B, C) first maximal point
    expect = torch.zeros_like(f).scatter_(1, win.unsqueeze(1), g_out.unsqueeze(1))
    assert torch.equal(grad, expect)


@pytest.mark.parametrize("dtype", DTYPES)
def test_global_pool_dtypes_and_non_contiguous(dtype, devices):
    for device in devices:
        f, _ = _inputs(3, 50, 40, 1, dtype=dtype, tied=True, device=device)
        f_t = f.transpose(1, 2).contiguous().transpose(1, 2)
        g_out = torch.randn(3, 40, device=device).to(dtype)
        out, grad = _grads(global_max_pool, f_t, None, g_out)
        ref_out, ref_grad = _grads(global_max_pool_reference, f, None, g_out)
        assert out.dtype == dtype and torch.equal(out, ref_out) and torch.equal(grad, ref_grad)


@pytest.mark.parametrize(
    "features, neighbours, match",
    [
        (torch.zeros(4, 3), torch.zeros(4, 3, 2, dtype=torch.int64), "shape"),
        (torch.zeros(1, 4, 3, dtype=torch.int32), torch.zeros(1, 4, 2, dtype=torch.int64), "float"),
        (torch.zeros(1, 4, 3), torch.zeros(1, 5, 2, dtype=torch.int64), "match"),
        (torch.zeros(1, 4, 3), torch.zeros(1, 4, 2), "integer"),
        (torch.zeros(1, 4, 3), torch.full((1, 4, 2), 4, dtype=torch.int64), r"\[0, 4\)"),
        (torch.zeros(1, 4, 3), torch.full((1, 4, 2), -1, dtype=torch.int64), r"\[0, 4\)"),
    ],
)
def test_graph_pool_rejects_bad_input(features, neighbours, match):
    with pytest.raises(ValueError, match=match):
        graph_max_pool(features, neighbours)


def test_global_pool_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        global_max_pool(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="float"):
        global_max_pool(torch.zeros(1, 3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="N >= 1"):
        global_max_pool(torch.zeros(1, 0, 4))


def test_compiled_kernel_checks_indices_itself():
    """The C++ kernel rejects an out-of-range index even when called directly."""
    _need_compiled()
    f = torch.zeros(1, 4, 3)
    with pytest.raises(ValueError, match=r"neighbours must lie in \[0, 4\)"):
        torch.ops.crfold.graph_max_pool_forward(f, torch.full((1, 4, 2), 9, dtype=torch.int64))


def test_backward_is_bitwise_identical_across_threads():
    _need_compiled()
    f, nb = _inputs(4, 512, 64, 16, tied=True, seed=6)  # ties: many gradients land on one point
    g_out = torch.randn(f.shape, generator=torch.Generator().manual_seed(7))
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(_grads(graph_max_pool, f, nb, g_out))
    finally:
        torch.set_num_threads(before)
    (o1, g1), (o2, g2) = results
    assert torch.equal(o1, o2) and torch.equal(g1, g2)


@pytest.mark.parametrize(
    "compile_backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)]
)
def test_pools_compile_fullgraph(compile_backend):
    _need_compiled()
    torch._dynamo.reset()

    def fn(x, nb):
        return global_max_pool(torch.relu(graph_max_pool(x, nb)) * 2.0)

    compiled = torch.compile(fn, fullgraph=True, backend=compile_backend)
    for size in [(2, 30, 8, 4), (3, 41, 16, 5)]:  # a second shape: recompiles or stays dynamic
        f, nb = _inputs(*size, seed=8)
        g_out = torch.randn(size[0], size[2])
        eager = _grads(fn, f, nb, g_out)
        comp = _grads(compiled, f, nb, g_out)
        assert torch.equal(eager[0], comp[0]) and torch.equal(eager[1], comp[1])
    torch._dynamo.reset()


def _encoder_before(monkeypatch):
    """The encoder as it was before the compiled pools: the pure-torch graph pool, then the dense
    graph2 layer and amax over the points."""
    monkeypatch.setattr(foldingnet, "graph_max_pool", graph_max_pool_reference)
    monkeypatch.setattr(FoldingNetEncoder, "_graph2_max", lambda self, h: self.graph2(h).amax(1))


def test_encoder_outputs_and_gradients_match_the_previous_implementation(monkeypatch):
    torch.manual_seed(0)
    enc = FoldingNetEncoder(latent_dim=16, k=16)
    x = torch.randn(3, 80, 3)
    results = []
    for before in (False, True):
        if before:
            _encoder_before(monkeypatch)
        enc.zero_grad()
        mu, logvar = enc(x)
        (mu.square().sum() + logvar.sum()).backward()
        grads = [p.grad.clone() for p in enc.parameters()]
        results.append((mu.detach(), logvar.detach(), grads))
    (mu1, lv1, g1), (mu0, lv0, g0) = results
    # The max over the points recomputes the winning rows as a sum of products: equal up to the
    # order of the float32 sums.
    torch.testing.assert_close(mu1, mu0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lv1, lv0, rtol=1e-5, atol=1e-6)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
