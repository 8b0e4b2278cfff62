"""The built-in task metrics (the :class:`automtl.task.Metric` protocol).

Every metric accumulates sums over the whole evaluation set - a confusion matrix, error sums,
pixel counts - and ``compute()`` derives the values from them, so the result does not depend
on how the set is cut into batches (no average of per-batch averages). Because the state is
made of sums, :meth:`SumMetric.all_reduce` combines the shards of a distributed evaluation
exactly.

Percentages (mIoU, pixel accuracy, the δ and angle thresholds, accuracy) are in percent, as in
the papers' tables.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import torch

from automtl.tasks._shapes import dense_target, pixel_mask, seg_target
from automtl.tasks.losses import check_labels, class_target, depth_valid, normal_cosines

#: Angle histogram resolution for the median angle error (degrees).
ANGLE_BIN = 1e-3
_ANGLE_BINS = int(round(180.0 / ANGLE_BIN)) + 1


class SumMetric:
    """A metric whose state is a dict of tensors that only ever get added to."""

    higher_is_better: Dict[str, bool] = {}

    def __init__(self, task: str):
        self.task = task
        self.state: Dict[str, torch.Tensor] = {}
        self.reset()

    def _zeros(self) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def reset(self) -> None:
        self.state = self._zeros()

    def _add(self, name: str, value: torch.Tensor) -> None:
        current = self.state[name]
        if current.device != value.device:
            current = current.to(value.device)
        self.state[name] = current + value.to(current.dtype)

    def merge(self, other: "SumMetric") -> None:
        """Add ``other``'s accumulated state to this one (same metric type)."""
        if type(other) is not type(self):
            raise TypeError(f"cannot merge a {type(other).__name__} into a {type(self).__name__}")
        for name, value in other.state.items():
            self._add(name, value)

    def all_reduce(self, group=None) -> None:
        """Sum the state over the processes of ``torch.distributed`` (no-op when not initialised)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        for name in sorted(self.state):
            value = self.state[name].clone()
            dist.all_reduce(value, op=dist.ReduceOp.SUM, group=group)
            self.state[name] = value

    def update(self, prediction: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> None:
        raise NotImplementedError

    def compute(self) -> Dict[str, float]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(task={self.task!r})"


def _ratio(num: torch.Tensor, den: torch.Tensor, scale: float = 1.0) -> float:
    d = float(den)
    return float(num) / d * scale if d > 0 else math.nan


class SegmentationMetric(SumMetric):
    """mIoU and pixel accuracy from a confusion matrix accumulated over the whole set.

    Pixels labelled ``ignore_index``, outside ``mask``, or with a label outside ``0..classes-1``
    are left out. The IoU of class c is ``TP / (TP + FP + FN)``; mIoU averages it over the
    classes that occur in the targets or the predictions (a class absent from both has no IoU).
    Pixel accuracy is correct pixels over counted pixels.
    """

    higher_is_better = {"mIoU": True, "pixel_acc": True}

    def __init__(self, classes: int, ignore_index: int = 255, task: str = "seg"):
        self.classes = int(classes)
        self.ignore_index = int(ignore_index)
        super().__init__(task)

    def _zeros(self):
        return {"confusion": torch.zeros(self.classes, self.classes, dtype=torch.int64)}

    @torch.no_grad()
    def update(self, prediction, target, mask=None):
        prediction, target = seg_target(prediction, target, self.classes, self.task)
        valid = (target != self.ignore_index) & (target >= 0) & (target < self.classes)
        m = pixel_mask(mask, target, self.task)
        if m is not None:
            valid &= m
        gt = target[valid]
        pred = prediction.argmax(dim=1)[valid]
        counts = torch.bincount(gt * self.classes + pred, minlength=self.classes * self.classes)
        self._add("confusion", counts.view(self.classes, self.classes))

    def confusion_matrix(self) -> torch.Tensor:
        """``[classes, classes]`` counts: row = target class, column = predicted class."""
        return self.state["confusion"].cpu()

    def compute(self):
        cm = self.confusion_matrix().double()
        tp = cm.diag()
        union = cm.sum(0) + cm.sum(1) - tp
        present = union > 0
        miou = float((tp[present] / union[present]).mean()) * 100.0 if bool(present.any()) else math.nan
        return {"mIoU": miou, "pixel_acc": _ratio(tp.sum(), cm.sum(), 100.0)}


class DepthMetric(SumMetric):
    """Absolute and relative error, and the % of pixels with δ = max(pred/gt, gt/pred) below
    1.25, 1.25², 1.25³, over valid pixels (target > 0, finite, inside ``mask``) of the whole set.
    A prediction ≤ 0 is never within a threshold."""

    higher_is_better = {
        "abs_err": False,
        "rel_err": False,
        "delta_1.25": True,
        "delta_1.25^2": True,
        "delta_1.25^3": True,
    }

    def __init__(self, task: str = "depth"):
        super().__init__(task)

    def _zeros(self):
        z = lambda: torch.zeros((), dtype=torch.float64)  # noqa: E731
        return {"abs": z(), "rel": z(), "count": torch.zeros((), dtype=torch.int64), "within": torch.zeros(3, dtype=torch.int64)}

    @torch.no_grad()
    def update(self, prediction, target, mask=None):
        prediction, target = dense_target(prediction, target, 1, self.task, "depth")
        valid = depth_valid(target, pixel_mask(mask, target, self.task))
        p = prediction[valid].double()
        g = target[valid].double()
        err = (p - g).abs()
        ratio = torch.maximum(p / g, g / p)
        ratio = torch.where(p > 0, ratio, torch.full_like(ratio, math.inf))
        thresholds = torch.tensor([1.25, 1.25**2, 1.25**3], dtype=torch.float64, device=p.device)
        self._add("abs", err.sum())
        self._add("rel", (err / g).sum())
        self._add("count", torch.tensor(p.numel(), device=p.device))
        self._add("within", (ratio.unsqueeze(1) < thresholds).sum(0))

    def compute(self):
        s = {k: v.cpu() for k, v in self.state.items()}
        n = s["count"]
        return {
            "abs_err": _ratio(s["abs"], n),
            "rel_err": _ratio(s["rel"], n),
            "delta_1.25": _ratio(s["within"][0], n, 100.0),
            "delta_1.25^2": _ratio(s["within"][1], n, 100.0),
            "delta_1.25^3": _ratio(s["within"][2], n, 100.0),
        }


class NormalMetric(SumMetric):
    """Mean and median angle (degrees) between the normalised prediction and target, and the %
    of pixels within 11.25°, 22.5° and 30°, over valid pixels (target of non-zero length, inside
    ``mask``) of the whole set. The median comes from a histogram of ``ANGLE_BIN`` (0.001°) bins,
    so it is exact to 0.001°; the other values are exact."""

    higher_is_better = {
        "mean_angle": False,
        "median_angle": False,
        "within_11.25": True,
        "within_22.5": True,
        "within_30": True,
    }

    def __init__(self, task: str = "normal"):
        super().__init__(task)

    def _zeros(self):
        return {
            "angle_sum": torch.zeros((), dtype=torch.float64),
            "count": torch.zeros((), dtype=torch.int64),
            "within": torch.zeros(3, dtype=torch.int64),
            "histogram": torch.zeros(_ANGLE_BINS, dtype=torch.int64),
        }

    @torch.no_grad()
    def update(self, prediction, target, mask=None):
        cos, _ = normal_cosines(prediction, target, mask, self.task)
        angle = torch.rad2deg(torch.arccos(cos.double().clamp(-1.0, 1.0)))
        thresholds = torch.tensor([11.25, 22.5, 30.0], dtype=torch.float64, device=angle.device)
        bins = torch.floor(angle / ANGLE_BIN).long().clamp(0, _ANGLE_BINS - 1)
        self._add("angle_sum", angle.sum())
        self._add("count", torch.tensor(angle.numel(), device=angle.device))
        self._add("within", (angle.unsqueeze(1) < thresholds).sum(0))
        self._add("histogram", torch.bincount(bins, minlength=_ANGLE_BINS))

    def _median(self, histogram: torch.Tensor, n: int) -> float:
        if n == 0:
            return math.nan
        cumulative = histogram.cumsum(0)
        # the order statistics k = (n-1)//2 and n//2 (0-based): the bin holding each, at its centre
        lo = int(torch.searchsorted(cumulative, torch.tensor((n - 1) // 2 + 1), right=False))
        hi = int(torch.searchsorted(cumulative, torch.tensor(n // 2 + 1), right=False))
        return ((lo + 0.5) + (hi + 0.5)) / 2.0 * ANGLE_BIN

    def compute(self):
        s = {k: v.cpu() for k, v in self.state.items()}
        n = s["count"]
        return {
            "mean_angle": _ratio(s["angle_sum"], n),
            "median_angle": self._median(s["histogram"], int(n)),
            "within_11.25": _ratio(s["within"][0], n, 100.0),
            "within_22.5": _ratio(s["within"][1], n, 100.0),
            "within_30": _ratio(s["within"][2], n, 100.0),
        }


class PixelL1Metric(SumMetric):
    """Mean absolute error over every pixel (inside ``mask``) of the whole set: the keypoint and
    edge losses themselves, as the published Taskonomy experiments report them."""

    higher_is_better = {"l1": False}

    def __init__(self, task: str, kind: str = "keypoint", channels: int = 1):
        self.kind = kind
        self.channels = channels
        super().__init__(task)

    def _zeros(self):
        return {"abs": torch.zeros((), dtype=torch.float64), "count": torch.zeros((), dtype=torch.int64)}

    @torch.no_grad()
    def update(self, prediction, target, mask=None):
        prediction, target = dense_target(prediction, target, self.channels, self.task, self.kind)
        err = (prediction - target).abs().double()
        m = pixel_mask(mask, target, self.task)
        if m is not None:
            err = err.permute(0, 2, 3, 1)[m]
        self._add("abs", err.sum())
        self._add("count", torch.tensor(err.numel(), device=err.device))

    def compute(self):
        return {"l1": _ratio(self.state["abs"].cpu(), self.state["count"].cpu())}


class AccuracyMetric(SumMetric):
    """Top-1 accuracy (%) over the whole set."""

    higher_is_better = {"accuracy": True}

    def __init__(self, classes: int, task: str = "cls"):
        self.classes = int(classes)
        super().__init__(task)

    def _zeros(self):
        return {"correct": torch.zeros((), dtype=torch.int64), "count": torch.zeros((), dtype=torch.int64)}

    @torch.no_grad()
    def update(self, prediction, target, mask=None):
        prediction, target = class_target(prediction, target, self.classes, self.task)
        self._add("correct", (prediction.argmax(dim=1) == target).sum())
        self._add("count", torch.tensor(target.numel(), device=target.device))

    def compute(self):
        return {"accuracy": _ratio(self.state["correct"].cpu(), self.state["count"].cpu(), 100.0)}


__all__ = [
    "SumMetric",
    "SegmentationMetric",
    "DepthMetric",
    "NormalMetric",
    "PixelL1Metric",
    "AccuracyMetric",
    "ANGLE_BIN",
    "check_labels",
]
