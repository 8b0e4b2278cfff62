"""Task grouping (Standley et al., 2020): which tasks to learn together, under an inference
budget.

1. **Candidates**: one multi-task (all-shared) network per non-empty subset of the tasks
   (``candidates: all``), or only per subset of one or two tasks (``pairs``), plus - with
   ``half_size`` - a half-size single-task network per task (every width of the backbone
   scaled by 1/√2).
2. **Training**: each candidate trains for ``fraction`` of ``post_train.steps`` (< 1: the
   early-stopping approximation) with the post-train loop, and its per-task validation loss is
   recorded. With ``pairs`` the loss of a network of three or more tasks is predicted by the
   higher-order approximation: task t's loss in S is the mean of its losses in the pairs
   {t, u}, u ∈ S \\ {t}.
3. **Cost**: the multiply-accumulates of the network's backbone (its heads - the decoders -
   not counted, as in the paper) per image, in units of the full-size backbone's: a full-size
   network costs 1, a half-size one what its MACs say (about 0.5).
4. **Selection**: for every budget, the set of candidates that covers every task with the
   lowest total validation loss Σₜ λₜ min_{n∈S} L(n, t) and cost ≤ budget, found exactly by
   branch and bound (:func:`automtl.methods.selection.select_networks`).
5. **Final training**: the chosen networks that were not trained fully (or only predicted)
   are trained for the full ``post_train.steps``; each task is then served by the chosen
   network with its lowest validation loss, whose test metrics are reported.

Run directory: ``candidates/<network>/`` and ``final/<network>/`` (ordinary run
directories), ``grouping.json`` (candidates, costs, losses, choices) and the table as
``table.txt``, ``table.md`` and ``table.csv``.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import inspect
import io
import itertools
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from tqdm.auto import tqdm

from automtl.errors import ConfigError
from automtl.methods.selection import select_networks
from automtl.search.build import Experiment, build_experiment, build_supermodel
from automtl.search.config import SearchConfig, load_config
from automtl.search.pipeline import SearchResult, search
from automtl.search.run import RunDir
from automtl.search.trainer import Callback

HALF_WIDTH = 1 / math.sqrt(2)  # MACs of a convolution grow with in x out channels

#: ``automtl group``'s steps on the built-in benchmarks, over their search presets: each of
#: the 19 candidate networks of ``scenes`` trains for ``fraction`` of them
GROUP_BUDGETS = {"scenes": {"post_train": {"steps": 200}}}


@dataclasses.dataclass
class Network:
    """A candidate network: its tasks, size (``full`` or ``half``), cost (in full-size
    backbone units), per-task validation losses, where they come from (``trained`` for
    ``steps`` steps, or ``predicted``), and its test metrics and training time once trained."""

    tasks: Tuple[str, ...]
    size: str
    cost: float
    losses: Dict[str, float]
    source: str
    steps: int = 0
    metrics: Optional[Dict[str, Dict[str, float]]] = None
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return "+".join(self.tasks) + ("-half" if self.size == "half" else "")

    def label(self) -> str:
        return "{" + ", ".join(self.tasks) + "}" + ("½" if self.size == "half" else "")


@dataclasses.dataclass
class GroupChoice:
    """The networks chosen for one budget: their cost, the loss the choice was made on, the
    loss after training them fully, and which network serves each task (with its metrics)."""

    budget: float
    networks: List[str]
    labels: List[str]
    cost: float
    selection_loss: float
    loss: Optional[float] = None
    serving: Dict[str, str] = dataclasses.field(default_factory=dict)
    metrics: Dict[str, Dict[str, float]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class GroupingResult:
    candidates: List[Network]
    choices: List[GroupChoice]
    unit_macs: int
    tasks: List[str]
    title: str = ""
    run_dir: Optional[str] = None
    final: Dict[str, Network] = dataclasses.field(default_factory=dict)

    def rows(self) -> Tuple[List[str], List[List[str]]]:
        header = ["Budget", "Networks", "Cost", "Val loss (choice)", "Val loss (trained)"]
        body = []
        for c in self.choices:
            if not c.networks:
                body.append([f"{c.budget:g}", "(no set of networks fits)", "-", "-", "-"])
                continue
            body.append([f"{c.budget:g}", " ".join(c.labels), f"{c.cost:.2f}", f"{c.selection_loss:.4f}",
                         "-" if c.loss is None else f"{c.loss:.4f}"])
        return header, body

    def text(self) -> str:
        header, body = self.rows()
        widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
        lines = [self.title] if self.title else []
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in body]
        return "\n".join(lines)

    def markdown(self) -> str:
        header, body = self.rows()
        lines = [f"**{self.title}**", ""] if self.title else []
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|---|---|" + "|".join(["---:"] * (len(header) - 2)) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        header, body = self.rows()
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(body)
        return buffer.getvalue()

    def to_dict(self) -> Dict[str, Any]:
        return {
            "title": self.title,
            "tasks": self.tasks,
            "unit_macs": self.unit_macs,
            "candidates": [dataclasses.asdict(n) | {"name": n.name} for n in self.candidates],
            "final": {name: dataclasses.asdict(n) for name, n in self.final.items()},
            "choices": [dataclasses.asdict(c) for c in self.choices],
        }


# -- specs and costs ----------------------------------------------------------------------------

def subset_spec(spec: Mapping[str, Any], tasks: Sequence[str]) -> Dict[str, Any]:
    """The model spec of a network for ``tasks`` only."""
    entries = [t for t in spec["tasks"] if _task_name(t) in tasks]
    if len(entries) != len(tasks):
        missing = sorted(set(tasks) - {_task_name(t) for t in spec["tasks"]})
        raise ConfigError(f"the model has no task(s) {', '.join(missing)}")
    return {**copy.deepcopy(dict(spec)), "tasks": copy.deepcopy(entries)}


def _task_name(entry: Any) -> str:
    return entry["name"] if isinstance(entry, Mapping) else str(entry).split(":")[0]


def half_size_spec(spec: Mapping[str, Any], factor: float = HALF_WIDTH) -> Dict[str, Any]:
    """``spec`` with every backbone width scaled by ``factor`` (the heads follow: their input
    channels are inferred again). Needs a built-in backbone with ``widths``."""
    from automtl.backbones import BUILTIN_BACKBONES

    backbone = spec["backbone"]
    name = backbone.get("builtin") if isinstance(backbone, Mapping) else None
    constructor = BUILTIN_BACKBONES.get(name) if name else None
    if constructor is None or "widths" not in inspect.signature(constructor).parameters:
        raise ConfigError(
            "half-size networks scale the widths of a built-in backbone (dilated_resnet_tiny, small_convnet); "
            f"this one ({backbone}) has none to scale: set grouping.half_size=false"
        )
    kwargs = dict(backbone.get("kwargs") or {})
    widths = kwargs.get("widths", inspect.signature(constructor).parameters["widths"].default)
    kwargs["widths"] = [max(1, int(round(w * factor))) for w in widths]
    tasks = []
    for entry in spec["tasks"]:
        entry = dict(entry) if isinstance(entry, Mapping) else entry
        if isinstance(entry, dict):
            entry.pop("in_channels", None)
        tasks.append(entry)
    return {**copy.deepcopy(dict(spec)), "backbone": {**backbone, "kwargs": kwargs}, "tasks": tasks}


def backbone_macs(spec: Mapping[str, Any]) -> int:
    """Multiply-accumulates per image of the backbone of ``spec`` (heads not counted)."""
    import automtl
    from automtl.export.cost import model_cost

    one = subset_spec(spec, [_task_name(spec["tasks"][0])])
    sm, _ = build_supermodel(one)
    cost = model_cost(sm.derive(automtl.Policy.all_shared(sm)), tuple(spec["input_shape"]))
    return sum(op.macs for op in cost.operators if not op.path.startswith("heads."))


def candidate_subsets(tasks: Sequence[str], mode: str) -> List[Tuple[str, ...]]:
    """Non-empty subsets of ``tasks`` (``all``) or those of one or two tasks (``pairs``), in
    order of size."""
    largest = len(tasks) if mode == "all" else min(2, len(tasks))
    return [s for k in range(1, largest + 1) for s in itertools.combinations(tasks, k)]


def predict_higher_order(pairs: Mapping[Tuple[str, ...], Mapping[str, float]], subset: Sequence[str]) -> Dict[str, float]:
    """The higher-order approximation: task t's loss in ``subset`` is the mean of its losses
    in the networks of the pairs {t, u}, u in ``subset`` \\ {t}."""
    out: Dict[str, float] = {}
    for t in subset:
        values = []
        for u in subset:
            if u == t:
                continue
            key = tuple(x for x in pairs if set(x) == {t, u})
            if not key:
                raise ConfigError(f"the higher-order approximation needs the network of the pair {{{t}, {u}}}")
            values.append(pairs[key[0]][t])
        out[t] = sum(values) / len(values)
    return out


# -- the procedure ------------------------------------------------------------------------------

def group_tasks(
    config: Union[None, str, os.PathLike, Dict[str, Any], SearchConfig] = None,
    budgets: Optional[Sequence[float]] = None,
    *,
    out: Optional[Union[str, os.PathLike]] = None,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    overrides: Sequence[str] = (),
    experiment: Optional[Experiment] = None,
) -> GroupingResult:
    """Run task grouping on the config's benchmark and model (see the module docstring);
    ``budgets`` (in full-network units) default to ``grouping.budgets``, else 1, 1.5, ...,
    the number of tasks."""
    cfg = load_config(config, overrides)
    g = cfg.grouping
    if experiment is None:
        experiment = build_experiment(cfg)
    spec = experiment.spec
    task_names = [_task_name(t) for t in spec["tasks"]]
    weights = {_task_name(t): float(t.get("weight", 1.0)) if isinstance(t, Mapping) else 1.0 for t in spec["tasks"]}
    budgets = list(budgets if budgets else g.budgets or [1 + 0.5 * i for i in range(2 * len(task_names) - 1)])
    for b in budgets:
        if not b > 0:
            raise ConfigError(f"a budget is a positive number of full-size networks, got {b}")
    run = RunDir(out) if out is not None else None
    if run is not None and os.path.exists(run.file("grouping.json")):
        raise ConfigError(f"{run.path} already holds a grouping; choose another --out")

    unit = backbone_macs(spec)
    half = half_size_spec(spec) if g.half_size else None
    half_cost = backbone_macs(half) / unit if half is not None else 0.0
    short = max(1, int(round(cfg.post_train.steps * g.fraction)))

    def train(tasks: Tuple[str, ...], size: str, steps: int, where: str, test: bool) -> Tuple[SearchResult, Network]:
        source = half if size == "half" else spec
        sub = subset_spec(source, tasks)  # type: ignore[arg-type]
        sm, resolved = build_supermodel(sub)
        network = Network(tasks, size, half_cost if size == "half" else 1.0, {}, "trained", steps)
        c = cfg.replace(method="multi_task", post_train=dataclasses.replace(cfg.post_train, steps=steps))
        result = search(
            sm, experiment.train, experiment.val, experiment.test if test else None, config=c,
            out=run.file(where, network.name) if run is not None else None, progress=False,
            callbacks=callbacks, spec=resolved, label=network.name,
        )
        network.losses = {t: float(v) for t, v in result.val["loss"].items()}  # type: ignore[index]
        network.metrics = result.metrics
        network.seconds = result.seconds
        return result, network

    plan: List[Tuple[Tuple[str, ...], str]] = [(s, "full") for s in candidate_subsets(task_names, g.candidates)]
    if half is not None:
        plan += [((t,), "half") for t in task_names]
    candidates: List[Network] = []
    bar = tqdm(plan, desc="group candidates", disable=not (progress and cfg.logging.progress), dynamic_ncols=True)
    for tasks, size in bar:
        bar.set_postfix_str(Network(tasks, size, 0, {}, "").name, refresh=False)
        candidates.append(train(tasks, size, short, "candidates", test=short == cfg.post_train.steps)[1])
    bar.close()
    if g.candidates == "pairs" and len(task_names) > 2:
        pairs = {n.tasks: n.losses for n in candidates if len(n.tasks) == 2 and n.size == "full"}
        for k in range(3, len(task_names) + 1):
            for subset in itertools.combinations(task_names, k):
                candidates.append(Network(subset, "full", 1.0, predict_higher_order(pairs, subset), "predicted"))

    costs = [n.cost for n in candidates]
    matrix = [[weights[t] * n.losses[t] if t in n.losses else math.inf for t in task_names] for n in candidates]
    choices: List[GroupChoice] = []
    for budget in budgets:
        chosen = select_networks(costs, matrix, budget)
        if chosen is None:
            choices.append(GroupChoice(budget, [], [], 0.0, math.inf))
            continue
        nets = [candidates[i] for i in chosen.networks]
        choices.append(GroupChoice(budget, [n.name for n in nets], [n.label() for n in nets], chosen.cost, chosen.loss))

    # train the chosen networks fully (those trained for the whole budget already are reused)
    final: Dict[str, Network] = {n.name: n for n in candidates if n.source == "trained" and n.steps == cfg.post_train.steps}
    needed = [n for n in candidates if any(n.name in c.networks for c in choices) and n.name not in final]
    bar = tqdm(needed, desc="group final", disable=not (progress and cfg.logging.progress), dynamic_ncols=True)
    for n in bar:
        bar.set_postfix_str(n.name, refresh=False)
        final[n.name] = train(n.tasks, n.size, cfg.post_train.steps, "final", test=True)[1]
    bar.close()
    for choice in choices:
        if not choice.networks:
            continue
        total = 0.0
        for t in task_names:
            best = min((final[name] for name in choice.networks if t in final[name].losses), key=lambda n: n.losses[t])
            choice.serving[t] = best.name
            total += weights[t] * best.losses[t]
            if best.metrics is not None and t in best.metrics:
                choice.metrics[t] = dict(best.metrics[t])
        choice.loss = total

    title = (f"task grouping: {cfg.data.benchmark or 'model'}, {len(task_names)} tasks, seed {cfg.seed}; "
             f"cost in full-size backbones (1 = {unit / 1e6:.1f} M MACs per image"
             + (f", half-size = {half_cost:.2f}" if half is not None else "") + ")")
    result = GroupingResult(candidates, choices, unit, task_names, title, run.path if run is not None else None, final)
    if run is not None:
        os.makedirs(run.path, exist_ok=True)
        run.write_json("grouping.json", result.to_dict())
        run.write_text("table.txt", result.text() + "\n")
        run.write_text("table.md", result.markdown())
        run.write_text("table.csv", result.csv())
    return result
