"""TorchScript export of a derived model (``torch.jit.script`` or ``torch.jit.trace``).

TorchScript is deprecated upstream since torch 2.11 (the ``torch.jit`` calls warn), but it is
still what many C++ and mobile deployments load, and a derived model scripts as it is: its
``forward`` is generated code, and the skip modules are written to be scriptable.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import Optional, Union

import torch
from torch import nn

from automtl.errors import ExportError
from automtl.export.checks import (
    check_example_input,
    check_model,
    compare_outputs,
    describe_failure,
    eval_mode,
    first_line,
    task_outputs,
)
from automtl.io import atomic_write_bytes

PathLike = Union[str, os.PathLike]
METHODS = ("script", "trace")
#: Largest relative error a checked TorchScript module may have against the eager model.
TOLERANCE = 1e-5


def export_torchscript(
    model: nn.Module,
    path: PathLike,
    method: str = "script",
    example_input: Optional[torch.Tensor] = None,
    *,
    check: bool = True,
) -> str:
    """Write ``model`` as a TorchScript archive (``torch.jit.load(path)`` reads it back).

    ``method="script"`` compiles the generated ``forward`` (any batch size, any input size the
    model accepts); ``method="trace"`` records one run on ``example_input`` (required), which
    fixes the input's height and width. With ``check=True`` and an ``example_input`` the
    TorchScript module must compute what the model computes. The module is saved in eval mode.
    Returns the path written.
    """
    model = check_model(model, "export_torchscript")
    if method not in METHODS:
        raise ExportError(f"method must be 'script' or 'trace', got {method!r}")
    if method == "trace" or example_input is not None:
        x = check_example_input(example_input, f"export_torchscript(method='{method}')")
    else:
        x = None
    path = os.fspath(path)
    with eval_mode(model):
        expected = task_outputs(model, x, "export_torchscript") if x is not None else None
        module = _script(model) if method == "script" else _trace(model, x)  # type: ignore[arg-type]
    module.eval()
    if check and x is not None and expected is not None:
        with torch.no_grad():
            got = module(x)
        compare_outputs(expected, got, TOLERANCE, f"the TorchScript module for {path}")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.save is deprecated"
        torch.jit.save(module, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _script(model: nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.script is deprecated"
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return torch.jit.script(model)
        except Exception as exc:
            culprit = _unscriptable_submodule(model)
            raise ExportError(
                f"torch.jit.script cannot compile the model{culprit}: {type(exc).__name__}: "
                f"{first_line(exc)}. Make that module scriptable, or use method='trace'."
            ) from exc


def _trace(model: nn.Module, x: torch.Tensor) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:
            # check_trace would run the model twice more; the output check below is stricter
            return torch.jit.trace(model, (x,), strict=False, check_trace=False)
        except Exception as exc:
            raise ExportError(
                f"torch.jit.trace failed{describe_failure(model, exc)}: {type(exc).__name__}: {first_line(exc)}"
            ) from exc


def _unscriptable_submodule(model: nn.Module) -> str:
    """`` at 'path' (Type)`` for the first called submodule that does not script on its own."""
    graph = getattr(model, "graph", None)
    if graph is None:
        return ""
    tried = set()
    for node in graph.nodes:
        if node.op != "call_module" or node.target in tried:
            continue
        tried.add(node.target)
        sub = model.get_submodule(node.target)
        try:
            torch.jit.script(sub)
        except Exception:
            return f" at submodule '{node.target}' ({type(sub).__name__})"
    return ""
