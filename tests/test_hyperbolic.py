"""Geometry of the hyperbolic branch against closed forms and geoopt, gradients, and numerical safety."""
from types import SimpleNamespace

import geoopt
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import branch
import hyperbolic as hyp
from losses import training_loss

HOST_SYNC_OPS = (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default,
                 torch.ops.aten.item.default)


class HostSyncRecorder(TorchDispatchMode):
    """Records every op that turns a tensor into a Python value (a device-to-host sync on a GPU)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in HOST_SYNC_OPS:
            self.calls.append(str(func))
        return func(*args, **(kwargs or {}))


def random_points(ball, *shape, scale=0.3, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return ball.expmap0(torch.randn(*shape, generator=gen, dtype=dtype) * scale).detach()


@pytest.fixture
def ball64():
    return hyp.Poincare(c=1.3, learnable=False).double()


def test_closed_forms_match_geoopt(ball64):
    x, y = random_points(ball64, 5, 16, seed=1), random_points(ball64, 5, 16, seed=2)
    u = torch.randn(5, 16, dtype=torch.float64) * 0.5
    c = ball64.c
    torch.testing.assert_close(hyp.logmap(x, y, c=c), ball64.logmap(x, y))
    torch.testing.assert_close(hyp.expmap(x, u, c=c), ball64.expmap(x, u))
    torch.testing.assert_close(hyp.mobius_add(x, y, c=c), ball64.mobius_add(x, y))
    torch.testing.assert_close(hyp.expmap(x, hyp.logmap(x, y, c=c), c=c), y)


@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-5), (torch.float32, 2e-2)])
@pytest.mark.parametrize("scale", [0.1, 0.5, 3.0])
def test_pairwise_distance_matches_geoopt(dtype, tolerance, scale):
    """Against geoopt's dist in float64 (float32 near the boundary loses about 1e-2 either way)."""
    ball = hyp.Poincare(c=1.3, learnable=False).to(dtype)
    x = random_points(ball, 3, 4, 64, scale=scale, dtype=dtype)
    y = random_points(ball, 3, 7, 64, scale=scale, dtype=dtype, seed=1)
    y[:, 0] = x[:, 0]  # coincident points: distance 0, finite gradient
    y[:, 1] = ball.expmap(x[:, 1], torch.randn(3, 64, dtype=dtype) * 1e-3)
    x.requires_grad_()
    distances = hyp.pairwise_dist(x, y, c=ball.c)
    exact = ball.double().dist(x.detach().double().unsqueeze(2), y.double().unsqueeze(1))
    torch.testing.assert_close(distances.double(), exact, atol=tolerance, rtol=0)
    if dtype == torch.float32:
        assert (distances[:, 0, 0] == 0).all()
    else:  # only the ratio's floor (1e-30, which keeps sqrt's gradient finite) is left: d ~ 2 sqrt(1e-30) = 2e-15
        assert (distances[:, 0, 0] < 1e-14).all(), distances[:, 0, 0]  # ||x||^2 + ||y||^2 - 2<x,y> would leave ~1e-8
    distances.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_frechet_mean_of_two_points_is_their_geodesic_midpoint(ball64):
    points = random_points(ball64, 6, 2, 32, scale=0.6)
    x, y = points[:, 0], points[:, 1]
    weights = torch.full((6, 2), 0.5, dtype=torch.float64)
    mean = hyp.frechet_mean(points, weights, c=ball64.c)
    midpoint = ball64.expmap(x, 0.5 * ball64.logmap(x, y))
    torch.testing.assert_close(mean, midpoint)
    torch.testing.assert_close(ball64.dist(mean, x), ball64.dist(mean, y))
    # The gyromidpoint used by the token mode agrees.
    torch.testing.assert_close(ball64.weighted_midpoint(points, weights, reducedim=[1], dim=-1), midpoint)


def test_frechet_mean_with_one_hot_weights_returns_that_point(ball64):
    points = random_points(ball64, 3, 4, 16, scale=0.8)
    for part in range(4):
        weights = F.one_hot(torch.full((3,), part), 4).double()
        torch.testing.assert_close(hyp.frechet_mean(points, weights, c=ball64.c), points[:, part])


@pytest.mark.parametrize("scale", [0.1, 0.5])
def test_frechet_mean_reaches_the_tolerance_and_is_stationary(scale):
    """Part points at moderate spreads (mean norm ~0.1 and ~0.45): every sample meets the stopping rule
    within the 50 iterations (more iterations change nothing), the weighted sum of log maps (the
    Riemannian gradient) nearly vanishes, and the result matches a long float64 run."""
    ball = hyp.Poincare(c=1.0, learnable=False)
    points = random_points(ball, 64, 4, 64, scale=scale / 8, dtype=torch.float32, seed=3)
    weights = torch.softmax(torch.randn(64, 4, generator=torch.Generator().manual_seed(4)), dim=-1)
    c = ball.c.detach()
    mean = hyp.frechet_mean(points, weights, c=c)
    assert torch.equal(mean, hyp.frechet_mean(points, weights, c=c, max_iter=200))
    gradient = (weights.unsqueeze(-1) * hyp.logmap(mean.unsqueeze(1), points, c=c)).sum(dim=1)
    assert gradient.norm(dim=-1).max() < 1e-4
    reference = hyp.frechet_mean(points.double(), weights.double(), c=c.double(), max_iter=300, tol=0.0)
    assert (mean.double() - reference).norm(dim=-1).max() < 1e-4


def test_frechet_iterations_never_sync_with_the_host():
    ball = hyp.Poincare(c=1.0, learnable=False)
    points = random_points(ball, 4, 4, 32, dtype=torch.float32).requires_grad_()
    weights = torch.softmax(torch.randn(4, 4), dim=-1)
    with HostSyncRecorder() as recorder:
        hyp.frechet_mean(points, weights, c=ball.c).sum().backward()
    assert recorder.calls == []
    with HostSyncRecorder() as recorder:  # the recorder does see geoopt's host-side branch on the curvature
        ball.dist0(points)
    assert recorder.calls


def test_token_attention_is_a_distribution_over_real_tokens_only():
    ball = hyp.Poincare(c=1.0, learnable=False)
    parts = random_points(ball, 3, 4, 8, dtype=torch.float32)
    keys = random_points(ball, 3, 6, 8, seed=5, dtype=torch.float32)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    attention = branch.token_attention(parts, keys, mask, torch.tensor(0.7), geometry=ball)
    assert attention.shape == (3, 4, 6)
    torch.testing.assert_close(attention.sum(-1), torch.ones(3, 4))
    assert (attention.masked_select(~mask.unsqueeze(1).expand_as(attention)) == 0).all()
    assert (attention.masked_select(mask.unsqueeze(1).expand_as(attention)) > 0).all()
    expected = torch.softmax(-ball.dist(parts[1].unsqueeze(1), keys[1, :3].unsqueeze(0)) / 0.7, dim=-1)
    torch.testing.assert_close(attention[1, :, :3], expected, atol=1e-5, rtol=1e-4)


def test_token_context_is_the_weighted_gyromidpoint_over_tokens(ball64):
    tokens = random_points(ball64, 2, 5, 16, scale=0.3)
    one_hot = F.one_hot(torch.tensor([[0, 3, 4, 1], [2, 2, 0, 4]]), 5).double()  # (B, P=4, L=5)
    chosen = tokens[torch.arange(2)[:, None], one_hot.argmax(-1)]
    torch.testing.assert_close(branch.token_context(tokens, one_hot, geometry=ball64), chosen)
    halves = torch.zeros(2, 4, 5, dtype=torch.float64)
    halves[..., 1] = halves[..., 3] = 0.5
    midpoint = ball64.expmap(tokens[:, 1], 0.5 * ball64.logmap(tokens[:, 1], tokens[:, 3]))
    torch.testing.assert_close(branch.token_context(tokens, halves, geometry=ball64), midpoint.unsqueeze(1).expand(2, 4, 16))
    # A padded token with weight 0 changes nothing, whatever its value.
    weights = torch.softmax(torch.randn(2, 4, 5, dtype=torch.float64), -1)
    weights[..., -1] = 0
    weights = weights / weights.sum(-1, keepdim=True)
    changed = tokens.clone()
    changed[:, -1] = random_points(ball64, 2, 16, seed=9)
    torch.testing.assert_close(branch.token_context(tokens, weights, geometry=ball64),
                               branch.token_context(changed, weights, geometry=ball64))
    torch.testing.assert_close(branch.token_context(tokens, weights, geometry=ball64),
                               branch.token_context(tokens[:, :4], weights[..., :4], geometry=ball64))


def test_contrastive_loss_equals_a_direct_computation():
    ball = hyp.Poincare(c=0.8, learnable=False)
    loss_module = hyp.HyperbolicContrastiveLoss(ball, label_smoothing=0.2)
    with torch.no_grad():
        loss_module.temp.fill_(-0.4)
        loss_module.margin_base.fill_(0.25)
    anchors = random_points(ball, 5, 8, dtype=torch.float32)
    targets = random_points(ball, 5, 8, seed=7, dtype=torch.float32)
    loss, positives = loss_module(anchors, targets)
    tau = 0.01 + 1.99 / (1 + torch.exp(torch.tensor(0.4)))
    total = 0.0
    for i in range(5):
        logits = torch.stack([-ball.dist(anchors[i], targets[j]) / tau + (0.25 if i != j else 0.0) for j in range(5)])
        log_probs = torch.log_softmax(logits, dim=0)
        total = total + 0.8 * -log_probs[i] + 0.2 * -log_probs.mean()
        torch.testing.assert_close(positives[i], ball.dist(anchors[i], targets[i]), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(loss, total / 5, atol=1e-5, rtol=1e-4)


def test_part_weights_are_a_softmax_of_the_distance_to_the_origin():
    ball = hyp.Poincare(c=1.0, learnable=False)
    parts = random_points(ball, 3, 4, 8, scale=0.5, dtype=torch.float32)
    expected = torch.softmax(2 * torch.atanh(parts.norm(dim=-1)), dim=-1)
    torch.testing.assert_close(branch.part_weights(parts, geometry=ball), expected)


def test_masked_mean_and_softmax():
    x = torch.arange(12.0).view(1, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0]])
    torch.testing.assert_close(hyp.masked_mean(x, mask), torch.tensor([[1.5, 2.5, 3.5]]))
    torch.testing.assert_close(hyp.masked_softmax(torch.zeros(1, 4), mask), torch.tensor([[0.5, 0.5, 0.0, 0.0]]))
    assert (hyp.masked_softmax(torch.zeros(1, 4), torch.zeros(1, 4)) == 0).all()  # no real entry: zeros, no NaN


# ----------------------------------------------------------------------------- through the model
@pytest.fixture(scope="module")
def token_model(tiny_mt5_path):
    import models
    torch.manual_seed(0)
    model = models.Uni_Sign(SimpleNamespace(mt5_path=tiny_mt5_path, use_hyperbolic=True, hyp_text_cmp="token",
                                            hyp_text_emb_src="decoder"))
    return model


def small_batch(model, seed=0, frames=12):
    from make_demo import random_batch
    return random_batch(model.mt5_tokenizer, batch_size=3, frames=frames, text_len=7, seed=seed)


def test_gradients_reach_every_hyperbolic_parameter(token_model):
    token_model.train()
    token_model.zero_grad(set_to_none=True)
    training_loss(token_model, small_batch(token_model))["loss"].backward()
    named = dict(token_model.named_parameters())
    for name in ("hyp_attn_W", "hyp_attn_b", "manifold.isp_c", "geom_loss.temp", "geom_loss.margin_base",
                 "loss_alpha_logit", "hyp_proj_body.proj.weight", "hyp_proj_left.proj.weight",
                 "hyp_proj_face.proj.weight", "hyp_proj_text.proj.weight", "hyp_proj_text.log_scale",
                 "hyp_proj_body.log_scale"):
        grad = named[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    assert isinstance(token_model.hyp_attn_W, geoopt.ManifoldParameter)
    assert isinstance(token_model.hyp_attn_b.manifold, geoopt.PoincareBall)
    assert token_model.hyp_attn_b.manifold is token_model.manifold is token_model.geom_loss.manifold


def test_finite_under_bf16_autocast(token_model):
    token_model.train()
    token_model.zero_grad(set_to_none=True)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        # bf16 is emulated on AVX2-only CPUs: slow
        out = training_loss(token_model, small_batch(token_model, seed=1, frames=4))
    out["loss"].backward()
    assert all(torch.isfinite(value).all() for value in out.values())
    assert out["hyp_loss"].dtype == torch.float32
    assert all(torch.isfinite(p.grad).all() for p in token_model.parameters() if p.grad is not None)


def test_finite_for_points_at_the_boundary():
    ball = hyp.Poincare(c=1.0, learnable=True)
    direction = F.normalize(torch.randn(2, 4, 16), dim=-1)
    parts = (direction * (1 - 1e-6)).requires_grad_()
    tokens = (F.normalize(torch.randn(2, 5, 16), dim=-1) * (1 - 1e-6)).requires_grad_()
    weight, bias = ball.attention_parameters(16)
    loss_module = hyp.HyperbolicContrastiveLoss(ball)
    mask = torch.ones(2, 5, dtype=torch.bool)
    keys = ball.keys(tokens, weight, bias)
    context = branch.token_context(
        tokens, branch.token_attention(parts, keys, mask, loss_module.temperature(), geometry=ball), geometry=ball)
    mean = hyp.frechet_mean(parts, branch.part_weights(parts, geometry=ball), c=ball.c)
    loss = loss_module(parts.flatten(0, 1), context.flatten(0, 1))[0] + loss_module(mean, context[:, 0])[0]
    loss.backward()
    assert torch.isfinite(loss)
    for tensor in (parts.grad, tokens.grad, weight.grad, bias.grad, ball.isp_c.grad, loss_module.temp.grad):
        assert torch.isfinite(tensor).all()


GEOOPT_FORMS = {  # our sync-free function -> the geoopt method it replaces, called the way the model calls them
    "expmap0": (lambda ball, x, w, m: ball.to_space(x), lambda ball, x, w, m: ball.expmap0(x, dim=-1, project=True)),
    "dist0": (lambda ball, x, w, m: ball.origin_distance(x), lambda ball, x, w, m: ball.dist0(x, dim=-1)),
    "mobius_matvec": (lambda ball, x, w, m: ball.matvec(m, x),
                      lambda ball, x, w, m: ball.mobius_matvec(m, x, dim=-1)),
    "weighted_midpoint": (lambda ball, x, w, m: ball.mean(x, w, reducedim=[1]),
                          lambda ball, x, w, m: ball.weighted_midpoint(x, w, reducedim=[1], dim=-1)),
}


@pytest.mark.parametrize("name", sorted(GEOOPT_FORMS))
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
@pytest.mark.parametrize("c", (0.3, 1.0, 2.5))
@pytest.mark.parametrize("seed", range(2))
def test_sync_free_forms_equal_geoopt_bit_for_bit_with_gradients(name, dtype, c, seed):
    """Values and gradients (points, weights, matrix, curvature) identical to geoopt's, also for tangent
    vectors far past the boundary; and no host read on the way, where geoopt's make some."""
    ours, theirs = GEOOPT_FORMS[name]
    results = []
    for fn in (ours, theirs):
        gen = torch.Generator().manual_seed(seed)
        ball = hyp.Poincare(c=c, learnable=True).to(dtype)
        scale = torch.tensor([0.2, 1.0, 30.0], dtype=dtype).repeat_interleave(2)
        x = (torch.randn(6, 4, 8, generator=gen, dtype=dtype) * scale[:, None, None])
        if name != "expmap0":
            x = ball.expmap0(x)
        x = x.detach().requires_grad_()
        w = torch.softmax(torch.randn(6, 4, generator=gen, dtype=dtype), -1).requires_grad_()
        m = (torch.eye(8, dtype=dtype) + 0.3 * torch.randn(8, 8, generator=gen, dtype=dtype)).requires_grad_()
        for _ in range(3):  # TorchScript's profiling runs first: compare its optimised runs too
            ball.zero_grad()
            for t in (x, w, m):
                t.grad = None
            with HostSyncRecorder() as recorder:
                out = fn(ball, x, w, m)
                (out * torch.linspace(-1, 1, out.numel(), dtype=dtype).view_as(out)).sum().backward()
        grads = [t.grad for t in (x, w, m, ball.isp_c)]
        results.append((out.detach(), grads, recorder.calls))
    (out, grads, calls), (expected, expected_grads, geoopt_calls) = results
    assert torch.equal(out, expected)
    for got, want in zip(grads, expected_grads):
        assert (got is None and want is None) or torch.equal(got, want)
    assert calls == [] and geoopt_calls
