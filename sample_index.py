"""The sample list of a dataset split, held compactly: a few numpy buffers instead of a dict per clip.

CSL-News has about 1.5 million clips. As a list of dicts, every DataLoader worker forked from a rank
copies most of it: reading a dict or a string writes its reference count, and each write makes the
kernel copy the whole page it sits on. Here each column (names, pose paths, texts) is one UTF-8 byte
buffer plus an offsets array; reading a sample touches no Python object the parent made, so the
workers share the parent's pages. Items are built on access as {"name", "pose_path", "text"} dicts,
so `index[i]["name"]` reads like the plain list did. A clip of a long video (captions.py) also carries
"frames": (start, end), one row of an int32 (n, 2) array, and its pose path is one of its video's, stored
once per video (RepeatedStrings).

Public: SampleIndex, StringTable, StringTableBuilder, string_table, RepeatedStrings, json_array_blocks.
"""
import collections.abc
import json
import os

import numpy as np

_WHITESPACE = json.decoder.WHITESPACE.match


class StringTable:
    """n strings in one UTF-8 buffer: string i is data[offsets[i]:offsets[i + 1]]. Slices share the buffer."""

    def __init__(self, data, offsets):
        self.data, self.offsets = data, offsets

    def __len__(self):
        return len(self.offsets) - 1

    def __getitem__(self, i):
        return self.data[self.offsets[i]:self.offsets[i + 1]].tobytes().decode("utf-8")

    def slice(self, start, stop):
        """Strings [start, stop) as a table sharing this one's buffer (offsets are absolute)."""
        return StringTable(self.data, self.offsets[start:stop + 1])

    def nbytes(self):
        return self.data.nbytes + self.offsets.nbytes


class StringTableBuilder:
    """Collects strings in batches (each batch encoded and joined at once), then builds one StringTable."""

    def __init__(self):
        self.chunks, self.lengths = [], []

    def add(self, strings):
        """Append a list of strings: joined with NUL and encoded in one call, split where the NULs are."""
        joined = "\0".join(strings).encode("utf-8")
        data = np.frombuffer(joined, dtype=np.uint8)
        separators = np.flatnonzero(data == 0)
        if len(separators) != max(len(strings) - 1, 0):  # a string holds NUL itself: encode one by one
            encoded = [s.encode("utf-8") for s in strings]
            self.lengths.append(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)))
            self.chunks.append(b"".join(encoded))
            return
        if strings:
            ends = np.append(separators, len(data))
            self.lengths.append(np.diff(ends, prepend=-1) - 1)
            self.chunks.append(data[data != 0].tobytes())

    def build(self):
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, dtype=np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        data = np.frombuffer(b"".join(self.chunks), dtype=np.uint8)  # one bytes object; numpy reads it in place
        self.chunks, self.lengths = [], []
        return StringTable(data, offsets)


def string_table(strings):
    """A StringTable of a list of strings (StringTableBuilder in one batch)."""
    builder = StringTableBuilder()
    builder.add(strings)
    return builder.build()


class RepeatedStrings:
    """n strings drawn from a few: string i is table[codes[i]] (a clip's video's pose path); slices share both."""

    def __init__(self, table, codes):
        self.table, self.codes = table, codes

    def __len__(self):
        return len(self.codes)

    def __getitem__(self, i):
        return self.table[self.codes[i]]

    def slice(self, start, stop):
        return RepeatedStrings(self.table, self.codes[start:stop])

    def nbytes(self):
        return self.table.nbytes() + self.codes.nbytes


class SampleIndex(collections.abc.Sequence):
    """Samples of one split: item i is {"name", "pose_path": join(pose_dir, poses[i]), "text"}.

    names=None means each name is its pose path without the extension (CSL-News's convention), which
    saves storing it twice. frames: None (whole files), or an (n, 2) array of each clip's [start, end) frames,
    given as item["frames"].
    """

    def __init__(self, poses, texts, pose_dir, names=None, frames=None):
        if len(poses) != len(texts) or any(c is not None and len(c) != len(poses) for c in (names, frames)):
            raise ValueError("names, poses, texts and frames must have one entry per sample")
        self.poses, self.texts, self.names, self.pose_dir = poses, texts, names, pose_dir
        self.frames = frames

    def __len__(self):
        return len(self.poses)

    def name(self, i):
        return self.names[i] if self.names is not None else os.path.splitext(self.poses[i])[0]

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step != 1:
                raise ValueError("SampleIndex slices must be contiguous")
            return self.slice(start, max(start, stop))
        i = range(len(self))[i]  # negative indices, and IndexError past the end (ends iteration)
        item = {"name": self.name(i), "pose_path": os.path.join(self.pose_dir, self.poses[i]), "text": self.texts[i]}
        if self.frames is not None:
            item["frames"] = (int(self.frames[i, 0]), int(self.frames[i, 1]))
        return item

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def slice(self, start, stop):
        """Samples [start, stop), sharing this index's buffers."""
        names = self.names.slice(start, stop) if self.names is not None else None
        frames = self.frames[start:stop] if self.frames is not None else None
        return SampleIndex(self.poses.slice(start, stop), self.texts.slice(start, stop), self.pose_dir, names, frames)

    def nbytes(self):
        columns = sum(t.nbytes() for t in (self.poses, self.texts, self.names) if t is not None)
        return columns + (self.frames.nbytes if self.frames is not None else 0)


def json_array_blocks(path, block_chars=1 << 22):
    """Yield the elements of the top-level JSON array in a file as lists of consecutive elements, reading it
    block_chars characters at a time, so memory stays at a few blocks whatever the file's size.

    Each block is cut after an element that ends in '}' and parsed by json.loads in one call (the C
    parser: far faster than a Python loop over elements). A cut that falls inside a string makes the
    block invalid JSON (its last string is unterminated), so a failed parse moves the cut before the
    error and tries again. Raises json.JSONDecodeError (a ValueError) for anything but a JSON array, and
    UnicodeDecodeError (also a ValueError) for a file that is not UTF-8.
    """
    with open(path, encoding="utf-8") as f:
        pending, eof = "", False
        while not eof and not pending.strip():  # up to the first character that is not whitespace
            more = f.read(block_chars)
            eof = len(more) < block_chars
            pending += more
        start = _WHITESPACE(pending, 0).end()
        if pending[start:start + 1] != "[":
            raise json.JSONDecodeError("expected a JSON list", pending, start)
        pending, count = pending[start + 1:], 0
        while not eof:
            more = f.read(block_chars)
            eof = len(more) < block_chars
            pending += more
            cut = _element_boundary(pending, len(pending))
            while cut is not None:
                try:
                    block = json.loads("[" + pending[:cut] + "]")
                    break
                except json.JSONDecodeError as error:  # positions count the "[" added in front
                    cut = _element_boundary(pending, min(cut, error.pos - 1))
            if cut is None:  # no whole element yet: read on
                continue
            yield block
            count += len(block)
            pending = pending[cut + 1:]
        try:
            block = json.loads("[" + pending)  # the rest ends with the list's "]"
        except json.JSONDecodeError as error:
            raise json.JSONDecodeError(f"after list element {count}: {error.msg}", error.doc, error.pos) from None
        if not isinstance(block, list):
            raise json.JSONDecodeError("expected a JSON list", pending, 0)
        yield block


def _element_boundary(text, before):
    """Position of the last ',' before `before` that directly follows a '}' (whitespace between allowed)."""
    cut = text.rfind(",", 0, before)
    while cut > 0:
        end = cut - 1
        while end >= 0 and text[end] in " \t\r\n":
            end -= 1
        if end >= 0 and text[end] == "}":
            return cut
        cut = text.rfind(",", 0, cut)
    return None


class LabelFileError(ValueError):
    """A label file that cannot give this run its samples; the message names the file and the fix."""


def refuse_duplicate_names(samples, label_path, phase):
    """A LabelFileError when two samples of a split share a name (scoring keys references by name)."""
    first = {}
    for i in range(len(samples)):
        name = samples.name(i)
        if name in first:
            raise LabelFileError(f"{label_path}: two {phase} entries (numbers {first[name]} and {i} of the split) "
                                 f"share the name {name!r}, so one reference would replace the other when scoring: "
                                 "give every entry its own name (or remove the duplicate)")
        first[name] = i
