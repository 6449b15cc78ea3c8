"""Model settings (one default each), model folders (export, load, refuse broken ones), --finetune checks
and the Poincaré-disk plot."""
import argparse
import contextlib
import errno
import dataclasses
import io
import json
import os
import shutil
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import export_model
import model_io
from data_config import DataConfig
from models import ModelConfig, Uni_Sign
from e2e import base_args, read_log, read_predictions, run  # small_demo: conftest.py
from in_process import fine_tuning_refuses
from conftest import cut_demo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------- one default per setting

def test_flags_take_their_defaults_from_the_settings_dataclasses():
    import fine_tuning
    cli = fine_tuning.get_args_parser().parse_args([])
    assert ModelConfig.from_args(cli) == ModelConfig()
    assert DataConfig.from_args(cli) == DataConfig()
    for field in dataclasses.fields(DataConfig):
        assert getattr(cli, field.name) == getattr(DataConfig(), field.name), field.name
    for field in dataclasses.fields(ModelConfig):  # unset until resolved once, so a recipe can fill it
        assert getattr(cli, field.name, None) is None, field.name


def test_a_model_built_from_a_namespace_has_the_command_lines_settings(tiny_mt5_path):
    import fine_tuning
    cli = fine_tuning.get_args_parser().parse_args(["--mt5_path", tiny_mt5_path, "--use_hyperbolic"])
    from_namespace = Uni_Sign(SimpleNamespace(mt5_path=tiny_mt5_path, use_hyperbolic=True))
    assert from_namespace.config == ModelConfig.from_args(cli) == Uni_Sign(cli).config
    assert from_namespace.config.hyp_text_emb_src == "token"  # the model once said "decoder"
    release = argparse.Namespace(**{**vars(cli), "hyp_dim": 64, "unknown_release_flag": 1})
    assert Uni_Sign(release).hyp_proj_body.proj.out_features == 64
    with pytest.raises(ValueError, match="hyp_text_cmp"):
        ModelConfig(hyp_text_cmp="mean")


# ---------------------------------------------------------------------------- tensors with aliases

def test_shared_tensors_are_stored_once_and_every_name_comes_back(tmp_path):
    shared = torch.randn(3, 4)
    curvature = torch.tensor(0.5)
    state = {"left.w": shared, "right.w": shared, "ball.c": curvature, "proj.ball.c": curvature,
             "other": torch.randn(2), "count": torch.tensor(3)}
    path = tmp_path / "w.safetensors"
    model_io.save_tensors(state, str(path))
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        assert sorted(f.keys()) == ["ball.c", "count", "left.w", "other"]
    loaded = model_io.load_tensors(str(path))
    assert sorted(loaded) == sorted(state)
    for name in state:
        assert torch.equal(loaded[name], state[name]) and loaded[name].dtype == state[name].dtype
    assert loaded["left.w"] is loaded["right.w"] and loaded["ball.c"] is loaded["proj.ball.c"]


# ---------------------------------------------------------------------------- export and load

@pytest.fixture(scope="module")
def io_demo(small_demo, tmp_path_factory):
    """small_demo with dev and test cut to 4 samples: the runs here check weights and files, not scores, and each
    epoch's beam search over dev and test is most of a short run's time."""
    return cut_demo(small_demo, tmp_path_factory.mktemp("io_demo"), 4)


def export(*argv):
    """script/export_model.py's command line, in this process; returns what it printed."""
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        export_model.main([str(a) for a in argv])
    return printed.getvalue()


@pytest.fixture(scope="module")
def exported(token_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("io_export") / "model"
    assert "exported" in export(token_run / "checkpoint.pth", folder)
    return folder


def no_pickles(folder):
    """Every file of the folder, asserting none is a pickle or a torch zip archive."""
    files = [os.path.join(p, n) for p, _, names in os.walk(folder) for n in names]
    for path in files:
        with open(path, "rb") as f:
            head = f.read(2)
        assert not path.endswith((".bin", ".pth", ".pt", ".pkl", ".ckpt")), path
        assert head[:1] != b"\x80" and head != b"PK", path  # pickle protocol 2+, torch.save's zip
    return files


def test_export_round_trip_gives_the_same_model_and_translations(token_run, exported, io_demo):
    files = no_pickles(exported)
    assert {"config.json", "model.safetensors", "README.md"} <= {os.path.basename(f) for f in files}
    assert os.path.isfile(exported / "mt5" / "model.safetensors")
    saved = torch.load(token_run / "checkpoint.pth", map_location="cpu", weights_only=True)
    model = Uni_Sign.from_pretrained(str(exported))
    state = model.state_dict()
    assert sorted(state) == sorted(saved["model"])
    for name, tensor in state.items():
        assert torch.equal(tensor, saved["model"][name]), name
    # the aliases are the same tensors again, as in a freshly built model
    for names in (["proj_linear.left.weight", "proj_linear.right.weight"], ["manifold.isp_c", "hyp_proj_text.manifold.isp_c"],
                  ["mt5_model.shared.weight", "mt5_model.encoder.embed_tokens.weight"]):
        assert len({state[n].data_ptr() for n in names}) == 1, names
    assert model.config.hyp_text_emb_src == "decoder" and model.config.use_hyperbolic

    config = json.loads((exported / "config.json").read_text(encoding="utf-8"))
    assert config["data"]["dataset"] == "Demo" and config["model"]["hyp_text_cmp"] == "token"
    card = (exported / "README.md").read_text(encoding="utf-8")
    front = card.split("---\n")[1]
    assert "license:" in front and '- "zh"' in front and "sign-language-translation" in front
    dev_bleu4 = read_log(token_run)[-1]["dev_bleu4"]
    assert f"value: {round(dev_bleu4, 2)}" in front and "from_pretrained" in card and "@inproceedings" in card

    from_pth = Uni_Sign.from_pretrained(str(token_run / "checkpoint.pth"), mt5_path=io_demo["mt5_path"])
    from datasets import PoseCollator, build_dataset
    dataset = build_dataset("Demo", "dev", DataConfig(), label_path=io_demo["label_paths"]["dev"],
                            pose_dir=io_demo["pose_dir"])
    batch = PoseCollator(model.mt5_tokenizer, "Demo")([dataset[i] for i in range(4)])
    assert model.generate(batch, num_beams=2, max_new_tokens=12) == from_pth.generate(batch, num_beams=2, max_new_tokens=12)


def test_eval_of_a_folder_scores_exactly_like_the_checkpoint(token_run, exported, io_demo, tmp_path, capsys):
    """Two evaluations of dev and test (4 samples each), each the whole command line run in this process."""
    import fine_tuning
    outputs = {}
    for name, source in (("pth", token_run / "checkpoint.pth"), ("folder", exported)):
        args = base_args(io_demo, tmp_path / name) + ["--eval", "--finetune", str(source)]
        if name == "folder":  # the folder brings its own mT5 and its model's settings: no model flag
            for flag, values in (("--mt5_path", 1), ("--use_hyperbolic", 0), ("--hyp_text_cmp", 1),
                                 ("--hyp_text_emb_src", 1)):
                index = args.index(flag)
                del args[index:index + 1 + values]
        capsys.readouterr()
        fine_tuning.run(fine_tuning.get_args_parser().parse_args(args))
        out, err = capsys.readouterr()
        assert not [line for line in (out + err).splitlines()
                    if line.lower().startswith("warning") or line.strip().startswith(("unexpected", "missing:"))]
        assert "missing keys 0, unexpected keys 0" in out
        outputs[name] = [line for line in out.splitlines() if line.startswith(("dev:", "test:"))]
        assert len(outputs[name]) == 2
        assert len(read_predictions(tmp_path / name / "dev_tmp_pres.txt")) == 4
    assert outputs["pth"] == outputs["folder"]
    for split in ("dev", "test"):
        assert read_predictions(tmp_path / "pth" / f"{split}_tmp_pres.txt") == \
            read_predictions(tmp_path / "folder" / f"{split}_tmp_pres.txt")


def test_release_format_checkpoint_exports_and_loads(token_run, io_demo, tmp_path, capsys):
    saved = torch.load(token_run / "checkpoint.pth", map_location="cpu", weights_only=True)
    release = {"model": saved["model"], "epoch": 39, "max_accuracy": 27.4,
               "args": argparse.Namespace(**{**saved["args"], "mt5_path": "/the/release/machine/mt5-base"})}
    torch.save(release, tmp_path / "best.pth")
    folder = tmp_path / "release_model"
    export(tmp_path / "best.pth", folder, "--mt5_path", io_demo["mt5_path"])
    no_pickles(folder)
    model = Uni_Sign.from_pretrained(str(folder))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved["model"][name]), name
    assert json.loads((folder / "config.json").read_text())["training"]["epoch"] == 39
    capsys.readouterr()
    with pytest.raises(SystemExit) as again:
        export(tmp_path / "best.pth", folder)
    assert again.value.code == 1 and "exists" in capsys.readouterr().err  # nothing is overwritten


def test_export_that_cannot_write_is_one_line_and_leaves_nothing(token_run, tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    with pytest.raises(SystemExit):  # was a NotADirectoryError traceback
        export(token_run / "checkpoint.pth", a_file / "model")
    assert f"error: could not write {a_file / 'model'}: Not a directory" in capsys.readouterr().err

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(model_io, "save_tensors", disk_full)
    with pytest.raises(SystemExit):
        export(token_run / "checkpoint.pth", tmp_path / "model")
    err = capsys.readouterr().err
    assert f"error: could not write {tmp_path / 'model'}: the disk is full" in err and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]  # no half-written folder, no temporary one


def test_a_planted_pickle_in_a_deepspeed_folder_is_refused_before_deepspeed_reads_it(token_run, tmp_path, capsys):
    """zero_to_fp32 unpickles without restriction (it ran the planted code); the export checks the tag first."""
    run = tmp_path / "run"
    shutil.copytree(token_run, run)
    tag = (run / "deepspeed" / "latest").read_text().strip()
    victim = next((run / "deepspeed" / tag).glob("*optim_states.pt"))
    marker = tmp_path / "ran"
    torch.save({"optimizer_state_dict": _RunsCode(str(marker))}, victim)
    with pytest.raises(SystemExit):
        export(run / "deepspeed", tmp_path / "model")
    assert capsys.readouterr().err.startswith(f"error: export: refusing {victim}")
    assert not marker.exists() and not (tmp_path / "model").exists()
    (run / "deepspeed" / "latest").unlink()
    with pytest.raises(SystemExit):  # was DeepSpeed's ValueError traceback
        export(run / "deepspeed", tmp_path / "model")
    assert f"no saved epoch (its 'latest' file is missing" in capsys.readouterr().err


def test_deepspeed_state_exports_its_fp32_master_weights(token_run, tmp_path):
    folder = tmp_path / "from_zero"
    export(token_run / "deepspeed", folder)
    saved = torch.load(token_run / "checkpoint.pth", map_location="cpu", weights_only=True)["model"]
    state = Uni_Sign.from_pretrained(str(folder)).state_dict()
    for name, tensor in state.items():  # fp32 training: the master weights are the module's weights
        assert torch.equal(tensor, saved[name]), name


@pytest.mark.parametrize("damage", ["truncate", "tamper", "plant"])
def test_a_damaged_folder_is_refused_naming_the_file(exported, tmp_path, damage):
    folder = tmp_path / "copy"
    shutil.copytree(exported, folder)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "truncate":
        weights.write_bytes(bytes(data[: len(data) // 2]))
        victim = weights
    elif damage == "tamper":
        data[-100] ^= 0x01  # one bit of one weight
        weights.write_bytes(bytes(data))
        victim = weights
    else:
        victim = folder / "mt5" / "pytorch_model.bin"
        victim.write_bytes(b"\x80\x04planted")
    with pytest.raises(model_io.ModelFileError, match=str(victim)):
        Uni_Sign.from_pretrained(str(folder))
    with pytest.raises(model_io.ModelFileError, match="truncated or modified" if damage != "plant" else "not listed"):
        model_io.read_model(str(folder))


def test_safetensors_errors_are_named(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(model_io.ModelFileError, match=str(path)):
        model_io.load_tensors(str(path))


# ---------------------------------------------------------------------------- --finetune checks

def test_finetune_with_another_shape_is_one_error_line_naming_the_flag(token_run, io_demo, tmp_path, capsys):
    """The whole command line, in this process (as are the next test's)."""
    args = base_args(io_demo, tmp_path, epochs=1, steps=1) + ["--finetune", str(token_run / "checkpoint.pth"),
                                                              "--hyp_dim", "32"]
    line, _, err = fine_tuning_refuses(capsys, args)
    assert err.strip().splitlines()[-1] == line  # the last thing said
    assert line.startswith("error: --finetune") and str(token_run / "checkpoint.pth") in line
    assert "saved with --hyp_dim 256, and this command gives --hyp_dim 32: leave the flag out" in line


def test_finetune_with_an_unrelated_checkpoint_is_refused(io_demo, tmp_path, capsys):
    torch.save({"model": {f"encoder.layer{i}.weight": torch.zeros(2, 2) for i in range(5)}, "args": {}},
               tmp_path / "other.pth")
    args = base_args(io_demo, tmp_path / "out", epochs=1, steps=1) + ["--eval", "--finetune", str(tmp_path / "other.pth")]
    line = fine_tuning_refuses(capsys, args)[0]
    assert "not a checkpoint of this model" in line and str(tmp_path / "other.pth") in line
    assert not os.path.exists(tmp_path / "out" / "dev_tmp_pres.txt")  # nothing was scored


# ---------------------------------------------------------------------------- the Poincaré-disk plot

@pytest.mark.parametrize("c", [0.3, 1.0, 2.5])
def test_projection_keeps_the_origin_and_each_distance_to_it(c):
    generator = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(40, 16, generator=generator), dim=-1)
    radii = torch.rand(40, 1, generator=generator) * 0.97 / c ** 0.5  # inside the ball of radius 1/sqrt(c)
    points = torch.cat([torch.zeros(1, 16), directions * radii]).double()
    from plot_embeddings import project_to_disk
    xy, energy = project_to_disk(points, c)
    assert xy.shape == (41, 2) and 0 < energy <= 1
    assert np.allclose(xy[0], 0.0)  # the origin stays the origin
    disk_radius = np.linalg.norm(xy, axis=1)
    assert (disk_radius < 1).all()
    np.testing.assert_allclose(disk_radius, c ** 0.5 * points.norm(dim=-1).numpy(), atol=1e-9)  # |y| = sqrt(c)|x|
    order = np.argsort(points.norm(dim=-1).numpy()[1:])
    assert (np.diff(disk_radius[1:][order]) >= -1e-12).all()  # radius ordering preserved
    ball_distance = 2 / c ** 0.5 * np.arctanh(c ** 0.5 * points.norm(dim=-1).numpy())
    np.testing.assert_allclose(2 / c ** 0.5 * np.arctanh(disk_radius), ball_distance, rtol=1e-9, atol=1e-9)
    # points in a 2-D subspace keep their angles too
    flat = torch.zeros(3, 16, dtype=torch.float64)
    flat[0, 0], flat[1, 1], flat[2, :2] = 0.5, 0.3, torch.tensor([0.2, -0.2])
    xy_flat, energy_flat = project_to_disk(flat, 1.0)
    assert abs(energy_flat - 1) < 1e-12
    assert abs(float(np.dot(xy_flat[0], xy_flat[1]))) < 1e-9


def test_plot_script_draws_every_sample_from_a_folder(exported, small_demo, tmp_path, capsys):
    """plot_embeddings.py's command line, in this process (the next test runs it as a user does)."""
    import plot_embeddings
    out = tmp_path / "plot"
    capsys.readouterr()
    plot_embeddings.main(plot_embeddings.get_args_parser().parse_args([
        "--finetune", str(exported), "--split", "dev", "--output_dir", str(out),
        "--label_path", small_demo["label_paths"]["dev"], "--pose_dir", small_demo["pose_dir"]]))
    said = capsys.readouterr().out
    assert "12 samples x 5 points" in said  # the dataset comes from the folder's config
    for name in ("poincare_disk.png", "poincare_disk.pdf", "embeddings_2d.npz", "embeddings_2d.csv"):
        assert os.path.getsize(out / name) > 1000, name
    saved = np.load(out / "embeddings_2d.npz")
    import hyperbolic
    at_limit = (np.linalg.norm(saved["xy"][:, :4], axis=-1) >= hyperbolic.PROJECTION_LIMIT - 1e-4).mean()
    assert f"{100 * at_limit:.0f} % of the part points at the float32 projection limit" in said
    assert saved["xy"].shape == (12, 5, 2) and (np.linalg.norm(saved["xy"], axis=-1) < 1).all()
    assert saved["part_weights"].shape == (12, 4) and np.allclose(saved["part_weights"].sum(axis=1), 1, atol=1e-5)
    assert len((out / "embeddings_2d.csv").read_text().splitlines()) == 1 + 12 * 5
    import matplotlib.image
    assert matplotlib.image.imread(out / "poincare_disk.png").shape[1] > 1000


def test_plot_script_refuses_a_model_without_the_hyperbolic_branch(token_run, small_demo, tmp_path):
    saved = torch.load(token_run / "checkpoint.pth", map_location="cpu", weights_only=True)
    pose_only = {k: v for k, v in saved["model"].items() if k.startswith(("mt5_model.", "proj_linear", "gcn_modules",
                                                                         "fusion_gcn", "pose_proj", "part_para"))}
    torch.save({"model": pose_only, "args": {**saved["args"], "use_hyperbolic": False}}, tmp_path / "unisign.pth")
    result = run([sys.executable, "script/plot_embeddings.py", "--finetune", str(tmp_path / "unisign.pth"),
                  "--output_dir", str(tmp_path / "plot"), "--mt5_path", small_demo["mt5_path"]])
    assert result.returncode == 1 and "no hyperbolic branch" in result.stderr and "Traceback" not in result.stderr


def test_plot_script_checks_its_numbers_first(tmp_path):
    for flags in (["--batch_size", "0"], ["--max_samples", "-1"]):
        result = run([sys.executable, "script/plot_embeddings.py", "--finetune", str(tmp_path / "model"),
                      "--output_dir", str(tmp_path / "plot"), *flags])
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert "error: --batch_size must be at least 1 and --max_samples 0 (all) or more" in result.stderr


@pytest.mark.parametrize("dtype, zero_stage, hyperbolic, task", [("bf16", 2, True, "SLT"), ("fp32", 3, False, "ISLR")])
def test_deepspeed_state_of_bf16_and_zero3_runs_exports(deepspeed_run, tmp_path, dtype, zero_stage, hyperbolic, task):
    """bf16: the folder holds DeepSpeed's fp32 master weights, of which checkpoint.pth holds the bf16 rounding
    (on CPUs DeepSpeed's master partitions were seen to hold bf16 values themselves: then both are equal).
    ZeRO-3: the partitions are gathered into whole tensors. The runs are test_training's (conftest.py)."""
    run_dir = deepspeed_run(dtype, zero_stage, hyperbolic, task)
    export(run_dir / "deepspeed", tmp_path / "model")
    saved = torch.load(run_dir / "checkpoint.pth", map_location="cpu", weights_only=True)["model"]
    state = Uni_Sign.from_pretrained(str(tmp_path / "model")).state_dict()
    assert set(saved) <= set(state)
    for name in set(state) - set(saved):  # ZeRO-3's checkpoint.pth names the hands' shared modules once
        assert ".right." in name and torch.equal(state[name], saved[name.replace(".right.", ".left.")]), name
    weights = [k for k, v in saved.items() if v.is_floating_point() and v.dim() >= 2 and k != "hyp_attn_W"]
    for name in weights:
        if dtype == "bf16":
            assert torch.equal(state[name].bfloat16().float(), saved[name]), name
        else:
            assert torch.equal(state[name], saved[name]), name
    if hyperbolic:  # Riemannian Adam's parameters live outside DeepSpeed, in float32: as checkpoint.pth has them
        assert torch.equal(state["hyp_attn_W"], saved["hyp_attn_W"]) and not torch.equal(
            saved["hyp_attn_W"], torch.eye(saved["hyp_attn_W"].shape[0]))


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("content", ["code", "truncated"])
def test_a_checkpoint_that_would_run_code_or_is_cut_short_is_a_named_error(tmp_path, content):
    path, marker = tmp_path / "best.pth", tmp_path / "ran"
    torch.save({"model": {"w": torch.zeros(2)}, "args": _RunsCode(str(marker))}, path)
    if content == "truncated":
        torch.save({"model": {"w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(model_io.ModelFileError, match=f"{path} is not a readable checkpoint") as refused:
        model_io.read_model(str(path))
    assert not marker.exists()
    # what was refused, without torch's advice to load it unrestricted or to allowlist the global
    assert "weights_only" not in str(refused.value) and "add_safe_globals" not in str(refused.value)
    if content == "code":
        assert "it holds more than tensors (it could run code when loaded: Unsupported global: GLOBAL io.open)" in str(
            refused.value) and "ZechengLi19/Uni-Sign" in str(refused.value)  # and where a safe copy comes from
    else:
        assert "it is damaged or cut short" in str(refused.value)
