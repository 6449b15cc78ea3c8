"""Frames [start, end) of a long video's pose pickle, read without reading the rest of the file.

A pose pickle as script/extract_poses.py writes it holds each of keypoints (T, P, 133, 2) and scores (T, P, 133)
as one C-ordered array, whose bytes the pickle stores as one opcode (BINBYTES / BINBYTES8 / BYTEARRAY8) followed by
its T * frame_bytes payload. Cutting a clip out of an hour-long video should not cost reading the hour (about
150 MB at 25 fps), so the file is first scanned opcode by opcode through a memory map (pickletools' table gives
each opcode's argument size), stepping over every payload of LARGE_PAYLOAD bytes or more without touching its
pages. The scanned pickle is then rebuilt without those payloads (each replaced by a short marker naming its
offset in the file; FRAME opcodes, only a read-ahead hint, dropped) and unpickled with safe_pickle's
PoseUnpickler, which runs no code and leaves arrays unbuilt, so a marked array's shape and dtype are known; its
clip is then read from the file at offset + start * frame_bytes: only the clip's bytes. A pickle that stores
frames as a list of per-frame arrays (RTMPose's layout) has no large payload; the scan finds none (or gives up
after MAX_SCANNED_OPS opcodes) and the file is read whole (safe_pickle), then sliced.

Public: read_clip (the pose dict with keypoints and scores cut to the clip), probe (frames and fps of a file),
CLIP_READERS (file extension -> its clip reader and prober): pickles as above, `.pose` files (pose-format) read
whole through pose_files.py, then cut.
"""
import functools
import io
import math
import mmap
import os
import pickletools

import numpy as np

import pose_files
from safe_pickle import PoseUnpickler, _RawArray, build_frames, load_restricted

LARGE_PAYLOAD = 1 << 16  # bytes; pickle's own framing writes payloads this large outside its frames
MAX_SCANNED_OPS = 10_000  # an array-layout pose pickle has about 100 opcodes
# opcode byte -> its argument's size (pickletools' n: >= 0 fixed, < 0 a length prefix or a line); None: no opcode
_ARGUMENT = [None] * 256
for _op in pickletools.opcodes:
    _ARGUMENT[ord(_op.code)] = _op.arg.n if _op.arg is not None else 0
_BYTES_CODES = {ord(code) for code in ("B", "\x8e", "\x96")}  # BINBYTES, BINBYTES8, BYTEARRAY8
_TWO_LINES = {ord("c"), ord("i")}  # GLOBAL and INST: module and name lines
_FRAME, _STOP = 0x95, ord(".")
_LENGTH_BYTES = {pickletools.TAKEN_FROM_ARGUMENT1: (1, False), pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
                 pickletools.TAKEN_FROM_ARGUMENT4U: (4, False), pickletools.TAKEN_FROM_ARGUMENT8U: (8, False)}
_MARKER = b"\0pose_clips payload "


class _ListLayout(Exception):
    """The pickle has no large payload to seek over (frames stored one array each, or an old protocol)."""


def _scan(data):
    """(the pickle without its large payloads, {marker: (offset, length)}) from the file's bytes (a memory map:
    only the pages the opcodes sit on are read); raises _ListLayout. The bytes between dropped parts are kept as
    whole spans (one slice each), and opcodes are looked up by their byte in flat tables: the loop is what costs."""
    kept, payloads, position, span, size = [], {}, 0, 0, len(data)
    for _ in range(MAX_SCANNED_OPS):
        if position >= size:
            raise ValueError(f"not a pickle: it ends at byte {position} without its STOP opcode")
        code = data[position]
        argument = _ARGUMENT[code]
        if argument is None:
            raise ValueError(f"not a pickle: opcode {bytes([code])!r} at byte {position}")
        begin, length = position, 0
        position += 1
        if argument >= 0:
            position += argument
        elif argument == pickletools.UP_TO_NEWLINE:
            for _ in range(2 if code in _TWO_LINES else 1):
                position = data.find(b"\n", position) + 1
                if position == 0:
                    raise ValueError("not a pickle: a line without its end")
        else:
            prefix, signed = _LENGTH_BYTES[argument]
            length = int.from_bytes(data[position:position + prefix], "little", signed=signed)
            position += prefix
        if code in _BYTES_CODES and length >= LARGE_PAYLOAD:
            marker = _MARKER + str(len(payloads)).encode()
            payloads[marker] = (position, length)
            kept += [data[span:begin], b"C" + bytes([len(marker)]) + marker]  # SHORT_BINBYTES marker
            span = position + length
        elif code == _FRAME:
            kept.append(data[span:begin])
            span = position
        position += length
        if code == _STOP:
            if not payloads:
                raise _ListLayout
            kept.append(data[span:position])
            return b"".join(kept), payloads
    raise _ListLayout


@functools.lru_cache(maxsize=64)
def _layout(path, size, mtime):
    """The pickle's dict with large arrays left as (offset, shape, dtype) stand-ins; None for the list layout.
    Cached per file (size and mtime in the key): a worker reads many clips of one video."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        try:
            kept, payloads = _scan(data)
        except _ListLayout:
            return None
    stream = io.BytesIO(kept)
    stream.name = path  # error messages name the real file
    pose = load_restricted(stream, PoseUnpickler)
    if not isinstance(pose, dict):
        return pose  # load_pose names the problem
    return {key: _payload_array(value, payloads) for key, value in pose.items()}


class _FileArray:
    """An array whose bytes stay in the file: C order, frames first."""

    def __init__(self, offset, shape, dtype):
        self.offset, self.shape, self.dtype = offset, shape, dtype
        self.frame_bytes = math.prod(shape[1:]) * dtype.itemsize

    def read(self, f, start, end):
        end = max(start, min(end, self.shape[0]))
        count = (end - start) * self.frame_bytes // self.dtype.itemsize
        f.seek(self.offset + start * self.frame_bytes)
        frames = np.fromfile(f, dtype=self.dtype, count=count)  # only the clip's bytes
        if len(frames) != count:
            raise ValueError(f"file ends inside its arrays (read {len(frames)} of {count} values)")
        return frames.reshape((end - start,) + tuple(self.shape[1:]))


def _payload_array(value, payloads):
    if not isinstance(value, _RawArray) or len(value.state) != 5 or value.state[4] not in payloads:
        return value
    _, shape, dtype, fortran_order, marker = value.state
    offset, length = payloads[marker]
    if fortran_order or dtype.hasobject or not shape or math.prod(shape) * dtype.itemsize != length:
        raise ValueError(f"an array of shape {shape} ({dtype}) that is not stored frame by frame")
    return _FileArray(offset, tuple(shape), dtype)


def _whole(path):
    return load_restricted(path, PoseUnpickler)


def read_pickle_clip(path, start, end):
    """The pose dict of `path` with keypoints and scores cut to frames [start, end) of the stored frames that the
    file's own start/end keys keep (so a clip never reaches outside them); other keys as stored."""
    layout = _layout(path, *_stat(path))
    pose = _whole(path) if layout is None else dict(layout)
    if not isinstance(pose, dict):
        return pose
    stored = _frame_count(pose)
    first = pose.get("start") or 0
    last = stored if pose.get("end") is None else pose["end"]
    if not all(isinstance(v, (int, np.integer)) for v in (first, last)):
        return pose  # load_pose refuses it, naming the keys
    begin, stop = first + start, min(first + end, last)
    with open(path, "rb") as f:
        for key in ("keypoints", "scores"):
            value = pose.get(key)
            if isinstance(value, _FileArray):
                pose[key] = value.read(f, begin, stop)
            elif value is not None:
                pose[key] = build_frames(value)[begin:max(begin, stop)]
    pose["start"], pose["end"] = None, None
    return pose


def _frame_count(pose):
    value = pose.get("keypoints")
    if isinstance(value, _FileArray):
        return value.shape[0]
    return len(value) if isinstance(value, (list, tuple)) else len(build_frames(value)) if value is not None else 0


def _stat(path):
    status = os.stat(path)
    return status.st_size, status.st_mtime_ns


def probe_pickle(path):
    """(frames the file's own start/end keep, fps or None): reads only the pickle's small values when the file
    has the array layout."""
    layout = _layout(path, *_stat(path))
    pose = _whole(path) if layout is None else layout
    if not isinstance(pose, dict) or "keypoints" not in pose:
        raise ValueError("expected a dict with 'keypoints' and 'scores'")
    stored = _frame_count(pose)
    first = pose.get("start") or 0
    last = stored if pose.get("end") is None else min(pose["end"], stored)
    fps = pose.get("fps")
    return max(0, last - first), (float(fps) if isinstance(fps, (int, float, np.number)) and fps > 0 else None)


def read_pose_format_clip(path, start, end):
    """Frames [start, end) of a `.pose` file (pose-format), mapped onto COCO-WholeBody's points (pose_files.py);
    pose-format reads the whole body, so the file is read whole, then cut."""
    record = pose_files.read_pose_file(path)
    return {"keypoints": record.keypoints[start:end, None], "scores": record.scores[start:end, None],
            "fps": record.fps}


def probe_pose_format(path):
    record = pose_files.read_pose_file(path)
    return len(record.keypoints), record.fps


# extension -> (read_clip(path, start, end) -> pose dict, probe(path) -> (frames, fps))
CLIP_READERS = {".pkl": (read_pickle_clip, probe_pickle), ".pose": (read_pose_format_clip, probe_pose_format)}


def read_clip(path, start, end):
    """The pose dict of frames [start, end) of `path` (its reader chosen by extension)."""
    return _reader(path)[0](path, start, end)


def probe(path):
    """(number of frames, fps or None) of a pose file, reading as little of it as its format allows."""
    return _reader(path)[1](path)


def _reader(path):
    extension = os.path.splitext(path)[1]
    if extension not in CLIP_READERS:
        raise ValueError(f"no clip reader for {extension!r} files (known: {', '.join(sorted(CLIP_READERS))})")
    return CLIP_READERS[extension]
