"""What a run keeps on disk to resume, and how it stops: the resumable state's files checked before DeepSpeed reads
them (nothing read back runs code), the `latest` tag committed atomically, every rank's random state, the temporary
files of runs killed while writing, and SIGTERM / SIGINT turned into an exception that unwinds cleanly.

What is trusted: --resume first loads every file of the tag with torch.load(weights_only=True), allowing only
tensors, containers and the four DeepSpeed types listed in `deepspeed_safe_globals`, and refuses the tag
otherwise; only then does DeepSpeed load it.
"""
import contextlib
import glob
import os
import random
import re
import shutil
import signal
import socket

import numpy as np
import torch

from atomic import atomic_open
from model_io import CheckpointError
from safe_pickle import refusal_reason


class Stopped(BaseException):
    """SIGTERM or SIGINT. A BaseException, like KeyboardInterrupt, so that it unwinds through every
    `finally` (temporary files are removed) and no `except Exception` swallows it."""

    def __init__(self, signum):
        self.signum, self.name = int(signum), signal.Signals(signum).name
        super().__init__(self.name)


def plain_args(record):
    """The run's flags ({flag: value}) with plain values only (what a weights_only load reads back)."""
    return {k: v for k, v in record.items() if isinstance(v, (str, int, float, bool, list, tuple, type(None)))}


# ---------------------------------------------------------------------------- resumable state on disk

def deepspeed_safe_globals():
    """The non-tensor types DeepSpeed pickles into its checkpoint files (ZeRO's fragment addresses and
    stage, the fp16 loss scalers): plain data, rebuilt without running code of the file's choosing."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address
    return [DynamicLossScaler, LossScaler, ZeroStageEnum, fragment_address]


def load_trusted(path):
    """torch.load that runs no code from the file: tensors, containers and deepspeed_safe_globals() only.
    Memory-mapped, so checking a multi-GB optimizer state reads little of it."""
    with torch.serialization.safe_globals(deepspeed_safe_globals()):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def check_resumable_state(tag_dir, reader="--resume"):
    """Load every file of a DeepSpeed tag with load_trusted() before DeepSpeed (which unpickles without
    restriction) may read it; a CheckpointError, its message starting with `reader` (what was about to read it),
    names the first file that holds anything else. Returns the model-states dict (DeepSpeed's metadata and our
    client state)."""
    model_states = None
    for path in sorted(glob.glob(os.path.join(tag_dir, "**", "*"), recursive=True)):
        if os.path.isdir(path):
            continue
        try:
            content = load_trusted(path)
        except Exception as err:  # noqa: BLE001 -- any failure means the file is not what save() wrote
            raise CheckpointError(f"{reader}: refusing {path}: it is not a checkpoint file holding only tensors and "
                                  f"DeepSpeed's own types ({refusal_reason(err, 200)}). Resumable state is never "
                                  "unpickled beyond that; if this folder is not yours, start a new run") from err
        if os.path.basename(path) == "mp_rank_00_model_states.pt":
            model_states = content
    return model_states


def commit(ds_dir, tag):
    """Make `tag` the resumable state (ds_dir/latest, replaced atomically), then remove older tags: only
    the newest is kept, it alone holds the optimizer moments. Run by each node's local rank 0, so that
    nodes writing their shards to their own disks prune their own copies (on a shared file system the
    nodes' removals of the same folders are harmless)."""
    tmp = os.path.join(ds_dir, f"latest.tmp-{socket.gethostname()}-{os.getpid()}")
    with atomic_open(os.path.join(ds_dir, "latest"), tmp=tmp) as f:
        f.write(tag)
    for name in os.listdir(ds_dir):
        if re.fullmatch(r"epoch\d+", name) and name != tag:
            shutil.rmtree(os.path.join(ds_dir, name), ignore_errors=True)


def rng_state():
    """This process's random generators as tensors and plain numbers (loadable with weights_only): Python's,
    numpy's, torch's host generator and, on a GPU, the generator of this rank's device (mT5's dropout draws
    from it), through DeepSpeed's accelerator API. The CPU accelerator's generator is torch's host one."""
    from deepspeed.accelerator import get_accelerator
    np_state = np.random.get_state(legacy=False)
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                       "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                       "gauss": float(np_state["gauss"])}}
    accelerator = get_accelerator()
    if accelerator.device_name() != "cpu":
        state["accelerator"] = {"name": accelerator.device_name(), "state": accelerator.get_rng_state()}
    return state


def set_rng_state(state):
    """Restore what rng_state() saved. The device generator is restored on the same kind of accelerator; a state
    saved before it was kept, or on another kind, leaves it as set_seed seeded it (with a warning on a GPU)."""
    from deepspeed.accelerator import get_accelerator
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["key"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    accelerator, saved = get_accelerator(), state.get("accelerator")
    if accelerator.device_name() == "cpu":
        return
    if saved is not None and saved["name"] == accelerator.device_name():
        accelerator.set_rng_state(saved["state"])
    else:
        print(f"warning: --resume: the saved state holds no {accelerator.device_name()} random generator (saved "
              f"{'on ' + saved['name'] if saved else 'before it was kept'}), so dropout draws differ from an "
              "uninterrupted run's")


# The temporary files model_io.write_checkpoint and utils.append_log write in an output folder (atomic.atomic_path's
# default names), and commit's in its deepspeed/ folder (which carries the host's name: pids are per machine).
TEMPORARY_FILES = re.compile(r"(?:checkpoint\.pth|best_checkpoint\.pth|log\.txt)\.tmp-(?P<pid>\d+)")


def remove_stale_temporaries(output_dir):
    """Remove the temporary files a process killed mid-write (kill -9, a node lost) left in `output_dir`: ours
    only (TEMPORARY_FILES, and deepspeed/latest.tmp-<this host>-<pid>), and only where that pid is no longer a
    live process of this machine; says so in one line. A half-written checkpoint.pth.tmp-<pid> is as large as
    the checkpoint. Run at the start of a training run, which owns its output folder (check_output_dir)."""
    ds_dir = os.path.join(output_dir, "deepspeed")
    latest = re.compile(rf"latest\.tmp-{re.escape(socket.gethostname())}-(?P<pid>\d+)")
    stale = [os.path.join(folder, name) for folder, pattern in ((output_dir, TEMPORARY_FILES), (ds_dir, latest))
             if os.path.isdir(folder) for name in sorted(os.listdir(folder))
             if (match := pattern.fullmatch(name)) and not process_is_alive(int(match["pid"]))]
    for path in stale:
        os.remove(path)
    if stale:
        print(f"removed {len(stale)} temporary file(s) that stopped runs left half-written: " + ", ".join(stale))
    return stale


def process_is_alive(pid):
    """Whether `pid` is a live process on this machine (signal 0 checks without sending anything; a process of
    another user answers EPERM and counts as alive). A zombie (ended, not yet waited for by its parent, such as a
    launcher's rank) is not alive."""
    if not 0 < pid < 2**31:
        return True  # not a process id os.kill checks (0 and negatives address groups): keep the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # the state follows the (command name)
    except (OSError, IndexError):
        return True  # no /proc (macOS): signal 0 has answered


# ---------------------------------------------------------------------------- signals

@contextlib.contextmanager
def stop_on_signals():
    """Within the block, SIGTERM and SIGINT raise Stopped in this process, so that the run unwinds
    cleanly; DataLoader workers forked meanwhile behave as without the handler."""
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() == owner:
            raise Stopped(signum)
        if signum == signal.SIGINT:  # a worker: torch's worker loop expects KeyboardInterrupt
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)  # and dies of SIGTERM, as DataLoader's shutdown expects
        os.kill(os.getpid(), signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
