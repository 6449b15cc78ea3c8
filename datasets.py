"""Pose datasets: loading, normalisation, frame selection and batching (SPEC section 1)."""
import io
import pickle


class BadSampleError(ValueError):
    """A pose or label file that is missing, unreadable or holds unusable data; the message names the file."""


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that references a global outside the numpy/plain-container whitelist (it could run code)."""


# The only globals a pose or label pickle may reference: numpy array/scalar reconstruction and bytes decoding.
_NUMPY_CORE = {"_reconstruct", "scalar"}
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


def safe_pickle_load(path_or_fileobj):
    """Unpickle with a whitelist (numpy arrays, lists, dicts, plain scalars); anything else raises UnsafePickleError."""
    if isinstance(path_or_fileobj, (str, bytes)) or hasattr(path_or_fileobj, "__fspath__"):
        with open(path_or_fileobj, "rb") as f:
            return _load_restricted(f, str(path_or_fileobj))
    return _load_restricted(path_or_fileobj, getattr(path_or_fileobj, "name", "<stream>"))


def _load_restricted(fileobj, source):
    unpickler = _RestrictedUnpickler(fileobj)
    unpickler.source = source
    return unpickler.load()
