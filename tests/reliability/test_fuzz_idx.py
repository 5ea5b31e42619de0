"""Fuzz ``xcnn.data.read_idx``: every file either loads exactly or raises ValueError naming it.

The oracle is :func:`reference_decode`, a second IDX parser written here from the
format description (not from xcnn's code). For each generated file, raw or gzip:

* if the oracle says the bytes encode an array, ``read_idx`` must return that
  array (same dtype, shape and bytes, native byte order);
* otherwise ``read_idx`` must raise ``ValueError`` whose message names the file,
  never another exception type, never hang, and never allocate what a forged
  header asks for (peak allocation stays under 50 MB for dims like 2**31).
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from xcnn.data import read_idx

# IDX element type code -> big-endian dtype, from the format description.
CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"
PEAK_LIMIT = 50 * 2**20
# numpy cannot hold more dimensions than this; such files must fail as malformed.
NUMPY_MAXDIMS = 64

FUZZ = settings(
    max_examples=150,
    deadline=2000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)


def encode(array: np.ndarray, code: int, dims: tuple[int, ...] | None = None) -> bytes:
    """The IDX bytes of ``array`` (optionally with a forged ``dims`` header)."""
    dims = array.shape if dims is None else dims
    header = bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    return header + np.asarray(array, dtype=CODES[code]).tobytes()


def _gunzip(data: bytes) -> bytes | None:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        return None


def reference_decode(data: bytes) -> np.ndarray | None:
    """The array ``data`` encodes as an IDX file (raw or gzip), or None if it is malformed."""
    if data[:2] == GZIP_MAGIC:
        data = _gunzip(data)
        if data is None:
            return None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in CODES:
        return None
    ndim = data[3]
    if ndim == 0 or ndim > NUMPY_MAXDIMS or len(data) < 4 + 4 * ndim:
        return None
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = np.dtype(CODES[data[2]])
    payload = data[4 + 4 * ndim :]
    if len(payload) != math.prod(dims) * dtype.itemsize:
        return None
    try:
        array = np.frombuffer(payload, dtype=dtype).reshape(dims)
    except ValueError:  # e.g. a zero dim beside dims whose product overflows intp
        return None
    return array.astype(dtype.newbyteorder("="))


def check(path, data: bytes, no_hang) -> np.ndarray | None:
    """Write ``data`` to ``path`` and hold ``read_idx`` to the oracle."""
    path.write_bytes(data)
    expected = reference_decode(data)
    if expected is None:
        with no_hang(5.0), pytest.raises(ValueError) as caught:
            read_idx(path)
        assert str(path) in str(caught.value), f"error does not name the file: {caught.value}"
        return None
    with no_hang(5.0):
        got = read_idx(path)
    assert type(got) is np.ndarray
    assert got.dtype == expected.dtype and got.dtype.isnative
    assert got.shape == expected.shape
    # Bytes, not values: NaN payloads and -0.0 must survive too.
    assert got.tobytes() == expected.tobytes()
    return got


@st.composite
def idx_arrays(draw, max_ndim: int = 3, max_side: int = 4) -> tuple[np.ndarray, int]:
    code = draw(st.sampled_from(sorted(CODES)))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=max_ndim, min_side=0, max_side=max_side))
    native = np.dtype(CODES[code]).newbyteorder("=")
    array = draw(hnp.arrays(native, shape))
    return array, code


def mutate(data: bytes, draw) -> bytes:
    """One corruption: flip bits, truncate, extend, or overwrite a run of bytes."""
    kind = draw(st.sampled_from(["flip", "truncate", "extend", "overwrite"]))
    if kind == "flip" and data:
        index = draw(st.integers(0, len(data) - 1))
        mask = draw(st.integers(1, 255))
        return data[:index] + bytes([data[index] ^ mask]) + data[index + 1 :]
    if kind == "truncate" and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "overwrite" and data:
        start = draw(st.integers(0, len(data) - 1))
        chunk = draw(st.binary(min_size=1, max_size=8))
        return data[:start] + chunk + data[start + len(chunk) :]
    return data + draw(st.binary(min_size=1, max_size=16))


# -- valid files ----------------------------------------------------------------------


@FUZZ
@given(arr=idx_arrays(), compress=st.booleans())
def test_valid_files_load_exactly(tmp_path, no_hang, arr, compress):
    array, code = arr
    data = encode(array, code)
    if compress:
        data = gzip.compress(data, mtime=0)
    got = check(tmp_path / "valid-idx", data, no_hang)
    assert got is not None, "the oracle rejected a file the test built as valid"
    assert got.tobytes() == array.tobytes()


# -- random bytes -----------------------------------------------------------------------


@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=96),
        st.binary(max_size=96).map(lambda b: GZIP_MAGIC + b),  # looks compressed, is not
        st.binary(max_size=96).map(lambda b: gzip.compress(b, mtime=0)),  # valid gzip of junk
        # A plausible header over junk, so the parser gets past the magic.
        st.tuples(st.sampled_from(sorted(CODES)), st.integers(1, 4), st.binary(max_size=64)).map(
            lambda t: bytes([0, 0, t[0], t[1]]) + t[2]
        ),
    )
)
def test_random_bytes(tmp_path, no_hang, data):
    check(tmp_path / "random-idx", data, no_hang)


# -- mutated valid files --------------------------------------------------------------


@FUZZ
@given(arr=idx_arrays(), compress=st.booleans(), inner=st.booleans(), draw=st.data())
def test_mutated_valid_files(tmp_path, no_hang, arr, compress, inner, draw):
    """Corrupt the IDX bytes (then maybe compress), or corrupt the gzip container itself."""
    array, code = arr
    data = encode(array, code)
    if compress and inner:
        data = gzip.compress(mutate(data, draw.draw), mtime=0)
    elif compress:
        data = mutate(gzip.compress(data, mtime=0), draw.draw)
    else:
        data = mutate(data, draw.draw)
    check(tmp_path / "mutated-idx", data, no_hang)


# -- forged header dims ---------------------------------------------------------------

HUGE = [2**31, 2**32 - 1, 2**31 - 1, 2**24, 10**9]


@settings(FUZZ, max_examples=100)
@given(
    arr=idx_arrays(max_ndim=3, max_side=3),
    compress=st.booleans(),
    draw=st.data(),
)
def test_forged_huge_dims_fail_fast_and_small(tmp_path, no_hang, peak_memory, arr, compress, draw):
    array, code = arr
    dims = list(array.shape)
    # Forge one or more dims (possibly adding one) to a huge value.
    if draw.draw(st.booleans()):
        dims.append(draw.draw(st.sampled_from(HUGE)))
    positions = draw.draw(st.sets(st.integers(0, len(dims) - 1), min_size=1))
    for i in positions:
        dims[i] = draw.draw(st.sampled_from(HUGE))
    data = encode(array, code, tuple(dims))
    if compress:
        data = gzip.compress(data, mtime=0)
    with peak_memory:
        check(tmp_path / "forged-idx", data, no_hang)
    assert peak_memory.bytes < PEAK_LIMIT, (
        f"reading a file forged to dims {dims} allocated {peak_memory.bytes / 2**20:.0f} MB"
    )


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_forged_dims_on_a_large_gzip_stay_bounded(tmp_path, no_hang, peak_memory, compress):
    """A ~40 KB file promising 4 GB: rejected from the sizes, or read only as far as it goes."""
    rng = np.random.default_rng(0)
    body = rng.integers(0, 256, size=40_000, dtype=np.uint8)  # incompressible
    data = encode(body, 0x08, (2**32 - 1,))
    if compress:
        data = gzip.compress(data, mtime=0)
    with peak_memory:
        check(tmp_path / "big-forged-idx", data, no_hang)
    assert peak_memory.bytes < PEAK_LIMIT


# -- deterministic regressions found by the fuzzers ------------------------------------


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("ndim", [65, 255])
def test_more_dims_than_numpy_holds_is_a_malformed_file(tmp_path, compress, ndim):
    """The IDX header allows 255 dims, numpy 64: the file must be rejected naming it."""
    data = encode(np.ones((1,), np.uint8), 0x08, (1,) * ndim)
    if compress:
        data = gzip.compress(data, mtime=0)
    path = tmp_path / "deep-idx"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="deep-idx"):
        read_idx(path)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_zero_dim_beside_overflowing_dims_is_a_malformed_file(tmp_path, compress):
    """(0, 2**32-1, 2**32-1, 2**32-1) promises 0 bytes but no numpy array has that shape."""
    data = encode(np.zeros((0,), np.uint8), 0x08, (0, 2**32 - 1, 2**32 - 1, 2**32 - 1))
    if compress:
        data = gzip.compress(data, mtime=0)
    path = tmp_path / "overflow-idx"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="overflow-idx"):
        read_idx(path)
