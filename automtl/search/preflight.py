"""The pre-flight check: before the first training step, one small batch of the training data
goes through the model and every task's loss.

A mistake in how the pieces fit - images of another rank or channel count than the model was
compiled for, a head whose output its loss cannot take, a loss that does not return a scalar,
data that give a NaN loss before any step - is then reported by name, with the shapes
involved and what to do, instead of as a torch traceback from inside step 1 (possibly hours
into a run, after pre-training). Nothing changes: the model runs in eval mode (no running
statistics are updated), without gradients, and the random number generators are restored.
"""

from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence

import torch
from torch.utils.data import Dataset, default_collate

from automtl.errors import AutoMTLError, ConfigError, DataError, TrainingError, first_line
from automtl.search.batches import to_device

#: samples in the pre-flight batch: two, so that batch statistics and squeezes behave as in training
SAMPLES = 2


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{_fmt(value.shape)} {str(value.dtype).replace('torch.', '')}"
    return type(value).__name__


def _first_batch(dataset: Dataset, name: str) -> Any:
    count = min(SAMPLES, len(dataset))  # type: ignore[arg-type]
    samples = [dataset[i] for i in range(count)]
    try:
        return default_collate(samples)
    except Exception as exc:  # collate raises several types for samples that do not stack
        raise DataError(
            f"the {name} dataset's first {count} samples cannot be batched together ({type(exc).__name__}: "
            f"{first_line(exc)}); every sample's image and targets must have the same shapes"
        ) from exc


def compiled_input_shape(sm: Any) -> Optional[torch.Size]:
    """The shape of the example input the SuperModel was compiled with."""
    graph = getattr(sm, "graph", None)
    inputs = getattr(graph, "inputs", ())
    return graph[inputs[0]].out_shape if inputs else None


def check_images(images: Any, expected: Optional[torch.Size], name: str) -> None:
    if not isinstance(images, torch.Tensor):
        raise DataError(f"the {name} dataset's images must be tensors; a batch of them is a {type(images).__name__}")
    if expected is None:
        return
    if images.dim() != len(expected):
        raise DataError(
            f"the {name} dataset's images batch to {_fmt(images.shape)} (rank {images.dim()}), but the model was "
            f"compiled with an example input of shape {_fmt(expected)} (rank {len(expected)}). Give each sample "
            f"the shape {_fmt(expected[1:])} (a batch adds the first axis), or compile with an example input "
            "shaped like a batch of the data"
        )
    if images.dim() > 1 and images.shape[1] != expected[1]:
        raise DataError(
            f"the {name} dataset's images have {images.shape[1]} channels (batch {_fmt(images.shape)}), but the "
            f"model was compiled for {expected[1]} (example input {_fmt(expected)})"
        )


def _failing_node(exc: BaseException) -> str:
    """`` at node 'x' (Conv2d(...))`` when the traceback passes through the SuperModel's graph walk."""
    found: Optional[Any] = None
    seen: List[BaseException] = []
    error: Optional[BaseException] = exc
    while error is not None and error not in seen:
        seen.append(error)
        tb = error.__traceback__
        while tb is not None:
            node = tb.tb_frame.f_locals.get("node")
            if node is not None and hasattr(node, "description") and hasattr(node, "out_shape"):
                found = node
            tb = tb.tb_next
        error = error.__cause__ or error.__context__
    if found is None:
        return ""
    return f" at node '{found.name}' ({found.description}, compiled for output {_fmt(found.out_shape) if found.out_shape is not None else '?'})"


def preflight(sm: Any, dataset: Dataset, runtime: Any, name: str = "training") -> None:
    """Run one batch of ``dataset`` through ``sm`` and every task's loss; raise a
    :class:`DataError`, :class:`ConfigError` or :class:`TrainingError` saying what does not fit."""
    images, targets = to_device(_first_batch(dataset, name), runtime.device)
    check_images(images, compiled_input_shape(sm), name)
    flags = [(m, m.training) for m in sm.modules()]
    devices = [runtime.device.index or 0] if runtime.device.type == "cuda" else []
    sm.eval()
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            try:
                with runtime.autocast():
                    outputs = sm(images)
            except AutoMTLError:
                raise
            except Exception as exc:
                raise DataError(
                    f"pre-flight check: the model fails on a batch of the {name} data (images {_describe(images)})"
                    f"{_failing_node(exc)}: {type(exc).__name__}: {first_line(exc)}. Check that the data have the "
                    "shape, dtype and value range the backbone was compiled for"
                ) from exc
            for task in sm.tasks:
                _check_loss(task, outputs[task.name], targets[task.name])
    finally:
        for module, flag in flags:
            module.training = flag


def _check_loss(task: Any, prediction: torch.Tensor, target: Any) -> None:
    if task.loss is None:
        raise ConfigError(f"task '{task.name}' has no loss; give it one (Task(..., loss=...)) to train it")
    if prediction.is_floating_point():
        prediction = prediction.float()  # as the training step does
    try:
        loss = task.loss(prediction, target)
    except AutoMTLError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"task '{task.name}': its loss cannot take its head's output: prediction {_describe(prediction)}, "
            f"target {_describe(target)} ({type(exc).__name__}: {first_line(exc)}). Make the head produce what "
            "the loss expects (e.g. [N, classes] scores for cross-entropy with [N] class indices), or give the "
            "task a loss that fits the head"
        ) from exc
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.is_floating_point():
        raise ConfigError(
            f"task '{task.name}': its loss must return a floating-point scalar tensor, but it returned "
            f"{_describe(loss)} for prediction {_describe(prediction)} and target {_describe(target)}; "
            "reduce it (e.g. reduction='mean')"
        )
    value = float(loss)
    if not math.isfinite(value):
        raise TrainingError(
            f"pre-flight check: the loss of task '{task.name}' is {value} on the first training batch, before "
            "any step; check this task's targets and the images for NaN or infinite values, and its loss"
        )
