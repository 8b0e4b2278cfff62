"""Runs over seeds and over the values of one config key: ``compare --seeds`` and ``automtl sweep``.

* :func:`compare_seeds` runs :func:`~automtl.experiments.compare.compare` once per seed (each in
  ``out/seed-<s>``) and summarises the tables (:mod:`automtl.experiments.seeds`).
* :func:`sweep` traces the trade-off a setting controls, by default AutoMTL's λ_reg: per
  seed, the reference methods (single-task, multi-task, AdaShare, Maximum Roaming) run once
  and the searched method once per value, all from the same initial weights and data order;
  the table has one row per reference method and per value, and the front is drawn as Δt
  against parameters and against MACs (``front.png``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from automtl.errors import ConfigError
from automtl.experiments.compare import LABELS, ComparisonResult, compare, comparison_of, resolve_methods
from automtl.experiments.seeds import SeedTable, seed_table
from automtl.search.build import build_experiment, build_supermodel
from automtl.search.config import SearchConfig, load_config, parse_yaml
from automtl.search.pipeline import SearchResult, search
from automtl.search.run import RunDir

#: The methods a sweep draws beside its front.
SWEEP_REFERENCE = ("single_task", "multi_task", "adashare", "roaming")

ConfigLike = Union[None, str, os.PathLike, Mapping[str, Any], SearchConfig]


def _fresh(run: Optional[RunDir], names: Sequence[str]) -> None:
    if run is None:
        return
    taken = [n for n in names if os.path.exists(run.file(n))]
    if taken:
        raise ConfigError(f"{run.path} already holds {', '.join(taken)}; choose another --out")


@dataclasses.dataclass
class SeedComparison:
    """One :class:`ComparisonResult` per seed and their summary."""

    per_seed: Dict[int, ComparisonResult]
    table: SeedTable
    run_dir: Optional[str]


def compare_seeds(
    config: ConfigLike,
    methods: Union[str, Sequence[str]],
    seeds: Sequence[int],
    *,
    out: Optional[Union[str, os.PathLike]] = None,
    progress: bool = True,
    overrides: Sequence[str] = (),
) -> SeedComparison:
    """:func:`compare` with each seed (initial weights, data order, Gumbel noise, masks; the data
    set stays the one of ``data.data_seed``), in ``out/seed-<s>``; the summary (mean ± std) is
    written to ``out`` as ``table.txt``/``.md``/``.csv``/``.json``."""
    cfg = load_config(config, overrides)
    run = RunDir(out) if out is not None else None
    _fresh(run, [f"seed-{s}" for s in seeds])
    per_seed: Dict[int, ComparisonResult] = {}
    for seed in seeds:
        where = run.file(f"seed-{seed}") if run is not None else None
        per_seed[seed] = compare(cfg.replace(seed=int(seed)), methods, out=where, progress=progress)
    table = seed_table({s: r.table for s, r in per_seed.items()})
    if run is not None:
        run.write_table(table)
    return SeedComparison(per_seed, table, run.path if run is not None else None)


def parse_values(text: Union[str, Sequence[Any]], key: str) -> List[Any]:
    """``"0,1e-4,3e-4"`` -> ``[0, 0.0001, 0.0003]`` (each item read as a YAML scalar, as --set does)."""
    items = [v.strip() for v in text.split(",")] if isinstance(text, str) else list(text)
    values = [parse_yaml(v) if isinstance(v, str) else v for v in items if not (isinstance(v, str) and not v)]
    if not values:
        raise ConfigError(f"no values to sweep {key} over: give e.g. --values 0,1e-3,1e-2")
    if len({repr(v) for v in values}) != len(values):
        raise ConfigError(f"a value of {key} is listed twice in {values}")
    return values


def value_label(method: str, key: str, value: Any) -> str:
    """The row name of one value of the sweep: ``AutoMTL λ_reg=0.001``; a policy file, which
    post-train trains whatever the method drew, by its name (``Policy seg-own.json``)."""
    if key == "post_train.policy" and isinstance(value, str):
        return f"Policy {os.path.basename(value)}"
    short = "λ_reg" if key == "policy_train.lambda_reg" else key
    return f"{LABELS.get(method, method)} {short}={value}"


@dataclasses.dataclass
class SweepResult:
    """Per seed, every run's :class:`SearchResult` by row name and the table; the summary over
    seeds; the points of the front; the run directory."""

    key: str
    values: List[Any]
    seeds: List[int]
    method: str
    results: Dict[int, Dict[str, SearchResult]]
    table: SeedTable
    run_dir: Optional[str]

    def points(self) -> List[Dict[str, Any]]:
        """One point per row: mean (and std) over seeds of parameters, MACs and Δt; for the
        swept rows also the value."""
        out = []
        for row in self.table.to_dict()["rows"]:
            summary = row["summary"]
            point: Dict[str, Any] = {"name": row["name"]}
            for key in ("parameters", "macs", "delta"):
                if key in summary:
                    point[key], point[f"{key}_std"] = summary[key]["mean"], summary[key]["std"]
            for value in self.values:
                if row["name"] == value_label(self.method, self.key, value):
                    point["value"] = value
            out.append(point)
        return out


def sweep(
    config: ConfigLike,
    key: str = "policy_train.lambda_reg",
    values: Union[str, Sequence[Any]] = (0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
    *,
    seeds: Optional[Sequence[int]] = None,
    method: str = "automtl",
    reference: Union[str, Sequence[str]] = SWEEP_REFERENCE,
    out: Optional[Union[str, os.PathLike]] = None,
    progress: bool = True,
    overrides: Sequence[str] = (),
) -> SweepResult:
    """Run ``method`` once per value of ``key`` (any config key, as ``--set`` takes it) and the
    ``reference`` methods once, for every seed; summarise, and draw the front into ``out``."""
    cfg = load_config(config, overrides)
    values = parse_values(values, key)
    for value in values:  # a bad key or value fails here, before any training
        load_config(cfg, [f"{key}={value}"])
    method = resolve_methods([method])[0]
    reference = [r for r in resolve_methods(reference) if r != method] if reference else []
    seeds = list(seeds) if seeds is not None else [int(cfg.seed)]
    run = RunDir(out) if out is not None else None
    _fresh(run, [f"seed-{s}" for s in seeds])
    results: Dict[int, Dict[str, SearchResult]] = {}
    tables = {}
    for seed in seeds:
        seeded = cfg.replace(seed=int(seed))
        experiment = build_experiment(seeded)
        where = RunDir(run.file(f"seed-{seed}")) if run is not None else None
        runs: Dict[str, SearchResult] = {}
        # (row key, config, folder): reference rows by method name (comparison_of labels them and
        # finds the single-task row by it), swept rows by their label
        plan = [(name, seeded.replace(method=name), name) for name in reference]
        plan += [(value_label(method, key, v), load_config(seeded, [f"{key}={v}", f"method={method}"]), f"{method}-{i}")
                 for i, v in enumerate(values)]
        for row, run_cfg, folder in plan:
            sm, _ = build_supermodel(experiment.spec)  # the same initial weights for every run
            runs[row] = search(
                sm, experiment.train, experiment.val, experiment.test, config=run_cfg,
                out=where.file(folder) if where is not None else None, progress=progress,
                spec=experiment.spec, label=row,
            )
        tables[seed] = comparison_of(runs, seeded, experiment)
        if where is not None:
            where.write_table(tables[seed])
        results[seed] = runs
    # the --set overrides belong in the title: the rows differ from a plain sweep's by them
    settings = f" with {', '.join(overrides)}" if overrides else ""
    summary = seed_table(tables, title=f"{cfg.data.benchmark or 'sweep'}{settings}: {key} over {values}, "
                                        f"seeds {','.join(map(str, seeds))}: mean ± std")
    result = SweepResult(key, values, seeds, method, results, summary, run.path if run is not None else None)
    if run is not None:
        run.write_table(summary)
        run.write_json("front.json", {"key": key, "values": values, "seeds": seeds, "points": result.points()})
        from automtl.viz.front import front_figure
        from automtl.viz._figure import save_figure

        save_figure(front_figure(result.points(), key, title=summary.title), run.file("front"))
    return result
