"""Fuzz the CIFAR-10 binary readers: exact load, or ValueError naming the file.

* ``read_cifar10_batch``: a batch is a run of 3073-byte records (a label byte
  < 10, then 3072 CHW pixel bytes). :func:`reference_decode` is the oracle,
  written here from that description.
* ``extract_cifar10``: a mutated ``.tar.gz`` either extracts members equal to
  what the archive held, or raises ValueError naming the archive and leaves no
  batch file with altered content behind (gzip's CRC-32 is there to tell).
"""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xcnn.data import CIFAR10, cifar, extract_cifar10, read_cifar10_batch

RECORD = 1 + 3 * 32 * 32
NAMES = cifar.CIFAR10_TRAIN_FILES + cifar.CIFAR10_TEST_FILES

FUZZ = settings(
    max_examples=120,
    deadline=2000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)


def reference_decode(data: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """``(images (N, 3, 32, 32) uint8, labels (N,) int64)``, or None if malformed."""
    if not data or len(data) % RECORD:
        return None
    n = len(data) // RECORD
    labels = [data[i * RECORD] for i in range(n)]
    if any(label >= 10 for label in labels):
        return None
    pixels = b"".join(data[i * RECORD + 1 : (i + 1) * RECORD] for i in range(n))
    images = np.frombuffer(pixels, np.uint8).reshape(n, 3, 32, 32)
    return images, np.array(labels, dtype=np.int64)


def records(seed: int, n: int) -> bytes:
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 256, size=(n, RECORD), dtype=np.uint8)
    rows[:, 0] %= 10
    return rows.tobytes()


def check(path, data: bytes, no_hang) -> None:
    path.write_bytes(data)
    expected = reference_decode(data)
    if expected is None:
        with no_hang(5.0), pytest.raises(ValueError) as caught:
            read_cifar10_batch(path)
        assert str(path) in str(caught.value), f"error does not name the file: {caught.value}"
        return
    with no_hang(5.0):
        images, labels = read_cifar10_batch(path)
    assert images.dtype == np.uint8 and labels.dtype == np.int64
    np.testing.assert_array_equal(images, expected[0])
    np.testing.assert_array_equal(labels, expected[1])


def mutate(data: bytes, draw) -> bytes:
    kind = draw(st.sampled_from(["flip", "truncate", "extend", "overwrite"]))
    if kind == "flip" and data:
        index = draw(st.integers(0, len(data) - 1))
        return data[:index] + bytes([data[index] ^ draw(st.integers(1, 255))]) + data[index + 1 :]
    if kind == "truncate" and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "overwrite" and data:
        start = draw(st.integers(0, len(data) - 1))
        chunk = draw(st.binary(min_size=1, max_size=8))
        return data[:start] + chunk + data[start + len(chunk) :]
    return data + draw(st.binary(min_size=1, max_size=16))


# -- read_cifar10_batch ---------------------------------------------------------------


@FUZZ
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 3))
def test_valid_batches_load_exactly(tmp_path, no_hang, seed, n):
    data = records(seed, n)
    check(tmp_path / "data_batch_1.bin", data, no_hang)
    assert reference_decode(data) is not None


@FUZZ
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 3),
    delta=st.sampled_from([0, 0, 1, -1, 7, -3072, 3072]),
    small=st.binary(max_size=64),
    use_small=st.booleans(),
)
def test_random_bytes(tmp_path, no_hang, seed, n, delta, small, use_small):
    """Junk of sizes near a whole number of records (labels random in 0..255)."""
    if use_small:
        data = small
    else:
        size = max(0, n * RECORD + delta)
        data = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    check(tmp_path / "test_batch.bin", data, no_hang)


@FUZZ
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 2), draw=st.data())
def test_mutated_batches(tmp_path, no_hang, seed, n, draw):
    data = mutate(records(seed, n), draw.draw)
    check(tmp_path / "data_batch_2.bin", data, no_hang)


# -- extract_cifar10 ------------------------------------------------------------------


def _archive() -> tuple[bytes, dict[str, bytes]]:
    contents = {name: records(i, 1) for i, name in enumerate(NAMES)}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in contents.items():
            info = tarfile.TarInfo(f"{cifar.CIFAR10_DIRNAME}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue(), contents


ARCHIVE, CONTENTS = _archive()


def _altered(dest) -> list[str]:
    """Batch files in ``dest`` whose bytes differ from what the archive held."""
    if not dest.is_dir():
        return []
    return sorted(
        p.name for p in dest.iterdir() if p.name in CONTENTS and p.read_bytes() != CONTENTS[p.name]
    )


def test_the_unmutated_archive_extracts_exactly(tmp_path):
    archive = tmp_path / "cifar-10-binary.tar.gz"
    archive.write_bytes(ARCHIVE)
    dest = extract_cifar10(archive, tmp_path / "out", records_per_file=1)
    assert sorted(p.name for p in dest.iterdir()) == sorted(NAMES)
    assert _altered(dest) == []


@settings(FUZZ, max_examples=100)
@given(draw=st.data())
def test_mutated_archive_extracts_exactly_or_fails_cleanly(tmp_path, no_hang, draw):
    archive = tmp_path / "cifar-10-binary.tar.gz"
    archive.write_bytes(mutate(ARCHIVE, draw.draw))
    dest = tmp_path / "out"
    for stale in dest.glob("*") if dest.is_dir() else ():
        stale.unlink()
    try:
        with no_hang(5.0):
            extract_cifar10(archive, dest, records_per_file=1)
    except ValueError as error:
        assert str(archive) in str(error), f"error does not name the archive: {error}"
        assert _altered(dest) == [], f"a failed extraction left altered batches: {error}"
    else:
        assert _altered(dest) == [], "a corrupted archive extracted altered batches silently"


def test_dataset_refuses_a_corrupted_archive_already_on_disk(tmp_path, monkeypatch):
    """An archive found on disk is checked (published size and MD5) before it is extracted."""
    monkeypatch.setattr(cifar, "CIFAR10_RECORDS_PER_FILE", 1)
    corrupt = bytearray(ARCHIVE)
    # Random pixels do not compress, so the middle byte is a stored pixel of some batch.
    corrupt[len(corrupt) // 2] ^= 0x01
    target = tmp_path / "cifar10"
    target.mkdir()
    (target / "cifar-10-binary.tar.gz").write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match="cifar-10-binary"):
        CIFAR10(root=tmp_path, train=False, download=True)
