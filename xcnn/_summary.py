"""``xcnn.summary``: torchinfo's table of a model, one row per module call.

The model runs once, in eval mode under ``no_grad``, on zeros of the given shape;
``Module.__call__`` is wrapped for that one forward so that every call (of a leaf
layer, a container or a forward-only block) records its output shape.

Conventions are torchinfo's (version 1.8), so the figures can be checked against it:

* parameters: each parameter once, however often its module is called; a module's
  row shows the parameters of its whole subtree, ``(recursive)`` on a repeated call;
* mult-adds, per call of a leaf module, from its own ``weight`` and ``bias``:
  ``Conv*``: ``params * N * OH * OW`` (each weight and bias element once per output
  position), every other layer: ``params * N`` (``Linear``: ``N * (in * out + out)``,
  ``BatchNorm``: ``N * 2C``); layers without parameters (pooling, activations): 0;
* forward/backward pass size: twice (activations and their gradients) the output
  bytes of every leaf call that has parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from xcnn import backends
from xcnn.autograd import Tensor, no_grad
from xcnn.nn import containers
from xcnn.nn.module import Module, Parameter

__all__ = ["ModelStatistics", "SummaryRow", "summary"]


@dataclass
class SummaryRow:
    """One module call: where it sits, what it gave, what it holds and costs.

    Attributes
    ----------
    class_name : str
    depth, index : int
        Nesting level (0: the model) and the call's number among the calls at that
        depth, through the whole model (torchinfo's ``depth-idx``).
    output_shape : tuple of int or None
        ``None`` when the call returned something other than one array or Tensor.
    num_params : int
        Parameters of the module's subtree; 0 on a repeated call (``recursive``).
    mult_adds : int
        This call's multiply-adds (leaf modules only; see the top of this file).
    is_leaf, recursive, has_params : bool
    output_bytes : int
    """

    class_name: str
    depth: int
    index: int
    output_shape: tuple[int, ...] | None
    num_params: int
    mult_adds: int
    is_leaf: bool
    recursive: bool
    has_params: bool = False
    output_bytes: int = 0

    @property
    def label(self) -> str:
        """torchinfo's ``Conv2d: 1-1``: class, depth, and the call's number at that depth."""
        if self.depth == 0:
            return self.class_name
        return f"{'  ' * (self.depth - 1)}└─{self.class_name}: {self.depth}-{self.index}"


@dataclass
class ModelStatistics:
    """What :func:`summary` found; ``str()`` gives the table.

    Attributes
    ----------
    rows : list of SummaryRow
        One per module call, in call order (the model's own call first).
    input_shape : tuple of int
    total_params, trainable_params, non_trainable_params, total_mult_adds : int
    input_bytes, forward_backward_bytes, param_bytes, total_bytes : int
        In bytes; the table shows them in MB (10**6 bytes), as torchinfo does.
    depth : int
        Deepest level the table shows.
    """

    rows: list[SummaryRow]
    input_shape: tuple[int, ...]
    total_params: int
    trainable_params: int
    total_mult_adds: int
    input_bytes: int
    forward_backward_bytes: int
    param_bytes: int
    depth: int = 3

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params

    @property
    def total_bytes(self) -> int:
        return self.input_bytes + self.forward_backward_bytes + self.param_bytes

    def __str__(self) -> str:
        shown = [row for row in self.rows if row.depth <= self.depth]
        name_w = max([len("Layer (type:depth-idx)"), *(len(r.label) for r in shown)]) + 2
        cols = (name_w, 26, 16, 18)
        rule = "=" * sum(cols)

        def line(*cells: str) -> str:
            padded = (cell.ljust(width) for cell, width in zip(cells, cols, strict=True))
            return "".join(padded).rstrip()

        out = [rule, line("Layer (type:depth-idx)", "Output Shape", "Param #", "Mult-Adds")]
        out.append(rule)
        for row in shown:
            shape = "--" if row.output_shape is None else str(list(row.output_shape))
            if row.recursive:
                params = "(recursive)"
            else:
                params = f"{row.num_params:,}" if row.num_params else "--"
            macs = f"{row.mult_adds:,}" if row.mult_adds else "--"
            out.append(line(row.label, shape, params, macs))
        mb = 1e6
        out += [
            rule,
            f"Total params: {self.total_params:,}",
            f"Trainable params: {self.trainable_params:,}",
            f"Non-trainable params: {self.non_trainable_params:,}",
            f"Total mult-adds (M): {self.total_mult_adds / 1e6:0.2f}",
            rule,
            f"Input size (MB): {self.input_bytes / mb:0.2f}",
            f"Forward/backward pass size (MB): {self.forward_backward_bytes / mb:0.2f}",
            f"Params size (MB): {self.param_bytes / mb:0.2f}",
            f"Estimated Total Size (MB): {self.total_bytes / mb:0.2f}",
            rule,
        ]
        return "\n".join(out)


def summary(
    model: Module,
    input_shape: Sequence[int],
    *,
    dtype: str = "float32",
    depth: int = 3,
    print_fn: Callable[[str], Any] | None = print,
) -> ModelStatistics:
    """Print and return a torchinfo-style table of ``model`` run on ``input_shape``.

    Parameters
    ----------
    model : Module
        Any xcnn model: a ``Sequential`` or a ``Module`` with its own ``forward``.
    input_shape : sequence of int
        ``(C, H, W)`` (a batch of one is added) or the full input shape, e.g.
        ``(N, C, H, W)`` or ``(N, features)``.
    dtype : str, default "float32"
        Dtype of the zeros the model is run on (the model's own, usually).
    depth : int, default 3
        Deepest nesting level shown in the table (the totals count every level).
    print_fn : callable or None, default print
        Receives the table as one string; ``None`` prints nothing.

    Notes
    -----
    ``Module.__call__`` (and ``Sequential``'s fusing of ReLUs into their neighbours) is
    replaced for the one forward and restored afterwards, even when the model raises:
    do not run other models in other threads meanwhile. The model's and each
    submodule's train/eval mode is restored; batch-norm statistics are untouched.

    Returns
    -------
    ModelStatistics
        ``.rows`` (one :class:`SummaryRow` per module call, in call order),
        ``.total_params``, ``.trainable_params``, ``.total_mult_adds``, sizes in bytes.

    Examples
    --------
    >>> import xcnn
    >>> stats = xcnn.summary(xcnn.models.lenet5(), (1, 28, 28), print_fn=None)
    >>> stats.total_params, stats.rows[1].label, stats.rows[1].output_shape
    (61706, '└─Conv2d: 1-1', (1, 6, 28, 28))
    """
    shape = tuple(int(n) for n in input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    params = list(model.parameters())
    xp = backends.array_namespace(params[0].data) if params else backends.current().xp
    if dtype not in ("float16", "float32", "float64"):
        raise ValueError(f"summary: dtype must be 'float16', 'float32' or 'float64', got {dtype!r}")
    x = xp.zeros(shape, dtype=getattr(xp, dtype))

    rows: list[SummaryRow] = []
    stack: list[SummaryRow] = []  # the calls under way, outermost first
    # torchinfo's "depth-idx": calls at each depth numbered through the whole model.
    per_depth: dict[int, int] = {}
    seen: set[int] = set()
    original_call = Module.__call__
    original_run_order = containers._run_order

    def recording_call(self: Module, *args: Any, **kwargs: Any) -> Any:
        first = id(self) not in seen
        count = _subtree_params(self)
        seen.add(id(self))
        per_depth[len(stack)] = per_depth.get(len(stack), 0) + 1
        row = SummaryRow(
            class_name=type(self).__name__,
            depth=len(stack),
            index=per_depth[len(stack)],
            output_shape=None,
            num_params=count if first else 0,
            mult_adds=0,
            is_leaf=not self._modules,
            recursive=not first,
            has_params=count > 0,
        )
        rows.append(row)
        stack.append(row)
        try:
            out = original_call(self, *args, **kwargs)
        finally:
            stack.pop()
        data = out.data if isinstance(out, Tensor) else out
        if hasattr(data, "shape"):
            row.output_shape = tuple(int(n) for n in data.shape)
            row.output_bytes = math.prod(row.output_shape) * _itemsize(data)
            if row.is_leaf:
                row.mult_adds = _mult_adds(self, row.output_shape)
        return out

    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        Module.__call__ = recording_call  # type: ignore[method-assign]
        # Every module on its own, so that a ReLU fused into its neighbour gets its row.
        containers._run_order = list  # type: ignore[assignment]
        # And every convolution + batch norm as its two layers, also in a forward of
        # a module's own (models.BasicBlock).
        with no_grad(), containers.unfolded():
            model(x)
    finally:
        Module.__call__ = original_call  # type: ignore[method-assign]
        containers._run_order = original_run_order
        for module, training in modes:
            module.training = training

    unique = list({id(p): p for p in params}.values())
    stats = ModelStatistics(
        rows=rows,
        input_shape=shape,
        total_params=sum(_size(p) for p in unique),
        trainable_params=sum(_size(p) for p in unique if p.requires_grad),
        total_mult_adds=sum(row.mult_adds for row in rows),
        input_bytes=math.prod(shape) * _itemsize(x),
        forward_backward_bytes=sum(
            2 * row.output_bytes for row in rows if row.is_leaf and row.has_params
        ),
        param_bytes=sum(_size(p) * _itemsize(p.data) for p in unique),
        depth=depth,
    )
    if print_fn is not None:
        print_fn(str(stats))
    return stats


def _size(p: Parameter) -> int:
    return math.prod(p.shape)


def _itemsize(array: Any) -> int:
    return int(backends.host_dtype(array.dtype).itemsize)


def _subtree_params(module: Module) -> int:
    return sum(_size(p) for p in {id(p): p for p in module.parameters()}.values())


def _mult_adds(module: Module, output_shape: tuple[int, ...]) -> int:
    own = sum(_size(p) for name, p in module._parameters.items() if name in ("weight", "bias"))
    if not own or not output_shape:
        return 0
    if "Conv" in type(module).__name__:
        return own * output_shape[0] * math.prod(output_shape[2:])
    return own * output_shape[0]
