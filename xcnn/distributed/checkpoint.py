"""Checkpoints in a distributed run: rank 0 writes, the other ranks wait until the file is whole.

:func:`xcnn.save` already writes atomically (a temporary file renamed into place),
so no reader ever sees a partial checkpoint. Here rank 0 alone writes the
unwrapped model (plain ``state_dict`` keys, loadable by a single process and by any
number of ranks), and every rank returns only once that write has finished, or
raises if it failed. Every rank resumes by loading the same file, which must be
visible to all of them (a shared file system, or one host).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from xcnn.distributed import world
from xcnn.nn.module import Module

__all__ = ["load_checkpoint", "save_checkpoint", "unwrap"]


def unwrap(model: Module) -> Module:
    """The plain model inside a :class:`DistributedDataParallel` (``.module``), else ``model``."""
    from xcnn.distributed.ddp import DistributedDataParallel

    while isinstance(model, DistributedDataParallel):
        model = model.module
    return model


def save_checkpoint(path: str | os.PathLike, model: Module, *args: Any, **kwargs: Any) -> Path:
    """:func:`xcnn.save` on rank 0 only, with every rank waiting until the file is complete.

    Takes :func:`xcnn.save`'s arguments (``optimizer``, ``scheduler``, ``loader=``,
    ``epoch=``, ``step=``, ``history=``, ``**meta``); ``model`` may be wrapped in
    :class:`DistributedDataParallel`, whose plain model is saved. Collective: every
    rank must call it. With one rank it is :func:`xcnn.save`.

    Raises
    ------
    DistributedError
        On the other ranks, naming rank 0's error, when rank 0 could not write the
        file (rank 0 raises that error itself).
    """
    from xcnn.io import save

    error = None
    result = Path(path)
    if world.is_main():
        try:
            result = save(path, unwrap(model), *args, **kwargs)
        except Exception as exc:
            error = exc
    # The broadcast is the barrier: no rank returns before rank 0's rename is done.
    failure = world.broadcast_object(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    if failure is not None:
        raise world.DistributedError(
            f"xcnn.distributed: rank 0 could not write the checkpoint {str(path)!r}: {failure}"
        )
    return result


def load_checkpoint(path: str | os.PathLike, model: Module, *args: Any, **kwargs: Any) -> dict:
    """:func:`xcnn.load` into the plain model inside ``model``, on every rank; returns the meta.

    Takes :func:`xcnn.load`'s arguments. Every rank reads the file itself.
    """
    from xcnn.io import load

    return load(path, unwrap(model), *args, **kwargs)
