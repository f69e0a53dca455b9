"""Reading ``.npy`` arrays from files a user hands over, without trusting them.

:func:`numpy.load` allocates what the header declares before it reads the data, and an object
array is a pickle.  :func:`read_header` parses the header alone and refuses, before anything is
allocated, an array of Python objects, a structured dtype and a declared size larger than the
bytes that follow the header; :func:`load_npy` and :func:`load_npz_member` then load with
``allow_pickle=False``.  Every problem is an :class:`NpyError` with a one-line message.
"""
from __future__ import annotations

import math
import os
import zipfile

import numpy as np

__all__ = ["NpyError", "NpyHeader", "read_header", "load_npy", "load_npz_member", "MAGIC"]

MAGIC = b"\x93NUMPY"


class NpyError(ValueError):
    """The bytes are not a safe, complete ``.npy`` array of real numbers."""


class NpyHeader:
    """What an ``.npy`` header declares: ``shape``, ``dtype`` and the data size ``nbytes``."""

    def __init__(self, shape: tuple, dtype: np.dtype, fortran_order: bool = False):
        self.shape = shape
        self.dtype = dtype
        self.fortran_order = fortran_order
        self.nbytes = math.prod(shape) * dtype.itemsize      # Python integers: no overflow

    @property
    def ndim(self) -> int:
        return len(self.shape)


def read_header(file, available: int, *, kinds: str = "biufc") -> NpyHeader:
    """Parse the header at the current position of ``file``; ``available`` is the number of bytes
    from that position to the end of the data.

    Raises :class:`NpyError` for a bad magic string, a malformed header, a dtype that is not a
    plain number (objects would be unpickled, records and strings are not values), or a declared
    size beyond ``available``.  ``kinds`` are the dtype kinds accepted (numbers by default)."""
    start = file.tell()
    magic = file.read(len(MAGIC))
    if magic != MAGIC:
        raise NpyError("not a .npy array (no NUMPY magic string)")
    file.seek(start)
    try:
        major, _ = np.lib.format.read_magic(file)
        reader = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = reader(file)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise NpyError(f"malformed .npy header ({reason})") from None
    if dtype.hasobject:
        raise NpyError("holds Python objects (a pickle); refused: only arrays of numbers are read")
    if dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None:
        wanted = "real numbers" if kinds == "biufc" else "dtype kind " + " or ".join(kinds)
        raise NpyError(f"must hold {wanted}, not dtype {dtype}")
    header = NpyHeader(tuple(int(n) for n in shape), dtype, bool(fortran_order))
    data = available - (file.tell() - start)
    if header.nbytes > data:
        raise NpyError(f"declares shape {header.shape} of {dtype} ({header.nbytes} bytes) but holds "
                       f"only {max(data, 0)} bytes of data (truncated or forged)")
    return header


def load_npy(path: str, check=None) -> np.ndarray:
    """The array of the ``.npy`` file ``path``; ``check(header)`` may raise before the data is
    read."""
    try:
        with open(path, "rb") as file:
            header = read_header(file, os.fstat(file.fileno()).st_size)
            if check is not None:
                check(header)
            file.seek(0)
            return np.load(file, allow_pickle=False)
    except OSError as exc:
        raise NpyError(f"cannot be read: {exc.strerror or exc}") from None
    except (ValueError, EOFError) as exc:
        if isinstance(exc, NpyError):
            raise
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise NpyError(f"is not a loadable .npy array ({reason})") from None


def load_npz_member(archive: zipfile.ZipFile, name: str, check=None, *, kinds: str = "biufc") -> np.ndarray:
    """The array ``name`` (without ``.npy``) of an ``.npz`` archive opened as a zip file.  The
    header is checked against the member's declared size, and only the bytes it declares are
    read."""
    info = archive.getinfo(f"{name}.npy")
    try:
        with archive.open(info) as member:
            header = read_header(member, info.file_size, kinds=kinds)
            if check is not None:
                check(header)
            data = member.read(header.nbytes)
    except NpyError as exc:
        raise NpyError(f"{name}: {exc}") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise NpyError(f"{name}: not a loadable array ({reason})") from None
    if len(data) != header.nbytes:
        raise NpyError(f"{name}: the archive member ends before the data its header declares")
    array = np.frombuffer(data, dtype=header.dtype)
    return array.reshape(header.shape, order="F" if header.fortran_order else "C").copy()
