"""Define-by-run automatic differentiation over xcnn's hand-written backward passes.

``Tensor`` records each ``Function`` call that produces it; ``loss.backward()``
walks those records in reverse (``engine.py``). Read ``docs/autograd.md`` for a
worked example.
"""

from xcnn.autograd.function import Context, Function
from xcnn.autograd.grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from xcnn.autograd.tensor import Tensor, cat, flatten, stack, tensor

__all__ = [
    "Context",
    "Function",
    "Tensor",
    "cat",
    "enable_grad",
    "flatten",
    "is_grad_enabled",
    "no_grad",
    "set_grad_enabled",
    "stack",
    "tensor",
]
