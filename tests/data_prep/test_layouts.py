"""data_prep.layouts: scanning each published layout, class names, deterministic splits."""

from __future__ import annotations

import json

import pytest

from data_prep.layouts import (
    parse_ratios,
    read_split_csv,
    scan_folder,
    scan_modelnet,
    scan_shapenet,
    stratified_split,
)

from .builders import TAXONOMY, build_folder, build_modelnet, build_shapenet


def test_parse_ratios():
    assert parse_ratios("0.7,0.1,0.2") == (0.7, 0.1, 0.2)
    assert parse_ratios([0.5, 0, 0.5]) == (0.5, 0.0, 0.5)
    for bad in ("0.7,0.3", "0.5,0.5,0.5", "a,b,c", (-0.1, 0.6, 0.5)):
        with pytest.raises(ValueError, match="ratios"):
            parse_ratios(bad)


def test_stratified_split_is_per_class_deterministic_and_order_free():
    keys = {"a": [f"a{i}" for i in range(10)], "b": ["b0", "b1"], "c": ["c0"]}
    split = stratified_split(keys, (0.7, 0.1, 0.2))
    again = stratified_split({k: v[::-1] for k, v in reversed(keys.items())}, (0.7, 0.1, 0.2))
    assert split == again
    counts = {
        c: [sum(split[k] == s for k in ks) for s in ("train", "val", "test")]
        for c, ks in keys.items()
    }
    assert counts == {"a": [7, 1, 2], "b": [1, 0, 1], "c": [1, 0, 0]}
    assert set(stratified_split(keys, (0, 0, 1)).values()) == {"test"}


def test_scan_shapenet_with_taxonomy(tmp_path):
    info = build_shapenet(tmp_path)
    col = scan_shapenet(tmp_path, ratios=(0.5, 0.25, 0.25))
    assert col.classes == ["airplane", "chair", "table"]
    assert {it.path for it in col.items} == set(info["good"]) | set(info["bad"])
    for it in col.items:
        if it.path in info["good"]:
            assert it.label == info["good"][it.path]
    assert [it.path for it in col.items] == sorted(it.path for it in col.items)
    assert {it.split for it in col.items} == {"train", "val", "test"}
    assert col.excluded == []
    # an explicit taxonomy file wins; ratios move models between splits
    (tmp_path / "tax2.json").write_text(json.dumps([{"synsetId": "03001627", "name": "seat"}]))
    col2 = scan_shapenet(tmp_path, taxonomy=tmp_path / "tax2.json", ratios=(0, 0, 1))
    assert col2.classes == ["02691156", "04379243", "seat"]
    assert {it.split for it in col2.items} == {"test"}


def test_scan_shapenet_folder_names_and_split_file(tmp_path):
    info = build_shapenet(tmp_path, taxonomy=False)
    assert scan_shapenet(tmp_path).classes == sorted(TAXONOMY)
    models = sorted(info["models"])
    rows = ["id,synsetId,subSynsetId,modelId,split"]
    wanted = {}
    for i, model in enumerate(models[:-1]):  # the last model is not listed
        wanted[model] = ("train", "val", "test")[i % 3]
        rows.append(f"{i},{info['models'][model]},0,{model},{wanted[model]}")
    (tmp_path / "all.csv").write_text("\n".join(rows) + "\n")
    col = scan_shapenet(tmp_path, split_file=tmp_path / "all.csv")
    got = {it.path.split("/")[1]: it.split for it in col.items}
    assert got == wanted
    assert [p.split("/")[1] for p, _ in col.excluded] == [models[-1]]
    assert col.excluded[0][1] == "not listed in split_file"


def test_split_file_errors(tmp_path):
    (tmp_path / "a.csv").write_text("id,modelId,split\n1,m,training\n")
    with pytest.raises(ValueError, match="split_file.*'training'"):
        read_split_csv(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("id,model\n1,m\n")
    with pytest.raises(ValueError, match="split_file"):
        read_split_csv(tmp_path / "b.csv")
    (tmp_path / "t.json").write_text("{not json")
    with pytest.raises(ValueError, match="taxonomy"):
        scan_shapenet(tmp_path, taxonomy=tmp_path / "t.json")


def test_scan_modelnet(tmp_path):
    info = build_modelnet(tmp_path)
    (tmp_path / "box" / "train" / "readme.txt").write_text("ignored")
    col = scan_modelnet(tmp_path)
    assert col.classes == ["box", "cone", "sphere"]
    assert {it.path for it in col.items} == set(info["good"]) | set(info["bad"])
    for it in col.items:
        assert it.split == it.path.split("/")[1] and it.label == it.path.split("/")[0]


def test_scan_folder(tmp_path):
    info = build_folder(tmp_path)
    (tmp_path / "box" / ".hidden").mkdir()
    (tmp_path / "box" / ".hidden" / "x.obj").write_text("v 0 0 0\n")
    col = scan_folder(tmp_path, ratios=(0.6, 0.2, 0.2))
    assert col.classes == ["box", "cylinder", "sphere"]
    assert {it.path for it in col.items} == set(info["good"]) | set(info["bad"])
    assert {it.split for it in col.items} == {"train", "val", "test"}


def test_scanners_reject_bad_roots(tmp_path):
    with pytest.raises(ValueError, match="root must be an existing directory"):
        scan_modelnet(tmp_path / "absent")
    (tmp_path / "empty_class").mkdir()
    for scan in (scan_shapenet, scan_modelnet, scan_folder):
        with pytest.raises(ValueError, match="holds no"):
            scan(tmp_path)
