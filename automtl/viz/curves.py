"""Training curves of one stage, from the lines of ``metrics.jsonl``: training losses (all
tasks and each task), the policy loss, τ, the learning rates, and from the evaluations the
validation loss per task, the arg-max policy's option shares and entropy, and every
validation metric of every task (one panel each: metrics have their own scales)."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from automtl.compiler.ir import OPTIONS
from automtl.viz._figure import OPTION_COLOURS, new_figure

Series = Tuple[List[float], List[float]]

#: Keys of train records that are not plotted as curves of their own.
_NOT_PLOTTED = ("stage", "step", "kind", "epoch")
PANEL_COLUMNS = 4


def stages_in(records: Sequence[Mapping[str, Any]]) -> List[str]:
    """The stages that logged something, in the order they ran."""
    found: List[str] = []
    for record in records:
        stage = record.get("stage")
        if isinstance(stage, str) and stage not in found:
            found.append(stage)
    return found


def task_names(records: Sequence[Mapping[str, Any]]) -> List[str]:
    """Task names in the order the records first give them (per-task losses and metrics)."""
    names: List[str] = []
    for record in records:
        candidates = [k[len("loss/"):] for k in record if k.startswith("loss/")]
        if isinstance(record.get("loss"), Mapping):
            candidates += list(record["loss"])
        if isinstance(record.get("metrics"), Mapping):
            candidates += list(record["metrics"])
        for name in candidates:
            if name not in names:
                names.append(name)
    return names


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _add(series: Dict[str, Series], key: str, step: float, value: Any) -> None:
    number = _number(value)
    if number is not None:
        xs, ys = series.setdefault(key, ([], []))
        xs.append(step)
        ys.append(number)


def collect(records: Sequence[Mapping[str, Any]], stage: str) -> Dict[str, Dict[str, Series]]:
    """``{panel group: {series name: (steps, values)}}`` for one stage; groups: ``train``
    (train-record scalars by key), ``val_loss`` (per task, plus ``weighted``), ``metrics``
    (``task/metric``), ``policy`` (option shares and ``entropy``)."""
    groups: Dict[str, Dict[str, Series]] = {"train": {}, "val_loss": {}, "metrics": {}, "policy": {}}
    for record in records:
        if record.get("stage") != stage or _number(record.get("step")) is None:
            continue
        step = float(record["step"])
        kind = record.get("kind")
        if kind == "train":
            for key, value in record.items():
                if key not in _NOT_PLOTTED:
                    _add(groups["train"], key, step, value)
        elif kind == "eval":
            for task, value in (record.get("loss") or {}).items():
                _add(groups["val_loss"], task, step, value)
            _add(groups["val_loss"], "weighted", step, record.get("weighted_loss"))
            for task, values in (record.get("metrics") or {}).items():
                for metric, value in (values or {}).items():
                    _add(groups["metrics"], f"{task}/{metric}", step, value)
            policy = record.get("policy") or {}
            for option, value in (policy.get("argmax_share") or {}).items():
                _add(groups["policy"], option, step, value)
            _add(groups["policy"], "entropy", step, policy.get("entropy"))
    return groups


def training_curves(records: Sequence[Mapping[str, Any]], stage: str, title: str = "") -> Optional[Figure]:
    """The figure of ``stage`` (None when it logged nothing)."""
    groups = collect(records, stage)
    if not any(groups.values()):
        return None
    tasks = task_names(records)
    colour = {t: f"C{i % 10}" for i, t in enumerate(tasks)}
    train = groups["train"]
    panels: List[Tuple[str, Dict[str, Series], Dict[str, Any]]] = []

    losses = {k: v for k, v in train.items() if k == "loss" or k.startswith("loss/")}
    if losses:
        panels.append(("training loss", losses, {}))
    policy_losses = {k: v for k, v in train.items() if k.startswith("loss_")}
    if policy_losses:
        panels.append(("policy-step loss", policy_losses, {}))
    if "tau" in train:
        panels.append(("temperature τ", {"τ": train["tau"]}, {}))
    rates = {k: v for k, v in train.items() if k == "lr" or k.endswith("_lr")}
    if rates:
        panels.append(("learning rate", rates, {"log": True}))
    shown = set(losses) | set(policy_losses) | set(rates) | {"tau"}
    others = {k: v for k, v in train.items() if k not in shown}
    if others:  # values a plug-in method or weighting logs
        panels.append(("other training values", others, {}))
    if groups["val_loss"]:
        panels.append(("validation loss", groups["val_loss"], {"eval": True}))
    shares = {k: v for k, v in groups["policy"].items() if k in OPTIONS}
    if shares:
        panels.append(("arg-max policy: share of choices", shares, {"eval": True, "ylim": (-0.02, 1.02)}))
    if "entropy" in groups["policy"]:
        panels.append(("policy entropy (nats)", {"entropy": groups["policy"]["entropy"]}, {"eval": True}))
    evaluations = sum(1 for r in records if r.get("stage") == stage and r.get("kind") == "eval")
    if evaluations > 1:
        for name, series in groups["metrics"].items():
            task, metric = name.split("/", 1)
            panels.append((f"val {task}: {metric}", {name: series}, {"eval": True}))
    elif groups["metrics"]:  # one evaluation: a curve per metric would be a lone dot; list them
        step = next(iter(groups["metrics"].values()))[0][-1]
        panels.append((f"validation metrics at step {step:g}", groups["metrics"], {"text": True}))

    columns = min(PANEL_COLUMNS, len(panels))
    rows = math.ceil(len(panels) / columns)
    width, height = 3.4 * columns + 0.4, 2.3 * rows + 0.7
    figure = new_figure(width, height, layout=None)
    # margins in inches: tick labels left, the title on top, the step label under each row
    figure.subplots_adjust(left=0.6 / width, right=1 - 0.2 / width, top=1 - 0.6 / height, bottom=0.45 / height, wspace=0.3, hspace=0.65)
    axes = figure.subplots(rows, columns, squeeze=False)
    steps = [x for group in groups.values() for xs, _ in group.values() for x in xs]
    span = (min(0.0, min(steps)), max(steps)) if steps else (0.0, 1.0)
    for ax, (heading, series, options) in zip(axes.flat, panels):
        if options.get("text"):
            _text_panel(ax, heading, series, colour)
        else:
            _panel(ax, heading, series, options, colour, span)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    figure.suptitle(title or f"Training curves: {stage}", fontsize=11)
    return figure


def _style(name: str, colour: Mapping[str, str]) -> Dict[str, Any]:
    if name in ("loss", "weighted"):
        return {"color": "black", "linewidth": 2.0, "label": "all tasks (Σ λᵢ Lᵢ)" if name == "loss" else "Σ λᵢ Lᵢ"}
    if name in OPTIONS:
        return {"color": OPTION_COLOURS[name] if name != "skip" else "#6b7480", "label": name}
    task = name[len("loss/"):] if name.startswith("loss/") else name.split("/", 1)[0]
    if task in colour:
        return {"color": colour[task], "label": task}
    return {"label": name}


def _panel(ax: Axes, heading: str, series: Mapping[str, Series], options: Mapping[str, Any], colour: Mapping[str, str],
           span: Tuple[float, float]) -> None:
    for name, (xs, ys) in series.items():
        style = _style(name, colour)
        few = len(xs) <= 25
        ax.plot(xs, ys, marker="o" if few else None, markersize=3.5, **style)
        if options.get("eval") and ys and len(series) == 1:  # evaluations are few: say the last value
            ax.annotate(_fmt(ys[-1]), (xs[-1], ys[-1]), xytext=(3, 3), textcoords="offset points", fontsize=7, color=style.get("color", "black"))
    if options.get("log") and all(v > 0 for _, ys in series.values() for v in ys):
        ax.set_yscale("log")
    if "ylim" in options:
        ax.set_ylim(*options["ylim"])
    pad = 0.04 * (span[1] - span[0]) or 0.5
    ax.set_xlim(span[0] - pad, span[1] + pad)  # every panel of a stage on the stage's steps
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    ax.set_title(heading, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=6.5, frameon=False)


def _text_panel(ax: Axes, heading: str, series: Mapping[str, Series], colour: Mapping[str, str]) -> None:
    """``task  metric  value`` lines, in as many text columns as the panel needs."""
    ax.set_axis_off()
    ax.set_title(heading, fontsize=9)
    lines = [(name.split("/", 1), ys[-1]) for name, (_, ys) in series.items()]
    per_column = 14
    for k, ((task, metric), value) in enumerate(lines):
        column, row = divmod(k, per_column)
        ax.text(0.0 + 0.5 * column, 1.0 - row * 0.07, f"{task} {metric}: {_fmt(value)}", transform=ax.transAxes,
                fontsize=6.5 if len(lines) > per_column else 7, va="top", color=colour.get(task, "black"))


def _fmt(value: float) -> str:
    magnitude = abs(value)
    return f"{value:.1f}" if magnitude >= 100 else f"{value:.3g}"
