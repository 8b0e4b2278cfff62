"""Relative performance Δt against a single-task baseline, and baseline files.

Δtᵢ = 1/|M| Σⱼ (−1)^sⱼ (M_j − M_STL,j) / M_STL,j × 100, with sⱼ = 1 when lower is better for
metric j (so Δtᵢ > 0 always means better than single-task), and Δt = the mean of Δtᵢ over the
tasks (AdaShare eq. 6, used by AutoMTL).

A baseline file is JSON::

    {"format": "automtl.baseline", "version": 1,
     "tasks": {"seg": {"mIoU": 40.2, "pixel_acc": 74.7}, "depth": {"abs_err": 0.017, ...}}}
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, Mapping, Union

from automtl.errors import ConfigError, DataError
from automtl.io import atomic_write_text

BASELINE_FORMAT = "automtl.baseline"
BASELINE_VERSION = 1

Metrics = Mapping[str, Mapping[str, float]]


def _directions(higher_is_better: Mapping[str, Any], task: str) -> Mapping[str, bool]:
    """``higher_is_better`` is per task ({task: {metric: bool}}) or shared ({metric: bool})."""
    if higher_is_better and all(isinstance(v, bool) for v in higher_is_better.values()):
        return higher_is_better  # type: ignore[return-value]
    found = higher_is_better.get(task)
    if not isinstance(found, Mapping):
        raise ConfigError(f"higher_is_better says nothing about task '{task}'; give {{task: {{metric: bool}}}} for every task")
    return found


def relative_performance(
    metrics: Metrics,
    baseline: Metrics,
    higher_is_better: Mapping[str, Any],
) -> Dict[str, Any]:
    """Δtᵢ per task and their mean Δt, in percent.

    ``metrics`` and ``baseline`` are ``{task: {metric: value}}``; ``higher_is_better`` is
    ``{task: {metric: bool}}`` (or one ``{metric: bool}`` for all tasks). Every metric of a task
    in ``metrics`` counts; each needs a direction and a non-zero baseline value. Returns
    ``{"per_task": {task: Δtᵢ}, "mean": Δt}``.
    """
    if not metrics:
        raise ConfigError("relative_performance needs the metrics of at least one task")
    per_task: Dict[str, float] = {}
    for task, values in metrics.items():
        if not values:
            raise ConfigError(f"task '{task}' has no metrics to compare")
        if task not in baseline:
            raise ConfigError(
                f"the single-task baseline has no entry for task '{task}' (it has: {', '.join(baseline) or 'none'}); "
                "train the baseline for this task or add it to the baseline file"
            )
        directions = _directions(higher_is_better, task)
        terms = []
        for metric, value in values.items():
            if metric not in directions:
                raise ConfigError(f"task '{task}': metric '{metric}' does not say whether higher or lower is better")
            if metric not in baseline[task]:
                raise ConfigError(f"the single-task baseline of task '{task}' has no value for metric '{metric}'")
            reference = float(baseline[task][metric])
            value = float(value)
            if reference == 0.0 or not math.isfinite(reference):
                raise ConfigError(
                    f"task '{task}': the baseline value of '{metric}' is {reference}; relative performance "
                    "divides by it, so it must be finite and non-zero"
                )
            sign = 1.0 if directions[metric] else -1.0
            # |reference| keeps "positive = better" for a metric whose baseline is negative
            terms.append(sign * (value - reference) / abs(reference) * 100.0)
        per_task[task] = sum(terms) / len(terms)
    return {"per_task": per_task, "mean": sum(per_task.values()) / len(per_task)}


def _check_tasks(tasks: Any, where: str) -> Dict[str, Dict[str, float]]:
    if not isinstance(tasks, Mapping) or not tasks:
        raise DataError(f"{where}: 'tasks' must be a non-empty object {{task: {{metric: value}}}}")
    checked: Dict[str, Dict[str, float]] = {}
    for task, values in tasks.items():
        if not isinstance(task, str) or not isinstance(values, Mapping) or not values:
            raise DataError(f"{where}: task {task!r} must map to a non-empty object {{metric: value}}")
        checked[task] = {}
        for metric, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
                raise DataError(f"{where}: task '{task}', metric '{metric}': {value!r} is not a finite number")
            checked[task][str(metric)] = float(value)
    return checked


def save_baseline(path: Union[str, os.PathLike], metrics: Metrics) -> None:
    """Write ``{task: {metric: value}}`` as a baseline file (atomically)."""
    tasks = _check_tasks(metrics, "baseline to save")
    document = {"format": BASELINE_FORMAT, "version": BASELINE_VERSION, "tasks": tasks}
    atomic_write_text(path, json.dumps(document, indent=2, sort_keys=True) + "\n")


def load_baseline(path: Union[str, os.PathLike]) -> Dict[str, Dict[str, float]]:
    """Read a baseline file; returns ``{task: {metric: value}}``."""
    where = os.fspath(path)
    try:
        with open(where, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise DataError(f"{where}: no such baseline file; write one with automtl.tasks.save_baseline") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}: cannot read the baseline file ({exc})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}:{exc.lineno}:{exc.colno}: the baseline file is not valid JSON ({exc.msg})") from None
    if not isinstance(document, dict) or document.get("format") != BASELINE_FORMAT:
        raise DataError(
            f"{where}: not an automtl baseline file (expected \"format\": \"{BASELINE_FORMAT}\" at the top level)"
        )
    if document.get("version") != BASELINE_VERSION:
        raise DataError(
            f"{where}: baseline file version {document.get('version')!r} is not supported (this automtl reads version {BASELINE_VERSION})"
        )
    return _check_tasks(document.get("tasks"), where)
