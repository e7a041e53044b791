"""The FoldingNet task: CR-FoldingNet and its baselines on the run engine.

Per step, with x (B, N, 3) from the loader, t the pair transform (:func:`build_transform`) and
rec(y, target) the reconstruction term of ``cfg.recon`` (below):

* ``ae``: loss = rec(decode(mu(x)), x) - the original deterministic FoldingNet.
* ``base``: rec(x) + beta * KL(q(z|x) || p(z)), the negative beta-ELBO of x (FoldingNet-VAE).
* ``aug``: the same for x and for t(x) - the paper's "FoldingNet + Aug" baseline, i.e. the CR
  objective with lambda = 0 (the consistency term is still logged, unweighted).
* ``cr``: rec(x) + beta KL(x) + rec(t(x)) + beta KL(t(x)) + lam * KL(q(z|t(x)) || q(z|x)) (Eq. 3).

The reconstruction term (``cfg.recon``, per cloud, batch-averaged):

* ``"gaussian"`` (default): the Gaussian Chamfer NLL of the model,
  ``sum_i min_j |y_i - x_j|² + sum_j min_i |x_j - y_i|²`` over all points / (2 obs_scale²), in
  nats: a proper likelihood, so the loss is a negative ELBO and NLL-type numbers mean nats.
* ``"mean_chamfer"``: FoldingNet's Chamfer loss, ``mean_i min_j |y_i - x_j|² + mean_j min_i
  |x_j - y_i|²`` (:func:`crfold.models.foldingnet.mean_chamfer_loss`): the paper's words
  ("adding the KL term from the ELBO to the baseline FoldingNet"); ``beta`` should be small.

The t(x) branch reconstructs t(x) (``aug_target="transformed"``, the paper) or x
(``"canonical"``: the decoder output of t(x) is compared with x, so z need not carry the pose).

x and t(x) go through the model as one batch of 2B clouds (one forward, as DDP requires). The
FoldingNet Chamfer metric (sqrt, max of the two directions) of the reconstruction of x is logged
as ``chamfer``. Every ``grad_norms_every`` steps the terms also hold ``"diagnostics"``: the
gradient norms of each weighted term w.r.t. the encoder (:func:`gradient_diagnostics`), which the
engine writes to the run log. Validation uses z = mu, no augmentation: loss = rec + beta * KL
(rec for ae), in the reading of ``cfg.recon``. The epoch order comes from
``DistributedSampler(seed=seed)`` at each epoch, so a resumed run (also inside an epoch) sees the
samples an uninterrupted one would.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from ..amp import autocast
from ..config import TrainConfig, resolve_data_path
from ..consistency import cr_objective, gaussian_kl, vae_objective
from ..data import MODELNET10_CLASSES, PointCloudSet, open_dataset, stratified_holdout
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
    "gradient_diagnostics",
    "open_split",
    "probe_splits",
    "shard_loader",
    "train_loader",
    "training_splits",
    "up_axis",
    "validate",
]


def open_split(cfg: TrainConfig, split: str) -> PointCloudSet:
    """The dataset of ``split`` as the config describes it: a split of the data, or
    ``"holdout"``, the validation part carved out of ``train_split`` (:func:`training_splits`).

    Raises:
        ValueError: an option that does not apply to this kind of data (named), or clouds with
            fewer than ``k + 1`` points.
    """
    if split == "holdout":
        return _holdout(cfg)[1]
    return _open_data_split(cfg, split)


def _holdout(cfg: TrainConfig) -> tuple[PointCloudSet, PointCloudSet]:
    """(kept, held out) parts of ``train_split``: a seeded, stratified ``val_fraction``."""
    train = _open_data_split(cfg, cfg.train_split)
    kept, held = stratified_holdout(train.labels, cfg.val_fraction, cfg.data_seed)
    if held.numel() == 0:
        raise ValueError(f"val_fraction: holds out no sample of {len(train)} (too few per class)")
    return train.subset(kept), train.subset(held)


def _open_data_split(cfg: TrainConfig, split: str) -> PointCloudSet:
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


def training_splits(cfg: TrainConfig) -> tuple[PointCloudSet, PointCloudSet]:
    """(train, validation) sets of a run.

    ``val_split="holdout"``: a seeded (``data_seed``), stratified ``val_fraction`` of every class
    of ``train_split`` is the validation set and is removed from training, so nothing is ever
    selected on the test split. Otherwise the data's own ``val_split``.
    """
    # refused for training (older runs still load and eval); a holdout probe of a holdout-validated
    # run is a validation measurement, and ``crfold eval --which best`` refuses its best.pt
    if cfg.val_split == cfg.probe_split != "holdout":
        raise ValueError(
            f"val_split: {cfg.val_split!r} is also the probe split: best.pt would be selected on "
            "the split the results are scored on (use val_split=holdout)"
        )
    if cfg.val_split == "holdout":
        return _holdout(cfg)
    return open_split(cfg, cfg.train_split), open_split(cfg, cfg.val_split)


def probe_splits(cfg: TrainConfig) -> tuple[PointCloudSet, PointCloudSet]:
    """(fit, scored) sets of the probes: ``train_split`` and ``probe_split``.

    ``probe_split="holdout"`` scores the validation part of ``train_split``; the probes are then
    fit on the kept part only, so no scored shape is also a fitted one.
    """
    if cfg.probe_split == "holdout":
        return _holdout(cfg)
    return open_split(cfg, cfg.train_split), open_split(cfg, cfg.probe_split)


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
    diagnostics: bool = False,
) -> dict[str, Any]:
    """The loss terms of one training batch for ``cfg.mode``.

    Args:
        model: the (unwrapped) model; its ``reconstruction_loss(recon, target, cfg.recon)`` is
            the reconstruction term (``reconstruction_nll`` for ``recon="gaussian"``).
        x: (B, N, 3) float32 clouds, no padding.
        cfg: mode, recon, beta, lam, aug_target.
        transform: the pair transform t (needed by ``aug`` and ``cr``).
        generator: draws of t and of z (on x's device).
        forward: the callable running the forward pass (the DDP wrapper), default ``model``.
        amp_dtype: autocast dtype (None: float32); losses are computed in float32.
        diagnostics: also return ``"diagnostics"`` (:func:`gradient_diagnostics` of this
            forward; the training step's result is unchanged).

    Returns:
        0-d tensors (batch means): ``loss`` (with grad), ``recon`` (of x), ``kl``,
        ``consistency`` (0 for ae/base; unweighted for aug), ``recon_aug``/``kl_aug`` for the
        paired modes (``recon_aug`` against t(x), or against x with ``aug_target="canonical"``),
        ``chamfer`` (FoldingNet's metric on x, no grad); with ``diagnostics``, also
        ``"diagnostics"``: a dict of floats.
    """
    b = x.shape[0]
    paired = cfg.mode in ("aug", "cr")
    if paired and transform is None:
        raise ValueError(f"transform: mode {cfg.mode!r} needs the pair transform t, got None")
    inp = torch.cat([x, transform(x, generator=generator)]) if paired else x  # (B or 2B, N, 3)
    # What each row's reconstruction is compared with: itself, or x for the t(x) rows.
    target = torch.cat([x, x]) if paired and cfg.aug_target == "canonical" else inp
    with autocast(x.device, amp_dtype):
        out = (forward or model)(inp, generator=generator)
    recon = out.recon.float()  # (B or 2B, M, 3); the Chamfer op runs in float32
    mu, logvar = out.posterior.mu.float(), out.posterior.logvar.float()  # (B or 2B, L)
    rec = model.reconstruction_loss(recon, target.float(), cfg.recon)  # (B or 2B,)
    zero = torch.zeros((), device=x.device)
    if cfg.mode == "ae":  # the constant logvar of an AE carries nothing: no KL
        terms = vae_objective(rec, torch.zeros_like(rec), beta=cfg.beta)
    elif cfg.mode == "base":
        terms = vae_objective(rec, gaussian_kl(mu, logvar), beta=cfg.beta)
    else:
        kl = gaussian_kl(mu, logvar)  # (2B,)
        terms = cr_objective(
            rec[:b], kl[:b], rec[b:], kl[b:],
            Posterior(mu[:b], logvar[:b]), Posterior(mu[b:], logvar[b:]),
            beta=cfg.beta, lam=cfg.lam if cfg.mode == "cr" else 0.0,
        )  # fmt: skip
    terms.setdefault("consistency", zero)
    if diagnostics:
        terms["diagnostics"] = gradient_diagnostics(model.encoder.parameters(), terms, cfg)
    with torch.no_grad():
        terms["chamfer"] = foldingnet_chamfer(recon[:b], x.float()).mean()
    return terms


def _grad_norm(term: torch.Tensor, params: list[torch.Tensor]) -> float:
    """L2 norm of d term / d params (0 for a term that does not depend on them)."""
    if not term.requires_grad:
        return 0.0
    grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
    squares = [g.detach().double().square().sum() for g in grads if g is not None]
    return math.sqrt(float(torch.stack(squares).sum())) if squares else 0.0


def gradient_diagnostics(
    params: Any, terms: dict[str, torch.Tensor], cfg: TrainConfig
) -> dict[str, float]:
    """How strongly each term of the loss pulls on the encoder: gradient norms of one forward.

    With ``paired`` = aug/cr, ``lam_eff`` = ``cfg.lam`` for cr and 0 otherwise, the terms are
    weighted as in the loss:

    * ``loss_recon`` = recon (+ recon_aug), ``grad_recon`` = ||d loss_recon / d theta_enc||;
    * ``loss_kl`` = beta * (kl (+ kl_aug)), ``grad_kl`` likewise (0 in ae: no KL);
    * ``loss_consistency`` = lam_eff * consistency, ``grad_consistency`` likewise (0 for ae and
      base; 0 for aug, whose lambda is 0); aug also reports ``grad_consistency_unweighted``, the
      norm of the gradient of the unweighted consistency term.

    theta_enc are ``params`` (the encoder's); the gradients come from
    ``torch.autograd.grad(..., retain_graph=True)`` on the graph of ``terms``, so nothing is
    recomputed, no ``.grad`` is touched, and the ``loss.backward()`` that follows is unchanged.
    Norms are of the float32 gradients of this process's batch (not all-reduced under DDP; no
    loss scaling under fp16).

    Args:
        params: the encoder's parameters (an iterable of tensors).
        terms: the batch-mean terms of :func:`compute_terms` (with their graph).
        cfg: mode, beta, lam.

    Returns:
        ``{"grad_recon", "grad_kl", "grad_consistency", "loss_recon", "loss_kl",
        "loss_consistency"}`` (+ ``"grad_consistency_unweighted"`` for aug), floats.
    """
    params = [p for p in params if p.requires_grad]
    paired = "recon_aug" in terms
    lam = cfg.lam if cfg.mode == "cr" else 0.0
    parts = {
        "recon": terms["recon"] + terms["recon_aug"] if paired else terms["recon"],
        "kl": cfg.beta * (terms["kl"] + terms["kl_aug"] if paired else terms["kl"]),
        "consistency": lam * terms["consistency"],
    }
    out: dict[str, float] = {}
    for name, term in parts.items():
        out[f"grad_{name}"] = _grad_norm(term, params)
    if cfg.mode == "aug":
        out["grad_consistency_unweighted"] = _grad_norm(terms["consistency"], params)
    for name, term in parts.items():
        out[f"loss_{name}"] = float(term.detach())
    return out


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
        ``val_loss`` (recon + beta * KL; recon alone for ae), ``val_recon`` (the reconstruction
        term of ``cfg.recon``: nats for gaussian, FoldingNet's Chamfer loss for mean_chamfer),
        ``val_kl``, ``val_chamfer`` (FoldingNet's metric), means over the split.
    """
    was_training = model.training
    model.eval()
    sums = [0.0, 0.0, 0.0, 0.0]  # recon, kl, chamfer, count
    for x, _ in loader:
        x = x.to(device)  # (B, N, 3)
        with autocast(device, amp_dtype):
            post = model.encode(x)
            recon = model.decode(post.mu)  # (B, M, 3)
        nll = model.reconstruction_loss(recon.float(), x, cfg.recon)  # (B,)
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
        self.train_set, self.val_set = training_splits(cfg)
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
        every = self.cfg.grad_norms_every  # diagnostics on rank 0 only (the one that logs)
        diag = every is not None and step % every == 0 and self.info.is_main
        return compute_terms(
            model, batch, self.cfg, self.transform, generator, forward, amp, diagnostics=diag
        )

    def validate(self, model, amp):
        batch = self.cfg.eval_batch_size or 2 * self.cfg.batch_size
        loader = shard_loader(self.val_set, batch, self.info)
        return validate(model, loader, self.cfg, self.info, self.device, amp)
