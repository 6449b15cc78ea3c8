"""Files written whole or not at all: every file the project writes for others to read back (checkpoints, the
training log, pose pickles, rendered videos, model folders) is written under a temporary name beside its
place and renamed into it, so that a reader, or a run resumed after a crash, sees the old file or the whole new
one, never half of one. os.replace is atomic within one file system (POSIX rename), hence "beside".

Kept free of heavy imports: pose extraction uses it without torch.
"""
import contextlib
import errno
import os
import shutil


@contextlib.contextmanager
def atomic_path(path, tmp=None):
    """Yield a temporary path beside `path` (default `path`.tmp-<pid>, which engine.remove_stale_temporaries
    recognises) that becomes `path` by os.replace when the block ends without error; the temporary, a file or
    a folder, is removed in every other case (an error, a full disk, a signal), so that nothing half-written
    stays behind."""
    tmp = tmp or f"{path}.tmp-{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp) and not os.path.islink(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.lexists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_open(path, mode="w", fsync=False, tmp=None):
    """open() on atomic_path(path, tmp)'s temporary (text as UTF-8). fsync: the data reaches the disk before
    the rename, so that a power loss, not only a crash, leaves the old file or the new one (checkpoints)."""
    with atomic_path(path, tmp) as temporary:
        with open(temporary, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())


def link_atomic(src, dst):
    """Make `dst` the same file as `src` (a hard link: no second write of a multi-GB checkpoint), atomically.
    `src` is later replaced by os.replace, which gives it a new inode and leaves `dst` as it is."""
    with atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:  # a file system without hard links
            shutil.copyfile(src, tmp)


def disk_is_full(err, folder):
    """Whether a failed write failed for want of space: ENOSPC, or (torch.save writing to a path reports
    a short write as "unexpected pos") less than 1 MiB left where it wrote."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    if not isinstance(err, (OSError, RuntimeError)):
        return False
    try:
        return shutil.disk_usage(folder).free < 2**20
    except OSError:
        return False
