"""Checkpoints: pickle-free, atomic and complete enough to resume a run exactly.

A checkpoint is one `safetensors <https://github.com/huggingface/safetensors>`_
file. Its tensors are host (NumPy) copies, so a file written on CuPy loads on
NumPy and back:

* ``"model.<name>"`` -- every parameter and buffer (``model.state_dict()``);
* ``"optim.state.<index>.<name>"`` -- the optimizer's per-parameter arrays
  (momentum buffers, Adam moments).

Everything else lives in the header's metadata, which safetensors keeps as
``str -> str``: one key, ``"xcnn"``, holds a JSON object with the optimizer's
param groups and scalar state, the scheduler state, epoch and step, the RNG
states (xcnn's default host generator, the data loader's, each module's
``generator`` such as Dropout's), the training history, the user's ``**meta``
and ``xcnn.__version__``.

Writes go to a temporary file in the target's directory, are flushed to disk
and renamed over the target, so a crash leaves the previous checkpoint intact.
Loading parses JSON and raw little-endian tensors only: nothing is unpickled.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from xcnn import backends

__all__ = ["atomic_write", "load", "save"]

#: Bumped when the layout of the metadata changes incompatibly.
FORMAT_VERSION = 1
_META_KEY = "xcnn"
_MODEL = "model."
_OPTIM = "optim.state."


# -- atomic writes ----------------------------------------------------------------------


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Create ``path`` all at once: ``write(tmp)`` fills a sibling temp file, then rename.

    The temporary file lives in ``path``'s directory (so the final
    ``os.replace`` is an atomic rename on the same file system), is fsync'ed
    before the rename, and is removed if anything fails; ``path`` then keeps
    its previous content.

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
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a directory, expected a file path")
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
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
    return path


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


# -- save -----------------------------------------------------------------------------


def save(
    path: str | os.PathLike,
    model: Any,
    optimizer: Any = None,
    scheduler: Any = None,
    *,
    loader: Any = None,
    epoch: int | None = None,
    step: int | None = None,
    history: Any = None,
    **meta: Any,
) -> Path:
    """Write a checkpoint of ``model`` (and optionally its training state) to ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        Target file (conventionally ``*.safetensors`` or ``*.ckpt``); replaced
        atomically. Missing parent directories are created.
    model : xcnn.nn.Module
        Its parameters and buffers are saved, plus the state of every
        ``generator`` (e.g. Dropout's) among its modules.
    optimizer : xcnn.optim.Optimizer, optional
        Its ``state_dict()``: arrays as tensors, the rest as JSON.
    scheduler : learning-rate scheduler, optional
        Its JSON-able ``state_dict()``.
    loader : DataLoader, optional
        Its ``state_dict()`` (the shuffle RNG), so a resumed run sees the same batches.
    epoch, step : int, optional
        Completed epochs and optimizer steps (``xcnn.fit`` sets them).
    history : History or dict, optional
        Training history so far (``xcnn.fit`` sets it).
    **meta
        JSON-able user values (e.g. ``lr=0.1, model="lenet5"``), returned by :func:`load`.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    TypeError
        A ``meta`` value or a state entry is not JSON-serialisable.
    IsADirectoryError
        ``path`` is a directory.

    Examples
    --------
    >>> import os, tempfile, xcnn
    >>> from xcnn import nn
    >>> model = nn.Sequential(nn.Linear(4, 2))
    >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
    >>> _ = xcnn.save(path, model, note="demo")
    >>> xcnn.load(path, model)["note"]
    'demo'
    """
    path = Path(path)
    if "xcnn_version" in meta:
        raise ValueError("xcnn.save: 'xcnn_version' is reserved; pick another name for it")
    tensors: dict[str, np.ndarray] = {}
    for name, value in model.state_dict().items():
        tensors[_MODEL + name] = _host(value)

    import xcnn

    blob: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "xcnn_version": xcnn.__version__,
        "backend": _model_backend(model),
        "epoch": epoch,
        "step": step,
        "history": _history_dict(history),
        "config": meta,
        "optimizer": None,
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "loader": None if loader is None else loader.state_dict(),
        "rng": {
            "default": backends.default_generator().bit_generator.state,
            "modules": {name: gen.state_dict() for name, gen in _module_generators(model)},
        },
    }
    if optimizer is not None:
        blob["optimizer"] = _split_optimizer_state(optimizer, tensors)
    try:
        # Serialise before touching the disk: a bad value fails with no file written.
        metadata = {_META_KEY: json.dumps(blob, default=_json_default, allow_nan=True)}
    except TypeError as error:
        raise TypeError(
            f"xcnn.save({str(path)!r}): checkpoint metadata must be JSON-serialisable "
            f"(numbers, strings, lists, dicts): {error}"
        ) from None
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return path


def _host(value: Any) -> np.ndarray:
    """A C-ordered NumPy array (safetensors writes raw memory, so the order matters)."""
    name = backends.namespace_name(value)
    if name in ("cupy", "array_api_strict"):
        value = backends.get(name).to_numpy(value)
    # Not np.ascontiguousarray: it turns 0-d arrays into shape (1,).
    return np.asarray(value, order="C")


def _is_array(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _model_backend(model: Any) -> str:
    for param in model.parameters():
        return backends.namespace_name(param.data)
    return backends.current().name


def _module_generators(model: Any) -> list[tuple[str, backends.Generator]]:
    """``(module_name, Generator)`` for every module that owns a random stream."""
    found = []
    for name, module in model.named_modules():
        generator = getattr(module, "generator", None)
        if isinstance(generator, backends.Generator):
            found.append((name, generator))
    return found


def _history_dict(history: Any) -> dict | None:
    if history is None or isinstance(history, dict):
        return history
    return history.to_dict()


def _split_optimizer_state(optimizer: Any, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    """Move the optimizer's arrays into ``tensors``; return the JSON-able rest."""
    state_dict = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state_dict["state"].items():
        for name, value in entries.items():
            if "." in str(name):
                raise ValueError(
                    f"xcnn.save: optimizer state name {name!r} contains a '.', "
                    "which the checkpoint key format cannot hold"
                )
            if _is_array(value):
                tensors[f"{_OPTIM}{index}.{name}"] = _host(value)
            else:
                scalars.setdefault(str(index), {})[name] = value
    return {
        "class": type(optimizer).__name__,
        "indices": [str(i) for i in state_dict["state"]],
        "scalars": scalars,
        "param_groups": state_dict["param_groups"],
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON-serialisable")


# -- load -----------------------------------------------------------------------------


def load(
    path: str | os.PathLike,
    model: Any,
    optimizer: Any = None,
    scheduler: Any = None,
    *,
    loader: Any = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save` into ``model`` (and the others given).

    Arrays are copied to each parameter's current backend and dtype, so a
    checkpoint written on CuPy loads on NumPy. Nothing is unpickled.

    Parameters
    ----------
    path : str or os.PathLike
        A checkpoint file.
    model : xcnn.nn.Module
        Must have exactly the checkpoint's parameter and buffer names and shapes.
    optimizer, scheduler, loader : optional
        Restored with their ``load_state_dict`` from the checkpoint's state.
    restore_rng : bool, default True
        Also restore xcnn's default host generator (``xcnn.backends.default_generator()``),
        as an exact resume needs. Module generators (Dropout's) are always restored.

    Returns
    -------
    dict
        The ``**meta`` given to :func:`save`, plus ``"epoch"``, ``"step"``,
        ``"history"`` (a dict or ``None``) and ``"xcnn_version"``.

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        ``path`` does not exist or is a directory.
    ValueError
        Not an xcnn checkpoint, a corrupt file, or a checkpoint of another
        architecture (the message lists the differing keys and shapes), or a
        requested optimizer / scheduler / loader state that the file lacks.
    """
    path = Path(path)
    where = f"checkpoint {str(path)!r}"
    _check_regular_file(path, where)
    blob, model_arrays, optim_arrays = _read(path, where)
    try:
        blob_format = blob.get("format")
        if blob_format != FORMAT_VERSION:
            raise ValueError(
                f"{where} has format version {blob_format!r}; this xcnn "
                f"({_version()}) reads version {FORMAT_VERSION}"
            )
        _check_architecture(model, model_arrays, where)
        generators = dict(_module_generators(model))
        saved_generators = blob["rng"]["modules"]
        if set(generators) != set(saved_generators):
            raise ValueError(
                f"{where} does not match {type(model).__name__}: modules with a random "
                f"generator differ: checkpoint has {sorted(saved_generators)}, "
                f"model has {sorted(generators)}"
            )
        for what, obj, key in (
            ("optimizer", optimizer, "optimizer"),
            ("scheduler", scheduler, "scheduler"),
            ("loader", loader, "loader"),
        ):
            if obj is not None and blob.get(key) is None:
                raise ValueError(f"{where} holds no {what} state for the {what} given to load")
        if optimizer is not None:
            saved_class = blob["optimizer"].get("class")
            if saved_class != type(optimizer).__name__:
                raise ValueError(
                    f"{where} holds {saved_class} optimizer state, "
                    f"cannot load it into {type(optimizer).__name__}"
                )
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{where} has malformed xcnn metadata ({error!r})") from None

    model.load_state_dict(model_arrays)
    if optimizer is not None:
        try:
            optimizer.load_state_dict(_join_optimizer_state(blob["optimizer"], optim_arrays))
        except (KeyError, ValueError) as error:
            raise ValueError(f"{where}: cannot restore the optimizer: {_message(error)}") from None
    if scheduler is not None:
        try:
            scheduler.load_state_dict(blob["scheduler"])
        except (KeyError, ValueError) as error:
            raise ValueError(f"{where}: cannot restore the scheduler: {_message(error)}") from None
    if loader is not None:
        loader.load_state_dict(blob["loader"])
    for name, generator in generators.items():
        generator.load_state_dict(saved_generators[name])
    if restore_rng:
        backends.default_generator().bit_generator.state = blob["rng"]["default"]

    meta = dict(blob.get("config") or {})
    meta.update(
        epoch=blob.get("epoch"),
        step=blob.get("step"),
        history=blob.get("history"),
        xcnn_version=blob.get("xcnn_version"),
    )
    return meta


def _version() -> str:
    import xcnn

    return xcnn.__version__


def _message(error: BaseException) -> str:
    # KeyError's str() adds quotes around its message; show the sentence itself.
    return str(error.args[0]) if error.args else repr(error)


def _check_regular_file(path: Path, where: str) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{where} does not exist") from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{where} is a directory, expected a checkpoint file")
    if not stat.S_ISREG(mode):
        raise ValueError(f"{where} is not a regular file")


def _read(path: Path, where: str) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Parse the file: (metadata blob, model arrays by name, optimizer arrays by key)."""
    model_arrays: dict[str, np.ndarray] = {}
    optim_arrays: dict[str, np.ndarray] = {}
    try:
        with safe_open(path, framework="numpy") as handle:
            header = handle.metadata() or {}
            if _META_KEY not in header:
                raise ValueError(
                    f"{where} is a safetensors file without xcnn metadata; "
                    "was it written by xcnn.save?"
                )
            try:
                blob = json.loads(header[_META_KEY])
            except json.JSONDecodeError as error:
                raise ValueError(f"{where} has corrupt xcnn metadata ({error})") from None
            if not isinstance(blob, dict):
                raise ValueError(f"{where} has corrupt xcnn metadata (not a JSON object)")
            for key in handle.keys():
                if key.startswith(_MODEL):
                    model_arrays[key[len(_MODEL) :]] = handle.get_tensor(key)
                elif key.startswith(_OPTIM):
                    optim_arrays[key[len(_OPTIM) :]] = handle.get_tensor(key)
                else:
                    raise ValueError(f"{where} holds an unknown tensor {key!r}")
    except SafetensorError as error:
        raise ValueError(f"{where} is not a readable safetensors file ({error})") from None
    return blob, model_arrays, optim_arrays


def _check_architecture(model: Any, arrays: dict[str, np.ndarray], where: str) -> None:
    """Raise one ValueError listing every missing, unexpected and mis-shaped entry."""
    expected: dict[str, tuple[int, ...]] = {}
    for name, param in model.named_parameters():
        expected[name] = tuple(param.data.shape)
    for name, buffer in model.named_buffers():
        expected[name] = tuple(buffer.shape)
    missing = [k for k in expected if k not in arrays]
    unexpected = [k for k in arrays if k not in expected]
    shapes = [
        f"{k}: model {expected[k]}, checkpoint {tuple(arrays[k].shape)}"
        for k in expected
        if k in arrays and tuple(arrays[k].shape) != expected[k]
    ]
    if not (missing or unexpected or shapes):
        return
    problems = []
    if missing:
        problems.append(f"missing from the checkpoint: {missing}")
    if unexpected:
        problems.append(f"not in the model: {unexpected}")
    if shapes:
        problems.append(f"shape mismatch: {'; '.join(shapes)}")
    raise ValueError(
        f"{where} was saved from another architecture than this {type(model).__name__}: "
        + " | ".join(problems)
    )


def _join_optimizer_state(saved: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Rebuild ``optimizer.state_dict()``'s layout from the JSON part and the tensors."""
    state: dict[str, dict[str, Any]] = {str(i): {} for i in saved.get("indices", [])}
    for key, value in arrays.items():
        index, _, name = key.partition(".")
        state.setdefault(index, {})[name] = value
    for index, entries in saved.get("scalars", {}).items():
        state.setdefault(index, {}).update(entries)
    return {"state": state, "param_groups": saved["param_groups"]}
