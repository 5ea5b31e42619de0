"""Fixtures for the data tests: a loopback HTTP server and tiny generated datasets.

No data test touches the real network or ``~/.cache``: ``XCNN_DATA`` points
into ``tmp_path`` and every download comes from a server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from xcnn.data import download, sources
from xcnn.data.download import Resource
from xcnn.data.idx import write_idx


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """Downloads never sleep, time out fast, and the default root is private."""
    monkeypatch.setattr(download, "BACKOFF_S", 0.0)
    monkeypatch.setattr(download, "TIMEOUT_S", 5.0)
    monkeypatch.setenv("XCNN_DATA", str(tmp_path / "xcnn-data-default"))


class LoopbackServer:
    """Serves ``files[path] = bytes``; ``modes[path]`` scripts failures per request.

    A mode is a list consumed one entry per request: ``"ok"``, ``"drop"`` (send
    the full Content-Length, then half the body, then close), ``"500"``, ``"404"``.
    When the list is empty (or absent) the file is served normally.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, list[str]] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                script = server.modes.get(self.path)
                mode = script.pop(0) if script else "ok"
                body = server.files.get(self.path)
                if body is None or mode == "404":
                    self.send_error(404)
                    return
                if mode == "500":
                    self.send_error(500)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if mode == "drop":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/"

    def count(self, path: str) -> int:
        return self.requests.count(path)

    def close(self):
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def server():
    srv = LoopbackServer()
    yield srv
    srv.close()


@pytest.fixture
def dead_url():
    """A loopback URL nothing listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def tiny_mnist(n: int, seed: int, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, num_classes, size=n, dtype=np.uint8)
    return images, labels


@pytest.fixture
def make_idx_dataset():
    """Write a tiny MNIST-layout dataset; returns ``{split: (images, labels)}``.

    ``make_idx_dataset(folder, compress=True, counts=(12, 5), dotted=False)``
    """

    def make(folder: Path, compress: bool = True, counts=(12, 5), dotted: bool = False):
        folder.mkdir(parents=True, exist_ok=True)
        out = {}
        for split, prefix, n, seed in (
            ("train", "train", counts[0], 1),
            ("test", "t10k", counts[1], 2),
        ):
            images, labels = tiny_mnist(n, seed)
            sep = "." if dotted else "-"
            suffix = ".gz" if compress else ""
            write_idx(folder / f"{prefix}-images{sep}idx3-ubyte{suffix}", images)
            write_idx(folder / f"{prefix}-labels{sep}idx1-ubyte{suffix}", labels)
            out[split] = (images, labels)
        return out

    return make


@pytest.fixture
def serve_mnist(server, monkeypatch, tmp_path):
    """Serve a generated 4-file MNIST from two mirror paths of the loopback server.

    Returns ``(arrays, resources)``; the checksum table is patched to the
    generated files, and ``MIRRORS["mnist"]`` to ``[server/a/, server/b/]``
    with only ``b/`` actually holding the files unless a test adds them.
    """
    made = tmp_path / "generated-mnist"
    arrays = {}
    resources = {}
    for split, prefix, n, seed in (("train", "train", 9, 3), ("test", "t10k", 4, 4)):
        images, labels = tiny_mnist(n, seed)
        arrays[split] = (images, labels)
        for kind, array, dims in (("images", images, 3), ("labels", labels, 1)):
            name = f"{prefix}-{kind}-idx{dims}-ubyte.gz"
            write_idx(made / name, array)
            body = (made / name).read_bytes()
            resources[f"{split}-{kind}"] = Resource(
                name, hashlib.md5(body, usedforsecurity=False).hexdigest(), len(body)
            )
            server.files[f"/b/{name}"] = body
    monkeypatch.setitem(sources.RESOURCES, "mnist", resources)
    monkeypatch.setitem(sources.MIRRORS, "mnist", [server.url + "a/", server.url + "b/"])
    return arrays, resources
