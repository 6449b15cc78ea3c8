"""Trained models on disk: checkpoints (`.pth`, the release's and ours) and pickle-free model folders.

A model folder (script/export_model.py writes it, Hugging Face style):

    config.json          {"format": "geo-sign-model", "model": ModelConfig fields, "data", "generation",
                          "training", "files": {relative path: sha256}}
    model.safetensors    Uni_Sign's own weights (everything but mT5), each shared tensor stored once; the
                         other names of a shared tensor are listed in the file's metadata ("aliases")
    mt5/                 mT5 and its tokenizer, save_pretrained (safetensors, SentencePiece, JSON)
    README.md            the model card

Nothing in a folder is unpickled: weights are safetensors, the rest JSON or SentencePiece, and every file the
loader reads must match its SHA-256 in config.json (a truncated or modified file is named and refused).

read_model(source) is the one way every command reads a checkpoint or a folder; load_weights() puts what
it read into a model and refuses a checkpoint of another shape, or one that has almost nothing of it.
"""
import argparse
import dataclasses
import hashlib
import json
import os
import pickle
import sys
import zipfile

import torch

import config
from models import ModelConfig, Uni_Sign
from safe_pickle import refusal_reason

FORMAT = "geo-sign-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
MT5_DIR = "mt5"
MT5_PREFIX = "mt5_model."
# --finetune is refused when fewer than this share of the model's weights are found in the checkpoint.
MIN_MATCHED_FRACTION = 0.5


class ModelFileError(ValueError):
    """A checkpoint or model folder that cannot be used as asked; the message names the file and the fix."""


def is_model_folder(path):
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json"))


# ---------------------------------------------------------------------------- tensors with aliases

def alias_groups(state):
    """Names of the state dict grouped by the tensor they hold: entries that are the same view of the same
    storage (the two hands' shared modules, the shared ball's curvature, tied embeddings). First name first."""
    groups = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
               tuple(tensor.stride()), tensor.dtype) if tensor.numel() else ("empty", name)
        groups.setdefault(key, []).append(name)
    return list(groups.values())


def save_tensors(state, path, metadata=None):
    """Write a state dict to safetensors with each shared tensor stored once under its first name; the
    metadata entry "aliases" (JSON {alias: stored name}) lets load_tensors give back every key."""
    from safetensors.torch import save_file
    tensors, aliases = {}, {}
    for names in alias_groups(state):
        tensors[names[0]] = state[names[0]].detach().cpu().contiguous()
        aliases.update({alias: names[0] for alias in names[1:]})
    save_file(tensors, path, metadata={**(metadata or {}), "aliases": json.dumps(aliases, sort_keys=True)})


def load_tensors(path):
    """The state dict saved by save_tensors, every alias restored as the same tensor as its stored name."""
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(path, framework="pt") as f:
            aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
            state = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, json.JSONDecodeError, OSError) as err:
        raise ModelFileError(f"{path} is not a readable safetensors file ({err})") from None
    for alias, name in aliases.items():
        if name not in state:
            raise ModelFileError(f"{path}: alias {alias} points at {name}, which the file does not hold")
        state[alias] = state[name]
    return state


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------- folders

def read_folder_config(folder):
    """config.json of a model folder, after checking that every file it lists has its recorded SHA-256 and
    that mT5's folder holds nothing unlisted (nothing unverified is ever read)."""
    path = os.path.join(folder, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            folder_config = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{path} is not readable JSON ({err}); export the model again") from None
    if not isinstance(folder_config, dict) or folder_config.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a Geo-Sign model folder's config (no \"format\": \"{FORMAT}\")")
    if folder_config.get("format_version", 0) > FORMAT_VERSION:
        raise ModelFileError(f"{path}: format version {folder_config['format_version']} is newer than this code reads "
                             f"({FORMAT_VERSION}); update the code")
    files = folder_config.get("files") or {}
    if WEIGHTS not in files:
        raise ModelFileError(f"{path} lists no {WEIGHTS}; export the model again")
    for name, expected in sorted(files.items()):
        file = os.path.join(folder, name)
        if os.path.isabs(name) or ".." in name.split("/") or not os.path.isfile(file):
            raise ModelFileError(f"{file} is missing (listed in {path}); copy the whole folder or export it again")
        if sha256(file) != expected:
            raise ModelFileError(f"{file} does not match its SHA-256 in {path}: the file was truncated or modified; "
                                 "copy or export it again")
    mt5_dir = os.path.join(folder, MT5_DIR)
    for parent, _, names in os.walk(mt5_dir):
        for name in names:
            relative = os.path.relpath(os.path.join(parent, name), folder).replace(os.sep, "/")
            if relative not in files:
                raise ModelFileError(f"{os.path.join(parent, name)} is not listed in {path}: a file was added to the "
                                     "model folder; remove it or export the model again")
    return folder_config


def folder_mt5_path(source):
    """The mT5 inside a model folder, or None when `source` is not a folder."""
    return os.path.join(source, MT5_DIR) if source and is_model_folder(source) else None


# ---------------------------------------------------------------------------- the one reader

def read_checkpoint_file(path):
    """A `.pth` checkpoint dict, loaded without running code (weights_only; the release's args are an
    argparse.Namespace, allowed explicitly)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    torch.serialization.add_safe_globals([argparse.Namespace])
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, KeyError, RuntimeError, ValueError, OSError) as err:  # what torch.load
        # raises on truncated, foreign or code-running files
        raise ModelFileError(f"{path} is not a readable checkpoint ({type(err).__name__}: "
                             f"{refusal_reason(err)})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ModelFileError(f"{path} is not a Geo-Sign/Uni-Sign checkpoint: expected a dict with a 'model' entry")
    return ckpt


def read_model(source):
    """Read a checkpoint `.pth` or a model folder. Returns dict(state: the full state dict (mT5 included),
    args: the saved settings as a dict (a checkpoint's args, a folder's model + data + generation settings),
    meta: epoch / global_step / max_accuracy where known, folder: bool)."""
    if os.path.isdir(source):
        if not is_model_folder(source):
            raise ModelFileError(f"{source} is a folder without config.json: not a model folder "
                                 "(script/export_model.py writes them)")
        from safetensors.torch import load_file
        folder_config = read_folder_config(source)
        state = load_tensors(os.path.join(source, WEIGHTS))
        mt5_weights = os.path.join(source, MT5_DIR, WEIGHTS)
        if os.path.isfile(mt5_weights):  # HF drops tied copies on save; load_weights counts them as present
            state.update({MT5_PREFIX + k: v for k, v in load_file(mt5_weights).items()})
        args = {**folder_config.get("data", {}), **folder_config.get("generation", {}), **folder_config["model"]}
        args["mt5_path"] = os.path.join(source, MT5_DIR)
        return {"state": state, "args": args, "meta": folder_config.get("training", {}), "folder": True}
    ckpt = read_checkpoint_file(source)
    args = ckpt.get("args") or {}
    args = dict(vars(args) if isinstance(args, argparse.Namespace) else args)
    meta = {k: ckpt[k] for k in ("epoch", "global_step", "max_accuracy") if k in ckpt}
    return {"state": ckpt["model"], "args": args, "meta": meta, "folder": False}


def check_mt5_weights(mt5_path):
    """Refuse, with a ModelFileError naming the file, a pickled mT5 weight file (pytorch_model*.bin, which
    transformers reads when the folder has no safetensors) that holds anything but tensors, before transformers
    reads it: its own torch.load(weights_only=True) refuses it too, but as a traceback whose advice (load with
    weights_only=False) would run the file's code. Memory-mapped, so a multi-GB file costs little to check."""
    if not os.path.isdir(mt5_path) or any(name.endswith(".safetensors") for name in os.listdir(mt5_path)):
        return
    for name in sorted(os.listdir(mt5_path)):
        path = os.path.join(mt5_path, name)
        if not (name.startswith("pytorch_model") and name.endswith(".bin") and os.path.isfile(path)):
            continue
        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
        except (pickle.UnpicklingError, EOFError, KeyError, RuntimeError, ValueError, OSError) as err:
            raise ModelFileError(f"mT5 at {os.path.abspath(mt5_path)}: refusing {path}: it holds more than tensors "
                                 f"or is damaged ({refusal_reason(err, 200)}), and pickled weights are never loaded "
                                 "beyond tensors; replace the folder with google/mt5-base's own files (`huggingface-cli "
                                 f"download google/mt5-base --local-dir {mt5_path}`)") from None


# ---------------------------------------------------------------------------- into a model

def load_weights(model, source, drop_curvature=False, read=None, complete=False, verbose=True):
    """--finetune / --eval --finetune: put the weights of `source` (checkpoint or folder) into `model`.

    Refuses (ModelFileError) a source whose tensors have other shapes than the model's (naming the keys,
    shapes and the flags that differ from the source's saved settings) and one that holds less than
    MIN_MATCHED_FRACTION of the model's weights (an unrelated checkpoint). Otherwise loads non-strictly and
    prints what was missing or unexpected. drop_curvature: leave the ball's curvature as built (fine-tuning
    starts from --init_c). complete: refuse anything missing or unexpected. verbose: list the missing and
    unexpected keys on stdout (else one line on stderr when there are any). Returns the read_model dict."""
    read = read or read_model(source)
    state = read["state"]
    if drop_curvature:
        state = {k: v for k, v in state.items() if not k.endswith("isp_c")}
    own = model.state_dict()
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
                  if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if mismatched:
        listed = ", ".join(f"{k} {saved} vs {built}" for k, saved, built in mismatched[:4])
        more = f" and {len(mismatched) - 4} more" if len(mismatched) > 4 else ""
        raise ModelFileError(f"--finetune {source}: {len(mismatched)} tensors have another shape than this model's "
                             f"(saved vs built: {listed}{more}); {likely_flags(model, read['args'], mismatched)}")
    # a name that shares its tensor with a loaded one (hands, curvature, tied embeddings) is loaded too
    present = set(state)
    for names in alias_groups(own):
        if present.intersection(names):
            present.update(names)
    missing = [k for k in own if k not in present and not (drop_curvature and k.endswith("isp_c"))]
    unexpected = [k for k in state if k not in own]
    matched = len(own) - len(missing)
    if matched < MIN_MATCHED_FRACTION * len(own):
        raise ModelFileError(f"--finetune {source}: only {matched} of this model's {len(own)} tensors are in it "
                             f"({len(unexpected)} of its {len(state)} names are not this model's, e.g. "
                             f"{', '.join(unexpected[:3]) or '-'}): it is not a checkpoint of this model")
    if complete and (missing or unexpected):
        raise ModelFileError(f"{source} does not fit the model of its own saved settings: missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}")
    model.load_state_dict(state, strict=False)
    if not verbose:
        if missing or unexpected:
            sys.stderr.write(f"{source}: {len(missing)} of the model's tensors missing (first: {missing[:3]}), "
                             f"{len(unexpected)} unexpected (first: {unexpected[:3]})\n")
        return read
    print(f"Loaded {source}: {len(state)} tensors; missing keys {len(missing)}, unexpected keys {len(unexpected)}")
    for k in missing:
        print(f"  missing: {k}")
    for k in unexpected:
        print(f"  unexpected: {k}")
    return read


def likely_flags(model, saved_args, mismatched):
    """The flags whose saved values differ from the model's settings, as a hint for a shape mismatch."""
    saved = ModelConfig.from_args(saved_args) if saved_args else None
    differing = [f"--{f.name} {getattr(saved, f.name)} (this run: {getattr(model.config, f.name)})"
                 for f in dataclasses.fields(ModelConfig) if saved is not None and f.name != "mt5_path"
                 and f.name in saved_args and getattr(saved, f.name) != getattr(model.config, f.name)]
    if differing:
        return "it was saved with " + ", ".join(differing) + ": pass the same flags"
    if any(k.startswith(MT5_PREFIX) or k.startswith("pose_proj") for k, _, _ in mismatched):
        return "it was trained with another mT5 (d_model/vocabulary): pass its --mt5_path"
    return "pass the model flags it was trained with (e.g. --hyp_dim)"


def load_model(source, mt5_path=None, device="cpu", read=None, complete=False, verbose=False):
    """A trained Uni_Sign ready for inference, built with the settings saved in `source` (checkpoint, ours or
    the release's, or model folder) and its weights, in eval mode: the one place that turns a trained model
    file into a model. mT5 comes from `mt5_path`, else the folder's own, else the checkpoint's saved
    --mt5_path, else config.mt5_path. A checkpoint without saved flags: its weights tell whether it has the
    hyperbolic branch. read: what read_model(source) gave, if already read. Returns (model, read_model dict)."""
    read = read or read_model(source)
    if "use_hyperbolic" not in read["args"]:
        read["args"]["use_hyperbolic"] = any(key.startswith("hyp_proj") for key in read["state"])
    settings = ModelConfig.from_args({**read["args"], **({"mt5_path": mt5_path} if mt5_path else {})})
    if not mt5_path and not read["folder"] and settings.mt5_path and not os.path.isdir(settings.mt5_path):
        settings.mt5_path = None  # the training machine's path: fall back to config.mt5_path
    safetensors_only = read["folder"] and not mt5_path
    if not safetensors_only:
        check_mt5_weights(settings.mt5_path or config.mt5_path)
    model = Uni_Sign(settings, safetensors_only=safetensors_only)
    load_weights(model, source, read=read, complete=complete, verbose=verbose)
    return model.to(device).eval(), read
