"""What fine_tuning.py checks before training starts, so that a set-up mistake costs no epoch: the numbers,
every split's labels and pose files, and the output folder. Each check stops with one `error:` line."""
import math
import os
import shutil

from tqdm import tqdm

import config
import utils
from datasets import BadSampleError, load_pose


def preflight(args, datasets):
    """Everything that can be checked before training starts, so that a set-up mistake costs no epoch: the
    numbers (epochs, batch size, optimizer updates per epoch), every split non-empty with its pose files on
    disk (with --skip_bad_samples: the missing ones announced, and at least one readable sample per split),
    and an output folder that can be written and holds no earlier run (unless --resume or --overwrite).
    `datasets` maps each phase the run reads to its PoseDataset. Stops with one `error:` line at the first problem."""
    if args.batch_size < 1:
        utils.fail(f"--batch_size must be at least 1 (got {args.batch_size})")
    if not args.eval:
        if args.epochs < 1:
            utils.fail(f"--epochs must be at least 1 (got {args.epochs}); to only evaluate, pass --eval")
        if args.gradient_accumulation_steps < 1:
            utils.fail(f"--gradient_accumulation_steps must be at least 1 (got {args.gradient_accumulation_steps})")
        if args.quick_break < 0:
            utils.fail(f"--quick_break must be 0 (no cap) or a number of steps (got {args.quick_break})")
    if args.resume and args.overwrite:
        utils.fail("--resume continues the run in --output_dir and --overwrite replaces it: pass one of them")
    check_output_dir(args)

    for phase, dataset in datasets.items():
        label_path = getattr(args, f"{phase}_label_path") or getattr(config, f"{phase}_label_paths")[args.dataset]
        if len(dataset) == 0:
            utils.fail(f"the {phase} split has no samples ({label_path}): check the label file")
        missing = [s["pose_path"] for s in dataset.samples if not os.path.exists(s["pose_path"])]
        if missing:
            listed = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
            message = f"{len(missing)} of the {len(dataset)} {phase} pose files (labels {label_path}) are missing: {listed}"
            if not args.skip_bad_samples:
                utils.fail(f"{message}; check --pose_dir, or pass --skip_bad_samples to skip and count them")
            print(f"warning: {message}; --skip_bad_samples: they will be skipped and counted")
        if phase != "train" and not args.eval:  # evaluation reads them only after the first epoch
            check_pose_files(dataset, phase, label_path, args.skip_bad_samples)
        elif args.skip_bad_samples:  # at least one readable sample, or every epoch would train or score nothing
            first_error = None
            for sample in dataset.samples:
                try:
                    load_pose(sample["pose_path"])
                    break
                except BadSampleError as err:
                    first_error = first_error or err
            else:
                utils.fail(f"every {phase} sample is unreadable (labels {label_path}; the first: {first_error}): "
                           f"--skip_bad_samples would leave nothing to {'train on' if phase == 'train' else 'score'}")

    if not args.eval:
        per_rank = math.ceil(len(datasets["train"]) / utils.world_size())  # DistributedSampler's share
        steps = math.ceil(per_rank / args.batch_size)
        if args.quick_break:
            steps = min(steps, args.quick_break)
        if steps < args.gradient_accumulation_steps:
            utils.fail(f"--gradient_accumulation_steps {args.gradient_accumulation_steps} is more than the {steps} "
                       f"training steps of an epoch ({len(datasets['train'])} samples, --batch_size {args.batch_size}"
                       + (f", --quick_break {args.quick_break}" if args.quick_break else "")
                       + "): no optimizer update would ever happen; lower --gradient_accumulation_steps")


def check_pose_files(dataset, phase, label_path, skip_bad_samples):
    """Read every pose file of an evaluation split once (what each evaluation will read), before training: a
    corrupt or truncated file stops the run now, naming it, instead of after the first epoch. With
    --skip_bad_samples the bad ones are counted and announced, and a split with none readable is refused."""
    bad = []
    with tqdm(dataset.samples, desc=f"check {phase} poses", disable=not utils.is_main_process(), leave=False) as bar:
        for sample in bar:
            try:
                load_pose(sample["pose_path"])
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


# What an output folder holds once a run has saved in it.
RUN_FILES = ("log.txt", "checkpoint.pth", "best_checkpoint.pth", "deepspeed")


def check_output_dir(args):
    """--output_dir must be a folder we can write to, and, unless --resume or --overwrite, hold no earlier
    run (its checkpoints and log would be replaced). With --overwrite the earlier run's log and resumable
    state are removed here; its checkpoints are replaced by the new run's first save."""
    out = args.output_dir
    if os.path.exists(out) and not os.path.isdir(out):
        utils.fail(f"--output_dir {out} is a file, not a folder: choose another --output_dir")
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".write-test-{os.getpid()}")
        with open(probe, "w", encoding="utf-8"):
            pass
        os.remove(probe)
    except OSError as err:
        utils.fail(f"--output_dir {out} cannot be written ({err.strerror}): choose another --output_dir")
    if args.eval or args.resume:
        return
    earlier = [name for name in RUN_FILES if os.path.exists(os.path.join(out, name))]
    if earlier and not args.overwrite:
        utils.fail(f"--output_dir {out} holds an earlier run ({', '.join(earlier)}): pass --resume to continue it, "
                   "choose another --output_dir, or pass --overwrite to replace it")
    if earlier and utils.is_main_process():
        print(f"--overwrite: replacing the run in {out}")
        if os.path.exists(os.path.join(out, "log.txt")):
            os.remove(os.path.join(out, "log.txt"))
        shutil.rmtree(os.path.join(out, "deepspeed"), ignore_errors=True)
