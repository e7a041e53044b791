"""The loud edges of crfold.ops (and of its PyTorch3D drop-in): keyword-only K, sizes that cannot
fit, meta and fake tensors, finite inputs whose distances overflow their dtype."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

from crfold.ops import chamfer_distance, knn_points
from crfold.ops import knn as knn_module
from crfold.ops import pytorch3d as p3d
from crfold.ops.knn import knn_points_named

from .conftest import make_clouds

# ---------------------------------------------------------------------------- keyword-only K


def test_k_and_return_nn_are_keyword_only():
    x, y = make_clouds(2, 5, 7)
    with pytest.raises(TypeError):
        knn_points(x, y, None, None, 3)
    with pytest.raises(TypeError):
        knn_points(x, y, None, None, 3, True)
    with pytest.raises(TypeError):
        knn_points_named(x, y, None, None, 3)
    assert knn_points(x, y, None, None, K=3).idx.shape == (2, 5, 3)


# ---------------------------------------------------------------------------- sizes


def test_a_huge_k_is_a_value_error_before_allocating():
    x, y = make_clouds(2, 5, 7)
    # 2 * 5 * 1e9 neighbours would be 112 GiB of dists + idx: refused, not attempted.
    with pytest.raises(ValueError, match=r"B\*P1\*K = 2\*5\*1000000000.*GiB.*K=1000000000 > P2=7"):
        knn_points(x, y, K=10**9)
    with pytest.raises(ValueError, match=r"K must be <= 2\*\*31 - 1"):
        knn_points(x, y, K=2**31)
    # Empty outputs need no memory, whatever K is.
    e = torch.zeros(2, 0, 3)
    assert knn_points(e, y, K=10**6).idx.shape == (2, 0, 10**6)


def test_output_size_is_checked_against_the_device_memory(monkeypatch):
    x, y = make_clouds(2, 10, 30, dtype=torch.float16)
    # float16: dists in float32 (4) + idx (8) + the float16 cast (2) = 14 bytes a neighbour.
    monkeypatch.setattr(knn_module, "memory_limit", lambda device: 2 * 10 * 4 * 14)
    assert knn_points(x, y, K=4).dists.shape == (2, 10, 4)  # exactly fits
    with pytest.raises(ValueError, match=r"dists \+ idx\).*lower K or split the batch"):
        knn_points(x, y, K=5)
    with pytest.raises(ValueError, match=r"dists \+ idx \+ knn"):
        knn_points(x, y, K=4, return_nn=True)  # knn adds 3 * 2 bytes a neighbour
    monkeypatch.setattr(knn_module, "memory_limit", lambda device: 100)
    with pytest.raises(ValueError, match="kNN outputs"):
        chamfer_distance(x, y)
    monkeypatch.setattr(knn_module, "memory_limit", lambda device: None)  # unknown: no check
    assert knn_points(x, y, K=40).idx.shape == (2, 10, 40)


@pytest.fixture
def host_memory():
    """``_host_memory`` recomputed on each call of the test, and for real again after it."""
    knn_module._host_memory.cache_clear()
    yield knn_module._host_memory
    knn_module._host_memory.cache_clear()


@pytest.mark.skipif(not hasattr(os, "sysconf"), reason="no sysconf (Windows): the limit is None")
def test_host_memory_is_physical_memory_capped_by_the_cgroup_limit(
    host_memory, monkeypatch, tmp_path
):
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    want = physical  # this machine: its RAM, or its cgroup's limit when lower
    if os.path.exists(knn_module.CGROUP_MEMORY_MAX):
        with open(knn_module.CGROUP_MEMORY_MAX) as f:
            text = f.read().strip()
        want = min(physical, int(text)) if text.isdigit() else physical
    assert knn_module.memory_limit(torch.device("cpu")) == want
    cgroup = tmp_path / "memory.max"
    monkeypatch.setattr(knn_module, "CGROUP_MEMORY_MAX", str(cgroup))
    for text, want in (("123456789\n", 123456789), ("max\n", physical), (None, physical)):
        if text is not None:
            cgroup.write_text(text)
        else:
            cgroup.unlink()  # no cgroup v2 file: physical memory
        host_memory.cache_clear()
        assert knn_module.memory_limit(torch.device("cpu")) == want
    cgroup.write_text(f"{physical * 2}\n")  # a limit above the RAM does not raise it
    host_memory.cache_clear()
    assert knn_module.memory_limit(torch.device("cpu")) == physical
    assert knn_module.memory_limit(torch.device("meta")) is None


# ---------------------------------------------------------------------------- meta / fake


def _meta(*shape, dtype=torch.float32):
    return torch.empty(*shape, device="meta", dtype=dtype)


@pytest.mark.parametrize("reference", [False, True], ids=["compiled", "reference"])
def test_meta_tensors_get_shapes_without_reading_values(reference, monkeypatch):
    if reference:
        monkeypatch.setattr(knn_module, "_compiled_for", lambda device_type: False)
    lengths1 = torch.empty(2, device="meta", dtype=torch.int64)
    out = knn_points(_meta(2, 5, 3), _meta(2, 7, 3), lengths1, K=3, return_nn=True)
    assert out.dists.shape == (2, 5, 3) and out.dists.dtype == torch.float32
    assert out.idx.shape == (2, 5, 3) and out.idx.dtype == torch.int64
    assert out.knn.shape == (2, 5, 3, 3) and out.dists.is_meta
    half = knn_points(_meta(2, 5, 3, dtype=torch.float16), _meta(2, 7, 3, dtype=torch.float16))
    assert half.dists.dtype == torch.float16 and half.dists.shape == (2, 5, 1)
    x, y = _meta(2, 5, 3), _meta(2, 7, 3)
    assert chamfer_distance(x, y).shape == ()
    assert chamfer_distance(x, y, batch_reduction=None, weights=_meta(2)).shape == (2,)
    assert chamfer_distance(x, y, point_reduction="max", batch_reduction="sum").shape == ()
    tx, ty = chamfer_distance(x, y, point_reduction=None, batch_reduction=None, squared=False)
    assert tx.shape == (2, 5) and ty.shape == (2, 7) and tx.is_meta


def test_meta_tensors_keep_shape_and_dtype_checks():
    with pytest.raises(ValueError, match="dimensions D"):
        knn_points(_meta(2, 5, 3), _meta(2, 7, 2))
    with pytest.raises(ValueError, match=r"\bp1\b"):
        knn_points(_meta(2, 5, 3, dtype=torch.int64), _meta(2, 7, 3))
    with pytest.raises(ValueError, match="lengths2"):
        knn_points(_meta(2, 5, 3), _meta(2, 7, 3), None, torch.empty(3, device="meta"))
    with pytest.raises(ValueError, match=r"\bK\b"):
        knn_points(_meta(2, 5, 3), _meta(2, 7, 3), K=0)


@pytest.mark.parametrize("reference", [False, True], ids=["compiled", "reference"])
def test_fake_tensors_trace_forward_and_backward(reference, monkeypatch):
    if reference:
        monkeypatch.setattr(knn_module, "_compiled_for", lambda device_type: False)
    with FakeTensorMode():
        x = torch.empty(3, 6, 3, requires_grad=True)
        y = torch.empty(3, 8, 3, requires_grad=True)
        xl, w = torch.tensor([6, 2, 0]), torch.ones(3)
        out = knn_points(x, y, xl, K=4, return_nn=True)
        assert isinstance(out.dists, FakeTensor) and out.dists.shape == (3, 6, 4)
        assert out.knn.shape == (3, 6, 4, 3)
        for pr in ("mean", "sum", "max"):
            loss = chamfer_distance(x, y, xl, point_reduction=pr, weights=w, squared=False)
            assert isinstance(loss, FakeTensor) and loss.shape == ()
            gx, gy = torch.autograd.grad(loss, (x, y))
            assert gx.shape == x.shape and gy.shape == y.shape
        tx, ty = chamfer_distance(x, y, xl, point_reduction=None, batch_reduction=None)
        assert tx.shape == (3, 6) and ty.shape == (3, 8)


def test_pytorch3d_drop_in_on_meta_tensors():
    """knn_gather's index range and the weights check read values: skipped for meta tensors."""
    p1, p2 = _meta(2, 5, 3), _meta(2, 7, 3)
    out = p3d.knn_points(p1, p2, K=3, return_nn=True)
    assert out.knn.shape == (2, 5, 3, 3) and out.knn.is_meta
    idx = torch.empty(2, 5, 3, device="meta", dtype=torch.int64)
    assert p3d.knn_gather(p2, idx, torch.empty(2, device="meta", dtype=torch.int64)).is_meta
    nx, ny, w = _meta(2, 5, 3), _meta(2, 7, 3), _meta(2)
    loss, loss_n = p3d.chamfer_distance(p1, p2, x_normals=nx, y_normals=ny, weights=w)
    assert loss.shape == () and loss_n.shape == () and loss.is_meta
    with pytest.raises(ValueError, match="weights must be a tensor of shape"):
        p3d.chamfer_distance(p1, p2, weights=_meta(3))  # shape checks stay


def test_pytorch3d_drop_in_on_fake_tensors():
    with FakeTensorMode():
        x = torch.empty(3, 6, 3, requires_grad=True)
        y = torch.empty(3, 8, 3, requires_grad=True)
        xl, w = torch.tensor([6, 2, 0]), torch.ones(3)
        out = p3d.knn_points(x, y, xl, K=4, return_nn=True)
        assert isinstance(out.knn, FakeTensor) and out.knn.shape == (3, 6, 4, 3)
        nx, ny = torch.empty(3, 6, 3), torch.empty(3, 8, 3)
        loss, loss_n = p3d.chamfer_distance(x, y, xl, x_normals=nx, y_normals=ny, weights=w)
        assert isinstance(loss, FakeTensor) and isinstance(loss_n, FakeTensor)
        gx, gy = torch.autograd.grad(loss + loss_n, (x, y))
        assert gx.shape == x.shape and gy.shape == y.shape
        terms, _ = p3d.chamfer_distance(
            x, y, x_normals=nx, y_normals=ny, point_reduction=None, batch_reduction=None
        )
        assert terms[0].shape == (3, 6) and terms[1].shape == (3, 8)


def test_fake_cuda_tensors_need_no_gpu(monkeypatch):
    """The memory check of a fake CUDA tensor would ask the GPU for its memory: skipped, so
    tracing for CUDA works on a host without one."""
    monkeypatch.setattr(knn_module, "_warned", knn_module._warned)  # restored: may warn here
    with FakeTensorMode():
        x = torch.empty(2, 5, 3, device="cuda")
        y = torch.empty(2, 7, 3, device="cuda")
        knn_module._check_output_size(x, 7, 3, return_nn=True)  # returns: nothing to check
        with warnings.catch_warnings():  # the fallback warning where CUDA kernels are absent
            warnings.simplefilter("ignore", RuntimeWarning)
            out = knn_points(x, y, K=3, return_nn=True)
    # (chamfer_distance is left out: a CPU-only torch cannot index fake CUDA tensors, x[..., 0])
    assert out.dists.shape == (2, 5, 3) and out.dists.device.type == "cuda"
    assert out.knn.shape == (2, 5, 3, 3)


# ---------------------------------------------------------------------------- overflow


def test_finite_inputs_whose_squared_distance_overflows_raise(devices):
    for device in devices:
        x = torch.zeros(2, 4, 3, device=device)
        y = torch.zeros(2, 5, 3, device=device)
        x[1, 2, 0] = 1e20  # 1e40 from every point of y: > float32's 3.4e38
        with pytest.raises(ValueError, match=r"p1\[1, 2\].*overflows torch.float32.*float64"):
            knn_points(x, y)
        with pytest.raises(ValueError, match=r"\bx\[1, 2\].*overflows torch.float32"):
            chamfer_distance(x, y)
        with pytest.raises(ValueError, match=r"\by\[1, 2\].*overflows"):
            chamfer_distance(y, x)  # named by the chamfer argument, in either direction
        # float64 represents 1e40: the same points are fine there.
        d = knn_points(x.double(), y.double()).dists
        assert d[1, 2, 0].item() == pytest.approx(1e40)
        # Far from the origin but close together: no overflow (only differences are squared).
        far = torch.full((1, 3, 3), 1e20, device=device)
        assert knn_points(far, far).dists.max().item() == 0
        # Padding is not looked at.
        lengths = torch.tensor([4, 2], device=device)
        assert knn_points(x, y, lengths).dists.isfinite().all()


def test_unsquared_chamfer_checks_the_squared_distances_it_computes():
    """squared=False: the distance 1e20 fits float32, but kNN ranks squared distances (1e40),
    which do not: a ValueError that says so (documented), not inf and not a wrong neighbour."""
    x = torch.zeros(1, 2, 3)
    y = torch.zeros(1, 3, 3)
    x[0, 1, 0] = 1e20
    with pytest.raises(ValueError, match=r"squared L2 distance.*squared=False.*x\[0, 1\]"):
        chamfer_distance(x, y, squared=False)
    with pytest.raises(ValueError, match=r"squared L2 distance.*x\[0, 1\]"):
        p3d.chamfer_distance(x, y)
    # L1 distances are what kNN computes with norm=1: 1e20 fits float32.
    assert chamfer_distance(x, y, norm=1, point_reduction="max").item() == pytest.approx(1e20)
    # In float64 the same points give the distance itself.
    d = chamfer_distance(x.double(), y.double(), squared=False, point_reduction="max")
    assert d.item() == pytest.approx(1e20)


def test_half_precision_results_that_overflow_the_half_dtype_raise():
    # Computed in float32 (fine), but 300**2 * 3 = 270000 > float16's 65504.
    x = torch.full((1, 4, 3), 300.0, dtype=torch.float16)
    y = torch.zeros(1, 5, 3, dtype=torch.float16)
    with pytest.raises(ValueError, match="overflows torch.float16.*pass float32 points"):
        knn_points(x, y)
    with pytest.raises(ValueError, match="Chamfer distance overflows torch.float16"):
        chamfer_distance(x, y)
    with pytest.raises(ValueError, match="Chamfer distance overflows torch.float16"):
        chamfer_distance(x, y, point_reduction=None, batch_reduction=None)
    # bfloat16 has float32's range: the same clouds are fine.
    assert chamfer_distance(x.bfloat16(), y.bfloat16()).isfinite()
    # Unsquared distances fit float16: sqrt(270000) = 520.
    loss = chamfer_distance(x, y, squared=False, point_reduction="max")
    assert loss.dtype == torch.float16 and loss.isfinite()


def test_the_pytorch3d_drop_in_raises_in_knn_and_chamfer_alike():
    """float16 points 300 apart: knn_points' float16 dists overflow; chamfer_distance computes in
    float32 and its float16 result overflowed silently to inf. Both raise, naming the dtype."""
    x = torch.full((1, 4, 3), 300.0, dtype=torch.float16)
    y = torch.zeros(1, 5, 3, dtype=torch.float16)
    wider = "overflows torch.float16.*pass float32 points"
    with pytest.raises(ValueError, match=wider):
        p3d.knn_points(x, y)
    for kwargs in ({}, {"point_reduction": "max"}, {"batch_reduction": None}):
        with pytest.raises(ValueError, match=wider):
            p3d.chamfer_distance(x, y, **kwargs)
    with pytest.raises(ValueError, match=wider):  # the per-point terms, in either direction
        p3d.chamfer_distance(x, y, point_reduction=None, batch_reduction=None)
    with pytest.raises(ValueError, match=wider):
        p3d.chamfer_distance(
            y, x, point_reduction=None, batch_reduction=None, single_directional=True
        )
    # bfloat16 has float32's range; float32 points are fine.
    assert p3d.chamfer_distance(x.bfloat16(), y.bfloat16())[0].isfinite()
    loss, _ = p3d.chamfer_distance(x.float(), y.float())
    assert loss.item() == pytest.approx(2 * 270000)  # the mean of each direction, summed


def test_a_finite_sum_that_overflows_raises():
    x = torch.zeros(1, 4, 3)
    y = torch.zeros(1, 1, 3)
    x[0, :2, 0] = 1.2e19  # two terms of 1.44e38: their sum fits float32
    assert chamfer_distance(x, y, point_reduction="sum").isfinite()
    x[0, 2, 0] = 1.2e19  # three do not, though each term and their mean would
    for pr in ("sum", "mean"):  # the mean divides the sum: it overflows too
        with pytest.raises(ValueError, match="Chamfer distance overflows torch.float32.*float64"):
            chamfer_distance(x, y, point_reduction=pr)
    assert chamfer_distance(x, y, point_reduction="max").isfinite()
    assert chamfer_distance(x.double(), y.double(), point_reduction="sum").isfinite()
