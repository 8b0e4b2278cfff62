"""The heat map of a learned policy distribution: for every option (shared / own / skip) one
panel of searchable nodes (rows, in network order) × tasks (columns), each cell the
probability of that option; the option a policy chose is outlined."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Mapping, Optional, Tuple

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from automtl.compiler.ir import OPTIONS
from automtl.errors import PolicyError
from automtl.policy import Policy
from automtl.viz._figure import OPTION_CMAPS, label_size, new_figure, text_width

if TYPE_CHECKING:  # pragma: no cover
    from automtl.supermodel import SuperModel

#: Outline of the chosen option's cells: stands out on light and dark cells of all three maps.
CHOSEN_COLOUR = "#d0006f"
#: Cells are labelled with their probability up to this many cells per panel.
ANNOTATE_UP_TO = 600


@dataclasses.dataclass
class PolicyDistribution:
    """``probs[i, j]``: the probabilities of (shared, own, skip) for node ``nodes[i]`` and
    task ``tasks[j]``; nodes in network (depth) order."""

    tasks: Tuple[str, ...]
    nodes: Tuple[str, ...]
    probs: np.ndarray

    def __post_init__(self) -> None:
        self.tasks, self.nodes = tuple(self.tasks), tuple(self.nodes)
        self.probs = np.asarray(self.probs, dtype=np.float64)
        expected = (len(self.nodes), len(self.tasks), len(OPTIONS))
        if self.probs.shape != expected:
            raise PolicyError(f"a policy distribution of {expected[0]} nodes x {expected[1]} tasks needs probabilities of shape {expected}, got {self.probs.shape}")
        if not np.all(np.isfinite(self.probs)) or np.any(self.probs < 0):
            raise PolicyError("policy probabilities must be finite and non-negative")

    @classmethod
    def from_policy(cls, policy: Policy) -> Optional["PolicyDistribution"]:
        """The distribution a policy was drawn from (None when the policy does not carry
        one, e.g. a fixed baseline policy)."""
        if policy.probs is None:
            return None
        probs = [[policy.probs[t][n] for t in policy.tasks] for n in policy.nodes]
        return cls(policy.tasks, policy.nodes, np.array(probs))

    @classmethod
    def from_supermodel(cls, sm: "SuperModel") -> "PolicyDistribution":
        """The SuperModel's current distribution (softmax of its policy logits)."""
        probs = sm.policy_probs()
        return cls(sm.task_names, sm.searchable_nodes, np.stack([probs[n].numpy() for n in sm.searchable_nodes]))

    def argmax(self) -> Mapping[str, Mapping[str, int]]:
        best = self.probs.argmax(axis=2)
        return {t: {n: int(best[i, j]) for i, n in enumerate(self.nodes)} for j, t in enumerate(self.tasks)}


def policy_heatmap(dist: PolicyDistribution, chosen: Optional[Policy] = None, title: str = "") -> Figure:
    """One panel per option; ``chosen`` (a policy over the same tasks and nodes) outlines the
    option it picked in every cell."""
    if chosen is not None and (chosen.tasks != dist.tasks or chosen.nodes != dist.nodes):
        raise PolicyError(
            "the chosen policy does not fit the distribution: it has tasks "
            f"{list(chosen.tasks)} and {len(chosen.nodes)} nodes, the distribution {list(dist.tasks)} and {len(dist.nodes)}"
        )
    n_nodes, n_tasks = len(dist.nodes), len(dist.tasks)
    size = label_size(n_nodes)
    longest = max((len(n) for n in dist.nodes), default=4)
    panel_w = max(1.7, 0.42 * n_tasks + 0.35)  # never narrower than a panel's title and colour bar
    figure = new_figure(width=text_width(longest, size) + 3 * panel_w + 0.6, height=max(3.6, 0.2 * n_nodes + 2.0))
    axes = figure.subplots(1, len(OPTIONS), sharey=True)
    annotate = n_nodes * n_tasks <= ANNOTATE_UP_TO
    for k, (ax, option) in enumerate(zip(axes, OPTIONS)):
        values = dist.probs[:, :, k]
        image = ax.imshow(values, cmap=OPTION_CMAPS[option], vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
        ax.set_title(f"P({option})", fontsize=10)
        ax.set_xticks(range(n_tasks))
        ax.set_xticklabels(dist.tasks, rotation=45 if max(len(t) for t in dist.tasks) > 4 else 0, ha="left" if max(len(t) for t in dist.tasks) > 4 else "center", fontsize=8)
        ax.xaxis.tick_top()
        ax.set_yticks(range(n_nodes))
        ax.set_yticklabels(dist.nodes, fontsize=size)
        ax.tick_params(length=0)
        ax.set_xticks(np.arange(-0.5, n_tasks, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, n_nodes, 1), minor=True)
        ax.grid(which="minor", color="white", linewidth=0.6)
        ax.tick_params(which="minor", length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        if annotate:
            for i in range(n_nodes):
                for j in range(n_tasks):
                    v = values[i, j]
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=min(6.0, size - 1),
                            color="white" if v > 0.6 else "black")
        if chosen is not None:
            for i, node in enumerate(dist.nodes):
                for j, task in enumerate(dist.tasks):
                    if chosen.choice(task, node) == k:
                        ax.add_patch(Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, edgecolor=CHOSEN_COLOUR, linewidth=1.6))
        bar = figure.colorbar(image, ax=ax, orientation="horizontal", fraction=0.04, pad=0.01, aspect=25)
        bar.ax.tick_params(labelsize=7)
    axes[0].set_ylabel("searchable node (network order)", fontsize=9)
    heading = title or "Learned policy distribution"
    if chosen is not None:
        heading += "  (outlined: the chosen option)"
    figure.suptitle(heading, fontsize=11)
    return figure


def distribution_of(policy: Optional[Policy], sm: Optional["SuperModel"] = None) -> Optional[PolicyDistribution]:
    """The distribution carried by ``policy``, else the SuperModel's (when given)."""
    if policy is not None:
        dist = PolicyDistribution.from_policy(policy)
        if dist is not None:
            return dist
    return PolicyDistribution.from_supermodel(sm) if sm is not None else None

