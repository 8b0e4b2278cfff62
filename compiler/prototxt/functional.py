"""Caffe layer semantics that have no single torch operator, as small functions.

Each is one ``call_function`` node in the built graph (so a layer stays one node), written to
script with TorchScript and export to ONNX. Sizes are computed from the input at run time, so
a net built at one input size runs at another.
"""

from __future__ import annotations

import math
from typing import List

import torch
import torch.fx
import torch.nn.functional as F


def crop_like(x: torch.Tensor, reference: torch.Tensor, axis: int, offsets: List[int]) -> torch.Tensor:
    """Caffe ``Crop``: the window of ``x`` starting at ``offsets`` (one per axis from ``axis``)
    with the size of ``reference`` on those axes."""
    for i in range(axis, x.dim()):
        x = x.narrow(i, offsets[i - axis], reference.size(i))
    return x


def reshape(x: torch.Tensor, dims: List[int], start: int, end: int) -> torch.Tensor:
    """Caffe ``Reshape`` of axes ``[start, end)``: a 0 in ``dims`` keeps that input axis, one
    -1 is inferred."""
    shape: List[int] = []
    for i in range(start):
        shape.append(x.size(i))
    for i, d in enumerate(dims):
        shape.append(x.size(start + i) if d == 0 else d)
    for i in range(end, x.dim()):
        shape.append(x.size(i))
    return x.reshape(shape)


def _trailing_ones(t: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    shape: List[int] = []
    for i in range(t.dim()):
        shape.append(t.size(i))
    for _ in range(x.dim() - axis - t.dim()):
        shape.append(1)
    return t.reshape(shape)


def scale_by(x: torch.Tensor, scale: torch.Tensor, axis: int) -> torch.Tensor:
    """Caffe ``Scale`` with two bottoms: ``x`` times ``scale``, whose axes line up with ``x``'s
    from ``axis`` on (broadcast over the rest)."""
    return x * _trailing_ones(scale, x, axis)


def bias_by(x: torch.Tensor, bias: torch.Tensor, axis: int) -> torch.Tensor:
    """Caffe ``Bias`` with two bottoms (see :func:`scale_by`)."""
    return x + _trailing_ones(bias, x, axis)


def power(x: torch.Tensor, exponent: float, scale: float, shift: float) -> torch.Tensor:
    """Caffe ``Power``: ``(shift + scale * x) ** exponent``."""
    return torch.pow(shift + scale * x, exponent)


def exp(x: torch.Tensor, base: float, scale: float, shift: float) -> torch.Tensor:
    """Caffe ``Exp``: ``base ** (shift + scale * x)`` (base -1 means e)."""
    log_base = 1.0 if base == -1.0 else math.log(base)
    return torch.exp((shift + scale * x) * log_base)


def log(x: torch.Tensor, base: float, scale: float, shift: float) -> torch.Tensor:
    """Caffe ``Log``: ``log_base(shift + scale * x)`` (base -1 means e)."""
    log_base = 1.0 if base == -1.0 else math.log(base)
    return torch.log(shift + scale * x) / log_base


def threshold(x: torch.Tensor, value: float) -> torch.Tensor:
    """Caffe ``Threshold``: 1 where ``x > value``, else 0."""
    return (x > value).to(x.dtype)


def swish(x: torch.Tensor, beta: float) -> torch.Tensor:
    """Caffe ``Swish``: ``x * sigmoid(beta * x)``."""
    return x * torch.sigmoid(beta * x)


def lrn_within_channel(x: torch.Tensor, size: int, alpha: float, beta: float) -> torch.Tensor:
    """Caffe ``LRN`` with ``norm_region: WITHIN_CHANNEL``: ``x * (1 + alpha * m) ** -beta``,
    ``m`` the mean of ``x**2`` over the ``size x size`` window (zero padded, padding counted)."""
    pad = (size - 1) // 2
    mean_sq = F.avg_pool2d(x * x, size, 1, pad, count_include_pad=True)
    return x * torch.pow(1.0 + alpha * mean_sq, -beta)


def interp(x: torch.Tensor, height: int, width: int, shrink: int, zoom: int) -> torch.Tensor:
    """The ``Interp`` layer of the DeepLab/PSPNet forks: bilinear resize with the corners
    aligned, to (height, width) when given, else shrunk then zoomed by integer factors."""
    if height > 0 and width > 0:
        out_h, out_w = height, width
    else:
        out_h = (x.size(2) - 1) // shrink + 1
        out_w = (x.size(3) - 1) // shrink + 1
        out_h = out_h + (out_h - 1) * (zoom - 1)
        out_w = out_w + (out_w - 1) * (zoom - 1)
    return F.interpolate(x, size=[out_h, out_w], mode="bilinear", align_corners=True)


def shuffle_channel(x: torch.Tensor, group: int) -> torch.Tensor:
    """ShuffleNet's ``ShuffleChannel``: the channels seen as (group, C / group), transposed."""
    n, c = x.size(0), x.size(1)
    return x.reshape(n, group, c // group, -1).transpose(1, 2).reshape(x.shape)


def _upsampled_size(x: torch.Tensor, scale_h: int, scale_w: int, pad_h: int, pad_w: int, height: int, width: int) -> List[int]:
    if height > 0:
        return [height, width]
    return [x.size(2) * scale_h - pad_h, x.size(3) * scale_w - pad_w]


def max_unpool(
    x: torch.Tensor, mask: torch.Tensor, scale_h: int, scale_w: int, pad_h: int, pad_w: int, height: int, width: int
) -> torch.Tensor:
    """SegNet's ``Upsample`` with the pooling mask: an output of zeros where value ``i`` of each
    channel goes to position ``mask[i]`` (an index into the output's H x W); where two values
    name one position the later one stays, as in Caffe's loop."""
    size = _upsampled_size(x, scale_h, scale_w, pad_h, pad_w, height, width)
    n, c, count = x.size(0), x.size(1), x.size(2) * x.size(3)
    index = mask.reshape(n, c, count).long()
    order = torch.arange(count, device=x.device).expand(n, c, count)
    # the last value (in input order) sent to each output position, -1 where none is
    last = torch.full((n, c, size[0] * size[1]), -1, dtype=torch.long, device=x.device)
    exporting = False
    if not torch.jit.is_scripting():
        exporting = torch.onnx.is_in_onnx_export()
    if exporting:  # the exporter mangles scatter_reduce; ONNX Runtime scatters in order, the last wins
        last = last.scatter(2, index, order)
    else:
        last = last.scatter_reduce(2, index, order, "amax", include_self=True)
    picked = x.reshape(n, c, count).gather(2, last.clamp(min=0))
    return torch.where(last >= 0, picked, torch.zeros_like(picked)).reshape(n, c, size[0], size[1])


def upsample_nearest(x: torch.Tensor, scale_h: int, scale_w: int, pad_h: int, pad_w: int, height: int, width: int) -> torch.Tensor:
    """``Upsample`` with one bottom: each value repeated scale_h x scale_w times (to
    height x width when given: nearest neighbour)."""
    return F.interpolate(x, size=_upsampled_size(x, scale_h, scale_w, pad_h, pad_w, height, width), mode="nearest")


# Re-tracing a built model with torch.fx keeps each of these as one call.
for _name in (
    "crop_like", "reshape", "scale_by", "bias_by", "power", "exp", "log", "threshold", "swish", "lrn_within_channel", "interp",
    "shuffle_channel", "max_unpool", "upsample_nearest",
):
    torch.fx.wrap(_name)
del _name
