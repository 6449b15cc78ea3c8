"""Uni_Sign: graphs, ST-GCN wiring, the pose path into mT5, the losses, generation and optimizer groups."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import models
import stgcn_layers
from losses import TrainingLoss, training_loss
from make_demo import random_batch


def build(mt5_path, **overrides):
    fields = dict(mt5_path=mt5_path, use_hyperbolic=True, hyp_text_cmp="token", hyp_text_emb_src="decoder")
    fields.update(overrides)
    torch.manual_seed(0)
    return models.Uni_Sign(SimpleNamespace(**fields))


@pytest.fixture(scope="module")
def model(tiny_mt5_path):
    return build(tiny_mt5_path)


def batch_for(model, seed=0, batch_size=3, frames=12):
    return random_batch(model.mt5_tokenizer, batch_size=batch_size, frames=frames, text_len=7, seed=seed)


def test_graph_partitions_are_column_normalised():
    for part, (num_nodes, edges) in stgcn_layers.PART_GRAPHS.items():
        graph = stgcn_layers.graph_adjacency(num_nodes, edges)
        assert graph.shape == (2, num_nodes, num_nodes)
        torch.testing.assert_close(graph.sum(dim=(0, 1)), torch.ones(num_nodes))  # each column averages
        assert (graph[0] == torch.diag(torch.diagonal(graph[0]))).all()
        assert (torch.diagonal(graph[1]) == 0).all() and ((graph[1] > 0) == (graph[1].T > 0)).all()
    body = stgcn_layers.graph_adjacency(*stgcn_layers.PART_GRAPHS["body"])
    degree = torch.tensor([5, 2, 2, 3, 3, 3, 3, 2, 2.0])  # self link + neighbours of 0-1,0-2,0-3,0-4,3-5,5-7,4-6,6-8
    torch.testing.assert_close(body[0].diagonal(), 1 / degree)
    torch.testing.assert_close(body[1][0, 3], 1 / degree[3])
    face = stgcn_layers.graph_adjacency(*stgcn_layers.PART_GRAPHS["face_all"])
    assert (face[1][17, :17] > 0).all() and face[1][16, 9] > 0 and face[1][8, 9] == 0


def test_graph_conv_is_the_spec_einsum():
    block = stgcn_layers.GraphConv(4, 6, stgcn_layers.graph_adjacency(*stgcn_layers.PART_GRAPHS["body"])).eval()
    x = torch.randn(2, 4, 5, 9)
    conv = block.conv(x).view(2, 2, 6, 5, 9)
    expected = torch.relu(block.bn(torch.einsum("nkctv,kvw->nctw", conv, block.A)))
    torch.testing.assert_close(block(x), expected)


def test_part_features_and_body_anchor(model):
    model.eval()
    batch = batch_for(model)
    pose = {p: batch["pose"][p] for p in stgcn_layers.PARTS}
    features = stgcn_layers.encode_parts(pose, model.proj_linear, model.gcn_modules, model.fusion_gcn_modules)
    assert {p: tuple(f.shape) for p, f in features.items()} == {p: (3, 12, 256) for p in stgcn_layers.PARTS}
    _, _, pooled, pose_mask = model.encode_pose(batch)
    for part in stgcn_layers.PARTS:  # mean over each sample's real frames only
        for i, length in enumerate(pose_mask.sum(1).tolist()):
            torch.testing.assert_close(pooled[part][i], features[part][i, :length].mean(0))
    assert (pose_mask.sum(1) < 12).any()  # the batch does have padded frames

    # Hands and face receive the body's anchor node, detached: no gradient from them into the body's ST-GCN.
    model.zero_grad(set_to_none=True)
    features = stgcn_layers.encode_parts(pose, model.proj_linear, model.gcn_modules, model.fusion_gcn_modules)
    (features["left"].sum() + features["face_all"].sum()).backward()
    assert model.gcn_modules["body"].layer0_0.gcn.conv.weight.grad is None
    assert model.gcn_modules["left"].layer0_0.gcn.conv.weight.grad is not None
    changed = dict(pose, body=pose["body"] + 0.5)
    moved = stgcn_layers.encode_parts(changed, model.proj_linear, model.gcn_modules, model.fusion_gcn_modules)
    assert not torch.allclose(moved["right"], features["right"])


def test_encode_pose_builds_prompt_then_pose_inputs(model):
    model.eval()
    batch = batch_for(model)
    inputs_embeds, attention_mask, _, pose_mask = model.encode_pose(batch)
    prompt_len = batch["prompt_ids"].shape[1]
    assert inputs_embeds.shape == (3, prompt_len + 12, model.mt5_model.config.d_model)
    prompt_embeds = model.mt5_model.get_input_embeddings()(batch["prompt_ids"])
    torch.testing.assert_close(inputs_embeds[:, :prompt_len], prompt_embeds)
    assert torch.equal(attention_mask, torch.cat([batch["prompt_mask"], batch["pose_mask"]], dim=1))
    assert torch.equal(pose_mask, batch["pose_mask"])


def test_translation_loss_is_label_smoothed_cross_entropy(tiny_mt5_path):
    pose_only = build(tiny_mt5_path, use_hyperbolic=False, label_smoothing=0.0).eval()
    batch = batch_for(pose_only)
    assert set(pose_only(batch)) == {"logits", "labels"}  # what the loss needs, and no more
    out = training_loss(pose_only, batch)
    assert set(out) == {"loss", "ce_loss"}
    inputs_embeds, attention_mask, _, _ = pose_only.encode_pose(batch)
    reference = pose_only.mt5_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=batch["labels"])
    torch.testing.assert_close(out["loss"], reference.loss)  # same shift-right and -100 handling as HF
    pose_only.config.label_smoothing = 0.2
    logits = reference.logits.float().flatten(0, 1)
    expected = F.cross_entropy(logits, batch["labels"].flatten(), ignore_index=-100, label_smoothing=0.2)
    torch.testing.assert_close(training_loss(pose_only, batch)["loss"], expected)


@pytest.mark.parametrize("comparison", ["pooled", "attn", "token"])
@pytest.mark.parametrize("source", ["token", "decoder"])
def test_every_mode_trains_with_one_mt5_pass(tiny_mt5_path, comparison, source):
    geo = build(tiny_mt5_path, hyp_text_cmp=comparison, hyp_text_emb_src=source).train()
    calls = []
    handle = geo.mt5_model.register_forward_hook(lambda *args: calls.append(1))
    outputs = geo(batch_for(geo))
    handle.remove()
    assert len(calls) == 1
    out = TrainingLoss(geo.config.label_smoothing)(outputs)
    assert {"logits", "labels", "contrastive_loss", "alpha"} <= set(outputs)
    expected = {"loss", "ce_loss", "hyp_loss", "alpha", "curvature", "temperature", "margin", "pos_dist",
                "w_body", "w_left", "w_right", "w_face", "hyp_at_limit", "hyp_radius", "hyp_text_radius",
                "hyp_w_entropy", "hyp_tangent_norm"} | ({"hyp_frechet_unconverged"} if comparison != "token" else set())
    assert set(out) == expected
    assert all(not v.requires_grad and v.dim() == 0 for k, v in out.items() if k != "loss")
    torch.testing.assert_close(out["loss"], out["alpha"] * out["ce_loss"] + (1 - out["alpha"]) * out["hyp_loss"])
    out["loss"].backward()
    assert geo.pose_proj.weight.grad is not None and geo.hyp_proj_text.proj.weight.grad is not None
    assert (geo.hyp_attn_W.grad is not None) == (comparison == "token")
    if comparison == "attn":
        assert geo.text_pool_attn.weight.grad is not None


def test_alpha_progress_counts_optimizer_updates(tiny_mt5_path):
    geo = build(tiny_mt5_path, alpha=0.7)
    torch.testing.assert_close(geo.alpha(), torch.tensor(0.8))  # progress 0 until set_total_updates
    geo.set_total_updates(10)
    for _ in range(5):
        geo.count_update()
    torch.testing.assert_close(geo.alpha(), torch.tensor(0.85))
    assert int(geo.state_dict()["global_step"]) == 5
    for _ in range(20):
        geo.count_update()
    torch.testing.assert_close(geo.alpha(), torch.tensor(0.9))  # progress saturates at 1
    with torch.no_grad():
        geo.loss_alpha_logit.fill_(10.0)
    torch.testing.assert_close(geo.alpha(), torch.tensor(1.0))  # clamped


def test_pretrained_mt5_weights_are_kept(tiny_mt5_path):
    from transformers import MT5ForConditionalGeneration
    pretrained = MT5ForConditionalGeneration.from_pretrained(tiny_mt5_path).state_dict()
    ours = build(tiny_mt5_path).mt5_model.state_dict()
    assert ours.keys() == pretrained.keys()
    for name, value in pretrained.items():
        assert torch.equal(ours[name], value), name


def test_own_linear_layers_get_the_truncated_normal_init(model):
    for layer in (model.pose_proj, model.hyp_proj_body.proj, model.hyp_proj_text.proj):
        assert 0.018 < float(layer.weight.detach().std()) < 0.022 and (layer.bias == 0).all()


def test_missing_mt5_folder_says_where_and_how(tmp_path):
    missing = str(tmp_path / "nowhere" / "mt5-base")
    with pytest.raises(FileNotFoundError) as error:
        models.Uni_Sign(SimpleNamespace(mt5_path=missing))
    message = str(error.value)
    assert missing in message and "google/mt5-base" in message and "make_demo.py" in message


def test_generate_uses_the_one_pose_encoding(model, monkeypatch):
    model.eval()
    batch = batch_for(model)
    calls = []
    original = model.encode_pose
    monkeypatch.setattr(model, "encode_pose", lambda b: calls.append(1) or original(b))
    texts = model.generate(batch, num_beams=2, max_new_tokens=5)
    assert len(calls) == 1 and len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert all("</s>" not in t and "<pad>" not in t for t in texts)


def test_optimizer_groups_split_every_trainable_parameter_once(model):
    riemannian = model.hyperbolic_parameters()
    assert [id(p) for p in riemannian] == [id(model.hyp_attn_W), id(model.hyp_attn_b), id(model.manifold.isp_c)]
    groups = model.euclidean_param_groups(0.01)
    decay, no_decay = groups[0]["params"], groups[1]["params"]
    assert groups[0]["weight_decay"] == 0.01 and groups[1]["weight_decay"] == 0.0
    ids = [id(p) for p in decay + no_decay + riemannian]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    assert all(p.ndim >= 2 for p in decay) and all(p.ndim <= 1 for p in no_decay)
    assert any(p is model.geom_loss.temp for p in no_decay) and any(p is model.part_para for p in no_decay)


def test_pose_only_model_has_no_hyperbolic_parameters(tiny_mt5_path):
    pose_only = build(tiny_mt5_path, use_hyperbolic=False)
    assert pose_only.hyperbolic_parameters() == []
    assert not any(k.startswith(("hyp_", "geom_loss", "manifold")) for k in pose_only.state_dict())


def test_demo_batches_from_the_collator_train_and_translate(demo_root, model):
    """End to end on the demo data: datasets.build_dataset + PoseCollator -> forward, backward, generate."""
    import datasets
    args = SimpleNamespace(max_length=256, task="SLT", skip_bad_samples=False)
    dataset = datasets.build_dataset("Demo", "dev", args, label_path=demo_root["label_paths"]["dev"],
                                     pose_dir=demo_root["pose_dir"])
    batch = datasets.PoseCollator(model.mt5_tokenizer, "Demo")([dataset[i] for i in range(3)])
    model.train()
    model.zero_grad(set_to_none=True)
    out = training_loss(model, batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and model.hyp_attn_W.grad is not None
    model.eval()
    texts = model.generate(batch, num_beams=2, max_new_tokens=8)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)


def release_weights_per_position(d_model):
    """From the released checkpoint's key list (tests/data/official_keys): per ST-GCN part, the weights that act at
    every (frame, node) (its matrices and convolution kernels, not the graph A), the part's nodes (A's size), and
    pose_proj's weights, which act at every frame."""
    from test_checkpoint_keys import read_key_list
    release = read_key_list("unisign", d_model)

    def weights(prefix):
        return sum(math.prod(shape) for key, shape in release.items()
                   if key.startswith(prefix) and len(shape) > 1 and not key.endswith(".A"))
    stgcn = {part: sum(weights(f"{stack}.{part}.") for stack in ("proj_linear", "gcn_modules", "fusion_gcn_modules"))
             for part in stgcn_layers.PARTS}
    nodes = {part: release[f"gcn_modules.{part}.layer0_0.gcn.A"][1] for part in stgcn_layers.PARTS}
    return stgcn, nodes, math.prod(release["pose_proj.weight"])


def test_training_flops_count_every_weight_at_every_position(model):
    batch = batch_for(model, batch_size=2, frames=10)
    d_model, vocab = model.mt5_model.config.d_model, model.mt5_model.config.vocab_size
    stgcn, nodes, pose_proj = release_weights_per_position(d_model)
    # One ST-GCN part, per (frame, node), by hand from the architecture: proj 3x64; spatial 64x128, 64x256 + residual
    # 64x128, 128x512 + residual 128x256; temporal 3 x (256x512 graph conv + 256x256x5 temporal conv).
    by_hand = 3 * 64 + 64 * 128 + (64 * 256 + 64 * 128) + (128 * 512 + 128 * 256) + 3 * (256 * 512 + 256 * 256 * 5)
    assert stgcn == dict.fromkeys(stgcn_layers.PARTS, by_hand)  # every part is the same stack
    mt5 = model.mt5_model
    encoder = sum(p.numel() for p in mt5.get_encoder().parameters() if p.dim() > 1) - vocab * d_model
    decoder = sum(p.numel() for p in mt5.get_decoder().parameters() if p.dim() > 1) - vocab * d_model
    prompt, target = batch["prompt_ids"].shape[1], batch["labels"].shape[1]
    per_sample = (sum(stgcn[part] * 10 * nodes[part] for part in stgcn_layers.PARTS) + pose_proj * 10
                  + encoder * (prompt + 10) + (decoder + vocab * d_model) * target)
    assert model.training_flops(batch) == 6 * 2 * per_sample
