"""The built-in task kinds and :func:`make_task`, which builds a :class:`~automtl.task.Task`
(head, loss, metrics, weight) from a kind's name and a few options.

A built task carries ``.spec``: a JSON-able dict from which ``make_task(**spec)`` builds the
same task again (same head architecture, fresh weights), so a run directory can store it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from automtl.errors import ConfigError
from automtl.registry import Registry
from automtl.task import Task
from automtl.tasks import losses as L
from automtl.tasks import metrics as M
from automtl.tasks.heads import DEFAULT_DROPOUT, DEFAULT_HIDDEN, DEFAULT_RATES, ASPPHead, ClassificationHead, check_output_size

_DENSE_OPTIONS = {"aspp_rates": list(DEFAULT_RATES), "head_hidden": DEFAULT_HIDDEN, "head_dropout": DEFAULT_DROPOUT, "output_size": None}


@dataclasses.dataclass(frozen=True)
class TaskKind:
    """What a kind of task is: its prediction's channels, loss, metric and default head.

    ``options`` maps each kind-specific option to its default; ``make_task`` accepts exactly
    these (plus the common ``name, classes, in_channels, weight, head``)."""

    name: str
    description: str
    needs_classes: bool
    dense: bool
    #: channels of the prediction, given the class count (None for kinds without classes)
    out_channels: Callable[[Optional[int]], int]
    make_loss: Callable[..., Callable]
    make_metric: Callable[..., M.SumMetric]
    options: Mapping[str, Any]
    #: the class of the metric (its ``higher_is_better`` names what the kind reports)
    metric_type: type
    #: options the loss and the metric take (the rest configure the head)
    loss_options: Tuple[str, ...] = ()

    @property
    def higher_is_better(self) -> Dict[str, bool]:
        """The metric names this kind reports, and which way is better."""
        return dict(self.metric_type.higher_is_better)


def _seg_loss(task, classes, ignore_index=255, class_weights=None):
    return L.SegmentationLoss(classes, ignore_index=ignore_index, class_weights=class_weights, task=task)


def _seg_metric(task, classes, ignore_index=255, class_weights=None):
    return M.SegmentationMetric(classes, ignore_index=ignore_index, task=task)


#: The built-in task kinds by name. A new kind registers one ``TaskKind`` here.
TASK_KINDS: Registry[TaskKind] = Registry("task kind", listing="the built-in kinds are")
for _task_kind in (
    TaskKind(
        name="segmentation",
        metric_type=M.SegmentationMetric,
        description="semantic segmentation: pixel-wise cross-entropy with an ignore label; mIoU, pixel accuracy",
        needs_classes=True,
        dense=True,
        out_channels=lambda classes: int(classes),
        make_loss=_seg_loss,
        make_metric=_seg_metric,
        options={"ignore_index": 255, "class_weights": None, **_DENSE_OPTIONS},
        loss_options=("ignore_index", "class_weights"),
    ),
    TaskKind(
        name="depth",
        metric_type=M.DepthMetric,
        description="depth estimation: L1 on valid pixels (target > 0); abs/rel error, % within 1.25, 1.25², 1.25³",
        needs_classes=False,
        dense=True,
        out_channels=lambda classes: 1,
        make_loss=lambda task: L.DepthLoss(task),
        make_metric=lambda task: M.DepthMetric(task),
        options=dict(_DENSE_OPTIONS),
    ),
    TaskKind(
        name="normal",
        metric_type=M.NormalMetric,
        description="surface normals: 1 - cosine similarity; mean/median angle, % within 11.25°, 22.5°, 30°",
        needs_classes=False,
        dense=True,
        out_channels=lambda classes: 3,
        make_loss=lambda task: L.NormalLoss(task),
        make_metric=lambda task: M.NormalMetric(task),
        options=dict(_DENSE_OPTIONS),
    ),
    TaskKind(
        name="keypoint",
        metric_type=M.PixelL1Metric,
        description="keypoint heat map: L1; metric: the L1 error",
        needs_classes=False,
        dense=True,
        out_channels=lambda classes: 1,
        make_loss=lambda task: L.PixelL1Loss(task, "keypoint"),
        make_metric=lambda task: M.PixelL1Metric(task, "keypoint"),
        options=dict(_DENSE_OPTIONS),
    ),
    TaskKind(
        name="edge",
        metric_type=M.PixelL1Metric,
        description="edge map: L1; metric: the L1 error",
        needs_classes=False,
        dense=True,
        out_channels=lambda classes: 1,
        make_loss=lambda task: L.PixelL1Loss(task, "edge"),
        make_metric=lambda task: M.PixelL1Metric(task, "edge"),
        options=dict(_DENSE_OPTIONS),
    ),
    TaskKind(
        name="classification",
        metric_type=M.AccuracyMetric,
        description="image classification: cross-entropy; accuracy",
        needs_classes=True,
        dense=False,
        out_channels=lambda classes: int(classes),
        make_loss=lambda task, classes: L.ClassificationLoss(classes, task),
        make_metric=lambda task, classes: M.AccuracyMetric(classes, task),
        options={},
    ),
):
    TASK_KINDS.register(_task_kind.name, _task_kind)

def kind_higher_is_better(kind: str) -> Dict[str, bool]:
    """``{metric name: higher is better}`` for a built-in kind."""
    return _kind(kind).higher_is_better


@dataclasses.dataclass
class BuiltinTask(Task):
    """A :class:`~automtl.task.Task` made by :func:`make_task`; ``spec`` rebuilds it."""

    spec: Dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def higher_is_better(self) -> Dict[str, bool]:
        return kind_higher_is_better(self.kind)  # type: ignore[arg-type]


def _kind(kind: str) -> TaskKind:
    return TASK_KINDS.get(kind)


def _check_int(value, what: str, task: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"task '{task}': {what} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_options(kind: TaskKind, task: str, options: Dict[str, Any], classes: Optional[int]) -> Dict[str, Any]:
    unknown = sorted(set(options) - set(kind.options))
    if unknown:
        allowed = ", ".join(sorted(kind.options)) or "none"
        raise ConfigError(f"task '{task}': option(s) {', '.join(unknown)} do not apply to a {kind.name} task (its options: {allowed})")
    resolved = {k: (list(v) if isinstance(v, list) else v) for k, v in kind.options.items()}
    resolved.update(options)
    if "aspp_rates" in resolved:
        rates = resolved["aspp_rates"]
        if isinstance(rates, int) and not isinstance(rates, bool):
            rates = [rates]
        if not isinstance(rates, (list, tuple)) or not rates:
            raise ConfigError(f"task '{task}': aspp_rates must be a non-empty list of positive integers, got {rates!r}")
        resolved["aspp_rates"] = [_check_int(r, "every ASPP rate", task) for r in rates]
        resolved["head_hidden"] = _check_int(resolved["head_hidden"], "head_hidden", task)
        dropout = resolved["head_dropout"]
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ConfigError(f"task '{task}': head_dropout must be in [0, 1), got {dropout!r}")
        resolved["head_dropout"] = float(dropout)
        try:
            resolved["output_size"] = check_output_size(resolved["output_size"])
        except ConfigError as exc:
            raise ConfigError(f"task '{task}': {exc}") from None
    if "ignore_index" in resolved:
        ignore = resolved["ignore_index"]
        if isinstance(ignore, bool) or not isinstance(ignore, int):
            raise ConfigError(f"task '{task}': ignore_index must be an integer, got {ignore!r}")
        if 0 <= ignore < (classes or 0):
            raise ConfigError(
                f"task '{task}': ignore_index {ignore} is one of the {classes} classes; use a label outside 0..{classes - 1} (255 by default)"
            )
    if resolved.get("class_weights") is not None:
        weights = resolved["class_weights"]
        if isinstance(weights, torch.Tensor):
            weights = weights.tolist()
        if not isinstance(weights, (list, tuple)) or len(weights) != classes:
            raise ConfigError(f"task '{task}': class_weights must be a list of {classes} numbers (one per class)")
        try:
            weights = [float(w) for w in weights]
        except (TypeError, ValueError):
            raise ConfigError(f"task '{task}': class_weights must be numbers") from None
        if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(f"task '{task}': class_weights must be finite, non-negative and not all zero")
        resolved["class_weights"] = weights
    return resolved


def make_task(
    kind: str,
    name: Optional[str] = None,
    classes: Optional[int] = None,
    in_channels: Optional[int] = None,
    weight: float = 1.0,
    head: Optional[nn.Module] = None,
    custom_head: bool = False,
    **options: Any,
) -> BuiltinTask:
    """Build a task of a built-in ``kind`` (see :data:`TASK_KINDS`).

    * ``name``: the task's name (default: the kind's name); ``classes``: for segmentation and
      classification; ``weight``: its λ in Σ λᵢ Lᵢ.
    * ``head``: any ``nn.Module`` from the backbone's output to the prediction; by default an
      :class:`~automtl.tasks.heads.ASPPHead` (dense kinds) or a
      :class:`~automtl.tasks.heads.ClassificationHead`, which need ``in_channels``, the
      backbone's output channels (:func:`infer_in_channels` reads them from a SuperModel).
    * dense kinds: ``aspp_rates`` (default 6, 12, 18, 24), ``head_hidden`` (1024),
      ``head_dropout`` (0.5), ``output_size`` ((H, W) the head upsamples to; None keeps the
      backbone's resolution); segmentation: ``ignore_index`` (255), ``class_weights``.
    """
    k = _kind(kind)
    name = k.name if name is None else name
    if not isinstance(name, str):
        raise ConfigError(f"a task name must be a string, got {name!r}")
    if k.needs_classes:
        if classes is None:
            raise ConfigError(f"task '{name}': a {k.name} task needs classes= (the number of classes)")
        classes = _check_int(classes, "classes", name, minimum=2 if k.name == "classification" else 1)
    elif classes is not None:
        raise ConfigError(f"task '{name}': a {k.name} task has no classes; leave classes unset")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise ConfigError(f"task '{name}': weight must be a finite number >= 0, got {weight!r}")
    resolved = _check_options(k, name, dict(options), classes)
    if in_channels is not None:
        in_channels = _check_int(in_channels, "in_channels", name)

    if head is None:
        if custom_head:
            raise ConfigError(
                f"task '{name}' was built with a custom head, which a spec cannot hold; pass head= (your nn.Module) to rebuild it"
            )
        if in_channels is None:
            raise ConfigError(
                f"task '{name}': the default {'ASPP' if k.dense else 'classification'} head needs in_channels= (the "
                "backbone's output channels; automtl.tasks.infer_in_channels(supermodel or backbone, example_input) "
                "finds them), or pass head= (any nn.Module)"
            )
        head = _default_head(k, in_channels, classes, resolved)
    elif not isinstance(head, nn.Module):
        raise ConfigError(f"task '{name}': head must be an nn.Module, got {type(head).__name__}")
    else:
        custom_head = True

    loss_args = {key: resolved[key] for key in k.loss_options}
    class_args = {"classes": classes} if k.needs_classes else {}
    loss = k.make_loss(task=name, **class_args, **loss_args)
    metric_factory = _MetricFactory(k.name, dict(task=name, **class_args, **loss_args))

    spec: Dict[str, Any] = {"name": name, "kind": k.name}
    if k.needs_classes:
        spec["classes"] = classes
    spec["weight"] = float(weight)
    if in_channels is not None:
        spec["in_channels"] = in_channels
    if custom_head:
        spec["custom_head"] = True
    spec.update(resolved)
    return BuiltinTask(name=name, head=head, loss=loss, weight=float(weight), metrics=metric_factory, kind=k.name, spec=spec)


class _MetricFactory:
    """``task.metrics()``: a fresh metric each call. It holds the kind's name, not a function,
    so that tasks pickle (e.g. to worker processes)."""

    def __init__(self, kind: str, kwargs: Dict[str, Any]):
        self.kind = kind
        self.kwargs = kwargs

    def __call__(self) -> M.SumMetric:
        return TASK_KINDS[self.kind].make_metric(**self.kwargs)


def _default_head(k: TaskKind, in_channels: int, classes: Optional[int], options: Dict[str, Any]) -> nn.Module:
    out = k.out_channels(classes)
    if not k.dense:
        return ClassificationHead(in_channels, out)
    return ASPPHead(
        in_channels,
        out,
        rates=options["aspp_rates"],
        hidden=options["head_hidden"],
        dropout=options["head_dropout"],
        output_size=options["output_size"],
    )


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if "," in text:
        return [_parse_value(part) for part in text.split(",")]
    return text


def parse_task_spec(text: str, **overrides: Any) -> BuiltinTask:
    """Build a task from the command-line form ``name:kind[:classes][:option=value...]``.

    ``seg:segmentation:13`` is a 13-class segmentation task called ``seg``; ``d:depth:weight=2``
    a depth task with λ = 2; list options take commas (``aspp_rates=1,2,4``). ``overrides``
    (e.g. ``in_channels=512``) are passed on to :func:`make_task`.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("a task spec is 'name:kind[:classes]', e.g. 'seg:segmentation:13'; got an empty one")
    parts = text.strip().split(":")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ConfigError(f"task spec {text!r} is not 'name:kind[:classes]' (e.g. 'seg:segmentation:13', 'depth:depth')")
    name, kind = parts[0], parts[1]
    _kind_or_error(kind, text)
    args: Dict[str, Any] = {}
    for position, part in enumerate(parts[2:], start=3):
        if "=" in part:
            key, _, value = part.partition("=")
            if not key:
                raise ConfigError(f"task spec {text!r}: part {position} ({part!r}) has no option name before '='")
            if key in args:
                raise ConfigError(f"task spec {text!r}: option {key!r} is given twice")
            args[key] = _parse_value(value)
        elif position == 3:
            try:
                args["classes"] = int(part)
            except ValueError:
                raise ConfigError(f"task spec {text!r}: the class count {part!r} is not an integer") from None
        else:
            raise ConfigError(f"task spec {text!r}: part {position} ({part!r}) is not option=value")
    for key, value in overrides.items():
        args.setdefault(key, value)
    return make_task(kind, name=name, **args)


def _kind_or_error(kind: str, text: str) -> None:
    if kind not in TASK_KINDS:
        raise TASK_KINDS.unknown(kind, where=f"task spec {text!r}", what="kind")


def infer_in_channels(source: Any, example_input: Optional[torch.Tensor] = None) -> int:
    """The channels of a backbone's output: what default heads need as ``in_channels``.

    ``source`` is a compiled :class:`~automtl.SuperModel` (or its ``IRGraph``), read without
    running anything; or an ``nn.Module`` backbone, run once on ``example_input`` (in eval
    mode, without gradients)."""
    from automtl.compiler.ir import IRGraph

    graph = getattr(source, "graph", None) if not isinstance(source, IRGraph) else source
    if isinstance(graph, IRGraph):
        node = graph[graph.output]
        shape = node.out_shape
        if shape is None and len(node.in_shapes) == 1:
            shape = node.in_shapes[0]
        if shape is None or len(shape) < 2:
            raise ConfigError(
                f"the backbone '{graph.name}' does not return one tensor of shape [batch, channels, ...] "
                f"(its output is {shape if shape is not None else 'not a single tensor'}); pass in_channels= yourself"
            )
        return int(shape[1])
    if isinstance(source, nn.Module):
        if not isinstance(example_input, torch.Tensor):
            raise ConfigError("infer_in_channels(backbone, example_input): an nn.Module backbone needs an example input tensor")
        was_training = source.training
        source.eval()
        try:
            with torch.no_grad():
                out = source(example_input)
        finally:
            source.train(was_training)
        if not isinstance(out, torch.Tensor) or out.dim() < 2:
            raise ConfigError("the backbone does not return one tensor of shape [batch, channels, ...]; pass in_channels= yourself")
        return int(out.shape[1])
    raise ConfigError(f"infer_in_channels needs a SuperModel, an IRGraph or an nn.Module, got {type(source).__name__}")


def higher_is_better_of(tasks: Sequence[Task]) -> Dict[str, Dict[str, bool]]:
    """``{task name: {metric: higher is better}}`` for tasks that have metrics."""
    result: Dict[str, Dict[str, bool]] = {}
    for task in tasks:
        if task.metrics is None:
            continue
        result[task.name] = dict(task.metrics().higher_is_better)
    return result
