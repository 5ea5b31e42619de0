"""Helpers for checking layers: a numerical gradient check users can run on their own.

Examples
--------
>>> import xcnn
>>> from xcnn import nn
>>> from xcnn.testing import gradcheck
>>> layer = nn.Linear(3, 2).double()
>>> x = xcnn.backends.current().asarray([[0.1, -0.2, 0.3]], dtype="float64")
>>> gradcheck(layer, x)
True
"""

from xcnn.testing.gradcheck import GradcheckError, gradcheck
from xcnn.testing.torch_reference import to_torch

__all__ = ["GradcheckError", "gradcheck", "to_torch"]
