"""The intermediate representation: a graph of Virtual Computation Nodes.

Front ends (torch.fx, prototxt) produce an :class:`IRGraph`; everything after them (the
SuperModel, derivation, export) reads only this. One :class:`IRNode` stands for one operator
call of the backbone. A node that holds parameters is a *VCN*: the SuperModel gives it a
per-task copy and a per-task skip, and - when it is searchable - per-task policy logits over
:data:`OPTIONS`. Parameter-free nodes (activations, pooling, add, concat, reshape) carry no
policy.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import networkx as nx
import torch

#: The three options of a searchable node, in the order of the policy logits.
OPTIONS: Tuple[str, str, str] = ("shared", "own", "skip")
SHARED, OWN, SKIP = 0, 1, 2

#: Roles a node can play.
PLAIN = "plain"  # parameter-free: no copies, no policy
SEARCHABLE = "searchable"  # has its own policy logits
PER_TASK = "per_task"  # every task runs its own copy (norms with norm="per_task"), unless a policy shares them all
FOLLOW = "follow"  # takes the choice of the searchable node named in ``follows``
ROLES = (PLAIN, SEARCHABLE, PER_TASK, FOLLOW)


@dataclasses.dataclass(frozen=True)
class Ref:
    """Stands, inside a node's ``args``/``kwargs``, for the value of another node."""

    name: str


@dataclasses.dataclass
class IRNode:
    """One operator call of the backbone.

    ``op`` is the torch.fx opcode (``placeholder``, ``call_module``, ``call_function``,
    ``call_method``, ``get_attr``, ``output``) and ``target`` its target: a module path
    for ``call_module``/``get_attr``, a callable for ``call_function``, a method name for
    ``call_method``. ``args``/``kwargs`` hold :class:`Ref` where another node's value goes.
    """

    name: str
    op: str
    target: Any
    args: tuple = ()
    kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)
    parents: Tuple[str, ...] = ()
    #: shape of the output (torch.Size) for tensor outputs, else None
    out_shape: Optional[torch.Size] = None
    #: shapes of the tensor inputs, in the order of ``parents``
    in_shapes: Tuple[Optional[torch.Size], ...] = ()
    role: str = PLAIN
    #: for FOLLOW nodes: the searchable node whose choice they take
    follows: Optional[str] = None
    #: for SEARCHABLE nodes: searchable nodes on the longest path from the input (0-based)
    depth: Optional[int] = None
    #: for call_module/get_attr: a short description of the operator ("Conv2d(3, 64, k=7, s=2)")
    description: str = ""
    num_params: int = 0

    @property
    def is_vcn(self) -> bool:
        return self.role != PLAIN

    def refs(self) -> List[str]:
        """Names of the nodes whose values this node reads, in argument order."""
        found: List[str] = []
        _collect_refs((self.args, self.kwargs), found)
        return found


def _collect_refs(value: Any, found: List[str]) -> None:
    if isinstance(value, Ref):
        if value.name not in found:
            found.append(value.name)
    elif isinstance(value, (tuple, list)):
        for item in value:
            _collect_refs(item, found)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_refs(item, found)
    elif isinstance(value, slice):
        _collect_refs((value.start, value.stop, value.step), found)


def map_refs(value: Any, fn: Callable[[Ref], Any]) -> Any:
    """Return ``value`` (a pytree of args) with every :class:`Ref` replaced by ``fn(ref)``."""
    if isinstance(value, Ref):
        return fn(value)
    if isinstance(value, tuple):
        mapped = tuple(map_refs(item, fn) for item in value)
        return type(value)(*mapped) if hasattr(value, "_fields") else mapped
    if isinstance(value, list):
        return [map_refs(item, fn) for item in value]
    if isinstance(value, dict):
        return {key: map_refs(item, fn) for key, item in value.items()}
    if isinstance(value, slice):
        return slice(map_refs(value.start, fn), map_refs(value.stop, fn), map_refs(value.step, fn))
    return value


class IRGraph:
    """A DAG (networkx) of :class:`IRNode`, with one input and one output node.

    ``nodes`` iterates in topological order (the order of the backbone's program).
    """

    def __init__(self, nodes: Sequence[IRNode], name: str = "backbone"):
        self.name = name
        self._nodes: Dict[str, IRNode] = {}
        self.nx = nx.DiGraph()
        for node in nodes:
            if node.name in self._nodes:
                raise ValueError(f"duplicate IR node name {node.name!r}")
            self._nodes[node.name] = node
            self.nx.add_node(node.name)
            for parent in node.parents:
                self.nx.add_edge(parent, node.name)
        inputs = [n.name for n in nodes if n.op == "placeholder"]
        outputs = [n.name for n in nodes if n.op == "output"]
        if len(outputs) != 1:
            raise ValueError(f"an IR graph needs exactly one output node, got {outputs}")
        self.inputs: Tuple[str, ...] = tuple(inputs)
        self.output: str = outputs[0]

    # -- access ---------------------------------------------------------------------------
    def __getitem__(self, name: str) -> IRNode:
        return self._nodes[name]

    def __contains__(self, name: object) -> bool:
        return name in self._nodes

    def __iter__(self) -> Iterator[IRNode]:
        return iter(self._nodes.values())

    def __len__(self) -> int:
        return len(self._nodes)

    @property
    def nodes(self) -> List[IRNode]:
        return list(self._nodes.values())

    def children(self, name: str) -> List[str]:
        return list(self.nx.successors(name))

    def vcns(self) -> List[IRNode]:
        return [n for n in self if n.is_vcn]

    def searchable(self) -> List[IRNode]:
        """Searchable nodes in depth order (ties in program order)."""
        order = {name: i for i, name in enumerate(self._nodes)}
        found = [n for n in self if n.role == SEARCHABLE]
        return sorted(found, key=lambda n: (n.depth, order[n.name]))

    # -- passes ---------------------------------------------------------------------------
    def compute_depths(self) -> None:
        """Depth of a searchable node: the number of searchable nodes on the longest path
        from the input to it (0 for the first). The policy regulariser weighs node ``l`` by
        ``(L - l) / L`` so that sharing is pushed most at the bottom of the network."""
        before: Dict[str, int] = {}
        for node in self:
            best = 0
            for parent in node.parents:
                p = self._nodes[parent]
                best = max(best, before[parent] + (1 if p.role == SEARCHABLE else 0))
            before[node.name] = best
            node.depth = best if node.role == SEARCHABLE else None
