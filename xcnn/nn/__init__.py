"""Stateful layers, containers and losses (see ``xcnn.nn.module`` for the contract)."""

from xcnn.nn import init, utils
from xcnn.nn.activation import LeakyReLU, ReLU, Sigmoid, Tanh
from xcnn.nn.batchnorm import BatchNorm1d, BatchNorm2d
from xcnn.nn.containers import Identity, ModuleList, Residual, Sequential
from xcnn.nn.conv import Conv2d
from xcnn.nn.dropout import Dropout
from xcnn.nn.flatten import Flatten
from xcnn.nn.linear import Linear
from xcnn.nn.loss import CrossEntropyLoss, MSELoss
from xcnn.nn.module import Module, Parameter
from xcnn.nn.pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from xcnn.nn.softmax import LogSoftmax, Softmax

__all__ = [
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "MaxPool2d",
    "Conv2d",
    "CrossEntropyLoss",
    "Dropout",
    "Flatten",
    "Identity",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "MSELoss",
    "ReLU",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "Module",
    "ModuleList",
    "Parameter",
    "Residual",
    "Sequential",
    "init",
    "utils",
]
