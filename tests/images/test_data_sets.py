"""Tests for crfold_images.data.sets and load_dataset: the embedded default, splits, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crfold_images.data import ArrayImageSet, load_dataset, split_indices
from crfold_images.data.sets import resize_uint8


def test_digits_default():
    s = load_dataset()
    assert s.name == "digits" and (s.channels, s.image_size, s.likelihood) == (1, 28, "bernoulli")
    assert len(s.train) + len(s.val) + len(s.test) == 1797
    assert len(s.test) == 359 and s.num_classes == 10
    x, y = s.train.get_batch(torch.arange(4))
    assert x.shape == (4, 1, 28, 28) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert int(x.max()) == 255 and int(x.min()) == 0
    again = load_dataset()
    assert torch.equal(s.test.images, again.test.images)  # the split never depends on the seed
    small = load_dataset("digits", max_train=100, val_size=0)
    assert len(small.train) == 100 and small.val is None


def test_split_indices_partition():
    a, b, rest = split_indices(50, [10, 5], seed=1)
    assert len(a) == 10 and len(b) == 5 and len(rest) == 35
    assert sorted(np.concatenate([a, b, rest]).tolist()) == list(range(50))
    with pytest.raises(ValueError, match="split sizes"):
        split_indices(5, [4, 4])


def test_resize_uint8_keeps_range():
    x = np.zeros((2, 1, 8, 8), dtype=np.uint8)
    x[:, :, 2:6, 2:6] = 255
    up = resize_uint8(x, 28)
    down = resize_uint8(up, 8)
    assert up.shape == (2, 1, 28, 28) and up.dtype == np.uint8 and up.max() == 255
    assert down.shape == (2, 1, 8, 8) and down[0, 0, 4, 4] > 200 and down[0, 0, 0, 0] < 30


def test_array_set_validation_and_errors(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        ArrayImageSet(np.zeros((2, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="labels"):
        ArrayImageSet(np.zeros((2, 1, 4, 4), np.uint8), [1, 2, 3])
    with pytest.raises(ValueError, match="name must be one of"):
        load_dataset("imagenet")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("mnist", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="data root"):
        load_dataset("mnist")  # None: no root given


def test_none_is_the_only_not_set_value():
    s = load_dataset("digits", image_size=None, val_size=None, max_train=None)
    assert s.image_size == 28 and len(s.val) == 144  # the native size, 10 % of the rest
    for key, bad in (("image_size", 0), ("val_size", -1), ("max_train", 0)):
        with pytest.raises(ValueError, match=key):
            load_dataset("digits", **{key: bad})
