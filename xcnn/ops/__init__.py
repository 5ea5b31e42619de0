"""Pure forward/backward functions: the functional API under every layer.

Each op is written once against the array API standard; what the standard
lacks (strided views, scatter-add, CUDA kernels) sits behind a dispatcher in
``xcnn.ops._dispatch`` with a standard-only twin.
"""

from xcnn.ops._dispatch import standard_only
from xcnn.ops._shapes import output_size
from xcnn.ops.conv import conv2d, conv2d_backward
from xcnn.ops.im2col import col2im, im2col

__all__ = ["im2col", "conv2d_backward", "conv2d", "col2im", "output_size", "standard_only"]
