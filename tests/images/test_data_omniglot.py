"""Tests for crfold_images.data.omniglot: the published PNG zips and chardata.mat."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crfold_images.data import load_dataset, read_omniglot_mat, read_omniglot_zips

# Real samples of the data sets: under $CRFOLD_DATA, else the checkout's sibling shared/data.
SHARED = Path(
    os.environ.get("CRFOLD_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data"
)


def _png(stroke_col: int) -> bytes:
    """A 105x105 1-bit PNG, white background, one black vertical stroke."""
    a = np.ones((105, 105), dtype=bool)
    a[20:85, stroke_col : stroke_col + 8] = False
    buf = io.BytesIO()
    Image.fromarray(a).convert("1").save(buf, format="PNG")
    return buf.getvalue()


def write_omniglot_zip(path: Path, top: str, alphabets: dict[str, int], drawers: int = 3) -> int:
    """``<top>/<Alphabet>/characterNN/<id>_<drawer>.png``, as in images_background.zip."""
    n = 0
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{top}/", b"")
        for alpha, n_chars in alphabets.items():
            for c in range(1, n_chars + 1):
                folder = f"{top}/{alpha}/character{c:02d}"
                for d in range(1, drawers + 1):
                    zf.writestr(f"{folder}/{c:04d}_{d:02d}.png", _png(10 * c))
                    n += 1
    return n


def test_zip_reader_layout_dedupe_and_labels(tmp_path):
    write_omniglot_zip(tmp_path / "images_background_small1.zip", "images_background_small1",
                       {"Greek": 2, "Latin": 1})  # fmt: skip
    write_omniglot_zip(tmp_path / "images_background_small2.zip", "images_background_small2",
                       {"Greek": 2, "Tagalog": 2})  # fmt: skip
    zips = sorted(tmp_path.glob("*.zip"))
    images, labels, classes = read_omniglot_zips(zips, size=28)
    assert classes == ["Greek/character01", "Greek/character02", "Latin/character01",
                       "Tagalog/character01", "Tagalog/character02"]  # fmt: skip
    assert images.shape == (15, 1, 28, 28) and images.dtype == np.uint8  # Greek read once
    assert np.bincount(labels).tolist() == [3] * 5
    # Strokes are 255 on a 0 background; the stroke of character c sits at column ~10c/105*28.
    assert images[0].mean() < 60 and images.max() == 255
    cols = images[labels == 1][0, 0].mean(axis=0)
    assert abs(int(cols.argmax()) - round((20 + 4) * 28 / 105)) <= 1


def test_zip_errors_name_the_file(tmp_path):
    bad = tmp_path / "images_background.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="images_background.zip"):
        read_omniglot_zips([bad])
    corrupt = tmp_path / "corrupt.zip"
    with zipfile.ZipFile(corrupt, "w") as zf:
        zf.writestr("top/Greek/character01/0001_01.png", b"\x89PNG garbage")
    with pytest.raises(ValueError, match="0001_01.png"):
        read_omniglot_zips([corrupt])


def test_omniglot_split_fractions(tmp_path):
    write_omniglot_zip(tmp_path / "images_background.zip", "images_background",
                       {f"A{i}": 4 for i in range(10)}, drawers=5)  # fmt: skip
    s = load_dataset("omniglot", tmp_path)
    n = 200
    assert len(s.test) == round(n * 2000 / 19280) and len(s.val) == round(n * 1000 / 19280)
    assert len(s.train) + len(s.val) + len(s.test) == n and s.num_classes == 40


def test_chardata_mat_orientation(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    imgs = {
        k: (rng.random((n, 28, 28)) > 0.7).astype(np.float64) for k, n in (("tr", 6), ("te", 4))
    }
    imgs["tr"][0] = 0.0
    imgs["tr"][0, 3, :] = 1.0  # a horizontal line on row 3
    # Column j = image j flattened column-major (Fortran order), as in Burda et al.'s release.
    mat = {
        "data": np.stack([im.flatten(order="F") for im in imgs["tr"]], axis=1),
        "testdata": np.stack([im.flatten(order="F") for im in imgs["te"]], axis=1),
        "target": np.eye(50)[:, [0, 1, 2, 0, 1, 2]],
        "testtarget": np.eye(50)[:, [3, 3, 4, 4]],
    }
    savemat(tmp_path / "chardata.mat", mat)
    x, y = read_omniglot_mat(tmp_path / "chardata.mat", "train")
    assert x.shape == (6, 1, 28, 28) and np.array_equal(x[:, 0] // 255, imgs["tr"].astype(np.uint8))
    assert x[0, 0, 3].min() == 255 and x[0, 0, :, 3].sum() == 255  # a row, not a column
    assert y.tolist() == [0, 1, 2, 0, 1, 2]
    xt, yt = read_omniglot_mat(tmp_path / "chardata.mat", "test")
    assert xt.shape == (4, 1, 28, 28) and yt.tolist() == [3, 3, 4, 4]
    s = load_dataset("omniglot_mat", tmp_path / "chardata.mat", val_size=1)
    assert (len(s.train), len(s.val), len(s.test)) == (5, 1, 4)
    savemat(tmp_path / "bad.mat", {"data": np.full((784, 2), 2.0)})
    with pytest.raises(ValueError, match="bad.mat"):
        read_omniglot_mat(tmp_path / "bad.mat", "train")


def test_shared_omniglot_sample():
    root = SHARED / "omniglot"
    if not (root / "images_background_small1.zip").is_file():
        pytest.skip(f"shared Omniglot sample not found at {root}")
    s = load_dataset("omniglot", root)
    assert len(s.train) + len(s.val) + len(s.test) == 4840  # the two small sets, deduplicated
    assert s.num_classes == 242 and s.image_size == 28
    assert 10 < float(s.test.images.float().mean()) < 40  # thin strokes on black
