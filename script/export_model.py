"""Export a trained model to a self-contained, pickle-free folder with a model card (see model_io.py).

    python script/export_model.py out/demo/best_checkpoint.pth out/demo/model [--mt5_path pretrained_weight/mt5-demo]
    python script/export_model.py checkpoints/best.pth geo-sign-csl-daily --mt5_path pretrained_weight/mt5-base
    python script/export_model.py out/run/deepspeed out/run/model    # fp32 master weights of a ZeRO-2/3 run

CHECKPOINT is one of ours (`checkpoint.pth`, `best_checkpoint.pth`), the release's `best.pth` (argparse
Namespace args) or a run's `deepspeed/` folder, whose ZeRO partitions DeepSpeed's zero_to_fp32 consolidates
into the fp32 master weights (its settings come from the run's checkpoint.pth beside it; every file of the
tag is first checked as --resume checks it, since DeepSpeed reads its own state with pickle). The model
settings are the checkpoint's saved args; mT5 comes from --mt5_path, else the checkpoint's saved one, else
config.mt5_path. OUT_DIR must not exist; it is written under a temporary name and renamed when complete.
Load it with `Uni_Sign.from_pretrained(OUT_DIR)` or `--finetune OUT_DIR`.
"""
import argparse
import datetime
import json
import os

import model_io
import settings
import utils
from data_config import DataConfig
from models import Uni_Sign
from train_config import TrainConfig

# The run settings worth telling in the card (when the checkpoint saved them).
TRAINING_KEYS = settings.recorded(DataConfig) + ("finetune",) + settings.recorded(TrainConfig)
DATASET_NAMES = {"CSL_Daily": "CSL-Daily", "CSL_News": "CSL-News", "How2Sign": "How2Sign", "OpenASL": "OpenASL",
                 "WLASL": "WLASL", "Demo": "Geo-Sign demo (synthetic poses, CSL-Daily sentences)"}
SCORE_NAMES = {"bleu1": "BLEU-1", "bleu2": "BLEU-2", "bleu3": "BLEU-3", "bleu4": "BLEU-4", "rouge": "ROUGE-L",
               "wer": "WER", "top1_per_instance": "top-1 (per instance)", "top1_per_class": "top-1 (per class)"}
CITATION = """@inproceedings{geosign2025,
  title     = {Geo-Sign: Hyperbolic Contrastive Regularisation for Geometrically Aware Sign Language Translation},
  author    = {Fish, Edward and Bowden, Richard},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year      = {2025},
  note      = {arXiv:2506.00129}
}
@inproceedings{li2025unisign,
  title     = {Uni-Sign: Toward Unified Sign Language Understanding at Scale},
  author    = {Li, Zecheng and Zhou, Wengang and Zhao, Weichao and Wu, Kepeng and Hu, Hezhen and Li, Houqiang},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2025}
}"""


def get_args_parser():
    p = argparse.ArgumentParser("Export a Geo-Sign checkpoint to a pickle-free model folder")
    p.add_argument("checkpoint", help="checkpoint .pth (ours or the release's) or a run's deepspeed/ folder")
    p.add_argument("out_dir", help="the model folder to write (must not exist)")
    p.add_argument("--mt5_path", default=None, help="mT5 the model was trained with (default: the checkpoint's saved "
                                                    "--mt5_path, else config.mt5_path)")
    p.add_argument("--license", default="other", help="the card's license (the data's terms usually decide it)")
    return p


def deepspeed_master_weights(ds_dir):
    """(checkpoint.pth beside the run's deepspeed/ folder, the fp32 master weights DeepSpeed's zero_to_fp32
    consolidates from the ZeRO partitions of its newest tag). zero_to_fp32 unpickles without restriction, so
    every file of the tag is first checked as --resume checks it (engine.check_resumable_state)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from engine import check_resumable_state, latest_tag
    beside = os.path.join(os.path.dirname(os.path.abspath(ds_dir)), "checkpoint.pth")
    if not os.path.isfile(beside):
        raise model_io.ModelFileError(f"{ds_dir}: no checkpoint.pth beside it ({beside}) to take the settings from")
    tag = latest_tag(ds_dir)
    if tag is None or not os.path.isdir(os.path.join(ds_dir, tag)):
        raise model_io.ModelFileError(f"{ds_dir}: no saved epoch (its 'latest' file is missing or names no epoch "
                                      f"folder): export {beside} instead")
    check_resumable_state(os.path.join(ds_dir, tag), reader="export")
    return beside, get_fp32_state_dict_from_zero_checkpoint(ds_dir, tag=tag)


def build_model(source, mt5_path):
    """The checkpoint's model with every tensor loaded (a checkpoint that does not fill the model of its own
    saved settings is refused). From a run's deepspeed/ folder: the run's checkpoint.pth (settings, and the
    hyperbolic branch's Riemannian parameters, which DeepSpeed's optimizer does not hold and which stay fp32)
    with DeepSpeed's fp32 master weights over everything else."""
    master = None
    if os.path.isdir(source) and not model_io.is_model_folder(source):
        source, master = deepspeed_master_weights(source)
    read = model_io.read_model(source)
    if not read["args"]:
        raise model_io.ModelFileError(f"{source} saved no args: its model settings are unknown")
    model = Uni_Sign.from_pretrained(source, mt5_path, read=read, complete=True)
    if master is not None:
        riemannian = {id(p) for p in model.hyperbolic_parameters()}
        outside = {name for name, p in model.named_parameters(remove_duplicate=False) if id(p) in riemannian}
        own = model.state_dict()
        model.load_state_dict({k: v.float() for k, v in master.items() if k in own and k not in outside}, strict=False)
    return model, read


def run_scores(checkpoint, meta):
    """The scores of the checkpoint's epoch from the run's log.txt beside it ({} when there is none)."""
    log = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "log.txt")
    if "epoch" not in meta or not os.path.isfile(log):
        return {}
    records = [r for r in utils.read_log(os.path.dirname(log)) if r.get("epoch") == meta["epoch"]]
    if not records:
        return {}
    return {split: {k[len(split) + 1:]: v for k, v in records[-1].items()
                    if k.startswith(split + "_") and k[len(split) + 1:] in SCORE_NAMES} for split in ("dev", "test")}


def run_sections(read):
    """What config.json says of the run besides the model (model_io.folder_config adds the model's settings):
    the data and generation settings and where the weights came from."""
    from datasets import prompt_for
    args = read["args"]
    dataset = args.get("dataset", "CSL_Daily")
    return {"data": {"dataset": dataset, "task": args.get("task", "SLT"), "max_length": args.get("max_length", 256),
                     "language": "Chinese" if "Chinese" in prompt_for(dataset) else "English"},
            "generation": {"num_beams": args.get("num_beams", 4), "max_tgt_len": args.get("max_tgt_len", 100)},
            "training": {**{k: args[k] for k in TRAINING_KEYS if k in args and _is_plain(args[k])},
                         **{k: v for k, v in read["meta"].items() if _is_plain(v)}}}


def _is_plain(value):
    return isinstance(value, (str, int, float, bool, type(None), list, tuple))


def yaml_list(key, values):
    return f"{key}:\n" + "".join(f"- {json.dumps(v, ensure_ascii=False)}\n" for v in values)


def model_card(cfg, scores, source, license_name, mt5_name):
    """README.md: Hugging Face front matter (YAML, strings written as JSON) and the card's sections."""
    from datasets import prompt_for
    data, model, training = cfg["data"], cfg["model"], cfg["training"]
    dataset = DATASET_NAMES.get(data["dataset"], data["dataset"])
    chinese = "Chinese" in prompt_for(data["dataset"])
    languages = ["csl", "zh"] if chinese else ["ase", "en"]  # the sign language and the spoken one (ISO 639-3/-1)
    variant = f"Geo-Sign ({model['hyp_text_cmp']} mode)" if model["use_hyperbolic"] else "Uni-Sign (pose only)"
    name = f"{variant} on {dataset}"
    front = ["---", f"license: {license_name}", yaml_list("language", languages).rstrip(), "library_name: pytorch",
             "pipeline_tag: translation",
             yaml_list("tags", ["sign-language-translation", "pose", "skeleton", "st-gcn", "mt5", "geo-sign",
                                "uni-sign"] + (["hyperbolic", "poincare-ball"] if model["use_hyperbolic"] else [])).rstrip(),
             yaml_list("datasets", [dataset]).rstrip()]
    if mt5_name:
        front.append(f"base_model: {mt5_name}")
    metric_types = sorted({SCORE_NAMES[k].split("-")[0].split(" ")[0].lower() for s in scores.values() for k in s})
    if metric_types:
        front.append(yaml_list("metrics", metric_types).rstrip())
        front += ["model-index:", f"- name: {json.dumps(name, ensure_ascii=False)}", "  results:"]
        for split, values in scores.items():
            if not values:
                continue
            front += ["  - task:", "      type: translation", "      name: Sign language translation",
                      "    dataset:", f"      name: {json.dumps(dataset, ensure_ascii=False)}",
                      f"      type: {json.dumps(data['dataset'])}", f"      split: {split}", "    metrics:"]
            for key, value in values.items():
                front += [f"    - type: {SCORE_NAMES[key].split('-')[0].split(' ')[0].lower()}",
                          f"      name: {json.dumps(SCORE_NAMES[key] + ' (' + split + ')')}",
                          f"      value: {round(float(value), 2)}"]
    front.append("---")

    lines = [f"# {name}", "",
             f"Pose-based sign language {'translation' if data['task'] == 'SLT' else 'recognition (' + data['task'] + ')'} "
             f"into {'Chinese' if chinese else 'English'}: four ST-GCN encoders (body, hands, face) over RTMPose "
             "COCO-WholeBody keypoints feed mT5 (Uni-Sign, ICLR 2025)"
             + (", trained with Geo-Sign's hyperbolic contrastive regularisation on a Poincaré ball of learnt "
                "curvature (NeurIPS 2025)." if model["use_hyperbolic"] else "."), ""]
    if any(scores.values()):
        keys = [k for k in SCORE_NAMES if any(k in v for v in scores.values())]
        lines += [f"## Results (epoch {training.get('epoch', '?')}, from the run's log.txt)", "",
                  "| split | " + " | ".join(SCORE_NAMES[k] for k in keys) + " |",
                  "|---|" + "---|" * len(keys)]
        lines += [f"| {split} | " + " | ".join(f"{values[k]:.2f}" if k in values else "-" for k in keys) + " |"
                  for split, values in scores.items() if values]
        lines.append("")
    lines += ["## How it was trained", "",
              "| setting | value |", "|---|---|"]
    settings = {**model, **data, **training}
    if "max_accuracy" in settings:  # the checkpoint's name for the best dev score so far
        settings["best dev score"] = round(float(settings.pop("max_accuracy")), 2)
    lines += [f"| {k} | {v} |" for k, v in settings.items() if k != "mt5_path" and v not in ("", None)]
    lines += ["", f"Exported on {datetime.date.today().isoformat()} from `{os.path.basename(os.path.abspath(source))}` "
              "with `script/export_model.py`.", "",
              "## How to load", "", "```python",
              "from models import Uni_Sign",
              "model = Uni_Sign.from_pretrained(\"THIS_FOLDER\")   # mT5 and tokenizer included; nothing is unpickled",
              "```", "", "or on the command line (any place that takes a `.pth`):", "", "```bash",
              f"python fine_tuning.py --eval --finetune THIS_FOLDER --dataset {data['dataset']}"
              + (" --use_hyperbolic --hyp_text_cmp " + model["hyp_text_cmp"] + " --hyp_text_emb_src "
                 + model["hyp_text_emb_src"] + f" --hyp_dim {model['hyp_dim']}" if model["use_hyperbolic"] else ""),
              f"python script/plot_embeddings.py --finetune THIS_FOLDER --dataset {data['dataset']} --split test "
              "--output_dir embeddings" if model["use_hyperbolic"] else "",
              "```", "",
              "## Files", "",
              "- `config.json`: the model, data and generation settings and the SHA-256 of every file (checked on load);",
              f"- `{model_io.WEIGHTS}`: the pose encoder, projections{' and hyperbolic branch' if model['use_hyperbolic'] else ''}; "
              "shared tensors (the two hands' modules, the ball's curvature) stored once, their other names in the "
              "file's metadata;",
              f"- `{model_io.MT5_DIR}/`: mT5 and its SentencePiece tokenizer (`save_pretrained`).", "",
              "## Citation", "", "```bibtex", CITATION, "```", ""]
    return "\n".join(front) + "\n\n" + "\n".join(line for line in lines if line is not None)


def mt5_base_name(model):
    """The Hub name of the pretrained mT5 when it is one of google's (read from its config), else None."""
    name = os.path.basename(os.path.normpath(str(model.mt5_model.config._name_or_path or "")))
    return f"google/{name}" if name in ("mt5-small", "mt5-base", "mt5-large", "mt5-xl", "mt5-xxl") else None


def export(source, out_dir, mt5_path=None, license_name="other"):
    """Write the model folder of `source` to `out_dir` (model_io.write_folder: complete or not at all)."""
    model_io.refuse_existing(out_dir)  # before the model is built
    model, read = build_model(source, mt5_path)
    cfg = model_io.folder_config(model, run_sections(read))
    card = model_card(cfg, run_scores(source, read["meta"]), source, license_name, mt5_base_name(model))
    return model_io.write_folder(out_dir, model, cfg, card)


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    utils.silence_known_notices()
    try:
        out = export(args.checkpoint, args.out_dir, args.mt5_path, args.license)
    except (FileNotFoundError, model_io.ModelFileError, model_io.CheckpointError) as err:
        utils.fail(str(err))
    size = sum(os.path.getsize(os.path.join(p, n)) for p, _, names in os.walk(out) for n in names)
    print(f"exported {args.checkpoint} to {out} ({size / 2**20:.1f} MiB): config.json, {model_io.WEIGHTS}, "
          f"{model_io.MT5_DIR}/, README.md (model card). Load with Uni_Sign.from_pretrained({out!r}) or --finetune {out}")


if __name__ == "__main__":
    try:
        main()
    finally:
        utils.freeze_long_lived_objects()  # a quick exit
