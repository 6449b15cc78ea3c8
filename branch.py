"""The contrastive branch's computations, in whichever geometry it runs (geometry.py's interface): the part
weights, token mode's attention and context, and the health statistics. Every function works in float32."""
import math

import torch

from hyperbolic import masked_softmax


def part_weights(points, *, geometry):
    """w_p = softmax_p d(0, x_p): parts farther from the origin (more specific) weigh more. (B, P)."""
    return torch.softmax(geometry.origin_distance(points), dim=-1)


def token_attention(parts, keys, token_mask, temperature, *, geometry):
    """a_pt = softmax_t( -d(h_p, k_t) / temperature ) over the real tokens (padding gets exactly 0).

    parts (B, P, D), keys (B, L, D), token_mask (B, L). Returns (B, P, L).
    """
    distances = geometry.distance(parts, keys)
    return masked_softmax(-distances / temperature, token_mask.unsqueeze(1))


def token_context(values, attention, *, geometry):
    """c_p = the geometry's weighted mean of the token points v_t with weights a_pt (on the Poincaré ball the
    gyromidpoint c_p = 1/2 (x)_c ( sum_t a_pt lambda_{v_t} v_t / sum_t a_pt (lambda_{v_t} - 1) )).

    values (B, L, D), attention (B, P, L) -> (B, P, D): values gain a part axis, the token axis is reduced.
    """
    return geometry.mean(values.unsqueeze(1), attention, reducedim=[2])


def health_stats(parts, tangents, weights, text=None, text_mask=None, unconverged=None, *, geometry):
    """Whether the branch is alive, from the points it computed anyway (device tensors, no host sync), with
    s = geometry.scale() (sqrt(c) for a curvature -c, 1 in Euclidean space, 1 / R on a sphere of radius R):

        hyp_at_limit      fraction of part points with s ||h|| >= limit - 1e-4 (only where the geometry has a limit:
                          the Poincaré ball's float32 projection, where the radial gradient is zero)
        hyp_radius        mean s ||h|| of the part points (the ball: 1 = the boundary; a sphere: always 1)
        hyp_text_radius   the same for the text points
        hyp_w_entropy     -sum_p w_p log w_p / log P, averaged over samples (1 = uniform part weights)
        hyp_tangent_norm  mean s ||u|| of the part tangent vectors before the map to the space
        hyp_frechet_unconverged  fraction of Fréchet means still moving at their last iteration (pooled/attn)

    parts (B, P, D), tangents (B, P, D), weights (B, P), text (B, D) or (B, L, D) with text_mask (B, L) of
    its real tokens, unconverged (B,) booleans or None.
    """
    scale = geometry.scale(parts)
    radius = scale * parts.detach().norm(dim=-1)
    w = weights.detach()
    entropy = -(w * w.clamp_min(1e-30).log()).sum(dim=-1) / math.log(w.shape[-1])
    stats = {}
    if geometry.limit is not None:
        stats["hyp_at_limit"] = (radius >= geometry.limit - 1e-4).float().mean()
    stats.update(hyp_radius=radius.mean(), hyp_w_entropy=entropy.mean(),
                 hyp_tangent_norm=(scale * tangents.detach().norm(dim=-1)).mean())
    if text is not None:
        text_radius = scale * text.detach().norm(dim=-1)
        stats["hyp_text_radius"] = (text_radius.mean() if text_mask is None else
                                    (text_radius * text_mask).sum() / text_mask.sum().clamp_min(1))
    if unconverged is not None:
        stats["hyp_frechet_unconverged"] = unconverged.detach().float().mean()
    return stats
