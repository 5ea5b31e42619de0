"""IDX files (the MNIST / Fashion-MNIST format), raw or gzip-compressed.

Layout, all big-endian::

    bytes 0-1   0x00 0x00
    byte  2     element type: 0x08 ubyte, 0x09 byte, 0x0B short, 0x0C int,
                0x0D float, 0x0E double
    byte  3     ndim
    then        ndim uint32 dimensions, then prod(dims) elements, nothing after.

The header is checked against the payload length *before* anything the header
asks for is allocated, so a forged header (``dims = 2**32 - 1``) fails fast
instead of exhausting memory. A header NumPy cannot represent at all (more than
64 dims, or dims whose product overflows even though one of them is 0) is
malformed too.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from xcnn._atomic import atomic_write_bytes

__all__ = ["IDX_DTYPES", "read_idx", "write_idx"]

#: IDX element type code -> big-endian NumPy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"
# Deflate cannot expand data by more than about 1032:1, so a gzip file whose
# header promises more than this many times its compressed size is truncated.
_MAX_DEFLATE_RATIO = 1100
_CHUNK = 1 << 22
# NumPy (>= 2) arrays hold at most 64 dimensions; the IDX header allows 255.
_MAX_NDIM = 64


def _fail(path: Path, what: str) -> ValueError:
    return ValueError(f"malformed IDX file {str(path)!r}: {what}")


def _read_exact(stream: BinaryIO, n: int, path: Path, what: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise _fail(path, f"file ends inside the {what} (needed {n} bytes, got {len(data)})")
    return data


def _parse_header(stream: BinaryIO, path: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """Read the magic and dims; return (dtype, shape, header length in bytes)."""
    magic = _read_exact(stream, 4, path, "4-byte magic number")
    if magic[0] != 0 or magic[1] != 0:
        raise _fail(path, f"magic number must start with two zero bytes, got {magic[:2].hex(' ')}")
    type_code, ndim = magic[2], magic[3]
    if type_code not in IDX_DTYPES:
        valid = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise _fail(path, f"unknown element type 0x{type_code:02X} (valid: {valid})")
    if ndim == 0:
        raise _fail(path, "the header declares 0 dimensions")
    if ndim > _MAX_NDIM:
        raise _fail(path, f"the header declares {ndim} dimensions, NumPy holds at most {_MAX_NDIM}")
    dims = struct.unpack(f">{ndim}I", _read_exact(stream, 4 * ndim, path, "dimensions"))
    dtype, shape = IDX_DTYPES[type_code], tuple(int(d) for d in dims)
    # A file cannot hold more than an intp's worth of bytes, so a shape that large
    # fails the size checks as truncated; but a zero dim makes the promised size 0,
    # and NumPy still refuses the shape when its other dims multiply past intp.
    nonzero = math.prod(d for d in shape if d)
    if 0 in shape and nonzero * dtype.itemsize > np.iinfo(np.intp).max:
        raise _fail(
            path,
            f"the header declares shape {shape}: no elements, but its non-zero dims "
            f"multiply past the largest array NumPy can address",
        )
    return dtype, shape, 4 + 4 * ndim


def _read_raw(stream: BinaryIO, path: Path, dtype: np.dtype, count: int, header: int) -> bytearray:
    expected = count * dtype.itemsize
    actual = os.fstat(stream.fileno()).st_size - header
    if actual < expected:
        raise _fail(
            path, f"truncated: the header promises {expected} data bytes, the file holds {actual}"
        )
    if actual > expected:
        raise _fail(path, f"{actual - expected} trailing bytes after the {expected} data bytes")
    # readinto a bytearray gives a writable array without a second copy.
    buffer = bytearray(expected)
    if stream.readinto(buffer) != expected:
        raise _fail(path, "the file shrank while it was being read")
    return buffer


def _read_gzip(path: Path) -> tuple[np.dtype, tuple[int, ...], bytes | bytearray]:
    """Decompress in bounded chunks, never reading more than the header promises."""
    compressed_size = path.stat().st_size
    with gzip.open(path, "rb") as stream:
        dtype, shape, _ = _parse_header(stream, path)
        expected = math.prod(shape) * dtype.itemsize
        if expected > _MAX_DEFLATE_RATIO * compressed_size + _CHUNK:
            raise _fail(
                path,
                f"truncated: the header promises shape {shape} ({expected} data bytes), more "
                f"than a {compressed_size}-byte gzip file can hold",
            )
        buffer = bytearray()
        while len(buffer) < expected:
            chunk = stream.read(min(_CHUNK, expected - len(buffer)))
            if not chunk:
                raise _fail(
                    path,
                    f"truncated: the header promises {expected} data bytes, "
                    f"the file holds {len(buffer)}",
                )
            buffer += chunk
        extra = len(stream.read(_CHUNK))
        if extra:
            more = "" if extra < _CHUNK else " or more"
            raise _fail(path, f"{extra}{more} trailing bytes after the {expected} data bytes")
    return dtype, shape, buffer


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed, into a NumPy array.

    Parameters
    ----------
    path : str or path-like
        The file. Compression is detected from the content, not the name.

    Returns
    -------
    numpy.ndarray
        Shape and dtype as the header declares (``uint8``, ``int8``, ``int16``,
        ``int32``, ``float32`` or ``float64``), in native byte order.

    Raises
    ------
    ValueError
        The file is malformed (bad magic, unknown type, truncated, trailing
        bytes, corrupt gzip stream); the message names the file.

    Examples
    --------
    >>> import tempfile, os, numpy as np
    >>> from xcnn.data import read_idx, write_idx
    >>> p = os.path.join(tempfile.mkdtemp(), "x-idx2-ubyte.gz")
    >>> write_idx(p, np.arange(6, dtype=np.uint8).reshape(2, 3))
    >>> read_idx(p)
    array([[0, 1, 2],
           [3, 4, 5]], dtype=uint8)
    """
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            compressed = stream.read(2) == _GZIP_MAGIC
            if not compressed:
                stream.seek(0)
                dtype, shape, header = _parse_header(stream, path)
                payload = _read_raw(stream, path, dtype, math.prod(shape), header)
        if compressed:
            dtype, shape, payload = _read_gzip(path)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise _fail(path, f"corrupt gzip stream ({error})") from error
    array = np.frombuffer(payload, dtype=dtype).reshape(shape)
    # One-byte types need no swap; wider ones are copied into native order.
    return array.astype(dtype.newbyteorder("="), copy=dtype.itemsize > 1)


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when ``path`` ends in ``.gz``).

    Parameters
    ----------
    path : str or path-like
        Destination; written to a temporary file first and renamed into place.
    array : numpy.ndarray
        At least 1-D, of dtype uint8, int8, int16, int32, float32 or float64.
    compress : bool, optional
        Force compression on or off; by default follows the ``.gz`` suffix.
        Compressed output has a zero timestamp, so equal arrays give equal bytes.
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes or array.ndim == 0:
        raise ValueError(
            f"write_idx({str(path)!r}): expected a >=1-D array of dtype "
            f"uint8/int8/int16/int32/float32/float64, got {array.dtype} of shape {array.shape}"
        )
    code = codes[native]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    body = np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        data = gzip.compress(header + body, compresslevel=9, mtime=0)
    else:
        data = header + body
    atomic_write_bytes(path, data)
