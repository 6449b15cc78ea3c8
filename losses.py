"""The training loss in one place: the translation's cross-entropy, blended with the contrastive branch's loss by
alpha, and alpha's schedule. Uni_Sign.forward calls these; the contrastive loss itself is
hyperbolic.HyperbolicContrastiveLoss, in whichever geometry the branch runs."""
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
