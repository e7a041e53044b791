"""CelebA reader: ``img_align_celeba/`` JPEGs + ``list_eval_partition.txt``, decoded lazily.

Published layout (either flat or as in the Google-Drive release, ``Img/img_align_celeba/`` and
``Eval/list_eval_partition.txt``): 202,599 aligned 178x218 JPEGs ``000001.jpg`` ...; each line
of the partition file is ``<file> <0|1|2>`` (train / validation / test: 162,770 / 19,867 /
19,962 images). Images are centre-cropped to ``crop`` x ``crop`` (148, the usual choice for the
aligned faces) and resized to ``size`` (32 for §4.1, 64 for NVAE).

With ``cache_dir`` the processed split is written once to ``<cache_dir>/celeba_<split>_<size>_
<crop>.npy`` (tmp + rename) beside a JSON of its parameters, and memory-mapped on reuse.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from crfold.io import atomic_write_text

__all__ = ["CelebAFolder", "read_partition"]

SPLITS = {"train": 0, "val": 1, "test": 2}


def _find(root: Path, *candidates: str) -> Path:
    for c in candidates:
        if (root / c).exists():
            return root / c
    raise FileNotFoundError(f"{root}: none of {candidates} (CelebA layout expected)")


def read_partition(path: str | Path) -> dict[str, int]:
    """``{file name: partition}`` from ``list_eval_partition.txt``.

    Raises:
        ValueError: naming the file and line on a malformed line or partition outside 0-2.
    """
    path = Path(path)
    out: dict[str, int] = {}
    with open(path, encoding="ascii") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise ValueError(f"{path}:{lineno}: expected '<file> <0|1|2>', got {line!r}")
            out[fields[0]] = int(fields[1])
    if not out:
        raise ValueError(f"{path}: empty partition file")
    return out


class CelebAFolder:
    """One CelebA split, images decoded on access.

    Args:
        root: folder holding ``img_align_celeba/`` (or ``Img/img_align_celeba/``) and
            ``list_eval_partition.txt`` (or ``Eval/list_eval_partition.txt``).
        split: "train", "val" or "test".
        size: output side (32 or 64).
        crop: centre crop side before resizing.
        cache_dir: optional folder for the processed split (see module doc).

    Items: ``(image (3, size, size) uint8 tensor, -1)``; ``get_batch(idx)`` returns
    ``(images (b, 3, size, size) uint8, labels (b,) int64 of -1)``.
    """

    channels = 3

    def __init__(
        self,
        root: str | Path,
        split: str,
        size: int = 32,
        crop: int = 148,
        cache_dir: str | Path | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
        if size < 1 or crop < 1:
            raise ValueError(f"size and crop must be >= 1, got {size}, {crop}")
        root = Path(root)
        self.image_dir = _find(root, "img_align_celeba", "Img/img_align_celeba")
        part = read_partition(
            _find(root, "list_eval_partition.txt", "Eval/list_eval_partition.txt")
        )
        self.files = sorted(f for f, p in part.items() if p == SPLITS[split])
        if not self.files:
            raise ValueError(f"{root}: no images in the {split} partition")
        self.size, self.crop = size, crop
        self.labels = torch.full((len(self.files),), -1, dtype=torch.int64)
        self._array: np.ndarray | None = None
        if cache_dir is not None:
            self._array = self._cached(Path(cache_dir), split)

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, i: int) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        path = self.image_dir / self.files[i]
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                w, h = im.size
                c = min(self.crop, w, h)
                left, top = (w - c) // 2, (h - c) // 2
                im = im.crop((left, top, left + c, top + c))
                im = im.resize((self.size, self.size), Image.Resampling.BICUBIC)
                return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)  # (3, S, S)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise ValueError(f"{path} (image {i}): unreadable image ({exc})") from exc

    def _cached(self, cache_dir: Path, split: str) -> np.ndarray:
        stem = cache_dir / f"celeba_{split}_{self.size}_{self.crop}"
        params = {"files": len(self.files), "first": self.files[0], "last": self.files[-1]}
        params.update(size=self.size, crop=self.crop, source=str(self.image_dir))
        meta, data = stem.with_suffix(".json"), stem.with_suffix(".npy")
        try:
            fresh = meta.is_file() and data.is_file() and json.loads(meta.read_text()) == params
        except json.JSONDecodeError:  # a torn metadata file: rebuild the cache
            fresh = False
        if fresh:
            return np.load(data, mmap_mode="r")
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = stem.with_suffix(".tmp.npy")
        shape = (len(self.files), 3, self.size, self.size)
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        for i in range(len(self.files)):
            arr[i] = self._load(i)
        arr.flush()
        del arr
        os.replace(tmp, data)
        atomic_write_text(meta, json.dumps(params))
        return np.load(data, mmap_mode="r")

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self._array[i] if self._array is not None else self._load(i)
        return torch.from_numpy(np.array(img)), -1

    def get_batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (b, 3, S, S) uint8 and labels (b,) int64 (all -1) for indices (b,)."""
        imgs = np.stack([self[int(i)][0].numpy() for i in idx])
        return torch.from_numpy(imgs), self.labels[idx]
