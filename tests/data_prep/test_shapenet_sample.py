"""The real ShapeNetCore.v2 sample (../shared/data/shapenetcore_v2_sample) converts completely."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crfold.data import HDF5PointClouds
from data_prep import prepare_shapenet

SAMPLE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "shapenetcore_v2_sample"
COUNTS = {"aeroplane": 2, "bathtub": 8, "bench": 7, "bottle": 8, "chair": 9,
          "cup": 10, "piano": 7, "rifle": 3, "toilet": 3, "vase": 9}  # fmt: skip


def test_shapenet_sample_converts(tmp_path):
    if not SAMPLE.is_dir():
        pytest.skip(f"shared ShapeNet sample absent: {SAMPLE}")
    sampling = {"num_points": 512, "dense_factor": 4}
    result = prepare_shapenet(SAMPLE, tmp_path, sampling=sampling, workers=0, progress=False)
    assert result.skipped == [] and result.exit_status == 0
    assert result.converted == result.total == 66
    per_class = {c: 0 for c in COUNTS}
    for split in ("train", "val", "test"):
        ds = HDF5PointClouds(tmp_path, split=split)
        assert ds.classes == sorted(COUNTS)
        assert ds.points.shape[1:] == (512, 3) and bool(torch.isfinite(ds.points).all())
        norms = ds.points.norm(dim=-1).amax(dim=1)
        torch.testing.assert_close(norms, torch.ones_like(norms))
        for f, label in zip(ds.sample_files, ds.labels.tolist()):
            assert f.startswith(f"{ds.classes[label]}/") and f.endswith("model_normalized.obj")
            per_class[ds.classes[label]] += 1
        # every class with at least 2 models appears in train
        if split == "train":
            assert set(ds.labels.tolist()) == set(range(10))
    assert per_class == COUNTS
