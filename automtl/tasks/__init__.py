"""The task library: built-in task kinds (head, loss, metrics), relative performance Δt and
single-task baseline files.

    from automtl.tasks import make_task, parse_task_spec, TASK_KINDS, relative_performance
    seg = make_task("segmentation", name="seg", classes=13, in_channels=512)
    depth = parse_task_spec("depth:depth", in_channels=512)
"""

from automtl.tasks.heads import ASPPHead, ClassificationHead
from automtl.tasks.kinds import (
    TASK_KINDS,
    BuiltinTask,
    TaskKind,
    higher_is_better_of,
    infer_in_channels,
    kind_higher_is_better,
    make_task,
    parse_task_spec,
)
from automtl.tasks.losses import ClassificationLoss, DepthLoss, NormalLoss, PixelL1Loss, SegmentationLoss, label_checks
from automtl.tasks.metrics import AccuracyMetric, DepthMetric, NormalMetric, PixelL1Metric, SegmentationMetric, SumMetric
from automtl.tasks.relative import load_baseline, relative_performance, save_baseline

__all__ = [
    "TASK_KINDS",
    "TaskKind",
    "BuiltinTask",
    "make_task",
    "parse_task_spec",
    "infer_in_channels",
    "higher_is_better_of",
    "kind_higher_is_better",
    "relative_performance",
    "save_baseline",
    "load_baseline",
    "ASPPHead",
    "ClassificationHead",
    "SegmentationLoss",
    "DepthLoss",
    "NormalLoss",
    "PixelL1Loss",
    "ClassificationLoss",
    "label_checks",
    "SumMetric",
    "SegmentationMetric",
    "DepthMetric",
    "NormalMetric",
    "PixelL1Metric",
    "AccuracyMetric",
]
