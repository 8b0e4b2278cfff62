"""Repeat a comparison over several seeds and summarise it: mean ± standard deviation per cell.

One seed's table cannot tell a method's effect from noise. :func:`seed_table` takes the
tables of the same runs made with different seeds (weights, data order, Gumbel noise, masks:
everything ``seed`` drives; the data set itself stays the one of ``data_seed``) and builds
one table whose cells are ``mean ± std`` over the seeds (sample standard deviation), with
every row's Δt per seed side by side: Δt is paired - each seed's rows are measured against
that seed's single-task row - so a method whose Δt changes sign between seeds is visibly
within the spread. The per-seed tables are kept (:attr:`SeedTable.per_seed`).
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from automtl.errors import ConfigError
from automtl.search.report import Table, _fmt, _fmt_delta

__all__ = ["parse_seeds", "SeedTable", "seed_table", "spread"]


def parse_seeds(text: Union[str, Sequence[int], None], repeats: Optional[int] = None, first: int = 0) -> List[int]:
    """The seeds to run: ``"0,1,2"`` (or a list), or ``repeats`` seeds from ``first`` on."""
    if text is not None and repeats is not None:
        raise ConfigError("give either --seeds or --repeats, not both")
    if repeats is not None:
        if repeats < 1:
            raise ConfigError(f"--repeats must be at least 1, got {repeats}")
        return list(range(first, first + repeats))
    if text is None:
        return [first]
    if isinstance(text, str):
        seeds: List[int] = []
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                seeds.append(int(part))
            except ValueError:
                raise ConfigError(f"--seeds takes comma-separated integers such as 0,1,2; got {part!r} in {text!r}") from None
    else:
        seeds = [int(s) for s in text]
    if not seeds:
        raise ConfigError("no seeds given: e.g. --seeds 0,1,2")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"a seed is listed twice in {list(seeds)}")
    return seeds


def spread(values: Sequence[Optional[float]]) -> Optional[Tuple[float, float]]:
    """(mean, sample standard deviation) of the finite values; std 0 for one value; None if none."""
    usable = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not usable:
        return None
    mean = statistics.fmean(usable)
    return mean, (statistics.stdev(usable) if len(usable) > 1 else 0.0)


def _fmt_spread(values: Sequence[Optional[float]], fmt=_fmt) -> str:
    """``mean ± std`` with the std given to the mean's decimals (``85.40 ± 0.91``, not ``± 0.9097``)."""
    found = spread(values)
    if found is None:
        return "-"
    mean = fmt(found[0])
    decimals = len(mean.split(".", 1)[1]) if "." in mean else 0
    std = abs(float(fmt(found[1])))  # in fmt's unit (e.g. millions), then to the mean's decimals
    return f"{mean} ± {std:.{decimals}f}"


class SeedTable:
    """The per-seed tables of one comparison, summarised; render with :meth:`text`,
    :meth:`markdown`, :meth:`csv`, or take :meth:`to_dict`."""

    def __init__(self, per_seed: Mapping[int, Table], title: str = ""):
        if not per_seed:
            raise ConfigError("no per-seed tables to summarise")
        self.per_seed: Dict[int, Table] = dict(per_seed)
        self.seeds = list(self.per_seed)
        first = self.per_seed[self.seeds[0]]
        self.tasks = list(first.tasks)
        self.metric_names = {t: list(first.metric_names[t]) for t in self.tasks}
        self.higher_is_better = first.higher_is_better
        self.names = [row.name for row in first.rows]
        for seed, table in self.per_seed.items():
            if [row.name for row in table.rows] != self.names or list(table.tasks) != self.tasks:
                raise ConfigError(f"the table of seed {seed} has other rows or tasks than seed {self.seeds[0]}'s: "
                                  "summarise only runs of the same comparison")
        self.title = title or f"{first.title.split(', seed')[0]}, seeds {','.join(map(str, self.seeds))}: mean ± std"

    def _rows(self, name: str) -> List[Mapping[str, Any]]:
        return [next(r for r in table.to_dict()["rows"] if r["name"] == name) for table in self.per_seed.values()]

    def values(self, name: str, key: str) -> List[Optional[float]]:
        """One row's values of a column over the seeds: ``"parameters"``, ``"macs"``, ``"seconds"``,
        ``"delta"`` (Δt), ``"delta/<task>"`` (Δtᵢ) or ``"<task>/<metric>"``."""
        out: List[Optional[float]] = []
        for row in self._rows(name):
            if key == "delta":
                out.append((row.get("delta") or {}).get("mean"))
            elif key.startswith("delta/"):
                out.append(((row.get("delta") or {}).get("per_task") or {}).get(key[len("delta/"):]))
            elif "/" in key:
                task, metric = key.split("/", 1)
                out.append(((row.get("metrics") or {}).get(task) or {}).get(metric))
            else:
                out.append(row.get(key))
        return out

    def percent_of_single_task(self, name: str, key: str) -> List[Optional[float]]:
        """``parameters`` or ``macs`` of a row per seed, in % of that seed's Single-Task row
        (None without one)."""
        if "Single-Task" not in self.names:
            return [None] * len(self.seeds)
        return [None if v is None or not s else 100.0 * v / s
                for v, s in zip(self.values(name, key), self.values("Single-Task", key))]

    def cells(self) -> Tuple[List[Tuple[str, int]], List[str], List[List[str]]]:
        has_macs = any(v is not None for n in self.names for v in self.values(n, "macs"))
        groups: List[Tuple[str, int]] = [("", 1), ("# Params", 2)] + ([("MACs", 2)] if has_macs else [])
        header = ["Model", "(M) mean ± std", "% of Single-Task"] + (["(M) mean ± std", "% of Single-Task"] if has_macs else [])
        for task in self.tasks:
            groups.append((task, len(self.metric_names[task]) + 1))
            header += [f"{m} {'↑' if self.higher_is_better[task].get(m, True) else '↓'}" for m in self.metric_names[task]]
            header.append(f"Δt {task} ↑")
        groups += [("", 1), ("", 1), ("", 1)]
        header += ["Δt ↑", "Δt per seed (" + ",".join(map(str, self.seeds)) + ")", "Time (s)"]
        millions = lambda v: f"{v / 1e6:.3f}"  # noqa: E731 - a format, like report's _fmt
        percent = lambda v: f"{v:.1f}"  # noqa: E731
        body: List[List[str]] = []
        for name in self.names:
            cells = [name, _fmt_spread(self.values(name, "parameters"), millions), _fmt_spread(self.percent_of_single_task(name, "parameters"), percent)]
            if has_macs:
                cells += [_fmt_spread(self.values(name, "macs"), millions), _fmt_spread(self.percent_of_single_task(name, "macs"), percent)]
            for task in self.tasks:
                cells += [_fmt_spread(self.values(name, f"{task}/{m}")) for m in self.metric_names[task]]
                cells.append(_fmt_spread(self.values(name, f"delta/{task}"), _fmt_delta))
            deltas = self.values(name, "delta")
            cells.append(_fmt_spread(deltas, _fmt_delta))
            cells.append(" ".join(_fmt_delta(v) for v in deltas))
            cells.append(_fmt_spread(self.values(name, "seconds"), lambda v: f"{v:.0f}"))
            body.append(cells)
        return groups, header, body

    @property
    def notes(self) -> List[str]:
        """Which rows' Δt is within one standard deviation of 0 (of single-task's level)."""
        level = []
        for name in self.names:
            found = spread(self.values(name, "delta"))
            if found is not None and len(self.seeds) > 1 and found[1] > 0 and abs(found[0]) <= found[1]:
                level.append(name)
        notes = [f"Δt is paired: each seed's rows against that seed's Single-Task row; std is the sample standard deviation over {len(self.seeds)} seed(s)"]
        if level:
            notes.append("Δt within one standard deviation of 0 (not told apart from single-task on these seeds): " + ", ".join(level))
        return notes

    # the layout of Table's renderers, over this table's cells
    text = Table.text
    markdown = Table.markdown
    csv = Table.csv


    def to_dict(self) -> Dict[str, Any]:
        keys = ["parameters", "macs", "seconds", "delta"] + [f"delta/{t}" for t in self.tasks]
        keys += [f"{t}/{m}" for t in self.tasks for m in self.metric_names[t]]
        rows = []
        for name in self.names:
            summary = {}
            for key in keys:
                values = self.values(name, key)
                found = spread(values)
                if found is not None:
                    summary[key] = {"mean": found[0], "std": found[1], "per_seed": values}
            for key in ("parameters", "macs"):
                values = self.percent_of_single_task(name, key)
                found = spread(values)
                if found is not None:
                    summary[f"{key}_percent"] = {"mean": found[0], "std": found[1], "per_seed": values}
            rows.append({"name": name, "summary": summary})
        return {
            "title": self.title,
            "seeds": self.seeds,
            "tasks": self.tasks,
            "rows": rows,
            "notes": self.notes,
            "per_seed": {str(seed): table.to_dict() for seed, table in self.per_seed.items()},
        }


def seed_table(per_seed: Mapping[int, Table], title: str = "") -> SeedTable:
    """Summarise the tables of one comparison run with several seeds."""
    return SeedTable(per_seed, title)
