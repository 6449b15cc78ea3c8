"""Geo-Sign / Uni-Sign fine-tuning and evaluation under DeepSpeed.

    deepspeed --num_gpus 4 fine_tuning.py --dataset CSL_Daily --task SLT --use_hyperbolic ...
    python fine_tuning.py --dataset Demo --mt5_path pretrained_weight/mt5-demo ...   # one process, CPU
    python fine_tuning.py --eval --finetune out/best_checkpoint.pth ...

Set-up is in main(); the two loops, train_one_epoch() and evaluate(), are train_loop.py's. What is checked before
training starts is preflight.py's; the optimizers and checkpoints (save, resume) are engine.py's.
"""
import argparse
import dataclasses
import errno
import math
import os
import sys
import time

import torch
import transformers

import captions
import config
import losses
import model_io
import SLRT_metrics
import peers
import settings
import utils
from data_config import DataConfig
from engine import CheckpointError, Engine, Stopped, latest_tag, stop_on_signals
from model_config import ModelConfig
from preflight import check_flags, model_settings, preflight
from train_config import TrainConfig
# the loops, named here too (fine_tuning.train_one_epoch, ...)
from train_loop import (NonFiniteLoss, Predictions, StepSums, evaluate, evaluate_split,  # noqa: F401
                        first_readable_batch, throughput, train_one_epoch)

# The dev metric of each task (data_config.TASKS) that picks best_checkpoint.pth, and whether higher is better.
BEST_METRIC = {"SLT": ("bleu4", True), "ISLR": ("top1_per_instance", True), "CSLR": ("wer", False)}


def get_args_parser():
    p = argparse.ArgumentParser("Geo-Sign fine-tuning", add_help=False)
    settings.add_arguments(p, TrainConfig, unset=False)  # the engine's and the training loop's settings
    p.add_argument("--config", default=None, help="a run's config.yaml: its settings, under the flags given here")
    p.add_argument("--num_workers", type=int, default=4)
    p.add_argument("--output_dir", default="out/fine_tuning")
    p.add_argument("--finetune", default="", help="checkpoint (.pth) or model folder that initialises the model")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --output_dir")
    p.add_argument("--overwrite", action="store_true", help="start afresh in an --output_dir that holds an earlier run")
    p.add_argument("--eval", action="store_true", help="only evaluate --finetune on dev and test")
    settings.add_arguments(p, DataConfig, unset=False)  # the data's settings: dataset, task, paths, BLEU
    p.add_argument("--rgb_support", action="store_true", help="(the RGB branch is not part of this pose-only model)")
    p.add_argument("--save_one_batch", action="store_true", help="save the first training batch to one_batch.pt")
    captions.add_caption_flags(p)
    # model
    p.add_argument("--num_beams", type=int, default=4)
    p.add_argument("--max_tgt_len", type=int, default=100, help="new tokens at generation")
    settings.add_arguments(p, ModelConfig)  # the model's settings, unset (None) unless given
    # logging
    p.add_argument("--no_report", action="store_true", help="do not write report.html (the run in one page) at the end")
    p.add_argument("--wandb", action="store_true")
    p.add_argument("--wandb_project", default="Geo-Sign")
    p.add_argument("--wandb_run_name", default=None)
    p.add_argument("--local_rank", type=int, default=-1, help="set by the deepspeed launcher")
    return p


def default_settings():
    """Every flag's value when it is not given, the model's resolved (what a run's report compares against)."""
    return {**vars(get_args_parser().parse_args([])), **dataclasses.asdict(ModelConfig())}


def _torch_dtype(name):
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(name, torch.float32)


def build_loader(dataset, collator, args, train):
    """Training: a DistributedSampler shard per rank, reshuffled every epoch. Evaluation: the batches a
    single process would make, dealt out to the ranks in turn. Predictions depend on the batch (poses are
    padded to the batch's longest video and the temporal convolutions see that padding), so dealing out
    whole batches makes a multi-process evaluation score exactly like a single-process one, and no sample
    is duplicated to even out the shards."""
    common = dict(collate_fn=collator, num_workers=args.num_workers, pin_memory=torch.cuda.is_available(),
                  persistent_workers=args.num_workers > 0)
    if train:
        sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=utils.world_size(),
                                                      rank=utils.rank(), shuffle=True, seed=args.seed)
        # The workers' random frames come from seeds drawn from this generator, which set_epoch() reseeds:
        # fresh workers every epoch, so that a resumed run draws what an uninterrupted one draws
        # (persistent workers would carry their random state from epoch to epoch).
        return torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, sampler=sampler,
                                           generator=torch.Generator(), **dict(common, persistent_workers=False))
    batches = [list(range(i, min(i + args.batch_size, len(dataset)))) for i in range(0, len(dataset), args.batch_size)]
    mine = batches[utils.rank()::utils.world_size()]
    # Every DataLoader draws its workers' base seed when an iterator starts, from the global generator unless it
    # has its own: the persistent evaluation workers start once, in the first epoch a process evaluates, so that
    # draw shifted the training's random numbers differently in a resumed run. Their own generator, seeded from
    # (seed, split, rank), leaves the global one alone.
    split_stream = -1 - ("dev", "test").index(dataset.phase)  # apart from the epochs (>= 0)
    return torch.utils.data.DataLoader(dataset, batch_sampler=mine, **common,
                                       generator=torch.Generator().manual_seed(loader_seed(args.seed, split_stream)))


def loader_seed(seed, stream):
    """A DataLoader generator's seed from (seed, stream, rank) only (stream: the training epoch, or a negative
    number per evaluation split), below 2**63 (a torch seed is 64-bit): unchanged for every seed up to ~1e8, no
    overflow for larger ones."""
    return ((seed * 1_000_003 + stream) * 65_537 + utils.rank()) % 2**63


def set_epoch(loader, epoch, seed):
    """This epoch's shuffle and the seeds of its DataLoader workers, from (seed, epoch, rank) only, so that
    they do not depend on when the run started or was resumed."""
    loader.sampler.set_epoch(epoch)
    loader.generator.manual_seed(loader_seed(seed, epoch))


def load_splits(args):
    """{phase: PoseDataset} of the phases the run reads: dev and test (CSL-News has one held-out split, its last
    1 %: dev and test would score the same samples twice), and train unless --eval."""
    from datasets import build_dataset
    phases = ("dev",) if args.dataset == "CSL_News" else ("dev", "test")
    return {phase: build_dataset(args.dataset, phase, args, label_path=getattr(args, f"{phase}_label_path"),
                                 pose_dir=args.pose_dir)
            for phase in phases + (() if args.eval else ("train",))}


def main(args):
    from datasets import PoseCollator, pose_layout_warning
    from models import Uni_Sign

    check_flags(args)  # before anything starts: a bad flag costs no second
    rank, world = utils.init_distributed()
    peers.record_peers()  # so that a survivor can name the rank that died
    if rank != 0:
        transformers.utils.logging.disable_progress_bar()  # print from rank 0 only
    args.dtype = utils.resolve_dtype(args.dtype)
    # read (and, for a model folder, verified) before anything is built from it
    args.finetune = model_io.resolve_hub_id(args.finetune, "--finetune")  # a Hub id: its cached snapshot folder
    finetuned = model_io.read_model(args.finetune) if args.finetune else None
    # resolved once; every checkpoint's args record the values the model ran with
    resolved = model_settings(args, finetuned)
    vars(args).update({k: v for k, v in dataclasses.asdict(resolved).items() if k != "mt5_path"})
    args.mt5_path = args.mt5_path or model_io.folder_mt5_path(args.finetune) or config.mt5_path
    args.num_workers = min(args.num_workers, os.cpu_count() or 1)
    if args.eval and not args.finetune:
        print("--eval without --finetune: scoring the untrained model (a baseline)")
    datasets = load_splits(args)
    preflight(args, datasets)
    if utils.is_main_process():  # what --config reads to rerun or vary this run
        settings.write_config_file(args.output_dir, args, get_args_parser())
    print(f"{world} process(es), {args.dtype}, ZeRO stage {args.zero_stage}, output in {args.output_dir}")

    utils.set_seed(args.seed)  # the same initial model on every rank
    model = Uni_Sign(args, safetensors_only=args.mt5_path == model_io.folder_mt5_path(args.finetune))
    if args.compile:
        model.compile_pose_encoder()
    utils.set_seed(args.seed + rank)  # different random frames per rank
    if args.finetune:
        model_io.load_weights(model, args.finetune, drop_curvature=not args.eval, read=finetuned)
        del finetuned  # its tensors were copied into the model: not a second copy of the weights for the whole run
    collator = PoseCollator(model.mt5_tokenizer, args.dataset, max_target_len=args.max_target_tokens)
    eval_loaders = {split: build_loader(datasets[split], collator, args, train=False)
                    for split in datasets if split != "train"}
    metric, higher_is_better = BEST_METRIC[args.task]

    if args.eval:
        layout_warning = pose_layout_warning(datasets["test" if "test" in datasets else "dev"])
        if layout_warning and utils.is_main_process():
            print(layout_warning)
        model.to(utils.device(), dtype=_torch_dtype(args.dtype))
        for split, eval_loader in eval_loaders.items():
            print(f"{split}: " + format_metrics(evaluate_split(model, eval_loader, split, args)))
        return

    train_loader = build_loader(datasets["train"], collator, args, train=True)
    steps = utils.steps_per_epoch(len(train_loader), args.quick_break)
    updates_per_epoch = math.ceil(steps / args.gradient_accumulation_steps)
    total_updates = args.epochs * updates_per_epoch
    model.set_total_updates(total_updates)
    engine = Engine(model, TrainConfig.from_args(args), total_updates, int(args.warmup_epochs * updates_per_epoch),
                    record=vars(args))
    criterion = losses.TrainingLoss(model.config.label_smoothing)
    start_epoch, best = engine.resume(args.output_dir) if args.resume else (0, None)
    if start_epoch >= args.epochs:  # say so, rather than end with the old summary as if it had trained
        print(f"--resume: the run in {args.output_dir} has finished its {start_epoch} epochs, so there is nothing "
              "to train; pass a larger --epochs to continue it")
    if args.save_one_batch and utils.is_main_process():
        torch.save(next(iter(train_loader)), os.path.join(args.output_dir, "one_batch.pt"))

    run = utils.init_wandb(args)
    for epoch in range(start_epoch, args.epochs):
        set_epoch(train_loader, epoch, args.seed)
        start = time.time()
        try:
            train_stats = train_one_epoch(engine, criterion, train_loader, epoch, steps, args.log_every,
                                          args.skip_bad_samples, args.dtype, run)
        except NonFiniteLoss as err:
            kept = (f"the last good checkpoint is {os.path.join(args.output_dir, 'checkpoint.pth')}" if epoch > 0
                    else "this run saved no checkpoint (it stopped in its first epoch)")
            utils.fail(f"{err}; stopping: {kept}")
        warn_if_saturated(train_stats, epoch, args)
        utils.broadcast_buffers(engine.module)
        synced = args.zero_stage == 3 and world > 1  # generation on partitioned parameters
        scores = {split: evaluate_split(engine.module, eval_loader, split, args, synced)
                  for split, eval_loader in eval_loaders.items()}
        dev_score = scores["dev"][metric]
        is_best = best is None or (dev_score > best if higher_is_better else dev_score < best)
        best = dev_score if is_best else best
        engine.save(args.output_dir, epoch, best, is_best)
        record = {"epoch": epoch, **{f"train_{k}": v for k, v in train_stats.items()},
                  **{f"{split}_{k}": v for split, stats in scores.items() for k, v in stats.items()},
                  "best_dev_" + metric: best, "epoch_time_s": round(time.time() - start, 1)}
        if args.task == "SLT":  # which BLEU the scores are, as sacrebleu signs them
            record["bleu_signature"] = SLRT_metrics.bleu_signature(args.bleu_tokenize)
        if utils.is_main_process():
            utils.append_log(args.output_dir, record)
            print(f"epoch {epoch}: " + " | ".join(f"{split} {format_metrics(stats)}" for split, stats in scores.items()))
        if run is not None:
            run.log({k.replace("_", "/", 1): v for k, v in record.items() if k != "epoch"})
    if utils.is_main_process():
        plot = utils.plot_curves(args.output_dir, metric)
        summarise(args.output_dir, metric, plot)
        if args.task == "SLT":
            print(f"BLEU: {SLRT_metrics.bleu_signature(args.bleu_tokenize)}")
        if not args.no_report:
            import report_html
            report_html.report_at_end_of_run(args.output_dir, args.task, default_settings())
    if run is not None:
        run.finish()


def warn_if_saturated(train_stats, epoch, args):
    """One line when most part points sat at the ball's float32 limit this epoch: there the radial gradient is
    zero and the part weights are uniform, so the branch only aligns directions."""
    at_limit = train_stats.get("hyp_at_limit", 0.0)
    if at_limit > 0.5 and utils.is_main_process():
        remedy = ("--hyp_recipe stable keeps them off it" if args.hyp_recipe == "released"
                  else "a smaller --hyp_clip_r keeps them off it")
        print(f"warning: epoch {epoch}: {100 * at_limit:.0f} % of the part points sat at the Poincaré ball's float32 "
              f"limit (train_hyp_at_limit in log.txt): the hyperbolic branch is saturated; {remedy}")


def summarise(output_dir, metric, plot):
    """The run's closing lines: the best epoch's scores and where everything was written."""
    records = utils.read_log(output_dir)
    best = records[-1]["best_dev_" + metric]
    record = next(r for r in records if r.get(f"dev_{metric}") == best)
    for split in ("dev", "test"):
        scores = {k[len(split) + 1:]: v for k, v in record.items() if k.startswith(split + "_")}
        if scores:
            print(f"best epoch {record['epoch']} ({split}): {format_metrics(scores)}")
    print(f"checkpoints: {os.path.join(output_dir, 'best_checkpoint.pth')} (best dev {metric}), "
          f"{os.path.join(output_dir, 'checkpoint.pth')} (last epoch)")
    print(f"predictions of the last epoch: {os.path.join(output_dir, '{dev,test}_tmp_pres.txt')} (references: *_tmp_refs.txt)")
    print(f"log: {os.path.join(output_dir, 'log.txt')}; training curves: {plot}")


def format_metrics(stats):
    return " ".join(f"{k} {v}" if isinstance(v, int) else f"{k} {v:.2f}" for k, v in stats.items())


def run(args):
    """main() with the errors a user can fix reported as one clear line instead of a traceback."""
    from datasets import BadSampleError, LabelFileError
    from safe_pickle import UnsafePickleError
    try:
        with stop_on_signals():
            main(args)
    except Stopped as stop:
        tag = latest_tag(os.path.join(args.output_dir, "deepspeed"))
        where = (f"epoch {tag[len('epoch'):]} is the last resumable one; continue with the same command plus --resume"
                 if tag else "no epoch was saved, so there is nothing to resume")
        print(f"stopped by {stop.name}: {where}", file=sys.stderr)
        sys.exit(128 + stop.signum)
    except (CheckpointError, LabelFileError) as err:
        utils.fail(str(err))
    except BadSampleError as err:
        utils.fail(f"{error_message(err)}; pass --skip_bad_samples to skip and count such samples instead")
    except (UnsafePickleError, FileNotFoundError, model_io.ModelFileError) as err:
        utils.fail(error_message(err))
    except torch.OutOfMemoryError as err:  # a GPU's allocator: the batch, the videos or the beams are too large
        utils.fail(f"out of accelerator memory ({str(err).splitlines()[0][:160]}): lower --batch_size (raise "
                   "--gradient_accumulation_steps to keep the batch each update sees), --max_length (frames per "
                   f"video) or, if it happened while evaluating, --num_beams{resume_hint(args)}")
    except RuntimeError as err:  # after the RuntimeErrors above: a collective failing because a rank died
        if not peers.is_peer_death(err):
            raise
        utils.fail(f"{peers.peer_death_message(err)}{resume_hint(args) or '; no epoch was saved, so nothing resumes'}")
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # predictions, the log or the plot (checkpoints say so themselves: CheckpointError)
        utils.fail(f"could not write {err.filename or 'a file'}: the disk is full; free some space"
                   f"{resume_hint(args)}")


def resume_hint(args):
    """How a stopped training run continues, when it has saved resumable state ('' otherwise)."""
    tag = None if args.eval else latest_tag(os.path.join(args.output_dir, "deepspeed"))
    return f"; then continue with --resume (epoch {tag[len('epoch'):]} is the last resumable one)" if tag else ""


def error_message(err):
    """The error's own message. Raised in a DataLoader worker, it comes back with the worker's whole traceback
    as its message ("Caught X in DataLoader worker ... Original Traceback ..."); the last line holds the
    original one ("datasets.BadSampleError: <message>")."""
    message = str(err)
    if "Original Traceback" in message:
        message = message.rstrip().splitlines()[-1].split(": ", 1)[-1]
    return message


if __name__ == "__main__":
    parser = argparse.ArgumentParser("Geo-Sign fine-tuning", parents=[get_args_parser()])
    try:
        run(captions.resolve_captions(settings.parse_command_line(parser)))
    finally:
        utils.freeze_long_lived_objects()  # a quick exit
