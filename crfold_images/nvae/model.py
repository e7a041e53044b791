"""NVAE (Vahdat & Kautz, NeurIPS 2020): a deep hierarchical VAE with residual-normal posteriors.

Re-implemented from the published description (summarised in docs/design.md#nvae); NVIDIA's code is
under a non-commercial licence and was not consulted or copied. Blocks live in
:mod:`crfold_images.nvae.cells`, likelihoods in :mod:`crfold_images.nvae.likelihood`,
the (CR-)NVAE objective in :mod:`crfold_images.nvae.objective`.

Layout (``P`` preprocessing blocks, ``S`` latent scales, scale 0 the coarsest)::

    x -> stem conv -> P x [cells, stride-2 cell]                   (bottom-up encoder tower)
      -> for scale S-1 .. 0: per group (finest group first) cells -> feature f_g; stride-2 cell
      h_0 = learned tensor; for group g = 0 .. G-1 (top-down, coarse -> fine):
          g > 0: h = decoder cells(h);  prior  (mu_p, log s_p) = conv3x3(ELU(h))
                 posterior residual (dmu, dlog s) = conv3x3(f_g + conv1x1(h))
                 mu_q = mu_p + dmu,  log s_q = log s_p + dlog s
          g = 0: prior N(0, I); posterior (mu_q, log s_q) = conv3x3(ELU(conv1x1(ELU(f_0))))
          z_g ~ q;  h = conv1x1([h, z_g]);  an upsampling cell between scales
      -> P x [upsampling cell, cells] -> ELU -> conv3x3 -> logits (Bernoulli) or DMoL params

Parametrisation of each latent Normal (documented choice): the network emits raw ``(m, l)``;
``mu = 5 tanh(m / 5)``, ``log s = 5 tanh(l / 5)``, ``sigma = exp(log s) + 0.01``. The residual is
added to the prior's *raw* outputs before clamping, so zero residuals give exactly the prior
(clamping twice would not). The project's :class:`~crfold.models.common.Posterior` uses
``logvar = log sigma^2``; we store ``logvar = 2 log(exp(log s) + 0.01)`` (computed as
``2 logaddexp(log s, log 0.01)``), i.e. the log-variance of the distribution actually sampled, so
``gaussian_kl``, ``Posterior.sample`` and ``Posterior.log_prob`` are exact. The top prior is the
standard normal itself (``logvar = 0``, no +0.01). Posteriors and priors are flattened to
``(B, Z * h * w)`` per group (so ``gaussian_kl`` sums over all of a group's latent dims); the drawn
``z`` keep their ``(B, Z, h, w)`` maps. All latent parameters, KLs and log-probs are float32, also
under CUDA autocast.

Known differences from NVAE as published: no normalizing-flow cells (NVAE used them for
CIFAR-10 and CelebA, not MNIST); the stride-2 encoder skip is a 2x2 average pool + 1x1 conv; the
depthwise 5x5 weight is regularised through its (C, 25) reshape like every other conv; training
is single-process (no multi-GPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from crfold.consistency import gaussian_kl
from crfold.models.common import Posterior
from crfold_images.nvae.cells import DecoderCell, EncoderCell, WNConv2d, soft_clamp
from crfold_images.nvae.likelihood import (
    bernoulli_log_prob,
    dmol_log_prob,
    dmol_num_params,
)

__all__ = ["NVAE", "NVAEArch", "NVAEOutput"]

SIGMA_FLOOR = 0.01  # sigma = exp(log s) + 0.01
LIKELIHOODS = ("bernoulli", "dmol")


@dataclass
class NVAEArch:
    """Architecture hyper-parameters (defaults: the paper-scale MNIST model).

    Attributes:
        in_channels: image channels (1 MNIST, 3 colour).
        image_size: side the network works at; must be divisible by 2^(P + S - 1).
        data_size: side of the data; smaller than ``image_size`` means zero-pad the input and crop
            the output back (MNIST: 28 padded to 32).
        likelihood: "bernoulli" (binarized images in {0, 1}) or "dmol" (pixels in [0, 1],
            quantised to ``num_bits``).
        num_mixtures, num_bits: discretized-logistic mixture settings.
        channels: channels after the stem; doubled by every downsampling cell.
        num_preprocess_blocks, num_preprocess_cells: P blocks of cells, each ending in a stride-2
            cell (so ``num_preprocess_cells`` >= 1).
        num_postprocess_blocks, num_postprocess_cells: the mirror image in the decoder.
        groups_per_scale: latent groups per scale, coarsest scale first (top-down order); NVAE's
            "adaptive groups" for MNIST (10 groups at the finest scale) is ``(5, 10)``.
        latent_channels: Z, channels of each latent group.
        cells_per_group_enc, cells_per_group_dec: residual cells before each group.
    """

    in_channels: int = 1
    image_size: int = 32
    data_size: int = 28
    likelihood: str = "bernoulli"
    num_mixtures: int = 10
    num_bits: int = 8
    channels: int = 32
    num_preprocess_blocks: int = 2
    num_preprocess_cells: int = 3
    num_postprocess_blocks: int = 2
    num_postprocess_cells: int = 3
    groups_per_scale: tuple[int, ...] = (5, 10)
    latent_channels: int = 20
    cells_per_group_enc: int = 1
    cells_per_group_dec: int = 1

    def __post_init__(self) -> None:
        self.groups_per_scale = tuple(int(g) for g in self.groups_per_scale)
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if not self.groups_per_scale or min(self.groups_per_scale) < 1:
            raise ValueError(
                f"groups_per_scale must be non-empty, all >= 1: {self.groups_per_scale}"
            )
        for name in ("in_channels", "channels", "latent_channels", "num_preprocess_cells"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_postprocess_cells < 1 or self.num_preprocess_blocks < 0:
            raise ValueError("num_postprocess_cells must be >= 1 and num_preprocess_blocks >= 0")
        if self.num_postprocess_blocks != self.num_preprocess_blocks:
            raise ValueError(
                f"num_postprocess_blocks ({self.num_postprocess_blocks}) must equal "
                f"num_preprocess_blocks ({self.num_preprocess_blocks}) to restore the resolution"
            )
        factor = 2 ** (self.num_preprocess_blocks + len(self.groups_per_scale) - 1)
        if self.image_size % factor:
            raise ValueError(f"image_size must be divisible by {factor}, got {self.image_size}")
        if not 0 < self.data_size <= self.image_size or (self.image_size - self.data_size) % 2:
            raise ValueError(
                f"data_size must be <= image_size ({self.image_size}) with an even difference, "
                f"got {self.data_size}"
            )

    @property
    def num_groups(self) -> int:
        return sum(self.groups_per_scale)

    @property
    def out_params(self) -> int:
        """Decoder output maps per pixel: C logits, or the DMoL parameter count."""
        if self.likelihood == "bernoulli":
            return self.in_channels
        return dmol_num_params(self.in_channels, self.num_mixtures)


@dataclass
class NVAEOutput:
    """What :meth:`NVAE.forward` returns (B examples, G latent groups).

    Attributes:
        params: (B, out_params, data_size, data_size) float32 decoder output, cropped.
        log_px: (B,) float32 log p(x | z) in nats, summed over pixels.
        posteriors: G Posteriors q(z_g | x, z_<g), each (B, Z * h_g * w_g) float32.
        priors: G Posteriors p(z_g | z_<g), same shapes (group 0: zeros, the standard normal).
        z: G drawn latents, each (B, Z, h_g, w_g) float32 (the means when ``sample=False``).
        kl: (B, G) float32 analytic KL(q || p) per group.
        log_q: (B, G) float32 log q(z_g | x, z_<g) at the drawn z.
        log_p: (B, G) float32 log p(z_g | z_<g) at the drawn z.
        enc_feats: G encoder features f_g (B, C_g, h_g, w_g), for the shared-path CR variant.
        dec_states: G decoder states h before group g (None for group 0), same shapes as f_g.
        prior_raw: G raw prior outputs (B, 2 Z, h_g, w_g) before clamping (None for group 0).
    """

    params: torch.Tensor
    log_px: torch.Tensor
    posteriors: list[Posterior]
    priors: list[Posterior]
    z: list[torch.Tensor]
    kl: torch.Tensor
    log_q: torch.Tensor
    log_p: torch.Tensor
    enc_feats: list[torch.Tensor] = field(default_factory=list, repr=False)
    dec_states: list[torch.Tensor | None] = field(default_factory=list, repr=False)
    prior_raw: list[torch.Tensor | None] = field(default_factory=list, repr=False)

    @property
    def elbo(self) -> torch.Tensor:
        """(B,) ELBO with the analytic KL: ``log p(x|z) - sum_g KL_g``."""
        return self.log_px - self.kl.sum(1)

    @property
    def log_weight(self) -> torch.Tensor:
        """(B,) single-sample ELBO ``log p(x, z) - log q(z | x)`` at the drawn z."""
        return self.log_px + (self.log_p - self.log_q).sum(1)


def _normal(raw: torch.Tensor) -> Posterior:
    """Posterior from raw (B, 2 Z, h, w) outputs: soft-clamped mu, log s; flattened (B, Z h w)."""
    mu_raw, ls_raw = raw.float().chunk(2, dim=1)
    mu, log_s = soft_clamp(mu_raw), soft_clamp(ls_raw)
    logvar = 2.0 * torch.logaddexp(log_s, torch.full_like(log_s, math.log(SIGMA_FLOOR)))
    return Posterior(mu.flatten(1), logvar.flatten(1))


class NVAE(nn.Module):
    """Hierarchical VAE; see the module docstring for the layout and the parametrisation.

    Args:
        arch: an :class:`NVAEArch`.

    Shapes:
        input x: (B, in_channels, data_size, data_size) float; {0, 1} for "bernoulli", [0, 1]
        for "dmol". Group g at scale s has latents (Z, image_size / 2^(P + S - 1 - s), same).
    """

    def __init__(self, arch: NVAEArch) -> None:
        super().__init__()
        self.arch = arch
        a = arch
        num_scales, zc = len(a.groups_per_scale), a.latent_channels
        self.group_scale = [s for s, n in enumerate(a.groups_per_scale) for _ in range(n)]
        # channels and side at latent scale s (0 = coarsest)
        fine_ch = a.channels * 2**a.num_preprocess_blocks
        fine_side = a.image_size // 2**a.num_preprocess_blocks
        self.scale_ch = [fine_ch * 2 ** (num_scales - 1 - s) for s in range(num_scales)]
        self.scale_side = [fine_side // 2 ** (num_scales - 1 - s) for s in range(num_scales)]
        self.group_shapes = [
            (zc, self.scale_side[s], self.scale_side[s]) for s in self.group_scale
        ]  # (Z, h_g, w_g) per group

        self.stem = WNConv2d(a.in_channels, a.channels, 3)
        pre, ch = [], a.channels
        for _ in range(a.num_preprocess_blocks):
            pre += [EncoderCell(ch, ch) for _ in range(a.num_preprocess_cells - 1)]
            pre.append(EncoderCell(ch, 2 * ch, downsample=True))
            ch *= 2
        self.preprocess = nn.Sequential(*pre)

        def cells(kind: type[nn.Module], c: int, n: int) -> nn.Sequential:
            return nn.Sequential(*[kind(c, c) for _ in range(n)])

        gch = [self.scale_ch[s] for s in self.group_scale]
        self.enc_cells = nn.ModuleList(cells(EncoderCell, c, a.cells_per_group_enc) for c in gch)
        self.enc_down = nn.ModuleList(
            EncoderCell(self.scale_ch[s], self.scale_ch[s - 1], downsample=True)
            for s in range(1, num_scales)
        )  # enc_down[s - 1]: scale s -> s - 1
        self.enc0 = nn.Sequential(nn.ELU(), WNConv2d(gch[0], gch[0], 1), nn.ELU())
        side0 = self.scale_side[0]
        self.h0 = nn.Parameter(torch.randn(gch[0], side0, side0))
        self.dec_cells = nn.ModuleList(
            cells(DecoderCell, c, a.cells_per_group_dec if g > 0 else 0) for g, c in enumerate(gch)
        )
        self.dec_up = nn.ModuleList(
            DecoderCell(self.scale_ch[s - 1], self.scale_ch[s], upsample=True)
            for s in range(1, num_scales)
        )  # dec_up[s - 1]: scale s - 1 -> s
        self.prior_net = nn.ModuleList(
            nn.Sequential(nn.ELU(), WNConv2d(c, 2 * zc, 3)) if g > 0 else nn.Identity()
            for g, c in enumerate(gch)
        )
        self.enc_combiner = nn.ModuleList(
            WNConv2d(c, c, 1) if g > 0 else nn.Identity() for g, c in enumerate(gch)
        )
        self.enc_sampler = nn.ModuleList(WNConv2d(c, 2 * zc, 3) for c in gch)
        self.dec_combiner = nn.ModuleList(WNConv2d(c + zc, c, 1) for c in gch)
        post = []
        for _ in range(a.num_postprocess_blocks):
            post.append(DecoderCell(ch, ch // 2, upsample=True))
            ch //= 2
            post += [DecoderCell(ch, ch) for _ in range(a.num_postprocess_cells - 1)]
        self.postprocess = nn.Sequential(*post)
        self.head = nn.Sequential(nn.ELU(), WNConv2d(ch, a.out_params, 3))

    # ----------------------------------------------------------------------------------- input
    def _check_input(self, x: torch.Tensor) -> None:
        a = self.arch
        expected = (a.in_channels, a.data_size, a.data_size)
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != expected:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"x must be a (B, {', '.join(map(str, expected))}) tensor, got {shape}"
            )
        if not x.is_floating_point():
            raise ValueError(f"x must be floating point, got {x.dtype}")

    def _targets(self, x: torch.Tensor) -> torch.Tensor:
        """Likelihood targets (B, C, data, data): x for Bernoulli, quantised [-1, 1] for DMoL."""
        if self.arch.likelihood == "bernoulli":
            return x.float()
        levels = 2**self.arch.num_bits - 1
        return torch.round(x.float().clamp(0, 1) * levels) / levels * 2.0 - 1.0

    def log_likelihood(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B,) float32 log p(x | z) for cropped ``params`` and data-range ``x``."""
        target = self._targets(x)
        with torch.autocast(device_type=params.device.type, enabled=False):
            if self.arch.likelihood == "bernoulli":
                return bernoulli_log_prob(params, target)
            return dmol_log_prob(params, target, self.arch.num_mixtures, self.arch.num_bits)

    # ---------------------------------------------------------------------------------- towers
    def encode_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Bottom-up tower: G features f_g (B, C_g, h_g, w_g), indexed top-down (f_0 coarsest)."""
        self._check_input(x)
        pad = (self.arch.image_size - self.arch.data_size) // 2
        inp = self._targets(x) if self.arch.likelihood == "dmol" else x
        h = self.preprocess(self.stem(F.pad(inp, (pad,) * 4)))
        feats: list[torch.Tensor | None] = [None] * self.arch.num_groups
        for g in reversed(range(self.arch.num_groups)):
            h = self.enc_cells[g](h)
            feats[g] = h
            s = self.group_scale[g]
            if g > 0 and self.group_scale[g - 1] != s:
                h = self.enc_down[s - 1](h)
        return feats

    def posterior_from(
        self, g: int, feat: torch.Tensor, state: torch.Tensor | None, prior_raw: torch.Tensor | None
    ) -> Posterior:
        """q(z_g | ...) from encoder feature f_g and (g > 0) decoder state h and raw prior."""
        if g == 0:
            return _normal(self.enc_sampler[0](self.enc0(feat)))
        residual = self.enc_sampler[g](feat + self.enc_combiner[g](state))
        return _normal(prior_raw.float() + residual.float())

    def forward(
        self,
        x: torch.Tensor,
        *,
        sample: bool = True,
        generator: torch.Generator | None = None,
    ) -> NVAEOutput:
        """Encode, walk the top-down path drawing z_g ~ q (or z_g = mu_q), decode, score.

        Args:
            x: (B, C, data_size, data_size) float images (see the class docstring).
            sample: draw z_g ~ q; False uses the posterior means (deterministic encoding).
            generator: optional torch.Generator on x's device for the draws.

        Returns:
            An :class:`NVAEOutput`.
        """
        feats = self.encode_features(x)
        b = x.shape[0]
        h = self.h0.unsqueeze(0).expand(b, -1, -1, -1)
        posts, priors, zs, kls, log_q, log_p = [], [], [], [], [], []
        states: list[torch.Tensor | None] = []
        raws: list[torch.Tensor | None] = []
        for g in range(self.arch.num_groups):
            s = self.group_scale[g]
            if g > 0 and self.group_scale[g - 1] != s:
                h = self.dec_up[s - 1](h)
            if g == 0:
                raw, state = None, None
                zeros = torch.zeros(b, math.prod(self.group_shapes[0]), device=x.device)
                prior = Posterior(zeros, zeros)
            else:
                h = self.dec_cells[g](h)
                raw, state = self.prior_net[g](h).float(), h
                prior = _normal(raw)
            q = self.posterior_from(g, feats[g], state, raw)
            z = q.sample(generator) if sample else q.mu  # (B, Z h w) float32
            kls.append(gaussian_kl(q.mu, q.logvar, prior.mu, prior.logvar))
            log_q.append(q.log_prob(z))
            log_p.append(prior.log_prob(z))
            z_map = z.view(b, *self.group_shapes[g])
            h = self.dec_combiner[g](torch.cat([h, z_map.to(h.dtype)], dim=1))
            posts.append(q)
            priors.append(prior)
            zs.append(z_map)
            states.append(state)
            raws.append(raw)
        out = self.head(self.postprocess(h))
        crop = (self.arch.image_size - self.arch.data_size) // 2
        if crop:
            out = out[:, :, crop:-crop, crop:-crop]
        params = out.float()
        return NVAEOutput(
            params=params,
            log_px=self.log_likelihood(params, x),
            posteriors=posts,
            priors=priors,
            z=zs,
            kl=torch.stack(kls, dim=1),
            log_q=torch.stack(log_q, dim=1),
            log_p=torch.stack(log_p, dim=1),
            enc_feats=feats,
            dec_states=states,
            prior_raw=raws,
        )

    def cross_posteriors(
        self,
        feats: list[torch.Tensor],
        dec_states: list[torch.Tensor | None],
        prior_raw: list[torch.Tensor | None],
    ) -> list[Posterior]:
        """Posteriors from encoder features ``feats`` conditioned on another input's path.

        ``q(z_g | t(x), z_<g of x)``: the G features of t(x) (B, C_g, h_g, w_g) combined with the
        decoder states and raw priors of x's forward pass (``NVAEOutput.dec_states`` and
        ``.prior_raw``, sliced to the same B rows). The shared-path CR alternative.
        """
        n = self.arch.num_groups
        if not len(feats) == len(dec_states) == len(prior_raw) == n:
            raise ValueError(
                f"feats, dec_states and prior_raw must each hold {n} entries, got "
                f"{len(feats)}, {len(dec_states)}, {len(prior_raw)}"
            )
        return [
            self.posterior_from(g, *args)
            for g, args in enumerate(zip(feats, dec_states, prior_raw))
        ]

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> list[Posterior]:
        """G posteriors along the mean path (z_g = mu_q for every group), each (B, Z h_g w_g)."""
        return self.forward(x, sample=False).posteriors

    def log_weights(
        self, x: torch.Tensor, n: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(n, B) float32 importance log-weights ``log p(x, z) - log q(z|x)``, z ~ q(z|x).

        For :func:`crfold.metrics.iw_nll`. Call in eval mode (BatchNorm running statistics):
        the n samples of a batch are drawn in one (n B)-row pass.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        b = x.shape[0]
        out = self.forward(x.repeat(n, 1, 1, 1), generator=generator)
        return out.log_weight.view(n, b)
