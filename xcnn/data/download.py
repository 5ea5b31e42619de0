"""Fetch a file from a list of mirrors, verify its size and MD5, write it atomically.

A download streams into a temporary file next to the destination, hashing as
it goes, and is renamed into place only after the size and checksum match, so
an interrupted or corrupt transfer never leaves a file a later run could trust.
Transient failures (HTTP 5xx, connections lost or stalled mid-transfer) are
retried a few times with exponential backoff; an unreachable host (no DNS, no
route, refused, no answer to connect), a 4xx answer or a checksum mismatch
moves on to the next mirror at once, so an offline machine fails in seconds.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from xcnn._atomic import atomic_writer

__all__ = [
    "ATTEMPTS",
    "BACKOFF_S",
    "TIMEOUT_S",
    "DatasetNotAvailable",
    "Resource",
    "download_file",
    "md5sum",
]

#: Tries per mirror for transient errors, first backoff (doubles each retry),
#: and socket timeout in seconds. Module-level so tests and users can tune them.
ATTEMPTS = 3
BACKOFF_S = 1.0
TIMEOUT_S = 15.0

_CHUNK = 1 << 20
_UNREACHABLE_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED}
_USER_AGENT = "xcnn-data/0.1 (+https://github.com/xcnn)"


class DatasetNotAvailable(RuntimeError):
    """A dataset is neither on disk nor downloadable (offline, mirrors failing, download=False).

    The message lists the URLs tried, the expected checksums and where to put
    the files by hand.
    """


@dataclass(frozen=True)
class Resource:
    """One file of a dataset: its name on the mirrors, MD5 and size in bytes."""

    filename: str
    md5: str
    size: int | None = None


class _Transient(Exception):
    """A failure worth retrying on the same mirror."""


class _Permanent(Exception):
    """A failure that retrying the same mirror will not fix."""


def md5sum(path: str | os.PathLike) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _unreachable(reason: object) -> bool:
    """No DNS, no route, refused or no answer at all: retrying in seconds will not help.

    Failing fast here keeps an offline run from waiting on every retry before
    it falls back (to another mirror, or to the embedded sample).
    """
    if isinstance(reason, (socket.gaierror, ConnectionRefusedError, TimeoutError)):
        return True
    return isinstance(reason, OSError) and reason.errno in _UNREACHABLE_ERRNOS


def _fetch(url: str, dest: Path, resource: Resource, timeout: float) -> None:
    """One attempt: stream ``url`` into ``dest`` atomically, checking size and MD5."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        kind = _Transient if error.code >= 500 or error.code == 429 else _Permanent
        raise kind(f"HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        reason = getattr(error, "reason", error)
        if _unreachable(reason):
            raise _Permanent(f"host unreachable ({reason})") from error
        raise _Transient(str(reason)) from error
    with response:
        announced = response.headers.get("Content-Length")
        announced = int(announced) if announced and announced.isdigit() else None
        if resource.size is not None and announced is not None and announced != resource.size:
            raise _Permanent(f"server announces {announced} bytes, expected {resource.size}")
        limit = resource.size if resource.size is not None else announced
        digest = hashlib.md5(usedforsecurity=False)
        received = 0
        with atomic_writer(dest) as target:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (http.client.HTTPException, OSError) as error:
                    raise _Transient(f"connection lost after {received} bytes ({error})") from error
                if not chunk:
                    break
                received += len(chunk)
                if limit is not None and received > limit:
                    raise _Permanent(f"server sent more than the expected {limit} bytes")
                digest.update(chunk)
                target.write(chunk)
            # urllib returns b"" when the peer closes early, so a short body is caught here.
            if limit is not None and received != limit:
                raise _Transient(f"connection closed after {received} of {limit} bytes")
            if digest.hexdigest() != resource.md5:
                raise _Permanent(f"MD5 {digest.hexdigest()} does not match {resource.md5}")


def download_file(
    urls: list[str],
    dest: str | os.PathLike,
    resource: Resource,
    *,
    attempts: int | None = None,
    backoff: float | None = None,
    timeout: float | None = None,
) -> str:
    """Download ``resource`` from the first mirror that serves it intact.

    Parameters
    ----------
    urls : list of str
        Full URLs of the file, tried in order.
    dest : str or path-like
        Where the verified file ends up; created only when a download succeeds.
    resource : Resource
        Expected MD5 and size.
    attempts, backoff, timeout : optional
        Override :data:`ATTEMPTS`, :data:`BACKOFF_S`, :data:`TIMEOUT_S`.

    Returns
    -------
    str
        The URL the file came from.

    Raises
    ------
    DatasetNotAvailable
        Every mirror failed; the message lists each URL with its last error.
    """
    attempts = ATTEMPTS if attempts is None else attempts
    backoff = BACKOFF_S if backoff is None else backoff
    timeout = TIMEOUT_S if timeout is None else timeout
    dest = Path(dest)
    failures = []
    for url in urls:
        for attempt in range(attempts):
            print(f"xcnn: downloading {url}", file=sys.stderr)
            try:
                _fetch(url, dest, resource, timeout)
                return url
            except _Permanent as error:
                failures.append(f"{url}: {error}")
                break
            except _Transient as error:
                if attempt + 1 == attempts:
                    failures.append(f"{url}: {error} (after {attempts} attempts)")
                else:
                    time.sleep(backoff * 2**attempt)
    raise DatasetNotAvailable(
        f"could not download {resource.filename} (md5 {resource.md5}):\n  " + "\n  ".join(failures)
    )
