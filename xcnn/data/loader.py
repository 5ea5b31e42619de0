"""Mini-batches from a host dataset onto the active backend.

Per batch: pick indices on the host (a seeded permutation per epoch when
shuffling), move the uint8 images to the backend, and convert there:
``x = float32(images) / 255``, so the bus carries a quarter of the bytes and
the device does the arithmetic. On CuPy the whole dataset is uploaded once
when it takes less than a quarter of the free device memory; batches are then
gathered on the device.

Shuffling owns its RNG: a ``numpy.random.Generator`` seeded by ``seed``
(drawn from xcnn's default stream when ``None``), one permutation per epoch,
never NumPy's global state. :meth:`DataLoader.state_dict` captures that stream
and the position inside the epoch, so a resumed run sees exactly the batches
the interrupted one would have seen.

Sharding, with PyTorch's ``DistributedSampler`` semantics: with N replicas
(the ranks of :mod:`xcnn.distributed` once it is initialised, or explicit
``num_replicas``/``rank``) every rank draws the same permutation of the n
samples, pads it to a multiple of N by repeating its start (or, with
``drop_last``, cuts its tail), and takes every N-th index from its own rank::

    order = [7, 2, 9, 0, 4]           n = 5, N = 2
    padded = [7, 2, 9, 0, 4, 7]       rank 0: [7, 9, 4]   rank 1: [2, 0, 7]

Batch k of the N ranks together is batch k of one process with batch size
N * batch_size (the last one plus the padding).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from xcnn import backends

__all__ = ["DataLoader"]

#: Upload the whole dataset to the GPU when it needs less than this fraction of free memory.
RESIDENT_FRACTION = 0.25


class DataLoader:
    """Iterate over a dataset in mini-batches on the active backend.

    Parameters
    ----------
    dataset : ArrayDataset
        Anything with ``images`` (uint8 or floating, ``(N, C, H, W)``) and
        ``labels`` (integer, ``(N,)``) NumPy arrays.
    batch_size : int
        Images per batch; the last one may be smaller unless ``drop_last``.
    shuffle : bool
        A new random order every epoch.
    drop_last : bool
        Skip the final incomplete batch.
    seed : int, optional
        Seed of the shuffling stream. ``None`` draws one from xcnn's default
        generator, so :func:`xcnn.manual_seed` makes runs reproducible.
    transform : callable, optional
        Applied to each float batch on the backend, e.g.
        ``transforms.Compose([transforms.RandomCrop(32, 4), transforms.Normalize(...)])``.
        Its ``state_dict``, if any, is saved with the loader's.
    batch_transform : callable, optional
        Applied last, to the images and labels together: ``x, y =
        batch_transform(x, y)``, e.g. ``transforms.MixUp(alpha=0.2, num_classes=10)``
        or ``transforms.CutMix(...)``, which turn the labels into class
        probabilities ``(B, K)`` (``nn.CrossEntropyLoss`` and :func:`xcnn.fit`
        take them as targets). Its ``state_dict``, if any, is saved with the loader's.
    num_replicas, rank : int, optional
        Iterate only shard ``rank`` of ``num_replicas`` (given together). By
        default both come from :mod:`xcnn.distributed` at each iteration once it
        is initialised (``init()``, or ``DistributedDataParallel``), and are
        ``1, 0`` otherwise. Each shard takes every ``num_replicas``-th index of
        the epoch's order, padded by repeating its start to a multiple of
        ``num_replicas`` (cut to one with ``drop_last``), as PyTorch's
        ``DistributedSampler``; ``len(loader)`` counts this rank's batches. In a
        distributed world a shuffling loader takes rank 0's shuffling stream at its
        first iteration, so every rank shares the permutation.
    even_shards : bool, default True
        ``False`` leaves the order unpadded: shards differ by at most one sample
        and every sample is seen exactly once, which suits evaluation (metrics
        are exact), but ranks may get different numbers of batches, so not
        training with ``DistributedDataParallel``.

    Yields
    ------
    x : array
        float32, ``(B, C, H, W)``, in ``[0, 1]`` for uint8 images (floating
        images are passed through as float32), on ``xcnn.backends.current()``
        as of the start of the epoch.
    y : array
        int64, ``(B,)``, on the same backend (or whatever ``batch_transform``
        makes of them: float ``(B, K)`` for MixUp and CutMix).

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn.data import ArrayDataset, DataLoader
    >>> ds = ArrayDataset(np.full((5, 1, 2, 2), 255, np.uint8), np.arange(5) % 2, ["a", "b"])
    >>> loader = DataLoader(ds, batch_size=2, shuffle=True, seed=0)
    >>> len(loader), [tuple(x.shape) for x, _ in loader]
    (3, [(2, 1, 2, 2), (2, 1, 2, 2), (1, 1, 2, 2)])
    >>> float(next(iter(loader))[0].max())
    1.0

    Two shards of the 5 images (padded to 6), as two ranks would see them:

    >>> [[y.tolist() for _, y in DataLoader(ds, 2, num_replicas=2, rank=r)] for r in (0, 1)]
    [[[0, 0], [0]], [[1, 1], [0]]]
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int | None = None,
        transform: Callable[[Any], Any] | None = None,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        even_shards: bool = True,
        batch_transform: Callable[[Any, Any], tuple[Any, Any]] | None = None,
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise TypeError(f"DataLoader: batch_size must be an int, got {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be >= 1, got {batch_size}")
        images, labels = np.asarray(dataset.images), np.asarray(dataset.labels)
        if images.ndim != 4 or not (
            images.dtype == np.uint8 or np.issubdtype(images.dtype, np.floating)
        ):
            raise ValueError(
                f"DataLoader: expected dataset images of shape (N, C, H, W), uint8 or float, "
                f"got {images.dtype} of shape {images.shape}"
            )
        if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"DataLoader: expected {images.shape[0]} integer labels, got {labels.dtype} "
                f"of shape {labels.shape}"
            )
        if (num_replicas is None) != (rank is None):
            raise ValueError(
                f"DataLoader: give num_replicas and rank together, got num_replicas="
                f"{num_replicas!r} and rank={rank!r}"
            )
        if num_replicas is not None:
            for name, value in (("num_replicas", num_replicas), ("rank", rank)):
                if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                    raise TypeError(f"DataLoader: {name} must be an int, got {value!r}")
            if num_replicas < 1 or not 0 <= rank < num_replicas:
                raise ValueError(
                    f"DataLoader: expected num_replicas >= 1 and 0 <= rank < num_replicas, "
                    f"got num_replicas={num_replicas} and rank={rank}"
                )
            num_replicas, rank = int(num_replicas), int(rank)
        if seed is None:
            seed = int(backends.default_generator().integers(2**63))
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = int(seed)
        self.transform = transform
        self.batch_transform = batch_transform
        self.even_shards = bool(even_shards)
        self._replicas = None if num_replicas is None else (num_replicas, rank)
        self._images = images
        self._labels = labels.astype(np.int64, copy=False)
        self._rng = np.random.default_rng(self.seed)
        #: Epochs fully handed out so far.
        self.epoch = 0
        self._position = 0  # batches of the current epoch handed out
        self._epoch_state: dict | None = None  # RNG state before this epoch's permutation
        self._resume_position = 0  # set by load_state_dict for a mid-epoch resume
        self._resume_shards = (1, True)  # (num_replicas, even_shards) that position counts in
        self._epoch_shards = (1, True)  # the same, for the epoch being handed out
        self._stream_shared = False  # took rank 0's shuffling stream (distributed worlds)
        self._resident: tuple[str, Any, Any] | None = None  # (backend, images, labels)

    def __len__(self) -> int:
        n = self._shard_size(*self._shard())
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _shard(self) -> tuple[int, int]:
        """``(num_replicas, rank)``: the explicit ones, else xcnn.distributed's once initialised."""
        if self._replicas is not None:
            return self._replicas
        from xcnn import distributed

        if not distributed.is_initialized():
            return 1, 0
        return distributed.world_size(), distributed.rank()

    def _shard_size(self, replicas: int, rank: int) -> int:
        """How many samples shard ``rank`` of ``replicas`` holds in an epoch."""
        n = int(self._images.shape[0])
        if replicas == 1:
            return n
        if not self.even_shards:
            return len(range(rank, n, replicas))
        return n // replicas if self.drop_last else math.ceil(n / replicas)

    def _shard_order(self, order: np.ndarray, replicas: int, rank: int) -> np.ndarray:
        """This rank's indices of the epoch's ``order`` (``DistributedSampler``'s rule)."""
        if self.even_shards:
            total = replicas * self._shard_size(replicas, rank)
            # np.resize repeats the order from its start, as often as needed when n < N.
            order = order[:total] if total <= order.shape[0] else np.resize(order, total)
        return order[rank::replicas]

    def _share_stream(self) -> None:
        """Take rank 0's shuffling stream, so that every rank draws the same permutations."""
        from xcnn import distributed

        shared = distributed.broadcast_object(
            {"seed": self.seed, "rng": self._rng.bit_generator.state}
        )
        self.seed = int(shared["seed"])
        self._rng.bit_generator.state = shared["rng"]
        self._stream_shared = True

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return self._iterate()

    def _finish_epoch(self) -> None:
        self.epoch += 1
        self._position = 0
        self._epoch_state = None

    def _iterate(self) -> Iterator[tuple[Any, Any]]:
        if self._position:
            # The previous epoch was abandoned part-way: like PyTorch, a new
            # iteration starts a new epoch.
            self._finish_epoch()
        backend = backends.current()
        xp = backend.xp
        replicas, rank = self._shard()
        if replicas > 1 and self.shuffle and self._replicas is None and not self._stream_shared:
            self._share_stream()
        shards = (replicas, self.even_shards if replicas > 1 else True)
        if self._resume_position and self._resume_shards != shards:
            raise ValueError(
                f"DataLoader: the state was saved at batch {self._resume_position} of an epoch "
                f"split into (num_replicas, even_shards) = {self._resume_shards}; this loader "
                f"has {shards}. Resume mid-epoch with the same number of ranks, or from a "
                "state saved at the end of an epoch"
            )
        start_batch, self._resume_position = self._resume_position, 0
        self._epoch_shards = shards
        self._epoch_state = self._rng.bit_generator.state
        n = int(self._images.shape[0])
        order = self._rng.permutation(n) if self.shuffle else None
        if replicas > 1:
            order = self._shard_order(np.arange(n) if order is None else order, replicas, rank)
            n = int(order.shape[0])
        num_batches = len(self)
        if start_batch >= num_batches:
            self._finish_epoch()
            return
        resident = self._device_copy(backend)
        device_order = None
        if resident is not None and order is not None:
            device_order = backend.asarray(order)
        for b in range(start_batch, num_batches):
            start, stop = b * self.batch_size, min((b + 1) * self.batch_size, n)
            if resident is not None:
                images, labels = resident
                if device_order is None:
                    x = images[start:stop, ...]
                    y = xp.asarray(labels[start:stop], copy=True)
                else:
                    index = device_order[start:stop]
                    x, y = xp.take(images, index, axis=0), xp.take(labels, index, axis=0)
            else:
                rows = slice(start, stop) if order is None else order[start:stop]
                x = backend.asarray(self._images[rows])
                y = backend.asarray(np.array(self._labels[rows], dtype=np.int64))
            # astype copies, so the division can be in place. A second fresh
            # batch-sized array cost more, in page faults, than the gather and the
            # conversion together: a batch of 128 took 0.34 ms with it, 0.06 without.
            scale = x.dtype == xp.uint8
            x = xp.astype(x, xp.float32)
            if scale:
                x /= 255.0
            if self.transform is not None:
                x = self.transform(x)
            if self.batch_transform is not None:
                x, y = self.batch_transform(x, y)
            # Count the batch as consumed when it is handed out: a checkpoint
            # taken while it is being trained on resumes with the next one.
            if b + 1 == num_batches:
                self._finish_epoch()
            else:
                self._position = b + 1
            yield x, y

    def _use_resident(self, backend: backends.Backend) -> bool:
        """Whether to keep the whole dataset on the device (CuPy, if it fits)."""
        if backend.name != "cupy":
            return False
        from xcnn.data._memory_cupy import free_device_bytes

        needed = self._images.nbytes + self._labels.nbytes
        return needed < RESIDENT_FRACTION * free_device_bytes()

    def _device_copy(self, backend: backends.Backend) -> tuple[Any, Any] | None:
        """The dataset uploaded once to ``backend``, or ``None`` to move batch by batch."""
        if self._resident is not None and self._resident[0] == backend.name:
            return self._resident[1], self._resident[2]
        self._resident = None
        if not self._use_resident(backend):
            return None
        images, labels = backend.asarray(self._images), backend.asarray(self._labels)
        self._resident = (backend.name, images, labels)
        return images, labels

    def state_dict(self) -> dict:
        """Where the loader is in its stream of batches (plain Python values).

        Returns
        -------
        dict
            ``seed``, ``epoch`` (epochs completed), ``position`` (batches of the
            current epoch already handed out, 0 at an epoch boundary), ``rng``
            (the shuffling RNG state at the start of the current or next epoch),
            the sizes it was saved for, ``num_replicas`` and ``even_shards``
            when ``position`` counts batches of a shard, and ``transform`` and
            ``batch_transform`` (their own states, when they have one). Every rank of a distributed
            run has the same state, so rank 0's resumes them all.
        """
        state = {
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self._position or self._resume_position,
            "rng": self._epoch_state if self._position else self._rng.bit_generator.state,
            "num_samples": int(self._images.shape[0]),
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }
        if state["position"]:
            # A mid-epoch position counts batches of one shard.
            shards = self._epoch_shards if self._position else self._resume_shards
            state["num_replicas"], state["even_shards"] = shards
        if hasattr(self.transform, "state_dict"):
            state["transform"] = self.transform.state_dict()
        if hasattr(self.batch_transform, "state_dict"):
            state["batch_transform"] = self.batch_transform.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict`: the next iteration continues that stream.

        A state saved mid-epoch makes the next iteration finish that epoch:
        it redraws the same permutation and starts at batch ``position``.

        Raises
        ------
        ValueError
            The state was saved for another dataset size, batch size,
            ``shuffle`` or ``drop_last``. (A state saved mid-epoch on another
            number of shards is refused by the next iteration, which knows the world.)
        """
        saved = (state["num_samples"], state["batch_size"], state["shuffle"], state["drop_last"])
        mine = (int(self._images.shape[0]), self.batch_size, self.shuffle, self.drop_last)
        if tuple(saved) != mine:
            raise ValueError(
                "DataLoader.load_state_dict: the state was saved for (num_samples, batch_size, "
                f"shuffle, drop_last) = {tuple(saved)}, this loader has {mine}"
            )
        self.seed = int(state["seed"])
        self._rng.bit_generator.state = state["rng"]
        self.epoch = int(state["epoch"])
        self._position = 0
        self._epoch_state = None
        self._resume_position = int(state["position"])
        self._resume_shards = (
            int(state.get("num_replicas", 1)),
            bool(state.get("even_shards", True)),
        )
        self._stream_shared = True  # every rank loads the same state
        if "transform" in state and hasattr(self.transform, "load_state_dict"):
            self.transform.load_state_dict(state["transform"])
        if "batch_transform" in state and hasattr(self.batch_transform, "load_state_dict"):
            self.batch_transform.load_state_dict(state["batch_transform"])

    def __repr__(self) -> str:
        return (
            f"DataLoader({getattr(self.dataset, 'name', type(self.dataset).__name__)}, "
            f"batch_size={self.batch_size}, shuffle={self.shuffle}, drop_last={self.drop_last}, "
            f"{len(self)} batches)"
        )
