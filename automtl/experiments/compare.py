"""Compare sharing methods on the same data, backbone, budget of steps and seed.

    result = compare(preset("scenes"), ["single", "multi", "automtl", "adashare", "roaming"], out="runs/cmp")
    print(result.table.text())

Every method runs the stages it has with the one config - the same pre-, policy- and
post-train steps, optimisers and data order - on a SuperModel compiled afresh from the same
model spec, so every method starts from the same initial weights. Each final model trains for
``post_train.steps`` (methods that search spend their search stages on top; the time column
shows what each one cost). The table has one row per method: parameters and MACs (what the
final model computes for one input, shared work counted once; both also as % against the
single-task model), each task's metrics, Δtᵢ and Δt against the single-task row (or a stored
baseline file, ``baselines.file``), and the wall time of the method's run.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from automtl.errors import ConfigError
from automtl.policy import Policy
from automtl.search.build import Experiment, build_experiment, build_supermodel
from automtl.search.config import SearchConfig, load_config
from automtl.search.pipeline import SearchResult, input_size_of, model_macs, search
from automtl.search.report import Row, Table, results_table
from automtl.search.run import RunDir
from automtl.methods.base import METHODS
from automtl.search.trainer import Callback

DEFAULT_METHODS = ("single", "multi", "automtl", "adashare", "roaming")

#: ``automtl compare``'s steps on the built-in benchmarks, over their search presets
#: (:mod:`automtl.search.presets`): about half, so that five methods finish in a few minutes
#: on a 2-core CPU; τ still ends near 0.3 (80 and 75 epochs of 0.965), as in the presets.
COMPARE_BUDGETS = {
    "scenes": {
        "pretrain": {"steps": 80},
        "policy_train": {"steps": 160, "tau_decay_every": 1},
        "post_train": {"steps": 160},
    },
    "multi-mnist": {
        "pretrain": {"steps": 150},
        "policy_train": {"steps": 300, "tau_decay_every": 2},
        "post_train": {"steps": 300},
    },
    "textured-mnist": {
        "pretrain": {"steps": 80},
        "policy_train": {"steps": 160, "tau_decay_every": 1},
        "post_train": {"steps": 160},
    },
}
LABELS = {
    "single_task": "Single-Task",
    "multi_task": "Multi-Task",
    "automtl": "AutoMTL",
    "adashare": "AdaShare",
    "roaming": "Max-Roaming",
}


class TimedTable(Table):
    """A results table with a last column of training times (``Row.seconds``)."""

    def cells(self) -> Tuple[List[Tuple[str, int]], List[str], List[List[str]]]:
        groups, header, body = super().cells()
        groups = groups + [("", 1)]
        header = header + ["Time (s)"]
        body = [cells + ["-" if row.seconds is None else f"{row.seconds:.0f}"] for row, cells in zip(self.rows, body)]
        return groups, header, body


@dataclasses.dataclass
class ComparisonResult:
    """Each method's :class:`~automtl.search.pipeline.SearchResult` (by canonical name), the
    table, and the run directory (one sub-directory per method)."""

    results: Dict[str, SearchResult]
    table: TimedTable
    run_dir: Optional[str]


def resolve_methods(names: Union[str, Sequence[str]]) -> List[str]:
    """Canonical method names (``single`` -> ``single_task``...), checked, in order."""
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    resolved: List[str] = []
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        if name not in METHODS:
            known = sorted(set(METHODS) | set(METHODS.aliases))
            raise METHODS.unknown(name, what="method", listing="the methods are", shown=known)
        canonical = METHODS.canonical(name)
        if canonical in resolved:
            raise ConfigError(f"method '{name}' is listed twice")
        resolved.append(canonical)
    if not resolved:
        raise ConfigError("no methods to compare: give e.g. --methods single,multi,automtl")
    return resolved


def compare(
    config: Union[None, str, os.PathLike, Dict[str, Any], SearchConfig] = None,
    methods: Union[str, Sequence[str]] = DEFAULT_METHODS,
    *,
    out: Optional[Union[str, os.PathLike]] = None,
    weighting: Optional[str] = None,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    overrides: Sequence[str] = (),
    experiment: Optional[Experiment] = None,
    data: Any = None,
) -> ComparisonResult:
    """Run every method of ``methods`` with ``config`` (a benchmark or ``data.dataset`` config:
    the data and the model come from it) and the loss ``weighting`` (default: the config's), in
    ``out/<method>``, and build the comparison table (written to ``out`` as ``table.txt``,
    ``table.md``, ``table.csv`` and ``table.json``). ``data``: your own data instead of the
    config's (a :class:`~automtl.data.Benchmark`, a mapping of its fields, or a dataset
    factory: :func:`automtl.data.load_dataset`), the model still from ``config.model``."""
    cfg = load_config(config, overrides)
    if weighting is not None:
        cfg = cfg.replace(weighting=weighting)
    names = resolve_methods(methods)
    if experiment is None:
        experiment = build_experiment(cfg, data)
    elif data is not None:
        raise ConfigError("compare: give either experiment= or data=, not both")
    run = RunDir(out) if out is not None else None
    if run is not None:
        taken = [n for n in names if os.path.exists(run.file(n))]
        if taken:
            raise ConfigError(f"{run.path} already holds runs of {', '.join(taken)}; choose another --out")
    results: Dict[str, SearchResult] = {}
    for name in names:
        sm, _ = build_supermodel(experiment.spec)  # the same initial weights for every method
        results[name] = search(
            sm, experiment.train, experiment.val, experiment.test,
            config=cfg.replace(method=name), out=run.file(name) if run is not None else None,
            progress=progress, callbacks=callbacks, spec=experiment.spec, label=name,
        )
    table = comparison_of(results, cfg, experiment)
    if run is not None:
        run.write_table(table)
    return ComparisonResult(results, table, run.path if run is not None else None)


def comparison_of(results: Dict[str, SearchResult], cfg: SearchConfig, experiment: Experiment) -> TimedTable:
    """The table of finished runs: Δt against the single-task run when there is one, else the
    config's baseline file, else none."""
    from automtl.tasks import higher_is_better_of, load_baseline

    sm = experiment.supermodel
    single = results.get("single_task")
    if single is not None and single.metrics is not None:
        baseline = single.metrics
    elif cfg.baselines.file:
        baseline = load_baseline(cfg.baselines.file)
    else:
        baseline = {}
    single_task_model = sm.derive(Policy.all_own(sm))
    stl_parameters = single_task_model.num_parameters()
    stl_macs = model_macs(single_task_model, sm)
    rows = [Row(LABELS.get(name, name), r.parameters, r.metrics, r.seconds, r.macs) for name, r in results.items()]
    split = "test" if any(r.test is not None for r in results.values()) else "val"
    title = f"{cfg.data.benchmark or cfg.data.dataset or 'comparison'} ({split} split), seed {cfg.seed}, weighting {cfg.weighting}"
    table = results_table(rows, baseline, higher_is_better_of(sm.tasks), stl_parameters, title, stl_macs, input_size_of(sm))
    if not baseline:
        table.notes.append("no single-task row or baseline file: Δt is not computed")
    return TimedTable(**{field.name: getattr(table, field.name) for field in dataclasses.fields(table)})
