"""The FoldingNet task: CR-FoldingNet and its baselines on the run engine.

Per step, with x (B, N, 3) from the loader and t the pair transform (:func:`build_transform`):

* ``ae``: loss = recon(decode(mu(x)), x) - the original deterministic FoldingNet.
* ``base``: the negative beta-ELBO of x (FoldingNet-VAE).
* ``aug``: the negative beta-ELBOs of x and t(x) - the paper's "FoldingNet + Aug" baseline,
  i.e. the CR objective with lambda = 0 (the consistency term is still logged, unweighted).
* ``cr``: -ELBO(x) - ELBO(t(x)) + lam * KL(q(z|t(x)) || q(z|x)) (Eq. 3).

x and t(x) go through the model as one batch of 2B clouds (one forward, as DDP requires). The
reconstruction term is the Gaussian Chamfer NLL of the model (nats, per sample); the FoldingNet
Chamfer metric (sqrt, max of the two directions) of the reconstruction of x is logged as
``chamfer``. Validation uses z = mu, no augmentation: loss = recon + beta * KL (recon for ae).
The epoch order comes from ``DistributedSampler(seed=seed)`` at each epoch, so a resumed run
(also inside an epoch) sees the samples an uninterrupted one would.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from ..amp import autocast
from ..config import TrainConfig, resolve_data_path
from ..consistency import cr_objective, gaussian_kl, vae_objective
from ..data import MODELNET10_CLASSES, PointCloudSet, open_dataset
from ..models.common import Posterior
from ..models.foldingnet import FoldingNetVAE, foldingnet_chamfer
from ..transforms import (
    Compose,
    PointTransform,
    RandomJitter,
    RandomRotation,
    RandomScale,
    RandomTranslation,
)
from .engine import Task
from .runtime import DistInfo, SkipSampler, all_reduce_sum

__all__ = [
    "FoldingNetTask",
    "batches_per_epoch",
    "build_model",
    "build_transform",
    "compute_terms",
    "open_split",
    "shard_loader",
    "train_loader",
    "up_axis",
    "validate",
]


def open_split(cfg: TrainConfig, split: str) -> PointCloudSet:
    """The dataset of ``split`` as the config describes it (see ``crfold.data.open_dataset``).

    Raises:
        ValueError: an option that does not apply to this kind of data (named), or clouds with
            fewer than ``k + 1`` points.
    """
    if cfg.data == "synthetic":
        for key in ("to_up", "classes_subset"):
            if getattr(cfg, key) is not None:
                raise ValueError(f"{key}: applies to .npz data only, not to data='synthetic'")
        num = cfg.synthetic_train_shapes if split == "train" else cfg.synthetic_test_shapes
        ds = open_dataset(
            "synthetic",
            split,
            num_points=cfg.num_points,
            seed=cfg.data_seed,
            num_shapes=num,
            rotate=cfg.synthetic_rotate,
        )
    else:
        path = resolve_data_path(cfg.data, "data")
        kwargs: dict[str, Any] = {}
        if path.suffix == ".npz":
            if cfg.normalize:
                raise ValueError("normalize: applies to HDF5 folders only (the .npz is normalized)")
            subset = cfg.classes_subset
            if subset is not None and [s.lower() for s in subset] == ["modelnet10"]:
                subset = list(MODELNET10_CLASSES)
            kwargs = {"to_up": cfg.to_up, "classes_subset": subset}
        else:
            for key in ("to_up", "classes_subset"):
                if getattr(cfg, key) is not None:
                    raise ValueError(f"{key}: applies to .npz data only, not to {cfg.data!r}")
            kwargs = {"normalize": cfg.normalize}
        ds = open_dataset(path, split, cfg.num_points, cfg.data_seed, **kwargs)
    n = ds.num_points or ds.points.shape[1]
    if n < cfg.k + 1:
        raise ValueError(f"num_points: the encoder needs at least k + 1 = {cfg.k + 1}, got {n}")
    return ds


def build_model(cfg: TrainConfig) -> FoldingNetVAE:
    """The FoldingNet(-VAE) the config describes (initialized from the global torch RNG)."""
    return FoldingNetVAE(
        latent_dim=cfg.latent_dim,
        k=cfg.k,
        grid_size=cfg.grid_size,
        use_covariance=cfg.use_covariance,
        mode="ae"
        if cfg.mode == "ae"
        else "vae",  # the model is an AE or a VAE; the rest is training
        obs_scale=cfg.obs_scale,
    )


def build_transform(cfg: TrainConfig, up: str) -> PointTransform:
    """The pair generator t: rotation, scale, translation, jitter, in FoldingNet's order.

    With the defaults it equals ``crfold.transforms.default_cr_transform(up)``.

    Args:
        cfg: the ``aug_*`` keys are read.
        up: the data's up axis ("y" or "z"), for ``aug_rotate="up"``.
    """
    parts: list[PointTransform] = []
    if cfg.aug_rotate is not None:
        axis = None if cfg.aug_rotate == "so3" else cfg.aug_rotate
        parts.append(RandomRotation(axis=axis, degrees=cfg.aug_degrees, steps=cfg.aug_steps, up=up))
    if cfg.aug_scale is not None:
        low, high = cfg.aug_scale
        parts.append(RandomScale(low, high, isotropic=cfg.aug_scale_isotropic))
    if cfg.aug_translate > 0:
        parts.append(RandomTranslation(shift=cfg.aug_translate, per_axis=True))
    if cfg.aug_jitter_sigma > 0:
        parts.append(RandomJitter(sigma=cfg.aug_jitter_sigma, clip=cfg.aug_jitter_clip))
    return Compose(parts)


def up_axis(cfg: TrainConfig, dataset: PointCloudSet) -> str:
    """The up axis rotations use: ``cfg.up_axis`` if set, else the dataset's."""
    return cfg.up_axis or dataset.up_axis


def train_loader(
    dataset: PointCloudSet,
    cfg: TrainConfig,
    info: DistInfo,
    epoch: int,
    skip_batches: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """The loader of one epoch: shuffled by ``DistributedSampler(seed=cfg.seed)`` at ``epoch``.

    The order depends on (seed, epoch) only (a torch.Generator inside the sampler), also with a
    single process; each rank gets its share (padded to equal length, so every rank runs the
    same number of steps). ``skip_batches`` drops the batches already done before a resume.
    """
    sampler = DistributedSampler(
        dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.seed
    )
    sampler.set_epoch(epoch)
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=SkipSampler(sampler, skip_batches * cfg.batch_size),
        num_workers=cfg.num_workers,
        pin_memory=pin_memory,
        drop_last=False,
    )


def batches_per_epoch(dataset: PointCloudSet, cfg: TrainConfig, info: DistInfo) -> int:
    """Steps per epoch on every rank."""
    return math.ceil(math.ceil(len(dataset) / info.world_size) / cfg.batch_size)


def shard_loader(dataset: PointCloudSet, batch_size: int, info: DistInfo) -> DataLoader:
    """In-order loader over this rank's share (every world_size-th sample) for evaluation."""
    share = Subset(dataset, range(info.rank, len(dataset), info.world_size))
    return DataLoader(share, batch_size=batch_size, shuffle=False)


def compute_terms(
    model: FoldingNetVAE,
    x: torch.Tensor,
    cfg: TrainConfig,
    transform: Any = None,
    generator: torch.Generator | None = None,
    forward: Any = None,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """The loss terms of one training batch for ``cfg.mode``.

    Args:
        model: the (unwrapped) model; its ``reconstruction_nll`` is the reconstruction term.
        x: (B, N, 3) float32 clouds, no padding.
        cfg: mode, beta, lam.
        transform: the pair transform t (needed by ``aug`` and ``cr``).
        generator: draws of t and of z (on x's device).
        forward: the callable running the forward pass (the DDP wrapper), default ``model``.
        amp_dtype: autocast dtype (None: float32); losses are computed in float32.

    Returns:
        0-d tensors (batch means, nats): ``loss`` (with grad), ``recon``, ``kl``,
        ``consistency`` (0 for ae/base; unweighted for aug), ``recon_aug``/``kl_aug`` for the
        paired modes, and ``chamfer`` (FoldingNet's metric on x, no grad).
    """
    b = x.shape[0]
    paired = cfg.mode in ("aug", "cr")
    if paired and transform is None:
        raise ValueError(f"transform: mode {cfg.mode!r} needs the pair transform t, got None")
    inp = torch.cat([x, transform(x, generator=generator)]) if paired else x  # (B or 2B, N, 3)
    with autocast(x.device, amp_dtype):
        out = (forward or model)(inp, generator=generator)
    recon = out.recon.float()  # (B or 2B, M, 3); the Chamfer op runs in float32
    mu, logvar = out.posterior.mu.float(), out.posterior.logvar.float()  # (B or 2B, L)
    nll = model.reconstruction_nll(recon, inp.float())  # (B or 2B,)
    zero = torch.zeros((), device=x.device)
    if cfg.mode == "ae":  # the constant logvar of an AE carries nothing: no KL
        terms = vae_objective(nll, torch.zeros_like(nll), beta=cfg.beta)
    elif cfg.mode == "base":
        terms = vae_objective(nll, gaussian_kl(mu, logvar), beta=cfg.beta)
    else:
        kl = gaussian_kl(mu, logvar)  # (2B,)
        terms = cr_objective(
            nll[:b], kl[:b], nll[b:], kl[b:],
            Posterior(mu[:b], logvar[:b]), Posterior(mu[b:], logvar[b:]),
            beta=cfg.beta, lam=cfg.lam if cfg.mode == "cr" else 0.0,
        )  # fmt: skip
    terms.setdefault("consistency", zero)
    with torch.no_grad():
        terms["chamfer"] = foldingnet_chamfer(recon[:b], x.float()).mean()
    return terms


@torch.no_grad()
def validate(
    model: FoldingNetVAE,
    loader: Any,
    cfg: TrainConfig,
    info: DistInfo,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Validation with z = mu and no augmentation, summed over every rank's share.

    Returns:
        ``val_loss`` (recon + beta * KL; recon alone for ae), ``val_recon``, ``val_kl``,
        ``val_chamfer`` (FoldingNet's metric), means over the split.
    """
    was_training = model.training
    model.eval()
    sums = [0.0, 0.0, 0.0, 0.0]  # recon, kl, chamfer, count
    for x, _ in loader:
        x = x.to(device)  # (B, N, 3)
        with autocast(device, amp_dtype):
            post = model.encode(x)
            recon = model.decode(post.mu)  # (B, M, 3)
        nll = model.reconstruction_nll(recon.float(), x)  # (B,)
        kl = (
            torch.zeros_like(nll)
            if cfg.mode == "ae"
            else gaussian_kl(post.mu.float(), post.logvar.float())
        )  # (B,)
        sums[0] += float(nll.sum())
        sums[1] += float(kl.sum())
        sums[2] += float(foldingnet_chamfer(recon.float(), x).sum())
        sums[3] += x.shape[0]
    model.train(was_training)
    recon_s, kl_s, cd_s, n = all_reduce_sum(sums, info, device)
    n = max(n, 1.0)
    return {
        "val_loss": (recon_s + cfg.beta * kl_s) / n,
        "val_recon": recon_s / n,
        "val_kl": kl_s / n,
        "val_chamfer": cd_s / n,
    }


class FoldingNetTask(Task):
    """CR-FoldingNet (``cfg.mode``: ae | base | aug | cr) on point-cloud data."""

    supports_ddp = True
    progress = {"loss": "loss", "recon": "rec", "kl": "kl", "consistency": "cons", "chamfer": "cd"}
    headline = ("val_chamfer",)

    def __init__(self, cfg: TrainConfig, device: torch.device, info: DistInfo):
        super().__init__(cfg, device, info)
        self.train_set = open_split(cfg, cfg.train_split)
        self.val_set = open_split(cfg, cfg.val_split)
        self.transform = build_transform(cfg, up_axis(cfg, self.train_set))

    def build_model(self) -> FoldingNetVAE:
        return build_model(self.cfg)

    def batches_per_epoch(self) -> int:
        return batches_per_epoch(self.train_set, self.cfg, self.info)

    def train_batches(self, epoch: int, skip: int):
        loader = train_loader(
            self.train_set, self.cfg, self.info, epoch, skip,
            pin_memory=self.device.type == "cuda",
        )  # fmt: skip
        for x, _ in loader:
            yield x.to(self.device, non_blocking=True)  # (B, N, 3)

    def loss(self, model, forward, batch, step, total_steps, generator, amp):
        return compute_terms(model, batch, self.cfg, self.transform, generator, forward, amp)

    def validate(self, model, amp):
        batch = self.cfg.eval_batch_size or 2 * self.cfg.batch_size
        loader = shard_loader(self.val_set, batch, self.info)
        return validate(model, loader, self.cfg, self.info, self.device, amp)
