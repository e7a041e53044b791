"""Image data: readers of the published formats, the paper's splits, the embedded default.

``load_dataset(name, root, ...)`` returns :class:`ImageSplits`; names and roots:

==================  =====================================================================
``digits``          (default, no root) scikit-learn's 8x8 digits upsampled to 28x28
``mnist``           folder of the four MNIST idx files (gz or raw)
``fashion_mnist``   the same layout (default root /usr/share/datasets/fashion-mnist)
``mnist5k``         folder with ``mnist_5k.csv.gz`` (train) + the t10k idx files (test)
``omniglot``        folder of ``images_background*.zip`` (zips of PNGs), or one zip
``omniglot_mat``    the IWAE ``chardata.mat`` (its own train / test split)
``cifar10``         ``cifar-10-python.tar.gz`` or the ``cifar-10-batches-py`` folder
``cifar10_images``  folder / zips of ``train|test/<class>/<image>`` (e.g. the cifar10_jpg zips)
``celeba``          folder with ``img_align_celeba/`` + ``list_eval_partition.txt``
==================  =====================================================================
"""

from __future__ import annotations

from pathlib import Path

from crfold_images.data.celeba import CelebAFolder, read_partition
from crfold_images.data.cifar import load_cifar10, read_image_tree, restricted_loads
from crfold_images.data.idx import load_mnist_idx, read_idx, read_mnist_csv
from crfold_images.data.omniglot import read_omniglot_mat, read_omniglot_zips
from crfold_images.data.sets import (
    ArrayImageSet,
    ImageSplits,
    _fraction_split,
    existing,
    finish_splits,
    load_digits_images,
    paper_val_size,
    resize_uint8,
    split_indices,
)

__all__ = [
    "DATASETS",
    "ArrayImageSet",
    "CelebAFolder",
    "ImageSplits",
    "load_cifar10",
    "load_dataset",
    "load_digits_images",
    "load_mnist_idx",
    "read_idx",
    "read_image_tree",
    "read_mnist_csv",
    "read_omniglot_mat",
    "read_omniglot_zips",
    "read_partition",
    "restricted_loads",
    "split_indices",
]

DATASETS = (
    "digits",
    "mnist",
    "fashion_mnist",
    "mnist5k",
    "omniglot",
    "omniglot_mat",
    "cifar10",
    "cifar10_images",
    "celeba",
)
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"


def _with_val(name: str, images, labels, val_size: int | None):
    """Split a training array into (train, val) with the paper's (None) or an explicit size."""
    n_val = paper_val_size(name, len(images)) if val_size is None else val_size
    val_idx, train_idx = split_indices(len(images), [n_val])
    full = ArrayImageSet(images, labels)
    return full.subset(train_idx), (full.subset(val_idx) if n_val else None)


def load_dataset(
    name: str = "digits",
    root: str | Path | None = None,
    *,
    image_size: int | None = None,
    val_size: int | None = None,
    max_train: int | None = None,
    cache_dir: str | Path | None = None,
) -> ImageSplits:
    """Load a dataset's train / validation / test splits.

    Args:
        name: one of :data:`DATASETS`.
        root: where the files are (see the module table); ignored for "digits"; None: none
            (Fashion-MNIST: its default folder).
        image_size: output side; None keeps the native size (28 for the digit and character
            sets, 32 for CIFAR-10 and CelebA).
        val_size: validation images held out of train; None = the paper's protocol, 0 = none.
        max_train: keep at most this many training images (seeded subset; None = all).
        cache_dir: CelebA's processed-image cache (optional).

    Returns:
        :class:`ImageSplits`.

    Raises:
        ValueError: unknown name or malformed files (naming the file); FileNotFoundError if
            ``root`` lacks the expected files.
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    for key, value, low in (("image_size", image_size, 1), ("val_size", val_size, 0),
                            ("max_train", max_train, 1)):  # fmt: skip
        if value is not None and value < low:
            raise ValueError(f"{key}: expected None or an int >= {low}, got {value}")
    gray_size = image_size or 28
    colour_size = image_size or 32
    if name == "digits":
        images, labels = load_digits_images(gray_size)
        n_test = round(0.2 * len(images))
        n_val = round(0.1 * (len(images) - n_test)) if val_size is None else val_size
        train, val, test = _fraction_split(images, labels, n_val, n_test)
        return finish_splits(name, train, val, test, likelihood="bernoulli", max_train=max_train)
    if name == "fashion_mnist" and root is None:
        root = FASHION_MNIST_ROOT
    root = existing(root, name)
    if name in ("mnist", "fashion_mnist", "mnist5k"):
        if name == "mnist5k":
            csv = root / "mnist_5k.csv.gz" if root.is_dir() else root
            tr_x, tr_y = read_mnist_csv(csv if csv.exists() else root / "mnist_5k.csv")
            test_root = root if root.is_dir() else root.parent
        else:
            tr_x, tr_y = load_mnist_idx(root, "train")
            test_root = root
        te_x, te_y = load_mnist_idx(test_root, "test")
        tr_x, te_x = resize_uint8(tr_x, gray_size), resize_uint8(te_x, gray_size)
        train, val = _with_val(name, tr_x, tr_y, val_size)
        test = ArrayImageSet(te_x, te_y)
        return finish_splits(name, train, val, test, likelihood="bernoulli", max_train=max_train)
    if name == "omniglot":
        zips = [root] if root.is_file() else sorted(root.glob("images_background*.zip"))
        if not zips:
            raise FileNotFoundError(f"{root}: no images_background*.zip")
        images, labels, _ = read_omniglot_zips(zips, gray_size)
        n = len(images)
        n_val = round(n * 1_000 / 19_280) if val_size is None else val_size
        train, val, test = _fraction_split(images, labels, n_val, round(n * 2_000 / 19_280))
        return finish_splits(name, train, val, test, likelihood="bernoulli", max_train=max_train)
    if name == "omniglot_mat":
        path = root / "chardata.mat" if root.is_dir() else root
        tr_x, tr_y = read_omniglot_mat(path, "train")
        te_x, te_y = read_omniglot_mat(path, "test")
        train, val = _with_val(name, resize_uint8(tr_x, gray_size), tr_y, val_size)
        test = ArrayImageSet(resize_uint8(te_x, gray_size), te_y)
        return finish_splits(name, train, val, test, likelihood="bernoulli", max_train=max_train)
    if name in ("cifar10", "cifar10_images"):
        if name == "cifar10":
            (tr_x, tr_y), (te_x, te_y) = load_cifar10(root, "train"), load_cifar10(root, "test")
            tr_x, te_x = resize_uint8(tr_x, colour_size), resize_uint8(te_x, colour_size)
        else:
            tr_x, tr_y, _ = read_image_tree(root, "train", colour_size)
            te_x, te_y, _ = read_image_tree(root, "test", colour_size)
        train, val = _with_val(name, tr_x, tr_y, val_size)
        test = ArrayImageSet(te_x, te_y)
        return finish_splits(name, train, val, test, likelihood="logistic", max_train=max_train)
    # celeba
    sets = [
        CelebAFolder(root, s, colour_size, cache_dir=cache_dir) for s in ("train", "val", "test")
    ]
    return finish_splits(name, *sets, likelihood="logistic", max_train=max_train)
