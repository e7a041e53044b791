"""What an interpolation is made from: a trained run, a split of its data, and shape choices.

>>> src = load_source("runs/demo")                      # best.pt, the run's validation split
>>> a, b = parse_pair("chair:airplane@2", src.dataset)  # first chair, third airplane (indices)
>>> src.cloud(a).shape                                  # (N, 3) float32
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from pathlib import Path

import torch

SHAPE_SPEC_HELP = (
    "A shape is an index into the split (12), a class name (chair: its first shape) or a class "
    "name and the rank of the shape within that class (chair@3, 0-based)"
)


@dataclass
class InterpolationSource:
    """A trained model and the labelled clouds whose codes it interpolates.

    Attributes:
        model: FoldingNet(-VAE) in eval mode.
        config: the run's TrainConfig (as stored in its checkpoint).
        dataset: a PointCloudSet (items ``(points (N, 3) float32, label int)``, ``.classes``,
            ``.labels`` (S,) int64, ``.up_axis``).
        split: name of the split ``dataset`` holds.
        run_dir: the run directory (None when built from objects).
    """

    model: torch.nn.Module
    config: object
    dataset: object
    split: str
    run_dir: Path | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def classes(self) -> list[str]:
        return list(self.dataset.classes)

    @property
    def up_axis(self) -> str:
        return getattr(self.dataset, "up_axis", None) or "y"

    def cloud(self, index: int) -> torch.Tensor:
        """(N, 3) float32 cloud of sample ``index`` (as the dataset returns it)."""
        return self.dataset[check_index(index, len(self.dataset))][0].float()

    def label(self, index: int) -> int:
        return int(self.dataset.labels[check_index(index, len(self.dataset))])

    def title(self, index: int) -> str:
        """Caption of a sample, e.g. ``"#12 chair"``."""
        return f"#{index} {self.dataset.classes[self.label(index)]}"

    def first_of_class(self, name: str, rank: int = 0) -> int:
        """Index of the ``rank``-th (0-based) sample of class ``name`` in the split."""
        return resolve_shape(self.dataset, f"{name}@{rank}")


def check_index(index, size: int) -> int:
    """``index`` as an int in [0, size); ValueError otherwise (negative counts from the end)."""
    try:
        i = operator.index(index)
    except TypeError:
        raise ValueError(f"index: expected an int, got {index!r}") from None
    if not -size <= i < size:
        raise ValueError(f"index: expected an int in [0, {size}), got {i}")
    return i % size


def load_source(
    run_dir: str | Path,
    which: str = "best",
    data: str | None = None,
    split: str | None = None,
    num_points: int | None = None,
    device: str = "cpu",
) -> InterpolationSource:
    """Loads a run written by ``crfold train`` and opens the split whose shapes are interpolated.

    Args:
        run_dir: the run directory (``best.pt`` / ``last.pt`` inside).
        which: "best" or "last" checkpoint.
        data: another dataset spec than the run's ("synthetic", an .npz, an HDF5 folder); None:
            the run's own data.
        split: the split to pick shapes from; None: the run's validation split.
        num_points: points per input cloud; None: the run's ``num_points``.
        device: where the model runs ("cpu", "cuda", "cuda:N").

    Returns:
        The :class:`InterpolationSource`.

    Raises:
        FileNotFoundError: no such checkpoint or data.
        ValueError: an unreadable checkpoint or a bad option (named).
    """
    from crfold.eval.encode import load_run, open_split

    model, cfg = load_run(run_dir, which=which, map_location=device)
    changes = {}
    if data is not None:
        changes["data"] = str(data)
    if num_points is not None:
        changes["num_points"] = num_points
    if changes:
        cfg = cfg.replace(**changes)
    split = cfg.val_split if split is None else split
    dataset = open_split(cfg, split)
    if len(dataset) == 0:
        raise ValueError(f"split: {split!r} of {cfg.data!r} holds no shapes")
    return InterpolationSource(model, cfg, dataset, split, Path(run_dir))


def resolve_shape(dataset, spec: str | int) -> int:
    """The index of the shape ``spec`` names (see :data:`SHAPE_SPEC_HELP`).

    Args:
        dataset: a labelled set with ``.classes`` and ``.labels`` (S,) int64.
        spec: an int index, or a string: digits (an index), a class name, or ``class@rank``.

    Returns:
        An index in [0, S).

    Raises:
        ValueError: an index out of range, an unknown class (the known ones are listed), or a
            rank past the number of shapes of that class.
    """
    size = len(dataset)
    if not isinstance(spec, str):
        return check_index(spec, size)
    text = spec.strip()
    if text.lstrip("-").isdigit():
        return check_index(int(text), size)
    name, _, rank_text = text.partition("@")
    classes = [c.lower() for c in dataset.classes]
    if name.lower() not in classes:
        raise ValueError(
            f"shape {spec!r}: unknown class {name!r}; expected an index or one of "
            f"{', '.join(dataset.classes)}"
        )
    if rank_text and not rank_text.isdigit():
        raise ValueError(f"shape {spec!r}: expected class@RANK with RANK an int >= 0")
    rank = int(rank_text) if rank_text else 0
    label = classes.index(name.lower())
    members = torch.nonzero(torch.as_tensor(dataset.labels) == label).flatten()
    if rank >= members.numel():
        raise ValueError(
            f"shape {spec!r}: class {name!r} has {members.numel()} shapes in this "
            f"split, no rank {rank}"
        )
    return int(members[rank])


def parse_pair(text: str, dataset) -> tuple[int, int]:
    """``"A:B"`` -> (index of A, index of B); each side as :func:`resolve_shape` reads it."""
    parts = str(text).split(":")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise ValueError(f"pair: expected A:B (e.g. 12:40 or chair:airplane@2), got {text!r}")
    return resolve_shape(dataset, parts[0]), resolve_shape(dataset, parts[1])
