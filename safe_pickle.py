"""Pickles read without running their code: pose and label files hold numpy arrays, lists, dicts and plain
scalars only, and an unpickler that knows no other global refuses anything else (UnsafePickleError).
The pose reader's unpickler also defers building arrays, so a file's hundreds of per-frame arrays become
one array with a single bytes join (build_frames)."""
import operator
import pickle
import re

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that references a global outside the numpy/plain-container whitelist (it could run code)."""


# The only globals a pose or label pickle may reference: numpy array/scalar reconstruction and bytes decoding.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # protocol-2 pickles store array bytes as latin-1 text
}


class _RestrictedUnpickler(pickle.Unpickler):
    source = "<stream>"

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(f"{self.source}: refused to load global '{module}.{name}': pose and label "
                                    "pickles may only hold numpy arrays, lists, dicts and plain scalars")
        if module.startswith("numpy.core."):  # files written by numpy 1.x; numpy 2 moved it to numpy._core
            module = "numpy._core." + module[len("numpy.core."):]
        return super().find_class(module, name)


# torch.load(weights_only=True) names the global it refused as "GLOBAL module.name" (in "Unsupported global:
# GLOBAL io.open was not an allowed global by default" and "Trying to load unsupported GLOBAL posix.system whose
# module posix is blocked"), an opcode it cannot read as "Unsupported operand 149".
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([A-Za-z_][\w.]*)")
_REFUSED_OPERAND = re.compile(r"Unsupported operand \d+")


def refuses_code(err):
    """Whether `err`, raised by torch.load(weights_only=True), says the file holds more than tensors (its
    unpickler met a global or an opcode it does not allow), rather than that the file is damaged."""
    text = str(err)
    return isinstance(err, pickle.UnpicklingError) and ("Weights only load failed" in text or "GLOBAL " in text
                                                         or _REFUSED_OPERAND.search(text) is not None)


def refusal_reason(err, limit=200):
    """What torch.load(weights_only=True) refused, in our own words, one line: the global it met ("Unsupported
    global: GLOBAL io.open") or the opcode; for a damaged file, the first sentence of its error. Never torch's
    explanation, which advises loading again with weights_only=False or allowlisting the global, either of
    which would run the file's code."""
    text = " ".join(str(err).split())
    named = _REFUSED_GLOBAL.search(text)
    if named:
        return f"Unsupported global: GLOBAL {named.group(1)}"
    if refuses_code(err):
        operand = _REFUSED_OPERAND.search(text)
        return operand.group(0) if operand else "an object other than tensors"
    first = re.split(r"(?<=[a-z)])\. ", text, maxsplit=1)[0].rstrip(".")
    if not first or "weights_only" in first:
        return type(err).__name__
    return first[:limit]


def safe_pickle_load(path_or_fileobj):
    """Unpickle with a whitelist (numpy arrays, lists, dicts, plain scalars); anything else raises UnsafePickleError."""
    return load_restricted(path_or_fileobj, _RestrictedUnpickler)


def load_restricted(path_or_fileobj, unpickler_class):
    """Unpickle a path or an open binary file with `unpickler_class` (error messages name the file)."""
    if isinstance(path_or_fileobj, (str, bytes)) or hasattr(path_or_fileobj, "__fspath__"):
        with open(path_or_fileobj, "rb") as f:
            return load_restricted(f, unpickler_class)
    unpickler = unpickler_class(path_or_fileobj)
    unpickler.source = getattr(path_or_fileobj, "name", "<stream>")
    return unpickler.load()


class _RawArray:
    """A pickled numpy array not built yet: its pickled state (version, shape, dtype, Fortran order, bytes).

    A pose file holds two arrays per frame; building hundreds of tiny arrays costs more than everything
    else in loading, so the pose reader keeps their states and joins each sequence's bytes once.
    """
    __slots__ = ("state",)

    def __setstate__(self, state):
        self.state = state


def _raw_array(cls, shape, dtype):
    """Stands in for numpy's _reconstruct(ndarray, shape, dtype) while reading pose files."""
    if cls is not np.ndarray:
        raise UnsafePickleError(f"refused to reconstruct {cls!r}: only numpy arrays are allowed")
    return _RawArray()


class PoseUnpickler(_RestrictedUnpickler):
    def find_class(self, module, name):
        found = super().find_class(module, name)  # the whitelist check
        return _raw_array if name == "_reconstruct" else found


_STATE = operator.attrgetter("state")
_STATE_HEADER, _STATE_BYTES = operator.itemgetter(0, 1, 2, 3), operator.itemgetter(4)


def _build_array(item):
    """A real array from a _RawArray (or the item itself when it already is one)."""
    if not isinstance(item, _RawArray):
        return item
    state = item.state if len(item.state) == 5 else (1,) + tuple(item.state)  # very old pickles lack the version
    _, shape, dtype, fortran_order, data = state
    if dtype.hasobject or not isinstance(data, (bytes, bytearray)):
        raise ValueError("array of Python objects")
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran_order else "C")


def build_frames(frames):
    """A sequence of per-frame arrays as one (T, ...) array when all frames share shape and dtype (the usual
    case: a single bytes join), else as a list of arrays; a single stored array is built as it is."""
    if not isinstance(frames, (list, tuple)):
        return _build_array(frames)
    if frames and set(map(type, frames)) == {_RawArray}:
        states = list(map(_STATE, frames))
        headers = set(map(_STATE_HEADER, states))
        if len(headers) == 1:
            version, shape, dtype, fortran_order = headers.pop()
            if version == 1 and not fortran_order and not dtype.hasobject:
                return np.frombuffer(b"".join(map(_STATE_BYTES, states)), dtype).reshape((len(frames),) + shape)
    return [_build_array(frame) for frame in frames]
