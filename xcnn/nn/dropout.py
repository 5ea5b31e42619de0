"""``Dropout``: inverted dropout in training, identity in eval (math in ``xcnn.ops.dropout``)."""

from __future__ import annotations

from typing import Any

from xcnn import backends
from xcnn.autograd import Tensor
from xcnn.backends import array_namespace
from xcnn.nn import functional as F
from xcnn.nn.module import Module
from xcnn.ops.dropout import _check_p

__all__ = ["Dropout"]


class Dropout(Module):
    """Zero each element with probability ``p`` in training; scale the rest by ``1/(1-p)``.

    Parameters
    ----------
    p : float in [0, 1), default 0.5
        Drop probability. ``p = 0`` is the identity.
    rng : int, numpy.random.Generator or xcnn.backends.Generator, optional
        Where the masks come from. An ``xcnn.backends.Generator`` is used as
        given (shared with whoever else holds it); an int or NumPy generator
        seeds a new one; ``None`` seeds a new one from xcnn's default
        generator (see ``xcnn.manual_seed``).

    Attributes
    ----------
    generator : xcnn.backends.Generator
        The layer's random stream. Save ``generator.state_dict()`` in a
        checkpoint and restore it with ``generator.load_state_dict(...)`` to
        resume with the same masks.

    Shapes
    ------
    any shape -> the same shape, dtype and namespace.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn import nn
    >>> drop = nn.Dropout(0.5, rng=0)
    >>> sorted(set(drop(np.ones(8, dtype=np.float32)).tolist()))
    [0.0, 2.0]
    >>> drop.eval()(np.ones(2, dtype=np.float32))
    array([1., 1.], dtype=float32)
    """

    def __init__(self, p: float = 0.5, *, rng: Any = None):
        super().__init__()
        self.p = _check_p(p, "Dropout")
        wrong_rng = TypeError(
            f"Dropout(p={self.p}): rng must be None, an int seed, a numpy.random.Generator "
            f"or an xcnn.backends.Generator, got {type(rng).__name__}"
        )
        if isinstance(rng, bool):
            raise wrong_rng
        if isinstance(rng, backends.Generator):
            self.generator = rng
        else:
            try:
                self.generator = backends.Generator(rng)
            except TypeError:
                raise wrong_rng from None

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: Tensor) -> Tensor:
        data = x.data if isinstance(x, Tensor) else x
        try:
            xp = array_namespace(data)
        except TypeError:
            raise TypeError(f"{self._label()}: expected an array, got {type(x).__name__}") from None
        if not xp.isdtype(data.dtype, "real floating"):
            dtype = backends.dtype_name(data.dtype)
            raise TypeError(f"{self._label()}: expected a floating-point input, got dtype {dtype}")
        if not self.training or self.p == 0.0:
            return x
        return F.Dropout.apply(x, p=self.p, generator=self.generator)
