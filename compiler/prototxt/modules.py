"""Caffe layers with parameters that torch has no module for: ``Scale`` and ``Bias`` with a
learned parameter (a ``BatchNorm`` followed by a ``Scale`` becomes one
``nn.BatchNorm2d(affine=True)`` instead; these cover the other uses), SSD's ``Normalize``,
and PSPNet's frozen ``BN``."""

from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
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


class Normalize(nn.Module):
    """SSD's ``Normalize``: ``x / sqrt(sum(x**2) + eps)``, the sum over the channels at each
    position (over the whole sample with ``across_spatial``), times a learned scale per
    channel (one for all with ``channel_shared``)."""

    def __init__(self, channels: int, across_spatial: bool, channel_shared: bool, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1 if channel_shared else channels))
        self.across_spatial = across_spatial
        self.channel_shared = channel_shared
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squares = x * x
        if self.across_spatial:
            shape: List[int] = [x.size(0)] + [1] * (x.dim() - 1)
            norm = torch.sqrt(squares.reshape(x.size(0), -1).sum(1) + self.eps).reshape(shape)
        else:
            norm = torch.sqrt(squares.sum(1, keepdim=True) + self.eps)
        return x / norm * self.weight.reshape([1, -1] + [1] * (x.dim() - 2))

    def extra_repr(self) -> str:
        return f"channels={self.weight.numel()}, across_spatial={self.across_spatial}, eps={self.eps}"


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """PSPNet's ``BN`` with ``frozen: true``: it normalises with its stored statistics in
    training too, and its scale and shift do not learn (the fork sets their learning rates
    to 0). A ``BatchNorm2d``, so the compiler treats it as a normalisation layer."""

    def __init__(self, num_features: int, eps: float):
        super().__init__(num_features, eps=eps, affine=True, track_running_stats=True)
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
