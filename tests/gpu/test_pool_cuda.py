"""The max-pool checks of tests/ops/test_pool.py on a CUDA device: values, winners and gradients
equal to the CPU kernels (a max selects one of its inputs, so no rounding differs), in every
dtype, with and without deterministic algorithms."""

from __future__ import annotations

import pytest
import torch

from crfold.ops import global_max_pool, graph_max_pool

from ..ops.conftest import deterministic_algorithms

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def _inputs(B, N, C, k, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = torch.randint(-3, 4, (B, N, C), generator=g).to(dtype)  # exact in every dtype, many ties
    return f, torch.randint(0, N, (B, N, k), generator=g)


def _run(fn, f, *args):
    x = f.clone().requires_grad_()
    out = fn(x, *args)
    g = torch.arange(out.numel(), dtype=torch.float64).reshape(out.shape) % 7 - 3  # exact
    out.backward(g.to(out.dtype).to(out.device))
    return out.detach().cpu(), x.grad.cpu()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [(1, 17, 1, 16), (3, 300, 64, 16), (2, 1025, 129, 7)])
@pytest.mark.parametrize("deterministic", [False, True])
def test_graph_pool_equals_cpu(dtype, size, deterministic):
    f, nb = _inputs(*size, dtype=dtype, seed=sum(size))
    cpu = _run(graph_max_pool, f, nb)
    with deterministic_algorithms(deterministic):
        gpu = _run(graph_max_pool, f.cuda(), nb.cuda())
    assert torch.equal(gpu[0], cpu[0])
    torch.testing.assert_close(gpu[1], cpu[1], rtol=0, atol=0)  # integer-valued sums: exact


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [(1, 1, 1), (4, 2048, 1024), (3, 77, 130)])
def test_global_pool_equals_cpu(dtype, size):
    f, _ = _inputs(*size, 1, dtype=dtype, seed=sum(size))
    cpu = _run(global_max_pool, f)
    gpu = _run(global_max_pool, f.cuda())
    assert torch.equal(gpu[0], cpu[0]) and torch.equal(gpu[1], cpu[1])


def test_graph_pool_deterministic_backward_is_bitwise_repeatable():
    f = torch.randn(4, 2048, 128, device="cuda")
    nb = torch.randint(0, 2048, (4, 2048, 16), device="cuda")
    with deterministic_algorithms(True):
        a = _run(graph_max_pool, f, nb)
        b = _run(graph_max_pool, f, nb)
    assert torch.equal(a[1], b[1])


def test_graph_pool_rejects_out_of_range_indices_in_eager_mode():
    f = torch.zeros(1, 4, 3, device="cuda")
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        graph_max_pool(f, torch.full((1, 4, 2), 4, device="cuda"))
