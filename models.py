"""Uni-Sign (pose ST-GCNs feeding mT5) with the optional Geo-Sign hyperbolic branch.

Attribute names are the released checkpoints' key names (tests/data/official_keys/official_keys_*.txt).
"""
import functools
import os

import geoopt
import torch
from torch import nn

import branch
import config
import hyperbolic as hyp
import losses
import model_io
from geometry import build_geometry
# the settings, named here too (models.ModelConfig, models.STABLE_RECIPE, ...)
from model_config import (BRANCH_SETTINGS, HYP_CHOICES, LOSS_SETTINGS, STABLE_RECIPE, TEXT_COMPARISONS,  # noqa: F401
                          TEXT_SOURCES, ModelConfig)
from skeleton import PART_FEATURES, PARTS, POSE_FEATURES
from stgcn_layers import build_part_modules, encode_parts

HYP_PART_MODULES = {"body": "hyp_proj_body", "left": "hyp_proj_left", "right": "hyp_proj_right",
                    "face_all": "hyp_proj_face"}


class MT5FolderError(FileNotFoundError):
    """An mT5 folder that is missing, incomplete or unreadable; the message names it and the fix. A
    FileNotFoundError, so that every command reports it as it reports a missing --mt5_path: one error line."""


def load_mt5(path, safetensors_only=False):
    """Tokenizer and MT5ForConditionalGeneration from a save_pretrained folder or a Hub id's cached snapshot
    (model_io.resolve_hub_id: `google/mt5-base`, a local folder of that name first), or an MT5FolderError that
    says which path was tried, what is wrong with it and how to get google/mt5-base. safetensors_only: never
    read a pickled weight file (model folders)."""
    from safetensors import SafetensorError
    from transformers import AutoTokenizer, MT5ForConditionalGeneration
    resolved = model_io.resolve_hub_id(path, "--mt5_path", model_io.MT5_FILES, model_io.MT5_PICKLED_FILES,
                                       fix="fetch google/mt5-base with `hf download google/mt5-base` (into the cache, "
                                           "for --mt5_path google/mt5-base) where the Hub can be reached, or with "
                                           f"`--local-dir {config.mt5_path}` for config.mt5_path",
                                       error=MT5FolderError)
    if resolved != path:  # a Hub id: its snapshot, checked as a local --mt5_path is (preflight, from_pretrained)
        path = resolved
        model_io.check_mt5_weights(path)
    fix = ("It is part of a model folder: copy the folder anew or export it again (script/export_model.py)."
           if safetensors_only else
           f"Download google/mt5-base with `hf download google/mt5-base --local-dir {path}` or set "
           "--mt5_path / config.mt5_path; for the demo run `python script/make_demo.py`.")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise MT5FolderError(f"mT5 not found at {os.path.abspath(path)} (no config.json there). {fix}")
    if not any(os.path.isfile(os.path.join(path, name)) for name in ("spiece.model", "tokenizer.json")):
        # transformers would build a 4-token tokenizer that reads every word as <unk>, and training would go on
        raise MT5FolderError(f"mT5 at {os.path.abspath(path)} has no tokenizer (neither spiece.model nor "
                             f"tokenizer.json). {fix}")
    extra = {"use_safetensors": True} if safetensors_only else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = MT5ForConditionalGeneration.from_pretrained(path, **extra)
    except (OSError, ValueError, SafetensorError) as err:  # a broken config, tokenizer or weight file
        reason = " ".join(str(err).split())[:200]
        raise MT5FolderError(f"mT5 at {os.path.abspath(path)} cannot be loaded ({type(err).__name__}: {reason}). "
                             f"{fix}") from None
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        raise MT5FolderError(f"mT5 at {os.path.abspath(path)}: its tokenizer has {len(tokenizer)} tokens but the "
                             f"model embeds {model.get_input_embeddings().num_embeddings}: the two come from "
                             f"different models. {fix}")
    return tokenizer, model


def shift_right(labels, start_id, pad_id):
    """Teacher-forcing decoder inputs: [start, y_0, ..., y_{S-2}], with ignored (-100) targets as pad."""
    shifted = labels.new_full(labels.shape, start_id)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == -100, pad_id)


POSE_INPUTS = ("pose", "pose_mask", "prompt_ids", "prompt_mask")  # what encode_pose reads of a batch


def mark_batch_sizes_dynamic(batch):
    """Tell torch.compile that the first two sizes of encode_pose's inputs vary from batch to batch: samples
    and frames of batch["pose"][part] (B, T, V, 3) and batch["pose_mask"] (B, T), samples and prompt tokens
    of batch["prompt_ids"] and batch["prompt_mask"] (B, Lp). `maybe_`: a size of 1 may stay specialised."""
    for tensor in (*(batch["pose"][part] for part in PARTS), batch["pose_mask"], batch["prompt_ids"],
                   batch["prompt_mask"]):
        torch._dynamo.maybe_mark_dynamic(tensor, 0)
        torch._dynamo.maybe_mark_dynamic(tensor, 1)


class Uni_Sign(nn.Module):
    """Four-part ST-GCN pose encoder -> pose_proj -> mT5, plus the hyperbolic branch when use_hyperbolic.

    Built from a ModelConfig, or from anything ModelConfig.from_args reads (an argparse namespace, a
    checkpoint's args). The trainer calls forward(batch) for what the loss needs (losses.TrainingLoss),
    count_update() after each optimizer update, and set_total_updates(n) once; generate(batch) for evaluation.
    """

    def __init__(self, model_config, safetensors_only=False):
        super().__init__()
        # The one copy of the settings: the model reads its fields where it uses them, so that a change to the
        # config (say, use_hyperbolic switched off for a benchmark) is the model's, and export writes what it runs.
        self.config = settings = ModelConfig.from_args(model_config)
        self.total_updates = 0

        # Registration order follows the released state dict: own parameters, buffers, then children.
        self.part_para = nn.Parameter(torch.zeros(POSE_FEATURES))
        if settings.use_hyperbolic:
            ball = build_geometry(settings.hyp_geometry, settings.init_c)  # registered below, after pose_proj
            self.hyp_attn_W, self.hyp_attn_b = ball.attention_parameters(settings.hyp_dim)
            if settings.hyp_text_cmp != "token":  # kept for the checkpoint layout, unused by this mode
                self.hyp_attn_W.requires_grad_(False)
                self.hyp_attn_b.requires_grad_(False)
            self.loss_alpha_logit = nn.Parameter(torch.zeros(()))
        # Optimizer updates done (alpha's progress); in the checkpoint only for Geo-Sign models.
        self.register_buffer("global_step", torch.zeros((), dtype=torch.long), persistent=settings.use_hyperbolic)

        self.proj_linear, self.gcn_modules, self.fusion_gcn_modules = build_part_modules()
        self.mt5_tokenizer, self.mt5_model = load_mt5(settings.mt5_path or config.mt5_path, safetensors_only)
        d_model = self.mt5_model.config.d_model
        self.pose_proj = nn.Linear(POSE_FEATURES, d_model)
        if settings.use_hyperbolic:
            smoothing_hyp = settings.label_smoothing_hyp
            self.manifold = ball
            remedies = dict(clip_r=settings.hyp_clip_r, meru_scale=settings.hyp_scale == "meru",
                            input_norm=settings.hyp_input_norm, soft_clip=settings.hyp_clip == "soft")
            for part in ("body", "right", "left", "face_all"):
                setattr(self, HYP_PART_MODULES[part],
                        hyp.HyperbolicProjection(PART_FEATURES, settings.hyp_dim, self.manifold, **remedies))
            self.hyp_proj_text = hyp.HyperbolicProjection(d_model, settings.hyp_dim, self.manifold, **remedies)
            self.geom_loss = hyp.HyperbolicContrastiveLoss(self.manifold, smoothing_hyp)
            if settings.hyp_text_cmp == "attn":
                self.text_pool_attn = nn.Linear(d_model, 1)
        self._init_own_linears()

    def _init_own_linears(self):
        """trunc-normal(std 0.02) weights, zero biases: this model's own Linear layers only, never mT5's.
        (torch's default truncation bounds are +-2 in absolute value, as in the reference's timm helper.)"""
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear) and not name.startswith("mt5_model."):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    @classmethod
    def from_pretrained(cls, source, mt5_path=None, device="cpu", read=None, complete=False, verbose=False):
        """A trained model in eval mode, built with the settings saved in `source` and its weights: the one place
        that turns a trained model file into a model. `source`: a model folder (script/export_model.py: nothing
        unpickled, every file checked against its SHA-256) or a `.pth` checkpoint, ours or the release's. mT5
        comes from `mt5_path`, else the folder's own, else the checkpoint's saved --mt5_path, else
        config.mt5_path. The settings are read by ModelConfig.from_saved.
        read: what model_io.read_model(source) gave, if already read (its args and meta describe the run);
        complete, verbose: as model_io.load_weights."""
        read = read or model_io.read_model(source)
        settings = ModelConfig.from_saved(read["args"], read["state"])
        settings.mt5_path = mt5_path or settings.mt5_path
        if not mt5_path and not read["folder"] and settings.mt5_path and not os.path.isdir(settings.mt5_path):
            settings.mt5_path = None  # the training machine's path: fall back to config.mt5_path
        safetensors_only = read["folder"] and not mt5_path
        if not safetensors_only:
            model_io.check_mt5_weights(settings.mt5_path or config.mt5_path)
        model = cls(settings, safetensors_only=safetensors_only)
        model_io.load_weights(model, source, read=read, complete=complete, verbose=verbose)
        return model.to(device).eval()

    # ------------------------------------------------------------------ pose -> mT5 inputs
    def encode_pose(self, batch):
        """The one pose-encoding path (training loss and generation).

        Returns inputs_embeds (B, Lp + T, d_model) = [prompt embeddings; pose embeddings],
        attention_mask (B, Lp + T), part_features dict part -> (B, 256) (mean over each sample's real
        frames) and pose_mask (B, T).
        """
        device = self.part_para.device
        dtype = self.part_para.dtype  # float32, or bf16 when the engine casts the model (DeepSpeed)
        pose = {part: batch["pose"][part].to(device, dtype, non_blocking=True) for part in PARTS}
        pose_mask = batch["pose_mask"].to(device, non_blocking=True)
        features = encode_parts(pose, self.proj_linear, self.gcn_modules, self.fusion_gcn_modules)
        part_features = {part: hyp.masked_mean(features[part], pose_mask) for part in PARTS}
        pose_embeds = self.pose_proj(torch.cat([features[part] for part in PARTS], dim=-1) + self.part_para)

        prompt_ids = batch["prompt_ids"].to(device, non_blocking=True)
        prompt_embeds = self.mt5_model.get_input_embeddings()(prompt_ids)
        inputs_embeds = torch.cat([prompt_embeds, pose_embeds.to(prompt_embeds.dtype)], dim=1)
        attention_mask = torch.cat([batch["prompt_mask"].to(device), pose_mask], dim=1)
        return inputs_embeds, attention_mask, part_features, pose_mask

    def compile_pose_encoder(self, backend="inductor"):
        """torch.compile encode_pose (the ST-GCNs and the projection into mT5's inputs) in place; parameter
        names, hence checkpoint keys, stay the same. mT5 stays eager (generation changes its shapes at every
        token).

        The compiled function sees only the batch's tensors that it reads: handed the whole batch, dynamo
        guarded on its sample names and compiled again for every batch until its recompile limit, then ran
        eagerly. Of those tensors only the batch's own sizes are symbolic: samples and frames (and the
        prompt's length) vary from batch to batch, so one graph serves them all; joints, coordinates and
        channels are fixed by the model, and kept static they compile faster (encode_pose alone on 2 CPU
        cores: 9 s instead of 28 s with inductor's cache, 67 s instead of 90 s without; dynamic=True also
        traced the graph twice) into kernels of known sizes. `backend`: torch.compile's (the tests use
        "aot_eager", which captures the same graphs without generating code)."""
        compiled = torch.compile(self.encode_pose, backend=backend)

        def encode_pose(batch):
            inputs = {key: batch[key] for key in POSE_INPUTS}
            mark_batch_sizes_dynamic(inputs)
            return compiled(inputs)
        self.encode_pose = encode_pose

    # ------------------------------------------------------------------ training
    def forward(self, batch):
        """What the training loss needs (losses.TrainingLoss blends it): dict(logits (B, S, V) of the teacher-forced
        pass, labels (B, S) with -100 where ignored[, contrastive_loss, alpha, and the branch's detached statistics:
        curvature, temperature, margin, pos_dist, w_body, w_left, w_right, w_face, health]). The contrastive loss and
        alpha are computed here, not in the loss module, because they read the model's own parameters (the
        geometry's, alpha's logit), which under ZeRO-3 are gathered only while the model's forward runs."""
        inputs_embeds, attention_mask, part_features, _ = self.encode_pose(batch)
        labels = batch["labels"].to(inputs_embeds.device)
        outputs = self.teacher_forced(inputs_embeds, attention_mask, labels)
        out = {"logits": outputs.logits, "labels": labels}
        if not self.config.use_hyperbolic:
            return out
        text_features, text_mask = self.text_features(outputs, labels)
        with torch.autocast(device_type=labels.device.type, enabled=False):
            contrastive_loss, stats = self.hyperbolic_loss(part_features, text_features.float(), text_mask)
            return {**out, "contrastive_loss": contrastive_loss, "alpha": self.alpha(), **stats}

    def hyperbolic_loss(self, part_features, text_features, text_mask):
        """Contrastive loss between pose parts and text on the ball (float32). Returns (loss, stats)."""
        ball = self.manifold
        parts, tangents = self.part_points(part_features, with_tangents=True)
        weights = branch.part_weights(parts, geometry=ball)  # (B, 4)
        temperature = self.geom_loss.temperature()
        unconverged = None
        if self.config.hyp_text_cmp == "token":
            tokens = self.hyp_proj_text(text_features)  # (B, L, D)
            keys = ball.keys(tokens, self.hyp_attn_W, self.hyp_attn_b)
            attention = branch.token_attention(parts, keys, text_mask, temperature, geometry=ball)
            context = branch.token_context(tokens, attention, geometry=ball)  # (B, 4, D)
            anchors, targets = parts.flatten(0, 1), context.flatten(0, 1)
            text_points, text_points_mask = tokens, text_mask
        else:
            anchors, unconverged = self.pose_point(parts, weights)
            targets = text_points = self.pooled_text_point(text_features, text_mask)
            text_points_mask = None
        pair_weights = None
        if self.config.hyp_text_cmp == "token" and self.config.hyp_pair_weights == "parts":
            pair_weights = weights.shape[1] * weights.flatten()  # mean 1 over each sample's parts
        loss, positive_distances = self.geom_loss(anchors, targets, pair_weights)
        mean_weights = weights.detach().mean(dim=0)
        stats = {"curvature": ball.curvature(parts), "temperature": temperature.detach(),
                 "margin": self.geom_loss.margin_base.detach(), "pos_dist": positive_distances.detach().mean()}
        stats.update({f"w_{name}": mean_weights[i] for i, name in enumerate(("body", "left", "right", "face"))})
        stats.update(branch.health_stats(parts, tangents, weights, text_points, text_points_mask, unconverged,
                                         geometry=ball))
        return loss, stats

    def pose_point(self, parts, weights):
        """pooled/attn modes: the parts' weighted mean on the ball, (B, D), and (B,) booleans of Fréchet
        iterations still moving at their end (None for the closed-form gyromidpoint)."""
        if self.config.hyp_midpoint == "gyro":
            return self.manifold.mean(parts, weights, reducedim=[1]), None
        return self.manifold.iterative_mean(parts, weights)

    def teacher_forced(self, inputs_embeds, attention_mask, labels):
        """mT5's teacher-forced pass on the targets; with the decoder's hidden states when they are the text
        features of the hyperbolic branch (one pass serves the CE loss and the branch)."""
        cfg = self.mt5_model.config
        return self.mt5_model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask,
            decoder_input_ids=shift_right(labels, cfg.decoder_start_token_id, cfg.pad_token_id),
            output_hidden_states=self.config.use_hyperbolic and self.config.hyp_text_emb_src == "decoder",
            use_cache=False)

    def text_features(self, outputs, labels):
        """(text features (B, L, d_model), text mask (B, L)): the last decoder hidden state of the teacher-forced
        pass (`decoder`) or the targets' token embeddings (`token`); padding is masked out."""
        text_mask = labels != -100
        if self.config.hyp_text_emb_src == "decoder":
            return outputs.decoder_hidden_states[-1], text_mask
        pad_id = self.mt5_model.config.pad_token_id
        return self.mt5_model.get_encoder().embed_tokens(labels.masked_fill(~text_mask, pad_id)), text_mask

    def part_points(self, part_features, with_tangents=False):
        """The four parts' points on the ball, (B, 4, hyp_dim) in PARTS order (float32); with_tangents: also
        their tangent vectors at the origin (detached, for the health statistics)."""
        tangents = [getattr(self, HYP_PART_MODULES[p]).tangent(part_features[p]) for p in PARTS]
        points = torch.stack([self.manifold.to_space(u) for u in tangents], dim=1)
        return (points, torch.stack([u.detach() for u in tangents], dim=1)) if with_tangents else points

    def pooled_text_point(self, text_features, text_mask):
        """pooled/attn modes: the text's one point, hyp_proj_text of its masked mean or attention-pooled features."""
        if self.config.hyp_text_cmp == "pooled":
            pooled = hyp.masked_mean(text_features, text_mask)
        else:
            scores = hyp.linear_f32(self.text_pool_attn, text_features).squeeze(-1)
            pooled = (hyp.masked_softmax(scores, text_mask).unsqueeze(-1) * text_features).sum(dim=1)
        return self.hyp_proj_text(pooled)

    @torch.no_grad()
    def hyperbolic_points(self, batch):
        """The points the hyperbolic branch compares, for inspection (script/plot_embeddings.py), from the same
        encode and teacher-forced passes as training: dict(parts (B, 4, D) in PARTS order, text (B, D),
        weights (B, 4) the part weights). The text point is what pooled/attn modes compare the parts' Fréchet
        mean with; in token mode, which compares each part with its own attention context, it is the
        uniform-weight gyromidpoint of the sample's token points."""
        if not self.config.use_hyperbolic:
            raise ValueError("this model has no hyperbolic branch (trained without --use_hyperbolic)")
        inputs_embeds, attention_mask, part_features, _ = self.encode_pose(batch)
        labels = batch["labels"].to(inputs_embeds.device)
        text_features, text_mask = self.text_features(self.teacher_forced(inputs_embeds, attention_mask, labels), labels)
        text_features = text_features.float()
        with torch.autocast(device_type=inputs_embeds.device.type, enabled=False):
            parts = self.part_points(part_features)
            if self.config.hyp_text_cmp == "token":
                uniform = text_mask.float() / text_mask.sum(dim=1, keepdim=True).clamp_min(1)
                text = branch.token_context(self.hyp_proj_text(text_features), uniform.unsqueeze(1),
                                            geometry=self.manifold)[:, 0]
            else:
                text = self.pooled_text_point(text_features, text_mask)
            return {"parts": parts, "text": text, "weights": branch.part_weights(parts, geometry=self.manifold)}

    # ------------------------------------------------------------------ alpha schedule
    def set_total_updates(self, total_updates):
        """Number of optimizer updates of the whole run: alpha's progress is global_step / total_updates."""
        self.total_updates = int(total_updates)

    def count_update(self):
        """Call once per optimizer update (after gradient accumulation), not per micro-batch."""
        self.global_step += 1

    def alpha(self):
        """The cross-entropy's share of the loss now (losses.alpha_schedule, alpha0 = config.alpha)."""
        return losses.alpha_schedule(self.config.alpha, self.global_step, self.total_updates, self.loss_alpha_logit)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def generate(self, batch, num_beams=4, max_new_tokens=100, synced_gpus=False):
        """Beam-search translations of a batch, decoded with special tokens skipped. synced_gpus: every rank
        runs the same decoder steps (under ZeRO-3 each forward gathers parameters from all ranks)."""
        inputs_embeds, attention_mask, _, _ = self.encode_pose(batch)
        output_ids = self.mt5_model.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                             num_beams=num_beams, max_new_tokens=max_new_tokens,
                                             synced_gpus=synced_gpus)
        return self.mt5_tokenizer.batch_decode(output_ids, skip_special_tokens=True)

    # ------------------------------------------------------------------ cost
    def training_flops(self, batch):
        """FLOPs of one training step on `batch`, counted as nanoGPT does: 6 per weight per position it is
        applied to (a multiply-add is 2, forward + backward is 3x forward). ST-GCN weights act at every
        (frame, node), mT5's encoder at every prompt + pose position, its decoder and lm_head at every target
        position; the graph mixing, attention scores and the hyperbolic branch (a rounding error) are left out."""
        counts = self._flop_weight_counts
        batch_size, frames = batch["pose_mask"].shape
        per_sample = counts["pose_proj"] * frames
        per_sample += sum(counts[part] * frames * batch["pose"][part].shape[2] for part in PARTS)
        per_sample += counts["encoder"] * (batch["prompt_ids"].shape[1] + frames)
        per_sample += counts["decoder"] * batch["labels"].shape[1]
        return 6 * per_sample * batch_size

    @functools.cached_property
    def _flop_weight_counts(self):
        """Weights used once per position, by where they act (the architecture's, so counted once). Sizes and
        shapes are the whole parameters' also under ZeRO-3, which leaves each rank an empty partition (numel 0,
        one dimension) and keeps the whole size in ds_numel and ds_shape."""
        def size(p):
            return getattr(p, "ds_numel", p.numel())

        def matrix_weights(module):
            return sum(size(p) for name, p in module.named_parameters()
                       if len(getattr(p, "ds_shape", p.shape)) > 1 and not name.endswith(".A"))

        mt5 = self.mt5_model
        embedding = size(mt5.get_input_embeddings().weight)  # a lookup, not a matrix product
        counts = {part: sum(matrix_weights(m[part]) for m in (self.proj_linear, self.gcn_modules,
                                                             self.fusion_gcn_modules)) for part in PARTS}
        counts.update(pose_proj=size(self.pose_proj.weight),
                      encoder=matrix_weights(mt5.get_encoder()) - embedding,
                      decoder=matrix_weights(mt5.get_decoder()) - embedding + size(mt5.get_output_embeddings().weight))
        return counts

    # ------------------------------------------------------------------ optimizer groups
    def hyperbolic_parameters(self):
        """Parameters for Riemannian Adam (no weight decay): the attention's ManifoldParameters (token
        mode) and the geometry's own (the Poincaré ball's curvature `manifold.isp_c`). Empty without the hyperbolic
        branch, and in geometries without Riemannian parameters."""
        if not self.config.use_hyperbolic:
            return []
        params = [p for p in (self.hyp_attn_W, self.hyp_attn_b) if isinstance(p, geoopt.ManifoldParameter)]
        return [p for p in params + self.manifold.riemannian_parameters() if p.requires_grad]

    def euclidean_param_groups(self, weight_decay):
        """AdamW groups of every other trainable parameter, each once (shared hand modules, the shared
        ball): decay on matrices and tensors, none on biases, norms and 0-d/1-d scalars."""
        riemannian = {id(p) for p in self.hyperbolic_parameters()}
        decay, no_decay = [], []
        for name, param in self.named_parameters():  # named_parameters already removes duplicates
            if not param.requires_grad or id(param) in riemannian:
                continue
            # the attention's W starts at the identity, which decay would pull away from (Riemannian Adam, which
            # trains it on the ball, has no decay either)
            (no_decay if param.ndim <= 1 or name == "hyp_attn_W" else decay).append(param)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
