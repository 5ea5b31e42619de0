"""xcnn: a small CNN framework written once against the Python array API standard.

The same layers train on NumPy (CPU) and CuPy (CUDA GPU); the backend is picked
by ``XCNN_BACKEND`` or :func:`xcnn.backends.use`. Subpackages are imported on
first use, so ``import xcnn`` stays fast and never imports CuPy.
"""

from __future__ import annotations

import importlib
from typing import Any

from xcnn import backends
from xcnn.backends import manual_seed

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "Tensor",
    "autograd",
    "backends",
    "cat",
    "enable_grad",
    "flatten",
    "is_grad_enabled",
    "no_grad",
    "set_grad_enabled",
    "stack",
    "summary",
    "tensor",
    "data",
    "distributed",
    "evaluate",
    "fit",
    "get_num_threads",
    "load",
    "manual_seed",
    "models",
    "nn",
    "onnx",
    "ops",
    "optim",
    "plot",
    "plot_history",
    "save",
    "set_num_threads",
    "testing",
    "History",
    "TrainingDiverged",
]

_SUBMODULES = {
    "autograd",
    "data",
    "distributed",
    "models",
    "nn",
    "onnx",
    "ops",
    "optim",
    "plot",
    "testing",
}
_FUNCTIONS = {
    "Tensor": "xcnn.autograd",
    "cat": "xcnn.autograd",
    "enable_grad": "xcnn.autograd",
    "flatten": "xcnn.autograd",
    "is_grad_enabled": "xcnn.autograd",
    "no_grad": "xcnn.autograd",
    "set_grad_enabled": "xcnn.autograd",
    "stack": "xcnn.autograd",
    "tensor": "xcnn.autograd",
    "fit": "xcnn.train",
    "evaluate": "xcnn.train",
    "History": "xcnn.train",
    "plot_history": "xcnn.train",
    "TrainingDiverged": "xcnn.train",
    "save": "xcnn.io",
    "load": "xcnn.io",
    "get_num_threads": "xcnn.ops._threads",
    "set_num_threads": "xcnn.ops._threads",
    "summary": "xcnn._summary",
}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"xcnn.{name}")
    if name in _FUNCTIONS:
        return getattr(importlib.import_module(_FUNCTIONS[name]), name)
    raise AttributeError(f"module 'xcnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
