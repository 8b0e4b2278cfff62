"""Flatten a derived model into one fx graph over standard operators.

A derived model calls whole modules: backbone operators, skips, and task heads that may be
any user module. Source export and cost counting both want one graph whose module calls are
``torch.nn`` operators (``Conv2d``, ``BatchNorm2d``, ...), automtl's skip modules, and - only
where torch.fx cannot go inside - *opaque* modules: this re-traces the model with torch.fx,
going inside every other module (user heads, fx ``GraphModule``s, ``nn.Sequential``) and
keeping what they do as functions and parameters. A module whose forward torch.fx cannot trace
(e.g. ``if x.dim() > 2:``) stays whole: the trace is retried with its class kept as a leaf.
"""

from __future__ import annotations

from typing import List, Tuple

import torch
import torch.fx
from torch import nn

from automtl.compiler.fx_frontend import FailureTrackingTracer
from automtl.compiler.skip import ConvSkip, ConvTransposeSkip, LinearSkip
from automtl.errors import ExportError

#: automtl's own operator modules: kept whole, and written out as source by the Python export.
SKIP_TYPES: Tuple[type, ...] = (ConvSkip, ConvTransposeSkip, LinearSkip)


def is_torch_operator(module: nn.Module) -> bool:
    """A module class from ``torch.nn`` itself (not a subclass defined elsewhere), other than
    a container: torch.fx keeps these whole."""
    cls = type(module)
    return cls.__module__.startswith("torch.nn.") and not isinstance(
        module, (nn.Sequential, nn.ModuleList, nn.ModuleDict)
    )


class _FlatTracer(FailureTrackingTracer):
    """Keeps torch.nn operators, skip modules and the ``opaque`` classes whole, and goes inside
    everything else."""

    def __init__(self, opaque: Tuple[type, ...]) -> None:
        super().__init__()
        self.opaque = opaque

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, SKIP_TYPES) or is_torch_operator(m) or type(m) in self.opaque


def is_opaque(module: nn.Module) -> bool:
    """A module of the flattened graph that is neither a torch.nn operator nor a skip: one
    torch.fx could not go inside."""
    return not (isinstance(module, SKIP_TYPES) or is_torch_operator(module))


def flatten_model(model: nn.Module, what: str = "export") -> torch.fx.GraphModule:
    """``model`` as a ``GraphModule`` whose module calls are torch.nn operators, skips, and the
    modules torch.fx cannot trace (kept whole). Submodule paths are kept
    (``shared.layer1.0.conv1``, ``heads.seg.0``), so the state_dict keys of the result are a
    subset of the model's. Raises :class:`ExportError` when the model's own forward cannot be
    traced."""
    opaque: List[type] = []
    while True:
        tracer = _FlatTracer(tuple(opaque))
        try:
            graph = tracer.trace(model)
            break
        except Exception as exc:
            path, module = tracer.failed_in or ("", model)
            if path and type(module) not in opaque and not is_torch_operator(module):
                opaque.append(type(module))  # keep it whole and trace the rest again
                continue
            where = f"module '{path}' ({type(module).__name__})" if path else f"the model's forward ({type(model).__name__})"
            raise ExportError(
                f"{what}: torch.fx cannot trace {where}: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}. Rewrite that forward without "
                "data-dependent Python control flow."
            ) from exc
    return torch.fx.GraphModule(model, graph, class_name="MultiTaskModel")
