"""Passes over the IR: which nodes are searchable, which follow whom, and their depths."""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Type

from torch import nn

from automtl.errors import CompileError

from .fx_frontend import fetch_attr
from .ir import FOLLOW, PER_TASK, PLAIN, SEARCHABLE, IRGraph, IRNode

#: Operator types that get policy logits unless ``searchable=`` says otherwise.
DEFAULT_SEARCHABLE: Tuple[Type[nn.Module], ...] = (nn.modules.conv._ConvNd, nn.Linear)

#: Normalisation layers: a per-task copy each by default, or they follow their operator.
NORM_TYPES: Tuple[Type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*, InstanceNorm*, SyncBatchNorm
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)

NORM_POLICIES = ("per_task", "follow")


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def assign_roles(
    graph: IRGraph,
    root: nn.Module,
    searchable: Sequence[Type[nn.Module]] = DEFAULT_SEARCHABLE,
    norm: str = "per_task",
) -> None:
    """Give every node its role (see :mod:`compiler.ir`).

    * a module call of a ``searchable`` type -> SEARCHABLE;
    * a normalisation layer with parameters -> PER_TASK, or FOLLOW with ``norm="follow"``;
    * any other module call or parameter (``get_attr``) holding parameters -> FOLLOW;
    * everything else -> PLAIN.

    A FOLLOW node takes the choice of the searchable operator that feeds it (walking up
    through parameter-free single-input nodes). Where there is none - e.g. a norm after a
    concatenation - it becomes PER_TASK, so that the all-own policy is still exactly one
    independent model per task.
    """
    if norm not in NORM_POLICIES:
        raise CompileError(f"norm must be one of {NORM_POLICIES}, got {norm!r}")
    searchable = tuple(searchable)
    for node in graph:
        node.role, node.follows = PLAIN, None
        if node.op == "call_module":
            module = root.get_submodule(node.target)
            if not _has_params(module):
                continue
            if isinstance(module, searchable):
                node.role = SEARCHABLE
            elif isinstance(module, NORM_TYPES) and norm == "per_task":
                node.role = PER_TASK
            else:
                node.role = FOLLOW
        elif node.op == "get_attr" and isinstance(fetch_attr(root, node.target), nn.Parameter):
            node.role = FOLLOW

    resolved: Dict[str, Optional[str]] = {}
    for node in graph:
        if node.role == FOLLOW:
            target = _feeding_operator(graph, node, resolved)
            if target is None:
                node.role = PER_TASK
            node.follows = target
    graph.compute_depths()


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
    """The searchable node whose output reaches ``node`` through parameter-free unary steps
    that keep the number of elements (activations, reshapes, permutes - not pooling, which
    makes the node normalise something else than that operator's output)."""
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
