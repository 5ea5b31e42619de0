"""Downloads from a loopback server: checksums, atomic writes, retries, mirrors, offline."""

from __future__ import annotations

import hashlib
import socket
import time
import urllib.error

import numpy as np
import pytest

from xcnn.data import MNIST, DatasetNotAvailable, FashionMNIST, download, md5sum, sources
from xcnn.data.download import Resource, download_file

BODY = bytes(range(256)) * 40


def resource(body: bytes = BODY, name: str = "file.bin") -> Resource:
    return Resource(name, hashlib.md5(body, usedforsecurity=False).hexdigest(), len(body))


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_verifies_and_writes(tmp_path, server):
    server.files["/m/file.bin"] = BODY
    dest = tmp_path / "out" / "file.bin"
    assert download_file([server.url + "m/file.bin"], dest, resource()) == server.url + "m/file.bin"
    assert dest.read_bytes() == BODY
    assert md5sum(dest) == resource().md5
    assert leftovers(dest.parent) == ["file.bin"]


def test_checksum_mismatch_leaves_no_file(tmp_path, server):
    server.files["/m/file.bin"] = BODY[::-1]  # same size, other bytes
    dest = tmp_path / "file.bin"
    with pytest.raises(DatasetNotAvailable, match=r"m/file\.bin: MD5 [0-9a-f]{32} does not match"):
        download_file([server.url + "m/file.bin"], dest, resource())
    assert leftovers(tmp_path) == []
    assert server.count("/m/file.bin") == 1  # a wrong file is not fetched again


def test_wrong_size_is_rejected_before_reading(tmp_path, server):
    server.files["/m/file.bin"] = BODY + b"extra"
    with pytest.raises(DatasetNotAvailable, match=r"announces 10245 bytes, expected 10240"):
        download_file([server.url + "m/file.bin"], tmp_path / "file.bin", resource())
    assert leftovers(tmp_path) == []


def test_dropped_connection_is_retried_then_reported(tmp_path, server, monkeypatch):
    monkeypatch.setattr(download, "ATTEMPTS", 3)
    server.files["/m/file.bin"] = BODY
    server.modes["/m/file.bin"] = ["drop"] * 5
    with pytest.raises(DatasetNotAvailable, match=r"closed after 5120 of 10240 bytes.*3 attempts"):
        download_file([server.url + "m/file.bin"], tmp_path / "file.bin", resource())
    assert server.count("/m/file.bin") == 3
    assert leftovers(tmp_path) == []


def test_transient_failures_recover_on_retry(tmp_path, server, monkeypatch):
    monkeypatch.setattr(download, "ATTEMPTS", 3)
    server.files["/m/file.bin"] = BODY
    server.modes["/m/file.bin"] = ["drop", "500"]
    dest = tmp_path / "file.bin"
    download_file([server.url + "m/file.bin"], dest, resource())
    assert dest.read_bytes() == BODY and server.count("/m/file.bin") == 3
    assert leftovers(tmp_path) == ["file.bin"]


def test_backoff_doubles_between_attempts(tmp_path, server, monkeypatch):
    sleeps = []
    monkeypatch.setattr(download.time, "sleep", sleeps.append)
    server.files["/m/file.bin"] = BODY
    server.modes["/m/file.bin"] = ["500"] * 3
    with pytest.raises(DatasetNotAvailable):
        download_file(
            [server.url + "m/file.bin"], tmp_path / "f", resource(), attempts=3, backoff=0.5
        )
    assert sleeps == [0.5, 1.0]


def test_falls_back_to_the_next_mirror(tmp_path, server):
    server.files["/b/file.bin"] = BODY
    urls = [server.url + "a/file.bin", server.url + "b/file.bin"]
    assert download_file(urls, tmp_path / "file.bin", resource()) == urls[1]
    assert server.count("/a/file.bin") == 1  # a 404 is not retried
    assert (tmp_path / "file.bin").read_bytes() == BODY


def test_offline_fails_fast_with_every_url(tmp_path, dead_url, monkeypatch):
    sleeps = []
    monkeypatch.setattr(download.time, "sleep", sleeps.append)
    urls = [dead_url + "x/file.bin", dead_url + "y/file.bin"]
    start = time.perf_counter()
    with pytest.raises(DatasetNotAvailable) as info:
        download_file(urls, tmp_path / "file.bin", resource())
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert all(url in message for url in urls) and resource().md5 in message
    assert "host unreachable" in message
    assert sleeps == []  # a refused connection is not retried
    assert leftovers(tmp_path) == []


def test_dns_failure_is_not_retried(tmp_path, monkeypatch):
    calls = []

    def no_dns(request, timeout):
        calls.append(request.full_url)
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(download.urllib.request, "urlopen", no_dns)
    urls = ["http://mirror-one.invalid/f", "http://mirror-two.invalid/f"]
    with pytest.raises(DatasetNotAvailable, match=r"mirror-one.*host unreachable.*\n.*mirror-two"):
        download_file(urls, tmp_path / "f", resource(), attempts=3)
    assert calls == urls


def test_mnist_downloads_from_the_second_mirror(tmp_path, serve_mnist, server):
    arrays, resources = serve_mnist
    ds = MNIST(root=tmp_path, train=True)
    np.testing.assert_array_equal(ds.images[:, 0], arrays["train"][0])
    np.testing.assert_array_equal(ds.labels, arrays["train"][1])
    folder = tmp_path / "mnist"
    assert leftovers(folder) == sorted(
        [resources["train-images"].filename, resources["train-labels"].filename]
    )
    for key in ("train-images", "train-labels"):
        assert md5sum(folder / resources[key].filename) == resources[key].md5
    before = len(server.requests)
    MNIST(root=tmp_path, train=True)  # cached: no new request
    assert len(server.requests) == before
    test = MNIST(root=tmp_path, train=False)
    np.testing.assert_array_equal(test.labels, arrays["test"][1])
    assert len(leftovers(folder)) == 4


def test_mnist_checksum_mismatch_is_not_available(tmp_path, serve_mnist, monkeypatch):
    _, resources = serve_mnist
    bad = dict(resources)
    bad["train-labels"] = Resource(bad["train-labels"].filename, "0" * 32, bad["train-labels"].size)
    monkeypatch.setitem(sources.RESOURCES, "mnist", bad)
    with pytest.raises(DatasetNotAvailable, match=r"does not match 0{32}"):
        MNIST(root=tmp_path, train=True)
    # The images (checksum fine) were kept; the labels left nothing behind.
    assert leftovers(tmp_path / "mnist") == [resources["train-images"].filename]


def test_offline_error_lists_urls_checksums_and_where_to_put_files(tmp_path, dead_url, monkeypatch):
    monkeypatch.setitem(sources.MIRRORS, "mnist", [dead_url + "one/", dead_url + "two/"])
    with pytest.raises(DatasetNotAvailable) as info:
        MNIST(root=tmp_path, train=False)
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert str(tmp_path / "mnist") in message
    for res in (
        sources.RESOURCES["mnist"]["test-images"],
        sources.RESOURCES["mnist"]["test-labels"],
    ):
        assert res.md5 in message
        assert dead_url + "one/" + res.filename in message
        assert dead_url + "two/" + res.filename in message


def test_download_false_never_touches_the_network(tmp_path, server, monkeypatch):
    monkeypatch.setitem(sources.MIRRORS, "fashion-mnist", [server.url])
    with pytest.raises(DatasetNotAvailable, match=r"Fashion-MNIST \(train split\).*download=False"):
        FashionMNIST(root=tmp_path, download=False)
    assert server.requests == []


def test_default_root_is_xcnn_data(tmp_path, serve_mnist, monkeypatch):
    monkeypatch.setenv("XCNN_DATA", str(tmp_path / "env-root"))
    MNIST(train=False)
    assert len(leftovers(tmp_path / "env-root" / "mnist")) == 2
