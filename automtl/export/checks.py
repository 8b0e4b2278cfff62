"""Shared by the exporters: checking a model and its example input, comparing an export's
outputs with PyTorch's, and finding the graph node an export failed at."""

from __future__ import annotations

import types
from typing import Any, Dict, List, Mapping, Optional

import torch
import torch.fx
from torch import nn

from automtl.compiler.fx_frontend import eval_mode
from automtl.errors import ExportError, first_line


def check_model(model: Any, what: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise ExportError(
            f"{what} needs a derived model (automtl.MultiTaskModel, from sm.derive(policy)) or another "
            f"nn.Module returning {{task: tensor}}; got {type(model).__name__}"
        )
    return model


def check_example_input(example_input: Any, what: str) -> torch.Tensor:
    if not isinstance(example_input, torch.Tensor):
        raise ExportError(
            f"{what} needs example_input, a tensor the model accepts (e.g. torch.randn(2, 3, 224, 224)); "
            f"got {type(example_input).__name__}"
        )
    if example_input.dim() < 1 or example_input.shape[0] < 1:
        raise ExportError(f"{what}: example_input needs a batch dimension of at least 1, got shape {list(example_input.shape)}")
    return example_input


def task_outputs(model: nn.Module, x: torch.Tensor, what: str) -> Dict[str, torch.Tensor]:
    """Run ``model`` once and check it returns ``{task name: tensor}``."""
    with torch.no_grad():
        try:
            out = model(x)
        except Exception as exc:
            where = describe_failure(model, exc)
            raise ExportError(
                f"{what}: the model fails on example_input of shape {list(x.shape)}{where}: "
                f"{type(exc).__name__}: {first_line(exc)}. Pass an input of the shape the model was compiled for."
            ) from exc
    if not isinstance(out, Mapping) or not out or not all(isinstance(v, torch.Tensor) for v in out.values()):
        raise ExportError(
            f"{what}: the model must return a non-empty dict {{task name: tensor}}, got {type(out).__name__}"
        )
    return dict(out)


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| / max |expected| (the largest error relative to the output's scale)."""
    got = got.detach().to(torch.float64).cpu()
    expected = expected.detach().to(torch.float64).cpu()
    if got.shape != expected.shape:
        return float("inf")
    if expected.numel() == 0:
        return 0.0
    scale = float(expected.abs().max())
    error = float((got - expected).abs().max())
    if error != error or scale != scale:  # NaN in either
        return float("inf")
    return error / scale if scale > 0 else error


def compare_outputs(
    expected: Mapping[str, torch.Tensor],
    got: Mapping[str, torch.Tensor],
    tolerance: float,
    what: str,
) -> Dict[str, float]:
    """Per task: the relative error of ``got`` against ``expected``; :class:`ExportError` naming
    every task above ``tolerance`` (or missing)."""
    errors: Dict[str, float] = {}
    bad: List[str] = []
    for task, reference in expected.items():
        if task not in got:
            bad.append(f"'{task}' missing from the export's outputs ({', '.join(got)})")
            continue
        value = got[task]
        if tuple(value.shape) != tuple(reference.shape):
            bad.append(f"'{task}' has shape {list(value.shape)} instead of {list(reference.shape)}")
            continue
        errors[task] = relative_error(value, reference)
        if not errors[task] <= tolerance:
            bad.append(f"'{task}' differs from PyTorch by {errors[task]:.2e} (relative; allowed {tolerance:.0e})")
    if bad:
        raise ExportError(f"{what} does not compute what the PyTorch model computes: " + "; ".join(bad))
    return errors


# -- which node failed ---------------------------------------------------------------------
def _chain(exc: BaseException) -> List[BaseException]:
    found: List[BaseException] = []
    current: Optional[BaseException] = exc
    while current is not None and current not in found:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def _frames(exc: BaseException) -> List[types.FrameType]:
    frames: List[types.FrameType] = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames


def _module_path(node: torch.fx.Node) -> Optional[str]:
    """The innermost module path torch.export recorded for a node of its own graph."""
    stack = node.meta.get("nn_module_stack") if hasattr(node, "meta") else None
    if not stack:
        return None
    path = list(stack.values())[-1][0]
    return str(path) if path else None


def _node_of_path(graph: torch.fx.Graph, path: str) -> Optional[torch.fx.Node]:
    """The node calling the module at ``path`` (or the deepest module containing it)."""
    best: Optional[torch.fx.Node] = None
    for node in graph.nodes:
        if node.op in ("call_module", "get_attr") and isinstance(node.target, str):
            if path == node.target or path.startswith(node.target + "."):
                if best is None or len(node.target) > len(best.target):
                    best = node
    return best


def failing_node(model: nn.Module, exc: BaseException) -> Optional[torch.fx.Node]:
    """The node of ``model``'s fx graph (a ``GraphModule``, e.g. a derived model) that was running
    when ``exc`` was raised, found from the traceback: the interpreter's current node, the line of
    the generated ``forward``, or the module path torch.export records on its own nodes."""
    graph = getattr(model, "graph", None)
    if not isinstance(graph, torch.fx.Graph):
        return None
    code_file = getattr(getattr(type(model).forward, "__code__", None), "co_filename", None)
    lineno_map = getattr(model, "_lineno_map", None) or {}
    nodes = list(graph.nodes)
    for error in _chain(exc):
        for frame in reversed(_frames(error)):  # innermost first
            for name in ("node", "n"):
                value = frame.f_locals.get(name)
                if isinstance(value, torch.fx.Node):
                    if value.graph is graph:
                        return value
                    path = _module_path(value)
                    if path is not None:
                        found = _node_of_path(graph, path)
                        if found is not None:
                            return found
            if code_file is not None and frame.f_code.co_filename == code_file:
                index = lineno_map.get(frame.f_lineno)
                if index is not None and 0 <= index < len(nodes):
                    return nodes[index]
    return None


def describe_node(model: nn.Module, node: torch.fx.Node) -> str:
    """``node 'shared_layer1_0_conv1' (shared.layer1.0.conv1: Conv2d, run by tasks seg, depth)``."""
    if node.op in ("call_module", "get_attr"):
        what = str(node.target)
        try:
            what += f": {type(model.get_submodule(node.target)).__name__}"
        except AttributeError:
            pass
    elif node.op == "call_method":
        what = f".{node.target}()"
    else:
        what = getattr(node.target, "__name__", str(node.target))
    usage = getattr(model, "usage", None)
    if isinstance(usage, Mapping) and node.op in ("call_module", "get_attr") and node.target in usage:
        what += f", run by task{'s' if len(usage[node.target]) > 1 else ''} {', '.join(usage[node.target])}"
    return f"node '{node.name}' ({what})"


def describe_failure(model: nn.Module, exc: BaseException) -> str:
    """`` at node '...' (...)`` when the failing node can be found, else an empty string."""
    node = failing_node(model, exc)
    return f" at {describe_node(model, node)}" if node is not None else ""
