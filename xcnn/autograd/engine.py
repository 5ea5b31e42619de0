"""The backward walk: from a root tensor back to the leaves, each node once.

1. Count, for every node reachable from the root, how many edges lead into it
   (how many later nodes will send it a gradient).
2. Start at the root's node with ``grad`` (1 for a scalar loss). Take the ready node
   created last, call its Function's ``backward`` with the gradients summed for each
   of its outputs, and free what it saved.
3. Send each returned gradient along its edge: into a leaf's ``.grad`` (added to what
   is there), or into the buffer of the input's node. A node whose last incoming
   gradient has arrived is ready.

A node runs only when every use of its outputs has contributed, so a tensor used
three times gets the sum of three gradients before its producer runs: the order is
topological. Running the newest ready node first walks the graph in the reverse of
the order the forward pass built it, which fixes the order of every sum: two runs
give bit-identical gradients.
"""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np

from xcnn.autograd.function import Context
from xcnn.backends import array_namespace, dtype_name, namespace_name

__all__ = ["run_backward"]


def run_backward(root: Any, grad: Any, retain_graph: bool = False) -> None:
    """Accumulate ``d root / d leaf`` (weighted by ``grad``) into every leaf's ``.grad``."""
    node = root.grad_fn
    if node is None:
        _accumulate(root, grad)
        return
    if node._released:
        raise RuntimeError(
            f"backward through {node.name} a second time: its saved arrays were freed by "
            "the first backward(). Pass retain_graph=True to the first backward() if you "
            "need to backward twice"
        )
    dependencies = _count_dependencies(node)
    buffers: dict[Context, list[Any]] = {node: [None] * len(node.output_meta)}
    buffers[node][root._output_nr] = grad
    ready = [(-node.sequence, node)]
    while ready:
        _, node = heapq.heappop(ready)
        grads = buffers.pop(node)
        for i, (shape, dtype, xp) in enumerate(node.output_meta):
            if grads[i] is None:  # an output that did not reach the root
                grads[i] = xp.zeros(shape, dtype=dtype)
        input_grads = _call_backward(node, grads)
        edges = node.next_edges
        if not retain_graph:
            node.release()
        for edge, g in zip(edges, input_grads, strict=False):
            if edge is None or g is None:
                continue
            target, index = edge
            if not isinstance(target, Context):
                _accumulate(target, g)
                continue
            slot = buffers.get(target)
            if slot is None:
                slot = buffers[target] = [None] * len(target.output_meta)
            slot[index] = g if slot[index] is None else slot[index] + g
            dependencies[target] -= 1
            if dependencies[target] == 0:
                heapq.heappush(ready, (-target.sequence, target))


def _count_dependencies(root: Context) -> dict[Context, int]:
    """For every node below ``root``, the number of edges that lead into it."""
    counts: dict[Context, int] = {}
    stack = [root]
    seen = {root}
    while stack:
        node = stack.pop()
        for edge in node.next_edges:
            if edge is None or not isinstance(edge[0], Context):
                continue
            target = edge[0]
            counts[target] = counts.get(target, 0) + 1
            if target not in seen:
                if target._released:
                    raise RuntimeError(
                        f"backward through {target.name} a second time: its saved arrays "
                        "were freed by an earlier backward(). Pass retain_graph=True to "
                        "that backward() if the graph is used again"
                    )
                seen.add(target)
                stack.append(target)
    return counts


def _call_backward(node: Context, grads: list[Any]) -> tuple[Any, ...]:
    """Run ``node``'s Function.backward; check it returned one fitting gradient per input."""
    out = node.function.backward(node, *grads)
    out = out if isinstance(out, tuple) else (out,)
    inputs = len(node.needs_input_grad)
    if len(out) > inputs or (len(out) < inputs and any(node.needs_input_grad[len(out) :])):
        raise RuntimeError(
            f"{node.name}.backward returned {len(out)} gradients, but forward took "
            f"{inputs} inputs; return one per input (None where no gradient is needed)"
        )
    for i, (g, meta) in enumerate(zip(out, node.input_meta, strict=False)):
        if g is None or meta is None:
            continue
        shape, dtype, kind = meta
        # The usual gradient passes three identity/equality tests; messages only on failure.
        if type(g) is kind and g.shape == shape and g.dtype == dtype:
            continue
        _check_gradient(node, i, g, shape, dtype, kind)
    return out


def _check_gradient(node: Context, i: int, g: Any, shape: Any, dtype: Any, kind: type) -> None:
    """Raise the error that says how gradient ``g`` for input ``i`` does not fit it."""
    if type(g) is not kind and not isinstance(g, np.generic):  # NumPy's 0-d results
        got = "a Tensor" if hasattr(g, "grad_fn") else f"a {namespace_name(g)} array"
        raise RuntimeError(
            f"{node.name}.backward returned {got} for input {i}, which is a "
            f"{kind.__module__.split('.', 1)[0]} array; return arrays of the input's backend"
        )
    if tuple(g.shape) != shape:
        raise RuntimeError(
            f"{node.name}.backward returned a gradient of shape {tuple(g.shape)} for "
            f"input {i}, whose shape is {shape}"
        )
    if g.dtype != dtype:
        # A float64 gradient would silently turn float32 parameters into float64 ones.
        raise RuntimeError(
            f"{node.name}.backward returned a {dtype_name(g.dtype)} gradient for input "
            f"{i}, which is {dtype_name(dtype)}; keep the input's dtype (multiply by "
            "Python floats, not NumPy float64 scalars)"
        )


def _accumulate(leaf: Any, grad: Any) -> None:
    """Add ``grad`` into a leaf tensor's ``.grad`` (the first gradient is stored as a copy)."""
    if not leaf._requires_grad:
        return
    if type(grad) is np.ndarray:  # the common case, without a namespace lookup
        # A copy: the gradient may be a read-only broadcast view (Sum's), the very array
        # another leaf received (Add's), or the caller's grad=; .grad must be the leaf's own.
        leaf.grad = np.array(grad) if leaf.grad is None else np.asarray(leaf.grad + grad)
        return
    xp = array_namespace(grad)
    if leaf.grad is None:
        leaf.grad = xp.asarray(grad, copy=True)
    else:
        leaf.grad = xp.asarray(leaf.grad + grad)  # NumPy gives a scalar for 0-d arrays
