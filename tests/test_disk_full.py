"""A disk that fills up during a save, and a pickle that would run code: each is one `error:` line in our own words.

A full disk is recognised by the free space left where the write failed (and the errno where there is one), not
by the exception's type: torch's zip writer reports it as RuntimeError("... unexpected pos N vs M") with no errno.
The tests below fill the disk as torch does: the writer leaves part of its file, the file system then reports no
free space (a patched os.statvfs), and the writer raises that RuntimeError. Whatever was there before stays, and
no temporary file is left.
"""
import contextlib
import errno
import io
import os
import pickle

import pytest
import torch

import atomic
import engine
import export_model
import model_io
from e2e import base_args
from in_process import fine_tuning_refuses
from safe_pickle import refusal_reason

TORCH_SHORT_WRITE = "[enforce fail at inline_container.cc:672] . unexpected pos 15507328 vs 15507224"
TORCH_ADVICE = "weights_only` set to `False`"


class FullDisk:
    """The file system under `folder` reports no free space once `fill()` was called (os.statvfs patched)."""

    def __init__(self, monkeypatch, folder):
        self.folder, self.full = os.path.abspath(folder), False
        real_statvfs = os.statvfs

        def statvfs(path):
            stats = real_statvfs(path)
            if self.full and os.path.abspath(path).startswith(self.folder):
                return os.statvfs_result(stats[:3] + (0, 0) + stats[5:])  # f_bfree, f_bavail
            return stats
        monkeypatch.setattr(os, "statvfs", statvfs)

    def fill(self, f):
        """Write a little (what fitted) to the open file `f`, then the disk is full and torch's writer raises."""
        f.write(b"PK\x03\x04 what fitted")
        f.flush()
        self.full = True
        raise RuntimeError(TORCH_SHORT_WRITE)


def temporaries(folder):
    return [os.path.join(parent, name) for parent, dirs, names in os.walk(folder) for name in names + dirs
            if ".tmp-" in name]


# ---------------------------------------------------------------------------- classification

def test_a_failure_is_a_full_disk_by_the_space_left_not_by_its_type(tmp_path, monkeypatch):
    disk = FullDisk(monkeypatch, tmp_path)
    path = tmp_path / "file.bin"
    with pytest.raises(RuntimeError, match="unexpected pos"):  # space left: the writer's own error, unchanged
        with atomic.atomic_open(path, "wb"):
            raise RuntimeError(TORCH_SHORT_WRITE)
    with pytest.raises(atomic.DiskFullError) as full:
        with atomic.atomic_open(path, "wb") as f:
            disk.fill(f)
    assert full.value.errno == errno.ENOSPC and full.value.filename == str(path)
    assert isinstance(full.value.__cause__, RuntimeError) and not os.listdir(tmp_path)
    assert atomic.disk_is_full(OSError(errno.EDQUOT, "quota"), str(tmp_path))  # the errno, where there is one
    assert not atomic.disk_is_full(KeyboardInterrupt(), str(tmp_path))  # an interrupt on a full disk is no write error


# ---------------------------------------------------------------------------- every writer

@pytest.mark.slow  # a two-epoch run (about 25 s on 2 shared cores)
def test_a_full_disk_while_checkpoint_pth_is_written_is_one_line_and_epoch_0_resumes(capsys, tiny_demo, tmp_path,
                                                                                      monkeypatch):
    """Epoch 1's checkpoint.pth does not fit: one line naming it, its folder, what resumes and the fix."""
    out = tmp_path / "out"
    disk, real_save, written = FullDisk(monkeypatch, out), torch.save, []

    def save(obj, f, *args, **kwargs):
        name = os.path.basename(getattr(f, "name", str(f)))
        if name.startswith("checkpoint.pth.tmp-"):
            written.append(name)
            if len(written) == 2:
                disk.fill(f)
        return real_save(obj, f, *args, **kwargs)
    monkeypatch.setattr(torch, "save", save)
    line = fine_tuning_refuses(capsys, base_args(tiny_demo, out, epochs=2, steps=1))[0]
    assert line == (f"error: could not write {out / 'checkpoint.pth'}: the disk is full; free some space in {out}, "
                    "then continue with the same command plus --resume (epoch 0 stays resumable; the files written "
                    "before are intact)")
    assert not temporaries(out)
    for name in ("checkpoint.pth", "best_checkpoint.pth"):
        assert torch.load(out / name, weights_only=True)["epoch"] == 0
    assert (out / "deepspeed" / "latest").read_text() == "epoch0"


def test_a_full_disk_while_best_checkpoint_pth_is_copied_keeps_the_earlier_best(tmp_path, monkeypatch):
    """Where the file system has no hard links, best_checkpoint.pth is a copy, which can meet a full disk."""
    state = {"w": torch.arange(4.0)}
    (tmp_path / "deepspeed" / "epoch0").mkdir(parents=True)
    (tmp_path / "deepspeed" / "latest").write_text("epoch0")
    model_io.write_checkpoint(str(tmp_path), state, 0, {}, 1.0, 1, best=True)
    disk = FullDisk(monkeypatch, tmp_path)

    def no_hard_links(src, dst):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM), src)

    def copy_until_full(src, dst):
        with open(dst, "wb") as f:
            disk.fill(f)
    monkeypatch.setattr(atomic.os, "link", no_hard_links)
    monkeypatch.setattr(atomic.shutil, "copyfile", copy_until_full)
    with pytest.raises(model_io.CheckpointError) as refused:
        model_io.write_checkpoint(str(tmp_path), state, 1, {}, 2.0, 2, best=True)
    assert str(refused.value) == (f"could not write {tmp_path / 'best_checkpoint.pth'}: the disk is full; free some "
                                  f"space in {tmp_path}, then continue with the same command plus --resume (epoch 0 "
                                  "stays resumable; the files written before are intact)")
    assert torch.load(tmp_path / "best_checkpoint.pth", weights_only=True)["epoch"] == 0
    assert torch.load(tmp_path / "checkpoint.pth", weights_only=True)["epoch"] == 1  # written before the copy
    assert not temporaries(tmp_path)


def test_a_full_disk_at_the_first_save_says_nothing_resumes(tmp_path, monkeypatch):
    (tmp_path / "deepspeed").mkdir()
    disk = FullDisk(monkeypatch, tmp_path)
    monkeypatch.setattr(torch, "save", lambda obj, f, *args, **kwargs: disk.fill(f))
    with pytest.raises(model_io.CheckpointError, match="then start again \\(no epoch was saved yet, so nothing"):
        model_io.write_checkpoint(str(tmp_path), {}, 0, {}, 1.0, 1)
    assert sorted(os.listdir(tmp_path)) == ["deepspeed"]


def test_a_full_disk_during_an_export_is_one_line_and_leaves_nothing(token_run, tmp_path, capsys, monkeypatch):
    disk = FullDisk(monkeypatch, tmp_path)

    def save_until_full(state, path, metadata=None):
        with open(path, "wb") as f:
            disk.fill(f)
    monkeypatch.setattr(model_io, "save_tensors", save_until_full)
    with pytest.raises(SystemExit) as stop, contextlib.redirect_stdout(io.StringIO()):
        export_model.main([str(token_run / "checkpoint.pth"), str(tmp_path / "model")])
    err = capsys.readouterr().err
    assert stop.value.code == 1 and "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: could not write {tmp_path / 'model'}: the disk is full; free some space in {tmp_path}, then export "
        "again (nothing was left behind; the model it exports is unchanged)"]
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------- pickles that hold more than tensors

class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class RunsBlockedCode:
    def __reduce__(self):
        return (os.getcwd, ())


def refusal(path):
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        return err
    raise AssertionError(f"{path} was loaded")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch.load on a protocol-4 pickle
@pytest.mark.parametrize("planted, named", [("allowlistable", "io.open"), ("blocked module", "getcwd"),
                                            ("plain pickle", "Unsupported operand")])
def test_the_refusal_reason_keeps_the_global_and_drops_torchs_advice(tmp_path, planted, named):
    path = tmp_path / "planted.pth"
    if planted == "plain pickle":
        path.write_bytes(pickle.dumps(RunsCode(str(tmp_path / "ran")), protocol=4))
    else:
        torch.save({"model": RunsCode(str(tmp_path / "ran")) if planted == "allowlistable" else RunsBlockedCode()}, path)
    err = refusal(path)
    assert TORCH_ADVICE in str(err)  # what torch says, and what must not reach the user
    reason = refusal_reason(err)
    assert named in reason and "weights_only" not in reason and "\n" not in reason


def test_no_refusal_line_quotes_torchs_advice(tmp_path):
    """--finetune / --eval of a planted checkpoint, a planted mT5 pytorch_model.bin, planted resumable state."""
    marker = tmp_path / "ran"
    planted = tmp_path / "best.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "args": RunsCode(str(marker))}, planted)
    with pytest.raises(model_io.ModelFileError) as refused:
        model_io.read_model(str(planted))
    assert "holds more than tensors (it could run code when loaded: Unsupported global: GLOBAL io.open)" in str(
        refused.value)
    lines = [str(refused.value)]
    mt5 = tmp_path / "mt5"
    mt5.mkdir()
    torch.save({"shared.weight": RunsCode(str(marker))}, mt5 / "pytorch_model.bin")
    with pytest.raises(model_io.ModelFileError) as refused:
        model_io.check_mt5_weights(str(mt5))
    lines.append(str(refused.value))
    tag = tmp_path / "deepspeed" / "epoch0"
    tag.mkdir(parents=True)
    torch.save({"module": RunsCode(str(marker))}, tag / "mp_rank_00_model_states.pt")
    with pytest.raises(engine.CheckpointError) as refused:
        engine.check_resumable_state(str(tag))
    lines.append(str(refused.value))
    for line in lines:
        assert TORCH_ADVICE not in line and "weights_only" not in line and "add_safe_globals" not in line, line
        assert len(line.splitlines()) == 1 and "GLOBAL io.open" in line, line
    assert not marker.exists()


def test_a_damaged_checkpoint_is_called_damaged(tmp_path):
    path = tmp_path / "best.pth"
    torch.save({"model": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(model_io.ModelFileError, match="it is damaged or cut short \\(PytorchStreamReader failed "
                                                     "reading zip archive: failed finding central directory\\); copy"):
        model_io.read_model(str(path))
