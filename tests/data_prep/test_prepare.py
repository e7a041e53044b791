"""End to end: each layout's Python entry point, read back through crfold.data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from crfold.data import HDF5PointClouds
from data_prep import prepare_folder, prepare_modelnet, prepare_shapenet
from data_prep.output import ManifestMismatch

from .builders import build_folder, build_modelnet, build_shapenet, shape, write

SAMPLING = {"num_points": 64, "dense_factor": 4}
RUN = {"workers": 0, "progress": False}


def read_back(out, result) -> dict[str, tuple[str, str]]:
    """Read every split through HDF5PointClouds; return {source file: (class, split)}."""
    seen = {}
    for split, info in result.splits.items():
        ds = HDF5PointClouds(out, split=split)
        assert [p.name for p in ds.files] == info["shards"]
        assert ds.points.shape == (info["samples"], SAMPLING["num_points"], 3)
        norms = ds.points.norm(dim=-1).amax(dim=1)  # (N,)
        torch.testing.assert_close(norms, torch.ones_like(norms))
        torch.testing.assert_close(
            ds.points.mean(dim=1), torch.zeros(len(ds), 3), atol=1e-5, rtol=0
        )
        points, label = ds[0]
        assert points.shape == (SAMPLING["num_points"], 3) and int(label) == int(ds.labels[0])
        for f, lab in zip(ds.sample_files, ds.labels.tolist()):
            seen[f] = (ds.classes[lab], split)
    assert result.converted == len(seen) == sum(s["samples"] for s in result.splits.values())
    return seen


def _points_of(out, rel: str) -> np.ndarray:
    for split in ("train", "val", "test"):
        ds = HDF5PointClouds(out, split=split)
        if rel in ds.sample_files:
            return ds.points[ds.sample_files.index(rel)].numpy()
    raise AssertionError(f"{rel} not in {out}")


def check_report(out, result, bad: dict[str, str]) -> None:
    report = json.loads((out / "report.json").read_text())
    reasons = {s["path"]: s["reason"] for s in report["skipped"]}
    assert set(reasons) == set(bad)
    for path, words in bad.items():
        assert words in reasons[path], (path, reasons[path])
    assert report["exit_status"] == result.exit_status == (3 if bad else 0)
    assert (
        report["total"]
        == result.total
        == result.converted + len(bad)
        == len(report["skipped"]) + report["converted"]
    )


def test_modelnet(tmp_path):
    info = build_modelnet(tmp_path / "ModelNet40")
    out = tmp_path / "out"
    result = prepare_modelnet(tmp_path / "ModelNet40", out, sampling=SAMPLING, **RUN)
    assert result.name == "modelnet40"
    seen = read_back(out, result)
    assert seen == {rel: cls_split for rel, cls_split in info["good"].items()}
    check_report(out, result, info["bad"])
    assert (out / "shape_names.txt").read_text().split() == ["box", "cone", "sphere"]
    assert json.loads((out / "manifest.json").read_text())["axis"] == "z-up-to-y-up"
    assert sorted(p.name for p in out.glob("*.h5")) == [
        "modelnet40_test0.h5",
        "modelnet40_train0.h5",
    ]
    with pytest.raises(FileNotFoundError):
        HDF5PointClouds(out, split="val")
    assert "converted" in result.summary() and "6 skipped" in result.summary()


def test_folder_shards_resume_and_parameter_change(tmp_path):
    info = build_folder(tmp_path / "meshes")
    out = tmp_path / "out"
    kwargs = {"ratios": (0.6, 0.2, 0.2), "sampling": SAMPLING, "shard_size": 4, **RUN}
    result = prepare_folder(tmp_path / "meshes", out, **kwargs)
    seen = read_back(out, result)
    assert {f: c for f, (c, _) in seen.items()} == info["good"]
    check_report(out, result, info["bad"])
    assert result.splits["train"]["shards"] == [
        "meshes_train0.h5",
        "meshes_train1.h5",
        "meshes_train2.h5",
    ]
    assert result.computed == result.total
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("*.h5")}
    again = prepare_folder(tmp_path / "meshes", out, **kwargs)  # everything finished: no work
    assert again.computed == 0 and again.converted == result.converted
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("*.h5")} == before
    edited = sorted(info["good"])[0]  # replace one mesh: only it is converted again
    old_points = _points_of(out, edited)
    write(tmp_path / "meshes" / edited, shape("cone", np.random.default_rng(9)))
    third = prepare_folder(tmp_path / "meshes", out, **kwargs)
    assert third.computed == 1 and not np.array_equal(_points_of(out, edited), old_points)
    assert len(list((out / ".cache").iterdir())) == result.total  # the stale entry is pruned
    with pytest.raises(ManifestMismatch, match="num_points"):
        prepare_folder(tmp_path / "meshes", out, **(kwargs | {"sampling": {"num_points": 32}}))
    redo = prepare_folder(
        tmp_path / "meshes", out, **(kwargs | {"sampling": {"num_points": 32}, "overwrite": True})
    )
    assert redo.computed == redo.total
    assert HDF5PointClouds(out, split="test").points.shape[1] == 32


def test_shapenet_with_taxonomy_and_split_file(tmp_path):
    root = tmp_path / "ShapeNetCore.v2"
    info = build_shapenet(root)
    models = sorted(info["models"])
    rows = ["id,synsetId,subSynsetId,modelId,split"]
    rows += [
        f"{i},{info['models'][m]},0,{m},{('train', 'test')[i % 2]}"
        for i, m in enumerate(models[1:])
    ]
    (root / "all.csv").write_text("\n".join(rows) + "\n")
    result = prepare_shapenet(
        root, tmp_path / "out", split_file=root / "all.csv", sampling=SAMPLING, **RUN
    )
    seen = read_back(tmp_path / "out", result)
    listed = {rel: c for rel, c in info["good"].items() if rel.split("/")[1] != models[0]}
    assert {f: c for f, (c, _) in seen.items()} == listed
    assert [e["path"].split("/")[1] for e in result.excluded] == [models[0]]
    check_report(
        tmp_path / "out", result, {k: v for k, v in info["bad"].items() if models[0] not in k}
    )
    names = json.loads((tmp_path / "out" / "shapenetcorev2_train0_id2name.json").read_text())
    assert set(names) <= {"airplane", "chair", "table"}


def test_worker_pool_matches_in_process_run(tmp_path):
    info = build_folder(tmp_path / "meshes", per_class=3)
    serial = prepare_folder(tmp_path / "meshes", tmp_path / "a", sampling=SAMPLING, **RUN)
    pooled = prepare_folder(
        tmp_path / "meshes", tmp_path / "b", sampling=SAMPLING, workers=2, progress=False
    )
    assert pooled.splits == serial.splits and pooled.skipped == serial.skipped
    assert len(pooled.skipped) == len(info["bad"])
    for split in serial.splits:
        a, b = HDF5PointClouds(tmp_path / "a", split), HDF5PointClouds(tmp_path / "b", split)
        torch.testing.assert_close(a.points, b.points, rtol=0, atol=0)
        assert torch.equal(a.labels, b.labels) and a.sample_files == b.sample_files


def test_clean_cache_and_name_checks(tmp_path):
    build_folder(tmp_path / "meshes", per_class=2)
    out = tmp_path / "out"
    prepare_folder(tmp_path / "meshes", out, sampling=SAMPLING, keep_cache=False, **RUN)
    cache = sorted(p.suffix for p in (out / ".cache").iterdir())
    assert ".npy" not in cache and ".err" in cache  # failures are remembered, clouds dropped
    with pytest.raises(ValueError, match="must not contain"):
        prepare_folder(tmp_path / "meshes", tmp_path / "o2", name="my_test", **RUN)
    with pytest.raises(ValueError, match="workers"):
        prepare_folder(tmp_path / "meshes", tmp_path / "o3", workers=-1, progress=False)
    assert np.isclose(sum(json.loads((out / "manifest.json").read_text())["ratios"]), 1)
