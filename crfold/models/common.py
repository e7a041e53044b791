"""The small typed VAE interface every model shares (docs/design.md#vae-interface).

``encode(x) -> Posterior``, ``decode(z) -> recon``, ``forward(x) -> VAEOutput``. The
reparameterization and the diagonal-Gaussian quantities are written once, here.
Convention: ``logvar = log sigma^2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class Posterior:
    """Diagonal Gaussian q(z|x) = N(mu, diag(exp(logvar))).

    Attributes:
        mu: (B, L) means.
        logvar: (B, L) log variances (log sigma^2).
    """

    mu: torch.Tensor
    logvar: torch.Tensor

    @property
    def std(self) -> torch.Tensor:
        """(B, L) standard deviations sigma = exp(logvar / 2)."""
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterized sample z = mu + sigma * eps, (B, L); differentiable in mu, logvar."""
        eps = torch.randn(
            self.mu.shape, generator=generator, device=self.mu.device, dtype=self.mu.dtype
        )
        return self.mu + self.std * eps

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z|x) summed over latent dims: (B,) for z of shape (B, L)."""
        return -0.5 * (LOG_2PI + self.logvar + (z - self.mu) ** 2 / torch.exp(self.logvar)).sum(-1)

    def detach(self) -> Posterior:
        return Posterior(self.mu.detach(), self.logvar.detach())


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dim: (B,) for z of shape (B, L)."""
    return -0.5 * (LOG_2PI + z**2).sum(-1)


@dataclass
class VAEOutput:
    """What ``model(x)`` returns.

    Attributes:
        recon: the decoded reconstruction (point clouds: (B, M, 3)).
        posterior: q(z|x).
        z: (B, L) the latent code that was decoded (a sample in VAE modes, mu in AE mode).
    """

    recon: torch.Tensor
    posterior: Posterior
    z: torch.Tensor
