"""Geometries as plug-ins (geometry.py): the Poincaré functions' keyword-only curvature against geoopt, the laws each
registered geometry keeps, Lorentz distances equal to Poincaré ones, and a geometry defined in this file training
the model a step, as a researcher's new one would."""
from types import SimpleNamespace

import geoopt
import pytest
import torch

import hyperbolic as hyp
from losses import training_loss
from geometry import GEOMETRIES, Geometry, build_geometry, register
from models import ModelConfig, Uni_Sign

GEOMETRY_NAMES = ("poincare", "lorentz", "euclidean", "sphere")


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
@pytest.mark.parametrize("c", (0.3, 1.0, 2.5))
@pytest.mark.parametrize("seed", range(3))
def test_keyword_curvature_functions_equal_geoopt(dtype, c, seed):
    gen = torch.Generator().manual_seed(seed)
    ball = geoopt.PoincareBall(c=c).to(dtype)
    u = torch.randn(5, 4, 8, generator=gen, dtype=dtype) * torch.tensor([0.1, 1.0, 3.0, 30.0], dtype=dtype)[:, None]
    x, y = ball.expmap0(u), ball.expmap0(0.3 * torch.randn(5, 4, 8, generator=gen, dtype=dtype))
    w = torch.softmax(torch.randn(5, 4, generator=gen, dtype=dtype), -1)
    m = torch.eye(8, dtype=dtype) + 0.3 * torch.randn(8, 8, generator=gen, dtype=dtype)
    assert torch.equal(hyp.expmap0(u, c=ball.c), ball.expmap0(u, project=True))
    assert torch.equal(hyp.dist0(x, c=ball.c), ball.dist0(x))
    assert torch.equal(hyp.mobius_matvec(m, x, c=ball.c), ball.mobius_matvec(m, x))
    assert torch.equal(hyp.weighted_midpoint(x, w, c=ball.c, reducedim=[1]),
                       ball.weighted_midpoint(x, w, reducedim=[1]))
    assert torch.equal(hyp.mobius_add(x, y, c=ball.c), ball.mobius_add(x, y, project=False))
    inside, y = x[:, :2], y[:, :2]  # off the float32 boundary, where artanh amplifies any rounding
    torch.testing.assert_close(hyp.pairwise_dist(inside, y, c=ball.c),
                               ball.dist(inside.unsqueeze(-2), y.unsqueeze(-3)), rtol=1e-3, atol=1e-4)
    with pytest.raises(TypeError):
        hyp.expmap0(u, ball.c)  # the curvature is keyword-only


@pytest.mark.parametrize("name", GEOMETRY_NAMES)
def test_every_geometry_keeps_the_laws_of_a_distance_and_a_mean(name):
    torch.manual_seed(0)
    space = build_geometry(name, 1.3)
    u = torch.randn(3, 5, 16) * 0.5
    x = space.to_space(u)
    distances = space.distance(x, x)
    assert (distances >= -1e-6).all()
    torch.testing.assert_close(distances, distances.transpose(-1, -2), rtol=1e-5, atol=1e-5)
    # Lorentz: acosh(1 + e) ~ sqrt(2 e) turns float32's rounding of -c<x, x>_L = 1 into a few 1e-3
    torch.testing.assert_close(distances.diagonal(dim1=-2, dim2=-1), torch.zeros(3, 5), rtol=0, atol=1e-2)
    repeated = x[:, :1].expand(3, 4, 16)
    torch.testing.assert_close(space.mean(repeated, torch.rand(3, 4) + 0.1, reducedim=[1]), x[:, 0],
                               rtol=1e-4, atol=1e-4)
    mean, unconverged = space.iterative_mean(x[:, :4], torch.full((3, 4), 0.25))
    assert mean.shape == (3, 16) and torch.isfinite(mean).all() and (unconverged is None or unconverged.shape == (3,))
    assert space.origin_distance(x).shape == (3, 5)
    assert (space.limit is not None) == (name == "poincare")


def test_lorentz_distances_equal_poincare_distances_of_the_same_tangent_vectors():
    """The hyperboloid and the ball of one curvature are isometric, by a map that fixes the origin and its tangent
    space: the points exp_0 of the same tangent vectors lie as far apart in both models. (The ball's exp_0 takes
    the vector's Euclidean coordinates, whose length at the origin is lambda_0 = 2 times theirs.)"""
    torch.manual_seed(0)
    u, v = torch.randn(6, 8, dtype=torch.float64), torch.randn(7, 8, dtype=torch.float64)
    lorentz, ball = build_geometry("lorentz", 0.7).double(), geoopt.PoincareBall(c=0.7).double()
    expected = ball.dist(ball.expmap0(u).unsqueeze(1), ball.expmap0(v).unsqueeze(0))
    torch.testing.assert_close(lorentz.distance(lorentz.to_space(2 * u), lorentz.to_space(2 * v)), expected)
    torch.testing.assert_close(lorentz.origin_distance(lorentz.to_space(u)), u.norm(dim=-1))
    torch.testing.assert_close(lorentz.from_space(lorentz.to_space(u)), u)


def branch_model(mt5_path, geometry, mode="token"):
    torch.manual_seed(0)
    return Uni_Sign(SimpleNamespace(mt5_path=mt5_path, use_hyperbolic=True, hyp_geometry=geometry, hyp_dim=8,
                                    hyp_text_cmp=mode, hyp_text_emb_src="decoder"))


def train_one_step(model, batch):
    """One forward, backward and AdamW + Riemannian Adam step; returns the step's outputs."""
    out = training_loss(model, batch)
    out["loss"].backward()
    torch.optim.AdamW(model.euclidean_param_groups(0.01), lr=1e-2).step()
    riemannian = model.hyperbolic_parameters()
    if riemannian:
        geoopt.optim.RiemannianAdam(riemannian, lr=1e-2).step()
    return out


@pytest.mark.parametrize("name, mode", [(name, "token") for name in GEOMETRY_NAMES] + [("lorentz", "pooled")])
def test_each_geometry_trains_a_step_and_reports_its_health(tiny_mt5_path, name, mode):
    from make_demo import random_batch
    model = branch_model(tiny_mt5_path, name, mode)
    out = train_one_step(model, random_batch(model.mt5_tokenizer, 2, 8, 5))
    assert torch.isfinite(out["loss"]) and torch.isfinite(out["hyp_radius"]) and torch.isfinite(out["curvature"])
    assert ("hyp_at_limit" in out) == (name == "poincare")  # only where the space has a limit
    assert bool(model.hyperbolic_parameters()) == (name == "poincare")  # the controls have no Riemannian ones


def test_a_geometry_defined_here_trains_the_model(tiny_mt5_path, monkeypatch):
    """A new geometry is one class: registered from this file, selected by name, trained a step."""
    from make_demo import random_batch

    class ScaledEuclidean(Geometry):
        """R^D with d(x, y) = s ||x - y||, s = exp(log_s) learnable."""

        def __init__(self, init_c=1.0):
            super().__init__()
            self.log_s = torch.nn.Parameter(torch.zeros(()))

        def to_space(self, u):
            return u

        def from_space(self, x):
            return x

        def distance(self, x, y):
            return self.log_s.exp() * torch.cdist(x, y)

        def origin_distance(self, x):
            return self.log_s.exp() * x.norm(dim=-1)

        def mean(self, points, weights, reducedim):
            weights = weights.unsqueeze(-1)
            return (weights * points).sum(dim=reducedim) / weights.sum(dim=reducedim)

    monkeypatch.setitem(GEOMETRIES, "scaled", ScaledEuclidean)
    register("scaled")(ScaledEuclidean)
    assert ModelConfig(use_hyperbolic=True, hyp_geometry="scaled").hyp_geometry == "scaled"
    model = branch_model(tiny_mt5_path, "scaled")
    before = model.manifold.log_s.detach().clone()
    out = train_one_step(model, random_batch(model.mt5_tokenizer, 2, 8, 5))
    assert torch.isfinite(out["loss"]) and not torch.equal(model.manifold.log_s.detach(), before)
    assert "manifold.log_s" in model.state_dict() and "geom_loss.manifold.log_s" in model.state_dict()
