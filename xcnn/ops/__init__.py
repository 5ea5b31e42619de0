"""Pure forward/backward functions: the functional API under every layer.

Each op is written once against the array API standard; what the standard
lacks (strided views, scatter-add, CUDA kernels) sits behind a dispatcher in
``xcnn.ops._dispatch`` with a standard-only twin.
"""

from xcnn.ops._dispatch import standard_only
from xcnn.ops._geometry import output_size
from xcnn.ops._recycle import empty_cache
from xcnn.ops.activation import (
    leaky_relu,
    leaky_relu_backward,
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    tanh,
    tanh_backward,
)
from xcnn.ops.batchnorm import (
    batch_norm_backward,
    batch_norm_eval,
    batch_norm_eval_backward,
    batch_norm_train,
    batch_norm_update_running,
)
from xcnn.ops.conv import conv2d, conv2d_backward
from xcnn.ops.dropout import dropout, dropout_backward
from xcnn.ops.im2col import col2im, im2col
from xcnn.ops.linear import linear, linear_backward
from xcnn.ops.loss import (
    log_softmax,
    mse_loss,
    mse_loss_backward,
    softmax,
    softmax_cross_entropy,
    softmax_cross_entropy_backward,
)
from xcnn.ops.pool import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    max_pool2d,
    max_pool2d_backward,
)

__all__ = [
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "batch_norm_backward",
    "batch_norm_eval",
    "batch_norm_eval_backward",
    "batch_norm_train",
    "batch_norm_update_running",
    "max_pool2d",
    "max_pool2d_backward",
    "dropout",
    "dropout_backward",
    "empty_cache",
    "leaky_relu",
    "leaky_relu_backward",
    "linear",
    "linear_backward",
    "log_softmax",
    "mse_loss",
    "mse_loss_backward",
    "relu",
    "relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "softmax",
    "softmax_cross_entropy",
    "softmax_cross_entropy_backward",
    "tanh",
    "tanh_backward",
    "im2col",
    "conv2d_backward",
    "conv2d",
    "col2im",
    "output_size",
    "standard_only",
]
