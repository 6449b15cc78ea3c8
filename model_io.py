"""Trained models on disk, each format's writer beside its reader: checkpoints (`.pth`, the release's and
ours) and pickle-free model folders. Storage only: it never builds a model (models.Uni_Sign.from_pretrained
does, from what read_model gives).

A checkpoint `.pth` (write_checkpoint, every epoch of a run; the release's best.pth has the same keys):

    {"model": state dict (fp32), "epoch": int, "args": the run's flags as a dict (the release: an
     argparse.Namespace), "max_accuracy": best dev score so far, "global_step": optimizer updates}

A model folder (write_folder, for script/export_model.py; Hugging Face style):

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
import re
import sys
import zipfile

import torch

from atomic import DiskFullError, atomic_open, atomic_path, link_atomic
from safe_pickle import refusal_reason, refuses_code

FORMAT = "geo-sign-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
MT5_DIR = "mt5"
MT5_PREFIX = "mt5_model."
# --finetune is refused when fewer than this share of the model's weights are found in the checkpoint.
MIN_MATCHED_FRACTION = 0.5


class ModelFileError(ValueError):
    """A checkpoint or model folder that cannot be used as asked; the message names the file and the fix."""


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read back; the message names the file and the fix."""


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


# ---------------------------------------------------------------------------- Hugging Face Hub ids

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # org/name, as transformers' from_pretrained takes it
# What a Hub id's snapshot may bring: a model folder's files (its mT5 as safetensors; read_folder_config refuses
# anything else in mt5/ and checks each file's SHA-256), or an mT5's config, tokenizer and safetensors weights.
FOLDER_FILES = ("config.json", WEIGHTS, "README.md", f"{MT5_DIR}/*.json", f"{MT5_DIR}/*.safetensors",
                f"{MT5_DIR}/*.model")
MT5_FILES = ("*.json", "*.model", "*.safetensors")
MT5_PICKLED_FILES = ("pytorch_model*.bin",)  # only when the repository has no safetensors; check_mt5_weights reads them


def resolve_hub_id(source, flag, patterns=FOLDER_FILES, pickled_patterns=(), fix=None, error=None):
    """`source` as a local path: itself when it exists (a local folder of a Hub id's name wins) or when it is
    no Hub id (org/name; its reader names it as missing); else the snapshot folder of Hub repository `source`
    in huggingface_hub's cache, as transformers' from_pretrained finds it: downloaded (only the files matching
    `patterns`; `pickled_patterns` too where none of them is safetensors) when the Hub can be reached, the
    cache's copy when not (HF_HUB_OFFLINE=1, no network). Nothing is trusted for coming from the Hub: the
    folder is read as a local one would be. Not found: `error` (default ModelFileError) naming `flag` and `fix`
    (default: the `hf download` command)."""
    if (not source or os.path.exists(source) or not HUB_ID.fullmatch(source) or source.endswith((".pth", ".pt"))
            or os.path.isdir(source.split("/")[0])):
        return source
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError
    try:
        folder = snapshot_download(source, allow_patterns=list(patterns))
        if pickled_patterns and not any(name.endswith(".safetensors") for name in os.listdir(folder)):
            folder = snapshot_download(source, allow_patterns=list(patterns + pickled_patterns))
    except (OSError, HFValidationError) as err:  # not cached offline, not on the Hub, no network, a bad name
        where = ("in the Hugging Face cache (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else
                 "on the Hugging Face Hub nor in its cache")
        fix = fix or f"download it with `hf download {source}` where the Hub can be reached, or pass a local path"
        raise (error or ModelFileError)(f"{flag} {source}: no such local path, and not found {where} "
                                        f"({type(err).__name__}): {fix}") from None
    return folder


def folder_mt5_path(source):
    """The mT5 inside a model folder, or None when `source` is not a folder."""
    return os.path.join(source, MT5_DIR) if source and is_model_folder(source) else None


# ---------------------------------------------------------------------------- the writers

def write_checkpoint(output_dir, state, epoch, args, max_accuracy, global_step, best=False):
    """output_dir/checkpoint.pth, the release's dict (see the top of this file) that read_model reads, written
    atomically; with best, best_checkpoint.pth becomes the same file (a hard link, not a second write). A full
    disk is a CheckpointError saying what stays resumable (full_disk_error)."""
    last = os.path.join(output_dir, "checkpoint.pth")
    save_atomic({"model": state, "epoch": epoch, "args": args, "max_accuracy": max_accuracy,
                 "global_step": global_step}, last, run_folder=output_dir)
    if best:
        best_path = os.path.join(output_dir, "best_checkpoint.pth")
        try:
            link_atomic(last, best_path)  # a copy where the file system has no hard links
        except DiskFullError as err:
            raise full_disk_error(best_path, output_dir) from err


def save_atomic(obj, path, run_folder=None):
    """torch.save to `path` through atomic.atomic_open, flushed to disk before the rename: a crash never
    leaves half a checkpoint. A full disk (whatever torch raised: atomic.disk_is_full) is a CheckpointError
    naming the file (full_disk_error); the temporary file is removed and the earlier `path` stays as it was."""
    try:
        with atomic_open(path, "wb", fsync=True) as f:
            torch.save(obj, f)
    except DiskFullError as err:
        raise full_disk_error(path, run_folder) from err


def latest_tag(ds_dir):
    """The resumable tag of a run's DeepSpeed folder: the one ds_dir/latest names (checkpointing.commit writes it)
    when it is one of ours (epoch<N>), else None."""
    try:
        with open(os.path.join(ds_dir, "latest"), encoding="utf-8") as f:
            tag = f.read().strip()
    except OSError:
        return None
    return tag if re.fullmatch(r"epoch\d+", tag) else None


def full_disk_error(path, run_folder=None):
    """The CheckpointError for a file that did not fit on its disk: the file, its folder, the fix and, for a
    training run's folder, what stays resumable (the DeepSpeed state's `latest`, which --resume reads)."""
    folder = os.path.dirname(os.path.abspath(path))
    tag = None
    if run_folder is not None:
        tag = latest_tag(os.path.join(run_folder, "deepspeed"))
    if tag:
        then = (f"then continue with the same command plus --resume (epoch {tag[len('epoch'):]} stays resumable; "
                "the files written before are intact)")
    elif run_folder is not None:
        then = "then start again (no epoch was saved yet, so nothing resumes)"
    else:
        then = "then save again (the file written before is intact)"
    return CheckpointError(f"could not write {path}: the disk is full; free some space in {folder}, {then}")


def folder_config(model, sections):
    """config.json's content but its file digests: the format, the model's settings (model.config, with mT5
    inside the folder), `sections` ({"data", "generation", "training"}: what the exporter knows of the run)
    and mT5's width."""
    model_settings = dataclasses.asdict(model.config)
    model_settings["mt5_path"] = MT5_DIR
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "model": model_settings, **sections,
            "d_model": model.mt5_model.config.d_model}


def refuse_existing(out_dir):
    """A ModelFileError when `out_dir` exists: a model folder is never written over another."""
    if os.path.exists(out_dir):
        raise ModelFileError(f"{out_dir} exists; choose a new output folder (nothing is overwritten)")


def write_folder(out_dir, model, folder_settings, card):
    """Write `model` as a model folder (see the top of this file) at `out_dir`, which must not exist: its
    own weights (safetensors), mT5 and tokenizer (save_pretrained), config.json (folder_settings plus every
    file's SHA-256, which read_folder_config checks) and the model card's text `card`. Written under a
    temporary name and renamed when complete; any failure leaves nothing behind and is a ModelFileError."""
    from safetensors import SafetensorError
    refuse_existing(out_dir)
    try:
        with atomic_path(os.path.normpath(out_dir)) as tmp:
            mt5_dir = os.path.join(tmp, MT5_DIR)
            os.makedirs(mt5_dir)
            model.mt5_model.save_pretrained(mt5_dir, safe_serialization=True)
            model.mt5_tokenizer.save_pretrained(mt5_dir)
            own = {k: v for k, v in model.state_dict().items() if not k.startswith(MT5_PREFIX)}
            save_tensors(own, os.path.join(tmp, WEIGHTS), metadata={"format": "pt"})
            files = {os.path.relpath(os.path.join(parent, name), tmp).replace(os.sep, "/"):
                     sha256(os.path.join(parent, name)) for parent, _, names in os.walk(tmp) for name in names}
            with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
                json.dump({**folder_settings, "files": dict(sorted(files.items()))}, f, indent=2, ensure_ascii=False)
            with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
                f.write(card)
    except DiskFullError:  # whatever the writer raised (safetensors, transformers, open): atomic.disk_is_full
        raise ModelFileError(f"could not write {out_dir}: the disk is full; free some space in "
                             f"{os.path.dirname(os.path.abspath(out_dir))}, then export again (nothing was left "
                             "behind; the model it exports is unchanged)") from None
    except (OSError, SafetensorError) as err:  # an unwritable place
        raise ModelFileError(f"could not write {out_dir}: {getattr(err, 'strerror', None) or err}; choose another "
                             "output folder (nothing was left behind)") from None
    return out_dir


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
        if refuses_code(err):
            raise ModelFileError(f"{path} is not a readable checkpoint: it holds more than tensors (it could run code "
                                 f"when loaded: {refusal_reason(err)}) and is never loaded; take a safe copy from its "
                                 "source (best.pth: the Geo-Sign authors' release; pretraining.pth: Uni-Sign's Hub "
                                 "repository ZechengLi19/Uni-Sign), or a model folder (script/export_model.py)") from None
        raise ModelFileError(f"{path} is not a readable checkpoint: it is damaged or cut short ({refusal_reason(err)}); "
                             "copy or download it again") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ModelFileError(f"{path} is not a Geo-Sign/Uni-Sign checkpoint: expected a dict with a 'model' entry")
    return ckpt


def read_model(source):
    """Read a checkpoint `.pth` or a model folder. Returns dict(state: the full state dict (mT5 included),
    args: the saved settings as a dict (a checkpoint's args, a folder's model + data + generation settings),
    meta: epoch / global_step / max_accuracy where known, folder: bool). A Hub id is read from the cache
    (resolve_hub_id)."""
    source = resolve_hub_id(source, "model")
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
            what = ("it holds more than tensors (it could run code when loaded" if refuses_code(err) else
                    "it is damaged or cut short (")
            raise ModelFileError(f"mT5 at {os.path.abspath(mt5_path)}: refusing {path}: {what}: "
                                 f"{refusal_reason(err)}), and pickled weights are never loaded beyond tensors; "
                                 "replace the folder with google/mt5-base's own files (`hf download "
                                 f"google/mt5-base --local-dir {mt5_path}`)") from None


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
    """The flags whose saved values differ from the model's settings (model.config, a dataclass with a
    from_args reader: models.ModelConfig), as a hint for a shape mismatch."""
    settings = type(model.config)
    saved = settings.from_args(saved_args) if saved_args else None
    differing = [f"--{f.name} {getattr(saved, f.name)} (this run: {getattr(model.config, f.name)})"
                 for f in dataclasses.fields(settings) if saved is not None and f.name != "mt5_path"
                 and f.name in saved_args and getattr(saved, f.name) != getattr(model.config, f.name)]
    if differing:
        return "it was saved with " + ", ".join(differing) + ": pass the same flags"
    if any(k.startswith(MT5_PREFIX) or k.startswith("pose_proj") for k, _, _ in mismatched):
        return "it was trained with another mT5 (d_model/vocabulary): pass its --mt5_path"
    return "pass the model flags it was trained with (e.g. --hyp_dim)"
