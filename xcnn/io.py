"""Checkpoints: pickle-free, atomic, checksummed and complete enough to resume a run exactly.

A checkpoint is one `safetensors <https://github.com/huggingface/safetensors>`_
file. Its tensors are host (NumPy) copies, so a file written on CuPy loads on
NumPy and back:

* ``"model.<name>"`` -- every parameter and buffer (``model.state_dict()``);
* ``"optim.state.<index>.<name>"`` -- the optimizer's per-parameter arrays
  (momentum buffers, Adam moments).

Everything else lives in the header's metadata, which safetensors keeps as
``str -> str``. The key ``"xcnn"`` holds a JSON object with the optimizer's
param groups and scalar state, the scheduler state, epoch and step, the RNG
states (xcnn's default host generator, the data loader's, each module's
``generator`` such as Dropout's), the training history, the user's ``**meta``
and ``xcnn.__version__``.

Integrity. safetensors stores no checksum, so a flipped bit in a weight would
load silently; xcnn stores two SHA-256 digests (format version 2):

* ``"tensors_sha256"`` in the JSON object: over every tensor in sorted key
  order, each fed as the UTF-8 line ``json.dumps([key, dtype.str, list(shape)])
  + "\\n"`` (``dtype.str`` of the little-endian dtype, e.g. ``"<f4"``) followed
  by its raw little-endian C-order bytes;
* ``"xcnn_sha256"``, a second metadata key: over the UTF-8 JSON text itself,
  which covers the tensor digest too.

:func:`load` verifies both before it looks at anything else, and refuses a file
without them: it is not an xcnn checkpoint, or one from an incompatible version.

Writes go to a temporary file ``.<name>.<12 hex digits>.tmp`` in the target's
directory, are flushed to disk and renamed over the target, so a crash leaves
the previous checkpoint intact; temporary files that killed saves left behind
are removed by the next save of the same file. Loading parses JSON and raw
little-endian tensors only: nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import reprlib
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from xcnn import backends
from xcnn._atomic import atomic_write

__all__ = ["atomic_write", "load", "read_metadata", "save"]

#: Bumped when the layout of the metadata changes incompatibly (2: SHA-256 digests).
FORMAT_VERSION = 2
_META_KEY = "xcnn"
_DIGEST_KEY = "xcnn_sha256"
_TENSORS_DIGEST = "tensors_sha256"
_MODEL = "model."
_OPTIM = "optim.state."


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

    The file carries SHA-256 digests of its tensors and of its metadata, which
    :func:`load` verifies (the format is in this module's documentation).

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
        A ``meta`` value or a state entry is not JSON-serialisable, or
        ``history`` is neither a History nor a dict.
    ValueError
        ``epoch`` or ``step`` is not ``None`` or an integer ``>= 0``, or a
        ``meta`` name is ``xcnn_version`` (reserved).
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
    for name, count in (("epoch", epoch), ("step", step)):
        # load() refuses any other value, so save() must not write one.
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0
        ):
            raise ValueError(
                f"xcnn.save({str(path)!r}): {name} must be None or an integer >= 0, got {count!r}"
            )
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
        "history": _history_dict(history, path),
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
    blob[_TENSORS_DIGEST] = _tensors_digest(tensors)
    try:
        # Serialise before touching the disk: a bad value fails with no file written.
        text = json.dumps(blob, default=_json_default, allow_nan=True)
    except TypeError as error:
        raise TypeError(
            f"xcnn.save({str(path)!r}): checkpoint metadata must be JSON-serialisable "
            f"(numbers, strings, lists, dicts): {error}"
        ) from None
    metadata = {_META_KEY: text, _DIGEST_KEY: _text_digest(text)}
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


def _history_dict(history: Any, path: Path) -> dict | None:
    if history is None or isinstance(history, dict):
        return history
    if not hasattr(history, "to_dict"):
        raise TypeError(
            f"xcnn.save({str(path)!r}): history must be an xcnn History or a dict, "
            f"got {type(history).__name__}"
        )
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


def _tensors_digest(tensors: dict[str, np.ndarray]) -> str:
    """SHA-256 over every tensor's key, dtype, shape and bytes, in sorted key order."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        array = tensors[key]
        # Little-endian C order is what safetensors stores, on any host.
        little = np.asarray(array, dtype=array.dtype.newbyteorder("<"), order="C")
        line = json.dumps([key, little.dtype.str, list(little.shape)]) + "\n"
        digest.update(line.encode("utf-8"))
        digest.update(little.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def _text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
    checkpoint written on CuPy loads on NumPy, and float64 values load into a
    float32 model (and back); a tensor of another kind (integer or bool for a
    floating parameter, floating for an integer buffer) is refused. Nothing is
    unpickled.

    Loading is all or nothing. The file's SHA-256 digests are verified first;
    then every piece (model tensors, optimizer, scheduler and loader state, RNG
    states, the user's metadata) is checked against what it is loaded into
    before anything is changed. If applying a piece still fails (say the
    optimizer refuses a saved hyperparameter), the pieces already applied are
    restored to their previous state.

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
        Anything else wrong with the file; the message names it, and nothing
        was changed. Not an xcnn checkpoint, or one from an incompatible version
        (no checksum, another format version); corrupt (a checksum mismatch,
        unreadable safetensors, malformed metadata); a checkpoint of another
        architecture or dtype (the message lists the differing keys, shapes and
        dtypes); state that does not fit the optimizer, scheduler or loader
        given, or that the file lacks.
    """
    path = Path(path)
    where = f"checkpoint {str(path)!r}"
    _check_regular_file(path, where)
    text, tensors = _read(path, where)
    try:
        contents = _validate(text, tensors, model, optimizer, scheduler, loader, where)
    except _UNFORESEEN as error:
        # _validate checks every entry explicitly; this guard only keeps an entry
        # it did not foresee from escaping as an undocumented exception type.
        raise ValueError(f"{where} has malformed xcnn metadata ({error!r})") from None

    # The optimizer, scheduler and loader judge the values of their own state when
    # loading it, so they go first, while as little as possible has changed.
    steps: list[tuple[str, Any, Any]] = []
    if optimizer is not None:
        steps.append(("optimizer state", optimizer, contents.optimizer))
    if scheduler is not None:
        steps.append(("scheduler state", scheduler, contents.scheduler))
    if loader is not None:
        steps.append(("data loader state", loader, contents.loader))
    steps.append(("model weights", model, contents.model))
    for name, generator in _module_generators(model):
        steps.append((f"random generator of module {name!r}", generator, contents.generators[name]))
    if restore_rng:
        steps.append(("default random generator", _DefaultGenerator(), contents.default_rng))
    _apply(steps, where)
    return contents.meta


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a checkpoint written by :func:`save`, without loading it into a model.

    What a reader needs before it can build the model to :func:`load` into: the
    ``**meta`` given to :func:`save` (or ``checkpoint_meta`` given to
    :func:`xcnn.fit`). The file's checksums are verified as by :func:`load`.

    Parameters
    ----------
    path : str or os.PathLike
        A checkpoint file.

    Returns
    -------
    dict
        As :func:`load` returns: the ``**meta``, plus ``"epoch"``, ``"step"``,
        ``"history"`` and ``"xcnn_version"``.

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        ``path`` does not exist or is a directory.
    ValueError
        Not an xcnn checkpoint, corrupt, or of another format version.

    Examples
    --------
    >>> import os, tempfile, xcnn
    >>> from xcnn import nn
    >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
    >>> _ = xcnn.save(path, nn.Sequential(nn.Linear(4, 2)), classes=["cat", "dog"])
    >>> xcnn.io.read_metadata(path)["classes"]
    ['cat', 'dog']
    """
    path = Path(path)
    where = f"checkpoint {str(path)!r}"
    _check_regular_file(path, where)
    text, tensors = _read(path, where)
    try:
        blob = _parse(text, where)
        _split_tensors(tensors, blob, where)
        _check_layout(blob, where)
    except _UNFORESEEN as error:
        raise ValueError(f"{where} has malformed xcnn metadata ({error!r})") from None
    return _meta(blob)


#: What a malformed entry that the checks in _validate did not foresee could raise.
_UNFORESEEN = (KeyError, TypeError, AttributeError, IndexError, OverflowError, RecursionError)


@dataclass
class _Contents:
    """A checkpoint's pieces, validated against their targets and ready to apply."""

    model: dict[str, np.ndarray]
    generators: dict[str, dict]
    default_rng: dict
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    loader: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class _DefaultGenerator:
    """xcnn's default host generator behind the ``state_dict`` protocol of the others."""

    def state_dict(self) -> dict:
        return backends.default_generator().bit_generator.state

    def load_state_dict(self, state: dict) -> None:
        backends.default_generator().bit_generator.state = state


def _apply(steps: list[tuple[str, Any, Any]], where: str) -> None:
    """``target.load_state_dict(state)`` for each step; on failure, undo all of them."""
    undo: list[tuple[Any, Any]] = []
    try:
        for what, target, state in steps:
            undo.append((target, target.state_dict()))
            try:
                target.load_state_dict(state)
            except (KeyError, ValueError, TypeError, OverflowError) as error:
                raise ValueError(
                    f"{where}: cannot restore the {what} ({_message(error)}); nothing was changed"
                ) from error
    except BaseException:
        for target, before in reversed(undo):
            target.load_state_dict(before)
        raise


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


def _read(path: Path, where: str) -> tuple[str, dict[str, np.ndarray]]:
    """The xcnn metadata text, verified against its SHA-256, and every tensor."""
    try:
        with safe_open(path, framework="numpy") as handle:
            header = handle.metadata() or {}
            if _META_KEY not in header:
                raise ValueError(
                    f"{where} is a safetensors file without xcnn metadata; "
                    "was it written by xcnn.save?"
                )
            text, digest = header[_META_KEY], header.get(_DIGEST_KEY)
            if digest is None:
                raise ValueError(
                    f"{where} carries no xcnn checksum ({_DIGEST_KEY!r}): it is not an xcnn "
                    f"checkpoint, or was written by an incompatible xcnn version (this is "
                    f"xcnn {_version()}, checkpoint format {FORMAT_VERSION})"
                )
            if _text_digest(text) != digest:
                raise ValueError(
                    f"{where} is corrupt: its xcnn metadata does not match its SHA-256 checksum"
                )
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except SafetensorError as error:
        raise ValueError(f"{where} is not a readable safetensors file ({error})") from None
    return text, tensors


def _validate(
    text: str,
    tensors: dict[str, np.ndarray],
    model: Any,
    optimizer: Any,
    scheduler: Any,
    loader: Any,
    where: str,
) -> _Contents:
    """Check every piece of the checkpoint against its target; change nothing."""
    blob = _parse(text, where)
    model_arrays, optim_arrays = _split_tensors(tensors, blob, where)
    _check_layout(blob, where)
    _check_architecture(model, model_arrays, where)

    generators = dict(_module_generators(model))
    saved_generators = blob["rng"]["modules"]
    if set(generators) != set(saved_generators):
        raise ValueError(
            f"{where} does not match {type(model).__name__}: modules with a random "
            f"generator differ: checkpoint has {sorted(saved_generators)}, "
            f"model has {sorted(generators)}"
        )
    for name, generator in generators.items():
        _conform(
            saved_generators[name],
            generator.state_dict(),
            f"rng.modules.{name}",
            f"the random generator of module {name!r}",
            where,
        )
    default_rng = blob["rng"]["default"]
    _conform(
        default_rng,
        _DefaultGenerator().state_dict(),
        "rng.default",
        "xcnn's default random generator",
        where,
    )

    contents = _Contents(model_arrays, saved_generators, default_rng)
    for what, target in (("optimizer", optimizer), ("scheduler", scheduler), ("loader", loader)):
        if target is not None and blob[what] is None:
            raise ValueError(f"{where} holds no {what} state for the {what} given to load")
    if optimizer is not None:
        contents.optimizer = _optimizer_state(blob["optimizer"], optim_arrays, optimizer, where)
    for what, target in (("scheduler", scheduler), ("loader", loader)):
        if target is not None:
            state = blob[what]
            label = f"the {type(target).__name__} given to load"
            _conform(state, target.state_dict(), what, label, where)
            setattr(contents, what, state)

    contents.meta = _meta(blob)
    return contents


def _meta(blob: dict[str, Any]) -> dict[str, Any]:
    """What :func:`load` returns: the user's ``**meta`` and the run's counters."""
    meta = dict(blob["config"])
    meta.update(
        epoch=blob["epoch"],
        step=blob["step"],
        history=blob["history"],
        xcnn_version=blob["xcnn_version"],
    )
    return meta


def _parse(text: str, where: str) -> dict[str, Any]:
    """The metadata's JSON object, of this format version."""
    try:
        blob = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise ValueError(f"{where} has corrupt xcnn metadata ({error})") from None
    if not isinstance(blob, dict):
        raise ValueError(f"{where} has corrupt xcnn metadata (not a JSON object)")
    version = blob.get("format")
    if type(version) is not int or version != FORMAT_VERSION:
        raise ValueError(
            f"{where} has format version {version!r}; this xcnn "
            f"({_version()}) reads version {FORMAT_VERSION}"
        )
    return blob


def _split_tensors(
    tensors: dict[str, np.ndarray], blob: dict[str, Any], where: str
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Verify the tensors' digest; return (model arrays by name, optimizer arrays by key)."""
    digest = blob.get(_TENSORS_DIGEST)
    if not isinstance(digest, str):
        raise ValueError(f"{where} has malformed xcnn metadata: no {_TENSORS_DIGEST!r} entry")
    if digest != _tensors_digest(tensors):
        raise ValueError(f"{where} is corrupt: its tensors do not match their SHA-256 checksum")
    model_arrays: dict[str, np.ndarray] = {}
    optim_arrays: dict[str, np.ndarray] = {}
    for key, array in tensors.items():
        if key.startswith(_MODEL):
            model_arrays[key[len(_MODEL) :]] = array
        elif key.startswith(_OPTIM):
            optim_arrays[key[len(_OPTIM) :]] = array
        else:
            raise ValueError(f"{where} holds an unknown tensor {key!r}")
    return model_arrays, optim_arrays


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_index(value: Any) -> bool:
    return isinstance(value, str) and value.isascii() and value.isdigit()


#: Every top-level entry of the metadata: (key, test, what the test accepts).
_LAYOUT: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("xcnn_version", lambda v: isinstance(v, str), "a string"),
    ("backend", lambda v: isinstance(v, str), "a string"),
    ("epoch", lambda v: v is None or (_is_int(v) and v >= 0), "null or an integer >= 0"),
    ("step", lambda v: v is None or (_is_int(v) and v >= 0), "null or an integer >= 0"),
    ("history", lambda v: v is None or isinstance(v, dict), "null or an object"),
    ("config", lambda v: isinstance(v, dict), "an object"),
    ("optimizer", lambda v: v is None or isinstance(v, dict), "null or an object"),
    ("scheduler", lambda v: v is None or isinstance(v, dict), "null or an object"),
    ("loader", lambda v: v is None or isinstance(v, dict), "null or an object"),
    ("rng", lambda v: isinstance(v, dict), "an object"),
)

#: The entries of ``rng`` and of ``optimizer``, in the same form.
_RNG_LAYOUT: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("default", lambda v: isinstance(v, dict), "an object"),
    (
        "modules",
        lambda v: isinstance(v, dict) and all(isinstance(s, dict) for s in v.values()),
        "an object mapping module names to objects",
    ),
)
_OPTIMIZER_LAYOUT: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("class", lambda v: isinstance(v, str), "a string"),
    (
        "indices",
        lambda v: isinstance(v, list) and all(_is_index(i) for i in v),
        "a list of parameter indices (decimal strings)",
    ),
    (
        "scalars",
        lambda v: (
            isinstance(v, dict)
            and all(
                _is_index(i) and isinstance(e, dict) and all(_is_number(x) for x in e.values())
                for i, e in v.items()
            )
        ),
        "an object mapping parameter indices to objects of numbers",
    ),
    (
        "param_groups",
        lambda v: isinstance(v, list) and all(isinstance(g, dict) for g in v),
        "a list of objects",
    ),
)


def _check_entries(
    node: dict[str, Any], layout: tuple[tuple[str, Callable[[Any], bool], str], ...], prefix: str
) -> None:
    for name, test, expected in layout:
        key = prefix + name
        if name not in node:
            raise ValueError(f"no {key!r} entry")
        if not test(node[name]):
            raise ValueError(f"{key!r} should be {expected}, got {reprlib.repr(node[name])}")


def _check_layout(blob: dict[str, Any], where: str) -> None:
    """Raise unless every entry of the metadata has the type :func:`save` gives it."""
    try:
        _check_entries(blob, _LAYOUT, "")
        _check_entries(blob["rng"], _RNG_LAYOUT, "rng.")
        if blob["optimizer"] is not None:
            _check_entries(blob["optimizer"], _OPTIMIZER_LAYOUT, "optimizer.")
    except ValueError as error:
        raise ValueError(f"{where} has malformed xcnn metadata: {error}") from None


def _check_architecture(model: Any, arrays: dict[str, np.ndarray], where: str) -> None:
    """Raise one ValueError listing every missing, unexpected, mis-shaped and mis-typed entry."""
    expected: dict[str, Any] = {name: param.data for name, param in model.named_parameters()}
    expected.update(model.named_buffers())
    missing = [k for k in expected if k not in arrays]
    unexpected = [k for k in arrays if k not in expected]
    shapes, dtypes = [], []
    for key, current in expected.items():
        if key not in arrays:
            continue
        given = arrays[key]
        if tuple(given.shape) != tuple(current.shape):
            shapes.append(f"{key}: model {tuple(current.shape)}, checkpoint {tuple(given.shape)}")
        want = np.dtype(backends.dtype_name(current.dtype))
        if _KINDS[want.kind] != _KINDS.get(given.dtype.kind):
            dtypes.append(f"{key}: model {want.name}, checkpoint {given.dtype.name}")
    if not (missing or unexpected or shapes or dtypes):
        return
    problems = []
    if missing:
        problems.append(f"missing from the checkpoint: {missing}")
    if unexpected:
        problems.append(f"not in the model: {unexpected}")
    if shapes:
        problems.append(f"shape mismatch: {'; '.join(shapes)}")
    if dtypes:
        problems.append(
            f"dtype of another kind: {'; '.join(dtypes)} (float32 and float64 load into each "
            "other; integer and bool values never load into floating parameters, nor "
            "floating values into integer buffers)"
        )
    intro = (
        f"was saved from another architecture than this {type(model).__name__}"
        if missing or unexpected or shapes
        else f"does not fit this {type(model).__name__}"
    )
    raise ValueError(f"{where} {intro}: " + " | ".join(problems))


#: dtype kinds that load into each other (``Module.load_state_dict`` casts within one).
_KINDS = {"b": "bool", "i": "integer", "u": "integer", "f": "floating", "c": "complex"}


def _optimizer_state(
    saved: dict[str, Any], arrays: dict[str, np.ndarray], optimizer: Any, where: str
) -> dict[str, Any]:
    """Rebuild ``optimizer.state_dict()``'s layout from the file, checked against ``optimizer``."""
    saved_class = saved["class"]
    if saved_class != type(optimizer).__name__:
        raise ValueError(
            f"{where} holds {saved_class} optimizer state, "
            f"cannot load it into {type(optimizer).__name__}"
        )
    _conform(
        saved["param_groups"],
        optimizer.state_dict()["param_groups"],
        "optimizer.param_groups",
        f"the {type(optimizer).__name__} given to load",
        where,
    )
    indices = saved["indices"]
    state: dict[str, dict[str, Any]] = {index: {} for index in indices}
    for key, array in sorted(arrays.items()):
        index, _, name = key.partition(".")
        if index not in state or not name:
            raise ValueError(
                f"{where} holds the optimizer tensor {_OPTIM + key!r}, which belongs to no "
                f"saved parameter (the optimizer state has indices {indices})"
            )
        if array.dtype.kind != "f":
            raise ValueError(
                f"{where}: the optimizer tensor {_OPTIM + key!r} has dtype "
                f"{array.dtype.name}, expected a floating dtype"
            )
        state[index][name] = array
    for index, entries in saved["scalars"].items():
        if index not in state:
            raise ValueError(
                f"{where} holds optimizer scalars for parameter {index}, which has no "
                f"saved state (the optimizer state has indices {indices})"
            )
        state[index].update(entries)
    return {"state": state, "param_groups": saved["param_groups"]}


def _conform(value: Any, template: Any, label: str, owner: str, where: str) -> None:
    """Raise unless ``value`` (from the file) has the layout of ``template``.

    ``template`` is the target's own ``state_dict()``, so the check needs no
    knowledge of each class: same keys, same list lengths, the same JSON kind at
    every leaf (any number where the target has a number), and random-generator
    states that their generator accepts exactly. Values themselves (a negative
    learning rate, say) are the target's ``load_state_dict`` to judge.
    """
    problem = _mismatch(value, template, label)
    if problem is not None:
        raise ValueError(f"{where} does not fit {owner}: {problem}")


def _mismatch(value: Any, template: Any, label: str) -> str | None:
    """How ``value`` differs in layout from ``template``, or None (see :func:`_conform`)."""
    got = reprlib.repr(value)
    if isinstance(template, dict):
        if not isinstance(value, dict):
            return f"{label} should be an object, got {got}"
        if set(value) != set(template):
            return f"{label} should have the entries {sorted(template)}, got {sorted(value)}"
        if isinstance(template.get("bit_generator"), str):
            return _bit_generator_mismatch(value, template["bit_generator"], label)
        for key, item in template.items():
            problem = _mismatch(value[key], item, f"{label}.{key}")
            if problem is not None:
                return problem
        return None
    if isinstance(template, (list, tuple)):
        if not isinstance(value, list) or len(value) != len(template):
            items = f"{len(template)} item" + ("" if len(template) == 1 else "s")
            return f"{label} should be a list of {items}, got {got}"
        for i, (item, expected) in enumerate(zip(value, template, strict=True)):
            problem = _mismatch(item, expected, f"{label}[{i}]")
            if problem is not None:
                return problem
        return None
    if isinstance(template, bool):
        return None if isinstance(value, bool) else f"{label} should be true or false, got {got}"
    if isinstance(template, numbers.Real):
        return None if _is_number(value) else f"{label} should be a number, got {got}"
    if isinstance(template, str):
        return None if isinstance(value, str) else f"{label} should be a string, got {got}"
    if template is None:
        return None if value is None else f"{label} should be null, got {got}"
    return None  # a kind JSON does not have: the target's load_state_dict judges it


def _bit_generator_mismatch(value: dict, name: str, label: str) -> str | None:
    """Whether a fresh ``numpy.random.<name>`` takes ``value`` as its state, exactly."""
    if value.get("bit_generator") != name:
        return f"{label} should be a {name} state, got {reprlib.repr(value.get('bit_generator'))}"
    kind = getattr(np.random, name, None)
    if kind is None:  # a bit generator NumPy does not export: its owner judges the state
        return None
    probe = kind(0)
    try:
        probe.state = value
    except (TypeError, ValueError, KeyError, OverflowError) as error:
        return f"{label} is not a valid {name} state ({error})"
    if probe.state != value:  # the setter truncated or wrapped something
        return f"{label} is not a valid {name} state (a value is out of range)"
    return None
