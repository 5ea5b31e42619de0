"""``BatchNorm1d`` and ``BatchNorm2d`` (math: ``xcnn.ops.batchnorm``).

Names, defaults and state follow PyTorch so state dicts move both ways:
parameters ``weight`` (gamma, ones) and ``bias`` (beta, zeros), buffers
``running_mean`` (zeros), ``running_var`` (ones) and ``num_batches_tracked``
(0-d int64).

Training mode normalises with the batch statistics, keeps the normalised input
for backward and updates the running statistics; eval mode normalises with the
running statistics and keeps nothing. With ``track_running_stats=False`` there
are no buffers and both modes use batch statistics, as in PyTorch.
"""

from __future__ import annotations

from typing import Any

from xcnn import backends
from xcnn.autograd import Tensor
from xcnn.backends import array_namespace
from xcnn.nn import functional, init
from xcnn.nn.module import Module
from xcnn.ops import batchnorm as F

__all__ = ["BatchNorm1d", "BatchNorm2d"]


class _BatchNorm(Module):
    """Shared state and forward/backward; subclasses set the accepted input ranks."""

    _ranks: tuple[int, ...] = ()
    _layout = ""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        dtype: str = "float32",
    ):
        super().__init__()
        name = type(self).__name__
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"{name}: num_features must be a positive int, got {num_features!r}")
        if not eps > 0:
            raise ValueError(f"{name}: eps must be positive, got {eps!r}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{name}: momentum must be in [0, 1] or None, got {momentum!r}")
        dtype_name = backends.dtype_name(dtype)
        if dtype_name not in ("float32", "float64"):
            raise ValueError(f"{name}: dtype must be float32 or float64, got {dtype!r}")
        self.num_features = num_features
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        if self.affine:
            self.weight = init.ones_(init.empty_parameter((num_features,), dtype_name))
            self.bias = init.zeros_(init.empty_parameter((num_features,), dtype_name))
        else:
            self.weight = None
            self.bias = None
        if self.track_running_stats:
            xp = backends.current().xp
            float_dtype = getattr(xp, dtype_name)
            self.register_buffer("running_mean", xp.zeros((num_features,), dtype=float_dtype))
            self.register_buffer("running_var", xp.ones((num_features,), dtype=float_dtype))
            self.register_buffer("num_batches_tracked", xp.asarray(0, dtype=xp.int64))
        else:
            self.running_mean = None
            self.running_var = None
            self.num_batches_tracked = None

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )

    def _label(self) -> str:
        return f"{type(self).__name__}({self.num_features})"

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batches tracked."""
        if not self.track_running_stats:
            return
        xp = array_namespace(self.running_mean)
        self._set_buffer("running_mean", xp.zeros_like(self.running_mean))
        self._set_buffer("running_var", xp.ones_like(self.running_var))
        self._set_buffer("num_batches_tracked", xp.zeros_like(self.num_batches_tracked))

    def _check_input(self, x: Any) -> None:
        label = self._label()
        x = x.data if isinstance(x, Tensor) else x
        try:
            xp = array_namespace(x)
        except TypeError:
            raise TypeError(f"{label}: expected an array, got {type(x).__name__}") from None
        state = self.weight.data if self.affine else self.running_mean
        if state is not None:
            have, want = backends.namespace_name(x), backends.namespace_name(state)
            if have != want:
                raise TypeError(
                    f"{label}: input is a {have} array but the layer's state lives on "
                    f"{want}; move the input with xcnn.backends.get({want!r}).asarray(...) "
                    f"or the model with model.to({have!r})"
                )
        shape = tuple(x.shape)
        if len(shape) not in self._ranks:
            raise ValueError(f"{label}: expected {self._layout} input, got shape {shape}")
        if shape[1] != self.num_features:
            raise ValueError(
                f"{label}: expected input with {self.num_features} channels, got shape {shape}"
            )
        if not xp.isdtype(x.dtype, "real floating"):
            raise TypeError(
                f"{label}: expected a floating-point input, got dtype "
                f"{backends.dtype_name(x.dtype)}"
            )
        if state is not None and x.dtype != state.dtype:
            raise TypeError(
                f"{label}: input is {backends.dtype_name(x.dtype)} but the layer is "
                f"{backends.dtype_name(state.dtype)}; cast the input or call "
                f"model.to({backends.dtype_name(x.dtype)!r})"
            )

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        if not self.training and self.track_running_stats:
            return functional.BatchNormEval.apply(
                x,
                self.weight,
                self.bias,
                running_mean=self.running_mean,
                running_var=self.running_var,
                eps=self.eps,
            )
        F.check_batch(self._label(), tuple(x.shape))
        update = self._update_running if self.training and self.track_running_stats else None
        return functional.BatchNormTrain.apply(
            x, self.weight, self.bias, eps=self.eps, update=update
        )

    def _update_running(self, cache: F.BatchNormCache) -> None:
        """Move the running statistics towards this batch's (called from the forward)."""
        count = self.num_batches_tracked + 1
        self._set_buffer("num_batches_tracked", count)
        # momentum=None: a cumulative average, weight 1/n for the n-th batch.
        momentum = 1.0 / int(count) if self.momentum is None else self.momentum
        mean, var = F.batch_norm_update_running(
            self.running_mean, self.running_var, cache, momentum
        )
        self._set_buffer("running_mean", mean)
        self._set_buffer("running_var", var)


class BatchNorm1d(_BatchNorm):
    """Batch normalization over ``(N, C)`` or ``(N, C, L)`` input, PyTorch's signature.

    Parameters
    ----------
    num_features : int
        ``C``.
    eps : float, default 1e-5
        Added to the variance.
    momentum : float or None, default 0.1
        ``running = (1 - momentum) * running + momentum * batch_stat``; ``None`` keeps
        a cumulative average.
    affine : bool, default True
        Learn ``weight`` (gamma) and ``bias`` (beta).
    track_running_stats : bool, default True
        Keep running statistics for eval mode.
    dtype : str, default "float32"
        ``"float32"`` or ``"float64"``.

    Shapes
    ------
    input ``(N, C)`` or ``(N, C, L)`` -> output of the same shape; statistics per
    channel over N (and L). Training needs more than one value per channel.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn import nn
    >>> bn = nn.BatchNorm1d(3)
    >>> y = bn(np.array([[1, 2, 3], [3, 6, 9]], dtype=np.float32))
    >>> y.round(3)
    array([[-1., -1., -1.],
           [ 1.,  1.,  1.]], dtype=float32)
    >>> bn.running_mean
    array([0.2, 0.4, 0.6], dtype=float32)
    """

    _ranks = (2, 3)
    _layout = "2-D (N, C) or 3-D (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalization over ``(N, C, H, W)`` input, PyTorch's signature.

    Parameters
    ----------
    num_features : int
        ``C``.
    eps : float, default 1e-5
    momentum : float or None, default 0.1
        ``None`` keeps a cumulative average.
    affine : bool, default True
    track_running_stats : bool, default True
    dtype : str, default "float32"

    Shapes
    ------
    input ``(N, C, H, W)`` -> output of the same shape; statistics per channel over
    N, H and W.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn import nn
    >>> bn = nn.BatchNorm2d(16)
    >>> bn(np.ones((8, 16, 4, 4), dtype=np.float32)).shape
    (8, 16, 4, 4)
    >>> sorted(bn.state_dict())
    ['bias', 'num_batches_tracked', 'running_mean', 'running_var', 'weight']
    """

    _ranks = (4,)
    _layout = "4-D (N, C, H, W)"
