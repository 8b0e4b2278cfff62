"""The sharing diagram of a derived model: a grid of searchable nodes (rows, in network
order) × tasks (columns), each cell coloured by what the task runs there - the shared
operator, its own copy, or a skip.

Two degrees of sharing are drawn apart, because they cost differently:

* a line behind a row joins every task that uses the *shared weights* of that operator;
* cells merged into one block are tasks that run the *same call* - the shared operator on
  the same input, computed once for all of them. With per-task normalisation, tasks part
  ways after their first layer and later shared operators run once per task.

Which calls are common is read off the derived model's graph (:func:`sharing_layout`), so
the picture is exactly what :func:`automtl.derive` built.
"""

from __future__ import annotations

import dataclasses
import string
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch.fx
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from torch import nn

from automtl.compiler.fx_frontend import ancestors
from automtl.compiler.ir import OPTIONS, SHARED, SKIP
from automtl.policy import Policy
from automtl.viz._figure import OPTION_COLOURS, label_size, new_figure, text_width

if TYPE_CHECKING:  # pragma: no cover
    from automtl.export.derive import MultiTaskModel
    from automtl.supermodel import SuperModel


@dataclasses.dataclass
class SharingLayout:
    """What the diagram shows. ``choices[i, j]``: option of task ``tasks[j]`` at node
    ``nodes[i]``; ``calls[node]``: the tasks that choose *shared* there, grouped by the call
    they run (one group = computed once), or None when unknown (no SuperModel to derive
    from); ``down_skips``: (node, task) pairs whose skip is a projection (down-sampling or new channels), not
    the identity; ``info[node]``: the operator and its parameters; ``task_parameters``:
    parameters each task runs."""

    tasks: Tuple[str, ...]
    nodes: Tuple[str, ...]
    choices: np.ndarray
    calls: Optional[Dict[str, List[Tuple[str, ...]]]] = None
    down_skips: Set[Tuple[str, str]] = dataclasses.field(default_factory=set)
    info: Dict[str, str] = dataclasses.field(default_factory=dict)
    task_parameters: Dict[str, int] = dataclasses.field(default_factory=dict)

    def computed_once(self) -> int:
        """Calls of a shared operator that serve two or more tasks."""
        return sum(1 for groups in (self.calls or {}).values() for g in groups if len(g) > 1)


def sharing_layout(policy: Policy, sm: Optional["SuperModel"] = None, model: Optional["MultiTaskModel"] = None) -> SharingLayout:
    """The layout of ``policy``. With the SuperModel, the model is derived (unless given) and
    the common calls, skip kinds, operator descriptions and per-task parameters read off it."""
    choices = np.array([[policy.choice(t, n) for t in policy.tasks] for n in policy.nodes], dtype=np.int64)
    layout = SharingLayout(policy.tasks, policy.nodes, choices)
    if sm is None:
        return layout
    if model is None:
        from automtl.export.derive import derive

        model = derive(sm, policy)
    layout.calls = _shared_calls(policy, sm, model)
    for node in policy.nodes:
        ir = sm.graph[node]
        layout.info[node] = f"{ir.description or ir.target}  {_count(ir.num_params)}"
        for task in policy.tasks:
            if policy.choice(task, node) == SKIP and not isinstance(sm.vcns[node].skips[task], nn.Identity):
                layout.down_skips.add((node, task))
    layout.task_parameters = {t: model.num_parameters(t) for t in policy.tasks}
    return layout


def _shared_calls(policy: Policy, sm: "SuperModel", model: "MultiTaskModel") -> Dict[str, List[Tuple[str, ...]]]:
    """Per node, the tasks choosing *shared* grouped by the graph node that computes their
    value: the calls of ``shared.<operator>`` among the ancestors of each task's output."""
    output = next(n for n in model.graph.nodes if n.op == "output")
    upstream = {task: ancestors(value) for task, value in output.args[0].items()}
    by_target: Dict[str, List[torch.fx.Node]] = {}
    for fx_node in model.graph.nodes:
        if fx_node.op in ("call_module", "get_attr"):
            by_target.setdefault(str(fx_node.target), []).append(fx_node)
    calls: Dict[str, List[Tuple[str, ...]]] = {}
    for node in policy.nodes:
        candidates = by_target.get(f"shared.{sm.graph[node].target}", [])
        groups: Dict[frozenset, List[str]] = {}
        for task in policy.tasks:
            if policy.choice(task, node) != SHARED:
                continue
            # an operator the backbone calls more than once has several calls on one path
            key = frozenset(c for c in candidates if c in upstream[task]) or frozenset([task])
            groups.setdefault(key, []).append(task)
        calls[node] = [tuple(g) for g in groups.values()]
    return calls



def _count(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 1_000:
        return f"{n / 1e3:.1f}k"
    return str(n)


def _runs(columns: Sequence[int]) -> List[Tuple[int, int]]:
    """Sorted column indices -> maximal runs of neighbours as (first, last)."""
    runs: List[Tuple[int, int]] = []
    for c in sorted(columns):
        if runs and c == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], c)
        else:
            runs.append((c, c))
    return runs


CELL_W, CELL_H = 0.8, 0.74


def sharing_diagram(layout: SharingLayout, title: str = "") -> Figure:
    """Draw ``layout`` (see the module docstring for what lines and merged cells mean)."""
    n_nodes, n_tasks = len(layout.nodes), len(layout.tasks)
    size = label_size(n_nodes)
    longest = max((len(n) for n in layout.nodes), default=4)
    info_w = text_width(max((len(s) for s in layout.info.values()), default=0), size)
    column = max(0.62, text_width(max(len(t) for t in layout.tasks), 8) + 0.15)
    width = max(4.8, text_width(longest, size) + column * n_tasks + info_w + 1.0)  # the legend needs 4.8 in
    figure = new_figure(width=width, height=max(3.6, 0.22 * n_nodes + 2.2))
    ax = figure.add_subplot()
    index = {t: j for j, t in enumerate(layout.tasks)}
    for i, node in enumerate(layout.nodes):
        row = layout.choices[i]
        shared = [j for j in range(n_tasks) if row[j] == SHARED]
        if len(shared) > 1:  # same weights: a line behind the row's shared cells
            ax.add_line(Line2D([min(shared), max(shared)], [i, i], color=OPTION_COLOURS["shared"], linewidth=2.0, alpha=0.55, zorder=1))
        for j in range(n_tasks):
            option = OPTIONS[row[j]]
            if option == "shared" and layout.calls is not None:
                continue  # drawn below, merged by call
            _cell(ax, j, j, i, option, hatch="////" if option == "skip" else None)
            if option == "skip" and (node, layout.tasks[j]) in layout.down_skips:
                ax.text(j, i, "↓", ha="center", va="center", fontsize=size, color="#333333", zorder=4)
        if layout.calls is None:
            continue
        letters = iter(string.ascii_lowercase)
        for group in layout.calls.get(node, []):
            runs = _runs([index[t] for t in group])
            mark = next(letters) if len(runs) > 1 else None  # one call drawn in pieces: same letter
            for first, last in runs:
                _cell(ax, first, last, i, "shared", bold=len(group) > 1)
                if mark:
                    for j in range(first, last + 1):
                        ax.text(j, i, mark, ha="center", va="center", fontsize=size, color="white", fontweight="bold", zorder=4)
    ax.set_xlim(-0.6, n_tasks - 0.4)
    ax.set_ylim(n_nodes - 0.5, -0.5)
    ax.set_yticks(range(n_nodes))
    ax.set_yticklabels(layout.nodes, fontsize=size)
    ax.set_xticks(range(n_tasks))
    if layout.task_parameters:  # what each task runs, under its name
        ax.set_xticklabels([f"{t}\n{_count(layout.task_parameters.get(t, 0))}" for t in layout.tasks], fontsize=8)
    else:
        ax.set_xticklabels(layout.tasks, fontsize=9)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if layout.info:  # the operator of each row, as right-hand tick labels so the layout makes room
        right = ax.secondary_yaxis("right")
        right.set_yticks(range(n_nodes), [layout.info.get(node, "") for node in layout.nodes])
        right.tick_params(length=0, labelsize=size - 0.5, labelcolor="#555555")
        right.spines["right"].set_visible(False)
    handles = [
        Patch(facecolor=OPTION_COLOURS["shared"], edgecolor="#1a3d66", label="shared operator (merged cells: one call, computed once)"),
        Line2D([], [], color=OPTION_COLOURS["shared"], linewidth=2.0, alpha=0.55, label="same shared weights"),
        Patch(facecolor=OPTION_COLOURS["own"], label="task's own copy"),
        Patch(facecolor=OPTION_COLOURS["skip"], hatch="////", hatchcolor="#7a828c", label="skipped (↓: through a projection, not the identity)"),
    ]
    if layout.calls is None:
        handles[0] = Patch(facecolor=OPTION_COLOURS["shared"], label="shared operator (common calls unknown without the model)")
    if layout.task_parameters:
        handles.append(Patch(facecolor="none", edgecolor="none", label="under each task: the parameters it runs"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01),
              ncol=2 if width > 6.5 else 1, fontsize=7, frameon=False)
    figure.suptitle(title or "Derived model: what each task runs", fontsize=11)
    return figure


def _cell(ax, first: int, last: int, row: int, option: str, hatch: Optional[str] = None, bold: bool = False) -> None:  # type: ignore[no-untyped-def]
    left = first - CELL_W / 2
    width = (last - first) + CELL_W
    edge = "#1a3d66" if bold else "white"
    ax.add_patch(Rectangle((left, row - CELL_H / 2), width, CELL_H, facecolor=OPTION_COLOURS[option], edgecolor=edge,
                           linewidth=1.2 if bold else 0.5, hatch=hatch, hatchcolor="#7a828c", zorder=2))
