"""``automtl show RUN_DIR``: read what a search wrote, draw it, and write ``report.html``.

Everything comes from the run directory (:mod:`automtl.search.run`): the config, run.json,
metrics.jsonl, policy.json, results.json, table.json, and the model spec from which the
SuperModel is rebuilt to derive the model the policy gives. A run of a SuperModel built in
Python has no spec: pass the same SuperModel (``supermodel=``), or the diagram shows the
choices without telling which shared calls are computed once.

A missing piece (a run still going, a stage not run yet, a baseline without a learned
distribution) leaves its figure out, with a note saying why; it is not an error.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from automtl.errors import AutoMTLError, CheckpointError, first_line
from automtl.policy import Policy
from automtl.search.run import RunDir
from automtl.viz._figure import save_figure
from automtl.viz.curves import stages_in, training_curves
from automtl.viz.diagram import SharingLayout, sharing_diagram, sharing_layout
from automtl.viz.heatmap import PolicyDistribution, policy_heatmap

if TYPE_CHECKING:  # pragma: no cover
    from automtl.export.derive import MultiTaskModel
    from automtl.search.report import Table
    from automtl.supermodel import SuperModel

PLOTS = "plots"
REPORT = "report.html"


@dataclasses.dataclass
class RunContents:
    """What :func:`read_run` found in a run directory."""

    run: RunDir
    info: Dict[str, Any]
    config_text: str
    records: List[Dict[str, Any]]
    results: Optional[Dict[str, Any]]
    table: Optional["Table"]
    policy: Optional[Policy]
    supermodel: Optional["SuperModel"]
    notes: List[str] = dataclasses.field(default_factory=list)

    @property
    def name(self) -> str:
        return os.path.basename(self.run.path.rstrip(os.sep))

    @property
    def method(self) -> str:
        return str(self.info.get("method") or (self.results or {}).get("method") or "?")

    @property
    def tasks(self) -> List[str]:
        return list(self.info.get("tasks") or (self.policy.tasks if self.policy else []))


@dataclasses.dataclass
class Figures:
    """Paths written by :func:`write_figures` (None / empty where a figure could not be drawn)."""

    heatmap: Tuple[str, ...] = ()
    diagram: Tuple[str, ...] = ()
    curves: Dict[str, str] = dataclasses.field(default_factory=dict)
    layout: Optional[SharingLayout] = None
    model: Optional["MultiTaskModel"] = None

    def paths(self) -> List[str]:
        return list(self.heatmap) + list(self.diagram) + list(self.curves.values())


@dataclasses.dataclass
class ShowResult:
    report: str
    figures: Figures
    baselines: Dict[str, Figures]
    notes: List[str]

    def paths(self) -> List[str]:
        out = self.figures.paths()
        for figures in self.baselines.values():
            out += figures.paths()
        return out + [self.report]


# -- reading ---------------------------------------------------------------------------------

def _optional_json(run: RunDir, name: str) -> Optional[Any]:
    return run.read_json(name) if os.path.exists(run.file(name)) else None


def read_run(run_dir: Union[str, os.PathLike], supermodel: Optional["SuperModel"] = None) -> RunContents:
    """Read a run directory; raises :class:`CheckpointError` when it is not one."""
    run = RunDir(run_dir, writer=False)
    if not os.path.isdir(run.path):
        raise CheckpointError(f"{run.path}: no such directory; give the run directory of `automtl search --out DIR`")
    if not (run.exists() or os.path.exists(run.metrics_path)):
        raise CheckpointError(
            f"{run.path} is not an automtl run directory (it has no config.yaml and no metrics.jsonl); "
            "give the folder that `automtl search --out DIR` wrote"
        )
    notes: List[str] = []
    info = _optional_json(run, "run.json") or {}
    config_text = ""
    if run.exists():
        with open(run.config_path, encoding="utf-8") as f:
            config_text = f.read()
    try:
        records = run.read_metrics()
    except ValueError as exc:
        raise CheckpointError(f"{run.metrics_path} holds a line that is not JSON ({exc}); was it edited by hand?") from exc
    results = _optional_json(run, "results.json")
    model_meta = _optional_json(run, os.path.join("model", "model.json"))

    spec = info.get("spec") or (model_meta or {}).get("spec")
    if supermodel is None and spec:
        from automtl.search.build import build_supermodel

        try:
            supermodel, _ = build_supermodel(spec)
            if (model_meta or {}).get("block_skips"):  # AdaShare: its final model skips whole blocks
                from automtl.methods.blocks import restore_block_skips

                restore_block_skips(supermodel, model_meta["block_skips"])  # type: ignore[index]
        except AutoMTLError as exc:
            notes.append(f"the model could not be rebuilt from the run's spec ({first_line(exc)}); the diagram shows choices only")
    elif supermodel is None:
        notes.append(
            "this run searched a SuperModel built in Python, so the run directory cannot rebuild it: the diagram shows the "
            "choices but not which shared calls are computed once (automtl.viz.show(run_dir, supermodel=sm) draws them)"
        )

    policy = _read_policy(run, supermodel, model_meta, notes)
    table = _read_table(run, results, supermodel, notes)
    return RunContents(run, info, config_text, records, results, table, policy, supermodel, notes)


def _read_policy(run: RunDir, sm: Optional["SuperModel"], model_meta: Optional[Mapping[str, Any]], notes: List[str]) -> Optional[Policy]:
    data = _optional_json(run, "policy.json")
    if data is None and model_meta is not None:
        data = model_meta.get("policy")
    if data is None:
        notes.append("no policy yet (policy.json is written when policy-train ends)")
        return None
    try:
        return Policy.from_dict(sm, data) if sm is not None else policy_from_dict(data)
    except AutoMTLError as exc:
        raise CheckpointError(f"{run.policy_path}: {exc}") from exc


def policy_from_dict(data: Mapping[str, Any]) -> Policy:
    """A policy from the form :meth:`Policy.to_dict` writes, without a SuperModel to check it
    against (node order from its ``nodes`` list)."""
    from automtl.errors import PolicyError

    if not isinstance(data, Mapping) or data.get("format") != "automtl.policy" or not isinstance(data.get("tasks"), Mapping):
        raise PolicyError("not a policy file written by automtl (format 'automtl.policy' with a 'tasks' mapping)")
    table = data["tasks"]
    nodes = list(data.get("nodes") or next(iter(table.values()), {}))
    choices = {t: {n: (row[n] or {}).get("choice") for n in nodes if n in row} for t, row in table.items()}
    with_probs = all(isinstance(row.get(n), Mapping) and "probs" in row[n] for row in table.values() for n in nodes)
    probs = {t: {n: row[n]["probs"] for n in nodes} for t, row in table.items()} if with_probs else None
    return Policy(list(table), nodes, choices, probs)


def _read_table(run: RunDir, results: Optional[Mapping[str, Any]], sm: Optional["SuperModel"], notes: List[str]) -> Optional["Table"]:
    """``table.json`` (the comparison `automtl search` prints), else one built from the
    results of this run and the baselines found beside it."""
    from automtl.search.report import Row, Table, results_table

    data = _optional_json(run, "table.json")
    if data is not None:
        try:
            return Table.from_dict(data)
        except AutoMTLError as exc:
            notes.append(f"table.json was not read: {first_line(exc)}")
    if results is None:
        notes.append("no results yet (results.json is written when post-train ends)")
        return None
    rows, single, single_params, single_macs = [], {}, None, None
    labels = {"single_task": "Single-Task", "multi_task": "Multi-Task"}
    for name, label in labels.items():
        found = _optional_json(run.sub(name), "results.json")
        if found is not None:
            metrics = _final_metrics(found)
            rows.append(Row(label, found.get("parameters"), metrics, found.get("seconds"), found.get("macs")))
            if name == "single_task":
                single, single_params, single_macs = metrics or {}, found.get("parameters"), found.get("macs")
    label = {"automtl": "AutoMTL"}.get(str(results.get("method")), str(results.get("method", "searched")))
    rows.append(Row(label, results.get("parameters"), _final_metrics(results), results.get("seconds"), results.get("macs")))
    directions: Dict[str, Dict[str, bool]] = {}
    if sm is not None:
        from automtl.tasks import higher_is_better_of

        directions = higher_is_better_of(sm.tasks)
    split = "test" if results.get("test") else "val"
    try:
        return results_table(rows, single if directions else {}, directions, single_params, title=f"{split} split",
                             baseline_macs=single_macs, input_size=results.get("input_size"))
    except AutoMTLError as exc:
        notes.append(f"no results table: {first_line(exc)}")
        return None


def _final_metrics(results: Mapping[str, Any]) -> Optional[Dict[str, Dict[str, float]]]:
    final = results.get("test") or results.get("val")
    return None if not final else final.get("metrics")


def learned_distribution(contents: RunContents) -> Optional[PolicyDistribution]:
    """The policy distribution the search learned: the one policy.json carries, else the
    policy logits of the policy-train checkpoint (when the policy came from elsewhere)."""
    if contents.policy is not None:
        dist = PolicyDistribution.from_policy(contents.policy)
        if dist is not None:
            return dist
    path = contents.run.checkpoint("policy_train")
    if contents.supermodel is None or not os.path.exists(path):
        return None
    from automtl.search.checkpoint import load_checkpoint

    state = load_checkpoint(path, "policy_train")["model"]
    logits = {k: v for k, v in state.items() if k.endswith(".logits")}
    missing = contents.supermodel.load_state_dict(logits, strict=False)
    if missing.unexpected_keys:
        raise CheckpointError(f"{path} does not fit the run's model: unexpected {', '.join(missing.unexpected_keys[:3])}")
    return PolicyDistribution.from_supermodel(contents.supermodel)


# -- drawing ---------------------------------------------------------------------------------

def write_figures(contents: RunContents, out_dir: Optional[str] = None, formats: Sequence[str] = ("png", "svg")) -> Figures:
    """Heat map, diagram (both in ``formats``) and the curves of every stage (PNG) into
    ``out_dir`` (default ``RUN_DIR/plots``)."""
    out = out_dir or contents.run.file(PLOTS)
    figures = Figures()
    policy = contents.policy
    dist = learned_distribution(contents)
    if dist is not None:
        chosen = policy if policy is not None and policy.tasks == dist.tasks and policy.nodes == dist.nodes else None
        title = f"Learned policy distribution of {contents.name}"
        figures.heatmap = save_figure(policy_heatmap(dist, chosen, title), os.path.join(out, "policy_heatmap"), formats)
    elif policy is not None:
        contents.notes.append(f"no heat map: method '{contents.method}' learns no policy distribution (a fixed policy)")
    if policy is not None:
        if contents.supermodel is not None:
            from automtl.export.derive import derive

            figures.model = derive(contents.supermodel, policy)
        figures.layout = sharing_layout(policy, contents.supermodel, figures.model)
        title = f"Derived model of {contents.name}: what each task runs"
        figures.diagram = save_figure(sharing_diagram(figures.layout, title), os.path.join(out, "sharing_diagram"), formats)
    figures.curves = write_curves(contents.records, out, contents.name)
    if not contents.records:
        contents.notes.append("metrics.jsonl is empty: no training curves yet")
    return figures


def write_curves(records: Sequence[Mapping[str, Any]], out_dir: str, name: str = "") -> Dict[str, str]:
    written = {}
    for stage in stages_in(records):
        figure = training_curves(records, stage, title=f"{name}: {stage}" if name else "")
        if figure is not None:
            written[stage] = save_figure(figure, os.path.join(out_dir, f"curves_{stage}"), ("png",))[0]
    return written


def show(run_dir: Union[str, os.PathLike], supermodel: Optional["SuperModel"] = None, baselines: bool = True) -> ShowResult:
    """Draw a run: figures into ``RUN_DIR/plots/``, the page into ``RUN_DIR/report.html``;
    with ``baselines``, the curves of ``RUN_DIR/baselines/*`` into their own ``plots/``."""
    from automtl.viz.report import render_report

    contents = read_run(run_dir, supermodel)
    figures = write_figures(contents)
    baseline_figures: Dict[str, Figures] = {}
    baseline_contents: Dict[str, RunContents] = {}
    folder = contents.run.file("baselines")
    if baselines and os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            sub = contents.run.sub(name)
            if not os.path.exists(sub.metrics_path):
                continue
            other = RunContents(sub, _optional_json(sub, "run.json") or {}, "", sub.read_metrics(),
                                _optional_json(sub, "results.json"), None, None, None)
            baseline_contents[name] = other
            baseline_figures[name] = Figures(curves=write_curves(other.records, sub.file(PLOTS), f"baseline {name}"))
    page = render_report(contents, figures, baseline_contents, baseline_figures)
    report = contents.run.file(REPORT)
    from automtl.io import atomic_write_text

    atomic_write_text(report, page)
    return ShowResult(report, figures, baseline_figures, contents.notes)


def describe(result: ShowResult, root: str) -> str:
    """What ``automtl show`` prints: the files written, relative to the run directory."""
    lines = [f"wrote {os.path.relpath(p, root)}" for p in result.paths()]
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)

