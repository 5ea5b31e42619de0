"""CIFAR-10 binary batches, safe tarball extraction, and the CIFAR10 dataset."""

from __future__ import annotations

import hashlib
import io
import tarfile

import numpy as np
import pytest

from xcnn.data import (
    CIFAR10,
    DatasetNotAvailable,
    cifar,
    extract_cifar10,
    read_cifar10_batch,
    sources,
)
from xcnn.data.download import Resource

NAMES = (*cifar.CIFAR10_TRAIN_FILES, *cifar.CIFAR10_TEST_FILES)


def records(n: int, seed: int, max_label: int = 9) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, max_label + 1, size=n, dtype=np.uint8)
    pixels = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    data = np.concatenate([labels[:, None], pixels], axis=1).tobytes()
    return data, labels, pixels


def write_batches(folder, per_file: int = 2) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for seed, name in enumerate(NAMES):
        data, labels, pixels = records(per_file, seed)
        (folder / name).write_bytes(data)
        out[name] = (labels, pixels)
    return out


def test_reads_records_in_chw_order(tmp_path):
    data, labels, pixels = records(5, 0)
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(data)
    images, got = read_cifar10_batch(path)
    assert images.dtype == np.uint8 and images.shape == (5, 3, 32, 32)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, labels)
    # Byte 1 + c*1024 + h*32 + w of record i is pixel (c, h, w) of image i.
    for i, c, h, w in [(0, 0, 0, 0), (1, 1, 5, 7), (4, 2, 31, 31), (3, 2, 0, 31)]:
        assert images[i, c, h, w] == pixels[i, c * 1024 + h * 32 + w]


@pytest.mark.parametrize("size", [0, 3073 * 2 + 5, 3072])
def test_bad_size_is_rejected(tmp_path, size):
    path = tmp_path / "test_batch.bin"
    path.write_bytes(b"\x00" * size)
    with pytest.raises(ValueError, match=rf"test_batch\.bin.*multiple of 3073.*got {size} bytes"):
        read_cifar10_batch(path)


def test_labels_of_ten_or_more_are_rejected(tmp_path):
    data = records(4, 1)[0]
    data = bytearray(data)
    data[2 * 3073] = 10
    path = tmp_path / "data_batch_2.bin"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"data_batch_2\.bin.*< 10.*got 10 at record 2"):
        read_cifar10_batch(path)


def make_tarball(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            if data is None:
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def good_members(per_file: int = 2):
    return [
        regular(f"cifar-10-batches-bin/{n}", records(per_file, i)[0]) for i, n in enumerate(NAMES)
    ]


def test_extract_writes_only_the_six_batches(tmp_path):
    evil = [
        regular("../evil.bin", b"x"),
        regular("cifar-10-batches-bin/../../escaped.bin", b"x"),
        regular("/abs/path.bin", b"x"),
        regular("cifar-10-batches-bin/readme.html", b"<html>"),
    ]
    archive = tmp_path / "work" / "cifar-10-binary.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(make_tarball(evil + good_members()))
    dest = tmp_path / "work" / "out"
    extract_cifar10(archive, dest, records_per_file=2)
    assert sorted(p.name for p in dest.iterdir()) == sorted(NAMES)
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    assert written == {archive.relative_to(tmp_path)} | {
        (dest / n).relative_to(tmp_path) for n in NAMES
    }
    images, labels = read_cifar10_batch(dest / "test_batch.bin")
    assert images.shape == (2, 3, 32, 32) and labels.shape == (2,)


def test_extract_rejects_a_link_in_place_of_a_batch(tmp_path):
    link = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(make_tarball([(link, None), *good_members()]))
    with pytest.raises(ValueError, match=r"data_batch_1\.bin.*regular file"):
        extract_cifar10(archive, tmp_path / "out", records_per_file=2)
    assert not (tmp_path / "out" / "data_batch_1.bin").exists()


def test_extract_rejects_wrong_sizes_and_missing_members(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(make_tarball(good_members(per_file=3)))
    with pytest.raises(ValueError, match=r"regular file of 6146 bytes.*9219 bytes"):
        extract_cifar10(archive, tmp_path / "out", records_per_file=2)
    archive.write_bytes(make_tarball(good_members()[:-1]))
    with pytest.raises(ValueError, match=r"missing members cifar-10-batches-bin/test_batch\.bin"):
        extract_cifar10(archive, tmp_path / "out2", records_per_file=2)


def test_extract_rejects_a_corrupt_archive(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(make_tarball(good_members())[:200])
    with pytest.raises(ValueError, match=r"a\.tar\.gz"):
        extract_cifar10(archive, tmp_path / "out", records_per_file=2)


@pytest.mark.parametrize("layout", ["cifar-10-batches-bin", "cifar10/cifar-10-batches-bin", "."])
def test_dataset_from_a_directory(tmp_path, layout):
    written = write_batches(tmp_path / layout)
    train = CIFAR10(root=tmp_path, train=True, download=False)
    test = CIFAR10(root=tmp_path, train=False, download=False)
    assert len(train) == 10 and len(test) == 2
    assert train.images.shape == (10, 3, 32, 32) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64
    expected = np.concatenate([written[n][0] for n in cifar.CIFAR10_TRAIN_FILES])
    np.testing.assert_array_equal(train.labels, expected)
    np.testing.assert_array_equal(test.images.reshape(2, -1), written["test_batch.bin"][1])
    assert train.num_classes == 10 and train.classes[0] == "airplane"
    assert train.classes[-1] == "truck"


def test_dataset_names_the_bad_batch(tmp_path):
    write_batches(tmp_path / "cifar-10-batches-bin")
    with open(tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin", "ab") as f:
        f.write(b"\x00")
    with pytest.raises(ValueError, match=r"data_batch_3\.bin"):
        CIFAR10(root=tmp_path, download=False)


def test_dataset_downloads_and_extracts(tmp_path, server, monkeypatch):
    body = make_tarball(good_members())
    md5 = hashlib.md5(body, usedforsecurity=False).hexdigest()
    server.files["/kriz/cifar-10-binary.tar.gz"] = body
    monkeypatch.setitem(sources.MIRRORS, "cifar10", [server.url + "kriz/"])
    monkeypatch.setitem(
        sources.RESOURCES,
        "cifar10",
        {"archive": Resource("cifar-10-binary.tar.gz", md5, len(body))},
    )
    monkeypatch.setattr(cifar, "CIFAR10_RECORDS_PER_FILE", 2)
    test = CIFAR10(root=tmp_path, train=False)
    assert test.images.shape == (2, 3, 32, 32)
    folder = tmp_path / "cifar10" / "cifar-10-batches-bin"
    assert sorted(p.name for p in folder.iterdir()) == sorted(NAMES)
    assert not (tmp_path / "cifar10" / "cifar-10-binary.tar.gz").exists()
    train = CIFAR10(root=tmp_path, train=True)  # already extracted: no second request
    assert len(train) == 10 and server.count("/kriz/cifar-10-binary.tar.gz") == 1


def test_dataset_offline_error(tmp_path, dead_url, monkeypatch):
    monkeypatch.setitem(sources.MIRRORS, "cifar10", [dead_url])
    with pytest.raises(DatasetNotAvailable) as info:
        CIFAR10(root=tmp_path)
    message = str(info.value)
    assert dead_url + "cifar-10-binary.tar.gz" in message
    assert "c32a1d4ab5d03f1284b67883e8d87530" in message
    assert str(tmp_path / "cifar10") in message


def test_an_archive_already_on_disk_is_checked_against_the_published_md5(tmp_path, monkeypatch):
    body = make_tarball(good_members())
    monkeypatch.setitem(
        sources.RESOURCES,
        "cifar10",
        {
            "archive": Resource(
                "cifar-10-binary.tar.gz",
                hashlib.md5(body, usedforsecurity=False).hexdigest(),
                len(body),
            )
        },
    )
    monkeypatch.setattr(cifar, "CIFAR10_RECORDS_PER_FILE", 2)
    # No mirror is reachable: the archive on disk is all there is.
    monkeypatch.setitem(sources.MIRRORS, "cifar10", ["http://127.0.0.1:9/"])
    target = tmp_path / "cifar10"
    target.mkdir()
    archive = target / "cifar-10-binary.tar.gz"
    flipped = bytearray(body)
    flipped[len(flipped) // 2] ^= 0x01  # same size: only the MD5 can tell
    archive.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match=r"cifar-10-binary\.tar\.gz' does not match.*md5"):
        CIFAR10(root=tmp_path, train=False)
    assert archive.read_bytes() == bytes(flipped), "the user's file must be kept"
    assert not (target / "cifar-10-batches-bin" / "test_batch.bin").exists()
    archive.write_bytes(body[:-1])
    with pytest.raises(ValueError, match=rf"does not match.*{len(body) - 1} bytes"):
        CIFAR10(root=tmp_path, train=False)
    archive.write_bytes(body)
    test = CIFAR10(root=tmp_path, train=False)
    assert test.images.shape == (2, 3, 32, 32) and not archive.exists()


def test_a_crc_mismatch_is_caught_and_leaves_dest_as_it_was(tmp_path):
    """Random pixels are stored nearly verbatim: a flipped byte still parses as tar."""
    body = bytearray(make_tarball(good_members()))
    body[len(body) // 2] ^= 0x01
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(bytes(body))
    dest = tmp_path / "out"
    write_batches(dest, per_file=1)  # an earlier extraction, to be left alone
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    with pytest.raises(ValueError, match=r"corrupt CIFAR-10 archive '.*a\.tar\.gz'.*CRC"):
        extract_cifar10(archive, dest, records_per_file=2)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before
