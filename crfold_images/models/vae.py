"""The image VAE: conv or MLP encoder/decoder, a pixel likelihood, and the shared typed interface.

``encode(x) -> Posterior``, ``decode(z) -> params``, ``forward(x) -> VAEOutput``
(docs/design.md#vae-interface), plus what the objectives and metrics need: ``recon_nll``
(per-image NLL in nats), ``log_weights(x, n)`` (the (n, B) importance weights of the IW-NLL) and
``sample``. The same network serves the VAE, the IWAE and the beta-VAE: they differ only in the
objective (:mod:`crfold_images.models.objectives`).

Inputs x are (B, C, S, S) float in [0, 1]; for the Bernoulli likelihood they must already be
binarized (0/1), for the discretized logistic multiples of 1/255.

Under autocast (``amp``, :mod:`crfold.amp`) the nets run in bfloat16 / float16, but ``encode``
returns float32 posterior parameters, ``decode`` float32 likelihood parameters, and ``recon_nll``
runs with autocast off: latents, KL terms and log-likelihoods are always float32.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from crfold.models.common import Posterior, VAEOutput, standard_normal_log_prob
from crfold_images.models import likelihoods
from crfold_images.models.conv import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder

__all__ = ["ImageVAE", "draw_latents"]


def draw_latents(post: Posterior, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """k reparameterized samples per posterior: (k, B, L), differentiable in mu and logvar.

    With k = 1 the draw is the same as ``post.sample(generator)`` (same noise) with a leading
    dim of 1.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    mu = post.mu
    eps = torch.randn((k, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
    return mu.unsqueeze(0) + post.std.unsqueeze(0) * eps  # (k, B, L)


class ImageVAE(nn.Module):
    """VAE on images with a diagonal-Gaussian posterior and a standard-normal prior.

    Args:
        in_channels: image channels C (1 grayscale, 3 colour).
        image_size: side S of the square images (28, 32, 64; see ``conv.padded_size``).
        latent_dim: L (50 in the paper).
        arch: "conv" (the WAE-style nets) or "mlp".
        width: channel / hidden-unit multiplier (1.0 = the paper's widths).
        likelihood: "bernoulli", "gaussian" or "logistic".
        gaussian_sigma: fixed sigma of the Gaussian likelihood; None learns it per channel.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        latent_dim: int = 50,
        arch: str = "conv",
        width: float = 1.0,
        likelihood: str = "bernoulli",
        gaussian_sigma: float | None = None,
    ) -> None:
        super().__init__()
        if in_channels < 1 or latent_dim < 1:
            raise ValueError(
                f"in_channels and latent_dim must be >= 1, got {in_channels}, {latent_dim}"
            )
        nets = {"conv": (ConvEncoder, ConvDecoder), "mlp": (MLPEncoder, MLPDecoder)}
        if arch not in nets:
            raise ValueError(f"arch must be 'conv' or 'mlp', got {arch!r}")
        self.in_channels, self.image_size, self.latent_dim = in_channels, image_size, latent_dim
        self.likelihood = likelihoods.make(likelihood, in_channels, gaussian_sigma)
        enc, dec = nets[arch]
        self.encoder = enc(in_channels, image_size, latent_dim, width)
        out_channels = self.likelihood.params_per_channel * in_channels
        self.decoder = dec(out_channels, image_size, latent_dim, width)

    def _check(self, x: torch.Tensor) -> None:
        shape = (self.in_channels, self.image_size, self.image_size)
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != shape:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"x must be a (B, {shape[0]}, {shape[1]}, {shape[2]}) tensor, got {got}"
            )
        if not x.is_floating_point():
            raise ValueError(f"x must be floating point in [0, 1], got {x.dtype}")

    def encode(self, x: torch.Tensor) -> Posterior:
        """q(z|x): float32 mu, logvar (B, L) for x (B, C, S, S) in [0, 1]."""
        self._check(x)
        mu, logvar = self.encoder(x)  # (B, L) each, the autocast dtype under autocast
        return Posterior(mu.float(), logvar.float())

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Float32 likelihood parameters (B, K*C, S, S) for z (B, L)."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must be (B, {self.latent_dim}), got {tuple(z.shape)}")
        return self.decoder(z).float()

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> VAEOutput:
        """Encode, draw one z ~ q(z|x), decode: VAEOutput(recon params, posterior, z (B, L))."""
        post = self.encode(x)
        z = post.sample(generator)
        return VAEOutput(self.decode(z), post, z)

    def recon_nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B,) float32 -log p(x|z) in nats, summed over channels and pixels."""
        with torch.autocast(params.device.type, enabled=False):
            return self.likelihood.nll(params.float(), x.float())

    def log_weights_from(
        self, x: torch.Tensor, post: Posterior, z: torch.Tensor, chunk: int = 256
    ) -> torch.Tensor:
        """log w = log p(x|z) + log p(z) - log q(z|x) for given latents.

        Args:
            x: (B, C, S, S) images.
            post: q(z|x) with mu, logvar (B, L).
            z: (n, B, L) latents.
            chunk: images decoded per call in eval mode (bounds memory); in training mode all
                n*B images are decoded at once.

        Returns:
            (n, B) log weights.
        """
        n, b, latent = z.shape
        if self.training:  # one decoder call, so BatchNorm normalizes all n*B images together
            chunk = n * b
        flat = z.reshape(n * b, latent)  # (n*B, L), sample-major
        xs = x.unsqueeze(0).expand(n, *x.shape).reshape(n * b, *x.shape[1:])  # (n*B, C, S, S)
        nll = torch.cat(
            [
                self.recon_nll(self.decode(flat[i : i + chunk]), xs[i : i + chunk])
                for i in range(0, n * b, chunk)
            ]
        ).view(n, b)
        log_prior = standard_normal_log_prob(z)  # (n, B)
        log_q = post.log_prob(z)  # (n, B), broadcasting over the leading dim
        return -nll + log_prior - log_q

    @torch.no_grad()
    def log_weights(
        self, x: torch.Tensor, n: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(n, B) log importance weights of n fresh z_s ~ q(z|x), for ``crfold.metrics.iw_nll``.

        Uses the module's current mode; call ``eval()`` first so BatchNorm uses running stats.
        """
        post = self.encode(x)
        return self.log_weights_from(x, post, draw_latents(post, n, generator))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images from the prior: the likelihood's mean, (n, C, S, S) in [0, 1]."""
        p = next(self.parameters())
        z = torch.randn((n, self.latent_dim), generator=generator, device=p.device, dtype=p.dtype)
        return self.likelihood.mean(self.decode(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean reconstruction through mu: (B, C, S, S) in [0, 1]."""
        return self.likelihood.mean(self.decode(self.encode(x).mu))
