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


class DiskFullError(OSError):
    """A write that failed for want of space (errno ENOSPC, `filename` the file or folder being written),
    whatever the writer raised: torch's zip writer reports a short write as RuntimeError("unexpected pos ...")
    without an errno, safetensors as its own error type."""


# Less free space than this where a write failed means the disk filled up (a writer that hits the end of the
# disk leaves next to nothing free: its partial temporary file is still there when the failure is classified).
FULL_BELOW_BYTES = 2**20


@contextlib.contextmanager
def atomic_path(path, tmp=None):
    """Yield a temporary path beside `path` (default `path`.tmp-<pid>, which engine.remove_stale_temporaries
    recognises) that becomes `path` by os.replace when the block ends without error; the temporary, a file or
    a folder, is removed in every other case (an error, a full disk, a signal), so that nothing half-written
    stays behind. A failure while the disk is full (disk_is_full, judged before the temporary is removed)
    is raised as DiskFullError naming `path`, whatever the writer raised."""
    tmp = tmp or f"{path}.tmp-{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, path)
    except Exception as err:
        if not isinstance(err, DiskFullError) and disk_is_full(err, os.path.dirname(os.path.abspath(path))):
            raise DiskFullError(errno.ENOSPC, "the disk is full", os.fspath(path)) from err
        raise
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


def free_bytes(folder):
    """Bytes an unprivileged writer may still use on the file system holding `folder` (statvfs), None when
    that cannot be known (no such folder, no statvfs)."""
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    return stats.f_bavail * stats.f_frsize


def disk_is_full(err, folder):
    """Whether a failed write failed for want of space. Judged by the errno where there is one (ENOSPC, or
    EDQUOT: a quota) and otherwise by the free space left where it wrote (less than FULL_BELOW_BYTES), not
    by the exception's type: torch.save reports a short write as RuntimeError("[enforce fail at
    inline_container.cc] . unexpected pos N vs M") without an errno, safetensors and DeepSpeed in their own
    types. Call it before the partial file is removed, so that the space it took still counts as used."""
    if not isinstance(err, Exception):  # a signal or an interrupt is never a full disk
        return False
    if isinstance(err, DiskFullError) or getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return True
    free = free_bytes(folder)
    return free is not None and free < FULL_BELOW_BYTES
