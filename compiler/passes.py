"""Passes over the IR: which nodes are searchable, which follow whom, and their depths."""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Type

from torch import nn

from automtl.errors import CompileError

from .fx_frontend import fetch_attr
from .ir import FOLLOW, PER_TASK, PLAIN, SEARCHABLE, IRGraph, IRNode

#: Operator types that get policy logits unless ``searchable=`` says otherwise.
DEFAULT_SEARCHABLE: Tuple[Type[nn.Module], ...] = (nn.modules.conv._ConvNd, nn.Linear)

#: Normalisation layers: they follow their operator by default (see :func:`assign_roles`).
NORM_TYPES: Tuple[Type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*, InstanceNorm*, SyncBatchNorm
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)

#: What normalisation layers do (``norm=``): ``"follow"`` (default) - take the choice of the
#: operator they normalise; ``"per_task"`` - a copy per task whatever the policy (the original
#: AutoMTL code's behaviour: batch statistics per task); ``"search"`` - a policy of their own.
NORM_POLICIES = ("follow", "per_task", "search")
DEFAULT_NORM = "follow"


def check_norm(norm: object, where: str = "norm") -> str:
    """``norm`` if it names a normalisation mode, else a :class:`CompileError` listing them."""
    if not isinstance(norm, str) or norm not in NORM_POLICIES:
        raise CompileError(
            f"{where} must be one of {', '.join(repr(p) for p in NORM_POLICIES)} (how normalisation layers "
            f"are shared: follow the operator they normalise, a copy per task, or searched on their own); got {norm!r}"
        )
    return norm


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def assign_roles(
    graph: IRGraph,
    root: nn.Module,
    searchable: Sequence[Type[nn.Module]] = DEFAULT_SEARCHABLE,
    norm: str = DEFAULT_NORM,
) -> None:
    """Give every node its role (see :mod:`compiler.ir`).

    * a module call of a ``searchable`` type -> SEARCHABLE;
    * a normalisation layer with parameters -> FOLLOW (``norm="follow"``, the default),
      PER_TASK (``norm="per_task"``) or SEARCHABLE (``norm="search"``: shared / own / skip,
      where its skip is the identity);
    * any other module call or parameter (``get_attr``) holding parameters -> FOLLOW;
    * everything else -> PLAIN.

    Whom a FOLLOW node follows (``norm="follow"`` and ``"search"``): walk up from its inputs in
    argument order (for a parameter read by ``get_attr``: from what its consumers combine it
    with), depth first through parameter-free nodes of any kind - activations, reshapes,
    pooling, additions, concatenations - and take the first node with parameters reached:

    * a searchable operator: the node follows it;
    * another FOLLOW node: the node follows whom that one follows;
    * a PER_TASK node: the node is PER_TASK too (it takes that operator's choice: always own);
    * none at all (e.g. a norm applied to the input): a normalisation layer is searched on its
      own (SEARCHABLE, as with ``norm="search"``); any other node is PER_TASK.

    So a norm after a concatenation takes the choice of the operator that made the concatenation's
    first input. Whatever the rule picks, the all-shared policy shares the node and the all-own
    policy gives every task its own (all-own stays T independent networks). With ``norm="per_task"``
    the rules of earlier versions hold unchanged (walking up only through parameter-free
    single-input nodes that keep the number of elements; PER_TASK where that finds no searchable
    operator), so that models saved with that setting rebuild as they were.
    """
    norm = check_norm(norm)
    searchable = tuple(searchable)
    norms = set()
    for node in graph:
        node.role, node.follows = PLAIN, None
        if node.op == "call_module":
            module = root.get_submodule(node.target)
            if not _has_params(module):
                continue
            if isinstance(module, searchable):
                node.role = SEARCHABLE
            elif isinstance(module, NORM_TYPES):
                norms.add(node.name)
                node.role = {"per_task": PER_TASK, "search": SEARCHABLE}.get(norm, FOLLOW)
            else:
                node.role = FOLLOW
        elif node.op == "get_attr" and isinstance(fetch_attr(root, node.target), nn.Parameter):
            node.role = FOLLOW

    if norm == "per_task":
        resolved: Dict[str, Optional[str]] = {}
        for node in graph:
            if node.role == FOLLOW:
                target = _feeding_operator(graph, node, resolved)
                if target is None:
                    node.role = PER_TASK
                node.follows = target
    else:
        _Followers(graph, norms).resolve_all()
    graph.compute_depths()


class _Followers:
    """The rule of :func:`assign_roles` for ``norm="follow"`` / ``"search"``."""

    def __init__(self, graph: IRGraph, norms: "set[str]"):
        self.graph = graph
        self.norms = norms
        self._first: Dict[str, Optional[str]] = {}  # node -> first node with parameters at or above it
        self._busy: "set[str]" = set()

    def resolve_all(self) -> None:
        for node in self.graph:
            if node.role == FOLLOW and node.follows is None:
                self._resolve(node)

    def _starts(self, node: IRNode) -> list:
        if node.op == "get_attr":  # a parameter: what its consumers combine it with
            return [r for child in self.graph.children(node.name) for r in (self.graph[child].refs() or self.graph[child].parents) if r != node.name]
        return node.refs() or list(node.parents)

    def _first_vcn(self, name: str) -> Optional[str]:
        """The first node with parameters reached from ``name`` upwards (``name`` itself if it
        has some), depth first in argument order through parameter-free nodes."""
        if name in self._first:
            return self._first[name]
        node = self.graph[name]
        if node.role != PLAIN:
            return name
        self._first[name] = None  # a DAG has no cycles, but stay safe
        found = None
        for parent in node.refs() or node.parents:
            found = self._first_vcn(parent)
            if found is not None:
                break
        self._first[name] = found
        return found

    def _resolve(self, node: IRNode) -> None:
        self._busy.add(node.name)
        target: Optional[IRNode] = None
        for start in self._starts(node):
            if start in self._busy:
                continue  # parameters combined with each other: look further
            found = self._first_vcn(start)
            if found is not None and found not in self._busy:
                target = self.graph[found]
                break
        if target is not None and target.role == FOLLOW and target.follows is None:
            self._resolve(target)
        if target is None:
            node.role = SEARCHABLE if node.name in self.norms else PER_TASK
        elif target.role == SEARCHABLE:
            node.follows = target.name
        elif target.role == FOLLOW:
            node.follows = target.follows
        else:  # PER_TASK
            node.role = PER_TASK
        self._busy.discard(node.name)


_AXES = {3: "N, C, L", 4: "N, C, H, W", 5: "N, C, D, H, W"}


def check_batched(graph: IRGraph, root: nn.Module) -> None:
    """Refuse an example input without its batch axis: torch's convolutions also take unbatched
    (C, H, W) tensors, so ``torch.randn(3, 224, 224)`` would trace, and every recorded shape
    (hence the skips and the derived model) would be one axis short."""
    if not graph.inputs:
        return
    example = graph[graph.inputs[0]].out_shape
    for node in graph:
        if node.op != "call_module" or not node.in_shapes or node.in_shapes[0] is None:
            continue
        module = root.get_submodule(node.target)
        if not isinstance(module, nn.modules.conv._ConvNd):
            continue
        rank = len(module.kernel_size) + 2
        got = node.in_shapes[0]
        if len(got) != rank:
            shape = list(example) if example is not None else "?"
            raise CompileError(
                f"example_input has shape {shape}, and module '{node.target}' ({type(module).__name__}) "
                f"receives a {len(got)}-D tensor {list(got)} from it, but takes a batch of {rank}-D inputs "
                f"({_AXES.get(rank, 'N, C, ...')}). Give example_input its batch "
                "axis, e.g. example_input.unsqueeze(0)"
            )
        return  # the first convolution decides: later ones see what it made of the input


def _feeding_operator(graph: IRGraph, node: IRNode, resolved: Dict[str, Optional[str]]) -> Optional[str]:
    """``norm="per_task"``'s rule, kept as it was: the searchable node whose output reaches
    ``node`` through parameter-free unary steps that keep the number of elements (activations,
    reshapes, permutes - not pooling)."""
    if node.name in resolved:
        return resolved[node.name]
    resolved[node.name] = None  # guards against cycles through get_attr consumers
    if node.parents:
        starts = list(node.parents)
    else:  # a parameter read by get_attr: look at what its consumers combine it with
        starts = [p for child in graph.children(node.name) for p in graph[child].parents if p != node.name]
    found: Optional[str] = None
    for start in starts:
        current = graph[start]
        while current.role == PLAIN and len(current.parents) == 1 and _keeps_size(current):
            current = graph[current.parents[0]]
        if current.role == SEARCHABLE:
            found = current.name
        elif current.role == FOLLOW:
            found = _feeding_operator(graph, current, resolved)
        if found is not None:
            break
    resolved[node.name] = found
    return found


def _keeps_size(node: IRNode) -> bool:
    if node.op == "placeholder" or node.out_shape is None or not node.in_shapes or node.in_shapes[0] is None:
        return False
    return node.out_shape.numel() == node.in_shapes[0].numel()
