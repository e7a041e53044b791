"""Tests of crfold.ops.interop: PyG / PyTorch3D layouts, knn_graph and knn against brute force.

The oracles below loop over nodes in float64 and order candidates by (squared distance, index),
the tie rule of crfold's kNN. Integer coordinates make every distance exact (many ties and exact
duplicates), so edge lists are compared exactly. torch_geometric and pytorch3d are optional:
the tests that use the real libraries skip when they are absent; the others use duck types.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch

from crfold.ops import chamfer_distance, knn_points
from crfold.ops.interop import (
    as_padded,
    from_pyg,
    from_pytorch3d,
    knn,
    knn_graph,
    to_pyg,
    to_pyg_batch,
    to_pytorch3d,
)


def ragged(sizes, D=3, seed=0, integer=True, dtype=torch.float32):
    """Flat positions (N, D) and a sorted batch vector (N,) for clouds of the given sizes."""
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    if integer:  # coordinates in [-1, 1]: exact distances, many ties and duplicates
        pos = torch.randint(-1, 2, (n, D), generator=g).to(dtype)
    else:
        pos = torch.randn(n, D, generator=g, dtype=torch.float64).to(dtype)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return pos, batch


def brute_neighbours(x, y, bx, by, k, exclude_self=False):
    """For each y[i]: the first k of {j : bx[j] == by[i]} (minus i if exclude_self) by (d, j)."""
    x, y = x.double(), y.double()
    out = []
    for i in range(y.shape[0]):
        cand = [j for j in range(x.shape[0]) if bx[j] == by[i] and not (exclude_self and j == i)]
        cand.sort(key=lambda j: (float(((x[j] - y[i]) ** 2).sum()), j))
        out.append(cand[:k])
    return out


def brute_graph(pos, batch, k, loop, flow="source_to_target"):
    edges = [
        (j, i)
        for i, nbrs in enumerate(brute_neighbours(pos, pos, batch, batch, k, not loop))
        for j in nbrs
    ]
    t = torch.tensor(edges, dtype=torch.int64).reshape(-1, 2).T  # (2, E) [source; target]
    return t if flow == "source_to_target" else t.flip(0)


# --- layouts ---------------------------------------------------------------------------------


def test_from_pyg_to_pyg_round_trip_ragged_with_empty_clouds():
    sizes = [3, 0, 5, 1]
    pos, batch = ragged(sizes, D=2, integer=False)
    padded, lengths = from_pyg(pos, batch, batch_size=6)  # two trailing empty clouds
    assert padded.shape == (6, 5, 2) and lengths.tolist() == [3, 0, 5, 1, 0, 0]
    assert lengths.dtype == torch.int64
    for b, chunk in enumerate(torch.split(pos, sizes)):
        assert torch.equal(padded[b, : sizes[b]], chunk)
        assert bool((padded[b, sizes[b] :] == 0).all())
    back, batch2 = to_pyg(padded, lengths)
    assert torch.equal(back, pos) and torch.equal(batch2, batch)


def test_from_pyg_is_differentiable_and_keeps_dtype():
    pos, batch = ragged([2, 4], integer=False, dtype=torch.float64)
    pos.requires_grad_(True)
    padded, _ = from_pyg(pos, batch)
    assert padded.dtype == torch.float64
    (padded * torch.arange(padded.numel()).view_as(padded)).sum().backward()
    expected = torch.arange(padded.numel()).view_as(padded).double()
    torch.testing.assert_close(pos.grad, torch.cat([expected[0, :2], expected[1, :4]]))


def test_from_pyg_defaults_and_max_points():
    pos = torch.randn(7, 3)
    padded, lengths = from_pyg(pos)
    assert torch.equal(padded, pos[None]) and lengths.tolist() == [7]
    padded, lengths = from_pyg(pos, torch.tensor([0, 0, 1, 1, 1, 1, 1]), max_points=9)
    assert padded.shape == (2, 9, 3) and lengths.tolist() == [2, 5]
    with pytest.raises(ValueError, match="max_points"):
        from_pyg(pos, torch.tensor([0, 0, 1, 1, 1, 1, 1]), max_points=4)


def test_from_pyg_accepts_a_pyg_like_batch_object():
    pos, batch = ragged([2, 3])
    data = SimpleNamespace(pos=pos, batch=batch, num_graphs=3)  # a trailing empty graph
    padded, lengths = from_pyg(data)
    assert lengths.tolist() == [2, 3, 0] and padded.shape == (3, 3, 3)
    single = SimpleNamespace(pos=pos)  # a Data without a batch vector: one cloud
    assert from_pyg(single)[1].tolist() == [5]
    with pytest.raises(ValueError, match="batch must be None"):
        from_pyg(data, batch)


@pytest.mark.parametrize(
    ("pos", "batch", "match"),
    [
        (torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), "sorted"),
        (torch.randn(4, 3), torch.tensor([-1, 0, 0, 0]), "non-negative"),
        (torch.randn(4, 3), torch.tensor([0, 0, 1]), r"shape \(4,\)"),
        (torch.randn(4, 3), torch.tensor([0.0, 0, 1, 1]), "integer"),
        (torch.arange(12).view(4, 3), None, "floating-point"),
        (torch.randn(2, 4, 3), None, r"\(N, D\)"),
        ("points", None, "torch.Tensor"),
    ],
)
def test_from_pyg_rejects_bad_input(pos, batch, match):
    with pytest.raises(ValueError, match=match):
        from_pyg(pos, batch)


def test_batch_size_smaller_than_ids_is_an_error():
    with pytest.raises(ValueError, match="batch_size"):
        from_pyg(torch.randn(3, 3), torch.tensor([0, 1, 2]), batch_size=2)


def test_to_pyg_rejects_bad_lengths():
    with pytest.raises(ValueError, match="lengths"):
        to_pyg(torch.randn(2, 4, 3), torch.tensor([1, 5]))
    with pytest.raises(ValueError, match="lengths"):
        to_pyg(torch.randn(2, 4, 3), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="padded"):
        to_pyg(torch.randn(4, 3))


# --- knn_graph / knn -------------------------------------------------------------------------


def test_knn_graph_pyg_documented_example():
    x = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    edge_index = knn_graph(x, k=2, batch=torch.tensor([0, 0, 0, 0]), loop=False)
    assert edge_index.tolist() == [[1, 2, 0, 3, 0, 3, 1, 2], [0, 0, 1, 1, 2, 2, 3, 3]]


@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("flow", ["source_to_target", "target_to_source"])
@pytest.mark.parametrize(("sizes", "k"), [([12, 1, 7, 0, 20], 4), ([3, 5], 9), ([30], 16)])
def test_knn_graph_matches_brute_force(sizes, k, loop, flow, devices):
    pos, batch = ragged(sizes, seed=k)  # integer coordinates: duplicates and exact ties
    expected = brute_graph(pos, batch, k, loop, flow)
    for device in devices:
        got = knn_graph(pos.to(device), k, batch.to(device), loop=loop, flow=flow)
        assert got.dtype == torch.int64 and got.device.type == device
        assert torch.equal(got.cpu(), expected), (device, sizes, k)


def test_knn_graph_excludes_self_among_exact_duplicates():
    pos = torch.zeros(6, 3)  # one cloud of six identical points
    edge_index = knn_graph(pos, k=3)
    src, dst = edge_index
    assert not bool((src == dst).any())
    assert torch.bincount(dst, minlength=6).tolist() == [3] * 6  # exactly k per centre
    # Every neighbour is at distance 0: ties go to the lowest other indices.
    assert src[dst == 0].tolist() == [1, 2, 3] and src[dst == 4].tolist() == [0, 1, 2]


def test_knn_graph_counts_with_small_clouds():
    pos, batch = ragged([1, 2, 3], integer=False)
    counts = torch.bincount(knn_graph(pos, 5, batch)[1], minlength=6)
    assert counts.tolist() == [0, 1, 1, 2, 2, 2]  # min(k, n - 1) per node
    counts = torch.bincount(knn_graph(pos, 5, batch, loop=True)[1], minlength=6)
    assert counts.tolist() == [1, 2, 2, 3, 3, 3]


def test_knn_graph_float_and_cosine_match_brute_force():
    pos, batch = ragged([25, 40], D=5, integer=False, dtype=torch.float64)
    assert torch.equal(knn_graph(pos, 6, batch), brute_graph(pos, batch, 6, False))
    unit = torch.nn.functional.normalize(pos, dim=-1)
    got = knn_graph(pos, 6, batch, cosine=True)
    assert torch.equal(got, brute_graph(unit, batch, 6, False))


def test_knn_graph_empty_and_single_node():
    assert knn_graph(torch.zeros(0, 3), 4).shape == (2, 0)
    assert knn_graph(torch.zeros(1, 3), 4).shape == (2, 0)
    assert knn_graph(torch.zeros(1, 3), 4, loop=True).tolist() == [[0], [0]]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"k": 0}, "k must"), ({"k": 2.0}, "k must"), ({"k": 2, "flow": "up"}, "flow")],
)
def test_knn_graph_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        knn_graph(torch.randn(5, 3), **kwargs)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_knn_matches_brute_force(k, devices):
    x, bx = ragged([6, 0, 9, 4], seed=1)
    y, by = ragged([3, 2, 5], seed=2)  # cloud 1 of y has no x points; x's cloud 3 no queries
    expected = [(i, j) for i, nbrs in enumerate(brute_neighbours(x, y, bx, by, k)) for j in nbrs]
    expected = torch.tensor(expected, dtype=torch.int64).T
    for device in devices:
        got = knn(x.to(device), y.to(device), k, bx.to(device), by.to(device))
        assert torch.equal(got.cpu(), expected), (device, k)


def test_knn_pyg_documented_example():
    # torch_geometric.nn.knn's docstring example: for each y, its 2 nearest x; row 0 indexes y.
    x = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    y = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
    got = knn(x, y, 2, torch.tensor([0, 0, 0, 0]), torch.tensor([0, 0]))
    assert got.tolist() == [[0, 0, 1, 1], [0, 1, 2, 3]]


def test_knn_without_batches_and_errors():
    x, y = torch.randn(10, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    zeros_x, zeros_y = torch.zeros(10, dtype=torch.int64), torch.zeros(4, dtype=torch.int64)
    expected = [
        (i, j) for i, n in enumerate(brute_neighbours(x, y, zeros_x, zeros_y, 3)) for j in n
    ]
    assert knn(x, y, 3).T.tolist() == [list(e) for e in expected]
    with pytest.raises(ValueError, match="share D"):
        knn(x, torch.randn(4, 3, dtype=torch.float64), 3)
    with pytest.raises(ValueError, match="batch_y"):
        knn(x, y, 3, zeros_x, torch.tensor([1, 0, 0, 0]))


# --- PyTorch3D Pointclouds and as_padded -----------------------------------------------------


class FakePointclouds:
    """The methods of pytorch3d.structures.Pointclouds that crfold relies on: the points, their
    number per cloud, and ``normals_padded()`` (None when the clouds carry no normals)."""

    def __init__(self, clouds, normals=None):
        self.clouds = clouds
        self.normals = normals

    def normals_padded(self):
        if self.normals is None:
            return None
        out = torch.zeros(len(self.normals), max(n.shape[0] for n in self.normals), 3)
        for b, n in enumerate(self.normals):
            out[b, : n.shape[0]] = n
        return out

    def num_points_per_cloud(self):
        return torch.tensor([c.shape[0] for c in self.clouds], dtype=torch.int64)

    def points_padded(self):
        P = max(c.shape[0] for c in self.clouds)
        out = torch.zeros(len(self.clouds), P, 3)
        for b, c in enumerate(self.clouds):
            out[b, : c.shape[0]] = c
        return out


def test_from_pytorch3d_and_as_padded_with_a_fake_pointclouds():
    clouds = [torch.randn(4, 3), torch.randn(2, 3)]
    fake = FakePointclouds(clouds)
    padded, lengths = from_pytorch3d(fake)
    assert padded.shape == (2, 4, 3) and lengths.tolist() == [4, 2]
    assert torch.equal(padded[1, :2], clouds[1])
    p2, l2 = as_padded(fake)
    assert torch.equal(p2, padded) and torch.equal(l2, lengths)
    pos, batch = to_pyg(fake)
    assert torch.equal(pos, torch.cat(clouds)) and batch.tolist() == [0, 0, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="lengths of p1 must be None"):
        as_padded(fake, torch.tensor([4, 2]), name="p1")
    with pytest.raises(ValueError, match="Pointclouds"):
        from_pytorch3d(torch.randn(2, 4, 3))


def test_pointclouds_with_normals_are_refused_by_chamfer_only():
    """crfold's chamfer_distance would drop the normals where PyTorch3D's adds a normal term: it
    refuses them. kNN has no normal term (PyTorch3D's neither): it takes such clouds."""
    clouds = [torch.randn(4, 3), torch.randn(2, 3)]
    plain = FakePointclouds(clouds)
    with_normals = FakePointclouds(clouds, normals=[torch.randn(4, 3), torch.randn(2, 3)])
    y = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match=r"\by is a pytorch3d Pointclouds with normals"):
        chamfer_distance(y, with_normals)
    with pytest.raises(ValueError, match="from_pytorch3d"):  # the message names the way out
        chamfer_distance(with_normals, y)
    # Without normals, or through from_pytorch3d (points only, explicitly): the padded result.
    padded, lengths = from_pytorch3d(with_normals)
    want = chamfer_distance(padded, y, lengths)
    assert torch.equal(chamfer_distance(plain, y), want)
    # kNN (and the layouts built on as_padded) take the points and lengths, normals or not.
    want_knn = knn_points(padded, y, lengths, K=2, return_nn=True)
    for cloud in (plain, with_normals):
        got = knn_points(cloud, y, K=2, return_nn=True)
        assert all(torch.equal(a, b) for a, b in zip(got, want_knn, strict=True))
        back = knn_points(y, cloud, K=3)  # as the target cloud too
        assert torch.equal(back.idx, knn_points(y, padded, None, lengths, K=3).idx)
        assert torch.equal(as_padded(cloud)[0], padded)
        assert torch.equal(to_pyg(cloud)[0], torch.cat(clouds))


def test_as_padded_passes_tensors_through_and_converts_pyg_objects():
    x, lengths = torch.randn(2, 5, 3), torch.tensor([5, 3])
    out = as_padded(x, lengths)
    assert out[0] is x and out[1] is lengths
    assert as_padded(x)[1] is None
    assert as_padded("junk") == ("junk", None)  # left to the caller's validation
    pos, batch = ragged([2, 3])
    padded, lens = as_padded(SimpleNamespace(pos=pos, batch=batch))
    assert padded.shape == (2, 3, 3) and lens.tolist() == [2, 3]


def test_missing_optional_libraries_name_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_geometric", None)  # makes the import fail
    monkeypatch.setitem(sys.modules, "torch_geometric.data", None)
    with pytest.raises(ImportError, match="pip install torch_geometric"):
        to_pyg_batch(torch.randn(2, 3, 3))
    monkeypatch.setitem(sys.modules, "pytorch3d", None)
    monkeypatch.setitem(sys.modules, "pytorch3d.structures", None)
    with pytest.raises(ImportError, match="pytorch3d"):
        to_pytorch3d(torch.randn(2, 3, 3))


# --- the real libraries, when installed ------------------------------------------------------


def test_pyg_batch_round_trip():
    pytest.importorskip("torch_geometric", reason="torch_geometric is not installed")
    padded = torch.randn(3, 8, 3)
    lengths = torch.tensor([8, 5, 2])
    data = to_pyg_batch(padded, lengths)
    assert data.num_graphs == 3 and data.pos.shape == (15, 3)
    assert data.batch.tolist() == [0] * 8 + [1] * 5 + [2] * 2
    p2, l2 = from_pyg(data)
    assert torch.equal(l2, lengths) and torch.equal(p2[1, :5], padded[1, :5])
    # A real Batch goes straight into the padded ops.
    y = torch.randn(3, 6, 3)
    want = chamfer_distance(padded, y, lengths)
    assert torch.equal(chamfer_distance(data, y), want)


@pytest.mark.parametrize("max_points", [None, 9])
def test_from_pyg_matches_pyg_to_dense_batch(max_points):
    pyg_utils = pytest.importorskip("torch_geometric.utils", reason="torch_geometric is absent")
    pos, batch = ragged([3, 0, 5, 1], integer=False)
    padded, lengths = from_pyg(pos, batch, max_points, batch_size=6)
    dense, mask = pyg_utils.to_dense_batch(pos, batch, max_num_nodes=max_points, batch_size=6)
    assert torch.equal(padded, dense)
    assert torch.equal(lengths, mask.sum(1))


def _pyg_sum_of_neighbours(pyg_nn, flow):
    """A torch_geometric MessagePassing layer: each centre sums its neighbours' features."""

    class SumNeighbours(pyg_nn.MessagePassing):
        def __init__(self):
            super().__init__(aggr="add", flow=flow)

        def forward(self, x, edge_index):
            return self.propagate(edge_index, x=x)

        def message(self, x_j):
            return x_j

    return SumNeighbours()


@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("flow", ["source_to_target", "target_to_source"])
def test_knn_graph_in_pyg_message_passing(flow, loop):
    """PyG's documented contract: with knn_graph(..., flow=f) fed to a MessagePassing layer of
    the same flow, every centre aggregates exactly its k nearest neighbours of its own cloud."""
    pyg_nn = pytest.importorskip("torch_geometric.nn", reason="torch_geometric is not installed")
    pyg_utils = pytest.importorskip("torch_geometric.utils")
    sizes, k = [12, 1, 7, 0, 20], 4
    pos, batch = ragged(sizes, seed=3, integer=False)
    feats = torch.randn(pos.shape[0], 5, dtype=torch.float64)
    edge_index = knn_graph(pos, k, batch, loop=loop, flow=flow)
    got = _pyg_sum_of_neighbours(pyg_nn, flow)(feats, edge_index)
    nbrs = brute_neighbours(pos, pos, batch, batch, k, exclude_self=not loop)
    want = torch.stack([feats[n].sum(0) if n else feats.new_zeros(5) for n in nbrs])
    torch.testing.assert_close(got, want)
    centre = edge_index[1] if flow == "source_to_target" else edge_index[0]
    n = torch.tensor(sizes)[batch]  # size of each node's cloud
    want_degree = torch.minimum(torch.tensor(k), n if loop else n - 1)
    assert torch.equal(pyg_utils.degree(centre, pos.shape[0]).long(), want_degree)
    assert pyg_utils.contains_self_loops(edge_index) == loop
    assert torch.equal(batch[edge_index[0]], batch[edge_index[1]])  # never across clouds


def test_knn_graph_dense_adjacency_matches_brute_force():
    pyg_utils = pytest.importorskip("torch_geometric.utils", reason="torch_geometric is absent")
    sizes, k = [6, 9, 2], 3
    pos, batch = ragged(sizes, seed=5)  # integer coordinates: ties by the lowest index
    adj = pyg_utils.to_dense_adj(knn_graph(pos, k, batch), batch)  # (B, P, P) [b, src, dst]
    want = torch.zeros(3, 9, 9)
    start = [0, 6, 15]
    for i, nbrs in enumerate(brute_neighbours(pos, pos, batch, batch, k, exclude_self=True)):
        b = int(batch[i])
        for j in nbrs:
            want[b, j - start[b], i - start[b]] = 1
    assert torch.equal(adj, want)


def _with_pyg_knn():
    pyg = pytest.importorskip("torch_geometric", reason="torch_geometric is not installed")
    if not pyg.typing.WITH_KNN:
        pytest.skip("torch_geometric's knn/knn_graph need pyg-lib, which PyPI does not carry")
    return pyg


@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("flow", ["source_to_target", "target_to_source"])
def test_knn_graph_equals_pyg_knn_graph(flow, loop):
    pyg = _with_pyg_knn()
    pos, batch = ragged([12, 1, 7, 20], seed=6, integer=False)  # no ties: one answer
    theirs = pyg.nn.knn_graph(pos, 4, batch, loop=loop, flow=flow)
    ours = knn_graph(pos, 4, batch, loop=loop, flow=flow)
    key = lambda e: sorted(map(tuple, e.T.tolist()))  # noqa: E731 - edge sets, any order
    assert key(ours) == key(theirs)


def test_knn_equals_pyg_knn():
    pyg = _with_pyg_knn()
    x, bx = ragged([6, 3, 9], seed=7, integer=False)
    y, by = ragged([3, 2, 5], seed=8, integer=False)
    theirs = pyg.nn.knn(x, y, 4, bx, by)
    ours = knn(x, y, 4, bx, by)
    key = lambda e: sorted(map(tuple, e.T.tolist()))  # noqa: E731 - edge sets, any order
    assert key(ours) == key(theirs)


def test_pytorch3d_pointclouds_round_trip():
    pytest.importorskip("pytorch3d", reason="pytorch3d is not installed (no Linux wheel on PyPI)")
    padded = torch.randn(2, 6, 3)
    lengths = torch.tensor([6, 4])
    pc = to_pytorch3d(padded, lengths)
    p2, l2 = from_pytorch3d(pc)
    assert torch.equal(l2.cpu(), lengths) and torch.equal(p2[1, :4], padded[1, :4])
    assert bool((p2[1, 4:] == 0).all())
