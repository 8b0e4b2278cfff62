"""Operators run for several tasks in one call.

Inputs and outputs are *columns*: ``[B, n, ...]`` tensors whose column ``i`` is one task's
value (see :mod:`automtl.fastpath.values`). For each kind of operator:

* ``shared(op, columns)`` runs the backbone operator on every column: one call over the batch
  axis ``[B*n, ...]``, so that a column is normalised, pooled, ... on its own;
* ``own(copies, columns)`` runs copy ``i`` on column ``i`` (or every copy on the single column
  of ``[B, 1, ...]`` columns): one grouped call over the channel axis ``[B, n*C, ...]`` with the
  copies' parameters concatenated.

The copies' parameters are concatenated inside the forward pass, so they stay the parameters of
``vcn.copies[task]`` (gradients flow back to them; state dicts, derivation and policies are
untouched); the copy costs far less than the operator itself (see ``bench/supermodel_step.py``).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from automtl.compiler.skip import ConvSkip, ConvTransposeSkip, LinearSkip

_CONV_FN: Dict[int, Callable[..., torch.Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_TRANSPOSE_FN: Dict[int, Callable[..., torch.Tensor]] = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_CONV_TRANSPOSES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def flat(columns: torch.Tensor) -> torch.Tensor:
    """``[B, n, ...] -> [B*n, ...]`` (a view for contiguous columns)."""
    return columns.reshape((-1,) + tuple(columns.shape[2:]))


def unflat(data: torch.Tensor, batch: int) -> torch.Tensor:
    """``[B*n, ...] -> [B, n, ...]``."""
    return data.reshape((batch, -1) + tuple(data.shape[1:]))


def widen(columns: torch.Tensor, n: int) -> torch.Tensor:
    """``[B, 1, ...]`` columns repeated to ``[B, n, ...]`` (a copy: grouped operators read
    their groups' channels from memory)."""
    if columns.shape[1] == n:
        return columns
    return columns.expand((columns.shape[0], n) + tuple(columns.shape[2:])).contiguous()


def _cat(tensors: Sequence[Optional[torch.Tensor]]) -> Optional[torch.Tensor]:
    if tensors[0] is None:
        return None
    return tensors[0] if len(tensors) == 1 else torch.cat(list(tensors))  # type: ignore[arg-type]


# -- convolution --------------------------------------------------------------------------
def stacked_conv(
    columns: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[Optional[torch.Tensor]],
    stride,
    padding,
    dilation,
    groups: int,
) -> torch.Tensor:
    """Convolution ``i`` (``weights[i]``, ``biases[i]``) on column ``i`` of ``[B, n, C, ...]``,
    or on the one column of ``[B, 1, C, ...]``; returns ``[B, n, C', ...]``."""
    n = len(weights)
    batch, dims = columns.shape[0], weights[0].dim() - 2
    conv = _CONV_FN[dims]
    weight, bias = _cat(weights), _cat(biases)
    if columns.shape[1] == 1 and groups == 1:
        # every copy reads the same input: one dense convolution with the filters stacked
        out = conv(columns.reshape((batch,) + tuple(columns.shape[2:])), weight, bias, stride, padding, dilation, 1)
    else:
        x = widen(columns, n)
        x = x.reshape((batch, n * x.shape[2]) + tuple(x.shape[3:]))
        out = conv(x, weight, bias, stride, padding, dilation, groups * n)
    return out.reshape((batch, n, weights[0].shape[0]) + tuple(out.shape[2:]))


class ConvOperator:
    """``nn.Conv1d/2d/3d`` (any groups, dilation, padding and padding mode)."""

    name = "convolution"

    @staticmethod
    def covers(op: nn.Module) -> bool:
        return type(op) in _CONVS

    @staticmethod
    def shared(op: nn.Module, columns: torch.Tensor) -> torch.Tensor:
        return unflat(op(flat(columns)), columns.shape[0])

    @staticmethod
    def own(copies: Sequence[nn.Module], columns: torch.Tensor) -> torch.Tensor:
        first = copies[0]
        padding = first.padding
        if first.padding_mode != "zeros":
            columns = unflat(
                F.pad(flat(columns), first._reversed_padding_repeated_twice, mode=first.padding_mode),
                columns.shape[0],
            )
            padding = 0
        return stacked_conv(
            columns,
            [c.weight for c in copies],
            [c.bias for c in copies],
            first.stride,
            padding,
            first.dilation,
            first.groups,
        )


class ConvTransposeOperator:
    """``nn.ConvTranspose1d/2d/3d``: the copies' filters are concatenated along their input
    channels (grouped) or, for one shared input, along their output channels."""

    name = "transposed convolution"

    @staticmethod
    def covers(op: nn.Module) -> bool:
        return type(op) in _CONV_TRANSPOSES

    @staticmethod
    def shared(op: nn.Module, columns: torch.Tensor) -> torch.Tensor:
        return unflat(op(flat(columns)), columns.shape[0])

    @staticmethod
    def own(copies: Sequence[nn.Module], columns: torch.Tensor) -> torch.Tensor:
        n, first = len(copies), copies[0]
        batch = columns.shape[0]
        conv = _CONV_TRANSPOSE_FN[len(first.kernel_size)]
        bias = _cat([c.bias for c in copies])
        geometry = (first.stride, first.padding, first.output_padding)
        if columns.shape[1] == 1 and first.groups == 1:
            weight = torch.cat([c.weight for c in copies], dim=1)
            out = conv(columns.reshape((batch,) + tuple(columns.shape[2:])), weight, bias, *geometry, 1, first.dilation)
        else:
            x = widen(columns, n)
            x = x.reshape((batch, n * x.shape[2]) + tuple(x.shape[3:]))
            weight = _cat([c.weight for c in copies])
            out = conv(x, weight, bias, *geometry, first.groups * n, first.dilation)
        return out.reshape((batch, n, first.out_channels) + tuple(out.shape[2:]))


# -- linear -------------------------------------------------------------------------------
def stacked_linear(
    columns: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[Optional[torch.Tensor]]
) -> torch.Tensor:
    """Linear map ``i`` on column ``i`` of ``[B, n, ..., F]`` (or on the one column of
    ``[B, 1, ..., F]``); returns ``[B, n, ..., F']``."""
    n = len(weights)
    batch, out_features = columns.shape[0], weights[0].shape[0]
    if n == 1:
        return F.linear(columns, weights[0], biases[0])
    if columns.shape[1] == 1 and columns.dim() == 3:
        # one input for every copy: one matrix product with the copies' rows stacked
        out = F.linear(columns[:, 0], _cat(weights), _cat(biases))  # type: ignore[arg-type]
        return out.reshape(batch, n, out_features)
    x = columns.expand((batch, n) + tuple(columns.shape[2:]))
    out = torch.einsum("bn...f,nof->bn...o", x, torch.stack(list(weights)))
    if biases[0] is not None:
        out = out + torch.stack(list(biases)).reshape((1, n) + (1,) * (out.dim() - 3) + (out_features,))
    return out


class LinearOperator:
    """``nn.Linear`` on inputs of any rank."""

    name = "linear"

    @staticmethod
    def covers(op: nn.Module) -> bool:
        return type(op) is nn.Linear

    @staticmethod
    def shared(op: nn.Module, columns: torch.Tensor) -> torch.Tensor:
        return unflat(op(flat(columns)), columns.shape[0])

    @staticmethod
    def own(copies: Sequence[nn.Module], columns: torch.Tensor) -> torch.Tensor:
        return stacked_linear(columns, [c.weight for c in copies], [c.bias for c in copies])


# -- batch normalisation ------------------------------------------------------------------
def _uses_batch_statistics(bn: nn.Module) -> bool:
    return bn.training or (bn.running_mean is None and bn.running_var is None)


def _updates_running_statistics(bn: nn.Module) -> bool:
    return bn.training and bn.track_running_stats and bn.running_mean is not None


def _step_factor(bn: nn.Module) -> float:
    """Count one more batch and return the update factor, as ``_BatchNorm.forward`` does."""
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
    if bn.momentum is None:
        return 1.0 / float(bn.num_batches_tracked)
    return bn.momentum


def _channels(columns: torch.Tensor) -> torch.Tensor:
    """``[B, n, C, ...] -> [B, n*C, ...]``: every (column, channel) pair becomes a channel, so
    one normalisation keeps each column's statistics apart."""
    return columns.reshape((columns.shape[0], columns.shape[1] * columns.shape[2]) + tuple(columns.shape[3:]))


def _batch_statistics(x: torch.Tensor, weight, bias, eps: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalise ``x`` with its batch statistics; also return the per-channel mean and the
    unbiased variance (running buffers updated with momentum 1 become exactly those)."""
    mean = torch.zeros(x.shape[1], dtype=torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype, device=x.device)
    var = torch.ones_like(mean)
    y = F.batch_norm(x, mean, var, weight, bias, True, 1.0, eps)
    return y, mean, var


class BatchNormOperator:
    """``nn.BatchNorm1d/2d/3d``: batch statistics per task (and per call of the shared layer),
    running statistics updated exactly as the per-task calls would."""

    name = "batch normalisation"

    @staticmethod
    def covers(op: nn.Module) -> bool:
        return type(op) in _BATCHNORMS

    @staticmethod
    def shared(op: nn.Module, columns: torch.Tensor) -> torch.Tensor:
        n = columns.shape[1]
        if n == 1 or not _uses_batch_statistics(op):
            return unflat(op(flat(columns)), columns.shape[0])
        # n calls of the layer, one per column: per-column statistics, running buffers
        # updated n times in column order
        x = _channels(columns)
        weight = op.weight.repeat(n) if op.weight is not None else None
        bias = op.bias.repeat(n) if op.bias is not None else None
        if _updates_running_statistics(op):
            y, mean, var = _batch_statistics(x, weight, bias, op.eps)
            with torch.no_grad():
                for m, v in zip(mean.view(n, -1), var.view(n, -1)):
                    factor = _step_factor(op)
                    op.running_mean.mul_(1 - factor).add_(m, alpha=factor)
                    op.running_var.mul_(1 - factor).add_(v, alpha=factor)
        else:
            y = F.batch_norm(x, None, None, weight, bias, True, 0.0, op.eps)
        return y.reshape(columns.shape)

    @staticmethod
    def own(copies: Sequence[nn.Module], columns: torch.Tensor) -> torch.Tensor:
        n = len(copies)
        first = copies[0]
        if not BatchNormOperator.alike_now(copies):  # e.g. one copy put in eval mode on its own
            wide = widen(columns, n)
            return torch.stack([c(wide[:, i]) for i, c in enumerate(copies)], dim=1)
        x = _channels(widen(columns, n))
        weight = _cat([c.weight for c in copies])
        bias = _cat([c.bias for c in copies])
        if not _uses_batch_statistics(first):
            y = F.batch_norm(
                x, _cat([c.running_mean for c in copies]), _cat([c.running_var for c in copies]),
                weight, bias, False, 0.0, first.eps,
            )
        elif not _updates_running_statistics(first):
            y = F.batch_norm(x, None, None, weight, bias, True, 0.0, first.eps)
        elif first.momentum is not None:
            running_mean = _cat([c.running_mean for c in copies])
            running_var = _cat([c.running_var for c in copies])
            y = F.batch_norm(x, running_mean, running_var, weight, bias, True, first.momentum, first.eps)
            with torch.no_grad():
                counters = [c.num_batches_tracked for c in copies if c.num_batches_tracked is not None]
                if counters:
                    torch._foreach_add_(counters, 1)
                if n > 1:
                    torch._foreach_copy_([c.running_mean for c in copies], list(running_mean.chunk(n)))
                    torch._foreach_copy_([c.running_var for c in copies], list(running_var.chunk(n)))
        else:  # cumulative average: each copy's factor depends on its own batch count
            y, mean, var = _batch_statistics(x, weight, bias, first.eps)
            with torch.no_grad():
                for c, m, v in zip(copies, mean.view(n, -1), var.view(n, -1)):
                    factor = _step_factor(c)
                    c.running_mean.mul_(1 - factor).add_(m, alpha=factor)
                    c.running_var.mul_(1 - factor).add_(v, alpha=factor)
        return y.reshape((columns.shape[0], n) + tuple(columns.shape[2:]))

    @staticmethod
    def alike(copies: Sequence[nn.Module]) -> bool:
        return all(c.affine == copies[0].affine and c.num_features == copies[0].num_features for c in copies)

    @staticmethod
    def alike_now(copies: Sequence[nn.Module]) -> bool:
        """The copies run as one call only while their mode and settings agree."""
        first = copies[0]
        key = lambda c: (c.training, c.track_running_stats, c.momentum, c.eps, c.running_mean is None)  # noqa: E731
        return all(key(c) == key(first) for c in copies)


# -- group normalisation ------------------------------------------------------------------
class GroupNormOperator:
    """``nn.GroupNorm``: per-sample already; the copies run as one group norm over
    ``n*C`` channels in ``n*G`` groups."""

    name = "group normalisation"

    @staticmethod
    def covers(op: nn.Module) -> bool:
        return type(op) is nn.GroupNorm

    @staticmethod
    def shared(op: nn.Module, columns: torch.Tensor) -> torch.Tensor:
        return unflat(op(flat(columns)), columns.shape[0])

    @staticmethod
    def own(copies: Sequence[nn.Module], columns: torch.Tensor) -> torch.Tensor:
        n = len(copies)
        first = copies[0]
        x = _channels(widen(columns, n))
        y = F.group_norm(x, n * first.num_groups, _cat([c.weight for c in copies]), _cat([c.bias for c in copies]), first.eps)
        return y.reshape((columns.shape[0], n) + tuple(columns.shape[2:]))

    @staticmethod
    def alike(copies: Sequence[nn.Module]) -> bool:
        first = copies[0]
        return all((c.num_groups, c.eps, c.affine) == (first.num_groups, first.eps, first.affine) for c in copies)


# -- the prototxt front end's Scale / Bias -------------------------------------------------
def _prototxt_affine_types() -> Tuple[type, ...]:
    try:
        from automtl.compiler.prototxt.modules import Bias, Scale
    except ImportError:  # pragma: no cover - the front end is part of the package
        return ()
    return (Scale, Bias)


class AffineOperator:
    """The prototxt ``Scale``/``Bias`` layers (Caffe's affine after a plain ``BatchNorm``):
    the copies' factors stacked on the task axis and broadcast."""

    name = "scale/bias"

    @staticmethod
    def covers(op: nn.Module) -> bool:
        return type(op) in _prototxt_affine_types()

    @staticmethod
    def fits(op: nn.Module, in_shape: Optional[torch.Size]) -> str:
        if in_shape is None or len(op.view) >= len(in_shape):
            return "its factors line up with the batch dimension"
        return ""

    @staticmethod
    def shared(op: nn.Module, columns: torch.Tensor) -> torch.Tensor:
        return unflat(op(flat(columns)), columns.shape[0])

    @staticmethod
    def own(copies: Sequence[nn.Module], columns: torch.Tensor) -> torch.Tensor:
        first = copies[0]
        rank = columns.dim() - 1  # one task's rank, batch included
        shape = (len(copies),) + (1,) * (rank - 1 - len(first.view)) + tuple(first.view)
        y = columns
        if getattr(first, "weight", None) is not None:
            y = y * torch.stack([c.weight for c in copies]).reshape(shape)
        if first.bias is not None:
            y = y + torch.stack([c.bias for c in copies]).reshape(shape)
        return y  # Scale always has a weight, Bias a bias: y is a new tensor

    @staticmethod
    def alike(copies: Sequence[nn.Module]) -> bool:
        key = lambda c: (list(c.view), getattr(c, "weight", None) is None, c.bias is None)  # noqa: E731
        return all(key(c) == key(copies[0]) for c in copies)


OPERATORS = (ConvOperator, ConvTransposeOperator, LinearOperator, BatchNormOperator, GroupNormOperator, AffineOperator)


def operator_for(op: nn.Module):
    """The task-batched form of ``op``, or None where there is none."""
    for kind in OPERATORS:
        if kind.covers(op):
            return kind
    return None


def copies_alike(kind, copies: Sequence[nn.Module]) -> bool:
    """Whether the copies can run as one call (same type and configuration)."""
    if any(type(c) is not type(copies[0]) for c in copies):
        return False
    check = getattr(kind, "alike", None)
    if check is not None:
        return check(copies)
    if kind in (ConvOperator, ConvTransposeOperator):
        first = copies[0]
        key = lambda c: (c.stride, c.padding, c.output_padding, c.dilation, c.groups, c.padding_mode, c.bias is None)  # noqa: E731
        return all(key(c) == key(first) for c in copies)
    return all((c.bias is None) == (copies[0].bias is None) for c in copies)


# -- skips --------------------------------------------------------------------------------
IDENTITY, CONV_TAPS, CONV_PROJECTION, LINEAR_PROJECTION = "identity", "conv taps", "conv projection", "linear projection"


def skip_kind(skips: Sequence[nn.Module]) -> Optional[str]:
    """How the tasks' skips run together, or None where they cannot."""
    first = skips[0]
    if any(type(s) is not type(first) for s in skips):
        return None
    if type(first) is nn.Identity:
        return IDENTITY
    if type(first) in (ConvSkip, ConvTransposeSkip):
        geometry = lambda s: (s.kernel_size, s.stride, s.padding, s.dilation, getattr(s, "output_padding", None), s.proj is None)  # noqa: E731
        if any(geometry(s) != geometry(first) for s in skips):
            return None
        return CONV_TAPS if first.proj is None else CONV_PROJECTION
    if type(first) is LinearSkip:
        return LINEAR_PROJECTION
    return None


def project(kind: str, skips: Sequence[nn.Module], columns: torch.Tensor) -> torch.Tensor:
    """The per-task projection of ``CONV_PROJECTION``/``LINEAR_PROJECTION`` skips, on columns
    that already went through the skips' ``taps`` (conv) or are the input (linear)."""
    if kind == LINEAR_PROJECTION:
        return stacked_linear(columns, [s.proj.weight for s in skips], [None] * len(skips))
    stride = skips[0].stride if type(skips[0]) is ConvSkip else 1  # ConvSkip strides as it projects
    return stacked_conv(columns, [s.proj.weight for s in skips], [None] * len(skips), stride, 0, 1, 1)
