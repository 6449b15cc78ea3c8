"""The space the contrastive branch compares pose parts and text in, as a plug-in: the branch's modes (token, pooled,
attn) and the contrastive loss call the interface below, never one space's formulas. A new geometry is one class,
registered by name:

    @register("mine")
    class Mine(Geometry):
        ...

and selected with --hyp_geometry mine (models.ModelConfig takes the registry's names as its choices).

Every method works in float32 (the caller disables autocast). The instance is one nn.Module shared by every part
of the branch (registered as `manifold` in the model, its projections and the loss), so its learnable parameters
(a curvature, a radius) are trained once.
"""
import torch
from torch import nn

GEOMETRIES = {}  # name -> Geometry subclass


def register(name):
    """Class decorator: the geometry `name` for --hyp_geometry."""
    def add(cls):
        GEOMETRIES[name] = cls
        cls.name = name
        return cls
    return add


def geometry_names():
    return tuple(GEOMETRIES)


def build_geometry(name, init_c):
    """The registered geometry `name`, built with the initial curvature --init_c (geometries without one ignore it)."""
    return GEOMETRIES[name](init_c)


class Geometry(nn.Module):
    """A space of points with a distance. Points are (..., D) tensors; `limit` is the value of radius(x) at which
    points stop moving (a float32 boundary), None where there is none."""

    name = None
    limit = None

    def __init__(self, init_c=1.0):
        super().__init__()

    def to_space(self, u):
        """The point of the tangent vector u at the origin (the exponential map at the origin), (..., D)."""
        raise NotImplementedError

    def from_space(self, x):
        """The tangent vector at the origin of the point x (the inverse of to_space)."""
        raise NotImplementedError

    def distance(self, x, y):
        """d(x_i, y_j) for x (..., N, D) and y (..., M, D): (..., N, M)."""
        raise NotImplementedError

    def origin_distance(self, x):
        """d(0, x) over the last axis: (...)."""
        raise NotImplementedError

    def mean(self, points, weights, reducedim):
        """The closed-form weighted mean of points (..., D) over the axes `reducedim`, weights shaped like points
        without the last axis (only their ratios matter)."""
        raise NotImplementedError

    def iterative_mean(self, points, weights):
        """The weighted Fréchet mean of points (B, P, D) with weights (B, P) summing to 1: (mean (B, D), (B,)
        booleans of samples still moving at the last iteration, or None for a closed form). By default the
        closed-form mean, which is the Fréchet mean of the geometry's own squared distance where mean() says so."""
        return self.mean(points, weights, [1]), None

    def scale(self, like):
        """The factor that makes a norm a radius in the space's own units (sqrt(c) for a curvature -c; 1 where
        there is none), a 0-d tensor on the device of `like`: health statistics report scale ||x|| and scale ||u||."""
        return torch.ones((), device=like.device)

    def curvature(self, like):
        """The curvature's magnitude, logged as `curvature` (a 0-d tensor on the device of `like`)."""
        return torch.zeros((), device=like.device)

    def attention_parameters(self, dim):
        """(W, b) of token mode's keys k_t = keys(v_t, W, b): W starts at the identity and b at the origin, so
        that at initialisation the keys are the token points themselves."""
        return nn.Parameter(torch.eye(dim)), nn.Parameter(torch.zeros(dim))

    def keys(self, values, weight, bias):
        """k_t = to_space(W from_space(v_t) + b), values (B, L, D)."""
        return self.to_space(from_tangent_linear(self.from_space(values), weight.float(), bias.float()))

    def riemannian_parameters(self):
        """The geometry's own parameters that Riemannian Adam steps (none by default: AdamW trains them)."""
        return []


def from_tangent_linear(u, weight, bias):
    """W u + b over the last axis."""
    return u @ weight.transpose(0, 1) + bias
