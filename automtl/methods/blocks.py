"""Residual blocks of a compiled backbone, found on its IR graph, and the *decision units*
a per-block method (AdaShare) decides on.

The rule:

* a **merge** is an addition (``operator.add``/``iadd``, ``torch.add``, ``Tensor.add``/``add_``)
  that reads two or more values of the graph - the ``out + shortcut(x)`` of a residual block,
  or a Caffe ``Eltwise`` SUM;
* its **fork** is the last node, in program order, from which every input of the merge is
  reached (the block's input ``x``);
* :func:`residual_blocks`: the searchable nodes on a path from the fork to the merge (both
  branches), merges in program order, a node in the first block that holds it;
* :func:`find_block_skips`: the blocks a task can skip as a whole
  (:class:`automtl.block_skip.BlockSkip`). A merge of two inputs is one when one input is the
  **shortcut** - the fork itself (identity), or else the input whose path from the fork holds
  strictly fewer searchable nodes (ResNet's down-sample: one 1x1 convolution and its norm
  against the residual branch's two or three convolutions) - and the other the **residual
  branch**, the two paths share no node, and nothing outside the block reads the branch. The
  block's output (``end``) is the merge, or the activation right after it when the merge feeds
  only that (``relu(out + x)``). Skipping such a block gives the shortcut's value: the block's
  input, or - where the block changes the shape - the block's own down-sample path, which
  every task runs (shared), as in AdaShare's ResNets; no parameters are added.

:func:`decision_units` lists AdaShare's units: one per skippable block (``granularity="block"``,
the paper's), the searchable nodes outside them (stem, down-sample paths, classifier) in no
unit; or one per searchable node (``"operator"``, automtl's per-operator variant). Units are
listed bottom-up: by the smallest depth of their nodes, ties in program order.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Set, Tuple

import networkx as nx
import torch

from torch import nn
import torch.nn.functional as F

from automtl.block_skip import BlockSkip
from automtl.compiler.ir import PLAIN, IRGraph, IRNode
from automtl.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from automtl.supermodel import SuperModel

_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
_ADD_METHODS = ("add", "add_")
#: activations that may close a block (``relu(out + x)``): element-wise, shape-keeping
_ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish)
_ACTIVATION_FUNCTIONS = (torch.relu, torch.relu_, F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.hardswish, F.mish)
_ACTIVATION_METHODS = ("relu", "relu_")
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


def _is_activation(sm: "SuperModel", node: IRNode) -> bool:
    if node.role != PLAIN or len(node.parents) != 1 or not node.in_shapes or node.in_shapes[0] != node.out_shape:
        return False
    if node.op == "call_module":
        return isinstance(sm.plain[node.name], _ACTIVATION_MODULES)
    if node.op == "call_function":
        return any(node.target is f for f in _ACTIVATION_FUNCTIONS)
    return node.op == "call_method" and node.target in _ACTIVATION_METHODS


def find_block_skips(sm: "SuperModel") -> List[BlockSkip]:
    """The residual blocks of ``sm`` a task can skip as a whole (see the module docstring), in
    program order."""
    graph = sm.graph
    order = {node.name: i for i, node in enumerate(graph)}
    searchable = {n.name for n in graph.searchable()}
    claimed: Set[str] = set()
    found: List[BlockSkip] = []
    for node in graph:
        if not is_merge(node) or len(node.parents) != 2:
            continue
        up = [nx.ancestors(graph.nx, p) | {p} for p in node.parents]
        common = up[0] & up[1]
        if not common:
            continue
        fork = max(common, key=lambda n: order[n])
        below = nx.descendants(graph.nx, fork)
        paths = [u & below for u in up]  # nodes on the path from the fork to each input
        if paths[0] & paths[1]:
            continue  # the two inputs share work after the fork: no shortcut to tell apart
        weight = [len(p & searchable) for p in paths]
        if node.parents[0] == fork or node.parents[1] == fork:
            short = 0 if node.parents[0] == fork else 1
        elif weight[0] != weight[1]:
            short = 0 if weight[0] < weight[1] else 1
        else:
            continue  # e.g. two branches of one convolution each: neither is the shortcut
        residual = paths[1 - short]
        end = node.name
        while True:  # the activation right after the addition belongs to the block
            children = graph.children(end)
            if len(children) != 1 or not _is_activation(sm, graph[children[0]]):
                break
            end = children[0]
        chain = set(nx.ancestors(graph.nx, end) | {end}) - set(nx.ancestors(graph.nx, node.name))
        branch = residual | chain
        members = sorted(branch & searchable, key=lambda n: order[n])
        if not members or branch & claimed:
            continue
        if any(c not in branch for n in branch - {end} for c in graph.children(n)):
            continue  # something outside the block reads the branch: skipping it would change that
        claimed |= branch
        found.append(BlockSkip(node.name, end, node.parents[short], tuple(sorted(branch, key=order.__getitem__)), tuple(members)))
    return found


def restore_block_skips(sm: "SuperModel", merges: Sequence[str]) -> List[str]:
    """Give ``sm`` the block skips of the blocks whose additions are ``merges`` (as a run's or a
    saved model's metadata names them, ``MultiTaskModel.block_skips``), so that deriving its
    policy again gives the same model; returns the names ``sm`` has no skippable block for."""
    found = [b for b in find_block_skips(sm) if b.merge in set(merges)]
    sm.set_block_skips(found)
    return sorted(set(merges) - {b.merge for b in found})


def decision_units(sm: "SuperModel", granularity: str = "block") -> List[DecisionUnit]:
    """AdaShare's units of ``sm``: one per skippable residual block (``granularity="block"``;
    nodes outside them are in no unit), or one per searchable node (``"operator"``),
    bottom-up."""
    if granularity not in GRANULARITIES:
        raise ConfigError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    position = {name: i for i, name in enumerate(sm.searchable_nodes)}  # depth order
    if granularity == "operator":
        return [DecisionUnit((n,)) for n in sm.searchable_nodes]
    units = [DecisionUnit(tuple(sorted(b.members, key=position.__getitem__)), b.merge) for b in find_block_skips(sm)]
    return sorted(units, key=lambda u: min(position[n] for n in u.nodes))
