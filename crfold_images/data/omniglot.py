"""Omniglot readers: the published zips of PNGs and the 28x28 ``chardata.mat`` of IWAE work.

Zips (github brendenlake/omniglot): ``images_background.zip`` (964 characters of 30 alphabets,
20 drawers each: the paper's 19,280 images), ``images_evaluation.zip``, and the small sets
``images_background_small{1,2}.zip``; inside, ``<top>/<Alphabet>/characterNN/<id>_<drawer>.png``,
105x105 1-bit PNGs with white background. Images are inverted (strokes = 1) and area-resized to
``size`` px; the class label is the character (alphabet + character folder). The same file in
two zips (the two small sets overlap) is read once.

``chardata.mat`` (Burda et al.'s IWAE release, used by jxhe/vae-lagging-encoder): ``data``
(784, 24345) and ``testdata`` (784, 8070) float in [0, 1], each column a 28x28 image stored
column-major (Fortran order), and ``target`` / ``testtarget`` (50, N) one-hot alphabets.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["read_omniglot_mat", "read_omniglot_zips"]

MAX_ZIP_MEMBERS = 200_000  # the full Omniglot has 32,460 images


def _decode_png(data: bytes, size: int, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("L")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BOX)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError(f"{where}: unreadable image ({exc})") from exc
    return 255 - arr  # strokes = 255


def read_omniglot_zips(
    paths: list[str | Path], size: int = 28
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read Omniglot zips of PNGs.

    Args:
        paths: the zip files (e.g. every ``images_background*.zip`` of a folder).
        size: output side in pixels (28 as in the VAE literature).

    Returns:
        ``(images (N, 1, size, size) uint8 strokes 255 on 0, labels (N,) int64 character index,
        classes)`` with ``classes[label] = "Alphabet/characterNN"``, sorted; images sorted by
        their path inside the zip (without the top folder).

    Raises:
        ValueError: naming the zip and member, on a corrupt zip or image, or a zip without PNGs.
    """
    if not paths:
        raise ValueError("paths must name at least one Omniglot zip")
    members: dict[str, tuple[Path, str]] = {}
    for path in map(Path, paths):
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ValueError(f"{path}: not a readable zip ({exc})") from exc
        with zf:
            names = [n for n in zf.namelist() if n.lower().endswith(".png")]
            if len(names) > MAX_ZIP_MEMBERS:
                raise ValueError(f"{path}: {len(names)} PNGs, more than {MAX_ZIP_MEMBERS}")
            for name in names:
                parts = name.split("/")
                if len(parts) < 3:
                    raise ValueError(
                        f"{path}: member {name} is not <Alphabet>/<character>/<image>.png"
                    )
                key = "/".join(parts[-3:])  # Alphabet/characterNN/id_drawer.png
                members.setdefault(key, (path, name))
    if not members:
        raise ValueError(f"{[str(p) for p in paths]}: no PNG images found")
    keys = sorted(members)
    classes = sorted({k.rsplit("/", 1)[0] for k in keys})
    index = {c: i for i, c in enumerate(classes)}
    images = np.empty((len(keys), 1, size, size), dtype=np.uint8)
    labels = np.empty(len(keys), dtype=np.int64)
    open_zips: dict[Path, zipfile.ZipFile] = {}
    try:
        for i, key in enumerate(keys):
            path, name = members[key]
            zf = open_zips.get(path) or open_zips.setdefault(path, zipfile.ZipFile(path))
            try:
                data = zf.read(name)
            except (zipfile.BadZipFile, OSError) as exc:
                raise ValueError(f"{path}:{name} (image {i}): corrupt member ({exc})") from exc
            images[i, 0] = _decode_png(data, size, f"{path}:{name} (image {i})")
            labels[i] = index[key.rsplit("/", 1)[0]]
    finally:
        for zf in open_zips.values():
            zf.close()
    return images, labels, classes


def read_omniglot_mat(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split of ``chardata.mat``.

    Args:
        path: the .mat file.
        split: "train" (keys ``data``/``target``) or "test" (``testdata``/``testtarget``).

    Returns:
        ``(images (N, 1, 28, 28) uint8, labels (N,) int64 alphabet index, -1 if no target)``.

    Raises:
        ValueError: naming the file and key, on missing keys, bad shapes or values.
    """
    from scipy.io import loadmat

    keys = {"train": ("data", "target"), "test": ("testdata", "testtarget")}.get(split)
    if keys is None:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    path = Path(path)
    try:
        mat = loadmat(path)
    except Exception as exc:  # scipy raises several types for corrupt files
        raise ValueError(f"{path}: not a readable .mat file ({exc})") from exc
    if keys[0] not in mat:
        raise ValueError(f"{path}: no '{keys[0]}' array (chardata.mat layout expected)")
    data = np.asarray(mat[keys[0]])
    if data.ndim != 2 or data.shape[0] != 784:
        raise ValueError(f"{path}: '{keys[0]}' must be (784, N), got {data.shape}")
    if not np.issubdtype(data.dtype, np.number) or not np.isfinite(data).all():
        raise ValueError(f"{path}: '{keys[0]}' must hold finite numbers")
    if data.min() < 0 or data.max() > 1:
        raise ValueError(f"{path}: '{keys[0]}' values must lie in [0, 1]")
    # Column j is image j flattened column-major: rows of data.T reshaped in Fortran order.
    images = data.T.reshape(-1, 28, 28, order="C").transpose(0, 2, 1)  # (N, 28, 28)
    images = np.rint(images * 255.0).astype(np.uint8)[:, None]
    n = images.shape[0]
    labels = np.full(n, -1, dtype=np.int64)
    if keys[1] in mat:
        target = np.asarray(mat[keys[1]])
        if target.ndim != 2 or target.shape[1] != n:
            raise ValueError(f"{path}: '{keys[1]}' must be (classes, {n}), got {target.shape}")
        labels = target.argmax(axis=0).astype(np.int64)
    return images, labels
