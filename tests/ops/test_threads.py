"""The CPU kernels give bit-identical results whatever the number of threads.

The threads take work items dynamically (parallel_cpu.h), so which thread computes what changes
from call to call; every output must still be owned by one item and summed in one fixed order.
The sizes are large enough that every parallel loop (brute force, kd-tree build and search, both
backward loops) really starts a parallel region at 2 threads.
"""

from __future__ import annotations

import pytest
import torch

from crfold.ops import backend, knn_points

from .conftest import make_clouds

pytestmark = pytest.mark.skipif(
    not backend().startswith("compiled") or not torch.backends.openmp.is_available(),
    reason="tests the compiled CPU kernels' OpenMP threads",
)


@pytest.fixture()
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _run(p1, p2, l1, l2, K, threads):
    """dists (B, P1, K), idx (B, P1, K) and the gradients of a weighted sum, at ``threads``."""
    torch.set_num_threads(threads)
    a, b = p1.clone().requires_grad_(), p2.clone().requires_grad_()
    out = knn_points(a, b, l1, l2, K=K)
    w = torch.rand(out.dists.shape, generator=torch.Generator().manual_seed(K))  # (B, P1, K)
    ga, gb = torch.autograd.grad((out.dists * w).sum(), (a, b))
    return out.dists, out.idx, ga, gb


@pytest.mark.parametrize(
    ("B", "P1", "P2", "D", "K"),
    [
        (4, 2048, 2025, 3, 1),  # brute force, 4 queries per step
        (4, 1500, 700, 3, 4),  # brute force, K > 1
        (3, 700, 300, 12, 2),  # brute force, generic D
        (6, 400, 13000, 3, 1),  # kd-tree (past the K = 1 threshold), trees built in parallel
        (4, 600, 2000, 3, 8),  # kd-tree (K > 1)
    ],
)
def test_bit_identical_across_thread_counts(B, P1, P2, D, K, restore_threads):
    p1, p2 = make_clouds(B, P1, P2, D, seed=B + K)
    # Ragged: padded queries and targets, one empty target cloud.
    l1 = torch.tensor([P1, P1 - 33, 1, P1 // 2, P1, 7][:B])
    l2 = torch.tensor([P2, P2 - 5, 0, P2, P2 // 3, P2][:B])
    want = _run(p1, p2, l1, l2, K, threads=1)
    for threads in (2, 3):  # 3: more threads than this machine may have cores
        got = _run(p1, p2, l1, l2, K, threads)
        for name, g, w in zip(("dists", "idx", "grad p1", "grad p2"), got, want):
            assert torch.equal(g, w), f"{name} differs between 1 and {threads} threads"
