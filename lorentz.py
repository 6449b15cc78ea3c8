"""The Lorentz (hyperboloid) model of hyperbolic space as MERU uses it (Desai et al., "Hyperbolic Image-Text
Representations", ICML 2023), a geometry for --hyp_geometry lorentz.

The hyperboloid of curvature -c is {(x_t, x) : x_t^2 - ||x||^2 = 1/c, x_t > 0}; a point is stored as its space
components x (D values) and its time component is x_t = sqrt(1/c + ||x||^2). Unlike the Poincaré ball it has no
boundary that float32 reaches: distances grow as log ||x|| instead of artanh(sqrt(c) ||x||), the numerically better
behaved model (Mishne et al., "The Numerical Stability of Hyperbolic Representation Learning", ICML 2023).
The curvature is learnable, as MERU's: c = exp(log_c) with log_c clamped to [log(c0 / 10), log(10 c0)].
"""
import math

import torch
from torch import nn

from geometry import Geometry, register

EPS = 1e-8
MAX_SINH_ARGUMENT = math.asinh(2.0**15)  # MERU's clamp: sinh stays finite in float32


@register("lorentz")
class Lorentz(Geometry):
    def __init__(self, init_c=1.0):
        super().__init__()
        self.log_c = nn.Parameter(torch.tensor(math.log(init_c)))
        self.log_c_range = (math.log(init_c / 10), math.log(init_c * 10))

    def c(self):
        return self.log_c.float().clamp(*self.log_c_range).exp()

    def time(self, x):
        """x_t = sqrt(1/c + ||x||^2), (...)."""
        return torch.sqrt(1.0 / self.c() + x.pow(2).sum(dim=-1))

    def to_space(self, u):
        """exp_0(u) = sinh(sqrt(c) ||u||) u / (sqrt(c) ||u||) (space components; argument clamped as MERU's)."""
        sqrt_c = self.c().sqrt()
        norm = (sqrt_c * u.norm(dim=-1, keepdim=True)).clamp_min(EPS)
        return torch.sinh(norm.clamp(max=MAX_SINH_ARGUMENT)) * u / norm

    def from_space(self, x):
        """log_0(x) = asinh(sqrt(c) ||x||) x / (sqrt(c) ||x||)."""
        sqrt_c = self.c().sqrt()
        norm = (sqrt_c * x.norm(dim=-1, keepdim=True)).clamp_min(EPS)
        return torch.asinh(norm) * x / norm

    def distance(self, x, y):
        """d(x, y) = acosh(-c <x, y>_L) / sqrt(c) with <x, y>_L = <x, y> - x_t y_t (the argument clamped at
        1 + 1e-8, as MERU's pairwise_dist)."""
        c = self.c()
        lorentz_inner = x @ y.transpose(-1, -2) - self.time(x).unsqueeze(-1) * self.time(y).unsqueeze(-2)
        return torch.acosh((-c * lorentz_inner).clamp_min(1 + EPS)) / c.sqrt()

    def origin_distance(self, x):
        """d(0, x) = asinh(sqrt(c) ||x||) / sqrt(c)."""
        sqrt_c = self.c().sqrt()
        return torch.asinh(sqrt_c * x.norm(dim=-1)) / sqrt_c

    def mean(self, points, weights, reducedim):
        """The Lorentzian centroid (Law et al., "Lorentzian Distance Learning for Hyperbolic Representations",
        ICML 2019): s = sum_i w_i (x_t,i, x_i), mu = s / (sqrt(c) sqrt(|<s, s>_L|)), the point minimising the
        weighted squared Lorentzian distance; space components returned."""
        weights = weights.unsqueeze(-1)
        space = (weights * points).sum(dim=reducedim)
        time = (weights[..., 0] * self.time(points)).sum(dim=reducedim)
        norm = (time.pow(2) - space.pow(2).sum(dim=-1)).abs().clamp_min(EPS).sqrt()
        return space / (self.c().sqrt() * norm).unsqueeze(-1)

    def scale(self, like):
        return self.c().sqrt().detach().to(like.device)

    def curvature(self, like):
        return self.c().detach().to(like.device)
