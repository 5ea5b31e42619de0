"""Gradient buckets averaged on the GPU with NCCL (``cupy.cuda.nccl``): no host round trip.

Unverified until it runs on GPUs: no test here has a GPU. It follows CuPy's
documented API: rank 0 makes the NCCL unique id (bytes since CuPy 14, a tuple of
ints before), which travels to the other ranks over MPI as JSON; every rank then
builds ``NcclCommunicator(world_size, id, rank)`` on its own GPU (``init()`` picks
GPU ``local_rank % device count``). A bucket's gradients are packed into one flat
device array, summed in place by ``allReduce`` on the current stream, divided by
the world size and handed back as views of that array, all queued on the device.
"""

from __future__ import annotations

from typing import Any

from xcnn.distributed import world


class NcclAverager:
    """Averages buckets of CuPy gradients over all ranks; one per DistributedDataParallel."""

    def __init__(self) -> None:
        from cupy.cuda import nccl

        self._nccl = nccl
        rank, size = world.rank(), world.world_size()
        uid = nccl.get_unique_id() if rank == 0 else None
        sent = world.broadcast_object(
            None if uid is None else {"bytes": isinstance(uid, bytes), "values": list(uid)}
        )
        uid = bytes(sent["values"]) if sent["bytes"] else tuple(sent["values"])
        self._comm = nccl.NcclCommunicator(size, uid, rank)
        self._size = size
        self._types = {
            "float16": nccl.NCCL_FLOAT16,
            "float32": nccl.NCCL_FLOAT32,
            "float64": nccl.NCCL_FLOAT64,
        }

    def average(self, bucket: list[Any], present: list[bool]) -> None:
        """Average the ``.grad`` of ``bucket``'s parameters; ``present[i]``: some rank has one.

        A parameter without a gradient here sends zeros; one that no rank has a
        gradient for keeps ``grad = None``.
        """
        import cupy

        dtype = bucket[0].data.dtype
        count = sum(int(p.data.size) for p in bucket)
        flat = cupy.empty(count, dtype=dtype)
        offset = 0
        for p in bucket:
            size = int(p.data.size)
            if p.grad is None:
                flat[offset : offset + size] = 0
            else:
                flat[offset : offset + size] = p.grad.ravel()
            offset += size
        stream = cupy.cuda.get_current_stream()
        self._comm.allReduce(
            flat.data.ptr,
            flat.data.ptr,
            count,
            self._types[cupy.dtype(dtype).name],
            self._nccl.NCCL_SUM,
            stream.ptr,
        )
        flat /= self._size
        offset = 0
        for p, has in zip(bucket, present, strict=True):
            size = int(p.data.size)
            p.grad = flat[offset : offset + size].reshape(p.data.shape) if has else None
            offset += size
