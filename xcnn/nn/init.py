"""Weight initialisation, PyTorch's formulas, drawn on the host.

Every initialiser fills a :class:`~xcnn.nn.Parameter` in place and returns it.
Random values are drawn in float64 from a host ``numpy.random.Generator``
(``rng=``, else xcnn's default generator set by ``xcnn.manual_seed``), cast to
the parameter's dtype and moved to its backend, so one seed gives bit-identical
weights on NumPy, CuPy and array_api_strict.

Fans, for a weight of shape ``(out, in, *kernel)``::

    fan_in  = in  * prod(kernel)
    fan_out = out * prod(kernel)

Bounds and standard deviations::

    kaiming_uniform:  U(-b, b),  b   = gain * sqrt(3 / fan)
    kaiming_normal:   N(0, s^2), s   = gain / sqrt(fan)
    xavier_uniform:   U(-b, b),  b   = gain * sqrt(6 / (fan_in + fan_out))
    xavier_normal:    N(0, s^2), s   = gain * sqrt(2 / (fan_in + fan_out))
    lecun_uniform:    U(-b, b),  b   = sqrt(3 / fan_in)
    lecun_normal:     N(0, s^2), s   = sqrt(1 / fan_in)
"""

from __future__ import annotations

import math
from typing import Any

from xcnn import backends
from xcnn.nn.module import Parameter

__all__ = [
    "calculate_gain",
    "constant_",
    "fans",
    "kaiming_normal_",
    "kaiming_uniform_",
    "lecun_normal_",
    "lecun_uniform_",
    "normal_",
    "ones_",
    "uniform_",
    "xavier_normal_",
    "xavier_uniform_",
    "zeros_",
]


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight shaped ``(out, in, *kernel)``."""
    if len(shape) < 2:
        raise ValueError(f"fans need a weight with at least 2 dimensions, got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """PyTorch's recommended gain for ``nonlinearity`` (``"relu"``, ``"leaky_relu"``, ...)."""
    if nonlinearity in ("linear", "conv2d", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope**2))
    raise ValueError(
        f"unknown nonlinearity {nonlinearity!r}; "
        "choose linear, conv2d, sigmoid, tanh, relu or leaky_relu"
    )


def _fill(param: Parameter, host_values: Any) -> Parameter:
    backend = backends.get(backends.namespace_name(param.data))
    param.data = backend.asarray(host_values, dtype=param.dtype)
    return param


def _fan(param: Parameter, mode: str) -> int:
    fan_in, fan_out = fans(param.shape)
    if mode == "fan_in":
        return fan_in
    if mode == "fan_out":
        return fan_out
    raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")


def uniform_(param: Parameter, low: float = 0.0, high: float = 1.0, rng: Any = None) -> Parameter:
    """Fill with ``U(low, high)``."""
    return _fill(param, backends.host_rng(rng).uniform(low, high, size=param.shape))


def normal_(param: Parameter, mean: float = 0.0, std: float = 1.0, rng: Any = None) -> Parameter:
    """Fill with ``N(mean, std^2)``."""
    return _fill(param, backends.host_rng(rng).normal(mean, std, size=param.shape))


def constant_(param: Parameter, value: float) -> Parameter:
    """Fill with ``value``."""
    xp = backends.get(backends.namespace_name(param.data)).xp
    param.data = xp.full(param.shape, value, dtype=param.dtype)
    return param


def zeros_(param: Parameter) -> Parameter:
    """Fill with zeros."""
    return constant_(param, 0.0)


def ones_(param: Parameter) -> Parameter:
    """Fill with ones."""
    return constant_(param, 1.0)


def kaiming_uniform_(
    param: Parameter,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    rng: Any = None,
) -> Parameter:
    """He initialisation, uniform: ``U(-b, b)`` with ``b = gain * sqrt(3 / fan)``."""
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / _fan(param, mode))
    return uniform_(param, -bound, bound, rng=rng)


def kaiming_normal_(
    param: Parameter,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    rng: Any = None,
) -> Parameter:
    """He initialisation, normal: ``N(0, s^2)`` with ``s = gain / sqrt(fan)``."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(param, mode))
    return normal_(param, 0.0, std, rng=rng)


def xavier_uniform_(param: Parameter, gain: float = 1.0, rng: Any = None) -> Parameter:
    """Glorot initialisation, uniform: ``b = gain * sqrt(6 / (fan_in + fan_out))``."""
    fan_in, fan_out = fans(param.shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(param, -bound, bound, rng=rng)


def xavier_normal_(param: Parameter, gain: float = 1.0, rng: Any = None) -> Parameter:
    """Glorot initialisation, normal: ``s = gain * sqrt(2 / (fan_in + fan_out))``."""
    fan_in, fan_out = fans(param.shape)
    return normal_(param, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), rng=rng)


def lecun_uniform_(param: Parameter, rng: Any = None) -> Parameter:
    """LeCun initialisation, uniform: ``b = sqrt(3 / fan_in)``."""
    bound = math.sqrt(3.0 / fans(param.shape)[0])
    return uniform_(param, -bound, bound, rng=rng)


def lecun_normal_(param: Parameter, rng: Any = None) -> Parameter:
    """LeCun initialisation, normal: ``s = sqrt(1 / fan_in)``."""
    return normal_(param, 0.0, math.sqrt(1.0 / fans(param.shape)[0]), rng=rng)


def empty_parameter(shape: tuple[int, ...], dtype: Any = "float32") -> Parameter:
    """A zero-filled Parameter of ``shape`` on the active backend (then initialise it)."""
    backend = backends.current()
    return Parameter(backend.xp.zeros(shape, dtype=_backend_dtype(backend, dtype)))


def default_layer_init_(
    weight: Parameter, bias: Parameter | None, fan_in: int, rng: Any = None
) -> None:
    """PyTorch's default for Conv2d and Linear.

    ``kaiming_uniform_(weight, a=sqrt(5))`` (which is ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``)
    then ``bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, both from the same generator,
    weight first, as PyTorch draws them.
    """
    generator = backends.host_rng(rng)
    kaiming_uniform_(weight, a=math.sqrt(5), rng=generator)
    if bias is not None:
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        uniform_(bias, -bound, bound, rng=generator)


def _backend_dtype(backend: backends.Backend, dtype: Any) -> Any:
    name = backends.dtype_name(dtype)
    if name not in ("float32", "float64"):
        raise ValueError(f"parameters must be float32 or float64, got dtype {dtype!r}")
    return getattr(backend.xp, name)
