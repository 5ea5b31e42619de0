"""NumPy fast path of conv2d and its gradients (reached only through ``xcnn.ops.conv``).

Same math as ``xcnn/ops/conv.py``; what differs is the order of work.

Forward and the weight gradient cut the batch into chunks of ``B`` images whose
columns and matmul result fit in about 1 MB of cache: each chunk is unfolded and
multiplied while cached, instead of writing the whole ``cols`` (10 MB for LeNet's
first conv at batch 128) to memory and reading it back. Backward unfolds each chunk
again rather than keeping ``cols`` from forward: an in-cache copy costs less than a
read from memory, and a training step holds no ``cols`` at all. The bias rides in the
matmul as an extra row of ones in ``cols`` (``[Wm | b] @ [cols; 1]``), so it costs no
pass over ``y``.

Stride 1 with ``OW = W`` (the width kept: ResNet's 3x3 with padding 1, LeNet-5's first
5x5 with padding 2) uses the *edge* layout: each chunk is padded by rows only into a
flat ``(B, C, PW + Hp*W + PW)`` buffer, and every kernel tap is one contiguous run::

    cols[b, (c, i, j), l] = flat[b, c, l + i*DH*W + j*DW],   l = oh*W + ow < OH*W
    y = [Wm | b] @ [cols; 1]      (B, O, OH*W), written straight into y

A tap whose column ``ow + j*DW - PW`` falls outside the image reads the next or
previous row's edge there instead of a padding zero; those ``PW`` (or fewer) columns
per row and tap are zeroed after the copy (``_Chunks._edge_taps``).

Other stride-1 convolutions with ``O < C*KH*KW`` use the *wide* layout: each chunk is
zero-padded into a flat ``(B, C, Hp*Wp + slack)`` buffer and the output is computed
for all ``Wp`` columns of each output row, the last ``Wp - OW`` of which are dropped::

    cols[b, (c, i, j), l] = flat[b, c, i*DH*Wp + j*DW + l],   l = oh*Wp + w' < OH*Wp
    y_wide = [Wm | b] @ [cols; 1]      (B, O, OH*Wp)  ->  y = y_wide[..., :OW]
    gW^T  += sum_b cols[b] @ gy_wide[b]^T,    gy_wide = gY zero-extended to Wp columns

so every kernel tap is one contiguous run of ``OH*Wp`` values, where the standard
unfold copies OH runs of only OW. The price is the crop of ``y``'s O*OH rows, hence
the condition, and ``Wp - OW`` wasted matmul columns per row (which the edge layout
does not have). Other strides, or many output channels, unfold per chunk from a
strided window view and multiply straight into ``y``.

Where the convolution keeps the image size at stride 1 (OH = H, OW = W), the input
gradient is itself such a convolution, of ``gY`` with the weight flipped and
transposed (``_transposed_geometry``), and the weight gradient reads the same unfolded
``gY``: one unfold per chunk serves both (``_backward_same_size``). At stride 2 and
up, each of the S*S phases ``gx[..., a::S, b::S]`` is a stride-1 convolution of
``gY`` with every S-th tap, run through the forward path (``_phase_plan``).
Otherwise (dilated or grouped strided convolutions, or LeNet's 5x5 without padding)
it is computed *batch-last* per chunk of images (gcols of about 4 MB), where the
fold's slice-adds run over long contiguous stretches instead of OW values (NumPy pays
a fixed cost per run, and about 7 us per strided 2-D add)::

    gyT   = gY as (O, OH, Wp, N), zero past column OW (stride 1)   (one transposing copy)
    gcols = Wm^T @ gyT  per group:  (G, K, Og) @ (G, Og, L*N) -> (C*KH*KW, OH*Wp*N)
    gxT   = fold(gcols): KH*KW adds into a zero (C, Hp*Wp*N) buffer
    gx    = gxT cropped and transposed back to (N, C, H, W)          (one copy)

At stride 1 the layout is wide as in forward, so each tap's add is one run of
``OH*Wp*N`` values per channel; other strides add ``(OH, OW*N)`` windows.

Threads (``_threads``): forward splits the batch, and so does the size-keeping
backward (each thread both gradients of its images, from one unfold). Other
backwards run the weight gradient and the input gradient as separate tasks on
separate threads, each over the whole batch (halves of it from four threads up),
which measured about 20% faster than each thread doing both for half the batch
(LeNet-5's second convolution, whose two gradients share no unfold).

One large matmul beat per-channel blocks there: OpenBLAS is slow on few-row matrices.
Results equal the standard twin up to rounding (other summation orders).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from xcnn.ops import _recycle, _threads
from xcnn.ops._geometry import Geometry, window_slices

# A chunk's columns and matmul result stay under this many bytes, so they live in L2 cache.
_CHUNK_BYTES = 1 << 20
# The input gradient's gcols chunk: larger, as one big matmul per chunk pays off there.
_FOLD_BYTES = 4 << 20


class _Chunks:
    """Unfold buffers for one input shape and window, reused across the chunks."""

    def __init__(
        self,
        shape: tuple[int, ...],
        dtype: np.dtype,
        g: Geometry,
        out_channels: int,
        extra_rows: int = 0,
    ):
        n, self.c, self.h, self.w = shape
        self.rows = self.c * g.kh * g.kw
        self.g = g
        self.hp, self.wp = self.h + 2 * g.ph, self.w + 2 * g.pw
        item = np.dtype(dtype).itemsize
        # Edge: stride 1 with OW = W (a size-keeping width). The unfold is exact, no
        # output column is wasted and nothing is cropped: see _edge_taps.
        self.edge = g.sh == 1 and g.sw == 1 and g.ow == self.w
        # Wide costs a crop of the output rows (O*OH per image, each a short strided copy)
        # and saves that of the unfolded rows (C*KH*KW*OH): worth it when O < C*KH*KW.
        self.wide = (
            not self.edge and g.sh == 1 and g.sw == 1 and out_channels < self.c * g.kh * g.kw
        )
        self.length = g.oh * self.wp if self.wide else g.oh * g.ow
        # A chunk's columns and its matmul result (forward y or backward gY) share the
        # budget, with ``extra_rows`` more rows of ``length`` that the caller keeps beside.
        rows = self.rows + out_channels + extra_rows
        per_image = rows * self.length * item
        self.size = max(1, min(n, _CHUNK_BYTES // per_image))
        # Rows of cols a multiple of 4 KiB apart map to the same cache sets, and OpenBLAS
        # ran (16, 145) @ (145, 1024) 1.7x slower on them: such rows get 64 bytes more.
        stride = self.length + (64 // item if (self.length * item) % 4096 == 0 else 0)
        # One extra row of ones after the unfolded rows: forward appends the bias to the
        # weight matrix, so the matmul adds it (no pass over y for the bias).
        cols = _recycle.scratch("cols", (self.size, self.rows + 1, stride), dtype)
        self._cols = cols[:, :, : self.length]
        self._cols[:, self.rows, :] = 1
        b, kh, kw = self.size, g.kh, g.kw
        self._tap_rows = self._cols[:, : self.rows].reshape(b, self.c, kh, kw, g.oh, -1)
        self._edges: list[tuple[int, slice]] = []
        if self.edge:
            self._edge_taps(dtype)
            return
        # The wide unfold of the last tap reads (KW-1)*DW values past the padded image.
        self.flat_size = self.hp * self.wp + (g.kw - 1) * g.dw
        # The padded images live in a flat (B, C, Hp*Wp + slack) buffer, zeroed once: only
        # the interior is written below, so the padding stays zero.
        flat = _recycle.scratch("flat", (self.size, self.c, self.flat_size), dtype)
        flat.fill(0)
        image = flat[:, :, : self.hp * self.wp].reshape(self.size, self.c, self.hp, self.wp)
        self._interior = image[:, :, g.ph : g.ph + self.h, g.pw : g.pw + self.w]
        # The views are built once per call: each costs tens of microseconds of Python,
        # which would hold the GIL once per chunk.
        if self.wide:
            self._taps = as_strided(
                flat,
                (b, self.c, kh, kw, g.oh, self.wp),
                (
                    flat.strides[0],
                    flat.strides[1],
                    g.dh * self.wp * item,
                    g.dw * item,
                    self.wp * item,
                    item,
                ),
                writeable=False,
            )
        else:
            span = (g.dh * (kh - 1) + 1, g.dw * (kw - 1) + 1)
            windows = sliding_window_view(image, span, axis=(2, 3), writeable=False)
            windows = windows[:, :, :: g.sh, :: g.sw, :: g.dh, :: g.dw]
            self._taps = windows.transpose(0, 1, 4, 5, 2, 3)

    def _edge_taps(self, dtype: np.dtype) -> None:
        """The edge layout: images padded by rows only, each tap one contiguous run.

        A flat ``(B, C, PW + Hp*W + PW)`` buffer holds each image with ``PH`` zero rows
        above and below and no padding columns; tap ``(i, j)`` of output ``l = oh*W + ow``
        is ``flat[b, c, l + i*DH*W + j*DW]``, one run of ``OH*W`` values. Where
        ``ow + j*DW - PW`` falls outside ``[0, W)`` that run reads the neighbouring row's
        edge instead of a padding zero: those few columns of the tap (``PW`` or fewer
        per row) are zeroed after the copy (``_edges``). Against the wide layout, the
        matmul loses no columns (``Wp - W`` of every ``Wp``: a fifth at 8x8 with
        padding 1) and ``y`` needs no crop: ResNet-20's 3x3 forward measured 1.09x
        (32 channels) to 1.23x (64) faster.
        """
        g, b, item = self.g, self.size, np.dtype(dtype).itemsize
        self.flat_size = g.pw + self.hp * self.w + g.pw
        flat = _recycle.scratch("flat", (b, self.c, self.flat_size), dtype)
        flat.fill(0)
        first = g.pw + g.ph * self.w
        self._interior = flat[:, :, first : first + self.h * self.w].reshape(
            b, self.c, self.h, self.w
        )
        self._taps = as_strided(
            flat,
            (b, self.c, g.kh, g.kw, g.oh, self.w),
            (*flat.strides[:2], g.dh * self.w * item, g.dw * item, self.w * item, item),
            writeable=False,
        )
        for j in range(g.kw):
            shift = j * g.dw - g.pw  # the input column read is ow + shift
            if shift < 0:
                self._edges.append((j, slice(0, min(self.w, -shift))))
            elif shift > 0:
                self._edges.append((j, slice(max(0, self.w - shift), self.w)))

    def unfold(self, x: np.ndarray, ones: bool = False) -> np.ndarray:
        """``cols`` ``(m, C*KH*KW, length)`` of a chunk ``x``; ``ones`` appends the ones row."""
        m = x.shape[0]
        self._interior[:m] = x
        np.copyto(self._tap_rows[:m], self._taps[:m])
        for j, columns in self._edges:
            self._tap_rows[:m, :, :, j, :, columns] = 0
        return self._cols[:m] if ones else self._cols[:m, : self.rows]

    def widen(
        self, grad_output: np.ndarray, buffer: np.ndarray, channels_last: bool = False
    ) -> np.ndarray:
        """A chunk of ``gY`` ``(m, O, OH, OW)`` as ``(m, O, length)`` in this layout.

        ``buffer`` is ``(size, O, length)``, or with ``channels_last`` ``(size, length,
        O)`` (the result is then a transposed view of it). Its columns past OW were
        zeroed at allocation and are never written.
        """
        m, o = grad_output.shape[:2]
        if not channels_last:
            if not self.wide:
                return np.reshape(grad_output, (m, o, self.length))
            view = buffer[:m]
            view.reshape(m, o, self.g.oh, self.wp)[..., : self.g.ow] = grad_output
            return view
        view = buffer[:m]
        columns = self.wp if self.wide else self.g.ow
        target = view.reshape(m, self.g.oh, columns, o)[:, :, : self.g.ow, :]
        np.copyto(target, grad_output.transpose(0, 2, 3, 1))
        return view.transpose(0, 2, 1)


def conv2d(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    groups: int,
    g: Geometry,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``y`` ``(N, O, OH, OW)`` of a convolution, chunk by chunk, the batch split across threads.

    ``out``, when given, is written instead of a new array (C-contiguous, of ``y``'s shape).
    """
    n, c = x.shape[:2]
    out_channels = weight.shape[0]
    rows = c * g.kh * g.kw
    og, kg = out_channels // groups, rows // groups
    fused = groups == 1 and bias is not None
    wm = weight.reshape(groups, og, kg)
    if fused:
        wm = np.concatenate([wm[0], bias.reshape(out_channels, 1)], axis=1)
    y = _recycle.empty((n, out_channels, g.oh, g.ow), x.dtype) if out is None else out

    def forward(first: int, last: int) -> None:
        chunks = _Chunks(x[first:last].shape, x.dtype, g, out_channels)
        product = None
        if chunks.wide:
            product = _recycle.scratch(
                "product", (chunks.size, out_channels, chunks.length), x.dtype
            )
        for start in range(first, last, chunks.size):
            cols = chunks.unfold(x[start : min(last, start + chunks.size)], ones=fused)
            m = cols.shape[0]
            out = y[start : start + m] if product is None else product[:m]
            if fused:
                np.matmul(wm, cols, out=out.reshape(m, out_channels, chunks.length))
            else:
                grouped = cols.reshape(m, groups, kg, chunks.length)
                np.matmul(wm, grouped, out=out.reshape(m, groups, og, chunks.length))
            if product is not None:
                y[start : start + m] = product[:m].reshape(m, out_channels, g.oh, -1)[..., : g.ow]
            if bias is not None and not fused:
                y[start : start + m] += bias.reshape(1, out_channels, 1, 1)

    _threads.map_batch(forward, n, item_size=(rows + out_channels) * g.oh * g.ow, blas=True)
    return y


def conv2d_backward(
    grad_output: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray,
    groups: int,
    g: Geometry,
    input_grad: bool,
    bias: bool,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """``(gx or None, gW, gb or None)`` of a convolution; ``gW`` re-unfolds ``x`` by chunks.

    The weight gradient and the input gradient are separate tasks, run by different
    threads; with four threads or more, each task also splits the batch. Kept apart,
    each thread's scratch stays in its own cache, where a thread doing both for half
    the batch measured about 20% slower (LeNet-5's second convolution, 2 threads).
    Partial ``gW`` and ``gb`` of the batch's slices are added in slice order.
    """
    n, c = x.shape[:2]
    out_channels = weight.shape[0]
    rows = c * g.kh * g.kw
    og, kg = out_channels // groups, rows // groups
    grad_x = _recycle.empty(x.shape, x.dtype) if input_grad else None

    def weights(first: int, last: int) -> tuple[np.ndarray, np.ndarray | None]:
        chunks = _Chunks(x[first:last].shape, x.dtype, g, out_channels)
        gw_t = np.zeros((groups, kg, og), dtype=x.dtype)
        # (K, L) @ (L, Og) per image. With gY's channels last, (L, Og) is C-contiguous,
        # and OpenBLAS ran LeNet-5's second convolution (K=150, O=16) 1.4x faster than
        # with the transposed view of (Og, L). With few output channels, or K < O, it
        # was slower: the copy into channels-last order then costs more than it saves.
        channels_last = out_channels >= 16 and kg >= out_channels
        shape = (chunks.length, out_channels) if channels_last else (out_channels, chunks.length)
        buffer = _recycle.scratch("widened", (chunks.size, *shape), x.dtype)
        buffer.fill(0)
        for start in range(first, last, chunks.size):
            stop = min(last, start + chunks.size)
            m = stop - start
            gy = chunks.widen(grad_output[start:stop], buffer, channels_last)
            gy = gy.reshape(m, groups, og, chunks.length)
            cols = chunks.unfold(x[start:stop]).reshape(m, groups, kg, chunks.length)
            gw_t += np.matmul(cols, gy.transpose(0, 1, 3, 2)).sum(axis=0)
        gb = None
        if bias:
            gy_rows = grad_output[first:last].reshape(last - first, out_channels, g.oh * g.ow)
            gb = gy_rows.sum(axis=(0, 2))
        return gw_t, gb

    transposed = _transposed_geometry(x.shape, groups, g)
    if transposed is not None and input_grad:
        return _backward_same_size(grad_output, x, weight, g, transposed, bias)

    phases = _phase_plan(x.shape, groups, g)

    def inputs(first: int, last: int) -> None:
        if phases:
            _grad_input_by_phases(grad_output[first:last], weight, grad_x[first:last], phases)
        elif transposed is None:
            _grad_input(grad_output[first:last], weight, grad_x[first:last], groups, g)
        else:
            flipped = np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
            conv2d(grad_output[first:last], flipped, None, 1, transposed, out=grad_x[first:last])

    work = (rows + out_channels) * g.oh * g.ow
    if input_grad:
        # Tasks: the input gradient of each share of the batch, then the weight gradient
        # of each; one thread per task. The calling thread, which starts at once while
        # a helper takes tens of microseconds to wake, gets the input gradient, the
        # longer task. The shares (and so the rounding of gW) depend on the thread
        # count only from four threads up.
        bounds = _threads.split(n, _threads.get_num_threads() // 2)
        shares = len(bounds)
        tasks = [(inputs, *b) for b in bounds] + [(weights, *b) for b in bounds]

        def run(first: int, last: int) -> list:
            return [task(start, stop) for task, start, stop in tasks[first:last]]

        done = _threads.map_batch(run, len(tasks), item_size=work * n // shares, blas=True)
        partials = [result for results in done for result in results][shares:]
    else:
        partials = _threads.map_batch(weights, n, item_size=work, blas=True)
    (gw_t, grad_bias), *others = partials
    for partial_gw, partial_gb in others:
        gw_t += partial_gw
        if grad_bias is not None:
            grad_bias += partial_gb
    grad_weight = gw_t.transpose(0, 2, 1).reshape(weight.shape)
    return grad_x, grad_weight, grad_bias


def _transposed_geometry(input_shape: tuple[int, ...], groups: int, g: Geometry) -> Geometry | None:
    """The window that computes ``gx`` as a convolution of ``gY``, where that is faster.

    At stride 1 the input gradient is itself a convolution: ``gY`` padded by
    ``D*(K-1) - P`` on each side, correlated with the weight flipped in both spatial
    axes, its in and out channels swapped ``(C, O, KH, KW)``. It then runs through the
    forward path above (a wide unfold per chunk in cache, one matmul), which for the
    "same"-size 3x3 convolutions of a ResNet measured about 1.2x faster than the
    batch-last fold below. Where the output is smaller than the input (LeNet-5's 5x5
    with no padding) the padded ``gY`` is mostly zeros and the fold is faster, so
    this applies only where ``OH = H`` and ``OW = W`` (and to one group). ``None`` otherwise.
    """
    h, w = input_shape[2:]
    if groups != 1 or g.sh != 1 or g.sw != 1 or (g.oh, g.ow) != (h, w):
        return None
    ph, pw = g.dh * (g.kh - 1) - g.ph, g.dw * (g.kw - 1) - g.pw
    return Geometry(g.kh, g.kw, 1, 1, ph, pw, g.dh, g.dw, h, w)


def _backward_same_size(
    grad_output: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray,
    g: Geometry,
    transposed: Geometry,
    bias: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(gx, gW, gb)`` of a size-keeping stride-1 convolution from one unfold of ``gY``.

    ``gx`` is the convolution of ``gY`` with the flipped weight (``_transposed_geometry``):
    per chunk, ``gY`` is unfolded in the edge layout, ``colsT[(o, i, j), h*W + w] =
    gYp[o, h + i*DH, w + j*DW]`` (``gYp``: ``gY`` padded by ``P``, which for a
    size-keeping window is also ``D*(K-1) - P``). The weight gradient reads the same
    columns::

        gW[o, c, KH-1-i, KW-1-j] = sum over h, w of x[c, h, w] * colsT[(o, i, j), h*W + w]

    so ``gW`` (flipped) is ``colsT @ x^T``, ``x`` as it is, ``(C, H*W)`` per image. ``x``
    is not unfolded again and ``gY`` is not copied into a second layout: one unfold
    per chunk, in cache, serves both matmuls. The batch is split across threads;
    partial ``gW`` and ``gb`` are added in slice order.
    """
    n, c, h, w = x.shape
    out_channels = weight.shape[0]
    taps = out_channels * g.kh * g.kw
    flipped = np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    wm = flipped.reshape(c, taps)
    grad_x = _recycle.empty(x.shape, x.dtype)
    rows_x = x.reshape(n, c, h * w)
    rows_gx = grad_x.reshape(n, c, h * w)

    def run(first: int, last: int) -> tuple[np.ndarray, np.ndarray | None]:
        # gY is the convolution's input here: its rows are O*KH*KW, its product's C,
        # and x's C rows are read beside them.
        chunks = _Chunks(grad_output[first:last].shape, x.dtype, transposed, c, extra_rows=c)
        acc = np.zeros((taps, c), dtype=x.dtype)
        for start in range(first, last, chunks.size):
            stop = min(last, start + chunks.size)
            cols = chunks.unfold(grad_output[start:stop])
            np.matmul(wm, cols, out=rows_gx[start:stop])
            acc += np.matmul(cols, rows_x[start:stop].transpose(0, 2, 1)).sum(axis=0)
        gb = None
        if bias:
            gb = grad_output[first:last].reshape(last - first, out_channels, h * w).sum(axis=(0, 2))
        return acc, gb

    work = (taps + 2 * c) * h * w
    (acc, grad_bias), *others = _threads.map_batch(run, n, item_size=work, blas=True)
    for partial, partial_gb in others:
        acc += partial
        if grad_bias is not None:
            grad_bias += partial_gb
    grad_weight = acc.reshape(out_channels, g.kh, g.kw, c)[:, ::-1, ::-1, :].transpose(0, 3, 1, 2)
    return grad_x, np.ascontiguousarray(grad_weight), grad_bias


class _Phase(NamedTuple):
    """One axis of one phase: input rows ``a, a+S, ...`` (``count`` of them) get the taps
    ``r, r+S, ...`` (``taps`` of them) from ``gY`` rows starting at ``start`` (padded)."""

    a: int
    r: int
    taps: int
    count: int
    start: int


def _axis_phases(size: int, out: int, k: int, s: int, p: int) -> tuple[list[_Phase], int, int]:
    """The phases of one axis and the zero rows ``gY`` needs before and after."""
    phases, before, after = [], 0, 0
    for a in range(min(s, size)):
        r, q = (a + p) % s, (a + p) // s
        taps = len(range(r, k, s))
        count = len(range(a, size, s))
        start = q - taps + 1
        if taps:
            before = max(before, -start)
            after = max(after, count + q - out)
        phases.append(_Phase(a, r, taps, count, start))
    return phases, before, after


def _phase_plan(input_shape: tuple[int, ...], groups: int, g: Geometry) -> tuple | None:
    """How :func:`_grad_input_by_phases` splits a strided convolution's ``gx``, or None.

    With stride S, input row ``h = S*u + a`` receives only the taps ``i`` with
    ``i = (a + P) mod S`` (every S-th tap), from ``gY`` rows ``u + (a + P) // S - t``.
    So each of the S*S phases ``gx[..., a::S, b::S]`` is a stride-1 *valid*
    convolution of (zero-extended) ``gY`` with that phase's taps of the weight,
    flipped and transposed to ``(C, O, Th, Tw)``: the forward path computes it, and
    the fold's strided slice-adds are gone. Measured, one thread, batch 128:
    ResNet-20's stride-2 convolutions' whole backward (weight gradient included)
    1.03-1.2x faster than with the fold for the 3x3s, 1.8-3.6x for the 1x1 shortcuts.
    Dilation 1 and one group only.
    """
    h, w = input_shape[2:]
    if groups != 1 or g.dh != 1 or g.dw != 1 or (g.sh == 1 and g.sw == 1):
        return None
    rows, top, bottom = _axis_phases(h, g.oh, g.kh, g.sh, g.ph)
    columns, left, right = _axis_phases(w, g.ow, g.kw, g.sw, g.pw)
    return rows, columns, (g.sh, g.sw, top, bottom, left, right)


def _grad_input_by_phases(
    grad_output: np.ndarray, weight: np.ndarray, grad_x: np.ndarray, plan: tuple
) -> None:
    """Write ``gx`` phase by phase, each a stride-1 convolution (see :func:`_phase_plan`)."""
    rows, columns, (sh, sw, top, bottom, left, right) = plan
    m, o, oh, ow = grad_output.shape
    c = weight.shape[1]
    dtype = grad_output.dtype
    padded = grad_output
    if top or bottom or left or right:
        padded = _recycle.scratch("phase gy", (m, o, oh + top + bottom, ow + left + right), dtype)
        padded.fill(0)
        padded[:, :, top : top + oh, left : left + ow] = grad_output
    for row in rows:
        for column in columns:
            target = grad_x[:, :, row.a :: sh, column.a :: sw]
            if not row.taps or not column.taps:
                target[...] = 0
                continue
            kernel = weight[:, :, row.r :: sh, column.r :: sw]
            flipped = np.ascontiguousarray(kernel[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
            y0, x0 = top + row.start, left + column.start
            source = padded[
                :, :, y0 : y0 + row.count + row.taps - 1, x0 : x0 + column.count + column.taps - 1
            ]
            g = Geometry(row.taps, column.taps, 1, 1, 0, 0, 1, 1, row.count, column.count)
            out = _recycle.scratch("phase gx", (m, c, row.count, column.count), dtype)
            conv2d(source, flipped, None, 1, g, out=out)
            target[...] = out


def _grad_input(
    grad_output: np.ndarray, weight: np.ndarray, grad_x: np.ndarray, groups: int, g: Geometry
) -> None:
    """Write ``gx`` ``(N, C, H, W)`` from ``gY`` ``(N, O, OH, OW)``, batch-last per chunk.

    At stride 1 the layout is *wide*, as in forward: ``gY`` is zero-extended to ``Wp``
    columns, so every kernel tap's share of the fold is one contiguous run of
    ``OH*Wp*m`` values at offset ``(i*DH*Wp + j*DW)*m`` of the flat padded buffer. (A
    column ``w' >= OW`` spills into the next row, but its values are zero.) One long
    add per tap runs about 4x faster than the same add over short strided rows.
    """
    n, c, h, w = grad_x.shape
    out_channels = weight.shape[0]
    dtype = grad_output.dtype
    hp, wp = h + 2 * g.ph, w + 2 * g.pw
    wide = g.sh == 1 and g.sw == 1
    columns = wp if wide else g.ow
    length = g.oh * columns
    og, kg = out_channels // groups, c * g.kh * g.kw // groups
    wm_t = weight.reshape(groups, og, kg).transpose(0, 2, 1)
    size = max(1, min(n, _FOLD_BYTES // (c * g.kh * g.kw * length * dtype.itemsize)))
    # The last tap's run ends (KW-1)*DW columns past the padded image.
    flat_size = hp * wp + ((g.kw - 1) * g.dw if wide else 0)
    for start in range(0, n, size):
        m = min(size, n - start)
        gy_t = _recycle.scratch("gy_t", (out_channels, g.oh, columns, m), dtype)
        gcols = _recycle.scratch("gcols", (groups, kg, length * m), dtype)
        flat = _recycle.scratch("padded", (c, flat_size * m), dtype)
        if columns > g.ow:
            gy_t[:, :, g.ow :, :] = 0
        np.copyto(gy_t[:, :, : g.ow, :], grad_output[start : start + m].transpose(1, 2, 3, 0))
        np.matmul(wm_t, gy_t.reshape(groups, og, length * m), out=gcols)
        flat.fill(0)
        padded = flat[:, : hp * wp * m].reshape(c, hp, wp, m)
        if wide:
            taps = gcols.reshape(c, g.kh, g.kw, length * m)
            for i in range(g.kh):
                for j in range(g.kw):
                    offset = (i * g.dh * wp + j * g.dw) * m
                    flat[:, offset : offset + length * m] += taps[:, i, j]
        else:
            taps = gcols.reshape(c, g.kh, g.kw, g.oh, g.ow, m)
            for i in range(g.kh):
                for j in range(g.kw):
                    rows, cols = window_slices(g, i, j)
                    padded[:, rows, cols, :] += taps[:, i, j]
        cropped = padded[:, g.ph : g.ph + h, g.pw : g.pw + w, :]
        np.copyto(grad_x[start : start + m], cropped.transpose(3, 0, 1, 2))
