"""Task heads: what sits between the backbone's output and a task's prediction.

* :class:`ASPPHead` for dense (pixel-wise) tasks: DeepLab-v2's atrous spatial pyramid pooling,
  the head of the published AdaShare/AutoMTL experiments. Parallel branches, each a dilated
  3x3 convolution followed by two 1x1 convolutions, whose outputs are *summed* (DeepLab-v2
  sums its branches; the published heads use rates 6, 12, 18, 24 and 1024 hidden channels).
  The sum is upsampled (bilinear) to ``output_size``, normally the input image's size.
* :class:`ClassificationHead` for image-level tasks: global average pooling and a linear layer.

Any ``nn.Module`` can replace them (``make_task(..., head=my_module)``).
"""

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from automtl.errors import ConfigError

#: Dilation rates of the published ASPP heads (DeepLab-v2 ASPP-L).
DEFAULT_RATES = (6, 12, 18, 24)
#: Hidden width of each branch in the published heads.
DEFAULT_HIDDEN = 1024
DEFAULT_DROPOUT = 0.5


def _check_positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return value


def check_output_size(output_size) -> Optional[List[int]]:
    """``None`` or ``(H, W)`` of positive ints, as a list (JSON-able, TorchScript-friendly)."""
    if output_size is None:
        return None
    if isinstance(output_size, int) and not isinstance(output_size, bool):
        output_size = (output_size, output_size)
    if not isinstance(output_size, (list, tuple)) or len(output_size) != 2:
        raise ConfigError(f"output_size must be (height, width), got {output_size!r}")
    return [_check_positive_int(s, "output_size") for s in output_size]


class ASPPBranch(nn.Sequential):
    """One pyramid level: dilated 3x3 conv -> ReLU -> dropout -> 1x1 -> ReLU -> dropout -> 1x1.

    Padding equals the dilation, so the spatial size is kept at any input size (on a map
    smaller than the rate the off-centre taps read only padding, and the branch acts as a
    1x1 convolution)."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int, rate: int, dropout: float):
        super().__init__(
            nn.Conv2d(in_channels, hidden, kernel_size=3, padding=rate, dilation=rate),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(hidden, hidden, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(hidden, out_channels, kernel_size=1),
        )


class ASPPHead(nn.Module):
    """Sum of :class:`ASPPBranch` outputs, one per dilation rate, upsampled to ``output_size``.

    ``output_size=None`` keeps the backbone's resolution (losses and metrics then upsample
    the prediction to the target's size)."""

    output_size: List[int]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        rates: Sequence[int] = DEFAULT_RATES,
        hidden: int = DEFAULT_HIDDEN,
        dropout: float = DEFAULT_DROPOUT,
        output_size: Optional[Sequence[int]] = None,
    ):
        super().__init__()
        _check_positive_int(in_channels, "in_channels")
        _check_positive_int(out_channels, "out_channels")
        _check_positive_int(hidden, "the ASPP head's hidden width")
        rates = list(rates) if isinstance(rates, (list, tuple)) else rates
        if not isinstance(rates, list) or not rates:
            raise ConfigError(f"ASPP rates must be a non-empty list of positive integers, got {rates!r}")
        for rate in rates:
            _check_positive_int(rate, "every ASPP rate")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ConfigError(f"the ASPP head's dropout must be in [0, 1), got {dropout!r}")
        self.rates = tuple(rates)
        self.branches = nn.ModuleList(ASPPBranch(in_channels, hidden, out_channels, r, float(dropout)) for r in rates)
        size = check_output_size(output_size)
        self.output_size = size if size is not None else []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        first = True
        for branch in self.branches:
            y = branch(x)
            if first:
                out = y
                first = False
            else:
                out = out + y
        if len(self.output_size) == 2:
            out = F.interpolate(out, size=self.output_size, mode="bilinear", align_corners=False)
        return out

    def extra_repr(self) -> str:
        size = f", output_size={tuple(self.output_size)}" if self.output_size else ""
        return f"rates={self.rates}{size}"


class ClassificationHead(nn.Module):
    """Global average pooling over the spatial axes (when there are any), then a linear layer."""

    def __init__(self, in_channels: int, classes: int):
        super().__init__()
        _check_positive_int(in_channels, "in_channels")
        _check_positive_int(classes, "classes")
        self.fc = nn.Linear(in_channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() > 2:
            x = x.flatten(2).mean(-1)
        return self.fc(x)
