"""The training loss in one place: the translation's cross-entropy, blended with the contrastive branch's loss by
alpha, and alpha's schedule. The trainer calls TrainingLoss on what Uni_Sign.forward returns:

    loss = TrainingLoss(model.config.label_smoothing)(model(batch))["loss"]

The contrastive loss itself is hyperbolic.HyperbolicContrastiveLoss, in whichever geometry the branch runs; it and
alpha_schedule are evaluated inside the model's forward, whose parameters they read."""
import torch
import torch.nn.functional as F


def translation_loss(logits, labels, label_smoothing):
    """Cross-entropy of the teacher-forced logits (B, S, V) against the targets (B, S), ignored targets -100."""
    logits = logits.float()
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100,
                           label_smoothing=label_smoothing)


def alpha_schedule(alpha0, global_step, total_updates, alpha_logit):
    """alpha = clamp(alpha0 + 0.1 progress + 0.2 sigmoid(alpha_logit), 0.1, 1), progress = global_step /
    total_updates in [0, 1] (0 while total_updates is not set): the cross-entropy's share grows over the run.
    A device tensor: no host sync."""
    if total_updates > 0:
        progress = (global_step.float() / total_updates).clamp(0.0, 1.0)
    else:
        progress = torch.zeros((), device=global_step.device)
    return (alpha0 + 0.1 * progress + 0.2 * torch.sigmoid(alpha_logit.float())).clamp(0.1, 1.0)


def blend(ce_loss, contrastive_loss, alpha):
    """alpha CE + (1 - alpha) contrastive."""
    return alpha * ce_loss + (1.0 - alpha) * contrastive_loss


class TrainingLoss:
    """loss = CE without the branch, alpha CE + (1 - alpha) contrastive with it, from Uni_Sign.forward's outputs.
    Returns dict(loss, ce_loss[, hyp_loss, alpha], and the branch's statistics): every entry but `loss` detached,
    what the training loop logs."""

    def __init__(self, label_smoothing):
        self.label_smoothing = label_smoothing

    def __call__(self, outputs):
        ce_loss = translation_loss(outputs["logits"], outputs["labels"], self.label_smoothing)
        if "contrastive_loss" not in outputs:
            return {"loss": ce_loss, "ce_loss": ce_loss.detach()}
        contrastive_loss, alpha = outputs["contrastive_loss"], outputs["alpha"]
        with torch.autocast(device_type=ce_loss.device.type, enabled=False):
            loss = blend(ce_loss, contrastive_loss, alpha)
        stats = {k: v for k, v in outputs.items() if k not in ("logits", "labels", "contrastive_loss", "alpha")}
        return {"loss": loss, **stats, "ce_loss": ce_loss.detach(), "hyp_loss": contrastive_loss.detach(),
                "alpha": alpha.detach()}


def training_loss(model, batch):
    """TrainingLoss of the model's outputs on one batch, as the trainer computes it (for tests and benchmarks that
    step a bare model)."""
    return TrainingLoss(model.config.label_smoothing)(model(batch))
