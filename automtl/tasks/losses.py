"""The built-in task losses, as in the published AdaShare/AutoMTL experiments.

Every loss is called ``loss(prediction, target, mask=None)`` and returns a scalar tensor. A
batch with no valid pixel gives a zero that still carries a gradient (never NaN).

No loss reads a value back from the device: invalid pixels are weighed out (``torch.where``),
not indexed away, so a training step runs without host synchronisation. Label values are
checked (a :class:`DataError` naming them) unless :func:`label_checks` turns that off: the
training loop does, after the pre-flight check has checked the first batch.

* segmentation: pixel-wise cross-entropy; pixels labelled ``ignore_index`` (255 by default) or
  outside ``mask`` do not count; optional per-class weights (Taskonomy weighs by class priors).
* depth: L1 over valid pixels: target > 0 (and finite) and inside ``mask``.
* normal: 1 - cosine similarity of the normalised prediction and target, averaged over valid
  pixels: target vectors of non-zero length (and inside ``mask``).
* keypoint, edge: L1 over all pixels (inside ``mask``).
* classification: cross-entropy.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F

from automtl.errors import DataError
from automtl.tasks._shapes import check_tensor, checking_labels, dense_target, label_checks, pixel_mask, seg_target, shape_str  # noqa: F401 (label_checks: re-exported)


def _masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``valid`` (broadcast), 0 where nothing is valid; invalid entries
    (even NaN or inf) get neither weight nor gradient."""
    valid = valid.expand_as(values)
    total = torch.where(valid, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum()
    return total / valid.sum().clamp_min(1).to(values.dtype)


class SegmentationLoss:
    def __init__(self, classes: int, ignore_index: int = 255, class_weights: Optional[Sequence[float]] = None, task: str = "seg"):
        self.classes = int(classes)
        self.ignore_index = int(ignore_index)
        self.task = task
        self._weights = None if class_weights is None else torch.tensor([float(w) for w in class_weights])
        self._weights_on: Dict[tuple, torch.Tensor] = {}

    def _weight(self, pred: torch.Tensor) -> Optional[torch.Tensor]:
        if self._weights is None:
            return None
        key = (pred.device, pred.dtype)
        if key not in self._weights_on:
            self._weights_on[key] = self._weights.to(device=pred.device, dtype=pred.dtype)
        return self._weights_on[key]

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        pred, target = seg_target(pred, target, self.classes, self.task)
        valid = target != self.ignore_index
        m = pixel_mask(mask, target, self.task)
        if m is not None:
            valid &= m
        if checking_labels():
            check_labels(target, valid, self.classes, self.ignore_index, self.task)
        target = target.masked_fill(~valid, self.ignore_index)
        loss = F.cross_entropy(pred, target, weight=self._weight(pred), ignore_index=self.ignore_index)
        # no valid pixel: cross-entropy is 0/0; the zero is chosen on the device, without a read
        return torch.where(valid.any(), loss, torch.zeros((), dtype=loss.dtype, device=loss.device))


def check_labels(target: torch.Tensor, valid: torch.Tensor, classes: int, ignore_index: int, task: str) -> None:
    bad = valid & ((target < 0) | (target >= classes))
    if bool(bad.any()):
        values = sorted({int(v) for v in target[bad].unique()[:5].tolist()})
        raise DataError(
            f"task '{task}': segmentation target holds label(s) {values} outside 0..{classes - 1} "
            f"(ignore label {ignore_index}); set classes= to the dataset's class count or map those labels to {ignore_index}"
        )


class DepthLoss:
    def __init__(self, task: str = "depth"):
        self.task = task

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        pred, target = dense_target(pred, target, 1, self.task, "depth")
        valid = depth_valid(target, pixel_mask(mask, target, self.task))
        target = torch.where(valid, target, pred.detach())  # no NaN/inf in the error, nor its gradient
        return _masked_mean((pred - target).abs(), valid)


def depth_valid(target: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Valid depth pixels of a [B, 1, H, W] target: positive, finite, inside the mask."""
    valid = (target > 0) & torch.isfinite(target)
    if mask is not None:
        valid &= mask.unsqueeze(1)
    return valid


class NormalLoss:
    def __init__(self, task: str = "normal"):
        self.task = task

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        pred, target = dense_target(pred, target, 3, self.task, "surface-normal")
        target, valid = _normal_valid(target, mask, self.task)
        cos = (F.normalize(pred, dim=1) * F.normalize(target, dim=1)).sum(1)  # [B, H, W]
        loss = 1.0 - _masked_mean(cos, valid)
        return torch.where(valid.any(), loss, torch.zeros((), dtype=loss.dtype, device=loss.device))


def _normal_valid(target: torch.Tensor, mask: Optional[torch.Tensor], task: str):
    target = torch.nan_to_num(target, nan=0.0, posinf=0.0, neginf=0.0)
    valid = target.norm(dim=1) > 0
    m = pixel_mask(mask, target, task)
    if m is not None:
        valid &= m
    return target, valid


def normal_cosines(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor], task: str):
    """Cosine similarity of prediction and target at every valid pixel (a flat tensor), and the
    valid-pixel mask. Valid: target of non-zero, finite length, inside the mask."""
    pred, target = dense_target(pred, target, 3, task, "surface-normal")
    target, valid = _normal_valid(target, mask, task)
    p = F.normalize(pred, dim=1).permute(0, 2, 3, 1)[valid]
    t = F.normalize(target, dim=1).permute(0, 2, 3, 1)[valid]
    return (p * t).sum(-1), valid


class PixelL1Loss:
    """Mean absolute error over every pixel (inside ``mask``): keypoint and edge maps."""

    def __init__(self, task: str, kind: str, channels: int = 1):
        self.task = task
        self.kind = kind
        self.channels = channels

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        pred, target = dense_target(pred, target, self.channels, self.task, self.kind)
        err = (pred - target).abs()
        m = pixel_mask(mask, target, self.task)
        if m is None:
            return err.mean()
        return _masked_mean(err, m.unsqueeze(1))


class ClassificationLoss:
    def __init__(self, classes: int, task: str = "cls"):
        self.classes = int(classes)
        self.task = task

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        pred, target = class_target(pred, target, self.classes, self.task)
        return F.cross_entropy(pred, target)


def class_target(pred: torch.Tensor, target: torch.Tensor, classes: int, task: str):
    check_tensor(pred, task, "prediction")
    check_tensor(target, task, "target")
    if pred.dim() != 2 or pred.shape[1] != classes:
        raise DataError(
            f"task '{task}': a classification prediction must be [batch, {classes} classes], got {shape_str(pred)}"
        )
    if target.dim() == 2 and target.shape[1] == 1:
        target = target[:, 0]
    if target.dim() != 1 or target.shape[0] != pred.shape[0]:
        raise DataError(
            f"task '{task}': the classification target has shape {shape_str(target)}; it must be [batch] class "
            f"indices for a prediction of {shape_str(pred)}"
        )
    target = target.long()
    if not checking_labels():
        return pred, target
    bad = (target < 0) | (target >= classes)
    if bool(bad.any()):
        raise DataError(
            f"task '{task}': classification target holds label(s) {sorted(set(target[bad].tolist()))[:5]} outside 0..{classes - 1}"
        )
    return pred, target
