"""The results table, in the shape of the papers' tables: one row per model (single-task,
multi-task, searched), columns for parameters and for MACs (absolute, and relative to
single-task), each task's metrics, Δtᵢ per task and Δt.

MACs are what the derived model computes for one input at the size it was built for, work
that several tasks do on the same input counted once (:func:`automtl.export.model_cost`, the
count ``automtl info`` prints)."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from automtl.errors import ConfigError


@dataclasses.dataclass
class Row:
    name: str
    parameters: Optional[int]
    metrics: Optional[Mapping[str, Mapping[str, float]]]
    seconds: Optional[float] = None
    macs: Optional[int] = None  # None: not counted (e.g. a table written before MACs were)


@dataclasses.dataclass
class Table:
    """Rows with their Δtᵢ, Δt, parameter and MAC ratios computed; render with :meth:`text`
    or :meth:`markdown`, or take :meth:`to_dict`."""

    rows: List[Row]
    tasks: List[str]
    metric_names: Dict[str, List[str]]
    higher_is_better: Dict[str, Dict[str, bool]]
    baseline_parameters: Optional[int]
    relative: Dict[str, Optional[Dict[str, Any]]]
    title: str = ""
    notes: List[str] = dataclasses.field(default_factory=list)
    baseline_macs: Optional[int] = None  # the single-task model's, for the "Rel. (%)" of MACs
    input_size: Optional[List[int]] = None  # one input (no batch) the MACs are counted for

    def cells(self) -> Tuple[List[Tuple[str, int]], List[str], List[List[str]]]:
        """(column groups as (label, span), header, body rows): the cells :meth:`text`,
        :meth:`markdown` and the HTML report lay out."""
        groups: List[Tuple[str, int]] = [("", 1), ("# Params", 2), ("MACs", 2)]
        header = ["Model", "Abs. (M)", "Rel. (%)", "Abs. (M)", "Rel. (%)"]
        for task in self.tasks:
            names = self.metric_names[task]
            groups.append((task, len(names) + 1))
            header += [f"{m} {'↑' if self.higher_is_better[task].get(m, True) else '↓'}" for m in names]
            header.append(f"Δt {task} ↑")
        groups.append(("", 1))
        header.append("Δt ↑")
        body: List[List[str]] = []
        for row in self.rows:
            rel = self.relative.get(row.name)
            cells = [row.name, _fmt_params(row.parameters), _fmt_ratio(row.parameters, self.baseline_parameters),
                     _fmt_params(row.macs), _fmt_ratio(row.macs, self.baseline_macs)]
            for task in self.tasks:
                values = (row.metrics or {}).get(task, {})
                cells += [_fmt(values.get(m)) for m in self.metric_names[task]]
                cells.append(_fmt_delta(rel["per_task"].get(task) if rel else None))
            cells.append(_fmt_delta(rel["mean"] if rel else None))
            body.append(cells)
        return groups, header, body

    def text(self) -> str:
        groups, header, body = self.cells()
        widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
        group_line, i = [], 0
        for label, span in groups:
            width = sum(widths[i : i + span]) + 2 * (span - 1)
            group_line.append(label.center(width) if label else " " * width)
            i += span
        lines = []
        if self.title:
            lines.append(self.title)
        lines.append("  ".join(group_line).rstrip())
        lines.append("  ".join(h.rjust(w) if j else h.ljust(w) for j, (h, w) in enumerate(zip(header, widths))))
        lines.append("  ".join("-" * w for w in widths))
        for cells in body:
            lines.append("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(cells, widths))))
        lines += self.notes
        return "\n".join(lines)

    def markdown(self) -> str:
        groups, header, body = self.cells()
        named = []
        for label, span in groups:
            named += [label] * span
        header = [f"{g} {h}".strip() if g and not h.startswith("Δt") else h for g, h in zip(named, header)]
        lines = []
        if self.title:
            lines += [f"**{self.title}**", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for cells in body:
            lines.append("| " + " | ".join(cells) + " |")
        if self.notes:
            lines += [""] + self.notes
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        """One header row (metric names prefixed with their task), then one row per method."""
        groups, header, body = self.cells()
        named: List[str] = []
        for label, span in groups:
            named += [label] * span
        flat = [f"{g} {h}".strip() if g and not h.startswith("Δt") else h for g, h in zip(named, header)]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(flat)
        writer.writerows(body)
        return buffer.getvalue()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Table":
        """The table :meth:`to_dict` wrote (e.g. a run's ``table.json``)."""
        try:
            rows = [Row(r["name"], r.get("parameters"), r.get("metrics"), r.get("seconds"), r.get("macs")) for r in data["rows"]]
            tasks = list(data["tasks"])
            directions = {t: dict((data.get("higher_is_better") or {}).get(t, {})) for t in tasks}
            relative = {r["name"]: r.get("delta") for r in data["rows"]}
        except (KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"not a results table written by Table.to_dict (missing or malformed {exc})") from None
        names = {t: list(directions[t]) or _names(rows, t) for t in tasks}
        size = data.get("input_size")
        return cls(rows, tasks, names, directions, data.get("baseline_parameters"), relative, data.get("title", ""),
                   list(data.get("notes", [])), data.get("baseline_macs"), list(size) if size else None)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "title": self.title,
            "tasks": self.tasks,
            "higher_is_better": self.higher_is_better,
            "baseline_parameters": self.baseline_parameters,
            "baseline_macs": self.baseline_macs,
            "input_size": self.input_size,
            "notes": self.notes,
            "rows": [
                {
                    "name": row.name,
                    "parameters": row.parameters,
                    "parameters_vs_single_task_pct": _ratio(row.parameters, self.baseline_parameters),
                    "macs": row.macs,
                    "macs_vs_single_task_pct": _ratio(row.macs, self.baseline_macs),
                    "metrics": row.metrics,
                    "delta": self.relative.get(row.name),
                    "seconds": row.seconds,
                }
                for row in self.rows
            ],
        }


def results_table(
    rows: Sequence[Row],
    baseline_metrics: Mapping[str, Mapping[str, float]],
    higher_is_better: Mapping[str, Mapping[str, bool]],
    baseline_parameters: Optional[int],
    title: str = "",
    baseline_macs: Optional[int] = None,
    input_size: Optional[Sequence[int]] = None,
) -> Table:
    """Build the table; Δtᵢ and Δt of every row are computed against ``baseline_metrics``
    (:func:`automtl.tasks.relative_performance`), the parameter and MAC ratios against
    ``baseline_parameters`` and ``baseline_macs`` (the single-task model's). ``input_size``:
    one input's size (no batch) the rows' MACs were counted for."""
    from automtl.tasks import relative_performance

    rows = list(rows)
    tasks: List[str] = []
    for row in rows:
        for task in row.metrics or {}:
            if task not in tasks:
                tasks.append(task)
    if not tasks:
        raise ConfigError("no row of the results table has metrics")
    names = {t: list(higher_is_better.get(t, {})) or _names(rows, t) for t in tasks}
    directions = {t: dict(higher_is_better.get(t, {})) for t in tasks}
    # Δt divides by the single-task value: a metric at 0 there (or missing, or NaN) cannot count
    left_out = sorted(
        f"{t} {m}"
        for t in tasks
        for m in names[t]
        if not _usable((baseline_metrics.get(t) or {}).get(m))
    ) if baseline_metrics else []
    relative: Dict[str, Optional[Dict[str, Any]]] = {}
    for row in rows:
        usable = {
            t: {m: v for m, v in vals.items() if m in directions.get(t, {}) and f"{t} {m}" not in left_out and _usable(v, zero_ok=True)}
            for t, vals in (row.metrics or {}).items()
        }
        usable = {t: vals for t, vals in usable.items() if vals}
        relative[row.name] = relative_performance(usable, baseline_metrics, directions) if usable and baseline_metrics else None
    notes = [f"Δt leaves out metrics whose single-task value is 0 or undefined: {', '.join(left_out)}"] if left_out else []
    size = [int(s) for s in input_size] if input_size is not None else None
    if size is not None and any(row.macs is not None for row in rows):
        notes.append(f"MACs: multiply-accumulates of the model for one {'x'.join(map(str, size))} input, "
                     "work shared by several tasks counted once (automtl info shows them per task)")
    return Table(rows, tasks, names, directions, baseline_parameters, relative, title, notes, baseline_macs, size)


def _usable(value: Optional[float], zero_ok: bool = False) -> bool:
    return value is not None and math.isfinite(value) and (zero_ok or value != 0.0)


def _names(rows: Sequence[Row], task: str) -> List[str]:
    for row in rows:
        if row.metrics and task in row.metrics:
            return list(row.metrics[task])
    return []


def _fmt(value: Optional[float]) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.4f}"


def _fmt_delta(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:+.1f}"


def _fmt_params(count: Optional[int]) -> str:  # parameters and MACs, in millions
    return "-" if count is None else f"{count / 1e6:.3f}"


def _ratio(count: Optional[int], baseline: Optional[int]) -> Optional[float]:
    if count is None or not baseline:
        return None
    return (count - baseline) / baseline * 100.0


def _fmt_ratio(count: Optional[int], baseline: Optional[int]) -> str:
    ratio = _ratio(count, baseline)
    if ratio is None:
        return "-"
    return "-" if count == baseline else f"{ratio:+.1f}"


def comparison_table(comparison: Any, title: str = "") -> Table:
    """The table of a :class:`~automtl.search.pipeline.Comparison`."""
    rows = []
    if comparison.single_task is not None:
        rows.append(_row("Single-Task", comparison.single_task))
    elif comparison.single_task_metrics:
        rows.append(Row("Single-Task (file)", comparison.single_task_parameters, comparison.single_task_metrics,
                        macs=comparison.single_task_macs))
    if comparison.multi_task is not None:
        rows.append(_row("Multi-Task", comparison.multi_task))
    searched = comparison.searched
    rows.append(_row({"automtl": "AutoMTL"}.get(searched.method, searched.method), searched))
    return results_table(rows, comparison.single_task_metrics, comparison.higher_is_better, comparison.single_task_parameters,
                         title, comparison.single_task_macs, comparison.input_size)


def _row(label: str, result: Any) -> Row:
    """The row of a :class:`~automtl.search.pipeline.SearchResult`."""
    return Row(label, result.parameters, result.metrics, result.seconds, result.macs)
