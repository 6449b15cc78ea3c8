"""The two loops of a run: train_one_epoch (the step's values kept on the device, read every --log_every steps) and
evaluate (beam search on every rank, gathered back in dataset order, scored); fine_tuning.main drives them."""
import time
from collections import defaultdict
from typing import NamedTuple

import torch
from tqdm import tqdm

import utils
from SLRT_metrics import DEFAULT_BLEU_TOKENIZE


class NonFiniteLoss(RuntimeError):
    pass


def train_one_epoch(engine, criterion, loader, epoch, steps, log_every=50, skip_bad_samples=False, dtype="fp32",
                    run=None):
    """One epoch of `steps` batches of `loader` (utils.steps_per_epoch), each step's loss criterion(model outputs)
    (losses.TrainingLoss). The step's values (losses, alpha, curvature, health statistics...) stay on the device,
    summed there; they are read to the host, one sync that waits for every queued kernel, only every `log_every`
    steps and at the end of the epoch (to the progress bar and the wandb `run`). The loss is checked for non-finite
    values at every step, on the device: the run fails at the next read, naming the first bad step (the last good
    checkpoint is the previous epoch's). skip_bad_samples: the loader may yield batches emptied of unreadable
    samples. dtype: the training precision, whose peak FLOP/s the model FLOPs utilisation is measured against."""
    model = engine.module
    engine.train()
    skipped, skipped_steps, samples, flops, start = 0, 0, 0, 0.0, time.time()
    sums = StepSums()
    # closed when the loop ends or raises, so that an error line never continues the bar's line
    with tqdm(loader, total=steps, desc=f"train {epoch}", disable=not utils.is_main_process(),
              dynamic_ncols=True) as bar:
        for step, batch in enumerate(bar):
            if step >= steps:
                break
            skipped += batch["num_skipped"]
            if skip_bad_samples and not utils.all_ranks_true(len(batch["name"]) > 0):
                # --skip_bad_samples left some rank an empty batch: every rank skips the step together, since
                # a rank that went on alone would wait forever for the others in the gradient all-reduce
                skipped_steps += 1
                continue
            out = criterion(engine(batch))  # the model moves the batch to its device and precision
            sums.add(step, out)
            engine.step(out["loss"])  # backward; at an accumulation boundary both optimizers step
            samples += len(batch["name"])
            flops += model.training_flops(batch)
            if sums.count % log_every == 0 or step == steps - 1:
                means = sums.read(epoch, int(model.global_step))
                if run is not None:  # the means since the last read, with the learning rates
                    run.log({**{f"train/{k}": v for k, v in means.items()}, **engine.lrs(), "epoch": epoch})
                bar.set_postfix(loss=f"{sums.epoch_means()['loss']:.3f}", lr=f"{engine.lr():.2e}")
    skipped = sum(utils.gather_objects(skipped))  # every rank's
    if sums.count == 0:
        utils.fail(f"epoch {epoch} trained on no sample: all {skipped} samples it read were unreadable and skipped "
                   "(--skip_bad_samples); fix or remove the bad pose files. Stopping without saving this epoch")
    sums.read(epoch, int(model.global_step))  # what the last read did not see (none when it was the last step)
    stats = {**sums.epoch_means(), "lr": engine.lr()}
    if skipped:
        print(f"epoch {epoch}: skipped {skipped} bad samples (--skip_bad_samples)"
              + (f"; {skipped_steps} steps skipped on every rank because one rank had no readable sample"
                 if skipped_steps and utils.world_size() > 1 else ""))
    stats["skipped_samples"] = skipped
    stats["skipped_steps"] = skipped_steps
    stats.update(throughput(samples, flops, time.time() - start, dtype))
    print(f"epoch {epoch}: {stats['samples_per_s']:.1f} samples/s, {stats['tflops']:.2f} TFLOP/s"
          + (f", model FLOPs utilisation {100 * stats['mfu']:.1f} %" if "mfu" in stats else ""))
    return stats


class StepSums:
    """The training step's values summed on the device, and the first step whose loss was not finite (-1: none),
    read to the host in one transfer by `read`."""

    def __init__(self):
        self.sums, self.first_bad, self.count = {}, None, 0
        self.host, self.host_count = {}, 0

    def add(self, step, out):
        bad = torch.where(torch.isfinite(out["loss"].detach()), -1, step)
        self.first_bad = bad if self.first_bad is None else torch.where(self.first_bad >= 0, self.first_bad, bad)
        for key, value in out.items():
            value = value.detach().float()
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.count += 1

    def read(self, epoch, update):
        """The means since the previous read (a dict); raises NonFiniteLoss, on every rank together, when a loss
        was not finite."""
        if self.count == self.host_count:
            return {}
        keys = list(self.sums)
        values = torch.stack([self.first_bad.float(), *(self.sums[k] for k in keys)]).tolist()
        first_bad = int(values[0])
        if not utils.all_ranks_true(first_bad < 0):
            where = f"step {first_bad}" if first_bad >= 0 else "a step of another rank"
            raise NonFiniteLoss(f"non-finite loss at epoch {epoch}, {where} (read at optimizer update {update})")
        steps = self.count - self.host_count
        means = {k: (v - self.host.get(k, 0.0)) / steps for k, v in zip(keys, values[1:])}
        self.host, self.host_count = dict(zip(keys, values[1:])), self.count
        return means

    def epoch_means(self):
        """The epoch's means so far, as of the last read."""
        return {k: v / max(self.host_count, 1) for k, v in self.host.items()}


def throughput(samples, flops, seconds, dtype):
    """This rank's samples and FLOPs over the epoch's wall time: samples/s of the whole run (ranks take equal
    shares), achieved TFLOP/s per accelerator and, where its peak is known, model FLOPs utilisation."""
    stats = {"samples_per_s": samples * utils.world_size() / seconds, "tflops": flops / seconds / 1e12}
    peak = utils.peak_flops(dtype)
    if peak:
        stats["mfu"] = stats["tflops"] * 1e12 / peak
    return stats


class Predictions(NamedTuple):
    """A split's translations in dataset order (names, hypotheses, references) and the pose files of the samples
    skipped as unreadable (--skip_bad_samples)."""
    names: list
    hyps: list
    refs: list
    skipped: list


@torch.no_grad()
def evaluate(model, loader, task, num_beams=4, max_new_tokens=100, synced=False,
             bleu_tokenize=DEFAULT_BLEU_TOKENIZE):
    """Beam-search this rank's batches, gather all ranks' predictions back in dataset order, then score them with
    the task's metrics. Returns (metrics, Predictions), the same on every rank; the caller writes what it keeps.

    synced (ZeRO-3 with several ranks): every forward gathers the partitioned parameters from all ranks, so
    the ranks must run the same forwards: transformers keeps a finished rank stepping until all are done
    (synced_gpus), and a rank with fewer (or empty) batches generates on a stand-in batch whose output is dropped."""
    from SLRT_metrics import evaluate as score

    model.eval()
    split = loader.dataset.phase
    mine, stand_in = {}, None
    rounds = max(utils.gather_objects(len(loader))) if synced else len(loader)
    batches = iter(loader)
    # counted by hand (a synced rank may run more rounds than it has batches), closed when the loop ends or
    # raises: the bar ends at 100 % and an error line never continues it
    with tqdm(total=len(loader), desc=f"eval {split}", disable=not utils.is_main_process(), dynamic_ncols=True) as bar:
        for _ in range(rounds):
            batch = next(batches, None)
            if batch is not None:
                bar.update()
            if batch is None or not batch["name"]:
                if not synced:
                    continue
                if stand_in is None:
                    stand_in = first_readable_batch(loader)
                model.generate(stand_in, num_beams=num_beams, max_new_tokens=max_new_tokens, synced_gpus=True)
                continue
            preds = model.generate(batch, num_beams=num_beams, max_new_tokens=max_new_tokens, synced_gpus=synced)
            mine.update(zip(batch["name"], zip(preds, batch["text"])))
    results = {}
    for part in utils.gather_objects(mine):
        results.update(part)
    samples = loader.dataset.samples
    names = [s["name"] for s in samples if s["name"] in results]
    # each sample is in one batch of one rank: those not translated were skipped as unreadable
    skipped = [s["pose_path"] for s in samples if s["name"] not in results] if len(names) < len(samples) else []
    hyps, refs = [results[n][0] for n in names], [results[n][1] for n in names]
    metrics = score(hyps, refs, loader.dataset.dataset_name, task, bleu_tokenize=bleu_tokenize)
    metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    return metrics, Predictions(names, hyps, refs, skipped)


def evaluate_split(model, loader, split, args, synced=False):
    """evaluate() one split, then what the run keeps of it: the literature's pair of prediction files (CSL
    formatting, rank 0) and, with --skip_bad_samples, the skipped samples, listed and counted beside the scores."""
    from SLRT_metrics import format_for_dataset

    metrics, predictions = evaluate(model, loader, args.task, args.num_beams, args.max_tgt_len, synced,
                                    getattr(args, "bleu_tokenize", DEFAULT_BLEU_TOKENIZE))
    if predictions.skipped:
        utils.report_skipped(args.output_dir, split, predictions.skipped, len(loader.dataset))
    if utils.is_main_process():
        utils.write_predictions(args.output_dir, split, predictions.names,
                                format_for_dataset(predictions.hyps, args.dataset, is_reference=False),
                                format_for_dataset(predictions.refs, args.dataset, is_reference=True))
    if args.skip_bad_samples:
        metrics["skipped_samples"] = len(predictions.skipped)
    return metrics


def first_readable_batch(loader):
    """A one-sample batch of the loader's dataset's first readable sample (a stand-in for synced generation)."""
    item = next(item for item in map(loader.dataset.__getitem__, range(len(loader.dataset))) if item is not None)
    return loader.collate_fn([item])
