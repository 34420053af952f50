"""Loading model pickles without executing code.

FLAME files are pickles, and a pickle can run arbitrary code when loaded. We therefore unpickle with an
allow-list: numpy arrays/dtypes/scalars, scipy sparse matrices and chumpy objects (turned into plain
numpy arrays, so chumpy need not be installed). Any other global is refused with :class:`UnsafePickleError`
naming the class and the file, before anything is called.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from flamefit.errors import ModelFileError, UnsafePickleError

_NUMPY_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # how Python 3 writes bytes in protocol-2 pickles; encodes a string, nothing more
}
_BUILTINS_ALLOWED = {"set", "frozenset", "slice", "complex"}
_SPARSE_FORMATS = ("csc_matrix", "csr_matrix", "coo_matrix")


class _ChumpyPlaceholder:
    """Stands in for a chumpy object during unpickling; its state holds the array under ``x``."""

    chumpy_class = "chumpy"

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _SparsePlaceholder:
    """Collects a scipy sparse matrix's pickled ``__dict__`` so it can be rebuilt with the installed scipy."""

    sparse_format = "csc_matrix"

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _chumpy_class(name: str) -> type:
    return type(f"chumpy_{name}", (_ChumpyPlaceholder,), {"chumpy_class": name})


def _sparse_class(name: str) -> type:
    return type(f"sparse_{name}", (_SparsePlaceholder,), {"sparse_format": name})


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="latin1")
        self.source = source
        self.globals_seen: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        self.globals_seen.add(f"{module}.{name}")
        if (module, name) in _NUMPY_ALLOWED:
            return super().find_class(module, name)
        if module in ("builtins", "__builtin__") and name in _BUILTINS_ALLOWED:
            return super().find_class("builtins", name)
        if module.startswith("chumpy"):
            return _chumpy_class(f"{module}.{name}")
        if module.startswith("scipy.sparse") and name in _SPARSE_FORMATS:
            return _sparse_class(name)
        raise UnsafePickleError(
            f"{self.source}: refusing to load class '{module}.{name}' from this pickle. flamefit only "
            "accepts numpy arrays, scipy sparse matrices and chumpy arrays in model files; a pickle that asks "
            "for other classes may run code. Use the official file from the FLAME website "
            "(https://flame.is.tue.mpg.de)."
        )


# Model files nest a few levels (dict -> chumpy state -> array); anything deeper is damaged or hostile, and a
# self-referencing structure would otherwise recurse until Python's RecursionError.
MAX_NESTING = 32


def _too_deep(source: str) -> ModelFileError:
    return ModelFileError(
        f"{source}: the pickle's objects are nested more than {MAX_NESTING} levels deep or refer to themselves; "
        "a FLAME model file is a flat dict of arrays. The file is damaged or not a model file; download it again."
    )


def _convert(obj: Any, source: str, depth: int = 0) -> Any:
    """Replace placeholders by numpy arrays / scipy matrices, recursively (at most MAX_NESTING levels)."""
    if depth > MAX_NESTING:
        raise _too_deep(source)
    depth += 1
    if isinstance(obj, _ChumpyPlaceholder):
        state = getattr(obj, "state", None)
        if isinstance(state, dict) and "x" in state:
            try:
                return np.asarray(_convert(state["x"], source, depth))
            except (ValueError, TypeError) as exc:
                raise ModelFileError(f"{source}: a chumpy array in this file holds no numeric array ({exc}).") \
                    from None
        raise ModelFileError(
            f"{source}: a chumpy object of class '{obj.chumpy_class}' holds no plain array value; flamefit "
            "can read FLAME files whose chumpy objects are plain `Ch` arrays. Re-save the model with numpy "
            "arrays or use the FLAME 2023 file."
        )
    if isinstance(obj, _SparsePlaceholder):
        import scipy.sparse

        state = getattr(obj, "state", {}) or {}
        try:
            if obj.sparse_format == "coo_matrix":
                return scipy.sparse.coo_matrix(
                    (state["data"], (state["row"], state["col"])), shape=tuple(state["_shape"])
                )
            cls = getattr(scipy.sparse, obj.sparse_format)
            return cls((state["data"], state["indices"], state["indptr"]), shape=tuple(state["_shape"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{source}: a sparse matrix in this file is damaged ({exc}).") from exc
    if isinstance(obj, dict):
        return {k: _convert(v, source, depth) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_convert(v, source, depth) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_convert(v, source, depth) for v in obj)
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        out = np.empty(obj.shape, dtype=object)
        for i, v in enumerate(obj.ravel()):
            out.flat[i] = _convert(v, source, depth)
        return out
    return obj


def loads_restricted(data: bytes, source: str = "<bytes>", globals_seen: set[str] | None = None) -> Any:
    """Unpickle ``data`` with the allow-list; ``source`` names the file in errors.

    ``globals_seen``, when given, receives the names of the classes the pickle referenced.
    """
    unpickler = _RestrictedUnpickler(io.BytesIO(data), source)
    try:
        obj = unpickler.load()
    except UnsafePickleError:
        raise
    except RecursionError:
        raise _too_deep(source) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, ImportError, UnicodeDecodeError, MemoryError) as exc:
        raise ModelFileError(
            f"{source}: not a readable model pickle ({type(exc).__name__}: {exc}). The file may be truncated "
            "or not a FLAME model; download it again."
        ) from exc
    finally:
        if globals_seen is not None:
            globals_seen.update(unpickler.globals_seen)
    try:
        return _convert(obj, source)
    except RecursionError:  # e.g. a chumpy state that nests through numpy object arrays
        raise _too_deep(source) from None


def load_restricted(path: str | Path, globals_seen: set[str] | None = None) -> Any:
    """Load a pickle file (or a ``.npy`` holding a pickled object, as RingNet's dynamic embedding) safely."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the file ({exc.strerror}).") from exc
    if data[:6] == b"\x93NUMPY":
        return _load_npy(data, str(path))
    if data[:4] == b"PK\x03\x04":  # a zip archive: .npz (texture space, UV layout) or a torch checkpoint
        raise ModelFileError(
            f"{path}: this is a zip archive (e.g. an .npz texture space or UV layout), not a pickled model file. "
            "Give it where it belongs (--texture-space, $FLAMEFIT_UV_LAYOUT) and the FLAME model .pkl here."
        )
    return loads_restricted(data, str(path), globals_seen)


def _load_npy(data: bytes, source: str) -> Any:
    """Read a .npy file; object arrays are unpickled with the allow-list instead of numpy's pickle.load."""
    from numpy.lib import format as npy_format

    buf = io.BytesIO(data)
    try:
        version = npy_format.read_magic(buf)
        if version == (1, 0):
            header = npy_format.read_array_header_1_0(buf)
        else:
            header = npy_format.read_array_header_2_0(buf)
    except ValueError as exc:
        raise ModelFileError(f"{source}: damaged .npy header ({exc}).") from exc
    shape, fortran, dtype = header
    if dtype.hasobject:
        obj = loads_restricted(data[buf.tell():], source)
        # np.save of a dict stores a 0-d object array; unwrap it as np.load(...).item() would.
        if isinstance(obj, np.ndarray) and obj.shape == () and obj.dtype == object:
            return obj.item()
        return obj
    buf.seek(0)
    return np.load(buf, allow_pickle=False)
