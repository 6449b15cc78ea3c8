"""Ablation of the hyperbolic branch: pose-only vs Geo-Sign token / pooled, as released vs the remedies, and the
geometry against its controls (--configs geometry).

    python script/ablate_hyperbolic.py [--dataset Demo] [--seeds 2] [--epochs N] [--out DIR] [--configs NAME ...]
    python script/ablate_hyperbolic.py --quick                     # few samples and steps: what the tests run
    python script/ablate_hyperbolic.py --dataset CSL_Daily --finetune checkpoints/pretraining.pth   # Table 1

Every configuration of CONFIGS trains with the same seeds, data, recipe and epochs (fine_tuning.py in a process
of its own per run, into DIR/<config>/seed<S>/, its output in stdout.txt). A run's test scores are those of its
best-dev epoch: the log's record of that epoch, and its test predictions are the last epoch's files when that
epoch was the best, else those of `fine_tuning.py --eval --finetune best_checkpoint.pth` (DIR/.../best_eval/).
The Poincare plot of each hyperbolic run's best checkpoint goes beside it (embeddings/poincare_disk.png).
DIR/ablation.md and DIR/ablation.json: one row per configuration with dev and test BLEU-4 / ROUGE-L (mean and
sd over seeds), the last epoch's train_hyp_at_limit and train_hyp_w_entropy (mean over seeds; '-' where the
log lacks them), and against its reference (the released configuration of its mode; pose against
token_released) SLRT_metrics.paired_bootstrap of the test BLEU-4 difference. The bootstrap pairs sentences,
so the seeds are pooled: both systems' test predictions of all seeds, concatenated in the same seed order.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import config
import SLRT_metrics
import utils
from make_demo import safe_load_labels, write_labels
from models import STABLE_RECIPE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TOKEN = ["--use_hyperbolic", "--hyp_text_cmp", "token"]
POOLED = ["--use_hyperbolic", "--hyp_text_cmp", "pooled"]
# name -> fine_tuning.py flags beyond the recipe's. A name is <mode>_<variant>; its reference is <mode>_released
# (pose's: token_released); a geometry's (<mode>_<geometry>) is <mode>_stable, the same recipe on the Poincaré ball.
CONFIGS = {
    "pose": [],
    "token_released": TOKEN,
    "token_stable": TOKEN + ["--hyp_recipe", "stable"],
    "pooled_released": POOLED,
    "pooled_stable": POOLED + ["--hyp_recipe", "stable"],
    "token_clip": TOKEN + ["--hyp_clip_r", "1.0"],
    "token_meru": TOKEN + ["--hyp_scale", "meru"],
    "token_norm": TOKEN + ["--hyp_input_norm"],
    "pooled_gyro": POOLED + ["--hyp_midpoint", "gyro"],
    "token_stable_soft": TOKEN + ["--hyp_recipe", "stable", "--hyp_clip", "soft"],
    # stable as it was before the part-weighted pairs joined it (an explicit flag wins over the recipe)
    "token_stable_uniform": TOKEN + ["--hyp_recipe", "stable", "--hyp_pair_weights", "uniform"],
}
# Is it the geometry? The stable recipe's settings (all apply to every space) in Lorentz space and in the two
# controls without negative curvature.
GEOMETRY_CONTROLS = ("lorentz", "euclidean", "sphere")
CONFIGS.update({f"{mode}_{space}": flags + ["--hyp_recipe", "stable", "--hyp_geometry", space]
                for mode, flags in (("token", TOKEN), ("pooled", POOLED)) for space in GEOMETRY_CONTROLS})
DEFAULT_CONFIGS = ("pose", "token_released", "token_stable", "pooled_released", "pooled_stable")
# --configs NAME of a set runs all of its configurations (and their references).
CONFIG_SETS = {"default": DEFAULT_CONFIGS,
               "geometry": ("pose", "token_stable", *(f"token_{space}" for space in GEOMETRY_CONTROLS),
                            "pooled_stable", *(f"pooled_{space}" for space in GEOMETRY_CONTROLS))}
# The training recipe per dataset: Demo is script/demo.sh's, CSL_Daily the paper's (script/train_paper.sh) in one
# process; `branch`: the hyperbolic branch's flags, given to the configurations that have it (decoder text features).
RECIPES = {
    "Demo": dict(epochs=7, flags=["--task", "SLT", "--batch_size", "8", "--lr", "1e-3", "--warmup-epochs", "1",
                                  "--min-lr", "1e-5", "--num_workers", "0", "--num_beams", "4", "--max_tgt_len", "40"],
                 branch=["--alpha", "0.7", "--hyp_text_emb_src", "decoder"]),
    "CSL_Daily": dict(epochs=40, flags=["--task", "SLT", "--batch_size", "8", "--gradient_accumulation_steps", "8",
                                        "--lr", "3e-5", "--warmup-epochs", "5", "--min-lr", "1e-6", "--hyp_lr", "1e-3"],
                      branch=["--init_c", "1.5", "--alpha", "0.7", "--hyp_text_emb_src", "decoder"]),
}
FIRST_SEED = 42  # demo.sh's and the paper's; the k-th seed is FIRST_SEED + k
# --quick: dev and test cut to QUICK_SAMPLES each, QUICK_STEPS training steps an epoch, a short beam search.
# Short videos and sentences (4 frames, 10 new tokens, greedy): the tests' cost, not a measurement.
QUICK_SAMPLES, QUICK_STEPS = 2, 1
QUICK_FLAGS = ["--quick_break", str(QUICK_STEPS), "--batch_size", "2", "--max_length", "4", "--num_beams", "1",
               "--max_tgt_len", "10"]
# Geo-Sign's Table 1, CSL-Daily test (BLEU-4, ROUGE-L): printed beside ours with --dataset CSL_Daily.
PAPER_TABLE1 = {"pose": (25.61, 54.92), "pooled_released": (27.17, 57.75), "token_released": (27.42, 57.95)}
SCORES = ("dev_bleu4", "dev_rouge", "test_bleu4", "test_rouge")
HEALTH = ("hyp_at_limit", "hyp_w_entropy")
DATA_FLAGS = ("mt5_path", "pose_dir", "train_label_path", "dev_label_path", "test_label_path", "finetune")


def get_args_parser():
    p = argparse.ArgumentParser("Ablation of Geo-Sign's hyperbolic branch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="Demo", help=f"one of {', '.join(RECIPES)} (each has its recipe)")
    p.add_argument("--seeds", type=int, default=2,
                   help=f"runs per configuration, seeds {FIRST_SEED}, {FIRST_SEED + 1}, ...")
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's (Demo 7, CSL_Daily 40)")
    p.add_argument("--out", default=os.path.join("out", "ablation"), help="folder of the runs and the tables")
    p.add_argument("--configs", nargs="+", default=["default"],
                   help="configurations or sets to run ("
                        f"{'; '.join(f'{k}: ' + ' '.join(v) for k, v in CONFIG_SETS.items())}"
                        f"; more: {' '.join(n for n in CONFIGS if n not in DEFAULT_CONFIGS)}); each one's reference "
                        "runs too")
    p.add_argument("--quick", action="store_true", help=f"dev/test cut to {QUICK_SAMPLES} samples, {QUICK_STEPS} "
                                                        "steps an epoch, 2 epochs unless --epochs")
    p.add_argument("--resamples", type=int, default=1000, help="paired bootstrap resamples")
    p.add_argument("--reuse", action="store_true",
                   help="keep the finished runs of an earlier call into the same --out (same command and recipe): "
                        "adding a configuration trains only it")
    for flag in DATA_FLAGS:
        p.add_argument(f"--{flag}", default=None, help="passed on to fine_tuning.py")
    return p


def reference_of(name):
    """The configuration `name` is compared with: its mode's released one (pose: token_released); None for those."""
    mode, _, variant = name.partition("_")
    if name == "pose":
        return "token_released"
    reference = f"{mode}_stable" if variant in GEOMETRY_CONTROLS else f"{mode}_released"
    return None if reference == name else reference


def chosen_configs(names):
    """--configs expanded (a set of CONFIG_SETS -> its configurations) with each one's reference, and the reference's
    reference, in CONFIGS order."""
    unknown = [n for n in names if n not in CONFIG_SETS and n not in CONFIGS]
    if unknown:
        utils.fail(f"--configs: unknown configuration {unknown[0]!r}; choose from {' '.join(CONFIG_SETS)} "
                   f"{' '.join(CONFIGS)}")
    wanted = {n for name in names for n in CONFIG_SETS.get(name, (name,))}
    for _ in range(2):
        wanted |= {reference_of(n) for n in wanted if reference_of(n)}
    return [n for n in CONFIGS if n in wanted]


def check_args(args):
    """Every flag valid before the first run starts, else one `error:` line; relative paths made absolute (the
    runs work in the repository root)."""
    if args.dataset not in RECIPES:
        utils.fail(f"--dataset {args.dataset}: the ablation has recipes for {' and '.join(RECIPES)}")
    for flag, value in (("--seeds", args.seeds), ("--epochs", args.epochs), ("--resamples", args.resamples)):
        if value is not None and value < 1:
            utils.fail(f"{flag} must be at least 1 (got {value})")
    args.configs = chosen_configs(args.configs)
    for flag in DATA_FLAGS + ("out",):
        if getattr(args, flag):
            setattr(args, flag, os.path.abspath(getattr(args, flag)))
    if args.dataset == "Demo" and not args.mt5_path:
        args.mt5_path = config.demo_mt5_path
    for flag in DATA_FLAGS:
        path = getattr(args, flag)
        if path and not os.path.exists(path):
            fix = "; build the demo with python script/make_demo.py" if args.dataset == "Demo" else ""
            utils.fail(f"--{flag} {path} does not exist{fix}")
    args.epochs = args.epochs or (2 if args.quick else RECIPES[args.dataset]["epochs"])
    utils.ensure_writable_dir(args.out, "--out")


def cut_eval_labels(args):
    """--quick: the dev and test label files cut to their first QUICK_SAMPLES samples, under DIR/quick_labels/."""
    folder = os.path.join(args.out, "quick_labels")
    os.makedirs(folder, exist_ok=True)
    for phase in ("dev", "test"):
        source = getattr(args, f"{phase}_label_path") or getattr(config, f"{phase}_label_paths")[args.dataset]
        if not os.path.isfile(source):
            utils.fail(f"--{phase}_label_path {source} does not exist; build the demo with python script/make_demo.py")
        labels = safe_load_labels(source)
        target = os.path.join(folder, f"labels.{phase}")
        write_labels(target, dict(list(labels.items())[:QUICK_SAMPLES]))
        setattr(args, f"{phase}_label_path", target)


def data_flags(args):
    """The data and initialisation flags the user gave (with --quick: the cut label files), for fine_tuning.py."""
    return [part for flag in DATA_FLAGS if flag != "finetune" and getattr(args, flag)
            for part in (f"--{flag}", getattr(args, flag))]


def fine_tuning_command(args, name, seed, output_dir, finetune):
    """`python fine_tuning.py` with the recipe, the data, the configuration's flags and the run's seed."""
    recipe = RECIPES[args.dataset]
    branch = recipe["branch"] if "--use_hyperbolic" in CONFIGS[name] else []
    return [sys.executable, "fine_tuning.py", "--dataset", args.dataset, *recipe["flags"], *branch,
            *(QUICK_FLAGS if args.quick else []), *data_flags(args), *CONFIGS[name],
            *(["--finetune", finetune] if finetune else []), "--epochs", str(args.epochs), "--seed", str(seed),
            "--output_dir", output_dir, "--overwrite"]


def run_logged(cmd, log_path):
    """Run cmd from the repository root with its output (stdout and stderr) streamed into log_path; exit code."""
    with open(log_path, "w", encoding="utf-8") as log:
        return subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode


def run_step(run, cmd, log_path, what):
    """One command of a run; a failure stops the ablation with one `error:` line (before any table is written)."""
    code = run(cmd, log_path)
    if code != 0:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
        last = next((line for line in reversed(lines) if "error" in line.lower()), lines[-1] if lines else "")
        utils.fail(f"{what} failed (exit {code}): {last[:300]}; its whole output: {log_path}")


def finished_run(run_dir, identity, epochs):
    """True when run_dir holds a run of this very command that logged all its epochs (--reuse)."""
    try:
        with open(os.path.join(run_dir, "run.json"), encoding="utf-8") as f:
            same = json.load(f) == json.loads(json.dumps(identity))
        return same and len(utils.read_log(run_dir)) == epochs
    except (OSError, ValueError):
        return False


def best_record(records):
    """The log record of the epoch that wrote best_checkpoint.pth: the first with the best dev BLEU-4."""
    best = records[-1]["best_dev_bleu4"]
    return next(r for r in records if r.get("dev_bleu4") == best)


def train_and_score(args, name, seed, run):
    """Train one configuration with one seed; its best-dev scores, last-epoch health and test predictions."""
    run_dir = os.path.join(args.out, name, f"seed{seed}")
    os.makedirs(run_dir, exist_ok=True)
    cmd = fine_tuning_command(args, name, seed, run_dir, args.finetune)
    # what makes a finished run reusable: the same command and the same meaning of --hyp_recipe stable
    identity = {"command": cmd[1:], "stable_recipe": STABLE_RECIPE if "stable" in CONFIGS[name] else None}
    reused = args.reuse and finished_run(run_dir, identity, args.epochs)
    if not reused:
        run_step(run, cmd, os.path.join(run_dir, "stdout.txt"), f"{name} seed {seed}: fine_tuning.py")
        with open(os.path.join(run_dir, "run.json"), "w", encoding="utf-8") as f:
            json.dump(identity, f)
    records = utils.read_log(run_dir)
    best = best_record(records)
    predictions_dir = run_dir
    if best is not records[-1]:  # the prediction files are the last epoch's: score the best checkpoint again
        predictions_dir = os.path.join(run_dir, "best_eval")
        checkpoint = os.path.join(run_dir, "best_checkpoint.pth")
        cmd = fine_tuning_command(args, name, seed, predictions_dir, checkpoint) + ["--eval"]
        if not (reused and os.path.isfile(os.path.join(predictions_dir, "test_tmp_pres.txt"))):
            run_step(run, cmd, os.path.join(run_dir, "best_eval.txt"), f"{name} seed {seed}: --eval of {checkpoint}")
    result = {"seed": seed, "dir": run_dir, "epochs": len(records), "best_epoch": best["epoch"],
              **{k: best[k] for k in SCORES},
              "test_predictions": os.path.join(predictions_dir, "test_tmp_pres.txt"),
              "test_references": os.path.join(predictions_dir, "test_tmp_refs.txt"),
              "hyp": {k[len("train_"):]: v for k, v in records[-1].items() if k.startswith("train_hyp_")}}
    if "--use_hyperbolic" in CONFIGS[name] and "--hyp_geometry" not in CONFIGS[name]:  # a plot of the ball
        drawn = os.path.join(run_dir, "embeddings", "poincare_disk.png")
        result["plot"] = drawn if reused and os.path.isfile(drawn) else plot_embeddings(args, name, seed, run_dir, run)
    return result


def plot_embeddings(args, name, seed, run_dir, run):
    """script/plot_embeddings.py on the run's best checkpoint and test split; the plot's path."""
    cmd = [sys.executable, os.path.join("script", "plot_embeddings.py"), "--finetune",
           os.path.join(run_dir, "best_checkpoint.pth"), "--dataset", args.dataset, "--split", "test",
           "--output_dir", os.path.join(run_dir, "embeddings"),
           "--max_samples", str(QUICK_SAMPLES if args.quick else 200)]
    cmd += [part for flag, option in (("mt5_path", "--mt5_path"), ("pose_dir", "--pose_dir"),
                                      ("test_label_path", "--label_path")) if getattr(args, flag)
            for part in (option, getattr(args, flag))]
    run_step(run, cmd, os.path.join(run_dir, "plot.txt"), f"{name} seed {seed}: plot_embeddings.py")
    return os.path.join(run_dir, "embeddings", "poincare_disk.png")


def mean_sd(values):
    """(mean, sample sd) of the values; sd None for one value, both None when any value is missing."""
    if not values or any(v is None for v in values):
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def pooled_test_texts(runs):
    """The test predictions and references of all seeds, concatenated in seed order, with their sample names."""
    names, hyps, refs = [], [], []
    for run in runs:
        run_names, run_hyps = SLRT_metrics.read_reference_file(run["test_predictions"])
        names += [f"{run['seed']}/{n}" for n in run_names]
        hyps += run_hyps
        refs += SLRT_metrics.read_reference_file(run["test_references"])[1]
    return names, hyps, refs


def compare(system_runs, reference_runs, resamples):
    """Paired bootstrap of the pooled test predictions, system minus reference (the files are already formatted
    for the dataset, so no formatting again)."""
    names, hyps, refs = pooled_test_texts(system_runs)
    reference_names, reference_hyps, _ = pooled_test_texts(reference_runs)
    if names != reference_names:
        raise RuntimeError("the two configurations' test predictions list different samples")
    result = SLRT_metrics.paired_bootstrap(reference_hyps, hyps, refs, resamples=resamples, seed=0)
    return {"bleu4": result["bleu4"], "rouge": result["rouge"], "samples": result["samples"], "resamples": resamples}


def summarise(args, runs):
    """{config: row} of the tables: flags, reference, runs, score means and sds, health, comparison, paper."""
    rows = {}
    for name, config_runs in runs.items():
        row = {"flags": CONFIGS[name], "reference": reference_of(name), "runs": config_runs}
        for key in SCORES:
            row[key], row[key + "_sd"] = mean_sd([r[key] for r in config_runs])
        for key in HEALTH:
            row[key] = mean_sd([r["hyp"].get(key) for r in config_runs])[0]
        row["vs_reference"] = compare(config_runs, runs[row["reference"]], args.resamples) if row["reference"] else None
        if args.dataset == "CSL_Daily":
            row["paper_test_bleu4_rouge"] = PAPER_TABLE1.get(name)
        rows[name] = row
    compared = [name for name, row in rows.items() if row["vs_reference"]]
    for name, p in zip(compared, SLRT_metrics.holm([rows[n]["vs_reference"]["bleu4"]["p_value"] for n in compared])):
        rows[name]["vs_reference"]["bleu4"]["p_holm"] = p  # corrected for every comparison of the table
    return rows


def number(value, sd=None, digits=2):
    if value is None:
        return "-"
    return f"{value:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None else "")


def markdown(args, rows):
    """The ablation table, with what its columns mean."""
    paper = args.dataset == "CSL_Daily"
    head = ["config", "dev BLEU-4", "dev ROUGE-L", "test BLEU-4", "test ROUGE-L", "at limit", "w entropy", "vs",
            "Δ test BLEU-4 [95 % CI]", "p", "p (Holm)"] + (["paper test BLEU-4 / ROUGE-L"] if paper else [])
    lines = [f"# Hyperbolic-branch ablation: {args.dataset}, seeds {', '.join(map(str, seeds(args)))}, "
             f"{args.epochs} epochs{' (--quick)' if args.quick else ''}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in rows.items():
        vs = row["vs_reference"]
        cells = [f"{name}", *(number(row[k], row[k + "_sd"]) for k in SCORES),
                 *(number(row[k], digits=3) for k in HEALTH), row["reference"] or "-",
                 f"{vs['bleu4']['difference']:+.2f} [{vs['bleu4']['ci95'][0]:+.2f}, {vs['bleu4']['ci95'][1]:+.2f}]"
                 if vs else "-", f"{vs['bleu4']['p_value']:.3f}" if vs else "-",
                 f"{vs['bleu4']['p_holm']:.3f}" if vs else "-"]
        if paper:
            published = row["paper_test_bleu4_rouge"]
            cells.append("{:.2f} / {:.2f}".format(*published) if published else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Scores: mean ± sd over the seeds, each run's best-dev epoch (test scored by the best-dev "
              "checkpoint). at limit / w entropy: the last epoch's train_hyp_at_limit and train_hyp_w_entropy, mean "
              "over seeds ('-': not logged). Δ: test BLEU-4 of the row minus its reference (vs), paired bootstrap "
              f"({args.resamples} resamples, seed 0) over the test sentences of all seeds, concatenated in the same "
              "seed order for both systems; p: two-sided; p (Holm): corrected by Holm's step-down method for the table's "
              "comparisons.", "",
              "Flags beyond the recipe:", ""]
    lines += [f"- {name}: `{' '.join(row['flags']) or '(no hyperbolic branch)'}`" for name, row in rows.items()]
    return "\n".join(lines) + "\n"


def seeds(args):
    return [FIRST_SEED + k for k in range(args.seeds)]


def main(argv=None, run=run_logged):
    """Parse and check the flags, train every configuration and seed, write the tables. `run(cmd, log_path)` runs
    one command and returns its exit code (the tests pass one that forks a prepared interpreter)."""
    args = get_args_parser().parse_args(argv)
    check_args(args)
    if args.quick:
        cut_eval_labels(args)
    jobs = [(name, seed) for name in args.configs for seed in seeds(args)]
    print(f"{len(jobs)} runs ({', '.join(args.configs)} x seeds {', '.join(map(str, seeds(args)))}), "
          f"{args.epochs} epochs each, into {args.out}")
    runs = {name: [] for name in args.configs}
    for k, (name, seed) in enumerate(jobs, start=1):
        start = time.time()
        print(f"[{k}/{len(jobs)}] {name} seed {seed}: training ({os.path.join(args.out, name, f'seed{seed}')})",
              flush=True)
        result = train_and_score(args, name, seed, run)
        runs[name].append(result)
        print(f"[{k}/{len(jobs)}] {name} seed {seed}: best dev epoch {result['best_epoch']}: dev BLEU-4 "
              f"{result['dev_bleu4']:.2f}, test BLEU-4 {result['test_bleu4']:.2f}, at limit "
              f"{number(result['hyp'].get('hyp_at_limit'), digits=3)} ({time.time() - start:.0f} s)", flush=True)
    rows = summarise(args, runs)
    table = markdown(args, rows)
    settings = {k: getattr(args, k) for k in ("dataset", "epochs", "quick", "resamples", "finetune")}
    with open(os.path.join(args.out, "ablation.json"), "w", encoding="utf-8") as f:
        json.dump({**settings, "seeds": seeds(args), "configs": rows}, f, indent=1)
    with open(os.path.join(args.out, "ablation.md"), "w", encoding="utf-8") as f:
        f.write(table)
    print(table + f"written: {os.path.join(args.out, 'ablation.md')} and ablation.json")


if __name__ == "__main__":
    try:
        main()
    finally:
        utils.freeze_long_lived_objects()  # a quick exit
