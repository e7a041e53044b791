"""The (CR-)NVAE run configuration: :class:`NVAEConfig`, the ``nvae`` task's keys.

It extends :class:`crfold.config.RunConfig` (the run engine's keys) and follows its conventions: a
YAML file holds only the keys it changes, ``key=value`` overrides are parsed with the field's
type, unknown keys fail, and the resolved config is saved in the run directory and checkpoints.
Defaults are the paper-scale MNIST run (NVAE's published MNIST settings; docs/design.md#nvae).

Modes (the vocabulary of every task): ``base`` (NVAE), ``aug`` (NVAE + Aug: the ELBOs of x and
t(x), the consistency term logged but not weighted, i.e. CR with lam = 0) and ``cr`` (CR-NVAE).
The names ``nvae``, ``nvae+aug`` and ``cr-nvae`` (the paper's rows) load as ``base``, ``aug`` and
``cr`` through the engine's alias mechanism, with a DeprecationWarning naming the mode to use.

The consistency weight of a step is ``lam``, times D = C * H * W with ``lam_per_dim`` (lambda
weighs R against the objective per data dimension), times the KL warm-up coefficient beta_t with
``lam_warmup``. ``lam_warmup`` is off by default: the paper's Eq. 3 has a constant lambda and
says nothing of a schedule for it, and runs made before the option trained with a constant one.
Turn it on when the consistency term dominates the first steps: while beta_t is near 1e-4 the
posteriors are free to sharpen, R = KL(q(z|t(x)) || q(z|x)) grows with 1 / sigma^2, and a
constant lambda then weighs it up to 1 / beta_t = 1e4 times more than the KL to the prior it is
meant to sit beside.

The learning-rate and KL warm-up schedules are planned over ``epochs`` (the steps of ``epochs``
epochs); ``max_steps`` only stops the run early, so a run stopped by ``max_steps`` and resumed
trains exactly what an uninterrupted one does.

>>> cfg = load_nvae_config("configs/nvae_tiny_cpu.yaml", ["mode=cr"])
>>> cfg.task, cfg.mode
('nvae', 'cr')
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from crfold.config import RunConfig, check_numbers, choice, load_config, option
from crfold_images.nvae.evaluation import FEATURES
from crfold_images.nvae.model import LIKELIHOODS, NVAEArch
from crfold_images.nvae.objective import CR_PATHS

__all__ = ["DATASETS", "MODES", "NVAEConfig", "NVAETrainConfig", "load_nvae_config"]

MODES = ("base", "aug", "cr")
DATASETS = ("mnist", "fashion_mnist", "cifar10", "celeba64", "random")


@dataclass
class NVAEConfig(RunConfig):
    """Everything a (CR-)NVAE run needs; defaults: paper-scale MNIST."""

    TASK: ClassVar[str] = "nvae"
    TASK_CLASS: ClassVar[str] = "crfold_images.nvae.task:NVAETask"
    MODES: ClassVar[tuple[str, ...]] = MODES
    MODE_ALIASES: ClassVar[dict[str, str]] = {"nvae": "base", "nvae+aug": "aug", "cr-nvae": "cr"}
    # ``epochs`` is not resumable here: the learning-rate and KL schedules span it, so a longer
    # run is a different run (its schedule would jump back up).
    RESUMABLE: ClassVar[tuple[str, ...]] = (
        *(k for k in RunConfig.RESUMABLE if k != "epochs"), "iw_samples", "iw_chunk", "iw_images",
        "eval_batch_size", "probe_features", "probe_C", "probe",
    )  # fmt: skip

    task: str = option("nvae", "nvae: what is trained (NVAE / CR-NVAE)")
    # --- data
    dataset: str = option(
        "mnist", "mnist | fashion_mnist | cifar10 | celeba64 | random (synthetic)"
    )
    data_root: str | None = option(
        None,
        "dataset folder; None: $CRFOLD_DATA/<mnist | cifar10_jpg | celeba> (fashion_mnist: "
        "/usr/share/datasets/fashion-mnist, else $CRFOLD_DATA/fashion-mnist); a relative path "
        "missing from the working directory is read under $CRFOLD_DATA",
    )
    num_train: int | None = option(None, "use the first N (shuffled) train images; None: all")
    num_test: int | None = option(None, "evaluate on the first N test images; None: all")
    data_seed: int = option(0, "seed of the train subset and the test binarization")
    # --- architecture (crfold_images.nvae.model.NVAEArch)
    in_channels: int = option(1, "image channels")
    image_size: int = option(32, "side the network works at (MNIST: 28 padded to 32)")
    data_size: int = option(28, "side of the data; the output is cropped back to it")
    likelihood: str = option("bernoulli", "bernoulli (binarized) | dmol (discretized logistics)")
    num_mixtures: int = option(10, "dmol: mixture components")
    channels: int = option(32, "channels after the stem, doubled by each downsampling")
    num_preprocess_blocks: int = option(2, "stride-2 blocks before the latent scales")
    num_preprocess_cells: int = option(3, "cells per preprocessing block")
    num_postprocess_blocks: int = option(2, "upsampling blocks after the latent scales")
    num_postprocess_cells: int = option(3, "cells per postprocessing block")
    groups_per_scale: list[int] = option([5, 10], "latent groups per scale, coarsest first")
    latent_channels: int = option(20, "channels of each latent group")
    cells_per_group_enc: int = option(1, "encoder cells before each group")
    cells_per_group_dec: int = option(1, "decoder cells before each group")
    # --- objective
    mode: str = option(
        "base",
        "base (NVAE) | aug (NVAE + Aug: x and t(x), consistency logged with lam = 0) | cr "
        "(CR-NVAE: consistency term summed over all groups); the paper's names nvae, nvae+aug "
        "and cr-nvae are aliases",
    )
    lam: float = option(0.1, "consistency weight lambda of mode cr (CR-VAE paper: 0.1)")
    lam_per_dim: bool = option(
        False,
        "weigh lambda * R against the objective per data dimension: lambda * D in the "
        "per-image loss, D = C * H * W of the data (MNIST 784, CIFAR-10 3072)",
    )
    lam_warmup: bool = option(
        False,
        "multiply lambda by the KL warm-up coefficient beta_t (kl_min_coeff -> 1), as the KL "
        "term; false: a constant lambda, the paper's Eq. 3 (see the module docstring)",
    )
    cr_path: str = option(
        "own", "own (each posterior on its own top-down path) | shared (x's path)"
    )
    aug: str = option("all", "augmentation families: all | comma list of rotate,translate,scale")
    kl_warmup_fraction: float = option(
        0.3, "KL coefficient kl_min_coeff -> 1 over this fraction of the epochs' steps"
    )
    kl_min_coeff: float = option(1e-4, "KL coefficient at step 0")
    kl_balance: bool = option(True, "balance the KL across groups during warm-up")
    spectral_lambda: float = option(1e-2, "weight of spectral + BN regularisation (CelebA: 1e-1)")
    power_iterations: int = option(1, "power iterations per step for the spectral norms")
    # --- optimisation (Adamax, warm-up then cosine over the steps of `epochs`)
    epochs: int = option(400, "epochs over the train split (the lr and KL schedules span them)")
    max_steps: int | None = option(
        None, "stop after this many optimizer steps (None: at epochs); the schedules still "
        "span epochs",
    )  # fmt: skip
    batch_size: int = option(200, "images per step (aug and cr also encode t(x): 2x rows)")
    lr: float = option(1e-2, "peak Adamax learning rate")
    lr_min: float = option(1e-4, "final learning rate of the cosine schedule")
    lr_warmup_epochs: float = option(5.0, "linear learning-rate warm-up, in epochs")
    adamax_eps: float = option(1e-3, "Adamax epsilon")
    weight_decay: float = option(3e-4, "Adamax weight decay")
    grad_clip: float | None = option(None, "clip the gradient norm (None: off)")
    max_bad_steps: int = option(
        50, "consecutive non-finite losses skipped (no update) before the run stops (then: "
        "lower lr or raise spectral_lambda, NVAE's usual remedies)",
    )  # fmt: skip
    # --- evaluation (after training, on the test split -> eval.json)
    iw_samples: int = option(1000, "importance samples K of the IW-NLL")
    iw_chunk: int = option(100, "importance samples per forward pass")
    iw_images: int | None = option(
        None, "IW-NLL on the first N test images (AU, -ELBO and the probe use all); None: all"
    )
    eval_batch_size: int = option(50, "images per IW-NLL / encoding batch")
    probe_features: str = option("all_pooled", "all_pooled | top | all (posterior means)")
    probe_C: float = option(1.0, "inverse regularisation of the logistic probe")
    probe: bool = option(True, "fit a logistic probe on train features, score on test")
    eval_every: int = option(
        1, "unused: NVAE has train and test splits only, so no validation and no best.pt"
    )
    # --- runtime
    seed: int = option(
        0, "seed of the initialisation, data order, augmentation, binarization and sampling"
    )
    device: str = option("auto", "auto | cpu | cuda | cuda:N")
    num_threads: int | None = option(None, "torch intra-op CPU threads (None: torch's default)")
    amp: str = option(  # auto: tiny NVAE 1.1x faster in bf16 on a Zen 4 CPU, -ELBO within 3 %
        "auto",
        "training autocast (crfold.amp): auto (bf16 on CUDA and on CPUs with native bf16, else "
        "fp32) | bf16 | fp16 (CUDA only, with a grad scaler) | none; evaluation is float32",
    )
    run_dir: str | None = option(None, "run directory; None: runs/<date-time>-nvae-<mode>")
    log_every: int = option(50, "steps between train records in metrics.jsonl / TensorBoard")
    checkpoint_every: int | None = option(
        500, "steps between last.pt saves (also at epoch ends, the end and signals; None: only "
        "there)",
    )  # fmt: skip

    def validate(self) -> None:
        """Checks values beyond their types; ValueError naming the key."""
        super().validate()
        for key, choices in (
            ("dataset", DATASETS),
            ("likelihood", LIKELIHOODS),
            ("cr_path", CR_PATHS),
            ("probe_features", FEATURES),
        ):
            choice(key, getattr(self, key), choices)
        check_numbers(
            self,
            positive_ints=("iw_samples", "iw_chunk", "eval_batch_size"),
            optional_positive_ints=("num_train", "num_test", "iw_images"),
            nonneg_ints=("power_iterations", "data_seed"),
            positive=("lr_min", "adamax_eps", "probe_C", "kl_min_coeff"),
            nonneg=("lam", "spectral_lambda", "lr_warmup_epochs", "kl_warmup_fraction"),
        )
        if self.kl_warmup_fraction > 1:
            raise ValueError(
                f"kl_warmup_fraction: expected a number in [0, 1], got {self.kl_warmup_fraction}"
            )
        if self.kl_min_coeff > 1:
            raise ValueError(f"kl_min_coeff: expected a number in (0, 1], got {self.kl_min_coeff}")
        from crfold_images.transforms import paper_augmentation

        try:
            paper_augmentation(self.aug)
        except ValueError as exc:
            raise ValueError(f"aug: {exc}") from None
        self.arch()  # architecture checks (ValueError naming the field)

    def arch(self) -> NVAEArch:
        """The :class:`NVAEArch` these fields describe."""
        names = [f.name for f in dataclasses.fields(NVAEArch)]
        values = {n: getattr(self, n) for n in names if hasattr(self, n)}
        values["groups_per_scale"] = tuple(self.groups_per_scale)
        return NVAEArch(**values)


NVAETrainConfig = NVAEConfig  # the name before the run engine


def load_nvae_config(
    yaml_path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: NVAEConfig | dict[str, Any] | None = None,
) -> NVAEConfig:
    """Defaults (or ``base``), then the YAML file's keys, then ``key=value`` overrides.

    :func:`crfold.config.load_config` with ``cls=NVAEConfig``.

    Raises:
        ValueError: an unknown key (named), a value of the wrong type, or an invalid value.
        FileNotFoundError: ``yaml_path`` does not exist.
    """
    return load_config(yaml_path, overrides, base=base, cls=NVAEConfig)
