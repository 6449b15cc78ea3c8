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


def make_ball(init_c):
    """The one PoincareBall shared by every hyperbolic module; c = softplus(isp_c) is learnable."""
    return geoopt.PoincareBall(c=float(init_c), learnable=True)


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
def _expmap0(u: torch.Tensor, k: torch.Tensor):
    u_norm = u.norm(dim=-1, p=2, keepdim=True).clamp_min(1e-15)
    return _tan_k(u_norm, k) * (u / u_norm)


@torch.jit.script
def _dist0(x: torch.Tensor, k: torch.Tensor):
    return 2.0 * _artan_k(x.norm(dim=-1, p=2), k)


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


def expmap0(u, ball):
    """exp_0(u) = tanh(sqrt(c) ||u||) u / (sqrt(c) ||u||), projected into the ball (geoopt's
    PoincareBall.expmap0(u, project=True))."""
    return stereo_math.project(_expmap0(u, ball.k), k=ball.k, dim=-1)


def dist0(x, ball):
    """d_c(0, x) = 2 artanh(sqrt(c) ||x||) / sqrt(c), over the last axis."""
    return _dist0(x, ball.k)


def mobius_matvec(m, x, ball):
    """M (x)_c x = tanh(||Mx|| / ||x|| artanh(sqrt(c) ||x||)) Mx / (sqrt(c) ||Mx||), 0 where Mx = 0, projected.
    m (D_out, D), x (..., D)."""
    return stereo_math.project(_mobius_matvec(m, x, ball.k), k=ball.k, dim=-1)


def weighted_midpoint(points, weights, ball, reducedim):
    """Weighted Möbius gyromidpoint (Ungar) over the axes `reducedim` of points (..., D), weights shaped like
    points without the last axis (only their ratios matter):

        m = 1/2 (x)_c ( sum_i w_i lambda_i x_i / sum_i w_i (lambda_i - 1) ),   lambda_i = 2 / (1 - c ||x_i||^2),
        r (x)_c y = tanh(r artanh(sqrt(c) ||y||)) y / (sqrt(c) ||y||),

    projected. geoopt's PoincareBall.weighted_midpoint (tested), for negative curvature. A closed form: unlike
    the fixed-point iteration of `frechet_mean` it needs no convergence, also for points near the boundary.
    """
    mean = _weighted_midpoint(points, weights, ball.k, list(reducedim))
    for seen, axis in enumerate(sorted(reducedim)):
        mean = mean.squeeze(axis - seen)
    return stereo_math.project(mean, k=ball.k, dim=-1)


def mobius_add(x, y, c):
    """x (+)_c y = ((1 + 2c<x,y> + c||y||^2) x + (1 - c||x||^2) y) / (1 + 2c<x,y> + c^2 ||x||^2 ||y||^2)."""
    return stereo_math.mobius_add(x, y, k=-c, dim=-1)


def expmap(x, u, c):
    """exp_x(u) = x (+)_c tanh(sqrt(c) lambda_x ||u|| / 2) u / (sqrt(c) ||u||), projected into the ball.

    Sync-free (no host-side branch on c), for use inside loops.
    """
    sqrt_c = c.sqrt()
    u_norm = u.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    lam = 2.0 / (1.0 - c * x.pow(2).sum(dim=-1, keepdim=True)).clamp_min(1e-15)
    step = stereo_math.tanh(sqrt_c * lam * u_norm / 2.0) * u / (sqrt_c * u_norm)
    return stereo_math.project(mobius_add(x, step, c), k=-c, dim=-1)


def logmap(x, y, c):
    """log_x(y) = 2 / (sqrt(c) lambda_x) artanh(sqrt(c) ||-x (+)_c y||) (-x (+)_c y) / ||-x (+)_c y||.

    Sync-free (no host-side branch on c), for use inside loops.
    """
    sqrt_c = c.sqrt()
    diff = mobius_add(-x, y, c)
    diff_norm = diff.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    lam = 2.0 / (1.0 - c * x.pow(2).sum(dim=-1, keepdim=True)).clamp_min(1e-15)
    return 2.0 / (sqrt_c * lam) * stereo_math.artanh(sqrt_c * diff_norm) * diff / diff_norm


def frechet_mean(points, weights, c, max_iter=50, tol=1e-5, return_unconverged=False):
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
        tangent = (weights * logmap(mu.unsqueeze(1), points, c)).sum(dim=1)
        updated = expmap(mu, tangent, c)
        moved = (updated - mu).norm(dim=-1, keepdim=True)
        mu = torch.where(active, updated, mu)
        active = active & (moved >= tol)
    return (mu, active[:, 0]) if return_unconverged else mu


def pairwise_dist(x, y, c):
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


def part_weights(ball, points):
    """w_p = softmax_p d_c(0, x_p): parts farther from the origin (more specific) weigh more. (B, P)."""
    return torch.softmax(dist0(points, ball), dim=-1)


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
        return expmap0(self.tangent(x), self.manifold)


PROJECTION_LIMIT = 1.0 - 4e-3  # sqrt(c) ||x|| of geoopt's float32 projection (its eps for float32)


def health_stats(ball, parts, tangents, weights, text=None, text_mask=None, unconverged=None):
    """Whether the branch is alive, from the points it computed anyway (device tensors, no host sync):

        hyp_at_limit      fraction of part points with sqrt(c) ||h|| >= PROJECTION_LIMIT - 1e-4
        hyp_radius        mean sqrt(c) ||h|| of the part points (1 = the boundary)
        hyp_text_radius   the same for the text points
        hyp_w_entropy     -sum_p w_p log w_p / log P, averaged over samples (1 = uniform part weights)
        hyp_tangent_norm  mean sqrt(c) ||u|| of the part tangent vectors before exp_0
        hyp_frechet_unconverged  fraction of Fréchet means still moving at their last iteration (pooled/attn)

    parts (B, P, D), tangents (B, P, D), weights (B, P), text (B, D) or (B, L, D) with text_mask (B, L) of
    its real tokens, unconverged (B,) booleans or None.
    """
    sqrt_c = ball.c.detach().float().sqrt()
    radius = sqrt_c * parts.detach().norm(dim=-1)
    w = weights.detach()
    entropy = -(w * w.clamp_min(1e-30).log()).sum(dim=-1) / math.log(w.shape[-1])
    stats = {"hyp_at_limit": (radius >= PROJECTION_LIMIT - 1e-4).float().mean(), "hyp_radius": radius.mean(),
             "hyp_w_entropy": entropy.mean(), "hyp_tangent_norm": (sqrt_c * tangents.detach().norm(dim=-1)).mean()}
    if text is not None:
        text_radius = sqrt_c * text.detach().norm(dim=-1)
        stats["hyp_text_radius"] = (text_radius.mean() if text_mask is None else
                                    (text_radius * text_mask).sum() / text_mask.sum().clamp_min(1))
    if unconverged is not None:
        stats["hyp_frechet_unconverged"] = unconverged.detach().float().mean()
    return stats


def make_attention_parameters(hyp_dim, manifold):
    """hyp_attn_W (hyp_dim x hyp_dim, Euclidean ManifoldParameter, init identity) and hyp_attn_b (a point
    of the ball, init at the origin), so that at initialisation the keys are the token points themselves.
    W lives on geoopt.Euclidean(ndim=2): Riemannian Adam then treats it as plain Adam would, while the
    Riemannian group keeps all of the attention's parameters together (both are ManifoldParameters in Geo-Sign).
    """
    weight = geoopt.ManifoldParameter(torch.eye(hyp_dim), manifold=geoopt.Euclidean(ndim=2))
    bias = geoopt.ManifoldParameter(torch.zeros(hyp_dim), manifold=manifold)
    return weight, bias


def token_keys(ball, values, weight, bias):
    """k_t = (W (x)_c v_t) (+)_c b, with the Möbius matrix-vector product
    W (x)_c v = tanh(||Wv|| / ||v|| artanh(sqrt(c) ||v||)) Wv / (sqrt(c) ||Wv||). values (B, L, D)."""
    keys = stereo_math.mobius_add(mobius_matvec(weight.float(), values, ball), bias.float(), k=ball.k, dim=-1)
    return stereo_math.project(keys, k=ball.k, dim=-1)


def token_attention(ball, parts, keys, token_mask, temperature):
    """a_pt = softmax_t( -d_c(h_p, k_t) / temperature ) over the real tokens (padding gets exactly 0).

    parts (B, P, D), keys (B, L, D), token_mask (B, L). Returns (B, P, L).
    """
    distances = pairwise_dist(parts, keys, ball.c)
    return masked_softmax(-distances / temperature, token_mask.unsqueeze(1))


def token_context(ball, values, attention):
    """c_p = weighted Möbius gyromidpoint of the token points v_t with weights a_pt, reduced over tokens:

        c_p = 1/2 (x)_c ( sum_t a_pt lambda_{v_t} v_t / sum_t a_pt (lambda_{v_t} - 1) ).

    values (B, L, D), attention (B, P, L) -> (B, P, D): values gain a part axis, the token axis is reduced.
    """
    return weighted_midpoint(values.unsqueeze(1), attention, ball, reducedim=[2])


class HyperbolicContrastiveLoss(nn.Module):
    """For N pairs (p_i, t_i): logits_ij = -d_c(p_i, t_j) / tau + margin [i != j],
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
        """anchors, targets (N, D) on the ball. Returns (loss, d_c(p_i, t_i) for each i).
        pair_weights (N,), optional: loss = mean_i pair_weights_i CE_i instead of mean_i CE_i."""
        distances = pairwise_dist(anchors, targets, self.manifold.c)  # (N, N)
        negatives = 1.0 - torch.eye(distances.shape[0], device=distances.device, dtype=distances.dtype)
        logits = -distances / self.temperature() + self.margin_base.float() * negatives
        labels = torch.arange(distances.shape[0], device=distances.device)
        if pair_weights is None:  # the released loss, bit for bit (a mean of per-pair losses may round otherwise)
            loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        else:
            per_pair = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing, reduction="none")
            loss = (pair_weights * per_pair).mean()
        return loss, distances.diagonal()
