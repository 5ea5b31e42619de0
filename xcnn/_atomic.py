"""Write files so that readers see the old file or the complete new one, never a part.

One mechanism for every file xcnn writes: checkpoints, histories, plots and
downloaded or generated dataset files.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

try:  # POSIX; elsewhere stale temporary files are left alone (see _save_slot)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["atomic_path", "atomic_write", "atomic_write_bytes", "atomic_writer"]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Create ``path`` all at once: ``write(tmp)`` fills a sibling temp file, then rename.

    The temporary file, ``.<name>.<12 hex digits>.tmp``, lives in ``path``'s
    directory (so the final ``os.replace`` is an atomic rename on the same
    file system), is fsync'ed before the rename, and is removed if anything
    fails; ``path`` then keeps its previous content. A process killed mid-write
    cannot remove its temporary file, so each call first deletes the ones of
    ``path`` that no running write is still filling (on POSIX systems, where
    writes hold a shared lock on the directory while their file exists).

    Parameters
    ----------
    path : str or os.PathLike
        The file to create or replace; missing parent directories are created.
    write : callable
        ``write(tmp_path)`` writes the complete content to ``tmp_path``.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A ``with`` block yielding the temporary file opened ``"wb"``; renamed onto ``path``
    when the block ends without an exception (for content written piece by piece)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as stream:
        yield stream


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """The mechanism under :func:`atomic_write`: yields the temporary file's path."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a directory, expected a file path")
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    with _save_slot(path):
        tmp = _create_temp(path)
        try:
            mode = tmp.stat().st_mode
            yield tmp
            # The writer may have replaced the file (safetensors' save_file makes it
            # 0o600): give it back the umask-honouring mode it was created with.
            os.chmod(tmp, mode)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
    _fsync_directory(folder)


def _temp_pattern(path: Path) -> re.Pattern[str]:
    return re.compile(re.escape(f".{path.name}.") + r"[0-9a-f]{12}\.tmp")


def _create_temp(path: Path) -> Path:
    """A new, empty ``.<name>.<12 hex digits>.tmp`` next to ``path``.

    Mode 0o666 minus the umask (mkstemp's fixed 0o600 would leave checkpoints,
    plots and histories unreadable to the user's group, unlike ``open()``).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(tmp, flags, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"cannot create a temporary file for {str(path)!r}")


@contextlib.contextmanager
def _save_slot(path: Path) -> Iterator[None]:
    """Hold a shared lock on ``path``'s directory while saving; clear stale temp files first.

    Every save holds the shared lock for as long as its temporary file exists,
    and the lock dies with its process. A save that can take the lock
    *exclusively* therefore knows that no save is running in the directory, and
    that every temporary file of ``path`` there was left by a killed one. If
    another save is running, the clean-up waits for a later save. Where
    directories cannot be locked (no ``fcntl``, some network file systems),
    nothing is removed: a live save's file must never be taken for a stale one.
    """
    if fcntl is None:
        yield
        return
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except OSError:  # BlockingIOError while another save runs; others: no locking here
            alone = False
        if alone:
            _remove_stale_temps(path)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def _remove_stale_temps(path: Path) -> None:
    """Delete the files named exactly like ``path``'s temporary files, in its directory."""
    pattern = _temp_pattern(path)
    with contextlib.suppress(OSError), os.scandir(path.parent) as entries:
        for entry in entries:
            if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _fsync_directory(folder: Path) -> None:
    """Make the rename durable; some platforms cannot open directories, which is fine."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
