"""Residual blocks of a compiled backbone, found on its IR graph, and the *decision units*
a per-block method (AdaShare) decides on.

The rule:

* a **merge** is an addition (``operator.add``/``iadd``, ``torch.add``, ``Tensor.add``/``add_``)
  that reads two or more values of the graph - the ``out + shortcut(x)`` of a residual block,
  or a Caffe ``Eltwise`` SUM;
* its **fork** is the last node, in program order, from which every input of the merge is
  reached (the block's input ``x``);
* the **block** is every searchable node on a path from the fork to the merge (both branches:
  the residual convolutions and a projection shortcut's convolution);
* merges are taken in program order and a searchable node belongs to the first block that
  holds it; a searchable node in no block (a stem, a classifier, a network without residual
  connections) is a unit of its own.

Units are listed bottom-up: by the smallest depth of their nodes, ties in program order.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import TYPE_CHECKING, Dict, List, Optional, Set, Tuple

import networkx as nx
import torch

from automtl.compiler.ir import IRGraph, IRNode
from automtl.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from automtl.supermodel import SuperModel

_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
_ADD_METHODS = ("add", "add_")
GRANULARITIES = ("block", "operator")


@dataclasses.dataclass(frozen=True)
class DecisionUnit:
    """Searchable nodes that share one decision per task: a residual block (``merge`` names
    its addition) or a single operator (``merge`` is None)."""

    nodes: Tuple[str, ...]
    merge: Optional[str] = None

    @property
    def name(self) -> str:
        return f"block@{self.merge}" if self.merge is not None else self.nodes[0]


def is_merge(node: IRNode) -> bool:
    """An addition of two or more graph values (a residual connection)."""
    if len(node.parents) < 2:
        return False
    if node.op == "call_function":
        return any(node.target is f for f in _ADD_FUNCTIONS)
    return node.op == "call_method" and node.target in _ADD_METHODS


def residual_blocks(graph: IRGraph) -> List[Tuple[str, List[str]]]:
    """``(merge node, searchable nodes of its block)`` for every residual block, in program
    order; blocks whose nodes all belong to earlier blocks are left out."""
    order = {node.name: i for i, node in enumerate(graph)}
    searchable = {n.name for n in graph.searchable()}
    claimed: Set[str] = set()
    blocks: List[Tuple[str, List[str]]] = []
    upstream: Dict[str, Set[str]] = {}

    def ancestors_and_self(name: str) -> Set[str]:
        if name not in upstream:
            upstream[name] = nx.ancestors(graph.nx, name) | {name}
        return upstream[name]

    for node in graph:
        if not is_merge(node):
            continue
        common = set.intersection(*(ancestors_and_self(p) for p in node.parents))
        if not common:
            continue  # inputs from different placeholders: no single fork
        fork = max(common, key=lambda n: order[n])
        span = (nx.descendants(graph.nx, fork) & nx.ancestors(graph.nx, node.name)) - {fork}
        members = sorted((span & searchable) - claimed, key=lambda n: order[n])
        if members:
            claimed.update(members)
            blocks.append((node.name, members))
    return blocks


def decision_units(sm: "SuperModel", granularity: str = "block") -> List[DecisionUnit]:
    """The units of ``sm``'s searchable nodes: one per residual block and one per remaining
    node (``granularity="block"``), or one per node (``"operator"``), bottom-up."""
    if granularity not in GRANULARITIES:
        raise ConfigError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    position = {name: i for i, name in enumerate(sm.searchable_nodes)}  # depth order
    units: List[DecisionUnit] = []
    in_block: Set[str] = set()
    if granularity == "block":
        for merge, members in residual_blocks(sm.graph):
            ordered = tuple(sorted(members, key=position.__getitem__))
            units.append(DecisionUnit(ordered, merge))
            in_block.update(ordered)
    units += [DecisionUnit((n,)) for n in sm.searchable_nodes if n not in in_block]
    return sorted(units, key=lambda u: min(position[n] for n in u.nodes))
