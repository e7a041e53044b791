"""In-memory image sets, the paper's splits, the embedded default, and ``load_dataset``.

Every set serves ``(image (C, H, W) uint8, label)`` items and, for the training loop,
``get_batch(idx) -> (images (b, C, H, W) uint8, labels (b,) int64)``; labels are -1 where a set
has none. Splits are drawn by a fixed generator (``SPLIT_SEED``), independent of the training
seed, so every seed of an experiment sees the same train / validation / test images.

Paper splits (§4.1): MNIST and Fashion-MNIST hold out 10,000 of the 60,000 training images for
validation (1/6 of the training set when it is smaller, e.g. 833 of the shared 5k subset);
Omniglot (the 19,280 background images) 16,280 / 1,000 / 2,000 at random, the same fractions for
other sizes; CIFAR-10 has no validation split; CelebA uses its official partition.

Embedded default (``"digits"``): scikit-learn's ``load_digits`` (1,797 8x8 images, 17 grey
levels), upsampled bilinearly to 28x28 so the conv nets, the 28 px augmentation ranges and the
Bernoulli likelihood apply unchanged; 20 % test, 10 % of the rest validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "ArrayImageSet",
    "ImageSplits",
    "SubsetView",
    "load_digits_images",
    "resize_uint8",
    "split_indices",
]

SPLIT_SEED = 20211206  # fixed: splits never depend on the training seed


class ArrayImageSet:
    """Images held in memory.

    Args:
        images: (N, C, H, W) uint8 array or tensor.
        labels: (N,) integer labels (-1 = unlabeled) or None.
    """

    def __init__(self, images: np.ndarray | torch.Tensor, labels=None) -> None:
        images = torch.as_tensor(np.asarray(images))
        if images.dim() != 4 or images.dtype != torch.uint8:
            raise ValueError(
                f"images must be (N, C, H, W) uint8, got {tuple(images.shape)} {images.dtype}"
            )
        n = images.shape[0]
        if labels is None:
            labels = torch.full((n,), -1, dtype=torch.int64)
        labels = torch.as_tensor(np.asarray(labels)).to(torch.int64)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
        self.images, self.labels = images, labels
        self.channels = images.shape[1]

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    def get_batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, C, H, W) uint8 images and (b,) int64 labels for indices idx (b,)."""
        return self.images[idx], self.labels[idx]

    def subset(self, idx: np.ndarray | torch.Tensor) -> ArrayImageSet:
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.int64)
        return ArrayImageSet(self.images[idx], self.labels[idx])


class SubsetView:
    """The items ``idx`` of a lazily decoded set (e.g. :class:`CelebAFolder`)."""

    def __init__(self, base: object, idx: np.ndarray) -> None:
        self.base, self.idx = base, torch.as_tensor(np.asarray(idx), dtype=torch.int64)
        self.labels = base.labels[self.idx]

    def __len__(self) -> int:
        return int(self.idx.shape[0])

    def __getitem__(self, i: int):
        return self.base[int(self.idx[i])]

    def get_batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.base.get_batch(self.idx[idx])


@dataclass
class ImageSplits:
    """A dataset's splits and what the models need to know about it.

    Attributes:
        name: dataset name.
        train, val, test: the sets (val may be None).
        channels: C.
        image_size: S (square images).
        num_classes: distinct labels (0 if unlabeled).
        likelihood: the default pixel likelihood ("bernoulli" for grayscale digit/character
            sets, dynamically binarized; "logistic" for colour).
    """

    name: str
    train: object
    val: object | None
    test: object
    channels: int
    image_size: int
    num_classes: int
    likelihood: str


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """Resize (N, C, H, W) uint8 images to (N, C, size, size): area when shrinking, bilinear
    when enlarging."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    x = torch.from_numpy(np.ascontiguousarray(images)).float()
    mode = "area" if size < images.shape[-1] else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    y = F.interpolate(x, size=(size, size), mode=mode, **kwargs)
    return y.round().clamp(0, 255).to(torch.uint8).numpy()


def split_indices(n: int, sizes: list[int], seed: int = SPLIT_SEED) -> list[np.ndarray]:
    """A seeded permutation of range(n) cut into consecutive pieces of ``sizes`` (the rest last).

    Raises:
        ValueError: if the sizes exceed n.
    """
    if sum(sizes) > n or min(sizes, default=0) < 0:
        raise ValueError(f"split sizes {sizes} do not fit {n} examples")
    perm = np.random.default_rng(seed).permutation(n)
    out, start = [], 0
    for s in sizes:
        out.append(np.sort(perm[start : start + s]))
        start += s
    out.append(np.sort(perm[start:]))
    return out


def load_digits_images(size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (1797, 1, size, size) uint8 images and (1797,) int64 labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (np.asarray(d.images, dtype=np.float64) / 16.0 * 255.0).round().astype(np.uint8)
    return resize_uint8(x[:, None], size), np.asarray(d.target, dtype=np.int64)


def _fraction_split(
    images: np.ndarray, labels: np.ndarray, val: int, test: int
) -> tuple[ArrayImageSet, ArrayImageSet | None, ArrayImageSet]:
    val_idx, test_idx, train_idx = split_indices(len(images), [val, test])
    full = ArrayImageSet(images, labels)
    return full.subset(train_idx), (full.subset(val_idx) if val else None), full.subset(test_idx)


def finish_splits(
    name: str,
    train: ArrayImageSet | object,
    val: object | None,
    test: object,
    *,
    likelihood: str,
    max_train: int | None = None,
) -> ImageSplits:
    """Cap the training set at ``max_train`` images (seeded, None = all) and package the splits."""
    if max_train is not None and max_train < len(train):
        (keep, _) = split_indices(len(train), [max_train])
        train = train.subset(keep) if isinstance(train, ArrayImageSet) else SubsetView(train, keep)
    first = train[0][0]
    labels = train.labels
    num_classes = int(labels.max()) + 1 if bool((labels >= 0).any()) else 0
    return ImageSplits(
        name=name,
        train=train,
        val=val,
        test=test,
        channels=int(first.shape[0]),
        image_size=int(first.shape[-1]),
        num_classes=num_classes,
        likelihood=likelihood,
    )


def paper_val_size(name: str, n_train: int) -> int:
    """Validation images held out of a training set of ``n_train`` by the paper's protocol."""
    if name in ("mnist", "mnist5k", "fashion_mnist"):
        return round(n_train * 10_000 / 60_000)
    if name == "omniglot_mat":
        return round(n_train * 1_000 / 17_280)
    return 0


def existing(path: str | Path | None, what: str) -> Path:
    """``path`` as a Path; FileNotFoundError when it is None or does not exist."""
    if path is None or not str(path):
        raise FileNotFoundError(f"{what}: needs the folder / file of its data, got no data root")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data root {str(path)!r} for {what} does not exist")
    return path
