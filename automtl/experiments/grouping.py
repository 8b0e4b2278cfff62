"""Task grouping (Standley et al., 2020): which tasks to learn together, under an inference
budget.

1. **Candidates**: one multi-task (all-shared) network per non-empty subset of the tasks,
   plus - with ``half_size`` - a half-size single-task network per task (every width of the
   backbone scaled by 1/√2).
2. **Training** (``grouping.mode``):

   * ``full`` (default, the paper's main method): every candidate trains for all
     ``post_train.steps`` with the post-train loop and its per-task validation loss is
     recorded; the choice is then exact on fully trained networks ("Optimal");
   * ``esa``, the early-stopping approximation: the same candidates train for ``fraction``
     (0.2) of the steps; the chosen networks are then trained fully;
   * ``hoa``, the higher-order approximation: only the networks of one or two tasks are
     trained (for all the steps unless ``fraction`` says otherwise); task t's loss in a larger
     set S is predicted as the mean of its losses in the pairs {t, u}, u ∈ S \\ {t}; the chosen
     networks that were predicted are then trained.

3. **Cost**: the multiply-accumulates per image of the network as built (the derived
   all-shared model for its tasks: backbone *and* heads, shared work counted once, by
   :func:`automtl.export.cost.model_cost`), in units of a single-task network - the mean MACs
   of the full-size single-task networks (heads included), so that the T single-task networks
   cost T together.
4. **Selection**: for every budget, the set of candidates that covers every task with the
   lowest total validation loss Σₜ λₜ min_{n∈S} L(n, t) and cost ≤ budget, found exactly by
   branch and bound (:func:`automtl.experiments.selection.select_networks`). For reference, as in
   the paper: **Random** (a valid set of networks within the budget, drawn with the config's
   seed; also the mean over many draws) and **Pessimal** (the valid set with the *highest*
   total loss, each task still served by its best network in the set), scored on the same
   losses.
5. **Pairwise affinity** (the paper's Tables 2 and 3): for each pair (a, b), how much lower a's
   validation loss is in the network of {a, b} than alone, in % of the loss alone (positive:
   b helps a); "alone" is the half-size single-task network when there are half-size
   candidates (the paper's reference: two of them cost what the pair's network costs), else
   the full-size one. The pair's affinity is the mean of both directions.
6. **Final training**: the chosen networks not trained fully are trained for all
   ``post_train.steps``; each task is then served by the chosen network with its lowest
   validation loss, whose test metrics are reported.

Run directory: ``candidates/<network>/`` and ``final/<network>/`` (ordinary run
directories), ``grouping.json`` (mode, candidates, costs, losses, choices, references),
``affinity.json`` / ``affinity.csv``, and the table as ``table.txt``, ``table.md`` and
``table.csv``.
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
import random
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from tqdm.auto import tqdm

from automtl.errors import ConfigError
from automtl.experiments.selection import score as score_networks
from automtl.experiments.selection import select_networks
from automtl.methods.base import make_method
from automtl.search.build import Experiment, build_experiment, build_supermodel
from automtl.search.config import SearchConfig, load_config
from automtl.search.pipeline import SearchResult, search
from automtl.search.run import RunDir
from automtl.search.trainer import Callback

HALF_WIDTH = 1 / math.sqrt(2)  # MACs of a convolution grow with in x out channels
RANDOM_DRAWS = 1000  # draws behind the Random reference's mean (the paper averages 10^6)
_EPS = 1e-12

#: ``automtl group``'s steps on the built-in benchmarks, over their search presets: each of
#: the 19 candidate networks of ``scenes`` trains for (a ``fraction`` of) them
GROUP_BUDGETS = {"scenes": {"post_train": {"steps": 200}}}

#: the name of the chosen grouping's row, by mode (the paper's names)
CHOICE_NAMES = {"full": "Optimal", "esa": "ESA", "hoa": "HOA"}


@dataclasses.dataclass
class Network:
    """A candidate network: its tasks, size (``full`` or ``half``), cost (in single-task
    networks) and MACs per image, per-task validation losses, where they come from
    (``trained`` for ``steps`` steps, or ``predicted``), and its test metrics and training
    time once trained."""

    tasks: Tuple[str, ...]
    size: str
    cost: float
    losses: Dict[str, float]
    source: str
    steps: int = 0
    metrics: Optional[Dict[str, Dict[str, float]]] = None
    seconds: float = 0.0
    macs: int = 0

    @property
    def name(self) -> str:
        return "+".join(self.tasks) + ("-half" if self.size == "half" else "")

    def label(self) -> str:
        return "{" + ", ".join(self.tasks) + "}" + ("½" if self.size == "half" else "")


@dataclasses.dataclass
class GroupChoice:
    """A set of networks for one budget - the chosen one (``kind``: the mode's name,
    ``Optimal``, ``ESA`` or ``HOA``) or a reference (``Random``, ``Pessimal``): their cost and
    MACs, the loss the choice was made on, the loss of the networks trained fully (None when
    some of them were not), and which network serves each task (with its metrics)."""

    budget: float
    networks: List[str]
    labels: List[str]
    cost: float
    selection_loss: float
    loss: Optional[float] = None
    serving: Dict[str, str] = dataclasses.field(default_factory=dict)
    metrics: Dict[str, Dict[str, float]] = dataclasses.field(default_factory=dict)
    kind: str = "Optimal"
    macs: int = 0


@dataclasses.dataclass
class Affinity:
    """The paper's pairwise affinities. ``directed[a][b]``: how much lower (%) task a's
    validation loss is in the network of {a, b} than in ``reference`` (a's single-task network),
    ``100 (L_alone(a) - L_ab(a)) / L_alone(a)`` - positive: training with b helps a (Table 2);
    ``pairs[(a, b)]``: the mean of both directions (Table 3). None where a loss alone is 0."""

    tasks: List[str]
    reference: str
    alone: Dict[str, float]
    with_: Dict[str, Dict[str, float]]
    directed: Dict[str, Dict[str, Optional[float]]]
    pairs: Dict[Tuple[str, str], Optional[float]]
    steps: int

    def text(self) -> str:
        width = max(8, max(len(t) for t in self.tasks) + 1)

        def cell(value: Optional[float]) -> str:
            return ("-" if value is None else f"{value:+.2f}").rjust(width)

        lines = [
            f"pairwise affinity (Standley et al., Tables 2-3): % lower validation loss of the row's task when "
            f"trained with the column's task than alone ({self.reference}); positive: the column's task helps; "
            f"networks trained for {self.steps} steps",
            "".ljust(width) + "".join(t.rjust(width) for t in self.tasks),
        ]
        for a in self.tasks:
            lines.append(a.ljust(width) + "".join("—".rjust(width) if a == b else cell(self.directed[a][b]) for b in self.tasks))
        lines.append("pair affinity (mean of both directions, Table 3):")
        lines.append("".ljust(width) + "".join(t.rjust(width) for t in self.tasks[1:]))
        for i, a in enumerate(self.tasks[:-1]):
            lines.append(a.ljust(width) + "".join("".rjust(width) if j <= i else cell(self.pairs[(a, b)])
                                                  for j, b in enumerate(self.tasks) if j > 0))
        return "\n".join(lines)

    def csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["task", "trained_with", "loss_alone", "loss_with", "change_pct", "pair_affinity_pct"])
        for a in self.tasks:
            for b in self.tasks:
                if a == b:
                    continue
                pair = self.pairs[tuple(t for t in self.tasks if t in (a, b))]  # type: ignore[index]
                writer.writerow([a, b, repr(self.alone[a]), repr(self.with_[a][b]),
                                 "" if self.directed[a][b] is None else repr(self.directed[a][b]),
                                 "" if pair is None else repr(pair)])
        return buffer.getvalue()

    def to_dict(self) -> Dict[str, Any]:
        return {
            "definition": "change_pct[a][b] = 100 * (loss_alone[a] - loss_with[a][b]) / loss_alone[a]: positive when "
                          "training a with b lowers a's validation loss; pair_affinity_pct = mean of both directions",
            "reference": self.reference,
            "steps": self.steps,
            "tasks": self.tasks,
            "loss_alone": self.alone,
            "loss_with": self.with_,
            "change_pct": self.directed,
            "pair_affinity_pct": {"+".join(k): v for k, v in self.pairs.items()},
        }


def pairwise_affinity(candidates: Sequence[Network], tasks: Sequence[str]) -> Optional[Affinity]:
    """The affinity table from the trained candidates' losses (None with fewer than two
    tasks): each pair's network against the half-size single-task networks when there are
    any (the paper's reference), else the full-size ones."""
    if len(tasks) < 2:
        return None
    trained = [n for n in candidates if n.source == "trained"]
    half = {n.tasks[0]: n for n in trained if n.size == "half"}
    full = {n.tasks[0]: n for n in trained if n.size == "full" and len(n.tasks) == 1}
    alone_nets, reference = (half, "half-size single-task network") if len(half) == len(tasks) else (full, "full-size single-task network")
    pair_nets = {frozenset(n.tasks): n for n in trained if n.size == "full" and len(n.tasks) == 2}
    missing = [t for t in tasks if t not in alone_nets] + ["+".join(p) for p in itertools.combinations(tasks, 2) if frozenset(p) not in pair_nets]
    if missing:
        raise ConfigError(f"the affinity table needs trained networks for {', '.join(missing)}")
    alone = {t: alone_nets[t].losses[t] for t in tasks}
    with_ = {a: {b: pair_nets[frozenset((a, b))].losses[a] for b in tasks if b != a} for a in tasks}
    directed: Dict[str, Dict[str, Optional[float]]] = {
        a: {b: (100.0 * (alone[a] - with_[a][b]) / alone[a] if alone[a] != 0 else None) for b in tasks if b != a} for a in tasks
    }
    pairs: Dict[Tuple[str, str], Optional[float]] = {}
    for a, b in itertools.combinations(tasks, 2):
        ab, ba = directed[a][b], directed[b][a]
        pairs[(a, b)] = None if ab is None or ba is None else (ab + ba) / 2
    steps = max(n.steps for n in list(pair_nets.values()) + [alone_nets[t] for t in tasks])
    return Affinity(list(tasks), reference, alone, with_, directed, pairs, steps)


@dataclasses.dataclass
class GroupingResult:
    candidates: List[Network]
    choices: List[GroupChoice]
    unit_macs: float
    tasks: List[str]
    title: str = ""
    run_dir: Optional[str] = None
    final: Dict[str, Network] = dataclasses.field(default_factory=dict)
    mode: str = "full"
    approximation: str = ""
    random: List[GroupChoice] = dataclasses.field(default_factory=list)
    pessimal: List[GroupChoice] = dataclasses.field(default_factory=list)
    random_mean: List[Optional[float]] = dataclasses.field(default_factory=list)
    affinity: Optional[Affinity] = None
    notes: List[str] = dataclasses.field(default_factory=list)

    def rows(self) -> Tuple[List[str], List[List[str]]]:
        header = ["Budget", "Grouping", "Networks", "Cost", "MACs", "Val loss (choice)", "Val loss (trained)"]
        body = []
        from automtl.export.cost import human

        for i, c in enumerate(self.choices):
            group = [c] + [refs[i] for refs in (self.random, self.pessimal) if i < len(refs)]
            for g in group:
                if not g.networks:
                    body.append([f"{c.budget:g}", g.kind, "(no set of networks fits)", "-", "-", "-", "-"])
                    continue
                body.append([f"{c.budget:g}", g.kind, " ".join(g.labels), f"{g.cost:.2f}", human(g.macs),
                             f"{g.selection_loss:.4f}", "-" if g.loss is None else f"{g.loss:.4f}"])
        return header, body

    def text(self) -> str:
        header, body = self.rows()
        widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
        lines = [self.title] if self.title else []
        lines += self.notes
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in body]
        if self.random_mean:
            means = ", ".join(f"{c.budget:g}: {'-' if m is None else f'{m:.4f}'}" for c, m in zip(self.choices, self.random_mean))
            lines.append(f"Random: one draw per budget; mean val loss (choice) over {RANDOM_DRAWS} draws - {means}")
        if self.affinity is not None:
            lines += ["", self.affinity.text()]
        return "\n".join(lines)

    def markdown(self) -> str:
        header, body = self.rows()
        lines = [f"**{self.title}**", ""] if self.title else []
        for note in self.notes:
            lines += [note, ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|---|---|---|" + "|".join(["---:"] * (len(header) - 3)) + "|")
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
            "mode": self.mode,
            "approximation": self.approximation,
            "tasks": self.tasks,
            "unit_macs": self.unit_macs,
            "candidates": [dataclasses.asdict(n) | {"name": n.name} for n in self.candidates],
            "final": {name: dataclasses.asdict(n) for name, n in self.final.items()},
            "choices": [dataclasses.asdict(c) for c in self.choices],
            "random": [dataclasses.asdict(c) for c in self.random],
            "random_mean_selection_loss": self.random_mean,
            "random_draws": RANDOM_DRAWS,
            "pessimal": [dataclasses.asdict(c) for c in self.pessimal],
            "affinity": None if self.affinity is None else self.affinity.to_dict(),
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
    constructor = BUILTIN_BACKBONES.get(name) if name in BUILTIN_BACKBONES else None
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


def network_macs(spec: Mapping[str, Any], tasks: Optional[Sequence[str]] = None, config: Optional[SearchConfig] = None) -> int:
    """Multiply-accumulates per image (batch 1, at the spec's input shape) of the network of
    ``tasks`` (default: all of the spec's) as ``automtl group`` builds and trains it: the
    derived model of the multi-task method's policy (all shared), heads included, work that
    several tasks share counted once - :func:`automtl.export.cost.model_cost`'s total.
    ``config``: the run's config, whose ``multi_task`` method draws the policy."""
    from automtl.export.cost import model_cost

    sm, _ = build_supermodel(subset_spec(spec, tasks) if tasks is not None else spec)
    policy = make_method("multi_task", config or SearchConfig()).draw_policy(sm, lambda policy: 0.0)
    return model_cost(sm.derive(policy), tuple(spec["input_shape"])).macs


def candidate_subsets(tasks: Sequence[str], mode: str) -> List[Tuple[str, ...]]:
    """Non-empty subsets of ``tasks`` (``all``, or modes ``full``/``esa``) or those of one or two
    tasks (``pairs``, or mode ``hoa``), in order of size."""
    largest = min(2, len(tasks)) if mode in ("pairs", "hoa") else len(tasks)
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


def default_budgets(all_in_one: float, tasks: int) -> List[float]:
    """The cost of the network of all tasks (rounded up to 1/100: the paper's budget of one
    network, which here also pays for the extra heads), then 1.5, 2, ..., ``tasks`` above it."""
    first = math.ceil(all_in_one * 100 - 1e-9) / 100
    return [first] + [b for b in (1 + 0.5 * i for i in range(1, 2 * tasks - 1)) if b > first]


# -- the reference groupings --------------------------------------------------------------------

def _solvers(costs: Sequence[float], losses: Sequence[Sequence[float]], budget: float) -> List[List[int]]:
    tasks = len(losses[0]) if losses else 0
    return [[n for n in range(len(costs)) if costs[n] <= budget + _EPS and not math.isinf(losses[n][t])] for t in range(tasks)]


def random_grouping(costs: Sequence[float], losses: Sequence[Sequence[float]], budget: float,
                    rng: random.Random) -> Optional[Tuple[int, ...]]:
    """A random valid set of networks (sorted indices): every task solved, cost ≤ ``budget``;
    None when there is none. Networks are opened one at a time, each drawn uniformly among
    the affordable ones that solve the first task not yet solved (backtracking out of dead
    ends)."""
    tasks = len(losses[0]) if losses else 0
    if tasks == 0:
        return None
    solvers = _solvers(costs, losses, budget)

    def walk(opened: List[int], covered: set, spent: float) -> Optional[List[int]]:
        left = [t for t in range(tasks) if t not in covered]
        if not left:
            return opened
        options = [n for n in solvers[left[0]] if n not in opened and spent + costs[n] <= budget + _EPS]
        rng.shuffle(options)
        for n in options:
            found = walk(opened + [n], covered | {t for t in range(tasks) if not math.isinf(losses[n][t])}, spent + costs[n])
            if found is not None:
                return found
        return None

    found = walk([], set(), 0.0)
    return None if found is None else tuple(sorted(found))


def pessimal_grouping(costs: Sequence[float], losses: Sequence[Sequence[float]], budget: float) -> Optional[Tuple[int, ...]]:
    """The paper's Pessimal reference: the valid set of networks (every task solved, cost ≤
    ``budget``) with the *highest* total loss Σₜ min_{n∈S} L(n, t) - each task still served by
    its best network in the set; ties go to the cheaper set. None when there is none.

    Adding a network never raises the loss, so it suffices to search the sets built by
    opening, for the first task not yet solved, one of its affordable networks: every valid
    set contains such a set, no dearer and with no lower loss. Branches whose loss cannot reach
    the incumbent's (solved tasks at their current best, the others at their worst
    affordable network) are cut."""
    tasks = len(losses[0]) if losses else 0
    if tasks == 0:
        return None
    solvers = _solvers(costs, losses, budget)
    best: List[Any] = [None]  # (-loss, cost, networks): the smallest is the most pessimal

    def search(opened: List[int], spent: float) -> None:
        current = [min((losses[n][t] for n in opened), default=math.inf) for t in range(tasks)]
        left = [t for t in range(tasks) if math.isinf(current[t])]
        if not left:
            networks = tuple(sorted(opened))
            key = (-sum(current), spent, networks)
            if best[0] is None or key < best[0]:
                best[0] = key
            return
        room = budget - spent
        bound = sum(current[t] for t in range(tasks) if t not in left)
        for t in left:
            worst = max((losses[n][t] for n in solvers[t] if costs[n] <= room + _EPS and n not in opened), default=None)
            if worst is None:
                return  # this task can no longer be solved within the budget
            bound += worst
        if best[0] is not None and bound < -best[0][0] - _EPS * (1.0 + abs(best[0][0])):
            return
        for n in solvers[left[0]]:
            if n not in opened and costs[n] <= room + _EPS:
                search(opened + [n], spent + costs[n])

    search([], 0.0)
    return None if best[0] is None else best[0][2]


# -- the procedure ------------------------------------------------------------------------------

def _describe(mode: str, fraction: float, steps: int, short: int) -> Tuple[str, str]:
    """(the chosen row's name, what produced the grouping)."""
    if mode == "full":
        return CHOICE_NAMES[mode], f"full training (the paper's method): every candidate trained for all {steps} post-train steps"
    if mode == "esa":
        return CHOICE_NAMES[mode], (f"ESA, the early-stopping approximation: candidates trained for {fraction:.0%} of the "
                                    f"post-train steps ({short} of {steps}), the chosen networks then trained fully")
    name = CHOICE_NAMES[mode] + ("+ESA" if short < steps else "")
    trained = f"for {short} of {steps} post-train steps (ESA as well)" if short < steps else f"for all {steps} post-train steps"
    return name, (f"HOA, the higher-order approximation: networks of one or two tasks trained {trained}, larger ones "
                  "predicted from the pairs, the chosen networks then trained fully")


def group_tasks(
    config: Union[None, str, os.PathLike, Dict[str, Any], SearchConfig] = None,
    budgets: Optional[Sequence[float]] = None,
    *,
    out: Optional[Union[str, os.PathLike]] = None,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    overrides: Sequence[str] = (),
    experiment: Optional[Experiment] = None,
    data: Any = None,
) -> GroupingResult:
    """Run task grouping on the config's benchmark and model (see the module docstring);
    ``budgets`` (in single-task networks) default to ``grouping.budgets``, else
    :func:`default_budgets`: the cost of the all-task network, then 1.5, 2, ..., the number of
    tasks. ``data``: your own data instead of the config's (a :class:`~automtl.data.Benchmark`,
    a mapping of its fields, or a dataset factory: :func:`automtl.data.load_dataset`)."""
    cfg = load_config(config, overrides)
    g = cfg.grouping
    mode = g.resolved_mode
    if experiment is None:
        experiment = build_experiment(cfg, data)
    elif data is not None:
        raise ConfigError("group_tasks: give either experiment= or data=, not both")
    spec = experiment.spec
    task_names = [_task_name(t) for t in spec["tasks"]]
    weights = {_task_name(t): float(t.get("weight", 1.0)) if isinstance(t, Mapping) else 1.0 for t in spec["tasks"]}
    budgets = list(budgets if budgets else g.budgets)
    for b in budgets:
        if not b > 0:
            raise ConfigError(f"a budget is a positive number of single-task networks, got {b}")
    run = RunDir(out) if out is not None else None
    if run is not None and os.path.exists(run.file("grouping.json")):
        raise ConfigError(f"{run.path} already holds a grouping; choose another --out")

    steps = cfg.post_train.steps
    short = max(1, int(round(steps * g.steps_fraction)))
    choice_name, approximation = _describe(mode, g.steps_fraction, steps, short)
    half = half_size_spec(spec) if g.half_size else None

    # costs: the MACs of each network as built, in units of the mean single-task network
    macs: Dict[Tuple[Tuple[str, ...], str], int] = {}

    def macs_of(tasks: Tuple[str, ...], size: str) -> int:
        if (tasks, size) not in macs:
            macs[(tasks, size)] = network_macs(half if size == "half" else spec, tasks, cfg)  # type: ignore[arg-type]
        return macs[(tasks, size)]

    unit = sum(macs_of((t,), "full") for t in task_names) / len(task_names)
    if not budgets:
        budgets = default_budgets(macs_of(tuple(task_names), "full") / unit, len(task_names))

    def make(tasks: Tuple[str, ...], size: str, source: str, steps_: int = 0) -> Network:
        m = macs_of(tasks, size)
        return Network(tasks, size, m / unit, {}, source, steps_, macs=m)

    def train(tasks: Tuple[str, ...], size: str, steps_: int, where: str, test: bool) -> Tuple[SearchResult, Network]:
        source = half if size == "half" else spec
        sm, resolved = build_supermodel(subset_spec(source, tasks))  # type: ignore[arg-type]
        network = make(tasks, size, "trained", steps_)
        c = cfg.replace(method="multi_task", post_train=dataclasses.replace(cfg.post_train, steps=steps_))
        result = search(
            sm, experiment.train, experiment.val, experiment.test if test else None, config=c,
            out=run.file(where, network.name) if run is not None else None, progress=False,
            callbacks=callbacks, spec=resolved, label=network.name,
        )
        network.losses = {t: float(v) for t, v in result.val["loss"].items()}  # type: ignore[index]
        network.metrics = result.metrics
        network.seconds = result.seconds
        return result, network

    plan: List[Tuple[Tuple[str, ...], str]] = [(s, "full") for s in candidate_subsets(task_names, mode)]
    if half is not None:
        plan += [((t,), "half") for t in task_names]
    candidates: List[Network] = []
    bar = tqdm(plan, desc="group candidates", disable=not (progress and cfg.logging.progress), dynamic_ncols=True)
    for tasks, size in bar:
        bar.set_postfix_str(Network(tasks, size, 0, {}, "").name, refresh=False)
        candidates.append(train(tasks, size, short, "candidates", test=short == steps)[1])
    bar.close()
    if mode == "hoa" and len(task_names) > 2:
        pairs = {n.tasks: n.losses for n in candidates if len(n.tasks) == 2 and n.size == "full"}
        for k in range(3, len(task_names) + 1):
            for subset in itertools.combinations(task_names, k):
                network = make(subset, "full", "predicted")
                network.losses = predict_higher_order(pairs, subset)
                candidates.append(network)

    costs = [n.cost for n in candidates]
    matrix = [[weights[t] * n.losses[t] if t in n.losses else math.inf for t in task_names] for n in candidates]

    def as_choice(budget: float, chosen: Optional[Sequence[int]], kind: str) -> GroupChoice:
        if chosen is None:
            return GroupChoice(budget, [], [], 0.0, math.inf, kind=kind)
        nets = [candidates[i] for i in chosen]
        loss, cost, _ = score_networks(chosen, costs, matrix, len(task_names))
        return GroupChoice(budget, [n.name for n in nets], [n.label() for n in nets], cost, loss, kind=kind,
                           macs=sum(n.macs for n in nets))

    choices: List[GroupChoice] = []
    randoms: List[GroupChoice] = []
    pessimals: List[GroupChoice] = []
    random_mean: List[Optional[float]] = []
    for budget in budgets:
        chosen = select_networks(costs, matrix, budget)
        choices.append(as_choice(budget, None if chosen is None else chosen.networks, choice_name))
        rng = random.Random(f"automtl-group-random-{cfg.seed}-{budget!r}")
        randoms.append(as_choice(budget, random_grouping(costs, matrix, budget, rng), "Random"))
        pessimals.append(as_choice(budget, pessimal_grouping(costs, matrix, budget), "Pessimal"))
        if chosen is None:
            random_mean.append(None)
        else:
            draws = [random_grouping(costs, matrix, budget, rng) for _ in range(RANDOM_DRAWS)]
            random_mean.append(sum(score_networks(d, costs, matrix, len(task_names))[0] for d in draws if d) / RANDOM_DRAWS)

    # train the chosen networks fully (those trained for all the steps already are reused)
    final: Dict[str, Network] = {n.name: n for n in candidates if n.source == "trained" and n.steps == steps}
    needed = [n for n in candidates if any(n.name in c.networks for c in choices) and n.name not in final]
    bar = tqdm(needed, desc="group final", disable=not (progress and cfg.logging.progress), dynamic_ncols=True)
    for n in bar:
        bar.set_postfix_str(n.name, refresh=False)
        final[n.name] = train(n.tasks, n.size, steps, "final", test=True)[1]
    bar.close()
    for choice in choices + randoms + pessimals:
        # the loss of the networks trained fully: for references, only where all of them are
        if not choice.networks or any(name not in final for name in choice.networks):
            continue
        total = 0.0
        for t in task_names:
            best = min((final[name] for name in choice.networks if t in final[name].losses), key=lambda n: n.losses[t])
            choice.serving[t] = best.name
            total += weights[t] * best.losses[t]
            if best.metrics is not None and t in best.metrics:
                choice.metrics[t] = dict(best.metrics[t])
        choice.loss = total

    from automtl.export.cost import human

    full_single = [macs_of((t,), "full") for t in task_names]
    half_costs = ", ".join(f"{macs_of((t,), 'half') / unit:.2f}" for t in task_names) if half is not None else ""
    title = (f"task grouping: {cfg.data.benchmark or cfg.data.dataset or 'model'}, {len(task_names)} tasks, seed {cfg.seed}; "
             f"mode {mode}: {approximation}")
    notes = [f"cost in single-task networks: 1 = {human(unit)} MACs per image, the mean of the {len(task_names)} "
             f"full-size single-task networks ({', '.join(human(m) for m in full_single)}), heads included; a network "
             "costs the MACs of the model built for its tasks, shared work counted once"
             + (f"; half-size single-task: {half_costs}" if half is not None else ""),
             f"references: Random (a valid set within the budget, seed {cfg.seed}) and Pessimal (the valid set with the "
             "highest loss), scored on the same validation losses as the choice"]
    affinity = pairwise_affinity(candidates, task_names)
    result = GroupingResult(candidates, choices, unit, task_names, title, run.path if run is not None else None, final,
                            mode, approximation, randoms, pessimals, random_mean, affinity, notes)
    if run is not None:
        os.makedirs(run.path, exist_ok=True)
        run.write_json("grouping.json", result.to_dict())
        if affinity is not None:
            run.write_json("affinity.json", affinity.to_dict())
            run.write_text("affinity.csv", affinity.csv())
        run.write_text("table.txt", result.text() + "\n")
        run.write_text("table.md", result.markdown())
        run.write_text("table.csv", result.csv())
    return result
