"""The training loop: ``fit``, ``evaluate``, the ``History`` they record, and a plot of it.

One step of ``fit``, on the graph (``xcnn.Tensor``)::

    optimizer.zero_grad()
    logits = model(xcnn.Tensor(x))          # (N, classes); records the graph
    loss = loss_fn(logits, y)               # 0-d Tensor
    loss.backward()                         # grads accumulate on the Parameters
    optimizer.step()

Any module trains this way: an ``nn.Sequential``, a ``Module`` subclass that writes
only ``forward``, or a layer with a hand-written array ``backward``; ``loss_fn`` is
a loss module or any function of Tensors (``F.cross_entropy``, a custom loss).

Metrics stay on the device: each step adds ``loss * N`` and the number of
correct predictions into 0-d arrays, and the host reads them only every
``log_interval`` steps and at the end of the epoch (one small transfer). A
GPU therefore never waits for the Python loop except at those points. The
same reads check that the loss is finite, so a diverging run stops at the
latest ``log_interval`` steps after the first NaN/inf, before it can
overwrite the last good checkpoint.

With ``checkpoint=path`` every epoch ends with an atomic save of the model,
optimizer, scheduler, loader RNG, module generators, xcnn's default generator
and the history; ``resume=True`` continues from it so that, on NumPy, the
final weights are bit-identical to those of an uninterrupted run.

Under N ranks (:mod:`xcnn.distributed` initialised, e.g. by
``DistributedDataParallel``) each host read sums the metrics of every rank with
one ``all_reduce`` (loss sums, correct counts, images, and each rank's count of
finite steps), so every rank sees the global numbers and stops together on a
NaN. Rank 0 alone prints, draws the bar and writes the checkpoint and history;
the others wait until the checkpoint is complete
(:func:`xcnn.distributed.save_checkpoint`). Every rank appends rank 0's History
row, and resumes from the same checkpoint file (on a file system that they
share): ranks started with the same seeds keep the same RNG states, so rank 0's
checkpoint holds every rank's. A world of one runs exactly the single-process
code. Checkpoints hold the plain model inside a ``DistributedDataParallel``, so
a distributed run's checkpoint loads into one process and back.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xcnn import backends
from xcnn.autograd import Tensor, no_grad
from xcnn.autograd.tensor import as_array
from xcnn.io import atomic_write, load, save

__all__ = ["History", "TrainingDiverged", "evaluate", "fit", "plot_history"]


class TrainingDiverged(RuntimeError, FloatingPointError):
    """The training loss became NaN or infinite.

    Attributes
    ----------
    epoch : int
        The epoch (1-based) in which it happened.
    step : int
        The step within that epoch (1-based) whose loss was first non-finite.
    global_step : int
        The same step counted from the start of training.
    history : History
        The completed epochs before this one.
    """

    def __init__(self, message: str, epoch: int, step: int, global_step: int, history: History):
        super().__init__(message)
        self.epoch = epoch
        self.step = step
        self.global_step = global_step
        self.history = history


# -- history --------------------------------------------------------------------------


@dataclass
class History:
    """Per-epoch metrics of a :func:`fit` run; every field is a list with one entry per epoch.

    Attributes
    ----------
    epochs : list of int
        Epoch numbers, starting at 1.
    train_loss, train_accuracy : list of float
        Mean loss and accuracy over the epoch's training batches (model in train mode).
    val_loss, val_accuracy : list of float or None
        From :func:`evaluate` on the validation loader; ``None`` without one.
    seconds : list of float
        Wall time of the epoch, training and validation.
    images_per_second : list of float
        Training throughput.
    lr : list of float or None
        Learning rate of the first parameter group during the epoch.
    """

    epochs: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float | None] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)
    val_accuracy: list[float | None] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    images_per_second: list[float] = field(default_factory=list)
    lr: list[float | None] = field(default_factory=list)

    #: Column order of :meth:`to_dict` and :meth:`save_csv`.
    FIELDS = (
        "epochs",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "seconds",
        "images_per_second",
        "lr",
    )

    def __len__(self) -> int:
        return len(self.epochs)

    def append(self, **row: Any) -> None:
        """Add one epoch; ``row`` has one value per field (``epochs=`` is the epoch number)."""
        unknown = sorted(set(row) - set(self.FIELDS))
        missing = sorted(set(self.FIELDS) - set(row))
        if unknown or missing:
            raise ValueError(f"History.append: unknown fields {unknown}, missing fields {missing}")
        for name in self.FIELDS:
            getattr(self, name).append(row[name])

    def to_dict(self) -> dict[str, list]:
        """``{"epochs": [...], "train_loss": [...], ...}`` (copies, JSON-able)."""
        return {name: list(getattr(self, name)) for name in self.FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Sequence]) -> History:
        """Rebuild a History from :meth:`to_dict`'s output (e.g. a checkpoint's)."""
        lengths = {name: len(data.get(name, ())) for name in cls.FIELDS}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"History.from_dict: fields have different lengths {lengths}")
        return cls(**{name: list(data.get(name, ())) for name in cls.FIELDS})

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` (atomically)."""
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def save_csv(self, path: str | os.PathLike) -> Path:
        """Write one row per epoch to ``path`` (atomically); ``None`` becomes an empty cell."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["epoch", *self.FIELDS[1:]])
        for i in range(len(self)):
            row = [getattr(self, name)[i] for name in self.FIELDS]
            writer.writerow(["" if value is None else value for value in row])
        text = buffer.getvalue()
        return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def save(self, path: str | os.PathLike) -> Path:
        """:meth:`save_csv` for a ``.csv`` path, else :meth:`save_json`."""
        if str(path).lower().endswith(".csv"):
            return self.save_csv(path)
        return self.save_json(path)


# -- metrics on the device ------------------------------------------------------------


def _world() -> tuple[int, int]:
    """``(world size, rank)`` of :mod:`xcnn.distributed` once initialised, else ``(1, 0)``."""
    from xcnn import distributed

    if not distributed.is_initialized():
        return 1, 0
    return distributed.world_size(), distributed.rank()


def _sum_over_ranks(values: Sequence[float]) -> list[float]:
    """``values`` summed over all ranks (one Allreduce of float64; exact for counts < 2**53)."""
    import numpy as np

    from xcnn import distributed

    total = np.asarray(values, dtype=np.float64)
    distributed.all_reduce(total)
    return [float(v) for v in total]


def _global_counts(
    loss_sum: float, correct: int, images: int, good: int, world: tuple[int, int]
) -> tuple[float, int, int, int]:
    """The metrics of all ranks: sums, and the fewest finite steps of any rank."""
    size, rank = world
    if size == 1:
        return loss_sum, correct, images, good
    # Each rank's finite-step count in its own slot, so the minimum survives a sum.
    goods = [0.0] * size
    goods[rank] = float(good)
    total = _sum_over_ranks([loss_sum, correct, images, *goods])
    return total[0], int(total[1]), int(total[2]), int(min(total[3:]))


class _Metrics:
    """Running sums as 0-d device arrays; :meth:`read` is the only host transfer.

    ``good`` counts the steps before the first non-finite loss (``ok`` turns
    false there and stays false), which tells the host exactly which step
    diverged without reading every loss.
    """

    def __init__(self, loss: Any):
        self.backend = backends.get(backends.namespace_name(loss))
        xp = self.xp = self.backend.xp
        self.loss_sum = xp.zeros((), dtype=xp.float64)
        self.correct = xp.zeros((), dtype=xp.int64)
        self.ok = xp.ones((), dtype=xp.bool)
        self.good = xp.zeros((), dtype=xp.int64)
        self.has_accuracy = True

    def add(self, loss: Any, logits: Any, targets: Any) -> None:
        xp = self.xp
        n = float(logits.shape[0])
        if loss is not None:
            loss = xp.astype(loss, xp.float64)
            self.ok = self.ok & xp.isfinite(loss)
            self.good = self.good + xp.astype(self.ok, xp.int64)
            self.loss_sum = self.loss_sum + loss * n
        hits = _correct(xp, logits, targets)
        if hits is None:
            self.has_accuracy = False
        else:
            self.correct = self.correct + hits

    def read(self) -> tuple[float, int, int]:
        """``(loss_sum, correct, good_steps)`` on the host, in one transfer."""
        xp = self.xp
        stats = xp.stack(
            [self.loss_sum, xp.astype(self.correct, xp.float64), xp.astype(self.good, xp.float64)]
        )
        host = self.backend.to_numpy(stats)
        return float(host[0]), int(host[1]), int(host[2])


def _correct(xp: Any, logits: Any, targets: Any) -> Any:
    """Number of correct argmax predictions as a 0-d int64 array, or None if undefined.

    Targets are class indices ``(N,)`` or, e.g. for ``MSELoss`` on one-hot
    targets, scores shaped like the logits ``(N, C)``.
    """
    if logits.ndim != 2:
        return None
    if targets.ndim == 2 and tuple(targets.shape) == tuple(logits.shape):
        targets = xp.argmax(targets, axis=1)
    elif targets.ndim != 1 or not xp.isdtype(targets.dtype, "integral"):
        return None
    predicted = xp.argmax(logits, axis=1)
    return xp.sum(xp.astype(predicted == xp.astype(targets, predicted.dtype), xp.int64))


# -- evaluate -------------------------------------------------------------------------


def evaluate(model: Any, loader: Iterable, loss_fn: Any = None) -> dict[str, float | None]:
    """Mean loss and accuracy of ``model`` over ``loader``, in eval mode.

    Each module's train/eval mode is restored afterwards. Metrics accumulate on
    the device and are read once at the end; under N ranks they are then summed
    over the ranks, so each rank's loader should hold its own shard (an
    ``xcnn.data.DataLoader`` does; ``even_shards=False`` counts every sample once).

    Parameters
    ----------
    model : xcnn.nn.Module
        Maps a batch ``x`` to logits ``(N, classes)``.
    loader : iterable of (x, y)
        E.g. an ``xcnn.data.DataLoader``; ``y`` are class indices ``(N,)``.
    loss_fn : callable, optional
        ``loss_fn(logits, y)`` returning the batch mean (a 0-d Tensor or array).

    Returns
    -------
    dict
        ``{"loss": float or None (no loss_fn), "accuracy": float or None}``;
        accuracy is ``None`` when targets are not class indices.

    Raises
    ------
    ValueError
        The loader yields no batches.

    Examples
    --------
    >>> import numpy as np, xcnn
    >>> from xcnn import nn
    >>> model = nn.Sequential(nn.Linear(2, 2))
    >>> batches = [(np.ones((4, 2), np.float32), np.zeros(4, np.int64))]
    >>> sorted(xcnn.evaluate(model, batches, nn.CrossEntropyLoss()))
    ['accuracy', 'loss']
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    metrics = None
    seen = 0
    try:
        for x, y in loader:
            with no_grad():
                logits = model(Tensor(x))
                loss = None if loss_fn is None else as_array(loss_fn(logits, Tensor(y)))
            logits = logits.data
            if metrics is None:
                metrics = _Metrics(logits)
            metrics.add(loss, logits, y)
            seen += int(logits.shape[0])
    finally:
        for module, mode in modes:
            module.training = mode
    loss_sum, correct, has_accuracy = 0.0, 0, True
    if metrics is not None:
        loss_sum, correct, _ = metrics.read()
        has_accuracy = metrics.has_accuracy
    size, _rank = _world()
    if size > 1:
        # A rank whose shard is empty still takes part, with zeros.
        total = _sum_over_ranks([loss_sum, correct, seen, not has_accuracy])
        loss_sum, correct, seen, has_accuracy = total[0], int(total[1]), int(total[2]), not total[3]
    if seen == 0:
        where = " on any rank" if size > 1 else ""
        raise ValueError(
            f"xcnn.evaluate: the loader yielded no batches{where} (got "
            f"{type(loader).__name__} of length {_length(loader)})"
        )
    return {
        "loss": None if loss_fn is None else loss_sum / seen,
        "accuracy": correct / seen if has_accuracy else None,
    }


# -- fit ------------------------------------------------------------------------------


def fit(
    model: Any,
    loss_fn: Any,
    optimizer: Any,
    train_loader: Iterable,
    epochs: int,
    val_loader: Iterable | None = None,
    scheduler: Any = None,
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
    *,
    log_interval: int = 50,
    history_path: str | os.PathLike | None = None,
    callbacks: Sequence[Callable[[int, History], Any]] | None = None,
    resume: bool = False,
    verbose: bool | None = None,
    checkpoint_meta: dict[str, Any] | None = None,
) -> History:
    """Train ``model`` for ``epochs`` epochs; return the per-epoch :class:`History`.

    Parameters
    ----------
    model : xcnn.nn.Module
        Maps ``x`` ``(N, C, H, W)`` to logits ``(N, classes)``.
    loss_fn : loss module or function
        ``loss = loss_fn(logits, y)``, a 0-d Tensor (``nn.CrossEntropyLoss()``,
        ``F.cross_entropy`` or a function of Tensors of your own).
    optimizer : xcnn.optim.Optimizer
    train_loader : iterable of (x, y)
        Typically an ``xcnn.data.DataLoader``; iterated once per epoch.
    epochs : int
        Total number of epochs (a resumed run counts the epochs already done).
    val_loader : iterable of (x, y), optional
        Evaluated with :func:`evaluate` after each epoch.
    scheduler : learning-rate scheduler, optional
        ``scheduler.step()`` is called after each epoch.
    checkpoint : path, optional
        Saved (atomically, see :func:`xcnn.save`) at the end of every epoch.
    progress : bool, default True
        Show a progress bar per epoch (loss, accuracy, images/s) when stderr is
        a terminal, and print one line per epoch (rank 0 only, under N ranks).
    log_interval : int, default 50
        Steps between host reads of the running metrics: the bar's numbers
        refresh, and the loss is checked for NaN/inf, this often.
    history_path : path, optional
        Write the history after every epoch (``.csv``: CSV, otherwise JSON).
    callbacks : sequence of callables, optional
        Each is called as ``callback(epoch, history)`` after every epoch (after
        the checkpoint is written); if any returns ``True`` training stops
        (on every rank, when any rank's callback says so).
    resume : bool, default False
        If ``checkpoint`` exists, restore everything from it and continue with
        the next epoch. On NumPy the result equals an uninterrupted run bit for bit.
    verbose : bool, optional
        Print the line per epoch; defaults to ``progress``.
    checkpoint_meta : dict, optional
        JSON-able values saved in every checkpoint as :func:`xcnn.save`'s ``**meta``
        and returned by :func:`xcnn.load`: what a reader needs to rebuild and use the
        model, e.g. ``examples/train.py``'s class names, model name and arguments,
        input shape and normalisation (read by ``examples/predict.py``).

    Returns
    -------
    History

    Raises
    ------
    TrainingDiverged
        (a ``RuntimeError`` and ``FloatingPointError``) the loss became NaN or
        infinite; names the epoch and step. The checkpoint keeps the last good epoch.
    ValueError
        Invalid arguments, or the training loader yields no batches.

    Examples
    --------
    >>> import numpy as np, xcnn
    >>> from xcnn import nn, optim
    >>> xcnn.manual_seed(0)  # doctest: +ELLIPSIS
    Generator(PCG64) at 0x...
    >>> model = nn.Sequential(nn.Linear(2, 2))
    >>> x = np.array([[1, 0], [0, 1]] * 8, np.float32)
    >>> y = np.array([0, 1] * 8, np.int64)
    >>> hist = xcnn.fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.5),
    ...                 [(x, y)], epochs=20, progress=False)
    >>> hist.train_accuracy[-1]
    1.0
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"xcnn.fit: epochs must be a positive integer, got {epochs!r}")
    if isinstance(log_interval, bool) or not isinstance(log_interval, int) or log_interval < 1:
        raise ValueError(f"xcnn.fit: log_interval must be a positive integer, got {log_interval!r}")
    if resume and checkpoint is None:
        raise ValueError("xcnn.fit: resume=True needs checkpoint=PATH to resume from")
    checkpoint_meta = dict(checkpoint_meta or {})
    # xcnn.save's own parameters and what load returns besides the meta.
    reserved = {"path", "model", "optimizer", "scheduler", "loader", "epoch", "step", "history"}
    reserved = sorted(set(checkpoint_meta) & (reserved | {"xcnn_version"}))
    if reserved:
        raise ValueError(
            f"xcnn.fit: checkpoint_meta may not use the names {reserved}, which the "
            "checkpoint itself holds; rename them"
        )
    world = _world()
    main = world[1] == 0
    verbose = (progress if verbose is None else verbose) and main
    show_bar = bool(progress) and main and _is_terminal(sys.stderr)
    callbacks = list(callbacks or ())
    loader_state = hasattr(train_loader, "state_dict") and hasattr(train_loader, "load_state_dict")

    from xcnn.distributed import unwrap

    plain = unwrap(model)  # checkpoints hold a DistributedDataParallel's plain model
    history = History()
    first_epoch, step = 1, 0
    if resume and _from_main(world, Path(checkpoint).exists()):
        meta = load(
            checkpoint, plain, optimizer, scheduler, loader=train_loader if loader_state else None
        )
        if not isinstance(meta.get("epoch"), int):
            raise ValueError(
                f"xcnn.fit: checkpoint {str(checkpoint)!r} records no epoch; "
                "resume needs a checkpoint written by xcnn.fit"
            )
        first_epoch, step = meta["epoch"] + 1, int(meta.get("step") or 0)
        if meta.get("history"):
            history = History.from_dict(meta["history"])
        if verbose:
            print(f"resumed from {checkpoint} after epoch {meta['epoch']}", flush=True)

    for epoch in range(first_epoch, epochs + 1):
        lr = _current_lr(optimizer)
        start = time.perf_counter()
        run = _Epoch(epoch, epochs, step, log_interval, show_bar, lr, checkpoint, history, world)
        train_loss, train_accuracy, images, train_seconds = run.train(
            model, loss_fn, optimizer, train_loader
        )
        step = run.global_step
        val = evaluate(model, val_loader, loss_fn) if val_loader is not None else None
        if scheduler is not None:
            scheduler.step()
        row = {
            "epochs": epoch,
            "train_loss": train_loss,
            "train_accuracy": train_accuracy,
            "val_loss": None if val is None else val["loss"],
            "val_accuracy": None if val is None else val["accuracy"],
            "seconds": time.perf_counter() - start,
            "images_per_second": images / train_seconds if train_seconds > 0 else math.inf,
            "lr": lr,
        }
        # Rank 0's row (its clock) on every rank, so all ranks hold the same History.
        history.append(**_from_main(world, row))
        if checkpoint is not None:
            state = {"loader": train_loader if loader_state else None, "epoch": epoch}
            state |= {"step": step, "history": history, **checkpoint_meta}
            if world[0] > 1:
                from xcnn.distributed import save_checkpoint

                # Rank 0 writes; nobody goes on before the file is complete.
                save_checkpoint(checkpoint, plain, optimizer, scheduler, **state)
            else:
                save(checkpoint, plain, optimizer, scheduler, **state)
        if history_path is not None and main:
            history.save(history_path)
        if verbose:
            print(_epoch_line(history, epochs), flush=True)
        stop = any([bool(callback(epoch, history)) for callback in callbacks])
        if world[0] > 1 and callbacks:
            stop = _sum_over_ranks([stop])[0] > 0
        if stop:
            break
    return history


def _from_main(world: tuple[int, int], value: Any) -> Any:
    """Rank 0's ``value`` on every rank (sent as JSON); ``value`` itself in a world of one."""
    if world[0] == 1:
        return value
    from xcnn import distributed

    return distributed.broadcast_object(value)


class _Epoch:
    """One training epoch: the step loop, the progress bar and the divergence check."""

    def __init__(
        self,
        epoch: int,
        epochs: int,
        global_step: int,
        log_interval: int,
        show_bar: bool,
        lr: float | None,
        checkpoint: Any,
        history: History,
        world: tuple[int, int] = (1, 0),
    ):
        self.epoch, self.epochs = epoch, epochs
        self.world = world
        self.global_step = global_step
        self.log_interval = log_interval
        self.show_bar = show_bar
        self.lr = lr
        self.checkpoint = checkpoint
        self.history = history

    def train(
        self, model: Any, loss_fn: Any, optimizer: Any, loader: Iterable
    ) -> tuple[float, float | None, int, float]:
        """Run the epoch; return ``(mean loss, accuracy, images, seconds)``."""
        from tqdm import tqdm

        model.train()
        bar = tqdm(
            total=_length(loader),
            desc=f"epoch {self.epoch}/{self.epochs}",
            unit="batch",
            leave=False,
            dynamic_ncols=True,
            disable=not self.show_bar,
        )
        metrics = None
        steps = images = 0
        start = time.perf_counter()
        try:
            for x, y in loader:
                optimizer.zero_grad()
                logits = model(Tensor(x))
                loss = loss_fn(logits, Tensor(y))
                if not isinstance(loss, Tensor) or not loss.requires_grad:
                    raise TypeError(
                        "xcnn.fit: loss_fn(logits, y) must return a 0-d xcnn.Tensor that "
                        f"depends on the model's parameters, got {type(loss).__name__}; "
                        "write the loss with Tensor operations or xcnn.nn.functional"
                    )
                loss.backward()
                optimizer.step()
                loss, logits = loss.data, logits.data
                if metrics is None:
                    metrics = _Metrics(loss)
                metrics.add(loss, logits, y)
                steps += 1
                images += int(logits.shape[0])
                self.global_step += 1
                bar.update(1)
                if steps % self.log_interval == 0:
                    loss_sum, correct, seen, good = self._read(metrics, images)
                    self._check(good, steps, loss_sum)
                    if self.show_bar:
                        elapsed = time.perf_counter() - start
                        bar.set_postfix_str(
                            _postfix(loss_sum / seen, correct / seen, seen / elapsed)
                        )
            if metrics is None:
                raise ValueError(
                    f"xcnn.fit: the training loader yielded no batches in epoch {self.epoch} "
                    f"(got {type(loader).__name__} of length {_length(loader)})"
                )
            loss_sum, correct, images, good = self._read(metrics, images)  # waits for the device
            self._check(good, steps, loss_sum)
        finally:
            bar.close()
        seconds = time.perf_counter() - start
        accuracy = correct / images if metrics.has_accuracy else None
        return loss_sum / images, accuracy, images, seconds

    def _read(self, metrics: _Metrics, images: int) -> tuple[float, int, int, int]:
        """``(loss_sum, correct, images, good_steps)`` so far, over all ranks."""
        loss_sum, correct, good = metrics.read()
        return _global_counts(loss_sum, correct, images, good, self.world)

    def _check(self, good: int, steps: int, loss_sum: float) -> None:
        """Raise TrainingDiverged if any loss so far in this epoch was not finite."""
        if good == steps and math.isfinite(loss_sum):
            return
        bad = min(good + 1, steps)
        global_bad = self.global_step - steps + bad
        lr = "" if self.lr is None else f" (it is {self.lr:g})"
        kept = ""
        if self.checkpoint is not None and len(self.history):
            kept = (
                f"; {self.checkpoint} still holds the last good state "
                f"(epoch {self.history.epochs[-1]})"
            )
        raise TrainingDiverged(
            f"xcnn.fit: training diverged in epoch {self.epoch} at step {bad} "
            f"(global step {global_bad}): the loss became NaN or infinite. "
            f"Try a lower learning rate{lr}{kept}.",
            epoch=self.epoch,
            step=bad,
            global_step=global_bad,
            history=self.history,
        )


def _postfix(loss: float, accuracy: float, rate: float) -> str:
    return f"loss={loss:.4f}, acc={accuracy:.4f}, {rate:,.0f} img/s"


def _epoch_line(history: History, epochs: int) -> str:
    i = len(history) - 1
    parts = [f"epoch {history.epochs[i]}/{epochs}", f"loss {history.train_loss[i]:.4f}"]
    if history.train_accuracy[i] is not None:
        parts.append(f"acc {history.train_accuracy[i]:.4f}")
    if history.val_loss[i] is not None:
        parts.append(f"val_loss {history.val_loss[i]:.4f}")
    if history.val_accuracy[i] is not None:
        parts.append(f"val_acc {history.val_accuracy[i]:.4f}")
    parts.append(f"{history.images_per_second[i]:,.0f} img/s")
    parts.append(f"{history.seconds[i]:.1f} s")
    return " | ".join(parts)


def _current_lr(optimizer: Any) -> float | None:
    groups = getattr(optimizer, "param_groups", None)
    if not groups or "lr" not in groups[0]:
        return None
    return float(groups[0]["lr"])


def _length(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


# -- plot -----------------------------------------------------------------------------


def plot_history(history: History | dict, path: str | os.PathLike) -> Path:
    """Write a PNG of loss and accuracy per epoch: :func:`xcnn.plot.history`, under its
    older name (needs matplotlib: ``pip install 'xcnn[plot]'``)."""
    from xcnn import plot

    return plot.history(history, path)
