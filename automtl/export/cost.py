"""What a derived model costs per task: parameters, multiply-accumulates, and which operators
each task shares with which other tasks.

The model is flattened (:mod:`automtl.export.flatten`) and run once on a zero input of the
requested size with torch.fx's shape propagation; every operator's MACs then follow from the
shapes:

* convolution: output elements x (input channels / groups) x kernel elements (a transposed
  convolution: input elements x (output channels / groups) x kernel elements);
* linear / matmul: output elements x the reduced dimension;
* normalisation (batch, group, layer, instance norm): one MAC per output element - the affine
  scale-and-shift that remains once the statistics are folded;
* a skip: its 1x1 / linear projection when it has one, else nothing.

Element-wise ops, pooling and activations are not counted (the usual convention); FLOPs are
2 x MACs. A task's cost counts every operator on its path from the input to its output, shared
ones included; the model's total counts every operator once. The total is also split by kind
(:attr:`ModelCost.macs_by_kind`: ``conv`` - skip projections included -, ``linear`` - matmuls
included - and ``norm``); ``conv`` + ``linear`` is what a FLOP counter of the dense products
(``torch.utils.flop_counter``) counts, halved.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from automtl.compiler.skip import ConvSkip, ConvTransposeSkip, LinearSkip
from automtl.errors import ExportError
from automtl.export.checks import eval_mode, first_line
from automtl.export.flatten import flatten_model, is_opaque

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
_CONV_FUNCTIONS = (F.conv1d, F.conv2d, F.conv3d)
_CONV_TRANSPOSE_FUNCTIONS = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)
_MATMUL_FUNCTIONS = (torch.matmul, operator.matmul, torch.mm, torch.bmm)
_NORM_FUNCTIONS = (F.batch_norm, F.layer_norm, F.group_norm, F.instance_norm)
#: the kinds :attr:`ModelCost.macs_by_kind` splits the total into
KINDS = ("conv", "linear", "norm")


@dataclasses.dataclass
class OperatorCost:
    """One operator with parameters: its module path, type, the tasks that run it, its
    parameters, and its MACs at the input size (summed over its calls)."""

    path: str
    kind: str
    tasks: Tuple[str, ...]
    parameters: int
    macs: int


@dataclasses.dataclass
class TaskCost:
    name: str
    parameters: int
    macs: int

    @property
    def flops(self) -> int:
        return 2 * self.macs


@dataclasses.dataclass
class ModelCost:
    """Per-task and total cost of a model at ``input_shape`` (batch 1)."""

    input_shape: Tuple[int, ...]
    tasks: Dict[str, TaskCost]
    operators: List[OperatorCost]
    parameters: int
    macs: int
    #: ``macs`` by kind of operator (:data:`KINDS`); the values add up to ``macs``
    macs_by_kind: Dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def sharing(self, task: str) -> Dict[Tuple[str, ...], List[OperatorCost]]:
        """The operators ``task`` runs, grouped by the *other* tasks that run them too
        (``()``: the task's own operators)."""
        if task not in self.tasks:
            raise KeyError(f"no task '{task}' (tasks: {', '.join(self.tasks)})")
        groups: Dict[Tuple[str, ...], List[OperatorCost]] = {}
        for op in self.operators:
            if task in op.tasks:
                others = tuple(t for t in op.tasks if t != task)
                groups.setdefault(others, []).append(op)
        order = list(self.tasks)
        # widest sharing first, then in task order
        return dict(sorted(groups.items(), key=lambda kv: (-len(kv[0]), [order.index(t) for t in kv[0]])))

    def report(self, width: int = 100) -> str:
        """The table ``automtl info`` prints."""
        shape = "x".join(str(s) for s in self.input_shape)
        rows = [("task", "parameters", "MACs", "FLOPs")]
        for cost in self.tasks.values():
            rows.append((cost.name, human(cost.parameters), human(cost.macs), human(cost.flops)))
        rows.append(("all tasks", human(self.parameters), human(self.macs), human(self.flops)))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [
            f"cost at input 1x{shape} (batch 1): a task counts every operator on its path;",
            "'all tasks' counts what the model computes, where work that several tasks",
            "do on the same input is done once",
        ]
        for i, row in enumerate(rows):
            lines.append("  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]))
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        for task in self.tasks:
            lines.append("")
            lines.append(f"{task}: operators by the tasks it shares them with")
            for others, ops in self.sharing(task).items():
                label = f"with {', '.join(others)}" if others else "its own"
                params = sum(op.parameters for op in ops)
                head = f"  {label}: {len(ops)} operator{'s' if len(ops) != 1 else ''}, {human(params)} parameters: "
                lines.extend(_wrap(head, [op.path for op in ops], width))
        return "\n".join(lines)


def human(value: Union[int, float]) -> str:
    """``21.3M``, ``3.60G``, ``912``."""
    value = float(value)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{int(value)}"


def _wrap(head: str, words: Sequence[str], width: int) -> List[str]:
    lines: List[str] = []
    current = head
    indent = " " * 6
    for i, word in enumerate(words):
        piece = word + ("," if i < len(words) - 1 else "")
        if len(current) + len(piece) + 1 > width and current.strip():
            lines.append(current.rstrip())
            current = indent
        current += piece + " "
    lines.append(current.rstrip())
    return lines


def task_reach(graph: torch.fx.Graph) -> Dict[torch.fx.Node, Tuple[str, ...]]:
    """For every node, the tasks whose output depends on it (in task order). The graph must
    return ``{task: value}``."""
    output = next((n for n in graph.nodes if n.op == "output"), None)
    if output is None or not isinstance(output.args[0], Mapping):
        raise ExportError("the model's forward must return a dict {task name: tensor}")
    reach: Dict[torch.fx.Node, List[str]] = {}
    for task, value in output.args[0].items():
        stack = [n for n in _nodes_in(value)]
        seen: Set[torch.fx.Node] = set()
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            reach.setdefault(node, []).append(task)
            stack.extend(node.all_input_nodes)
    return {node: tuple(tasks) for node, tasks in reach.items()}


def _nodes_in(value: Any) -> List[torch.fx.Node]:
    found: List[torch.fx.Node] = []
    torch.fx.node.map_arg(value, lambda n: found.append(n) or n)
    return found


class _ShapeRecorder(torch.fx.Interpreter):
    """Runs the graph once and records each tensor-valued node's shape in ``node.meta``; for
    a module torch.fx could not go inside, the MACs of the operators it ran (counted with
    forward hooks)."""

    def __init__(self, gm: torch.fx.GraphModule):
        super().__init__(gm)
        self.extra_traceback = False  # our error names the node already, in one line

    def run_node(self, n: torch.fx.Node) -> Any:
        try:
            if n.op == "call_module" and is_opaque(self.module.get_submodule(n.target)):
                result, n.meta[_MACS] = self._counted(n)
            else:
                result = super().run_node(n)
        except Exception as exc:
            raise ExportError(f"{type(exc).__name__} at node '{n.name}': {first_line(exc)}") from exc
        n.meta[_SHAPE] = result.shape if isinstance(result, torch.Tensor) else None
        return result

    def _counted(self, n: torch.fx.Node) -> Tuple[Any, Dict[str, int]]:
        total: Dict[str, int] = {}

        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            first = next((i for i in inputs if isinstance(i, torch.Tensor)), None)
            kind = operator_kind(module)
            if kind is not None and isinstance(output, torch.Tensor):
                macs = operator_macs(module, None if first is None else first.shape, output.shape)
                total[kind] = total.get(kind, 0) + macs

        module = self.module.get_submodule(n.target)
        handles = [m.register_forward_hook(hook) for m in module.modules()]
        try:
            return super().run_node(n), total
        finally:
            for handle in handles:
                handle.remove()


_MACS = "automtl_macs"
_SHAPE = "automtl_shape"


def _shape(node: Any) -> Optional[torch.Size]:
    return node.meta.get(_SHAPE) if isinstance(node, torch.fx.Node) else None


def _numel(shape: Optional[Sequence[int]]) -> int:
    return int(math.prod(shape)) if shape is not None else 0


def operator_kind(module: nn.Module) -> Optional[str]:
    """The kind (:data:`KINDS`) :func:`operator_macs` counts ``module`` as, None when it counts
    nothing for it."""
    if isinstance(module, (nn.modules.conv._ConvNd, ConvSkip, ConvTransposeSkip)):
        return "conv"
    if isinstance(module, (nn.Linear, LinearSkip)):
        return "linear"
    if isinstance(module, _NORMS):
        return "norm"
    return None


def operator_macs(module: nn.Module, in_shape: Optional[Sequence[int]], out_shape: Optional[Sequence[int]]) -> int:
    """MACs of one call of a torch.nn operator or skip, from its input and output shapes
    (0 for anything else)."""
    out = _numel(out_shape)
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return _numel(in_shape) * (module.out_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, nn.modules.conv._ConvNd):
        return out * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return out * module.in_features
    if isinstance(module, _NORMS):
        return out
    if isinstance(module, (ConvSkip, ConvTransposeSkip)):
        proj = module.proj
        return out * proj.in_channels if proj is not None else 0
    if isinstance(module, LinearSkip):
        return out * module.proj.in_features
    return 0


def _module_macs(module: nn.Module, node: torch.fx.Node) -> Dict[str, int]:
    """MACs of one module call, by kind."""
    if _MACS in node.meta:  # an opaque module: counted inside while it ran
        return dict(node.meta[_MACS])
    kind = operator_kind(module)
    if kind is None:
        return {}
    first_input = node.all_input_nodes[0] if node.all_input_nodes else None
    return {kind: operator_macs(module, _shape(first_input), _shape(node))}


def _function_macs(node: torch.fx.Node) -> Dict[str, int]:
    """MACs of one function call, by kind."""
    target = node.target
    out = _numel(_shape(node))
    args = list(node.args) + list(node.kwargs.values())
    if target in _CONV_FUNCTIONS and len(node.args) >= 2:
        weight = _shape(node.args[1])
        return {"conv": out * _numel(weight[1:]) if weight is not None else 0}
    if target in _CONV_TRANSPOSE_FUNCTIONS and len(node.args) >= 2:
        weight = _shape(node.args[1])
        return {"conv": _numel(_shape(node.args[0])) * _numel(weight[1:]) if weight is not None else 0}
    if target is F.linear and len(node.args) >= 2:
        weight = _shape(node.args[1])
        return {"linear": out * weight[-1] if weight is not None else 0}
    if target in _MATMUL_FUNCTIONS and len(args) >= 2:
        left = _shape(node.args[0])
        return {"linear": out * left[-1] if left is not None and len(left) else 0}
    if target in _NORM_FUNCTIONS:
        return {"norm": out}
    return {}


def model_cost(model: nn.Module, input_size: Sequence[int] = (3, 224, 224)) -> ModelCost:
    """Parameters and MACs per task of ``model`` (a derived model, or any module returning
    ``{task: tensor}``) for one input of ``input_size`` (channels, height, width - no batch)."""
    size = tuple(int(s) for s in input_size)
    if not size or any(s < 1 for s in size):
        raise ExportError(f"input size must be positive (channels, height, width), got {list(input_size)}")
    flat = flatten_model(model, "model_cost")
    x = torch.zeros((1, *size), dtype=_dtype_of(model), device=_device_of(model))
    with eval_mode(flat), torch.no_grad():
        try:
            _ShapeRecorder(flat).run(x)
        except ExportError as exc:
            raise ExportError(
                f"the model cannot run on an input of size 1x{'x'.join(map(str, size))}: {exc}. "
                "Give the input size the model was built for."
            ) from exc
    reach = task_reach(flat.graph)
    task_names = list(next(n for n in flat.graph.nodes if n.op == "output").args[0].keys())

    operators: Dict[str, OperatorCost] = {}
    kinds_of_node: Dict[torch.fx.Node, Dict[str, int]] = {}
    for node in flat.graph.nodes:
        tasks = reach.get(node, ())
        if node.op == "call_module":
            module = flat.get_submodule(node.target)
            kinds_of_node[node] = _module_macs(module, node)
            params = sum(p.numel() for p in module.parameters())
            macs = sum(kinds_of_node[node].values())
            if params or macs:
                _add(operators, node.target, type(module).__name__, tasks, params, macs)
        elif node.op == "call_function":
            kinds_of_node[node] = _function_macs(node)
        elif node.op == "get_attr":
            value = _fetch(flat, node.target)
            if isinstance(value, nn.Parameter):
                _add(operators, node.target, "Parameter", tasks, value.numel(), 0)

    macs_of_node = {node: sum(kinds.values()) for node, kinds in kinds_of_node.items()}
    by_kind = {kind: 0 for kind in KINDS}
    for node, kinds in kinds_of_node.items():
        if reach.get(node):  # computed for some task: counted once
            for kind, macs in kinds.items():
                by_kind[kind] += macs
    task_costs: Dict[str, TaskCost] = {}
    for task in task_names:
        macs = sum(m for n, m in macs_of_node.items() if task in reach.get(n, ()))
        task_costs[task] = TaskCost(task, _parameters(flat, reach, task), macs)
    return ModelCost(
        input_shape=size,
        tasks=task_costs,
        operators=list(operators.values()),
        parameters=_parameters(flat, reach, None),
        macs=sum(m for n, m in macs_of_node.items() if reach.get(n)),
        macs_by_kind=by_kind,
    )


def _add(operators: Dict[str, OperatorCost], path: str, kind: str, tasks: Tuple[str, ...], params: int, macs: int) -> None:
    if path in operators:  # one operator called at several places: merge its calls
        op = operators[path]
        op.tasks = tuple(dict.fromkeys(op.tasks + tasks))
        op.macs += macs
    else:
        operators[path] = OperatorCost(path, kind, tasks, params, macs)


def _parameters(flat: torch.fx.GraphModule, reach: Mapping[torch.fx.Node, Tuple[str, ...]], task: Optional[str]) -> int:
    """Parameters of the operators ``task`` runs (every task when None), each counted once."""
    seen: Set[int] = set()
    total = 0
    for node, tasks in reach.items():
        if task is not None and task not in tasks:
            continue
        if node.op == "call_module":
            params: Iterable[torch.Tensor] = flat.get_submodule(node.target).parameters()
        elif node.op == "get_attr":
            value = _fetch(flat, node.target)
            params = [value] if isinstance(value, nn.Parameter) else []
        else:
            continue
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def _fetch(root: Any, path: str) -> Any:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def _dtype_of(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
