"""FoldingNet (Yang et al., CVPR 2018) as an auto-encoder or a VAE, and its reconstruction losses.

Faithful to the official specification (summarised in docs/design.md#foldingnet):

* Encoder input: 12 channels per point, xyz + the 9 entries of the covariance of its ``k = 16``
  nearest neighbours excluding the point itself (mean-centred over the neighbours, unbiased,
  divided by ``k - 1``). ``use_covariance=False`` keeps xyz only (3 channels).
* Pointwise MLP 12-64-64-64 (ReLU), graph max-pool, 64-128 (ReLU), graph max-pool, 128-1024 (no
  ReLU), max over points, 1024-512 (ReLU), then a linear head 512-L for the codeword / mean and,
  for the VAE modes, a second linear head 512-L for ``logvar``. A graph max-pool takes, for every
  point, the channel-wise max over the point itself and its k nearest neighbours; the graph is
  built once per cloud from the input xyz (the same kNN as the covariance). It is the directed
  kNN graph; the official code symmetrizes it (A + A^T), which this module does not.
* Decoder: a ``grid_size``² grid on [-0.3, 0.3]² (45² = 2025 points by default); fold 1 maps
  concat(grid (2), code (L)) through 512-512-3, fold 2 maps concat(fold-1 output (3), code (L))
  through 512-512-3 (ReLU between layers, none at the end).

The model is one of two kinds (:data:`MODES`), which change only what
:meth:`FoldingNetVAE.forward` decodes: ``"ae"`` is the original deterministic FoldingNet (z = mu,
no logvar head); ``"vae"`` decodes a reparameterized sample. The training modes ``base``, ``aug``
and ``cr`` (and the old ``vae+aug``) are all a ``"vae"`` model and are accepted as such: the
augmentation and the consistency term live in the task (:mod:`crfold.train.foldingnet`).

>>> model = FoldingNetVAE(latent_dim=512, k=16, grid_size=45)
>>> x = torch.randn(2, 2048, 3)
>>> out = model(x)                                  # VAEOutput(recon (2, 2025, 3), posterior, z)
>>> nll = reconstruction_nll(out.recon, x, obs_scale=model.obs_scale)   # (2,) nats
>>> cd = mean_chamfer_loss(out.recon, x)            # (2,) FoldingNet's training Chamfer

Two reconstruction terms are offered (:data:`RECON_TERMS`, the ``recon`` key of a run; see
:meth:`FoldingNetVAE.reconstruction_loss`): ``"gaussian"``, the Gaussian Chamfer NLL in nats
(:func:`reconstruction_nll`, the default), and ``"mean_chamfer"``, FoldingNet's per-point-mean
Chamfer loss (:func:`mean_chamfer_loss`, in squared coordinate units, not nats).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import chamfer_distance, global_max_pool, graph_max_pool, knn_points
from .common import Posterior, VAEOutput

MODES = ("ae", "vae")
_VAE_TRAINING_MODES = ("base", "aug", "cr", "vae+aug")  # accepted: each is a "vae" model
GRID_RANGE = 0.3  # the folding grid spans [-GRID_RANGE, GRID_RANGE]^2
AE_LOGVAR = 0.0  # the constant logvar of the posterior returned in "ae" mode (carries nothing)
DEFAULT_OBS_SCALE = 0.1  # chosen by the sweep in results/obs_scale_sweep/sweep.md
FOLDINGNET_EPS = 1e-6  # FoldingNet's metric: D = sqrt(||x - y||^2 + 1e-6)
# The reconstruction terms of training (the ``recon`` config key); crfold.config.RECON_TERMS too.
RECON_TERMS = ("gaussian", "mean_chamfer")


def _check_cloud(x, k: int, name: str = "x") -> None:
    """Validate a (B, N, 3) float cloud with N >= k + 1; raises ValueError naming ``name``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B, N, 3), got {type(x)}")
    if x.dim() != 3 or x.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (B, N, 3), got {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.shape[1] < k + 1:
        raise ValueError(
            f"{name} must have at least k + 1 = {k + 1} points (k = {k}), got N = {x.shape[1]}"
        )


def _check_k(k) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an int >= 2 (the covariance divides by k - 1), got {k!r}")


def knn_excluding_self(x: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k nearest neighbours of every point of ``x`` among the others.

    Built on ``knn_points(x, x, K=k + 1)``, whose ties keep the lowest index: a duplicate of the
    query with a lower index can precede the query itself, so the query's own index is dropped
    wherever it is (not blindly the first column); if ``k + 1`` earlier duplicates crowd it out
    entirely, the last (farthest) column is dropped instead. The result is exactly the first k of
    the other points ordered by (distance, index).

    Args:
        x: (B, N, 3) float clouds, N >= k + 1, no padding.
        k: number of neighbours, >= 2.

    Returns:
        (B, N, k) int64 indices into dim 1 of ``x``, ascending by distance; never the query itself.
    """
    _check_k(k)
    _check_cloud(x, k)
    N = x.shape[1]
    idx = knn_points(x, x, K=k + 1).idx  # (B, N, k+1)
    is_self = idx == torch.arange(N, device=x.device).view(1, N, 1)  # (B, N, k+1), <= 1 per row
    # Column of the self match, or k (the last column) when it is absent.
    pos = torch.where(is_self.any(-1), is_self.to(torch.int64).argmax(-1), k)  # (B, N)
    cols = torch.arange(k, device=x.device).view(1, 1, k)
    cols = cols + (cols >= pos.unsqueeze(-1)).to(torch.int64)  # (B, N, k) skip the dropped column
    return idx.gather(-1, cols)


def _gather_points(values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, N, C) values and (B, P, K) indices -> (B, P, K, C) gathered rows (differentiable)."""
    batch = torch.arange(values.shape[0], device=values.device).view(-1, 1, 1)
    return values[batch, idx]


def local_covariance(x: torch.Tensor, k: int = 16, neighbours: torch.Tensor | None = None):
    """Per-point covariance of the k nearest neighbours excluding the point (FoldingNet input).

    The neighbours are mean-centred over themselves (not around the query point) and the sum of
    outer products is divided by ``k - 1`` (unbiased, as ``np.cov``). Computed with elementwise
    products so that autocast does not lower its precision.

    Args:
        x: (B, N, 3) float clouds, N >= k + 1, no padding.
        k: number of neighbours, >= 2.
        neighbours: optional (B, N, k) int64 precomputed :func:`knn_excluding_self` indices.

    Returns:
        (B, N, 9) the row-major 3x3 covariance of each point's neighbourhood, dtype of ``x``.
    """
    _check_k(k)
    _check_cloud(x, k)
    if neighbours is None:
        neighbours = knn_excluding_self(x, k)
    elif neighbours.shape != (*x.shape[:2], k):
        raise ValueError(
            f"neighbours must have shape {(*x.shape[:2], k)}, got {tuple(neighbours.shape)}"
        )
    nb = _gather_points(x, neighbours)  # (B, N, k, 3)
    d = nb - nb.mean(dim=2, keepdim=True)  # (B, N, k, 3)
    cov = (d.unsqueeze(-1) * d.unsqueeze(-2)).sum(dim=2) / (k - 1)  # (B, N, 3, 3)
    return cov.flatten(-2)  # (B, N, 9)


class FoldingNetEncoder(nn.Module):
    """FoldingNet's graph encoder: cloud -> codeword / posterior mean (and log variance).

    Args:
        latent_dim: L, size of the codeword / latent.
        k: neighbours for the covariance and the graph max-pools (FoldingNet: 16).
        use_covariance: 12-channel input (xyz + local covariance) if True, else xyz only.
        variational: add the logvar head (VAE modes); without it this is the original encoder.

    Shapes:
        input: (B, N, 3) float, N >= k + 1, no padding.
        output: ``(mu (B, L), logvar (B, L) or None)``.
    """

    def __init__(
        self,
        latent_dim: int = 512,
        k: int = 16,
        use_covariance: bool = True,
        variational: bool = True,
    ):
        super().__init__()
        _check_k(k)
        self.k = k
        self.use_covariance = use_covariance
        in_ch = 12 if use_covariance else 3
        self.mlp1 = nn.Sequential(
            nn.Linear(in_ch, 64),
            nn.ReLU(),
            nn.Linear(64, 64),
            nn.ReLU(),
            nn.Linear(64, 64),
            nn.ReLU(),
        )
        self.graph1 = nn.Linear(64, 128)  # after the first graph max-pool, then ReLU
        self.graph2 = nn.Linear(128, 1024)  # after the second graph max-pool, no ReLU
        self.fc = nn.Linear(1024, 512)  # after the max over points, then ReLU
        self.mu = nn.Linear(512, latent_dim)
        self.logvar = nn.Linear(512, latent_dim) if variational else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        _check_cloud(x, self.k)
        neighbours = knn_excluding_self(x, self.k)  # (B, N, k), built once from xyz
        h = x  # (B, N, 3)
        if self.use_covariance:
            cov = local_covariance(x, self.k, neighbours)  # (B, N, 9)
            h = torch.cat([x, cov], dim=-1)  # (B, N, 12)
        h = self.mlp1(h)  # (B, N, 64)
        h = F.relu(self.graph1(graph_max_pool(h, neighbours)))  # (B, N, 128)
        h = self._graph2_max(graph_max_pool(h, neighbours))  # (B, 1024)
        h = F.relu(self.fc(h))  # (B, 512)
        logvar = None if self.logvar is None else self.logvar(h)  # (B, L)
        return self.mu(h), logvar

    def _graph2_max(self, h: torch.Tensor) -> torch.Tensor:
        """``max_n graph2(h)[:, n]``: (B, N, 128) -> (B, 1024), the max over the points.

        The gradient of a max reaches only its winners, so the (B, N, 1024) activation is
        computed without autograd just to find them (:func:`global_max_pool`, first maximal point),
        and only the winning rows are recomputed with autograd, in float32. The backward is then a
        (B, 1024, 128) product and a scatter into the (B, N, 128) input gradient instead of two
        dense (B N x 1024 x 128) products with a gradient that is zero but for B * 1024 entries,
        and the activation is not kept for the backward. In float32 the values equal the max of
        the layer's output up to the order of the sums; under bf16 autocast the winners are chosen
        on the bf16 output and their values recomputed in float32 (more precise than the bf16 max).
        """
        with torch.no_grad():
            _, win = global_max_pool(self.graph2(h), return_indices=True)  # (B, 1024)
        rows = h.gather(1, win.unsqueeze(-1).expand(-1, -1, h.shape[-1]))  # (B, 1024, 128)
        weight, bias = self.graph2.weight, self.graph2.bias  # (1024, 128), (1024,)
        return (rows.to(weight.dtype) * weight).sum(-1) + bias  # (B, 1024)


class _Fold(nn.Module):
    """One folding MLP: concat(point features (D), code (L)) -> 512 -> 512 -> 3.

    The first layer is an ordinary ``Linear(D + L, 512)`` on the concatenation (grid/points
    first, code second), evaluated without materializing the per-point copies of the code: the
    code's part of the product is computed once per cloud and broadcast over the points.
    """

    def __init__(self, in_dim: int, latent_dim: int):
        super().__init__()
        self.in_dim = in_dim
        self.fc1 = nn.Linear(in_dim + latent_dim, 512)
        self.fc2 = nn.Linear(512, 512)
        self.fc3 = nn.Linear(512, 3)

    def forward(self, pts: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """pts (B, M, D) or (M, D) shared by the batch, code (B, L) -> (B, M, 3)."""
        w = self.fc1.weight  # (512, D + L)
        h_code = F.linear(code, w[:, self.in_dim :], self.fc1.bias)  # (B, 512)
        h = F.linear(pts, w[:, : self.in_dim])  # (B, M, 512) or (M, 512)
        h = F.relu(h + h_code.unsqueeze(1))  # (B, M, 512)
        return self.fc3(F.relu(self.fc2(h)))  # (B, M, 3)


class FoldingNetDecoder(nn.Module):
    """FoldingNet's two-fold decoder: code -> (B, grid_size**2, 3) cloud.

    Args:
        latent_dim: L, size of the code.
        grid_size: default side of the square grid (FoldingNet: 45 -> 2025 points).

    Shapes:
        input: (B, L) float codes.
        output: (B, M, 3) with M = grid_size**2.
    """

    def __init__(self, latent_dim: int = 512, grid_size: int = 45):
        super().__init__()
        _check_grid_size(grid_size)
        self.latent_dim = latent_dim
        self.grid_size = grid_size
        self.fold1 = _Fold(2, latent_dim)
        self.fold2 = _Fold(3, latent_dim)
        self._grids: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}

    def grid(self, grid_size: int | None = None, device=None, dtype=torch.float32) -> torch.Tensor:
        """The (grid_size**2, 2) folding grid on [-0.3, 0.3]², cached per (size, device, dtype).

        Row ``m`` is ``(u[m // G], u[m % G])`` with ``u = linspace(-0.3, 0.3, G)``: the first
        coordinate varies slowest (``itertools.product`` order, as the reference ports).
        """
        G = self.grid_size if grid_size is None else grid_size
        _check_grid_size(G)
        device = torch.device("cpu") if device is None else torch.device(device)
        key = (G, device, dtype)
        if key not in self._grids:
            # A normal tensor even when first built under inference_mode, so that a later
            # training step may save it for backward.
            with torch.inference_mode(False):
                u = torch.linspace(-GRID_RANGE, GRID_RANGE, G, device=device, dtype=dtype)
                gu, gv = torch.meshgrid(u, u, indexing="ij")
                self._grids[key] = torch.stack([gu, gv], dim=-1).reshape(G * G, 2)
        return self._grids[key]

    def forward(self, z: torch.Tensor, grid_size: int | None = None):
        """Decode ``z`` (B, L); returns ``(points (B, M, 3), grid (M, 2))``, M = grid_size**2."""
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != self.latent_dim:
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z)
            raise ValueError(f"z must have shape (B, {self.latent_dim}), got {got}")
        # The grid follows the parameters' dtype (autocast, if on, casts it like any input).
        grid = self.grid(grid_size, z.device, self.fold1.fc1.weight.dtype)  # (M, 2)
        fold1 = self.fold1(grid, z)  # (B, M, 3)
        return self.fold2(fold1, z), grid  # (B, M, 3), (M, 2)


def _check_grid_size(grid_size) -> None:
    if isinstance(grid_size, bool) or not isinstance(grid_size, int) or grid_size < 2:
        raise ValueError(f"grid_size must be an int >= 2, got {grid_size!r}")


class FoldingNetVAE(nn.Module):
    """FoldingNet auto-encoder / VAE with the shared interface (encode, decode, forward).

    Args:
        latent_dim: L (FoldingNet's codeword: 512).
        k: neighbours of the covariance and graph max-pools (16).
        grid_size: default decoder grid side (45 -> 2025 points).
        use_covariance: 12-channel encoder input (True) or xyz only.
        mode: one of :data:`MODES` (a training mode base/aug/cr means "vae"). ``"ae"``: no logvar head, z = mu, and the posterior's logvar
            is the constant :data:`AE_LOGVAR` (0, i.e. unit variance; it carries no information,
            so an AE trainer must not add KL terms built from it). Other modes: z is sampled.
        obs_scale: sigma of the Gaussian observation model behind :meth:`reconstruction_nll`;
            it sets the Chamfer-vs-KL weight (see :func:`reconstruction_nll`). Provisional default.

    Shapes:
        input: (B, N, 3) float clouds, N >= k + 1, no padding.
        output: :class:`VAEOutput` with recon (B, grid_size**2, 3), posterior (B, L), z (B, L).
    """

    def __init__(
        self,
        latent_dim: int = 512,
        k: int = 16,
        grid_size: int = 45,
        use_covariance: bool = True,
        mode: str = "vae",
        obs_scale: float = DEFAULT_OBS_SCALE,
    ):
        super().__init__()
        if mode in _VAE_TRAINING_MODES:
            mode = "vae"
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES} (or a training mode), got {mode!r}")
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"latent_dim must be an int >= 1, got {latent_dim!r}")
        _check_obs_scale(obs_scale)
        self.mode = mode
        self.latent_dim = latent_dim
        self.obs_scale = float(obs_scale)
        self.encoder = FoldingNetEncoder(latent_dim, k, use_covariance, variational=mode != "ae")
        self.decoder = FoldingNetDecoder(latent_dim, grid_size)

    @property
    def k(self) -> int:
        return self.encoder.k

    @property
    def grid_size(self) -> int:
        return self.decoder.grid_size

    def encode(self, x: torch.Tensor) -> Posterior:
        """q(z|x) for clouds ``x`` (B, N, 3): Posterior(mu (B, L), logvar (B, L))."""
        mu, logvar = self.encoder(x)
        if logvar is None:
            logvar = torch.full_like(mu, AE_LOGVAR)
        return Posterior(mu, logvar)

    def decode(self, z: torch.Tensor, grid_size: int | None = None) -> torch.Tensor:
        """Fold a grid_size² grid (default ``self.grid_size``) with codes z (B, L) -> (B, M, 3)."""
        return self.decoder(z, grid_size)[0]

    def decode_with_grid(self, z: torch.Tensor, grid_size: int | None = None):
        """Like :meth:`decode`, also returning the grid: ``(points (B, M, 3), grid (M, 2))``.

        ``points[:, m]`` is the fold of ``grid[m]`` (e.g. to colour points by grid coordinate).
        """
        return self.decoder(z, grid_size)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> VAEOutput:
        """Encode, pick z (mu in ``"ae"`` mode, else a sample drawn with ``generator``), decode."""
        posterior = self.encode(x)
        z = posterior.mu if self.mode == "ae" else posterior.sample(generator)
        return VAEOutput(self.decode(z), posterior, z)

    def reconstruction_nll(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """:func:`reconstruction_nll` with this model's ``obs_scale``: (B,) nats."""
        return reconstruction_nll(recon, x, obs_scale=self.obs_scale)

    def reconstruction_loss(
        self, recon: torch.Tensor, x: torch.Tensor, kind: str = "gaussian"
    ) -> torch.Tensor:
        """The per-sample reconstruction term of training, (B,), in the reading ``kind``.

        ``"gaussian"``: :meth:`reconstruction_nll` (nats, ``obs_scale``); ``"mean_chamfer"``:
        :func:`mean_chamfer_loss` (FoldingNet's Chamfer loss, squared units; ``obs_scale`` unused).

        Raises:
            ValueError: ``kind`` is not one of :data:`RECON_TERMS`.
        """
        if kind == "gaussian":
            return self.reconstruction_nll(recon, x)
        if kind == "mean_chamfer":
            return mean_chamfer_loss(recon, x)
        raise ValueError(f"kind must be one of {RECON_TERMS}, got {kind!r}")


def _check_obs_scale(obs_scale) -> None:
    if isinstance(obs_scale, bool) or not isinstance(obs_scale, (int, float)) or obs_scale <= 0:
        raise ValueError(f"obs_scale must be a positive number, got {obs_scale!r}")


def reconstruction_nll(
    recon: torch.Tensor, x: torch.Tensor, obs_scale: float = DEFAULT_OBS_SCALE
) -> torch.Tensor:
    """Chamfer as a Gaussian negative log-likelihood: the training reconstruction term, per sample.

    Each point of either cloud is modelled as its nearest neighbour in the other cloud plus
    isotropic noise N(0, obs_scale² I_3); dropping the constant, the negative log-likelihood is

        nll[b] = chamfer_sum[b] / (2 * obs_scale**2),
        chamfer_sum[b] = sum_i min_j ||recon_bi - x_bj||² + sum_j min_i ||x_bj - recon_bi||²,

    i.e. the squared Chamfer summed (not averaged) over the points of both directions. The dropped
    constant is ``(M + N) * 3/2 * log(2 pi obs_scale²)`` per sample. Being in nats, it is added to
    a KL in nats with weight 1, so ``obs_scale`` alone decides the Chamfer-vs-KL balance: too
    large and the KL wins (posterior collapse: codes carry nothing), too small and the model is
    close to a deterministic auto-encoder. The default 0.1 comes from a measured sweep on
    ModelNet10 (results/obs_scale_sweep/sweep.md): best SVM accuracy and Chamfer of 0.01-0.3.

    Args:
        recon: (B, M, 3) reconstructions (no padding).
        x: (B, N, 3) targets (no padding), same dtype/device.
        obs_scale: observation standard deviation sigma > 0, in the units of the coordinates.

    Returns:
        (B,) per-sample negative log-likelihood in nats (up to the constant above).
    """
    _check_obs_scale(obs_scale)
    _check_cloud(recon, 0, "recon")
    _check_cloud(x, 0, "x")
    chamfer_sum = chamfer_distance(recon, x, point_reduction="sum", batch_reduction=None)  # (B,)
    return chamfer_sum / (2.0 * obs_scale**2)


def mean_chamfer_loss(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """FoldingNet's Chamfer training loss, per sample: the ``recon="mean_chamfer"`` reading.

        loss[b] = 1/M sum_i min_j ||recon_bi - x_bj||² + 1/N sum_j min_i ||x_bj - recon_bi||²,

    the squared nearest-neighbour distance averaged over the points of each cloud and summed over
    the two directions (``chamfer_distance(squared=True, point_reduction="mean",
    direction_reduction="sum")``, PyTorch3D's default and the ``chamfer_squared`` metric of
    :mod:`crfold.eval.reconstruction`, per cloud): FoldingNet's Chamfer loss in its per-point-mean
    form, in squared coordinate units (~1e-3..1e-1 for unit-scale shapes), not a likelihood, so
    adding ``beta * KL`` to it ("adding the KL term from the ELBO to the baseline FoldingNet", the
    CR-VAE paper's section 4.3) needs a small ``beta`` (e.g. 1e-3). Each direction of it is that
    direction of :func:`reconstruction_nll` times ``2 * obs_scale**2`` divided by its number of
    points, so the two readings differ in scale (~N / (2 obs_scale²): ~10^5 for 2048 points at
    obs_scale 0.1) and in how the directions weigh when ``M != N``. FoldingNet's Eq. 1 (unsquared
    distances, max of the two directions) is the reported metric, :func:`foldingnet_chamfer`.

    Args:
        recon: (B, M, 3) reconstructions (no padding).
        x: (B, N, 3) targets (no padding), same dtype/device.

    Returns:
        (B,) the loss per cloud.
    """
    _check_cloud(recon, 0, "recon")
    _check_cloud(x, 0, "x")
    return chamfer_distance(
        recon, x, squared=True, point_reduction="mean", batch_reduction=None,
        direction_reduction="sum",
    )  # fmt: skip


def foldingnet_chamfer(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """FoldingNet's reporting metric, per sample (the ~0.03 scale of published tables).

    ``D(p, q) = sqrt(||p - q||² + 1e-6)``; ``CD = max(mean_i min_j D(recon_i, x_j),
    mean_j min_i D(x_j, recon_i))``. The 1e-6 sits inside the sqrt (so it is never NaN at 0).

    Args:
        recon: (B, M, 3) reconstructions (no padding).
        x: (B, N, 3) targets (no padding), same dtype/device.

    Returns:
        (B,) the metric per cloud (average it over the batch to report FoldingNet's number).
    """
    _check_cloud(recon, 0, "recon")
    _check_cloud(x, 0, "x")
    d_r, d_x = chamfer_distance(recon, x, squared=True, point_reduction=None, batch_reduction=None)
    m_r = torch.sqrt(d_r + FOLDINGNET_EPS).mean(dim=1)  # (B,)
    m_x = torch.sqrt(d_x + FOLDINGNET_EPS).mean(dim=1)  # (B,)
    return torch.maximum(m_r, m_x)
