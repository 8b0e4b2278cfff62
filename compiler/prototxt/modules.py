"""Caffe layers with parameters that torch has no module for: ``Scale`` and ``Bias`` with a
learned parameter. (A ``BatchNorm`` followed by a ``Scale`` becomes one
``nn.BatchNorm2d(affine=True)`` instead; these cover the other uses.)"""

from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn


def _broadcast_shape(shape: Sequence[int], trailing: int) -> List[int]:
    return list(shape) + [1] * trailing


class Scale(nn.Module):
    """``y = x * weight (+ bias)``; ``weight`` covers ``len(shape)`` axes of ``x`` from the
    layer's axis on and is broadcast over the ``trailing`` axes after them."""

    def __init__(self, shape: Sequence[int], trailing: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(tuple(shape)))
        self.bias = nn.Parameter(torch.zeros(tuple(shape))) if bias else None
        self.view = _broadcast_shape(shape, trailing)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.weight.reshape(self.view)
        if self.bias is not None:
            y = y + self.bias.reshape(self.view)
        return y

    def extra_repr(self) -> str:
        return f"shape={tuple(self.weight.shape)}, bias={self.bias is not None}"


class Bias(nn.Module):
    """``y = x + bias``, broadcast as in :class:`Scale`."""

    def __init__(self, shape: Sequence[int], trailing: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(tuple(shape)))
        self.view = _broadcast_shape(shape, trailing)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias.reshape(self.view)

    def extra_repr(self) -> str:
        return f"shape={tuple(self.bias.shape)}"
