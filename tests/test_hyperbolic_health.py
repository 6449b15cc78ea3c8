"""The hyperbolic branch's health statistics and the remedies for its saturation (hyperbolic.py, models.py):
identities across seeds, dtypes and curvatures, closed forms on hand-made points, gradients at the limit,
and the settings' round trip through a checkpoint and a model folder."""
import dataclasses
import math
import os
from types import SimpleNamespace

import geoopt
import pytest
import torch

import branch
import hyperbolic as hyp
from losses import training_loss
from models import STABLE_RECIPE, ModelConfig, Uni_Sign

CURVATURES = (0.1, 0.838, 1.0, 4.0)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
@pytest.mark.parametrize("c", CURVATURES)
def test_clip_bounds_the_radius_and_passes_short_vectors(seed, dtype, c):
    """After clipping at r, exp_0 lands within tanh(sqrt(c) r) / sqrt(c) of the origin; shorter vectors pass."""
    gen = torch.Generator().manual_seed(seed)
    radius = 1.5
    long = torch.randn(64, 16, generator=gen, dtype=dtype) * 50
    short = torch.nn.functional.normalize(torch.randn(64, 16, generator=gen, dtype=dtype), dim=-1)
    short = short * torch.rand(64, 1, generator=gen, dtype=dtype) * radius * 0.99
    ball = hyp.Poincare(c=c, learnable=False)
    points = ball.expmap0(hyp.clip_features(long, radius), dim=-1)
    bound = math.tanh(math.sqrt(c) * radius) / math.sqrt(c)
    assert torch.allclose(points.norm(dim=-1), torch.full((64,), bound, dtype=dtype), rtol=1e-5)
    assert torch.equal(hyp.clip_features(short, radius), short)
    unclipped = ball.expmap0(long, dim=-1)
    assert (math.sqrt(c) * unclipped.norm(dim=-1) > hyp.PROJECTION_LIMIT - 1e-4).all()  # what clipping avoids


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
@pytest.mark.parametrize("c", CURVATURES)
def test_soft_clip_bounds_the_radius_and_keeps_longer_vectors_farther(seed, dtype, c):
    """r tanh(n / r): below the hard clip's radius, about n for n << r, and unlike the hard clip still increasing
    in n where the hard clip puts every long vector on one sphere."""
    gen = torch.Generator().manual_seed(seed)
    radius = 1.5
    direction = torch.nn.functional.normalize(torch.randn(64, 16, generator=gen, dtype=dtype), dim=-1)
    norms = torch.linspace(0.01, 3.0, 64, dtype=dtype).unsqueeze(-1) * radius  # up to 3 r
    ball = hyp.Poincare(c=c, learnable=False)
    soft = ball.expmap0(hyp.soft_clip_features(direction * norms, radius), dim=-1).norm(dim=-1)
    hard = ball.expmap0(hyp.clip_features(direction * norms, radius), dim=-1).norm(dim=-1)
    bound = math.tanh(math.sqrt(c) * radius) / math.sqrt(c)
    assert (soft < bound).all() and (soft <= hard * (1 + 1e-6)).all()
    assert (soft[1:] > soft[:-1]).all()  # strictly farther for longer inputs
    assert (hard[norms.squeeze(-1) >= radius] == hard[-1]).sum() > 1  # what the hard clip loses
    small = direction[:4] * 1e-3 * radius
    assert torch.allclose(hyp.soft_clip_features(small, radius), small, rtol=1e-6, atol=0)
    assert torch.equal(hyp.soft_clip_features(torch.zeros(2, 16, dtype=dtype), radius), torch.zeros(2, 16, dtype=dtype))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("c", CURVATURES)
def test_weighted_midpoint_equals_geoopts(seed, c):
    gen = torch.Generator().manual_seed(seed)
    ball = hyp.Poincare(c=c, learnable=False)
    points = ball.expmap0(torch.randn(5, 4, 8, generator=gen, dtype=torch.float64), dim=-1)
    weights = torch.softmax(torch.randn(5, 4, generator=gen, dtype=torch.float64), dim=-1)
    expected = ball.weighted_midpoint(points, weights, reducedim=[1], dim=-1)
    assert torch.allclose(ball.mean(points, weights, reducedim=[1]), expected,
                          atol=1e-10)


def test_weighted_midpoint_of_one_point_and_of_symmetric_points():
    ball = hyp.Poincare(c=1.0, learnable=False)
    x = torch.tensor([[[0.3, -0.2]]])
    assert torch.allclose(ball.mean(x, torch.ones(1, 1), reducedim=[1]), x[:, 0], atol=1e-6)
    pair = torch.tensor([[[0.9, 0.0], [-0.9, 0.0]]])
    assert torch.allclose(ball.mean(pair, torch.ones(1, 2), reducedim=[1]), torch.zeros(1, 2),
                          atol=1e-6)


def at_radius(directions, radius, c):
    """Points at sqrt(c) ||x|| = radius along each direction."""
    return torch.nn.functional.normalize(directions, dim=-1) * radius / math.sqrt(c)


@pytest.mark.parametrize("c", CURVATURES)
def test_health_statistics_equal_their_closed_forms(c):
    gen = torch.Generator().manual_seed(0)
    ball = hyp.Poincare(c=c, learnable=False)
    directions = torch.randn(6, 4, 8, generator=gen)

    # every part point at the projection limit: all at the limit, radius 0.996, uniform weights
    rim = ball.projx(directions * 100)
    stats = branch.health_stats(rim, directions * 100, branch.part_weights(rim, geometry=ball), geometry=ball)
    assert stats["hyp_at_limit"].item() == 1.0
    assert stats["hyp_radius"].item() == pytest.approx(hyp.PROJECTION_LIMIT, abs=1e-5)
    assert stats["hyp_w_entropy"].item() == pytest.approx(1.0, abs=1e-5)
    assert stats["hyp_tangent_norm"].item() == pytest.approx(
        (math.sqrt(c) * (directions * 100).norm(dim=-1)).mean().item(), rel=1e-5)

    # every point at the origin: nothing at the limit, radius 0, uniform weights
    origin = torch.zeros(6, 4, 8)
    stats = branch.health_stats(origin, origin, branch.part_weights(origin, geometry=ball), text=origin[:, 0],
                                 geometry=ball)
    assert stats["hyp_at_limit"].item() == 0.0 and stats["hyp_radius"].item() == 0.0
    assert stats["hyp_text_radius"].item() == 0.0
    assert stats["hyp_w_entropy"].item() == pytest.approx(1.0, abs=1e-6)

    # mixed: two parts at the limit, two at radius 0.5; weights (1/2, 1/2, 0, 0) have entropy log 2 / log 4
    radii = torch.tensor([hyp.PROJECTION_LIMIT, hyp.PROJECTION_LIMIT, 0.5, 0.5]).view(1, 4, 1)
    mixed = at_radius(directions, radii, c)
    weights = torch.tensor([[0.5, 0.5, 0.0, 0.0]]).expand(6, 4)
    text = at_radius(torch.randn(6, 5, 8, generator=gen), 0.3, c)
    text[:, 3:] *= 2  # padding: left out by the mask
    mask = torch.tensor([[1, 1, 1, 0, 0]]).expand(6, 5)
    unconverged = torch.tensor([True, False, False, False, True, False])
    stats = branch.health_stats(mixed, mixed, weights, text=text, text_mask=mask, unconverged=unconverged,
                                 geometry=ball)
    assert stats["hyp_at_limit"].item() == 0.5
    assert stats["hyp_radius"].item() == pytest.approx((2 * hyp.PROJECTION_LIMIT + 1.0) / 4, abs=1e-5)
    assert stats["hyp_w_entropy"].item() == pytest.approx(0.5, abs=1e-6)
    assert stats["hyp_text_radius"].item() == pytest.approx(0.3, abs=1e-5)
    assert stats["hyp_frechet_unconverged"].item() == pytest.approx(2 / 6)


def radial_gradient(projection, x):
    """d/dW of the mean distance to the origin of the projected points: the radial part of any loss's gradient."""
    projection.zero_grad()
    projection.manifold.dist0(projection(x), dim=-1).mean().backward()
    return projection.proj.weight.grad.norm().item()


def test_stable_projection_has_a_radial_gradient_where_the_released_one_has_none():
    torch.manual_seed(0)
    saturated = torch.randn(8, 256) * 40  # the grown ST-GCN features of a trained demo model
    ball = hyp.Poincare(c=1.0, learnable=False)
    released = hyp.HyperbolicProjection(256, 32, ball)
    stable = hyp.HyperbolicProjection(256, 32, ball, clip_r=2.0, meru_scale=True, input_norm=True)
    for module in (released, stable):
        torch.nn.init.trunc_normal_(module.proj.weight, std=0.02)
        torch.nn.init.zeros_(module.proj.bias)
    assert (math.sqrt(1.0) * released(saturated).norm(dim=-1) >= hyp.PROJECTION_LIMIT - 1e-4).all()
    # released: zero but for float32 rounding of the projection (x / ||x|| * limit)
    assert radial_gradient(released, saturated) < 1e-3 * radial_gradient(stable, saturated)
    assert radial_gradient(stable, saturated) > 1e-2
    assert (stable(saturated).norm(dim=-1) < hyp.PROJECTION_LIMIT - 1e-3).all()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("c", CURVATURES)
def test_pair_weights_weigh_each_pairs_cross_entropy(seed, c):
    """Weights of one give the unweighted loss; N e_k gives pair k's own cross-entropy, by the docstring's formula."""
    gen = torch.Generator().manual_seed(seed)
    ball = hyp.Poincare(c=c, learnable=False)
    anchors = ball.expmap0(torch.randn(6, 8, generator=gen) * 0.5, dim=-1)
    targets = ball.expmap0(torch.randn(6, 8, generator=gen) * 0.5, dim=-1)
    criterion = hyp.HyperbolicContrastiveLoss(ball)
    unweighted, distances = criterion(anchors, targets)
    assert torch.allclose(criterion(anchors, targets, torch.ones(6))[0], unweighted, rtol=1e-6)
    logits = -hyp.pairwise_dist(anchors, targets, c=ball.c) / criterion.temperature() + 0.3 * (1 - torch.eye(6))
    smoothing = criterion.label_smoothing
    by_hand = -(1 - smoothing) * logits.log_softmax(-1)[2, 2] - smoothing * logits.log_softmax(-1)[2].mean()
    one_hot = torch.zeros(6).index_fill_(0, torch.tensor([2]), 6.0)
    assert criterion(anchors, targets, one_hot)[0].item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert torch.equal(criterion(anchors, targets, one_hot)[1], distances)


@pytest.mark.parametrize("seed", range(3))
def test_part_weighted_pairs_push_easy_parts_out_and_hard_parts_in(seed):
    """--hyp_pair_weights parts: through w_p = softmax_p d(0, h_p) the token loss gains a radial pull
    P w_p (CE_p - sum_q w_q CE_q) / N on d(0, h_p): the part whose pair is easiest moves outward, the hardest
    inward, so the parts' radii (and weights) can differ. Uniform pair weights have no such pull."""
    gen = torch.Generator().manual_seed(seed)
    ball = hyp.Poincare(c=1.0, learnable=False)
    tangents = torch.randn(5, 4, 8, generator=gen) * 0.4  # inside the limit: radii can move
    contexts = ball.expmap0(tangents + 0.8 * torch.randn(5, 4, 8, generator=gen), dim=-1).flatten(0, 1)
    criterion = hyp.HyperbolicContrastiveLoss(ball)

    def radial_pull(detach_weights):
        radii = tangents.norm(dim=-1, keepdim=True).requires_grad_()
        parts = ball.expmap0(radii * tangents / tangents.norm(dim=-1, keepdim=True), dim=-1)
        weights = branch.part_weights(parts, geometry=ball)
        weights = weights.detach() if detach_weights else weights
        criterion(parts.flatten(0, 1), contexts, 4 * weights.flatten())[0].backward()
        return radii.grad.squeeze(-1)  # (5, 4): d loss / d ||u_p||

    through_weights = radial_pull(False) - radial_pull(True)
    with torch.no_grad():
        parts = ball.expmap0(tangents, dim=-1)
        logits = -hyp.pairwise_dist(parts.flatten(0, 1), contexts, c=ball.c) / criterion.temperature()
        logits = logits + criterion.margin_base * (1 - torch.eye(20))
        per_pair = torch.nn.functional.cross_entropy(logits, torch.arange(20), reduction="none",
                                                     label_smoothing=criterion.label_smoothing).view(5, 4)
        weights = branch.part_weights(parts, geometry=ball)
        expected_sign = per_pair - (weights * per_pair).sum(-1, keepdim=True)  # dist0 grows with ||u||
    assert (torch.sign(through_weights) == torch.sign(expected_sign)).all()
    assert (through_weights.gather(1, per_pair.argmin(1, keepdim=True)) < 0).all()  # easiest part: outward
    assert (through_weights.gather(1, per_pair.argmax(1, keepdim=True)) > 0).all()  # hardest part: inward


def test_meru_scale_starts_near_unit_radius_and_can_only_shrink():
    torch.manual_seed(0)
    ball = hyp.Poincare(c=1.0, learnable=False)
    projection = hyp.HyperbolicProjection(256, 64, ball, meru_scale=True, input_norm=True)
    torch.nn.init.trunc_normal_(projection.proj.weight, std=0.02)
    torch.nn.init.zeros_(projection.proj.bias)
    x = torch.randn(32, 256) * 7
    assert projection.tangent(x).norm(dim=-1).mean().item() == pytest.approx(1.0, abs=0.15)
    before = projection.tangent(x)
    with torch.no_grad():
        projection.log_scale += 1.0  # an optimizer pushing the scale up changes nothing
    assert torch.equal(projection.tangent(x), before)
    with torch.no_grad():
        projection.log_scale -= 2.0
    assert projection.tangent(x).norm() < before.norm()


def test_stable_recipe_sets_the_knobs_left_unset_that_its_mode_uses():
    token = ModelConfig(hyp_recipe="stable")
    assert {k: getattr(token, k) for k in STABLE_RECIPE} == {**STABLE_RECIPE, "hyp_midpoint": "frechet"}
    pooled = ModelConfig(hyp_recipe="stable", hyp_text_cmp="pooled")
    assert {k: getattr(pooled, k) for k in STABLE_RECIPE} == {**STABLE_RECIPE, "hyp_pair_weights": "uniform"}
    own_clip = ModelConfig(hyp_recipe="stable", hyp_clip_r=1.0)
    assert own_clip.hyp_clip_r == 1.0 and own_clip.hyp_input_norm == STABLE_RECIPE["hyp_input_norm"]
    released = ModelConfig.from_saved({"hyp_dim": 256})  # a checkpoint saved before these settings existed
    assert (released.hyp_recipe, released.hyp_clip_r, released.hyp_clip, released.hyp_scale,
            released.hyp_input_norm, released.hyp_midpoint, released.hyp_pair_weights) == (
                "released", 0.0, "hard", "released", False, "frechet", "uniform")
    with pytest.raises(ValueError, match="hyp_midpoint"):
        ModelConfig(hyp_midpoint="einstein")


def test_an_explicit_flag_wins_over_the_recipe_and_is_recorded():
    import fine_tuning
    import preflight
    args = fine_tuning.get_args_parser().parse_args(["--use_hyperbolic", "--hyp_text_cmp", "pooled", "--hyp_recipe",
                                                     "stable", "--hyp_midpoint", "frechet", "--hyp_input_norm"])
    resolved = preflight.model_settings(args)
    assert resolved.hyp_midpoint == "frechet" and resolved.hyp_scale == "meru" and resolved.hyp_clip_r == 2.0
    # the record a checkpoint keeps reads back as the same model
    assert ModelConfig.from_saved(dataclasses.asdict(resolved)) == resolved


def test_a_saved_stable_record_keeps_the_recipe_it_was_trained_with():
    """Records written while the recipe overrode knobs left at their released values: such a knob ran the recipe's
    value; a knob missing from the record joined the recipe later, so it ran its released value."""
    saved_unresolved = {"use_hyperbolic": True, "hyp_recipe": "stable", "hyp_text_cmp": "pooled", "hyp_clip_r": 0.0,
                        "hyp_scale": "released", "hyp_input_norm": False, "hyp_midpoint": "frechet",
                        "hyp_clip": "hard"}
    config = ModelConfig.from_saved(saved_unresolved)
    assert (config.hyp_clip_r, config.hyp_scale, config.hyp_input_norm, config.hyp_midpoint) == (
        2.0, "meru", True, "gyro")
    saved_before_pair_weights = {**saved_unresolved, "hyp_text_cmp": "token"}
    assert ModelConfig.from_saved(saved_before_pair_weights).hyp_pair_weights == "uniform"
    assert ModelConfig.from_saved(saved_before_pair_weights).hyp_clip_r == STABLE_RECIPE["hyp_clip_r"]
    resolved_by_the_last_format = {**saved_before_pair_weights, **STABLE_RECIPE}  # gyro recorded in token mode
    assert ModelConfig.from_saved(resolved_by_the_last_format).hyp_pair_weights == "parts"
    assert ModelConfig.from_args(SimpleNamespace(hyp_recipe="stable")).hyp_pair_weights == "parts"  # live flags


@pytest.mark.parametrize("mode", ("token", "pooled"))
def test_remedy_settings_round_trip_through_checkpoint_and_folder(tiny_mt5_path, tmp_path, mode):
    import fine_tuning
    from make_demo import random_batch
    from export_model import export
    flags = ["--mt5_path", tiny_mt5_path, "--use_hyperbolic", "--hyp_text_cmp", mode, "--hyp_text_emb_src",
             "decoder", "--hyp_recipe", "stable", "--hyp_clip_r", "1.5", "--hyp_dim", "16"]
    flags += ["--hyp_clip", "soft", "--hyp_pair_weights", "parts"] if mode == "token" else []
    args = fine_tuning.get_args_parser().parse_args(flags)
    torch.manual_seed(0)
    model = Uni_Sign(args).eval()
    assert model.config.hyp_clip_r == 1.5 and model.config.hyp_input_norm
    assert model.hyp_proj_body.clip_r == 1.5 and model.hyp_proj_text.scale_max is not None
    assert model.hyp_proj_face.soft_clip == (mode == "token")
    assert model.config.hyp_clip == ("soft" if mode == "token" else "hard")
    assert model.config.hyp_pair_weights == ("parts" if mode == "token" else "uniform")  # the stable recipe's
    checkpoint = os.path.join(tmp_path, "checkpoint.pth")
    torch.save({"model": model.state_dict(), "args": vars(args), "epoch": 0}, checkpoint)
    batch = random_batch(model.mt5_tokenizer, 2, 8, 5)
    with torch.no_grad():
        expected = training_loss(model, batch)
    from_checkpoint = Uni_Sign.from_pretrained(checkpoint)
    folder = export(checkpoint, os.path.join(tmp_path, "model"))
    from_folder = Uni_Sign.from_pretrained(folder)
    for loaded in (from_checkpoint, from_folder):
        assert dataclasses.replace(loaded.config, mt5_path=None) == dataclasses.replace(model.config, mt5_path=None)
        with torch.no_grad():
            got = training_loss(loaded, batch)
        assert torch.equal(got["loss"], expected["loss"])
        assert got["hyp_at_limit"].item() == 0.0
    if mode == "token":  # the part weights are in the loss: uniform pair weights give another value
        weighted_config, model.config = model.config, dataclasses.replace(model.config)
        model.config.hyp_pair_weights = "uniform"  # (a new ModelConfig with recipe stable would fill in "parts")
        with torch.no_grad():
            assert not torch.equal(training_loss(model, batch)["loss"], expected["loss"])
        model.config = weighted_config
    old_args = {k: v for k, v in vars(args).items() if not k.startswith(("hyp_recipe", "hyp_clip", "hyp_scale",
                                                                          "hyp_input", "hyp_midpoint", "hyp_pair"))}
    assert ModelConfig.from_args(old_args).hyp_recipe == "released"
    assert SimpleNamespace(**old_args).use_hyperbolic
