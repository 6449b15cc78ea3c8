"""What fine_tuning.py checks before training starts, so that a set-up mistake costs no epoch: the flags
(check_flags), every split's labels and pose files, and the output folder (preflight). Each check stops with
one `error:` line."""
import dataclasses
import json
import math
import os
import re
import shutil

from tqdm import tqdm

import captions
import settings
import utils
from data_config import DataConfig, label_path_of
from datasets import BadSampleError, load_sample_pose
from engine import remove_stale_temporaries
from model_io import ModelFileError, check_mt5_weights
from settings import at_least
from model_config import BRANCH_SETTINGS, LOSS_SETTINGS, ModelConfig
from skeleton import POSE_NODES
from train_config import OPTIMIZERS, TrainConfig


# Every number flag of fine_tuning.py / pretraining.py: (flag, its argparse name, valid?, what is valid); the
# training's, the data's and the model's come from their settings classes' fields (settings.number_rules). Out of
# range, each failed deep inside torch, DeepSpeed or transformers (a traceback), some only after an epoch of training
# (--num_beams 0, --max_tgt_len 0), and some trained on silently (--alpha 2, --warmup-epochs -1).
FLAG_RULES = settings.number_rules(TrainConfig) + settings.number_rules(DataConfig) + (
    ("--num_workers", "num_workers", at_least(0), "0 (load in the main process) or more"),
    ("--num_beams", "num_beams", at_least(1), "at least 1 (1: greedy decoding)"),
    ("--max_tgt_len", "max_tgt_len", at_least(1), "at least 1 (new tokens at generation)"),
) + settings.number_rules(ModelConfig) + captions.CAPTION_FLAG_RULES
# The same for the flags only training reads (not checked under --eval).
TRAINING_FLAG_RULES = settings.number_rules(TrainConfig, training_only=True)


def check_flags(args):
    """Every number flag in its valid range (FLAG_RULES, and TRAINING_FLAG_RULES unless --eval), --opt-betas in
    [0, 1), --min-lr at most --lr, and no contradictory or unsupported switches: checked first, before any file
    is read. Stops with one `error:` line naming the flag and what it takes."""
    rules = FLAG_RULES + (() if args.eval else TRAINING_FLAG_RULES)
    for flag, name, valid, allowed in rules:
        value = getattr(args, name)
        if value is not None and not valid(value):  # None: a setting left unset, resolved later
            utils.fail(f"{flag} must be {allowed} (got {value})")
    if not args.eval:
        if not all(0 <= beta < 1 for beta in args.opt_betas):
            utils.fail(f"--opt-betas must be two numbers in [0, 1) (got {' '.join(map(str, args.opt_betas))})")
        if args.min_lr > args.lr:
            utils.fail(f"--min-lr {args.min_lr} is above --lr {args.lr}: the schedule decays from --lr down to "
                       "--min-lr; lower --min-lr")
    if args.opt.lower() not in OPTIMIZERS:
        utils.fail(f"--opt {args.opt}: this implementation trains with {' or '.join(OPTIMIZERS)} only (the release's "
                   "recipe); leave --opt out or pass --opt adamw")
    args.opt = args.opt.lower()
    if args.resume and args.overwrite:
        utils.fail("--resume continues the run in --output_dir and --overwrite replaces it: pass one of them")
    if args.eval and args.resume:  # --eval returned before the resumable state was read: it scored something else
        utils.fail("--eval scores the model of --finetune and --resume continues training: to score a run, pass "
                   "--eval --finetune OUTPUT_DIR/best_checkpoint.pth (or checkpoint.pth)")
    if not args.finetune:  # else once the saved settings are read (model_settings)
        check_model(ModelConfig.from_args(args), args)
    captions.check_caption_flags(args)
    if args.rgb_support:
        utils.fail("--rgb_support: this implementation is pose-only (the RGB branch of Uni-Sign is not built)")
    check_precision(args)


def check_model(model_config, args):
    """Refuse a model setting that cannot take effect (ModelConfig.ineffective) and ZeRO-3 with the branch."""
    problem = model_config.ineffective()
    if problem:
        utils.fail(problem)
    unused = model_config.unused_branch_settings()
    if unused and utils.is_main_process():
        print(f"note: {', '.join(unused)}: the hyperbolic branch's settings, unused without --use_hyperbolic")
    if args.zero_stage == 3 and model_config.use_hyperbolic and not args.eval:
        utils.fail("--zero_stage 3 partitions every parameter, but Riemannian Adam needs the hyperbolic branch's "
                   "ManifoldParameters whole: use --zero_stage 2 (or 0/1) with --use_hyperbolic")


def model_settings(args, finetuned=None):
    """The run's model settings, resolved once: the flags given (unset ones are None), and with --finetune the model
    the checkpoint or folder records (ModelConfig.from_saved; `finetuned` is model_io.read_model's dict). A given
    flag that contradicts the saved model stops in one line naming both values; fine-tuning may change the loss's
    settings (LOSS_SETTINGS) and add the hyperbolic branch to a model without it, each said in one line."""
    given = {name: getattr(args, name) for name in settings.defaults(ModelConfig)
             if getattr(args, name, None) is not None}
    record = {} if finetuned is None else finetuned["args"]
    record = record if isinstance(record, dict) else vars(record)
    if not any(name in record for name in settings.defaults(ModelConfig)):
        # nothing saved says what the model is (no --finetune, or a file without settings): the flags build it, and
        # loading the weights refuses a file that is not this model's
        model_config = ModelConfig(**given)
    else:
        model_config = merge_saved(given, finetuned, args.finetune, args.eval)
    check_model(model_config, args)
    return model_config


def merge_saved(given, finetuned, source, evaluating):
    """The saved model's settings with the given flags that may change it (model_settings)."""
    saved = ModelConfig.from_saved(finetuned["args"], finetuned["state"])
    values = dataclasses.asdict(saved)
    new_branch = bool(given.get("use_hyperbolic")) and not saved.use_hyperbolic and not evaluating
    if new_branch:
        values.update({name: None for name in BRANCH_SETTINGS}, use_hyperbolic=True)
        print(f"--finetune {source}: the saved model has no hyperbolic branch; --use_hyperbolic adds one, trained "
              "from scratch")
    changed, unused = [], []
    without_branch = not values["use_hyperbolic"] and not given.get("use_hyperbolic")
    for name, value in given.items():
        if name == "mt5_path" or (new_branch and name in BRANCH_SETTINGS):
            values[name] = value
        elif without_branch and name in BRANCH_SETTINGS and name != "hyp_recipe":
            values[name] = value  # unused without the branch (check_model says so)
        elif value != values[name] and name in LOSS_SETTINGS and evaluating:
            # the release's eval.sh passes its training command's loss flags: they shape no prediction
            unused.append(f"--{name} {value} (saved: {values[name]})")
        elif value != values[name] and name in LOSS_SETTINGS:
            changed.append(f"--{name} {value} (saved: {values[name]})")
            values[name] = value
        elif value != values[name]:
            fix = ("the evaluation builds the saved model" if evaluating else
                   "fine-tuning starts from the saved model; to train another, start without --finetune")
            utils.fail(f"--finetune {source} was saved with {_flag_value(name, values[name])}, and this command gives "
                       f"{_flag_value(name, value)}: leave the flag out ({fix})")
    if changed:
        print(f"--finetune {source}: fine-tuning with {', '.join(changed)}")
    if unused:
        print(f"--eval: {', '.join(unused)} only shape the training loss, so they change no score")
    return ModelConfig(**values)


def _flag_value(name, value):
    if isinstance(value, bool):
        return f"--{name}" if value else f"no --{name}"
    return f"--{name} {value}"


def check_precision(args):
    """Refuse --dtype fp16: mT5's feed-forward outputs overflow float16's range (65504), which is why transformers
    keeps the modules in MT5ForConditionalGeneration._keep_in_fp32_modules (`wo`) in float32 under fp16; DeepSpeed's
    fp16 engine (and --eval's model.to) casts every weight to float16, so they would not stay float32."""
    from transformers import MT5ForConditionalGeneration
    kept = MT5ForConditionalGeneration._keep_in_fp32_modules or []
    if args.dtype == "fp16" and kept:
        utils.fail(f"--dtype fp16: mT5 overflows in float16 (transformers keeps its {', '.join(map(repr, kept))} "
                   "layers in float32 for that reason, which DeepSpeed's fp16 engine cannot): use --dtype bf16 (GPUs "
                   "from Ampere on) or --dtype fp32")


def preflight(args, datasets):
    """Everything about the files that can be checked before training starts (after check_flags), so that a
    set-up mistake costs no epoch: an output folder that can be written and holds no earlier run (unless
    --resume or --overwrite), an mT5 whose pickled weights (if any) hold only tensors, every split non-empty
    (and, for --task ISLR, of isolated signs) with its pose files on disk (with --skip_bad_samples: the missing
    ones announced, and at least one readable sample per split), at least one optimizer update per epoch, and
    a training step that fits in memory (check_step_memory).
    `datasets` maps each phase the run reads to its PoseDataset. Stops with one `error:` line at the first
    problem."""
    check_output_dir(args)
    longest = 0  # frames of the longest video read
    try:  # before transformers reads a pickled mT5 (its refusal is a traceback advising weights_only=False)
        check_mt5_weights(args.mt5_path)
    except ModelFileError as err:
        utils.fail(str(err))

    for phase, dataset in datasets.items():
        label_path = label_path_of(args.dataset, phase, getattr(args, f"{phase}_label_path"))
        if len(dataset) == 0:
            utils.fail(f"the {phase} split has no samples ({label_path}): check the label file")
        if args.task == "ISLR":
            check_isolated_signs(dataset, phase, label_path)
        missing = [s["pose_path"] for s in dataset.samples if not os.path.exists(s["pose_path"])]
        if missing:
            listed = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
            message = f"{len(missing)} of the {len(dataset)} {phase} pose files (labels {label_path}) are missing: {listed}"
            if not args.skip_bad_samples:
                utils.fail(f"{message}; check --pose_dir, or pass --skip_bad_samples to skip and count them")
            print(f"warning: {message}; --skip_bad_samples: they will be skipped and counted")
        if phase != "train" and not args.eval:  # evaluation reads them only after the first epoch
            longest = max(longest, check_pose_files(dataset, phase, label_path, args.skip_bad_samples))
        elif args.skip_bad_samples:  # at least one readable sample, or every epoch would train or score nothing
            first_error = None
            for sample in dataset.samples:
                try:
                    load_sample_pose(sample)
                    break
                except BadSampleError as err:
                    first_error = first_error or err
            else:
                utils.fail(f"every {phase} sample is unreadable (labels {label_path}; the first: {first_error}): "
                           f"--skip_bad_samples would leave nothing to {'train on' if phase == 'train' else 'score'}")

    if not args.eval:
        per_rank = math.ceil(len(datasets["train"]) / utils.world_size())  # DistributedSampler's share
        steps = utils.steps_per_epoch(math.ceil(per_rank / args.batch_size), args.quick_break)
        if steps < args.gradient_accumulation_steps:
            utils.fail(f"--gradient_accumulation_steps {args.gradient_accumulation_steps} is more than the {steps} "
                       f"training steps of an epoch ({len(datasets['train'])} samples, --batch_size {args.batch_size}"
                       + (f", --quick_break {args.quick_break}" if args.quick_break else "")
                       + "): no optimizer update would ever happen; lower --gradient_accumulation_steps")
        check_step_memory(args, max(longest, longest_video(datasets["train"])))


# An isolated sign's name: at most this many words (WLASL's longest: "every tuesday", "cochlear implant"), or of
# CJK characters (Chinese isolated-sign vocabularies' longest words have four).
MAX_SIGN_WORDS, MAX_SIGN_CHARACTERS = 3, 4
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def looks_like_a_sentence(text):
    """Whether a label text is longer than an isolated sign's name: more than MAX_SIGN_WORDS words or
    MAX_SIGN_CHARACTERS CJK characters."""
    return len(text.split()) > MAX_SIGN_WORDS or len(CJK.findall(text)) > MAX_SIGN_CHARACTERS


def check_isolated_signs(dataset, phase, label_path, looked_at=1000):
    """--task ISLR classifies each video as one of the label texts: on sentence labels every sentence becomes a
    class of its own and the run trains to top-1 0.00 without a word. Refuse a split whose entries (the first
    `looked_at`) are mostly sentences (looks_like_a_sentence), naming the label file and the flags."""
    texts = [dataset.samples[i]["text"] for i in range(min(len(dataset), looked_at))]
    sentences = [text for text in texts if looks_like_a_sentence(text)]
    if 2 * len(sentences) > len(texts):
        utils.fail(f"--task ISLR recognises one isolated sign per video, but {len(sentences)} of the {len(texts)} "
                   f"{phase} labels{' looked at' if len(texts) < len(dataset) else ''} in {label_path} are sentences "
                   f"(e.g. {sentences[0]!r}): use --task SLT to translate them, or point --{phase}_label_path at "
                   "isolated-sign labels (WLASL's)")


def check_pose_files(dataset, phase, label_path, skip_bad_samples):
    """Read every pose file of an evaluation split once (what each evaluation will read), before training: a
    corrupt or truncated file stops the run now, naming it, instead of after the first epoch. With
    --skip_bad_samples the bad ones are counted and announced, and a split with none readable is refused.
    Returns the longest video's number of frames."""
    bad, longest = [], 0
    with tqdm(dataset.samples, desc=f"check {phase} poses", disable=not utils.is_main_process(), leave=False) as bar:
        for sample in bar:
            try:
                longest = max(longest, len(load_sample_pose(sample)[0]))
            except BadSampleError as err:
                bad.append(err)
                if not skip_bad_samples:
                    break
    if bad and not skip_bad_samples:
        utils.fail(f"{bad[0]} ({phase} split, labels {label_path}); replace the file, or pass --skip_bad_samples "
                   "to skip and count it")
    if len(bad) == len(dataset):
        utils.fail(f"every {phase} sample is unreadable (labels {label_path}; the first: {bad[0]}): "
                   "--skip_bad_samples would leave nothing to score")
    if bad:
        print(f"warning: {len(bad)} of the {len(dataset)} {phase} pose files are unreadable (the first: {bad[0]}); "
              "--skip_bad_samples: they will be skipped and counted")
    return longest


# What an output folder holds once a run has saved in it.
RUN_FILES = ("log.txt", "checkpoint.pth", "best_checkpoint.pth", "deepspeed")


def check_output_dir(args):
    """--output_dir must be a folder we can write to, and, unless --resume or --overwrite, hold no earlier
    run (its checkpoints and log would be replaced). A training run that goes ahead removes the temporary
    files of earlier runs killed while writing (engine.remove_stale_temporaries). With --overwrite the earlier
    run's log and resumable state are removed here; its checkpoints are replaced by the new run's first save."""
    out = args.output_dir
    utils.ensure_writable_dir(out, "--output_dir")
    if args.eval:
        return
    earlier = [] if args.resume else [name for name in RUN_FILES if os.path.exists(os.path.join(out, name))]
    if earlier and not args.overwrite:
        utils.fail(f"--output_dir {out} holds an earlier run ({', '.join(earlier)}): pass --resume to continue it, "
                   "choose another --output_dir, or pass --overwrite to replace it")
    if not utils.is_main_process():
        return
    remove_stale_temporaries(out)
    if earlier:
        print(f"--overwrite: replacing the run in {out}")
        if os.path.exists(os.path.join(out, "log.txt")):
            os.remove(os.path.join(out, "log.txt"))
        shutil.rmtree(os.path.join(out, "deepspeed"), ignore_errors=True)


# ---------------------------------------------------------------------------- memory of a training step

# Values an ST-GCN block keeps for its backward per (frame, node): its 1x1 convolution's output (2 partitions),
# the graph product, BatchNorm, ReLU, the temporal convolution and its BatchNorm, the residual's convolution and
# BatchNorm, the sum: about 8 per output channel. Spatial blocks output 64, 128 and 256 channels, the temporal
# ones 3 x 256; plus the 64-channel input projection and the added body anchor (256).
POSE_VALUES_PER_NODE_FRAME = 8 * (64 + 128 + 256 + 3 * 256) + 64 + 256
PROMPT_TOKENS = 16  # the task prompt mT5's encoder reads before the pose frames


def step_activation_bytes(batch_size, frames, mt5_config, value_bytes=4):
    """What one training step keeps for its backward, in bytes: per sample, the ST-GCNs'
    frames x POSE_NODES x POSE_VALUES_PER_NODE_FRAME values, and per mT5 encoder layer 3 heads L^2 (attention
    scores, their softmax, dropout's output) + L (8 d_model + 4 heads d_kv + 4 d_ff) (norms, projections, the
    gated feed-forward) for L = PROMPT_TOKENS + frames, times `value_bytes` (4 in fp32, 2 in bf16/fp16). The decoder
    (tens of target tokens) is left out. Long videos: the L^2 term grows fastest, the ST-GCNs' term is larger up to
    a few thousand frames."""
    length = PROMPT_TOKENS + frames
    heads, d_model = mt5_config["num_heads"], mt5_config["d_model"]
    per_layer = 3 * heads * length**2 + length * (8 * d_model + 4 * heads * mt5_config["d_kv"] + 4 * mt5_config["d_ff"])
    per_sample = frames * POSE_NODES * POSE_VALUES_PER_NODE_FRAME + mt5_config["num_layers"] * per_layer
    return batch_size * per_sample * value_bytes


def available_memory_bytes():
    """Memory this rank may use: on a GPU the device's free memory (torch.cuda.mem_get_info), else the host's
    MemAvailable (/proc/meminfo) shared by the ranks of this node; None where neither can be read."""
    import torch
    if torch.cuda.is_available():
        return torch.cuda.mem_get_info()[0]
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            fields = dict(line.split(":", 1) for line in f)
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    return available // int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def check_step_memory(args, longest_frames, available=None):
    """Refuse, in one line naming the flags that lower it, a training step whose activations alone
    (step_activation_bytes for --batch_size videos of min(--max_length, longest_frames) frames, the longest video
    preflight read) exceed the memory available to this rank: instead of the kernel killing the run without a word
    (or the GPU's allocator failing) in its first long batch. The weights and optimizer state come on top."""
    config_path = os.path.join(args.mt5_path or "", "config.json")
    available = available if available is not None else available_memory_bytes()
    if not os.path.isfile(config_path) or available is None:
        return
    frames = min(args.max_length, longest_frames)
    try:
        with open(config_path, encoding="utf-8") as f:
            mt5_config = json.load(f)
        needed = step_activation_bytes(args.batch_size, frames, mt5_config, 2 if args.dtype in ("bf16", "fp16") else 4)
    except (OSError, ValueError, KeyError, TypeError):
        return  # a broken mT5 folder: loading mT5 names the file and what is wrong with it, in its own line
    if needed > available:
        utils.fail(f"a training step on --batch_size {args.batch_size} videos of {frames} frames (the longest video "
                   f"read, cut to --max_length {args.max_length}) needs about {needed / 2**30:.1f} GiB for its "
                   f"activations, more than the {available / 2**30:.1f} GiB available to this process: lower "
                   "--max_length (frames sampled per video) or --batch_size (raise --gradient_accumulation_steps "
                   "to keep the batch each update sees)")


def longest_video(dataset, looked_at=32):
    """Frames of the longest of the first `looked_at` readable videos of a split (a sample: reading every training
    video would cost as much as an epoch's loading)."""
    longest = 0
    for index in range(min(len(dataset), looked_at)):
        try:
            longest = max(longest, len(load_sample_pose(dataset.samples[index])[0]))
        except (BadSampleError, OSError):
            continue  # counted or refused by the checks above
    return longest
