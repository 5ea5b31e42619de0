"""read_idx / write_idx: every element type, raw and gzip, and malformed files."""

from __future__ import annotations

import gzip
import struct
import time
import tracemalloc

import numpy as np
import pytest

from xcnn.data import read_idx, write_idx

TYPES = {
    np.uint8: 0x08,
    np.int8: 0x09,
    np.int16: 0x0B,
    np.int32: 0x0C,
    np.float32: 0x0D,
    np.float64: 0x0E,
}


def idx_bytes(array: np.ndarray, code: int | None = None, dims=None) -> bytes:
    """An IDX file built by hand from the format description (the test's own oracle)."""
    code = TYPES[array.dtype.type] if code is None else code
    dims = array.shape if dims is None else dims
    header = bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def put(path, data: bytes, compress: bool):
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def sample_array(dtype, shape, rng):
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    return (rng.standard_normal(shape) * 1e3).astype(dtype)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("dtype", list(TYPES), ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("shape", [(7,), (3, 4, 5)], ids=["1d", "3d"])
def test_reads_every_element_type(tmp_path, rng, dtype, shape, compress):
    array = sample_array(dtype, shape, rng)
    path = put(tmp_path / "a-idx", idx_bytes(array), compress)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.shape == shape
    np.testing.assert_array_equal(out, array)
    assert out.flags.writeable


@pytest.mark.parametrize("dtype", list(TYPES), ids=lambda t: np.dtype(t).name)
def test_write_idx_matches_the_format(tmp_path, rng, dtype):
    array = sample_array(dtype, (2, 3), rng)
    write_idx(tmp_path / "raw-idx", array)
    assert (tmp_path / "raw-idx").read_bytes() == idx_bytes(array)
    write_idx(tmp_path / "c-idx.gz", array)
    assert gzip.decompress((tmp_path / "c-idx.gz").read_bytes()) == idx_bytes(array)


def test_write_idx_gzip_is_reproducible_and_rejects_bad_dtypes(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_idx(tmp_path / "a.gz", array)
    write_idx(tmp_path / "b.gz", array)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()
    with pytest.raises(ValueError, match=r"bad-idx.*complex128"):
        write_idx(tmp_path / "bad-idx", np.zeros(3, dtype=complex))
    assert not list(tmp_path.glob("*bad*"))


def test_compression_is_detected_from_content(tmp_path):
    array = np.arange(6, dtype=np.int16).reshape(2, 3)
    path = put(tmp_path / "misnamed-idx.gz", idx_bytes(array), compress=False)
    np.testing.assert_array_equal(read_idx(path), array)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_truncated_payload(tmp_path, compress):
    data = idx_bytes(np.arange(100, dtype=np.int32))
    path = put(tmp_path / "short-idx", data[:-3], compress)
    with pytest.raises(ValueError, match=r"short-idx.*truncated.*400 data bytes.*397"):
        read_idx(path)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_trailing_bytes(tmp_path, compress):
    data = idx_bytes(np.arange(10, dtype=np.uint8)) + b"\x00\x01"
    path = put(tmp_path / "long-idx", data, compress)
    with pytest.raises(ValueError, match=r"long-idx.*2 trailing bytes"):
        read_idx(path)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"\x01\x00\x08\x01", "two zero bytes"),
        (b"\x00\x07\x08\x01", "two zero bytes"),
        (b"\x00\x00\x0a\x01", "unknown element type 0x0A"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00", "4-byte magic"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x05", "dimensions"),
    ],
    ids=["byte0", "byte1", "type", "ndim0", "short-magic", "short-dims"],
)
def test_bad_headers(tmp_path, header, message, compress):
    path = put(tmp_path / "bad-idx", header + b"\x00" * 5, compress)
    if message in ("4-byte magic", "dimensions"):
        path = put(tmp_path / "bad-idx", header, compress)
    with pytest.raises(ValueError, match=rf"bad-idx.*{message}"):
        read_idx(path)


def test_corrupt_gzip_stream(tmp_path):
    data = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32)))
    path = tmp_path / "corrupt-idx.gz"
    path.write_bytes(data[:12] + bytes(255 - b for b in data[12:40]) + data[40:])
    with pytest.raises(ValueError, match=r"corrupt-idx\.gz.*corrupt gzip"):
        read_idx(path)
    path.write_bytes(data[:-6])  # cut inside the gzip trailer
    with pytest.raises(ValueError, match=r"corrupt-idx\.gz.*corrupt gzip"):
        read_idx(path)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_forged_huge_dims_fail_fast_without_allocating(tmp_path, compress):
    huge = (2**32 - 1, 2**32 - 1, 2**32 - 1)
    data = idx_bytes(np.zeros(16, dtype=np.float64), dims=huge)
    path = put(tmp_path / "forged-idx", data, compress)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=r"forged-idx.*truncated"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 1.0
    assert peak < 1 << 20, f"read_idx allocated {peak} bytes for a forged header"


def test_gzip_bomb_sized_header_reads_only_what_exists(tmp_path):
    # 4 MB of zeros compresses to a few kB; the header claims 40 MB, which is
    # within deflate's ratio bound, so the reader must stream and stop at the end.
    data = idx_bytes(np.zeros(4 << 20, dtype=np.uint8), dims=(40 << 20,))
    path = put(tmp_path / "bomb-idx.gz", data, compress=True)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"bomb-idx\.gz.*truncated.*41943040.*4194304"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_missing_file_is_an_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope-idx")


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_shapes_numpy_cannot_hold_are_malformed_and_the_limits_are_exact(tmp_path, compress):
    # 64 dims is NumPy's limit: one more is a malformed file, exactly 64 loads.
    ones = np.ones(1, np.uint8)
    path = put(tmp_path / "dims-idx", idx_bytes(ones, dims=(1,) * 65), compress)
    with pytest.raises(ValueError, match=r"dims-idx.*65 dimensions, NumPy holds at most 64"):
        read_idx(path)
    path = put(tmp_path / "dims-idx", idx_bytes(ones, dims=(1,) * 64), compress)
    assert read_idx(path).shape == (1,) * 64
    # An empty shape whose other dims multiply past the largest intp (2**63 - 1 bytes).
    empty = np.zeros(0, np.uint8)
    too_big = (0, 2**32 - 1, 2**31 + 1)
    path = put(tmp_path / "empty-idx", idx_bytes(empty, dims=too_big), compress)
    with pytest.raises(ValueError, match=r"empty-idx.*\(0, 4294967295, 2147483649\): no elements"):
        read_idx(path)
    fits = (0, 2**32 - 1, 2**31)  # (2**32 - 1) * 2**31 < 2**63 bytes
    path = put(tmp_path / "empty-idx", idx_bytes(empty, dims=fits), compress)
    out = read_idx(path)
    assert out.shape == fits and out.dtype == np.uint8
    # Float64 elements are 8 bytes: the same dims no longer fit.
    path = put(tmp_path / "empty-idx", idx_bytes(empty.astype(np.float64), dims=fits), compress)
    with pytest.raises(ValueError, match=r"empty-idx.*no elements"):
        read_idx(path)
