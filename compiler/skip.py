"""The skip option of a VCN.

Where an operator keeps the shape of its input, the skip is the identity. Where it does not:

* a convolution's skip takes, at every output position, the input pixel under the centre tap
  of the kernel (stride, padding and dilation as the convolution's own, so the output size
  follows the convolution's size formula for any input size), then projects the channels
  with a 1x1 convolution (no bias) when the channel counts differ. For a "same"-padded
  strided convolution this is exactly ResNet's 1x1 strided down-sample;
* a transposed convolution's skip repeats every pixel ``stride`` times (nearest
  up-sampling), pads or crops to the output size, then projects channels the same way;
* a linear layer's skip is a linear projection (no bias) of the last dimension.
"""

from __future__ import annotations

import copy
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from automtl.errors import CompileError

_CONV_BY_DIMS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def _spatial_params(conv: nn.modules.conv._ConvNd) -> Tuple[List[int], List[int], List[int], List[int]]:
    kernel = list(conv.kernel_size)
    dilation = list(conv.dilation)
    if isinstance(conv.padding, str):  # 'same' / 'valid'
        same = conv.padding == "same"
        padding = [d * (k - 1) // 2 if same else 0 for k, d in zip(kernel, dilation)]
    else:
        padding = list(conv.padding)
    return kernel, list(conv.stride), padding, dilation


def _projection(conv: nn.modules.conv._ConvNd) -> Optional[nn.Module]:
    if conv.in_channels == conv.out_channels:
        return None
    return _CONV_BY_DIMS[len(conv.kernel_size)](conv.in_channels, conv.out_channels, 1, bias=False)


def _pad_one_axis(x: torch.Tensor, axis_from_end: int, before: int, after: int) -> torch.Tensor:
    pads: list[int] = [0, 0] * axis_from_end + [before, after]
    return F.pad(x, pads)


class ConvSkip(nn.Module):
    """Centre-tap down-sample (and 1x1 channel projection) matching a convolution's output.

    Written for TorchScript: lists, not tuples, and explicit branches per dimensionality.
    """

    def __init__(self, conv: nn.modules.conv._ConvNd):
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.dilation = _spatial_params(conv)
        self.proj = _projection(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.taps(x)
        proj = self.proj
        if proj is not None:
            return _conv(x, proj.weight, self.stride)  # the projection strides as it goes
        return _sample(x, self.stride)

    def taps(self, x: torch.Tensor) -> torch.Tensor:
        """The input cropped/padded to the centre taps (not yet strided or projected): the
        part that is the same for every task's skip, so a task-batched run does it once."""
        dims = len(self.kernel_size)
        for i in range(dims):
            axis = x.dim() - dims + i
            size = x.size(axis)
            k, s, p, d = self.kernel_size[i], self.stride[i], self.padding[i], self.dilation[i]
            n_out = (size + 2 * p - d * (k - 1) - 1) // s + 1
            start = d * ((k - 1) // 2) - p  # input index under the centre tap of output 0
            stop = start + (n_out - 1) * s + 1
            before = max(0, -start)
            after = max(0, stop - size)
            if before > 0 or after > 0:
                x = _pad_one_axis(x, dims - 1 - i, before, after)
            if start + before != 0 or stop - start != x.size(axis):
                x = x.narrow(axis, start + before, stop - start)
        return x


def _conv(x: torch.Tensor, weight: torch.Tensor, stride: list[int]) -> torch.Tensor:
    if weight.dim() == 3:
        return F.conv1d(x, weight, None, stride)
    if weight.dim() == 4:
        return F.conv2d(x, weight, None, stride)
    return F.conv3d(x, weight, None, stride)


def _all_ones(values: list[int]) -> bool:
    for v in values:  # no generator expressions: this must script
        if v != 1:
            return False
    return True


def _sample(x: torch.Tensor, stride: list[int]) -> torch.Tensor:
    """Every ``stride``-th element along the trailing dimensions (pooling with a 1-wide
    window: exports to ONNX and scripts as one operator)."""
    if _all_ones(stride):
        return x
    if len(stride) == 1:
        return F.max_pool1d(x, 1, stride)
    if len(stride) == 2:
        return F.max_pool2d(x, 1, stride)
    return F.max_pool3d(x, 1, stride)


class ConvTransposeSkip(nn.Module):
    """Nearest up-sampling by the stride, padded/cropped to a transposed convolution's output."""

    def __init__(self, conv: nn.modules.conv._ConvTransposeNd):
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.dilation = _spatial_params(conv)
        self.output_padding = list(conv.output_padding)
        self.proj = _projection(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.taps(x)
        proj = self.proj
        if proj is not None:
            x = proj(x)
        return x

    def taps(self, x: torch.Tensor) -> torch.Tensor:
        """The input up-sampled and padded/cropped to the output size (not yet projected): the
        part that is the same for every task's skip, so a task-batched run does it once."""
        dims = len(self.kernel_size)
        if not _all_ones(self.stride):
            x = F.interpolate(x, scale_factor=[float(s) for s in self.stride], mode="nearest")
        for i in range(dims):
            axis = x.dim() - dims + i
            size = x.size(axis) // self.stride[i]
            k, s, p, d = self.kernel_size[i], self.stride[i], self.padding[i], self.dilation[i]
            n_out = (size - 1) * s - 2 * p + d * (k - 1) + self.output_padding[i] + 1
            diff = n_out - size * s
            if diff > 0:
                x = _pad_one_axis(x, dims - 1 - i, diff // 2, diff - diff // 2)
            elif diff < 0:
                x = x.narrow(axis, (-diff) // 2, n_out)
        return x


class LinearSkip(nn.Module):
    """Projection of the last dimension (no bias) for a linear layer that changes width."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.proj = nn.Linear(in_features, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def build_skip(
    module: nn.Module,
    in_shape: Optional[torch.Size],
    out_shape: Optional[torch.Size],
    where: str,
) -> nn.Module:
    """The skip of ``module``: identity when it keeps the shape, else a down-sample (see the
    module docstring). ``where`` names the node for error messages."""
    for what, shape in (("input", in_shape), ("output", out_shape)):
        if shape is not None and shape.numel() == 0:
            raise CompileError(
                f"node '{where}' ({type(module).__name__}) has an empty {what} {_fmt(shape)} for the example "
                "input, so there is nothing for a task to share or skip. Use a larger example input, or "
                "change the layers before it (a kernel, stride or padding too large for its input)"
            )
    if in_shape is not None and in_shape == out_shape:
        return nn.Identity()
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        skip: nn.Module = ConvTransposeSkip(module)
    elif isinstance(module, nn.modules.conv._ConvNd):
        skip = ConvSkip(module)
    elif isinstance(module, nn.Linear):
        skip = LinearSkip(module.in_features, module.out_features)
    else:
        raise CompileError(
            f"node '{where}' ({type(module).__name__}) changes the shape from "
            f"{_fmt(in_shape)} to {_fmt(out_shape)}, and automtl builds a skip only for "
            "convolutions and linear layers. Leave this type out of `searchable`."
        )
    if in_shape is not None:
        got = _output_shape(skip, in_shape)
        if got != out_shape:
            raise CompileError(
                f"internal: the skip built for node '{where}' ({type(module).__name__}) gives "
                f"{_fmt(got)} instead of {_fmt(out_shape)}; please report this backbone"
            )
    return skip


def _output_shape(skip: nn.Module, in_shape: torch.Size) -> torch.Size:
    """The skip's output shape for ``in_shape``, from a copy on the meta device: no arithmetic,
    so checking the skips of a big backbone costs next to nothing."""
    with torch.no_grad():
        try:
            probe = copy.deepcopy(skip).to("meta")
            return probe(torch.empty(in_shape, device="meta")).shape
        except (NotImplementedError, RuntimeError):  # an op without a meta kernel: compute it
            return skip(torch.zeros(in_shape)).shape


def _fmt(shape: Optional[Sequence[int]]) -> str:
    return "?" if shape is None else "[" + ", ".join(str(int(s)) for s in shape) + "]"
