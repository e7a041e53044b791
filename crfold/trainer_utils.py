"""Deprecated: split into :mod:`crfold.train.runtime` (devices, seeds, DDP, samplers, RunLog,
StopSignal) and :mod:`crfold.train.foldingnet` (datasets, model, transform and loaders of the
FoldingNet task). Everything is re-exported here under its old name."""

import warnings

from .train.foldingnet import (  # noqa: F401
    batches_per_epoch,
    build_model,
    build_transform,
    open_split,
    shard_loader,
    train_loader,
    up_axis,
)
from .train.runtime import (  # noqa: F401
    METRICS_FILE,
    TENSORBOARD_DIR,
    DistInfo,
    RunLog,
    SkipSampler,
    StopSignal,
    all_reduce_sum,
    broadcast_str,
    cleanup_distributed,
    derive_seed,
    init_distributed,
    read_metrics,
    resolve_device,
    step_generator,
)

warnings.warn(
    "crfold.trainer_utils is deprecated: import from crfold.train.runtime / crfold.train.foldingnet",
    DeprecationWarning,
    stacklevel=2,
)
