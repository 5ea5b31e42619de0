"""``DistributedDataParallel``: one replica of the model per rank, gradients averaged in backward.

At wrap time every rank sends a short description of its model (each parameter's
and buffer's name, shape, dtype; whether it requires grad; its backend); if they
differ, every rank raises the same error naming the first difference. Then rank
0's parameters and buffers are broadcast, so all replicas start equal.

How gradients get averaged, on the graph's own walk. In training mode
``forward(x)`` records two extra nodes around the wrapped module::

    token = _SyncGradients(anchor)      # created FIRST: before any node of the module
    y = module(x)                       # the module's nodes, then the loss's
    y = _Join(token, y)                 # passes y through; its edge reaches the token

The backward walk runs the newest ready node first, and a node is always newer
than the nodes it consumes, so the walk visits nodes in strictly decreasing order
of creation (the newest unvisited node is always ready: everything that consumes
it is newer, hence visited). ``_SyncGradients`` is older than every node that the
module's forward and the loss created, so it runs after all of them, that is after
every parameter gradient of this backward pass has been accumulated. ``_Join``
only puts the token on the walk (a zero gradient flows to it), so the module's
first layer computes no input gradient it would not compute anyway. The
sync node's backward averages all gradients over the ranks in buckets.

The buckets: consecutive parameters of one dtype and backend, up to ``bucket_mb``
MiB each. A bucket's gradients are packed into one flat array with one extra slot
per parameter (1 where this rank has a gradient); one ``Allreduce`` (in place,
sum) per bucket adds them over the ranks; the sums are divided by the world size
and handed back as views. A parameter without a gradient on some rank contributes
zeros there; one that no rank has a gradient for keeps ``grad = None``, as in a
single process. On CuPy the buckets are summed on the GPU with NCCL instead
(``_nccl_cupy.py``, unverified until it runs on GPUs); where a rank has no NCCL,
through host memory and MPI, with a warning.

Averaging is linear, so a second sync of gradients that are already averaged
changes nothing: calling the model twice before one backward, or backward twice
(``retain_graph``), gives the right average, only with more messages. Every rank
must call the wrapped model (in training mode) as many times as every other, and
the loss must depend on the model's output: the walk reaches the sync node through it.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from xcnn import backends
from xcnn.autograd import Function, Tensor
from xcnn.autograd.grad_mode import is_grad_enabled
from xcnn.backends import array_namespace, dtype_name, namespace_name
from xcnn.distributed import world
from xcnn.nn.module import Module, Parameter

__all__ = ["DistributedDataParallel", "average_gradients"]

_MIB = 1 << 20


class DistributedDataParallel(Module):
    """Data parallelism: ``module`` replicated on every rank, gradients averaged after backward.

    Use it under ``mpiexec -n N`` exactly as the module itself; with one rank it
    only calls ``module``. Wrapping is collective: every rank must wrap at the
    same point of its script.

    Parameters
    ----------
    module : xcnn.nn.Module
        The model. Available as ``.module``; ``state_dict`` keys get a ``"module."``
        prefix, as in PyTorch (save ``xcnn.distributed.unwrap(model)`` to get the
        plain model's keys).
    bucket_mb : float, default 25
        Largest size of one gradient bucket (one ``Allreduce`` each), in MiB.
    broadcast_buffers : bool, default True
        Before each training-mode forward, copy rank 0's buffers (batch-norm
        running statistics) to every rank, as PyTorch's DDP does.
    hyperparameters : mapping, optional
        Checked with :func:`xcnn.distributed.check_same` at wrap time, e.g.
        ``{"lr": 0.1, "batch_size": 32, "seed": 0, "model": "lenet5"}``.

    Raises
    ------
    RankMismatchError
        (a ``ValueError``) on every rank, when the ranks' models or hyperparameters
        differ; the message names the first difference and each rank's value.

    Notes
    -----
    Collectives run only in training-mode forwards with gradients enabled (the ones
    that backward follows): in eval mode or under ``no_grad`` the wrapper just calls
    the module, so rank 0 may evaluate alone. See the module documentation for how
    the gradients are averaged and the rule of the walk it relies on.

    Examples
    --------
    >>> import numpy as np, xcnn
    >>> import xcnn.distributed as dist
    >>> from xcnn import nn, optim
    >>> model = dist.DistributedDataParallel(nn.Sequential(nn.Linear(4, 2)))
    >>> opt = optim.SGD(model.parameters(), lr=0.1)
    >>> x = xcnn.tensor(np.ones((8, 4), np.float32))
    >>> y = xcnn.tensor(np.zeros(8, np.int64))
    >>> nn.CrossEntropyLoss()(model(x), y).backward()
    >>> opt.step()
    >>> sorted(model.state_dict())
    ['module.0.bias', 'module.0.weight']
    """

    def __init__(
        self,
        module: Module,
        *,
        bucket_mb: float = 25.0,
        broadcast_buffers: bool = True,
        hyperparameters: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(
                f"DistributedDataParallel: expected an xcnn.nn.Module, got {type(module).__name__}"
            )
        if not (isinstance(bucket_mb, (int, float)) and bucket_mb > 0):
            raise ValueError(
                f"DistributedDataParallel: bucket_mb must be a positive number, got {bucket_mb!r}"
            )
        self.module = module
        self.broadcast_buffers = bool(broadcast_buffers)
        self._require_sync = True
        world.init()
        self._world_size = world.world_size()
        self._averager = _GradientAverager(
            [p for p in module.parameters() if p.requires_grad], int(bucket_mb * _MIB)
        )
        self._buffer_slots = [
            (owner, name)
            for owner in module.modules()
            for name, value in owner._buffers.items()
            if value is not None
        ]
        if self._world_size == 1:
            return
        if hyperparameters is not None:
            world.check_same(hyperparameters)
        message = _model_difference(world._allgather_json(_model_signature(module)))
        if message is not None:
            raise world.RankMismatchError(f"DistributedDataParallel: {message}")
        _broadcast(_parameter_slots(module) + self._buffer_slots, self._averager.bucket_bytes)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self._world_size == 1 or not (self.training and is_grad_enabled()):
            return self.module(*args, **kwargs)
        if self.broadcast_buffers and self._buffer_slots:
            _broadcast(self._buffer_slots, self._averager.bucket_bytes)
        anchor = next((p for p in self._averager.params if p.requires_grad), None)
        if not self._require_sync or anchor is None:
            return self.module(*args, **kwargs)
        token = _SyncGradients.apply(anchor, average=self._averager)
        return _join(token, self.module(*args, **kwargs))

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Accumulate gradients locally: backward passes inside skip the averaging.

        The first backward after the block averages everything accumulated, as in
        PyTorch (``with model.no_sync(): loss(model(x1)).backward()``, then
        ``loss(model(x2)).backward()`` outside).
        """
        previous = self._require_sync
        self._require_sync = False
        try:
            yield
        finally:
            self._require_sync = previous

    def average_gradients(self) -> None:
        """Average the wrapped module's gradients now (a backward pass does it by itself)."""
        self._averager()

    def extra_repr(self) -> str:
        return f"world_size={self._world_size}"


def average_gradients(
    model_or_params: Module | Iterable[Parameter], *, bucket_mb: float = 25.0
) -> None:
    """Average ``.grad`` over all ranks, in buckets: for a training loop that runs backward
    itself (layer by layer) instead of through :class:`DistributedDataParallel`.

    Every rank must call it with the same parameters. With one rank it does nothing.
    """
    if isinstance(model_or_params, Module):
        params = [p for p in model_or_params.parameters() if p.requires_grad]
    else:
        params = list(model_or_params)
    _GradientAverager(params, int(bucket_mb * _MIB))()


# -- the two nodes ----------------------------------------------------------------------


class _SyncGradients(Function):
    """The node created before the module's forward; its backward averages the gradients.

    Its one input (a parameter that requires grad) only makes the call recorded; it
    gets no gradient. The output is a 0-d zero, the token that ``_Join`` consumes.
    """

    name = "SyncGradients"

    @staticmethod
    def forward(ctx: Any, anchor: Any, *, average: Any) -> Any:
        ctx.average = average
        return array_namespace(anchor).zeros((), dtype=anchor.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        ctx.average()
        return None


class _Join(Function):
    """``y`` unchanged; a zero gradient to the token keeps ``_SyncGradients`` on the walk."""

    name = "SyncGradients"

    @staticmethod
    def forward(ctx: Any, token: Any, y: Any) -> Any:
        ctx.zero = array_namespace(token).zeros_like(token)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, Any]:
        return ctx.zero, grad


def _join(token: Tensor, out: Any) -> Any:
    """Pass every floating-point Tensor of the module's output through ``_Join``."""
    joined = 0

    def attach(value: Any) -> Any:
        nonlocal joined
        if not isinstance(value, Tensor) or not _is_floating(value.data):
            return value
        joined += 1
        tok = token
        if value.data.dtype != token.data.dtype:
            tok = token.double() if dtype_name(value.data.dtype) == "float64" else token.float()
        return _Join.apply(tok, value)

    if isinstance(out, Tensor):
        result = attach(out)
    elif isinstance(out, dict):
        result = type(out)((k, attach(v)) for k, v in out.items())
    elif isinstance(out, (tuple, list)):
        items = [attach(v) for v in out]
        result = type(out)(*items) if hasattr(out, "_fields") else type(out)(items)
    else:
        result = out
    if not joined:
        raise TypeError(
            "DistributedDataParallel: the module returned "
            f"{type(out).__name__}, with no floating-point Tensor to attach the gradient "
            "averaging to; return a Tensor (or a tuple, list or dict of Tensors), or call "
            "xcnn.distributed.average_gradients(model) after backward yourself"
        )
    return result


def _is_floating(array: Any) -> bool:
    return backends.host_dtype(array.dtype).kind == "f"


# -- averaging ----------------------------------------------------------------------------


class _GradientAverager:
    """Averages the gradients of ``params`` over all ranks, one Allreduce per bucket."""

    def __init__(self, params: list[Parameter], bucket_bytes: int) -> None:
        self.params = params
        self.bucket_bytes = bucket_bytes
        self._nccl: Any = None  # at the first CuPy bucket: an NcclAverager, or False

    def __call__(self) -> None:
        comm = world._world()
        if comm is None or comm.Get_size() == 1 or not self.params:
            return
        buckets = _buckets(self.params, self.bucket_bytes)
        on_gpu = [p for b in buckets if namespace_name(b[0].data) == "cupy" for p in b]
        present: dict[int, bool] = {}
        if on_gpu and self._nccl is None:
            self._nccl = _nccl_averager()
        if on_gpu and self._nccl:
            # Which parameters have a gradient on some rank: a few host bytes over MPI,
            # so the device bucket needs no read back.
            counts = np.array([p.grad is not None for p in on_gpu], dtype=np.int32)
            world.wait(comm.Iallreduce(_mpi().IN_PLACE, counts, op=_mpi().SUM), _what(0, 0))
            present = {id(p): bool(c) for p, c in zip(on_gpu, counts, strict=True)}
        for index, bucket in enumerate(buckets):
            if namespace_name(bucket[0].data) == "cupy" and self._nccl:
                self._nccl.average(bucket, [present[id(p)] for p in bucket])
            else:
                _average_on_host(comm, bucket, _what(index, len(buckets)))


def _nccl_averager() -> Any:
    """An NCCL averager when every rank has NCCL, else False (buckets go through the host)."""
    try:
        from cupy.cuda import nccl  # noqa: F401

        error = None
    except ImportError as exc:
        error = str(exc) or "cupy.cuda.nccl cannot be imported"
    missing = [r for r, e in enumerate(world._allgather_json(error)) if e is not None]
    if missing:
        warnings.warn(
            f"xcnn.distributed: NCCL is not available on rank(s) {missing} ({error}); CuPy "
            "gradients are averaged through host memory with MPI instead",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    from xcnn.distributed._nccl_cupy import NcclAverager

    return NcclAverager()


def _what(index: int, count: int) -> str:
    if not count:
        return "DistributedDataParallel's gradient averaging"
    return f"DistributedDataParallel's gradient averaging (bucket {index + 1} of {count})"


def _mpi() -> Any:
    from mpi4py import MPI

    return MPI


def _buckets(params: list[Parameter], bucket_bytes: int) -> list[list[Parameter]]:
    """Consecutive parameters of one backend and dtype, at most ``bucket_bytes`` each
    (a larger parameter gets a bucket of its own)."""
    buckets: list[list[Parameter]] = []
    key, size = None, 0
    for p in params:
        dtype = backends.host_dtype(p.data.dtype)
        this = (namespace_name(p.data), dtype)
        nbytes = math.prod(p.shape) * dtype.itemsize
        if not buckets or this != key or size + nbytes > bucket_bytes:
            buckets.append([])
            key, size = this, 0
        buckets[-1].append(p)
        size += nbytes
    return buckets


def _average_on_host(comm: Any, bucket: list[Parameter], what: str) -> None:
    """One bucket through host memory: pack, Allreduce in place, divide, unpack."""
    sizes = [math.prod(p.shape) for p in bucket]
    total = sum(sizes)
    flat = np.empty(total + len(bucket), dtype=backends.host_dtype(bucket[0].data.dtype))
    offset = 0
    for j, (p, size) in enumerate(zip(bucket, sizes, strict=True)):
        if p.grad is None:
            flat[offset : offset + size] = 0
            flat[total + j] = 0
        else:
            grad = p.grad if type(p.grad) is np.ndarray else backends.to_host(p.grad)
            flat[offset : offset + size] = grad.reshape(-1)
            flat[total + j] = 1
        offset += size
    world.wait(comm.Iallreduce(_mpi().IN_PLACE, flat, op=_mpi().SUM), what)
    flat[:total] /= comm.Get_size()
    offset = 0
    for j, (p, size) in enumerate(zip(bucket, sizes, strict=True)):
        if flat[total + j] == 0:
            p.grad = None  # no rank had a gradient for it
        else:
            grad = flat[offset : offset + size].reshape(p.shape)
            if type(p.data) is not np.ndarray:
                grad = backends.get(namespace_name(p.data)).asarray(grad, dtype=p.data.dtype)
            p.grad = grad
        offset += size


# -- wrap time ----------------------------------------------------------------------------


def _model_signature(module: Module) -> list[dict[str, Any]]:
    """What must agree across ranks: every parameter and buffer, in order."""
    entries = []
    for name, p in module.named_parameters():
        entries.append(
            {
                "kind": "parameter",
                "name": name,
                "shape": list(p.shape),
                "dtype": dtype_name(p.data.dtype),
                "requires_grad": bool(p.requires_grad),
                "backend": namespace_name(p.data),
            }
        )
    for name, value in module.named_buffers():
        if value is None:
            continue
        entries.append(
            {
                "kind": "buffer",
                "name": name,
                "shape": list(value.shape),
                "dtype": dtype_name(value.dtype),
                "backend": namespace_name(value),
            }
        )
    return entries


def _model_difference(signatures: list[list[dict[str, Any]]]) -> str | None:
    """A sentence naming the first parameter or buffer on which the ranks differ, or None."""
    for i in range(max(len(s) for s in signatures)):
        entries = [s[i] if i < len(s) else None for s in signatures]
        if all(e == entries[0] for e in entries):
            continue
        labels = ["nothing" if e is None else f"{e['kind']} {e['name']!r}" for e in entries]
        if len(set(labels)) > 1:
            return (
                f"the ranks' models differ: entry {i} of the parameters and buffers is "
                + _by_rank(labels)
                + "; every rank must build the same model"
            )
        for field in ("shape", "dtype", "requires_grad", "backend"):
            values = [_show(field, e.get(field)) for e in entries]
            if len(set(values)) > 1:
                return (
                    f"the ranks' models differ: {labels[0]} has {field} "
                    + _by_rank(values)
                    + "; every rank must build the same model"
                )
    return None


def _show(field: str, value: Any) -> str:
    return str(tuple(value)) if field == "shape" else str(value)


def _by_rank(values: list[str]) -> str:
    groups: dict[str, list[int]] = {}
    for r, v in enumerate(values):
        groups.setdefault(v, []).append(r)
    return " but ".join(world._on_ranks(v, r) for v, r in groups.items())


def _parameter_slots(module: Module) -> list[tuple[Module, str]]:
    """``(owner, name)`` of every parameter, each shared parameter once."""
    seen: set[int] = set()
    slots = []
    for owner in module.modules():
        for name, p in owner._parameters.items():
            if id(p) not in seen:
                seen.add(id(p))
                slots.append((owner, name))
    return slots


def _broadcast(slots: list[tuple[Module, str]], bucket_bytes: int) -> None:
    """Copy rank 0's parameters and buffers (given as ``(owner, name)``) to every rank,
    one Bcast per bucket of arrays of one dtype (batch norm's float statistics and
    integer counters go in two buckets, not one per change of dtype)."""
    comm = world._world()
    root = comm.Get_rank() == 0
    by_dtype: dict[np.dtype, list[tuple[Module, str, Any]]] = {}
    for owner, name in slots:
        array = _get(owner, name)
        by_dtype.setdefault(backends.host_dtype(array.dtype), []).append((owner, name, array))
    groups: list[list[tuple[Module, str, Any]]] = []
    for dtype, items in by_dtype.items():
        size = bucket_bytes  # start a new group
        for item in items:
            nbytes = math.prod(item[2].shape) * dtype.itemsize
            if size + nbytes > bucket_bytes:
                groups.append([])
                size = 0
            groups[-1].append(item)
            size += nbytes
    for group in groups:
        dtype = backends.host_dtype(group[0][2].dtype)
        if root:
            flat = np.concatenate([backends.to_host(a).reshape(-1) for _, _, a in group])
            flat = flat.astype(dtype, copy=False)
        else:
            flat = np.empty(sum(math.prod(a.shape) for _, _, a in group), dtype=dtype)
        world.wait(comm.Ibcast(flat, root=0), "DistributedDataParallel's broadcast from rank 0")
        if root:
            continue
        offset = 0
        for owner, name, array in group:
            size = math.prod(array.shape)
            _set(owner, name, array, flat[offset : offset + size].reshape(array.shape))
            offset += size


def _get(owner: Module, name: str) -> Any:
    if name in owner._parameters:
        return owner._parameters[name].data
    return owner._buffers[name]


def _set(owner: Module, name: str, current: Any, host: np.ndarray) -> None:
    if type(current) is np.ndarray and current.flags.writeable:
        np.copyto(current, host)  # in place: whoever holds the array sees the new values
        return
    value = backends.get(namespace_name(current)).asarray(host, dtype=current.dtype)
    if name in owner._parameters:
        owner._parameters[name].data = value
    else:
        owner._set_buffer(name, value)
