"""Stateful layers, containers and losses (see ``xcnn.nn.module`` for the contract)."""

from xcnn.nn import init
from xcnn.nn.containers import Residual, Sequential
from xcnn.nn.conv import Conv2d
from xcnn.nn.module import Module, Parameter

__all__ = ["Conv2d", "Module", "Parameter", "Residual", "Sequential", "init"]
