"""Tests for crfold_images.data.celeba: img_align_celeba + list_eval_partition.txt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crfold_images.data import CelebAFolder, load_dataset, read_partition


def write_celeba(root: Path, n: int = 9, nested: bool = False) -> None:
    """178x218 JPEGs 000001.jpg..., a partition line per image (0 train, 1 val, 2 test)."""
    img_dir = root / ("Img/img_align_celeba" if nested else "img_align_celeba")
    img_dir.mkdir(parents=True)
    lines = []
    for i in range(1, n + 1):
        a = np.zeros((218, 178, 3), dtype=np.uint8)  # black border, a white central 148 square
        a[35:183, 15:163] = 255
        a[35:183, 15:163, 0] = 20 * i  # red tells the images apart
        Image.fromarray(a).save(img_dir / f"{i:06d}.jpg", quality=95)
        lines.append(f"{i:06d}.jpg {0 if i <= 5 else (1 if i <= 7 else 2)}")
    part = root / ("Eval/list_eval_partition.txt" if nested else "list_eval_partition.txt")
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("nested", [False, True])
def test_celeba_folder_crop_resize(tmp_path, nested):
    write_celeba(tmp_path, nested=nested)
    train = CelebAFolder(tmp_path, "train", size=32)
    assert len(train) == 5 and len(CelebAFolder(tmp_path, "test", size=64)) == 2
    img, label = train[0]
    assert img.shape == (3, 32, 32) and img.dtype == torch.uint8 and label == -1
    # The centre 148 crop is the white square: no black border survives the crop.
    assert int(img[1].min()) > 200
    assert abs(int(train[2][0][0].float().mean()) - 60) < 12  # image 3 has red 60
    x, y = train.get_batch(torch.tensor([4, 1]))
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [-1, -1]


def test_celeba_splits_cache_and_budget(tmp_path):
    write_celeba(tmp_path)
    s = load_dataset("celeba", tmp_path, max_train=3, cache_dir=tmp_path / "cache")
    assert (len(s.train), len(s.val), len(s.test)) == (3, 2, 2)
    assert (s.channels, s.image_size, s.num_classes) == (3, 32, 0)
    cached = CelebAFolder(tmp_path, "val", size=32, cache_dir=tmp_path / "cache")
    direct = CelebAFolder(tmp_path, "val", size=32)
    assert torch.equal(cached[1][0], direct[1][0])
    assert (tmp_path / "cache" / "celeba_val_32_148.npy").is_file()


def test_partition_errors(tmp_path):
    p = tmp_path / "list_eval_partition.txt"
    p.write_text("000001.jpg 0\n000002.jpg 3\n")
    with pytest.raises(ValueError, match="list_eval_partition.txt:2"):
        read_partition(p)
    write_celeba(tmp_path / "c")
    (tmp_path / "c" / "img_align_celeba" / "000002.jpg").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="000002.jpg"):
        CelebAFolder(tmp_path / "c", "train")[1]
    with pytest.raises(FileNotFoundError, match="img_align_celeba"):
        CelebAFolder(tmp_path / "nothing", "train")
