"""The model's state dict has exactly the released checkpoints' non-mT5 keys and shapes, both ways."""
import os
from types import SimpleNamespace

import pytest
import torch

KEY_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "official_keys")
RELEASE_D_MODEL = 768  # the key lists were written with mt5-base; d_model-sized axes follow our mT5


def read_key_list(mode, d_model):
    """{key: shape} from official_keys_<mode>.txt, with mt5-base's d_model replaced by ours."""
    keys = {}
    with open(os.path.join(KEY_DIR, f"official_keys_{mode}.txt"), encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, shape = line.split(" ", 1)
            dims = [int(d) for d in shape.strip("()").split(",") if d.strip()]
            keys[name] = tuple(d_model if d == RELEASE_D_MODEL else d for d in dims)
    return keys


def build(mode, mt5_path):
    import models
    hyperbolic = mode != "unisign"
    return models.Uni_Sign(SimpleNamespace(mt5_path=mt5_path, use_hyperbolic=hyperbolic,
                                           hyp_text_cmp=mode if hyperbolic else "token", hyp_text_emb_src="decoder"))


def without_mt5(state):
    return {k: v for k, v in state.items() if not k.startswith("mt5_model.")}


@pytest.mark.parametrize("mode", ["unisign", "pooled", "attn", "token"])
def test_state_dict_matches_the_release_both_ways(mode, tiny_mt5_path):
    model = build(mode, tiny_mt5_path)
    d_model = model.mt5_model.config.d_model
    expected = read_key_list(mode, d_model)

    # Saving: exactly the listed keys and shapes besides mT5's.
    ours = {k: tuple(v.shape) for k, v in without_mt5(model.state_dict()).items()}
    assert sorted(set(ours) - set(expected)) == [] and sorted(set(expected) - set(ours)) == []
    assert ours == expected

    # Loading: a state dict laid out like the release (+ mt5_model.*) loads with nothing missing or unexpected.
    generator = torch.Generator().manual_seed(1)
    released = {k: torch.randn(shape, generator=generator) if shape else torch.tensor(0.5)
                for k, shape in expected.items()}
    for name in released:
        if name.endswith("num_batches_tracked") or name == "global_step":
            released[name] = torch.tensor(3)
    released.update({f"mt5_model.{k}": v.clone() for k, v in model.mt5_model.state_dict().items()})
    result = model.load_state_dict(released, strict=False)
    assert [k for k in result.missing_keys if not k.startswith("mt5_model.")] == []
    assert [k for k in result.unexpected_keys if not k.startswith("mt5_model.")] == []
    loaded = model.state_dict()
    for name in ("pose_proj.weight", "part_para", "gcn_modules.body.layer0_0.gcn.A",
                 "fusion_gcn_modules.face_all.layer0_2.tcn.0.weight"):
        torch.testing.assert_close(loaded[name], released[name])
    if mode != "unisign":
        torch.testing.assert_close(model.manifold.isp_c.detach(), released["manifold.isp_c"])
        assert int(model.global_step) == 3


def test_hands_share_weights_and_both_names_are_saved(tiny_mt5_path):
    model = build("unisign", tiny_mt5_path)
    for group in (model.proj_linear, model.gcn_modules, model.fusion_gcn_modules):
        assert group["left"] is group["right"]
    state = model.state_dict()
    assert "gcn_modules.left.layer0_0.gcn.A" in state and "gcn_modules.right.layer0_0.gcn.A" in state
    # A release checkpoint whose left and right entries are identical restores the shared module.
    state["proj_linear.right.weight"] = state["proj_linear.left.weight"] + 1
    state["proj_linear.left.weight"] = state["proj_linear.right.weight"].clone()
    model.load_state_dict(state)
    torch.testing.assert_close(model.proj_linear["right"].weight, state["proj_linear.right.weight"])
