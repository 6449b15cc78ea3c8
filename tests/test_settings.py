"""Settings declared once (settings.py, models.ModelConfig): the command line generated from the fields, unset
flags resolved once, saved records of every generation read as they ran (ModelConfig.from_saved), and settings
that cannot take effect refused in one line before anything is read."""
import argparse
import dataclasses

import pytest

import fine_tuning
import settings
from in_process import fine_tuning_refuses
from models import STABLE_RECIPE, ModelConfig

NOWHERE = ["--mt5_path", "no_mt5", "--pose_dir", "no_poses", "--output_dir"]


@pytest.mark.parametrize("flags, needle", [
    (["--use_hyperbolic", "--hyp_clip", "soft"], "--hyp_clip soft has no effect without a clipping radius"),
    (["--use_hyperbolic", "--hyp_text_cmp", "pooled", "--hyp_pair_weights", "parts"],
     "--hyp_pair_weights parts weighs token mode's part pairs, and --hyp_text_cmp pooled"),
    (["--hyp_recipe", "stable"], "--hyp_recipe stable has no effect without --use_hyperbolic"),
    (["--use_hyperbolic", "--hyp_midpoint", "gyro"], "--hyp_midpoint gyro sets the parts' mean of pooled/attn"),
])
def test_a_setting_that_cannot_take_effect_is_one_error_line(capsys, tmp_path, flags, needle):
    line = fine_tuning_refuses(capsys, flags + NOWHERE + [tmp_path / "out"])[0]
    assert needle in line
    assert not (tmp_path / "out").exists()  # refused before anything was read or made


def test_branch_settings_of_a_pose_only_run_are_said_unused_in_one_line(capsys):
    import preflight
    args = fine_tuning.get_args_parser().parse_args(["--hyp_dim", "64", "--hyp_text_emb_src", "decoder"])
    config = preflight.model_settings(args)
    assert not config.use_hyperbolic and config.ineffective() is None
    assert capsys.readouterr().out.splitlines() == [
        "note: --hyp_dim 64, --hyp_text_emb_src decoder: the hyperbolic branch's settings, unused without "
        "--use_hyperbolic"]


def test_soft_clip_with_a_radius_and_the_recipes_knobs_are_accepted():
    parse = fine_tuning.get_args_parser().parse_args
    for flags in (["--use_hyperbolic", "--hyp_clip", "soft", "--hyp_clip_r", "1"],
                  ["--use_hyperbolic", "--hyp_clip", "soft", "--hyp_recipe", "stable"],  # the recipe's radius
                  ["--use_hyperbolic", "--hyp_text_cmp", "attn", "--hyp_recipe", "stable"]):
        assert ModelConfig.from_args(parse(flags)).ineffective() is None, flags


def test_the_command_line_is_generated_from_the_fields():
    parser = fine_tuning.get_args_parser()
    actions = {action.dest: action for action in parser._actions}
    for field in settings.declared(ModelConfig):
        if not field.metadata["command_line"]:
            assert field.name not in actions
            continue
        action = actions[field.name]
        assert action.default is None and action.help.startswith(field.metadata["help"][:20])
        assert (list(action.choices) if action.choices else None) == (
            list(settings.choices_of(field)) if field.metadata["choices"] else None)
    assert parser.parse_args(["--hyp_dim", "8"]).hyp_dim == 8


def test_from_saved_reads_each_generation_of_saved_settings():
    hyperbolic_keys = ["hyp_proj_body.proj.weight", "pose_proj.weight"]
    # the release: an argparse Namespace, flags of its own, no recipe, maybe no use_hyperbolic
    release = argparse.Namespace(hyp_dim=256, hyp_text_cmp="token", hyp_text_emb_src="decoder", alpha=0.7,
                                 init_c=1.0, batch_size=8, rgb_support=True)
    config = ModelConfig.from_saved(release, hyperbolic_keys)
    assert config.use_hyperbolic and config.hyp_text_emb_src == "decoder" and config.hyp_recipe == "released"
    assert ModelConfig.from_saved(release, ["pose_proj.weight"]).use_hyperbolic is False
    # ours, written while the recipe replaced knobs at their released values (no settings_format)
    older = {"use_hyperbolic": True, "hyp_text_cmp": "pooled", "hyp_recipe": "stable", "hyp_midpoint": "frechet",
             "hyp_clip_r": 0.0, "hyp_scale": "released", "hyp_input_norm": False, "hyp_clip": "hard",
             "hyp_pair_weights": "parts", "mt5_path": None}
    config = ModelConfig.from_saved(older)
    assert (config.hyp_midpoint, config.hyp_clip_r, config.hyp_input_norm) == ("gyro", 2.0, True)
    assert config.hyp_pair_weights == "uniform"  # recorded, but pooled mode never used it
    # today's checkpoint args and a model folder's config.json: the values as recorded
    today = dataclasses.asdict(ModelConfig(use_hyperbolic=True, hyp_text_cmp="pooled", hyp_recipe="stable",
                                           hyp_midpoint="frechet"))
    assert ModelConfig.from_saved(today).hyp_midpoint == "frechet"
    assert ModelConfig.from_saved({**today, "dataset": "Demo", "num_beams": 4}) == ModelConfig.from_saved(today)
    # a pose-only record's branch settings cannot take effect: read as their defaults, the same model
    pose_only = ModelConfig.from_saved({"use_hyperbolic": False, "hyp_dim": 64, "hyp_recipe": "stable"})
    assert pose_only == ModelConfig() and pose_only.ineffective() is None


def test_stable_fills_only_what_is_unset():
    config = ModelConfig(use_hyperbolic=True, hyp_text_cmp="pooled", hyp_recipe="stable", hyp_scale="released")
    assert config.hyp_scale == "released" and config.hyp_midpoint == STABLE_RECIPE["hyp_midpoint"]
    assert ModelConfig(**dataclasses.asdict(config)) == config  # resolved once: a second pass changes nothing


# ---------------------------------------------------------------------------- --opt, config.yaml and --config

def test_the_release_spelling_of_the_optimizer_is_accepted_and_another_refused(capsys, tmp_path):
    import preflight
    args = fine_tuning.get_args_parser().parse_args(["--opt", "AdamW"])
    preflight.check_flags(args)
    assert args.opt == "adamw"
    line = fine_tuning_refuses(capsys, ["--opt", "sgd"] + NOWHERE + [tmp_path / "out"])[0]
    assert "--opt sgd" in line and "adamw" in line


def test_a_config_file_rereads_a_run_and_the_command_line_overrides_it(tmp_path):
    parser = fine_tuning.get_args_parser()
    first = settings.parse_command_line(parser, ["--use_hyperbolic", "--hyp_recipe", "stable", "--lr", "1e-3",
                                                 "--opt-betas", "0.8", "0.9", "--dataset", "Demo"])
    settings.write_config_file(str(tmp_path), first, parser)
    text = (tmp_path / "config.yaml").read_text(encoding="utf-8")
    assert "lr: 0.001" in text and "local_rank" not in text and "resume" not in text
    again = settings.parse_command_line(fine_tuning.get_args_parser(), ["--config", str(tmp_path / "config.yaml")])
    assert {k: v for k, v in vars(again).items() if k != "config"} == {
        k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(first).items() if k != "config"}
    varied = settings.parse_command_line(fine_tuning.get_args_parser(),
                                         ["--config", str(tmp_path / "config.yaml"), "--lr", "5e-4"])
    assert varied.lr == 5e-4 and varied.use_hyperbolic and varied.hyp_recipe == "stable"


@pytest.mark.parametrize("content, needle", [
    ("lr: 0.1\nlearning_rate: 0.1\n", "unknown setting 'learning_rate'"),
    ("hyp_midpoint: einstein\n", "hyp_midpoint: 'einstein' is not one of frechet, gyro"),
    ("epochs: many\n", "epochs: invalid literal"),
    ("use_hyperbolic: 3\n", "use_hyperbolic: expected true or false"),
    ("opt_betas: 0.9\n", "opt_betas: expected a list of 2 values"),
    ("- lr\n", "expected `name: value` lines"),
])
def test_a_bad_config_file_is_one_error_line_naming_the_key(capsys, tmp_path, content, needle):
    path = tmp_path / "config.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SystemExit):
        settings.parse_command_line(fine_tuning.get_args_parser(), ["--config", str(path)])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(path) in errors[0] and needle in errors[0], errors


# ---------------------------------------------------------------------------- --finetune's saved settings

SAVED_TOKEN_MODEL = {"args": {**dataclasses.asdict(ModelConfig(use_hyperbolic=True, hyp_text_emb_src="decoder")),
                              "dataset": "Demo"}, "state": {"hyp_proj_body.proj.weight": None}}
# Uni-Sign's stage-1 checkpoint: an argparse Namespace without use_hyperbolic; its weights tell there is no branch
SAVED_POSE_MODEL = {"args": argparse.Namespace(batch_size=16, dataset="CSL_News", label_smoothing=0.2),
                    "state": {"pose_proj.weight": None}}


def settings_for(flags, finetuned):
    import preflight
    args = fine_tuning.get_args_parser().parse_args(flags + ["--finetune", "saved.pth"])
    return preflight.model_settings(args, finetuned)


def test_the_saved_model_is_built_and_a_contradicting_flag_is_one_line(capsys):
    assert settings_for(["--eval"], SAVED_TOKEN_MODEL) == ModelConfig.from_saved(SAVED_TOKEN_MODEL["args"])
    with pytest.raises(SystemExit):
        settings_for(["--eval", "--hyp_text_cmp", "pooled"], SAVED_TOKEN_MODEL)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == ["error: --finetune saved.pth was saved with --hyp_text_cmp token, and this command gives "
                      "--hyp_text_cmp pooled: leave the flag out (the evaluation builds the saved model)"]


def test_fine_tuning_may_change_the_loss_and_add_the_branch_each_said_in_one_line(capsys):
    evaluated = settings_for(["--eval", "--alpha", "0.5"], SAVED_TOKEN_MODEL)  # the release's eval.sh does this
    assert evaluated.alpha == 0.7 and "--alpha 0.5 (saved: 0.7) only shape the training loss" in capsys.readouterr().out
    tuned = settings_for(["--alpha", "0.5"], SAVED_TOKEN_MODEL)
    assert tuned.alpha == 0.5 and "fine-tuning with --alpha 0.5 (saved: 0.7)" in capsys.readouterr().out
    branch = settings_for(["--use_hyperbolic", "--hyp_text_cmp", "pooled", "--hyp_recipe", "stable"], SAVED_POSE_MODEL)
    assert branch.use_hyperbolic and branch.hyp_text_cmp == "pooled" and branch.hyp_midpoint == "gyro"
    assert "--use_hyperbolic adds one" in capsys.readouterr().out
    no_settings = {"args": {}, "state": {"encoder.weight": None}}  # not this model's: loading it is refused later
    assert settings_for(["--eval", "--use_hyperbolic"], no_settings) == ModelConfig(use_hyperbolic=True)
