"""Shape checks and conversions shared by the losses and the metrics.

Dense predictions are ``[B, C, H, W]``. Targets come as ``[B, C, H, W]`` or, for one-channel
kinds, ``[B, H, W]``; segmentation targets as ``[B, H, W]`` or ``[B, 1, H, W]`` class indices.
An optional mask (``[B, H, W]``, ``[B, 1, H, W]`` or ``[B, C, H, W]``; bool or 0/1) marks the
valid pixels. A prediction at another resolution than its target is resized to it (bilinear),
so a head may stay at the backbone's resolution.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F

from automtl.errors import DataError


_CHECK_LABELS: contextvars.ContextVar[bool] = contextvars.ContextVar("automtl_check_labels", default=True)


@contextlib.contextmanager
def label_checks(enabled: bool) -> Iterator[None]:
    """Turn the label-value checks of the built-in losses on or off inside the block (each
    check reads the device: one synchronisation per loss and step)."""
    token = _CHECK_LABELS.set(bool(enabled))
    try:
        yield
    finally:
        _CHECK_LABELS.reset(token)


def checking_labels() -> bool:
    return _CHECK_LABELS.get()


def shape_str(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(int(s)) for s in t.shape) + "]"


def check_tensor(value, task: str, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise DataError(f"task '{task}': the {what} must be a torch.Tensor, got {type(value).__name__}")
    return value


def dense_target(pred: torch.Tensor, target: torch.Tensor, channels: int, task: str, kind: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Return ``(prediction resized to the target, target as [B, C, H, W] float)``."""
    check_tensor(pred, task, "prediction")
    check_tensor(target, task, "target")
    if target.dim() == 3 and channels == 1:
        target = target.unsqueeze(1)
    if pred.dim() != 4 or pred.shape[1] != channels:
        raise DataError(
            f"task '{task}': a {kind} prediction must be [batch, {channels}, height, width], got {shape_str(pred)}; "
            f"check that the task's head outputs {channels} channel{'s' if channels != 1 else ''}"
        )
    if target.dim() != 4 or target.shape[1] != channels or target.shape[0] != pred.shape[0]:
        raise DataError(
            f"task '{task}': the {kind} target has shape {shape_str(target)} but the prediction is {shape_str(pred)}; "
            f"a {kind} target is [batch, {channels}, height, width]" + (" or [batch, height, width]" if channels == 1 else "")
        )
    return resize_to(pred, target.shape[-2:]), target.to(pred.dtype) if target.is_floating_point() else target.float()


def seg_target(pred: torch.Tensor, target: torch.Tensor, classes: int, task: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Return ``(logits resized to the target, target as [B, H, W] int64)``."""
    check_tensor(pred, task, "prediction")
    check_tensor(target, task, "target")
    if target.dim() == 4 and target.shape[1] == 1:
        target = target[:, 0]
    if pred.dim() != 4 or pred.shape[1] != classes:
        raise DataError(
            f"task '{task}': a segmentation prediction must be [batch, {classes} classes, height, width], got "
            f"{shape_str(pred)}; check that the task's head outputs one channel per class"
        )
    if target.dim() != 3 or target.shape[0] != pred.shape[0]:
        raise DataError(
            f"task '{task}': the segmentation target has shape {shape_str(target)} but the prediction is "
            f"{shape_str(pred)}; a segmentation target is [batch, height, width] (or [batch, 1, height, width]) of class indices"
        )
    if target.is_floating_point() and checking_labels():
        if not torch.equal(target, target.round()):
            raise DataError(f"task '{task}': segmentation targets must be whole class indices; got fractional values")
    return resize_to(pred, target.shape[-2:]), target.long()


def resize_to(pred: torch.Tensor, size) -> torch.Tensor:
    if tuple(pred.shape[-2:]) == tuple(size):
        return pred
    return F.interpolate(pred, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)


def pixel_mask(mask: Optional[torch.Tensor], target: torch.Tensor, task: str) -> Optional[torch.Tensor]:
    """The mask as ``[B, H, W]`` bool (``None`` stays ``None``); ``target`` is [B, C, H, W] or [B, H, W]."""
    if mask is None:
        return None
    check_tensor(mask, task, "mask")
    if mask.dim() == 4:
        mask = mask[:, 0]
    spatial = (target.shape[0],) + tuple(target.shape[-2:])
    if tuple(mask.shape) != spatial:
        raise DataError(
            f"task '{task}': the mask has shape {shape_str(mask)}; it must cover the target's pixels "
            f"([batch, height, width] = [{', '.join(str(int(s)) for s in spatial)}], or with a channel axis)"
        )
    return mask.bool() if mask.dtype == torch.bool else mask > 0.5
