"""The training settings: what the engine (optimizers, schedule, precision, ZeRO) and the training loop read, each
declared once (settings.setting); fine_tuning.py's flags, their checks (preflight.py) and the run settings a model
folder's card tells (script/export_model.py) are generated from these fields."""
import dataclasses

import utils
from settings import at_least, finite_at_least, resolve_unset, setting

OPTIMIZERS = ("adamw",)  # what Engine builds; the release's command lines spell it adamw or AdamW


@dataclasses.dataclass
class TrainConfig:
    batch_size: int = setting(8, "videos per step and process", valid=at_least(1), allowed="at least 1")
    gradient_accumulation_steps: int = setting(1, "steps per optimizer update", valid=at_least(1),
                                               allowed="at least 1", training_only=True)
    epochs: int = setting(20, "training epochs", valid=at_least(1),
                          allowed="at least 1; to only evaluate, pass --eval", training_only=True)
    opt: str = setting("adamw", f"optimizer of the Euclidean parameters ({', '.join(OPTIMIZERS)}; any case)")
    opt_betas: tuple = setting((0.9, 0.999), "AdamW's betas", flag="--opt-betas", nargs=2)
    lr: float = setting(3e-4, "peak learning rate", valid=finite_at_least(0), allowed="a number of at least 0",
                        training_only=True)
    min_lr: float = setting(1e-6, "learning rate at the end of the cosine decay", flag="--min-lr",
                            valid=finite_at_least(0), allowed="a number of at least 0", training_only=True)
    warmup_epochs: float = setting(5, "epochs of linear warm-up", flag="--warmup-epochs", valid=finite_at_least(0),
                                   allowed="0 (no warm-up) or more", training_only=True)
    weight_decay: float = setting(0.01, "AdamW's weight decay (matrices only)", flag="--weight-decay",
                                  valid=finite_at_least(0), allowed="a number of at least 0", training_only=True)
    gradient_clipping: float = setting(1.0, "gradient norm clip (0: off)", valid=finite_at_least(0),
                                       allowed="0 (no clipping) or a positive norm", training_only=True)
    dtype: str = setting(None, "training precision (default: bf16 on GPU, fp32 on CPU)",
                         choices=("bf16", "fp16", "fp32"))
    zero_stage: int = setting(2, "DeepSpeed ZeRO stage", choices=(0, 1, 2, 3))
    seed: int = setting(42, "random seed", valid=lambda value: 0 <= value < 2**32,
                        allowed="between 0 and 2**32 - 1 (as numpy's seeds)")
    hyp_lr: float = setting(1e-3, "Riemannian Adam's learning rate (the hyperbolic branch's curvature and attention)",
                            valid=finite_at_least(0), allowed="a number of at least 0", training_only=True)
    quick_break: int = setting(0, "cap training steps per epoch (0: no cap)", valid=at_least(0),
                               allowed="0 (no cap) or a number of steps", training_only=True)
    log_every: int = setting(50, "read the training values to the host (progress bar, wandb) every N steps and at "
                                 "the end of each epoch; the device runs ahead in between", valid=at_least(1),
                             allowed="at least 1 (steps between reads of the training values)", training_only=True,
                             recorded=False)
    max_target_tokens: int = setting(50, "target tokens kept per sentence for the teacher-forced loss (longer "
                                          "sentences are cut; --max_tgt_len is generation's)",
                                     valid=at_least(1), allowed="at least 1 (target tokens kept for the loss)")
    compile: bool = setting(False, "torch.compile the pose encoder (off by default: slower on CPU, not yet measured "
                                   "on GPU)", recorded=False)

    def __post_init__(self):
        resolve_unset(self)

    from_args = classmethod(utils.config_from_args)
