"""Image splits for (CR-)NVAE runs, held in memory as uint8 tensors.

Reads through :mod:`crfold_images.data` (the project's readers of the published formats):

* ``mnist``: ``<root>/train-images-idx3-ubyte[.gz]`` etc.; when the train idx files are absent
  (as in the project's MNIST sample) the 5,000-image ``mnist_5k.csv.gz`` is the train split.
* ``fashion_mnist``: idx files.
* ``cifar10``: the python pickle release, or ``<split>/<class>/*.jpg`` zips / folders.
* ``celeba64``: ``img_align_celeba`` + ``list_eval_partition.txt``, centre-cropped 148, resized
  to 64, cached once as .npy under ``~/.cache/crfold``.
* ``random``: synthetic class-dependent blobs (tests, smoke runs).

Where the data is (:func:`data_root`): ``data_root`` when the config sets it (a relative path
that does not exist from the working directory is read under ``$CRFOLD_DATA``), else the
dataset's folder under ``$CRFOLD_DATA`` (:data:`DATA_FOLDERS`: ``mnist``, ``cifar10_jpg``,
``celeba``); Fashion-MNIST is first looked for in ``/usr/share/datasets/fashion-mnist``. A
missing folder raises the FileNotFoundError of :func:`crfold.config.resolve_data_path`, which says
how to give it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from crfold.config import DATA_ENV, resolve_data_path

__all__ = [
    "DATA_FOLDERS",
    "ImageData",
    "data_root",
    "default_root",
    "load_images",
    "synthetic_images",
]

# dataset -> its folder under $CRFOLD_DATA when the config gives no data_root
DATA_FOLDERS = {
    "mnist": "mnist",
    "fashion_mnist": "fashion-mnist",
    "cifar10": "cifar10_jpg",
    "celeba64": "celeba",
}
# dataset -> a system-wide location looked at before $CRFOLD_DATA
SYSTEM_ROOTS = {"fashion_mnist": Path("/usr/share/datasets/fashion-mnist")}


@dataclass
class ImageData:
    """Train and test images with labels.

    Attributes:
        train_x: (N, C, H, W) uint8.
        train_y: (N,) int64 class indices (-1 where unlabelled).
        test_x: (M, C, H, W) uint8.
        test_y: (M,) int64.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def observed(self, split: str, likelihood: str, seed: int) -> torch.Tensor:
        """A split as the model sees it at evaluation: float32 (N, C, H, W).

        Bernoulli: binarized once, pixel ~ Bernoulli(grey / 255) with a generator seeded by
        ``seed`` (so every evaluation of a run sees the same binary images); otherwise grey /
        255 in [0, 1].
        """
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        x = (self.train_x if split == "train" else self.test_x).float() / 255.0
        if likelihood == "bernoulli":
            g = torch.Generator().manual_seed(seed + (0 if split == "train" else 1))
            return torch.bernoulli(x, generator=g)
        return x


def default_root(dataset: str) -> Path:
    """Where ``dataset`` is looked for when the config gives no ``data_root`` (not checked).

    The system location if the dataset has one and it exists, else
    ``$CRFOLD_DATA/<folder>`` (the bare folder name when ``$CRFOLD_DATA`` is unset).
    """
    if dataset not in DATA_FOLDERS:
        raise ValueError(f"dataset: no default root for {dataset!r}")
    system = SYSTEM_ROOTS.get(dataset)
    if system is not None and system.exists():
        return system
    env = os.environ.get(DATA_ENV)
    return Path(env) / DATA_FOLDERS[dataset] if env else Path(DATA_FOLDERS[dataset])


def data_root(dataset: str, value: str | None) -> Path:
    """The existing folder (or file) of ``dataset``: ``value`` if given, else the default.

    Raises:
        ValueError: ``dataset`` has no files (``random``) or is unknown.
        FileNotFoundError: the folder does not exist; the message names ``data_root`` and
            ``$CRFOLD_DATA`` (:func:`crfold.config.resolve_data_path`).
    """
    if value:
        return resolve_data_path(value, "data_root")
    default = default_root(dataset)
    if default != Path(DATA_FOLDERS[dataset]) and default.exists():  # system or $CRFOLD_DATA
        return default
    return resolve_data_path(DATA_FOLDERS[dataset], "data_root")


def synthetic_images(
    n_train: int, n_test: int, channels: int, size: int, seed: int = 0, classes: int = 2
) -> ImageData:
    """Random images whose class sets the position of a bright blob (a learnable toy task)."""
    g = torch.Generator().manual_seed(seed)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, classes, (n,), generator=g)
        coords = torch.arange(size, dtype=torch.float32)
        centre = (y.float() + 1.0) * size / (classes + 1)  # (n,)
        jitter = torch.randn(n, 2, generator=g)
        dy = coords[None, :, None] - (centre + jitter[:, 0])[:, None, None]
        dx = coords[None, None, :] - (size / 2 + jitter[:, 1])[:, None, None]
        blob = torch.exp(-(dx**2 + dy**2) / (2 * (size / 6) ** 2))  # (n, H, W)
        noise = 0.1 * torch.rand(n, channels, size, size, generator=g)
        x = (blob[:, None] + noise).clamp(0, 1)
        return (x * 255).round().to(torch.uint8), y

    (trx, tr_y), (tex, te_y) = make(n_train), make(n_test)
    return ImageData(trx, tr_y, tex, te_y)


def _read(dataset: str, root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    from crfold_images.data import cifar, idx

    if dataset in ("mnist", "fashion_mnist"):
        if split == "train" and dataset == "mnist":
            try:
                idx.find_idx(root, "train-images-idx3-ubyte")
            except FileNotFoundError:
                if (root / "mnist_5k.csv.gz").is_file():
                    return idx.read_mnist_csv(root / "mnist_5k.csv.gz")
        return idx.load_mnist_idx(root, split)
    if dataset == "cifar10":
        if any(root.glob("*.zip")) or (root / split).is_dir():
            images, labels, _ = cifar.read_image_tree(root, split, size=32)
            return images, labels
        return cifar.load_cifar10(root, split)
    if dataset == "celeba64":
        from crfold_images.data.celeba import CelebAFolder

        folder = CelebAFolder(
            root, split, size=64, cache_dir=Path.home() / ".cache" / "crfold" / "celeba"
        )
        images = np.stack([folder[i][0].numpy() for i in range(len(folder))])
        return images, folder.labels.numpy()
    raise ValueError(f"dataset: unknown {dataset!r}")


def _subset(
    x: np.ndarray, y: np.ndarray, n: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded shuffle of the split, then its first ``n`` items (all when None)."""
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    if n is not None:
        perm = perm[:n]
    xt = torch.from_numpy(np.ascontiguousarray(x))[perm]
    return xt, torch.from_numpy(np.asarray(y, dtype=np.int64))[perm]


def load_images(cfg) -> ImageData:
    """The train/test splits named by ``cfg`` (an ``NVAEConfig``), shuffled by data_seed.

    Raises:
        ValueError: the images' shape disagrees with ``in_channels`` / ``data_size``.
        FileNotFoundError: the dataset folder is absent (the message says how to give it).
    """
    if cfg.dataset == "random":
        data = synthetic_images(
            cfg.num_train or 64, cfg.num_test or 32, cfg.in_channels, cfg.data_size, cfg.data_seed
        )
    else:
        root = data_root(cfg.dataset, cfg.data_root)
        trx, tr_y = _subset(*_read(cfg.dataset, root, "train"), cfg.num_train, cfg.data_seed)
        tex, te_y = _subset(*_read(cfg.dataset, root, "test"), cfg.num_test, cfg.data_seed + 1)
        data = ImageData(trx, tr_y, tex, te_y)
    expected = (cfg.in_channels, cfg.data_size, cfg.data_size)
    for name in ("train_x", "test_x"):
        if tuple(getattr(data, name).shape[1:]) != expected:
            raise ValueError(
                f"{cfg.dataset} {name} has images of shape {tuple(getattr(data, name).shape[1:])},"
                f" the config expects {expected} (in_channels, data_size)"
            )
    return data
