"""CIFAR-10 "binary version" batches, and safe extraction of its tarball.

Each ``.bin`` file is a run of 3073-byte records: one label byte (0-9), then
3072 pixel bytes: the 1024 red, 1024 green, then 1024 blue values of a 32x32
image in row-major order, i.e. one ``(3, 32, 32)`` CHW image. Nothing here
unpickles anything (the "python version" of CIFAR-10 is pickles; we never read it).
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "CIFAR10_DIRNAME",
    "CIFAR10_RECORDS_PER_FILE",
    "CIFAR10_RECORD_BYTES",
    "CIFAR10_TEST_FILES",
    "CIFAR10_TRAIN_FILES",
    "extract_cifar10",
    "read_cifar10_batch",
]

CIFAR10_RECORD_BYTES = 1 + 3 * 32 * 32
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch.bin",)
CIFAR10_DIRNAME = "cifar-10-batches-bin"
#: Images per batch file in the real archive; members of another size are rejected.
CIFAR10_RECORDS_PER_FILE = 10000
_NUM_CLASSES = 10
_CHUNK = 1 << 20


def read_cifar10_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 binary batch file.

    Parameters
    ----------
    path : str or path-like
        A ``data_batch_<i>.bin`` or ``test_batch.bin`` file.

    Returns
    -------
    images : numpy.ndarray
        ``uint8``, shape ``(N, 3, 32, 32)``.
    labels : numpy.ndarray
        ``int64``, shape ``(N,)``, values in ``[0, 10)``.

    Raises
    ------
    ValueError
        The file is empty, its size is not a multiple of 3073 bytes, or a label
        is 10 or more; the message names the file.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0 or size % CIFAR10_RECORD_BYTES:
        raise ValueError(
            f"malformed CIFAR-10 batch {str(path)!r}: expected a non-zero multiple of "
            f"{CIFAR10_RECORD_BYTES} bytes (1 label + 3072 pixels per image), got {size} bytes"
        )
    records = np.fromfile(path, dtype=np.uint8).reshape(-1, CIFAR10_RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    bad = np.flatnonzero(labels >= _NUM_CLASSES)
    if bad.size:
        raise ValueError(
            f"malformed CIFAR-10 batch {str(path)!r}: labels must be < {_NUM_CLASSES}, "
            f"got {int(labels[bad[0]])} at record {int(bad[0])} ({bad.size} bad records)"
        )
    images = np.ascontiguousarray(records[:, 1:]).reshape(-1, 3, 32, 32)
    return images, labels


def extract_cifar10(
    archive: str | os.PathLike, dest: str | os.PathLike, records_per_file: int = 10000
) -> Path:
    """Extract the six ``.bin`` batches of ``cifar-10-binary.tar.gz`` into ``dest``.

    Only the expected members (``cifar-10-batches-bin/<name>.bin``), and only
    as regular files of the expected size, are written; every other member
    (``readme.html``, links, anything with ``..``) is ignored. Each file is
    written under ``dest`` with its bare name, so no member path is ever
    joined onto the file system.

    Nothing lands in ``dest`` until the whole archive has checked out: the
    batches are staged in a temporary directory inside ``dest``, the gzip
    stream is read to its end so that its CRC-32 and length are verified
    (``tarfile`` alone stops at the end-of-archive blocks and never gets
    there), and only then are the batches renamed into place. A corrupt or
    incomplete archive leaves ``dest`` as it was.

    Parameters
    ----------
    archive : str or path-like
        The downloaded ``cifar-10-binary.tar.gz``.
    dest : str or path-like
        Directory to write the batches into (created if needed).
    records_per_file : int
        Images per batch file (10000 in the real archive); a member of any
        other size is rejected before it is read.

    Returns
    -------
    pathlib.Path
        ``dest``, now holding ``data_batch_1.bin`` ... ``test_batch.bin``.

    Raises
    ------
    ValueError
        The archive is corrupt (bad gzip data or CRC, broken tar), or an
        expected member is missing, not a regular file, or of the wrong size;
        the message names the archive.
    """
    archive, dest = Path(archive), Path(dest)
    names = CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES
    wanted = {f"{CIFAR10_DIRNAME}/{name}": name for name in names}
    expected_size = records_per_file * CIFAR10_RECORD_BYTES
    dest.mkdir(parents=True, exist_ok=True)
    # Inside dest, so that the final renames stay on one file system.
    staging = Path(tempfile.mkdtemp(prefix=".extracting-", dir=dest))
    try:
        try:
            _stage_members(archive, staging, wanted, expected_size)
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
            raise ValueError(f"corrupt CIFAR-10 archive {str(archive)!r}: {error}") from error
        missing = sorted(name for name in names if not (staging / name).is_file())
        if missing:
            raise ValueError(
                f"malformed CIFAR-10 archive {str(archive)!r}: missing members "
                f"{', '.join(f'{CIFAR10_DIRNAME}/{m}' for m in missing)}"
            )
        for name in names:
            os.replace(staging / name, dest / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _stage_members(
    archive: Path, staging: Path, wanted: dict[str, str], expected_size: int
) -> None:
    """Copy the wanted members into ``staging``, then read the gzip stream to its end."""
    with gzip.open(archive, "rb") as stream:
        # Stream mode ("r|"): members are read in order, nothing seeks back.
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                name = wanted.get(member.name)
                if name is None or (staging / name).exists():
                    continue
                if not member.isreg() or member.size != expected_size:
                    raise ValueError(
                        f"malformed CIFAR-10 archive {str(archive)!r}: member {member.name!r} "
                        f"should be a regular file of {expected_size} bytes, got "
                        f"{'a regular file' if member.isreg() else 'a non-regular entry'} "
                        f"of {member.size} bytes"
                    )
                source = tar.extractfile(member)
                if source is None:
                    raise ValueError(
                        f"malformed CIFAR-10 archive {str(archive)!r}: cannot read {member.name!r}"
                    )
                with source, open(staging / name, "xb") as target:
                    shutil.copyfileobj(source, target, _CHUNK)
                    target.flush()
                    os.fsync(target.fileno())
        # Whatever follows the end-of-archive blocks (padding, the gzip trailer):
        # reading it is what makes gzip compare the CRC-32 and length.
        while stream.read(_CHUNK):
            pass
