"""Poincaré-ball geometry of the Geo-Sign branch (Geo-Sign, NeurIPS 2025), built on geoopt.

Notation: the ball of curvature -c (c > 0) is {x : c ||x||^2 < 1}; lambda_x = 2 / (1 - c ||x||^2) is its
conformal factor and (+)_c Möbius addition. Every function works in float32: callers run it with autocast
disabled and float32 inputs (bf16 loses the ball's boundary: 1 - c ||x||^2 underflows).

The operations the training step uses are written here, sync-free, each tested against geoopt's: geoopt's
tan_k / artan_k (under expmap0, dist0, mobius_matvec, weighted_midpoint) choose between the spherical and the
hyperbolic formula with `if torch.all(...)` on the curvature, a device-to-host sync per call on a GPU, which
stops the host from queueing the step ahead of the device. The ball's curvature is negative by construction
(c = softplus(isp_c) > 0), so the hyperbolic formula is the only one needed; `_tan_k` / `_artan_k` compute it
with geoopt's operations, scripted as geoopt's are, so values and gradients are geoopt's bit for bit. geoopt's scripted elementwise
helpers (tanh, artanh with their clamps, project, mobius_add) have no branch and are used as they are.
`pairwise_dist` has no geoopt counterpart: broadcasting geoopt's dist over all (part, token) and
(anchor, target) pairs builds (..., N, M, D) Möbius sums.
"""
import math
from typing import List

import geoopt
import torch
import torch.nn.functional as F
from geoopt.manifolds.stereographic import math as stereo_math
from geoopt.utils import clamp_abs, sabs
from torch import nn

from geometry import Geometry, register


def make_ball(init_c):
    """The one Poincaré ball shared by every hyperbolic module; c = softplus(isp_c) is learnable."""
    return Poincare(init_c)


# The scripted helpers below take k = -c; the functions after them read the ball's k for each use, as
# geoopt's PoincareBall methods do. Scripted like geoopt's own, they run the same forward and backward graphs,
# so values and gradients are geoopt's bit for bit.
@torch.jit.script
def _tan_k(x: torch.Tensor, k: torch.Tensor):
    """tan_k(x) for k < 0: tanh(sqrt(|k|) x) / sqrt(|k|) (argument clamped at +-15, as geoopt's)."""
    k_sqrt = sabs(k).sqrt()
    return k_sqrt.reciprocal() * stereo_math.tanh(x * k_sqrt)


@torch.jit.script
def _artan_k(x: torch.Tensor, k: torch.Tensor):
    """artan_k(x) for k < 0: artanh(sqrt(|k|) x) / sqrt(|k|) (argument clamped to +-(1 - 1e-7))."""
    k_sqrt = sabs(k).sqrt()
    return k_sqrt.reciprocal() * stereo_math.artanh(x * k_sqrt)


@torch.jit.script
def _expmap0(u: torch.Tensor, k: torch.Tensor, dim: int):
    u_norm = u.norm(dim=dim, p=2, keepdim=True).clamp_min(1e-15)
    return _tan_k(u_norm, k) * (u / u_norm)


@torch.jit.script
def _dist0(x: torch.Tensor, k: torch.Tensor, dim: int):
    return 2.0 * _artan_k(x.norm(dim=dim, p=2), k)


@torch.jit.script
def _mobius_matvec(m: torch.Tensor, x: torch.Tensor, k: torch.Tensor):
    x_norm = x.norm(dim=-1, keepdim=True, p=2).clamp_min(1e-15)
    mx = torch.tensordot(x, m, ([-1], [1]))
    mx_norm = mx.norm(dim=-1, keepdim=True, p=2).clamp_min(1e-15)
    result = _tan_k(mx_norm / x_norm * _artan_k(x_norm, k), k) * (mx / mx_norm)
    zero = (mx == 0).prod(dim=-1, keepdim=True, dtype=torch.bool)
    return torch.where(zero, torch.zeros(1, dtype=result.dtype, device=result.device), result)


@torch.jit.script
def _weighted_midpoint(points: torch.Tensor, weights: torch.Tensor, k: torch.Tensor, reducedim: List[int]):
    lam = 2 / (1 + k * points.pow(2).sum(dim=-1, keepdim=True)).clamp_min(1e-15)
    weights = weights.unsqueeze(-1)
    denominator = ((lam - 1) * weights).sum(reducedim, keepdim=True)
    numerator = (lam * weights * points).sum(reducedim, keepdim=True)
    two_mean = numerator / clamp_abs(denominator, 1e-10)
    norm = two_mean.norm(dim=-1, keepdim=True, p=2).clamp_min(1e-15)
    half = torch.tensor(0.5, dtype=points.dtype, device=points.device)
    return _tan_k(half * _artan_k(norm, k), k) * (two_mean / norm)


def expmap0(u, *, c, dim=-1):
    """exp_0(u) = tanh(sqrt(c) ||u||) u / (sqrt(c) ||u||), projected into the ball (geoopt's
    PoincareBall.expmap0(u, project=True))."""
    k = -c  # geoopt's k: one tensor for both uses, as PoincareBall.k gives them
    return stereo_math.project(_expmap0(u, k, dim), k=k, dim=dim)


def dist0(x, *, c, dim=-1):
    """d_c(0, x) = 2 artanh(sqrt(c) ||x||) / sqrt(c), over the axis `dim`."""
    return _dist0(x, -c, dim)


def mobius_matvec(m, x, *, c):
    """M (x)_c x = tanh(||Mx|| / ||x|| artanh(sqrt(c) ||x||)) Mx / (sqrt(c) ||Mx||), 0 where Mx = 0, projected.
    m (D_out, D), x (..., D)."""
    k = -c
    return stereo_math.project(_mobius_matvec(m, x, k), k=k, dim=-1)


def weighted_midpoint(points, weights, *, c, reducedim):
    """Weighted Möbius gyromidpoint (Ungar) over the axes `reducedim` of points (..., D), weights shaped like
    points without the last axis (only their ratios matter):

        m = 1/2 (x)_c ( sum_i w_i lambda_i x_i / sum_i w_i (lambda_i - 1) ),   lambda_i = 2 / (1 - c ||x_i||^2),
        r (x)_c y = tanh(r artanh(sqrt(c) ||y||)) y / (sqrt(c) ||y||),

    projected. geoopt's PoincareBall.weighted_midpoint (tested), for negative curvature. A closed form: unlike
    the fixed-point iteration of `frechet_mean` it needs no convergence, also for points near the boundary.
    """
    k = -c
    return _squeeze_and_project(_weighted_midpoint(points, weights, k, list(reducedim)), reducedim, k)


def _squeeze_and_project(mean, reducedim, k):
    for seen, axis in enumerate(sorted(reducedim)):
        mean = mean.squeeze(axis - seen)
    return stereo_math.project(mean, k=k, dim=-1)


def mobius_add(x, y, *, c, dim=-1):
    """x (+)_c y = ((1 + 2c<x,y> + c||y||^2) x + (1 - c||x||^2) y) / (1 + 2c<x,y> + c^2 ||x||^2 ||y||^2)."""
    return stereo_math.mobius_add(x, y, k=-c, dim=dim)


def expmap(x, u, *, c):
    """exp_x(u) = x (+)_c tanh(sqrt(c) lambda_x ||u|| / 2) u / (sqrt(c) ||u||), projected into the ball.

    Sync-free (no host-side branch on c), for use inside loops.
    """
    sqrt_c = c.sqrt()
    u_norm = u.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    lam = 2.0 / (1.0 - c * x.pow(2).sum(dim=-1, keepdim=True)).clamp_min(1e-15)
    step = stereo_math.tanh(sqrt_c * lam * u_norm / 2.0) * u / (sqrt_c * u_norm)
    return stereo_math.project(mobius_add(x, step, c=c), k=-c, dim=-1)


def logmap(x, y, *, c):
    """log_x(y) = 2 / (sqrt(c) lambda_x) artanh(sqrt(c) ||-x (+)_c y||) (-x (+)_c y) / ||-x (+)_c y||.

    Sync-free (no host-side branch on c), for use inside loops.
    """
    sqrt_c = c.sqrt()
    diff = mobius_add(-x, y, c=c)
    diff_norm = diff.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    lam = 2.0 / (1.0 - c * x.pow(2).sum(dim=-1, keepdim=True)).clamp_min(1e-15)
    return 2.0 / (sqrt_c * lam) * stereo_math.artanh(sqrt_c * diff_norm) * diff / diff_norm


def frechet_mean(points, weights, *, c, max_iter=50, tol=1e-5, return_unconverged=False):
    """Weighted Fréchet (Karcher) mean: argmin_mu sum_p w_p d_c(mu, x_p)^2, by the fixed-point iteration

        mu <- exp_mu( sum_p w_p log_mu(x_p) ),   starting at mu = x_0,

    points (B, P, D) on the ball, weights (B, P) summing to 1 over P. Returns (B, D).
    A sample stops updating (torch.where mask) once its step moved it less than `tol` (Euclidean norm in
    ball coordinates). The loop always runs `max_iter` iterations on the device, with no host sync:
    converged samples cost the arithmetic of a frozen update, which is cheaper than asking the host
    whether to stop. Gradients flow through the unrolled iterations (frozen samples pass them through).
    Convergence: points at moderate spread (norms up to ~0.5) meet the tolerance within ~10 iterations
    (tests/test_hyperbolic.py); for widely spread points (several units apart, e.g. near the boundary)
    this unit-step iteration, as specified and as released, may oscillate instead of converging, and the
    50th iterate is returned. return_unconverged=True also returns (B,) booleans: still moving at the end.
    """
    weights = weights.unsqueeze(-1)
    mu = points[:, 0]
    active = torch.ones_like(mu[:, :1], dtype=torch.bool)
    for _ in range(max_iter):
        tangent = (weights * logmap(mu.unsqueeze(1), points, c=c)).sum(dim=1)
        updated = expmap(mu, tangent, c=c)
        moved = (updated - mu).norm(dim=-1, keepdim=True)
        mu = torch.where(active, updated, mu)
        active = active & (moved >= tol)
    return (mu, active[:, 0]) if return_unconverged else mu


def pairwise_dist(x, y, *, c):
    """d_c(x_i, y_j) for x (..., N, D) and y (..., M, D) -> (..., N, M), without building (..., N, M, D):

        ||-x (+)_c y||^2 = ||x - y||^2 / ((1 - c<x,y>)^2 + c^2 (||x||^2 ||y||^2 - <x,y>^2)),
        d_c(x, y) = 2 / sqrt(c) artanh(sqrt(c) ||-x (+)_c y||).

    The same value as geoopt's dist broadcast over the pairs (tested), at the cost of a distance matrix
    instead of a full Möbius addition per pair (geoopt has no pairwise form: broadcasting its dist builds
    and differentiates (..., N, M, D) tensors, the bulk of this branch's work). The denominator is the
    usual 1 - 2c<x,y> + c^2 ||x||^2 ||y||^2 regrouped so that its first square keeps its precision near
    the boundary. Sync-free.
    """
    sqrt_c = c.sqrt()
    inner = x @ y.transpose(-1, -2)
    x_sq = x.pow(2).sum(dim=-1, keepdim=True)
    y_sq = y.pow(2).sum(dim=-1).unsqueeze(-2)
    # ||x - y|| computed directly (no ||x||^2 + ||y||^2 - 2<x,y> cancellation between close points)
    diff_sq = torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
    denominator = (1.0 - c * inner).pow(2) + c.pow(2) * (x_sq * y_sq - inner.pow(2)).clamp_min(0.0)
    ratio = (diff_sq / denominator.clamp_min(1e-15)).clamp_min(1e-30)  # > 0 keeps sqrt's gradient finite
    return 2.0 / sqrt_c * stereo_math.artanh(sqrt_c * ratio.sqrt())


def clip_features(u, radius):
    """Feature clipping (Guo et al., "Clipped Hyperbolic Classifiers Are Super-Hyperbolic Classifiers",
    CVPR 2022): u <- min(1, r / ||u||) u. After exp_0 the point's radius is at most tanh(sqrt(c) r) / sqrt(c),
    so no point reaches the float32 projection limit; vectors shorter than r pass unchanged."""
    return u * (radius / u.norm(dim=-1, keepdim=True).clamp_min(1e-15)).clamp(max=1.0)


def soft_clip_features(u, radius):
    """A smooth form of clip_features: u <- r tanh(||u|| / r) u / ||u||. The norm still stays below r (radius
    after exp_0 below tanh(sqrt(c) r) / sqrt(c)) and ||u|| << r passes almost unchanged (r tanh(n / r) =
    n - n^3 / (3 r^2) + ...), but unlike the hard clip the new norm keeps growing with ||u|| (slope
    sech^2(||u|| / r) > 0), so features clipped to the same sphere by the hard clip keep different radii."""
    norm = u.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    return u * (radius * torch.tanh(norm / radius) / norm)


def masked_mean(x, mask):
    """sum_t m_t x_t / max(sum_t m_t, 1) over axis 1; x (B, T, C), mask (B, T) of 0/1."""
    mask = mask.to(x.dtype).unsqueeze(-1)
    return (x * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


def masked_softmax(scores, mask):
    """softmax over the last axis restricted to mask == 1; masked entries get exactly 0.

    A row without any real entry gives all zeros (not NaN).
    """
    mask = mask.bool()
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) * mask.to(scores.dtype)


def linear_f32(layer, x):
    """layer(x) = x W^T + b in float32 whatever the dtype of the input or of the layer's parameters (the branch's
    projections and attention pooling, under a bf16 or fp16 engine)."""
    return F.linear(x.float(), layer.weight.float(), None if layer.bias is None else layer.bias.float())


class HyperbolicProjection(nn.Module):
    """h = proj_ball( exp_0(u) ), u = exp(log_scale) * (W x + b), from Euclidean features to the ball.

    exp_0(u) = tanh(sqrt(c) ||u||) u / (sqrt(c) ||u||). Computed in float32 whatever the input dtype.
    As released (all options off) ||u|| follows the growth of the encoder's features and of W, and once
    sqrt(c) ||u|| passes artanh(1 - 4e-3) ~ 3.1 every point sits at the projection limit, where the radial
    gradient is zero. The options are the hyperbolic-learning literature's remedies:
    - input_norm: x <- LayerNorm(x) / sqrt(d_in) (no affine parameters, so no new checkpoint keys): ||x|| = 1,
      so ||u|| no longer follows the encoder's feature growth;
    - meru_scale: log_scale starts at -log(0.02 sqrt(hyp_dim)), where sqrt(c) ||u|| ~ 1 for unit inputs and the
      initial W (std 0.02), and is clamped so that the scale can only shrink from there (MERU, Desai et al.,
      ICML 2023, clamps its feature scale likewise);
    - clip_r > 0: u <- min(1, r / ||u||) u before exp_0 (clip_features), or with soft_clip its smooth form
      r tanh(||u|| / r) u / ||u|| (soft_clip_features).
    """

    def __init__(self, d_in, hyp_dim, manifold, clip_r=0.0, meru_scale=False, input_norm=False, soft_clip=False):
        super().__init__()
        self.scale_max = -math.log(0.02 * math.sqrt(hyp_dim)) if meru_scale else None
        self.log_scale = nn.Parameter(torch.tensor(self.scale_max or 0.0))
        self.manifold = manifold
        self.proj = nn.Linear(d_in, hyp_dim)
        self.clip_r, self.input_norm, self.soft_clip = float(clip_r), bool(input_norm), bool(soft_clip)

    def tangent(self, x):
        """u, the tangent vector at the origin that forward maps onto the ball (float32)."""
        x = x.float()
        if self.input_norm:
            x = F.layer_norm(x, x.shape[-1:]) / math.sqrt(x.shape[-1])
        log_scale = self.log_scale.float()
        if self.scale_max is not None:
            log_scale = log_scale.clamp(max=self.scale_max)
        u = log_scale.exp() * linear_f32(self.proj, x)
        if self.clip_r <= 0:
            return u
        return (soft_clip_features if self.soft_clip else clip_features)(u, self.clip_r)

    def forward(self, x):
        return self.manifold.to_space(self.tangent(x))


PROJECTION_LIMIT = 1.0 - 4e-3  # sqrt(c) ||x|| of geoopt's float32 projection (its eps for float32)


class HyperbolicContrastiveLoss(nn.Module):
    """For N pairs (p_i, t_i): logits_ij = -d(p_i, t_j) / tau + margin [i != j] (d: the geometry's distance),
    loss = cross-entropy(logits, targets i, label smoothing). tau = 0.01 + 1.99 sigmoid(temp) and the
    margin `margin_base` are learnable (init temp 1.0, margin 0.3)."""

    def __init__(self, manifold, label_smoothing=0.2):
        super().__init__()
        self.temp = nn.Parameter(torch.tensor(1.0))
        self.margin_base = nn.Parameter(torch.tensor(0.3))
        self.manifold = manifold
        self.label_smoothing = label_smoothing

    def temperature(self):
        return 0.01 + 1.99 * torch.sigmoid(self.temp.float())

    def forward(self, anchors, targets, pair_weights=None):
        """anchors, targets (N, D) in the geometry's space. Returns (loss, d(p_i, t_i) for each i).
        pair_weights (N,), optional: loss = mean_i pair_weights_i CE_i instead of mean_i CE_i."""
        distances = self.manifold.distance(anchors, targets)  # (N, N)
        negatives = 1.0 - torch.eye(distances.shape[0], device=distances.device, dtype=distances.dtype)
        logits = -distances / self.temperature() + self.margin_base.float() * negatives
        labels = torch.arange(distances.shape[0], device=distances.device)
        if pair_weights is None:  # the released loss, bit for bit (a mean of per-pair losses may round otherwise)
            loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        else:
            per_pair = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing, reduction="none")
            loss = (pair_weights * per_pair).mean()
        return loss, distances.diagonal()


@register("poincare")
class Poincare(geoopt.PoincareBall, Geometry):
    """The Poincaré ball of curvature -c, c = softplus(isp_c) learnable (geoopt's PoincareBall, whose parameter keeps
    the released checkpoints' key `manifold.isp_c`), as the Geo-Sign branch computes it.

    The methods compose the scripted helpers above as geoopt's PoincareBall methods do, reading k = -softplus(isp_c)
    afresh at each use: the curvature's gradient is then a sum of one term per read, as in the released computation
    and in geoopt, and stays theirs bit for bit (one read shared by two uses rounds the sum differently)."""

    limit = PROJECTION_LIMIT

    def __init__(self, c=1.0, learnable=True):
        super().__init__(c=float(c), learnable=learnable)

    def to_space(self, u):
        """expmap0, projected."""
        return stereo_math.project(_expmap0(u, self.k, -1), k=self.k, dim=-1)

    def from_space(self, x):
        """log_0(x) = artanh(sqrt(c) ||x||) x / (sqrt(c) ||x||)."""
        return stereo_math.logmap0(x, k=self.k, dim=-1)

    def distance(self, x, y):
        return pairwise_dist(x, y, c=self.c)

    def origin_distance(self, x):
        """dist0."""
        return _dist0(x, self.k, -1)

    def mean(self, points, weights, reducedim):
        """The weighted gyromidpoint (weighted_midpoint)."""
        return _squeeze_and_project(_weighted_midpoint(points, weights, self.k, list(reducedim)), reducedim, self.k)

    def iterative_mean(self, points, weights):
        """The Fréchet mean by its fixed-point iteration, as released (frechet_mean)."""
        return frechet_mean(points, weights, c=self.c.float(), return_unconverged=True)

    def scale(self, like):
        return self.c.detach().float().sqrt()

    def curvature(self, like):
        return self.c.detach()

    def attention_parameters(self, dim):
        """hyp_attn_W (dim x dim, Euclidean ManifoldParameter, init identity) and hyp_attn_b (a point of the ball,
        init at the origin). W lives on geoopt.Euclidean(ndim=2): Riemannian Adam then treats it as plain Adam
        would, while the Riemannian group keeps all of the attention's parameters together (both are
        ManifoldParameters in Geo-Sign)."""
        weight = geoopt.ManifoldParameter(torch.eye(dim), manifold=geoopt.Euclidean(ndim=2))
        bias = geoopt.ManifoldParameter(torch.zeros(dim), manifold=self)
        return weight, bias

    def keys(self, values, weight, bias):
        """k_t = (W (x)_c v_t) (+)_c b, with the Möbius matrix-vector product
        W (x)_c v = tanh(||Wv|| / ||v|| artanh(sqrt(c) ||v||)) Wv / (sqrt(c) ||Wv||). values (B, L, D)."""
        keys = stereo_math.mobius_add(self.matvec(weight.float(), values), bias.float(), k=self.k, dim=-1)
        return stereo_math.project(keys, k=self.k, dim=-1)

    def matvec(self, m, x):
        """mobius_matvec, projected."""
        return stereo_math.project(_mobius_matvec(m, x, self.k), k=self.k, dim=-1)

    def riemannian_parameters(self):
        return [self.isp_c]
