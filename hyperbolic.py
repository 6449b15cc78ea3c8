"""Poincaré-ball geometry of the Geo-Sign branch (SPEC.md section 3), built on geoopt.

Notation: the ball of curvature -c (c > 0) is {x : c ||x||^2 < 1}; lambda_x = 2 / (1 - c ||x||^2) is its
conformal factor and (+)_c Möbius addition. Every function works in float32: callers run it with autocast
disabled and float32 inputs (bf16 loses the ball's boundary: 1 - c ||x||^2 underflows).

Most operations are the `geoopt.PoincareBall` methods. Two are written here, each tested against geoopt:
- `expmap` / `logmap` for the Fréchet iterations: geoopt's tan_k / artan_k choose between the spherical
  and hyperbolic formulas with `if torch.all(...)` on the curvature, a device-to-host sync on a GPU;
  harmless for the ~20 calls per step made through geoopt, not for 50 loop iterations.
- `pairwise_dist`: geoopt has no pairwise form, and broadcasting its dist over all (part, token) and
  (anchor, target) pairs builds (..., N, M, D) Möbius sums that dominated the branch's cost.
"""
import geoopt
import torch
import torch.nn.functional as F
from geoopt.manifolds.stereographic import math as stereo_math
from torch import nn


def make_ball(init_c):
    """The one PoincareBall shared by every hyperbolic module; c = softplus(isp_c) is learnable."""
    return geoopt.PoincareBall(c=float(init_c), learnable=True)


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


def frechet_mean(points, weights, c, max_iter=50, tol=1e-5):
    """Weighted Fréchet (Karcher) mean: argmin_mu sum_p w_p d_c(mu, x_p)^2, by the fixed-point iteration

        mu <- exp_mu( sum_p w_p log_mu(x_p) ),   starting at mu = x_0,

    points (B, P, D) on the ball, weights (B, P) summing to 1 over P. Returns (B, D).
    A sample stops updating (torch.where mask) once its step moved it less than `tol` (Euclidean norm in
    ball coordinates). The loop always runs `max_iter` iterations on the device, with no host sync:
    converged samples cost the arithmetic of a frozen update, which is cheaper than asking the host
    whether to stop. Gradients flow through the unrolled iterations (frozen samples pass them through).
    Cost on the 2-core CPU, B = 8, P = 4, D = 256: about 50-75 ms forward + backward for the 50 iterations.
    Convergence: points at moderate spread (norms up to ~0.5) meet the tolerance within ~10 iterations
    (tests/test_hyperbolic.py); for widely spread points (several units apart, e.g. near the boundary)
    this unit-step iteration, as specified and as released, may oscillate instead of converging, and the
    50th iterate is returned.
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
    return mu


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


def part_weights(ball, points):
    """w_p = softmax_p d_c(0, x_p): parts farther from the origin (more specific) weigh more. (B, P)."""
    return torch.softmax(ball.dist0(points, dim=-1), dim=-1)


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


class HyperbolicProjection(nn.Module):
    """h = proj_ball( exp_0( exp(log_scale) * (W x + b) ) ), from Euclidean features to the ball.

    exp_0(u) = tanh(sqrt(c) ||u||) u / (sqrt(c) ||u||). Computed in float32 whatever the input dtype.
    """

    def __init__(self, d_in, hyp_dim, manifold):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.manifold = manifold
        self.proj = nn.Linear(d_in, hyp_dim)

    def forward(self, x):
        u = F.linear(x.float(), self.proj.weight.float(), self.proj.bias.float())
        return self.manifold.expmap0(self.log_scale.float().exp() * u, dim=-1, project=True)


def make_attention_parameters(hyp_dim, manifold):
    """hyp_attn_W (hyp_dim x hyp_dim, Euclidean ManifoldParameter, init identity) and hyp_attn_b (a point
    of the ball, init at the origin), so that at initialisation the keys are the token points themselves.
    W lives on geoopt.Euclidean(ndim=2): Riemannian Adam then treats it as plain Adam would, while the
    Riemannian group keeps all of the attention's parameters together (SPEC: both ManifoldParameters).
    """
    weight = geoopt.ManifoldParameter(torch.eye(hyp_dim), manifold=geoopt.Euclidean(ndim=2))
    bias = geoopt.ManifoldParameter(torch.zeros(hyp_dim), manifold=manifold)
    return weight, bias


def token_keys(ball, values, weight, bias):
    """k_t = (W (x)_c v_t) (+)_c b, with the Möbius matrix-vector product
    W (x)_c v = tanh(||Wv|| / ||v|| artanh(sqrt(c) ||v||)) Wv / (sqrt(c) ||Wv||). values (B, L, D)."""
    return ball.mobius_add(ball.mobius_matvec(weight.float(), values, dim=-1), bias.float(), dim=-1)


def token_attention(ball, parts, keys, token_mask, temperature):
    """a_pt = softmax_t( -d_c(h_p, k_t) / temperature ) over the real tokens (padding gets exactly 0).

    parts (B, P, D), keys (B, L, D), token_mask (B, L). Returns (B, P, L).
    """
    distances = pairwise_dist(parts, keys, ball.c)
    return masked_softmax(-distances / temperature, token_mask.unsqueeze(1))


def token_context(ball, values, attention):
    """c_p = weighted Möbius gyromidpoint of the token points v_t with weights a_pt, reduced over tokens:

        c_p = 1/2 (x)_c ( sum_t a_pt lambda_{v_t} v_t / sum_t a_pt (lambda_{v_t} - 1) ).

    values (B, L, D), attention (B, P, L) -> (B, P, D). geoopt's weighted_midpoint wants the weights
    without the manifold axis (they get unsqueezed on `dim`) and the token axis as `reducedim`.
    """
    return ball.weighted_midpoint(values.unsqueeze(1), attention, reducedim=[2], dim=-1)


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

    def forward(self, anchors, targets):
        """anchors, targets (N, D) on the ball. Returns (loss, d_c(p_i, t_i) for each i)."""
        distances = pairwise_dist(anchors, targets, self.manifold.c)  # (N, N)
        negatives = 1.0 - torch.eye(distances.shape[0], device=distances.device, dtype=distances.dtype)
        logits = -distances / self.temperature() + self.margin_base.float() * negatives
        labels = torch.arange(distances.shape[0], device=distances.device)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        return loss, distances.diagonal()
