"""The data settings declared once (data_config.DataConfig): the release's command lines parse to the values they
gave when fine_tuning.py wrote its data flags by hand, every flag keeps its spelling, default and accepted values,
and the tasks have one source."""
import argparse
import os

import pytest

import config
import fine_tuning
import pretraining
import settings
from data_config import TASKS, DataConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The data flags' values on a command line that gives none of them, as fine_tuning.py's hand-written flags had them.
DATA_DEFAULTS = {"dataset": "CSL_Daily", "task": "SLT", "max_length": 256, "train_label_path": None,
                 "dev_label_path": None, "test_label_path": None, "pose_dir": None, "skip_bad_samples": False,
                 "bleu_tokenize": "13a"}
TRAIN_SH = ["--batch_size", "8", "--gradient_accumulation_steps", "8", "--epochs", "40", "--opt", "adamw", "--lr",
            "1e-4", "--output_dir", "out/geo_sign_csl_daily", "--finetune", "checkpoints/pretraining.pth", "--dataset",
            "CSL_Daily", "--task", "SLT", "--use_hyperbolic", "--init_c", "1.0", "--hyp_text_emb_src", "decoder",
            "--hyp_text_cmp", "token", "--alpha", "0.7", "--wandb"]
# (the script whose command line it is, or None; the parser's module; the arguments; the values they must give)
RELEASE_COMMANDS = [
    ("train.sh", fine_tuning, TRAIN_SH, dict(epochs=40, lr=1e-4, use_hyperbolic=True, eval=False)),
    ("eval.sh", fine_tuning, TRAIN_SH + ["--eval"], dict(eval=True, finetune="checkpoints/pretraining.pth")),
    ("train_paper.sh", fine_tuning,
     "--batch_size 8 --gradient_accumulation_steps 8 --epochs 40 --opt adamw --lr 3e-5 --warmup-epochs 5 --min-lr 1e-6 "
     "--gradient_clipping 1.0 --dtype bf16 --zero_stage 2 --seed 42 --output_dir out/geo_sign_paper --finetune "
     "checkpoints/pretraining.pth --dataset CSL_Daily --task SLT --use_hyperbolic --init_c 1.5 --hyp_lr 1e-3 "
     "--hyp_text_emb_src decoder --hyp_text_cmp token --alpha 0.7 --wandb".split(), dict(lr=3e-5, init_c=1.5)),
    ("demo.sh", fine_tuning,
     "--dataset Demo --task SLT --mt5_path pretrained_weight/mt5-demo --output_dir out/demo --overwrite "
     "--use_hyperbolic --hyp_text_cmp token --hyp_text_emb_src decoder --alpha 0.7 --epochs 7 --batch_size 8 --lr 1e-3 "
     "--warmup-epochs 1 --min-lr 1e-5 --num_workers 0 --num_beams 4 --max_tgt_len 40 --seed 42".split(),
     dict(dataset="Demo", epochs=7, max_tgt_len=40)),
    ("pretrain.sh", pretraining,
     "--batch_size 16 --gradient_accumulation_steps 8 --epochs 20 --lr 3e-4 --quick_break 2048 --dataset CSL_News "
     "--task SLT --output_dir out/pretraining --wandb".split(), dict(dataset="CSL_News", quick_break=2048)),
    ("pretrain.sh", pretraining, [], dict(dataset="CSL_News", epochs=20, quick_break=2048)),  # its defaults
    # the README's data flags (`--{train,dev,test}_label_path`, `--pose_dir`, `--task`, `--bleu_tokenize`, ...)
    (None, fine_tuning, "--dataset How2Sign --dev_label_path dev.txt --task CSLR --bleu_tokenize none".split(),
     dict(dataset="How2Sign", dev_label_path="dev.txt", task="CSLR", bleu_tokenize="none")),
    (None, fine_tuning, "--dataset WLASL --task ISLR --max_length 64 --train_label_path a --test_label_path c "
     "--pose_dir p --skip_bad_samples".split(),
     dict(dataset="WLASL", task="ISLR", max_length=64, train_label_path="a", test_label_path="c", pose_dir="p",
          skip_bad_samples=True)),
]


@pytest.mark.parametrize("script, module, argv, expected", RELEASE_COMMANDS)
def test_the_release_command_lines_parse_to_the_values_they_gave(script, module, argv, expected):
    if script is not None:  # the flags are the script's (eval.sh runs train.sh's)
        text = "".join(open(os.path.join(ROOT, "script", name), encoding="utf-8").read()
                       for name in {script, "train.sh" if script == "eval.sh" else script})
        for flag in argv:
            assert not flag.startswith("--") or flag in text, f"{flag} is not in {script} any more: update this test"
    parsed = vars(module.get_args_parser().parse_args(argv))
    assert {name: parsed[name] for name in {**DATA_DEFAULTS, **expected}} == {**DATA_DEFAULTS, **expected}


def test_the_data_flags_keep_their_spellings_defaults_and_accepted_values():
    actions = {action.dest: action for action in fine_tuning.get_args_parser()._actions}
    assert {name: actions[name].option_strings for name in DATA_DEFAULTS} == {
        name: [f"--{name}"] for name in DATA_DEFAULTS}
    assert {name: actions[name].default for name in DATA_DEFAULTS} == DATA_DEFAULTS
    assert set(actions["dataset"].choices) == set(config.pose_dirs)
    assert set(actions["task"].choices) == {"SLT", "ISLR", "CSLR"}
    assert set(actions["bleu_tokenize"].choices) == {"13a", "none"}
    assert actions["skip_bad_samples"].nargs == 0  # a switch
    assert settings.defaults(DataConfig) == DATA_DEFAULTS and DataConfig() == DataConfig(**DATA_DEFAULTS)


@pytest.mark.parametrize("argv", [["--task", "slt"], ["--dataset", "CSL-Daily"], ["--bleu_tokenize", "intl"],
                                  ["--max_length", "12.5"]])
def test_a_value_outside_a_data_flags_choices_is_refused_by_the_parser(capsys, argv):
    with pytest.raises(SystemExit) as stop:
        fine_tuning.get_args_parser().parse_args(argv)
    assert stop.value.code == 2 and argv[0] in capsys.readouterr().err


def test_help_lists_the_data_flags(capsys):
    parser = argparse.ArgumentParser(parents=[fine_tuning.get_args_parser()])  # as `python fine_tuning.py` builds it
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--help"])
    help_text = capsys.readouterr().out
    assert stop.value.code == 0 and all(f"--{name}" in help_text for name in DATA_DEFAULTS)
    assert "frames per video (default: 256)" in " ".join(help_text.split())


def test_every_task_has_the_dev_metric_that_picks_the_best_checkpoint():
    assert set(fine_tuning.BEST_METRIC) == set(TASKS)


def test_max_length_is_checked_from_its_field():
    import preflight
    rules = [rule for rule in preflight.FLAG_RULES if rule[1] == "max_length"]
    assert len(rules) == 1 and rules[0] == settings.number_rules(DataConfig)[0]
    assert not rules[0][2](0) and rules[0][2](1)
