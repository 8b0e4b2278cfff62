"""The torch.fx front end: ``nn.Module`` -> traced ``GraphModule`` -> :class:`IRGraph`.

Tracing turns every operator call into one fx node; running the traced module once on the
example input records each node's input and output shapes. The prototxt front end builds a
``GraphModule`` directly and then shares :func:`graph_from_module` with this one.
"""

from __future__ import annotations

import contextlib
import copy
import operator
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Type, Union

import torch
import torch.fx
from torch import nn

from automtl.errors import CompileError, TraceError, first_line

from .ir import IRGraph, IRNode, Ref

LeafSpec = Union[str, Type[nn.Module]]


def _default_leaf_types() -> Tuple[type, ...]:
    """Modules outside ``torch.nn`` whose forward branches on ``self.training``: traced through,
    the graph would freeze the mode it was traced in, so they run as one operator."""
    found: List[type] = []
    try:
        from torchvision.ops import StochasticDepth

        found.append(StochasticDepth)
    except ImportError:  # torchvision is optional
        pass
    return tuple(found)


# Subclasses of these (e.g. torchvision's LayerNorm2d) stay whole: they are operators, not blocks.
_OPERATOR_BASES: Tuple[type, ...] = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
)


class FailureTrackingTracer(torch.fx.Tracer):
    """An fx tracer that remembers, when tracing fails, which module's forward it was in
    (``failed_in``: its path and the module), so the error can name it."""

    def __init__(self) -> None:
        super().__init__()
        self._stack: List[Tuple[str, nn.Module]] = []
        self.failed_in: Optional[Tuple[str, nn.Module]] = None

    def call_module(self, m, forward, args, kwargs):
        self._stack.append((self.path_of_module(m), m))
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = self._stack[-1]
            raise
        finally:
            self._stack.pop()


class _Tracer(FailureTrackingTracer):
    """Keeps user-chosen modules and operator classes whole."""

    def __init__(self, leaf_types: Tuple[type, ...], leaf_names: Tuple[str, ...]):
        super().__init__()
        self._leaf_types = leaf_types + _default_leaf_types()
        self._leaf_names = set(leaf_names)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self._leaf_names or isinstance(m, self._leaf_types):
            return True
        if isinstance(m, _OPERATOR_BASES):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def _split_leaves(leaf_modules: Iterable[LeafSpec]) -> Tuple[Tuple[type, ...], Tuple[str, ...]]:
    types: List[type] = []
    names: List[str] = []
    for spec in leaf_modules:
        if isinstance(spec, str):
            names.append(spec)
        elif isinstance(spec, type) and issubclass(spec, nn.Module):
            types.append(spec)
        else:
            raise CompileError(
                f"leaf_modules entries must be nn.Module classes or module paths (str), got {spec!r}"
            )
    return tuple(types), tuple(names)


def trace_module(model: nn.Module, leaf_modules: Iterable[LeafSpec] = ()) -> torch.fx.GraphModule:
    """Trace ``model`` with torch.fx. Raises :class:`TraceError` naming the module that
    could not be traced and how to keep it whole instead."""
    if not isinstance(model, nn.Module):
        raise CompileError(f"expected an nn.Module backbone, got {type(model).__name__}")
    types, names = _split_leaves(leaf_modules)
    tracer = _Tracer(types, names)
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises many types; all mean "cannot trace this"
        path, module = tracer.failed_in or ("", model)
        where = f"module '{path}' ({type(module).__name__})" if path else (
            f"the backbone's own forward ({type(model).__name__})"
        )
        fix = (
            f"keep it whole as one operator: automtl.compile(..., leaf_modules=[{type(module).__name__}])"
            f" or leaf_modules=['{path}']"
            if path
            else "rewrite the data-dependent part of forward, or move it into a submodule and list "
            "that submodule in leaf_modules"
        )
        raise TraceError(
            f"torch.fx could not trace {where}: {type(exc).__name__}: {exc}. To fix it, {fix}."
        ) from exc
    return torch.fx.GraphModule(tracer.root, graph, type(model).__name__)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run in eval mode (no running-statistics updates) and restore every module's flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _shape_of(value: Any) -> Optional[torch.Size]:
    return value.shape if isinstance(value, torch.Tensor) else None


class _ShapeRecorder(torch.fx.Interpreter):
    """Runs the traced module once and records every node's output shape."""

    def __init__(self, gm: torch.fx.GraphModule):
        super().__init__(gm)
        self.shapes: Dict[str, Optional[torch.Size]] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        try:
            result = super().run_node(n)
        except Exception as exc:
            what = n.target if n.op in ("call_module", "get_attr") else getattr(
                n.target, "__name__", str(n.target)
            )
            raise CompileError(
                f"running the backbone on the example input failed at node '{n.name}' "
                f"({n.op} {what}): {type(exc).__name__}: {first_line(exc)}. Check that example_input has "
                "the shape and dtype the backbone expects."
            ) from exc
        self.shapes[n.name] = _shape_of(result)
        return result


#: ``node.meta`` key under which a front end that knows every node's output shape statically
#: (the prototxt front end) stores it (a ``torch.Size``, or None for a non-tensor value), for
#: the input shape its placeholder carries.
STATIC_SHAPE_KEY = "automtl_shape"


def _static_shapes(gm: torch.fx.GraphModule, example_inputs: Sequence[torch.Tensor]) -> Optional[Dict[str, Optional[torch.Size]]]:
    nodes = list(gm.graph.nodes)
    if not all(STATIC_SHAPE_KEY in n.meta for n in nodes):
        return None
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if [n.meta[STATIC_SHAPE_KEY] for n in placeholders] != [x.shape for x in example_inputs]:
        return None  # built for another input shape
    return {n.name: n.meta[STATIC_SHAPE_KEY] for n in nodes}


class _ShapeRun(nn.Module):
    """Runs a :class:`_ShapeRecorder` as a module's forward, so that ``torch.func.functional_call``
    can swap the traced module's parameters and buffers for meta tensors."""

    def __init__(self, gm: torch.fx.GraphModule):
        super().__init__()
        self.gm = gm
        self.shapes: Dict[str, Optional[torch.Size]] = {}

    def forward(self, *inputs: torch.Tensor) -> None:
        recorder = _ShapeRecorder(self.gm)
        recorder.run(*inputs)
        self.shapes = recorder.shapes


def _meta_shapes(gm: torch.fx.GraphModule, example_inputs: Sequence[torch.Tensor]) -> Optional[Dict[str, Optional[torch.Size]]]:
    """Shapes from a run on the meta device (shapes only, no arithmetic, no copy of the
    weights), or None where that is not possible (an op without a meta kernel, a tensor
    constant that is not a buffer, code that reads tensor values)."""
    runner = _ShapeRun(gm)
    named = list(gm.named_parameters(remove_duplicate=False)) + list(gm.named_buffers(remove_duplicate=False))
    meta = {f"gm.{name}": torch.empty_like(t, device="meta") for name, t in named}
    try:
        torch.func.functional_call(runner, meta, tuple(x.to("meta") for x in example_inputs))
    except Exception:  # any failure: the real run decides (and reports it properly)
        return None
    return runner.shapes


def record_shapes(gm: torch.fx.GraphModule, example_inputs: Sequence[torch.Tensor]) -> Dict[str, Optional[torch.Size]]:
    """Every node's output shape for ``example_inputs``, in eval mode: the shapes a front end
    stored (see :data:`STATIC_SHAPE_KEY`), else from a run on the meta device, which computes
    nothing (compiling a big backbone at a large input size stays fast), else from a real run."""
    static = _static_shapes(gm, example_inputs)
    if static is not None:
        return static
    with eval_mode(gm), torch.no_grad():
        shapes = _meta_shapes(gm, example_inputs)
        if shapes is None:
            recorder = _ShapeRecorder(gm)
            recorder.run(*example_inputs)
            shapes = recorder.shapes
    return shapes


def describe_module(module: nn.Module) -> str:
    """A one-line description of an operator, e.g. ``Conv2d(64->128, k3, s2)``."""
    if isinstance(module, nn.modules.conv._ConvNd):
        text = f"{type(module).__name__}({module.in_channels}->{module.out_channels}"
        text += f", k{'x'.join(map(str, module.kernel_size))}"
        if any(s != 1 for s in module.stride):
            text += f", s{'x'.join(map(str, module.stride))}"
        if any(d != 1 for d in module.dilation):
            text += f", d{'x'.join(map(str, module.dilation))}"
        if module.groups != 1:
            text += f", g{module.groups}"
        return text + ")"
    if isinstance(module, nn.Linear):
        return f"Linear({module.in_features}->{module.out_features})"
    if isinstance(module, nn.modules.batchnorm._NormBase):
        return f"{type(module).__name__}({module.num_features})"
    return type(module).__name__


def describe_target(op: str, target: Any) -> str:
    if op == "call_function":
        name = getattr(target, "__name__", str(target))
        module = getattr(target, "__module__", "") or ""
        if target in vars(operator).values() or module == "_operator":
            return name
        return f"{module.replace('torch.nn.functional', 'F')}.{name}" if module else name
    if op == "call_method":
        return f".{target}()"
    return str(target)


def fetch_attr(root: nn.Module, path: str) -> Any:
    """The attribute (module, parameter, buffer, constant) at dotted ``path`` under ``root``."""
    obj: Any = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def ancestors(node: torch.fx.Node) -> Set[torch.fx.Node]:
    """``node`` and every fx node it reads from, directly or not."""
    seen: Set[torch.fx.Node] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(current.all_input_nodes)
    return seen


#: in-place Python operators (``out += identity`` in torchvision's ResNet blocks) and their twins
_OUT_OF_PLACE = {
    operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
    operator.itruediv: operator.truediv, operator.ifloordiv: operator.floordiv, operator.imod: operator.mod,
    operator.ipow: operator.pow, operator.iand: operator.and_, operator.ior: operator.or_, operator.ixor: operator.xor,
    operator.imatmul: operator.matmul, operator.ilshift: operator.lshift, operator.irshift: operator.rshift,
}


def out_of_place(gm: torch.fx.GraphModule) -> None:
    """Make every operator of ``gm`` write a new tensor instead of into its input
    (``ReLU(inplace=True)``, ``F.relu(x, inplace=True)``, ``x += y``, ``x.relu_()``), and
    what read the input after it read the new tensor. The SuperModel hands several tasks one
    tensor - a shared operator's output, a skip's identity - so an operator that overwrote it
    would corrupt what the other tasks read and what autograd saved for them. The outputs are
    the same; the user's modules are left as they are (a module is replaced by a copy in
    ``gm``)."""
    newer: Dict[torch.fx.Node, torch.fx.Node] = {}  # a value written in place -> the node that wrote it

    def current(value: torch.fx.Node) -> torch.fx.Node:
        while value in newer:
            value = newer[value]
        return value

    for n in list(gm.graph.nodes):
        n.args = torch.fx.node.map_arg(n.args, current)
        n.kwargs = torch.fx.node.map_arg(n.kwargs, current)
        if _make_out_of_place(gm, n) and n.args and isinstance(n.args[0], torch.fx.Node):
            newer[n.args[0]] = n
    gm.recompile()


def _make_out_of_place(gm: torch.fx.GraphModule, n: torch.fx.Node) -> bool:
    """Turn the call ``n`` into its out-of-place twin; whether it wrote into its first input."""
    if n.op == "call_module":
        module = gm.get_submodule(n.target)
        if getattr(module, "inplace", None) is not True:
            return False
        twin = copy.copy(module)  # the same parameters and buffers, in tables of its own
        for table in ("_parameters", "_buffers", "_modules"):
            twin.__dict__[table] = dict(module.__dict__[table])
        twin.inplace = False
        parent, _, leaf = n.target.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, leaf, twin)
        return True
    if n.op == "call_method":
        if isinstance(n.target, str) and n.target.endswith("_") and not n.target.startswith("_") and n.target[:-1] in _TENSOR_TWINS:
            n.target = n.target[:-1]  # x.add_(y) -> x.add(y)
            return True
        return False
    if n.op != "call_function":
        return False
    if n.target in _OUT_OF_PLACE:
        n.target = _OUT_OF_PLACE[n.target]
        return True
    name = getattr(n.target, "__name__", "")
    for owner in (torch, torch.nn.functional):  # torch.relu_ -> torch.relu, F.relu_ -> F.relu
        if name.endswith("_") and not name.startswith("_") and getattr(owner, name, None) is n.target:
            if callable(getattr(owner, name[:-1], None)):
                n.target = getattr(owner, name[:-1])
                return True
            return False
    if n.kwargs.get("inplace") is True:  # F.relu(x, inplace=True): torch.nn.functional passes the flag by name
        n.kwargs = {**n.kwargs, "inplace": False}
        return True
    return False


#: ``Tensor`` methods whose in-place form ``<name>_`` computes the same as ``<name>``
_TENSOR_TWINS = frozenset(
    name for name in dir(torch.Tensor)
    if not name.startswith("_") and name != "resize" and callable(getattr(torch.Tensor, name, None))
    and hasattr(torch.Tensor, name + "_")
)


def graph_from_module(
    gm: torch.fx.GraphModule, example_inputs: Sequence[torch.Tensor], name: str = "backbone"
) -> IRGraph:
    """Build the IR of a traced module; ``example_inputs`` fix every node's shape. Operators
    that would write into their input are made to write a new tensor (:func:`out_of_place`)."""
    out_of_place(gm)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(example_inputs):
        raise CompileError(
            f"the backbone's forward takes {len(placeholders)} input(s) "
            f"({', '.join(n.name for n in placeholders)}) but {len(example_inputs)} example "
            "input(s) were given; automtl compiles backbones that take one image tensor"
        )
    shapes = record_shapes(gm, example_inputs)

    nodes: List[IRNode] = []
    for n in gm.graph.nodes:
        args = torch.fx.node.map_arg(n.args, lambda a: Ref(a.name))
        kwargs = torch.fx.node.map_arg(n.kwargs, lambda a: Ref(a.name))
        parents = tuple(dict.fromkeys(a.name for a in n.all_input_nodes))
        node = IRNode(
            name=n.name,
            op=n.op,
            target=n.target,
            args=tuple(args),
            kwargs=dict(kwargs),
            parents=parents,
            out_shape=shapes.get(n.name),
            in_shapes=tuple(shapes.get(p) for p in parents),
        )
        if n.op == "call_module":
            module = gm.get_submodule(n.target)
            node.description = describe_module(module)
            node.num_params = sum(p.numel() for p in module.parameters())
        elif n.op == "get_attr":
            value = fetch_attr(gm, n.target)
            node.description = "Parameter" if isinstance(value, nn.Parameter) else "constant"
            node.num_params = value.numel() if isinstance(value, nn.Parameter) else 0
        elif n.op in ("call_function", "call_method"):
            node.description = describe_target(n.op, n.target)
        else:
            node.description = n.op
        nodes.append(node)
    return IRGraph(nodes, name=name)
