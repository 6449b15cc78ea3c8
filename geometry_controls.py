"""The controls of the geometry: the same projections, attention, weights and loss as the hyperbolic branch, in a
space without negative curvature, to ask whether a gain comes from the hyperbolic geometry or from adding any
contrastive alignment (Moreira et al., "Hyperbolic vs Euclidean Embeddings in Few-Shot Learning: Two Sides of the
Same Coin", 2023). Neither has Riemannian parameters.
"""
import torch
from torch import nn

from geometry import Geometry, register

EPS = 1e-15


@register("euclidean")
class Euclidean(Geometry):
    """R^D with d(x, y) = ||x - y||: the tangent vectors are the points."""

    def to_space(self, u):
        return u

    def from_space(self, x):
        return x

    def distance(self, x, y):
        """||x_i - y_j|| (computed directly, no ||x||^2 + ||y||^2 - 2<x, y> cancellation)."""
        return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist")

    def origin_distance(self, x):
        return x.norm(dim=-1)

    def mean(self, points, weights, reducedim):
        """sum_i w_i x_i / sum_i w_i: the Fréchet mean of the squared distance."""
        weights = weights.unsqueeze(-1)
        return (weights * points).sum(dim=reducedim) / weights.sum(dim=reducedim).clamp_min(EPS)


@register("sphere")
class Sphere(Geometry):
    """The sphere of learnable radius R = exp(log_radius) (starting at 1), with the cosine distance
    d(x, y) = R (1 - <x, y> / R^2). A sphere has no point at its centre: every point is at distance R from it, so the
    part weights softmax_p d(0, x_p) are uniform, and a radius statistic reads 1."""

    def __init__(self, init_c=1.0):
        super().__init__()
        self.log_radius = nn.Parameter(torch.zeros(()))

    def radius(self):
        return self.log_radius.float().exp()

    def to_space(self, u):
        """R u / ||u||."""
        return self.radius() * u / u.norm(dim=-1, keepdim=True).clamp_min(EPS)

    def from_space(self, x):
        return x

    def distance(self, x, y):
        radius = self.radius()
        return radius * (1.0 - (x @ y.transpose(-1, -2)) / radius.pow(2))

    def origin_distance(self, x):
        return self.radius().expand(x.shape[:-1])

    def mean(self, points, weights, reducedim):
        """R s / ||s|| with s = sum_i w_i x_i: the point of the sphere nearest to the weighted average (the Fréchet
        mean of the chordal distance)."""
        return self.to_space((weights.unsqueeze(-1) * points).sum(dim=reducedim))

    def scale(self, like):
        return (1.0 / self.radius()).detach().to(like.device)

    def curvature(self, like):
        return (1.0 / self.radius().pow(2)).detach().to(like.device)
