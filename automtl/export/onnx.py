"""ONNX export of a derived model: one graph, one named output per task, a dynamic batch axis.

Which exporter: PyTorch's ``torch.export``-based one (``torch.onnx.export(..., dynamo=True)``).
It has been the default since torch 2.9, so torch 2.13 and 2.14 run the same path (tested on
2.14.1), and it is the maintained one; the TorchScript-based exporter (``dynamo=False``) warns
on every call that it is deprecated, as TorchScript itself is since torch 2.11. It is also the
correct one for us: it refuses data-dependent Python control flow (we name the node) where the
TorchScript-based exporter traces one run and silently keeps the branch the example took. Its
cost is time - a ResNet-34 takes ~10 s on two CPU cores, mostly ``torch.export``'s
decompositions with a symbolic batch size - so ``exporter="torchscript"`` stays as an opt-in.

Before anything is written the graph passes ``onnx.checker.check_model(full_check=True)`` and,
with ``check=True``, onnxruntime's outputs are compared with PyTorch's; the file is then
written atomically, so a failed export leaves no ``.onnx`` behind.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import warnings
from typing import Any, Dict, Optional, Sequence, Union

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

#: The name of the graph's input; the outputs are named after the tasks.
INPUT_NAME = "input"
EXPORTERS = ("dynamo", "torchscript")
#: Largest relative error (max |onnx - torch| / max |torch|, per task) a checked export may have.
TOLERANCE = 1e-4


def export_onnx(
    model: nn.Module,
    path: PathLike,
    example_input: torch.Tensor,
    *,
    opset: Optional[int] = None,
    check: bool = True,
    exporter: str = "dynamo",
) -> str:
    """Write ``model`` (a :class:`~automtl.MultiTaskModel`, or any module returning
    ``{task: tensor}``) to ``path`` as one ONNX graph.

    The graph has one input, ``"input"``, whose batch axis is dynamic (height, width and
    channels are those of ``example_input``), and one output per task, named after the task.
    ``opset`` picks the ONNX opset (default: the exporter's). With ``check=True`` the graph is
    run in onnxruntime on ``example_input`` and every output must match PyTorch's to a relative
    error of 1e-4 (``ExportError`` otherwise). The model is exported in eval mode; its
    train/eval flags are restored afterwards. Returns the path written.
    """
    model = check_model(model, "export_onnx")
    x = check_example_input(example_input, "export_onnx")
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    if opset is not None and (not isinstance(opset, int) or isinstance(opset, bool) or opset < 7):
        raise ExportError(f"opset must be an ONNX opset number such as 18, got {opset!r}")
    path = os.fspath(path)
    other = torch.cat([x, x[:1]])  # checked too: proves the batch axis really is free
    with eval_mode(model):
        expected = task_outputs(model, x, "export_onnx")
        expected_other = task_outputs(model, other, "export_onnx") if check else {}
        # a batch of one would be specialised to the constant 1 by torch.export: trace with two
        traced_input = x if x.shape[0] > 1 else x.expand(2, *x.shape[1:]).contiguous()
        if exporter == "dynamo":
            data = _export_dynamo(model, traced_input, list(expected), opset)
        else:
            data = _export_torchscript(model, traced_input, list(expected), opset)
    data = _check_graph(data, list(expected))
    if check:
        session = onnx_session(data)
        compare_outputs(expected, run_onnx(session, x), TOLERANCE, f"the ONNX graph for {path}")
        compare_outputs(expected_other, run_onnx(session, other), TOLERANCE, f"the ONNX graph for {path} (batch {other.shape[0]})")
    atomic_write_bytes(path, data)
    return path


def _export_dynamo(model: nn.Module, x: torch.Tensor, names: Sequence[str], opset: Optional[int]) -> bytes:
    try:
        import onnxscript  # noqa: F401  (the exporter's translation library)
    except ImportError as exc:
        raise ExportError(
            "the ONNX export needs onnxscript, which automtl installs with itself; this environment lacks it: "
            "pip install onnxscript onnxruntime (neither touches torch)"
        ) from exc
    batch = torch.export.Dim("batch")
    try:
        # on failure torch.export prints the partial graph to stderr: the ExportError says it
        with _quiet(), contextlib.redirect_stderr(io.StringIO()):
            program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},), strict=False)
    except Exception as exc:  # torch.export raises many types; all mean "cannot capture"
        where = describe_failure(model, exc)
        fixed = re.search(r"marked batch as dynamic but your code specialized it to be a constant \((\d+)\)", str(exc))
        if fixed:
            raise ExportError(
                f"the model fixes its batch size to {fixed.group(1)}{where} (e.g. a reshape to a constant "
                "batch), so it cannot be exported with a dynamic batch axis; make it use x.shape[0] or -1"
            ) from exc
        raise ExportError(
            f"torch.export could not capture the model{where}: {type(exc).__name__}: {first_line(exc)}. "
            "For an ONNX export every operator must run on any batch size, without data-dependent "
            "Python control flow"
        ) from exc
    try:
        with _quiet():
            onnx_program = torch.onnx.export(
                program,
                (x,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=list(names),
                opset_version=opset,
                optimize=True,
                verbose=False,
            )
    except Exception as exc:
        where = describe_failure(model, exc)
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        raise ExportError(
            f"the ONNX exporter could not translate the model{where}: {type(cause).__name__}: "
            f"{first_line(cause)}. Replace that operator with one ONNX supports, or pick another opset."
        ) from exc
    proto = onnx_program.model_proto
    _name_batch_axis(proto)
    return _serialize(proto)


def _name_batch_axis(proto: Any) -> None:
    """torch.export names the batch dimension after its symbol (``s77``): call it ``batch``."""
    symbol = proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    if not symbol:
        return
    for value in list(proto.graph.input) + list(proto.graph.output) + list(proto.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param == symbol:
                dim.dim_param = "batch"


def _export_torchscript(model: nn.Module, x: torch.Tensor, names: Sequence[str], opset: Optional[int]) -> bytes:
    buffer = io.BytesIO()
    axes = {name: {0: "batch"} for name in [INPUT_NAME, *names]}
    try:
        with _quiet():
            torch.onnx.export(
                model,
                (x,),
                buffer,
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=list(names),
                dynamic_axes=axes,
                opset_version=opset,
            )
    except Exception as exc:
        where = describe_failure(model, exc)
        raise ExportError(
            f"the TorchScript-based ONNX exporter could not export the model{where}: "
            f"{type(exc).__name__}: {first_line(exc)}"
        ) from exc
    return buffer.getvalue()


#: Loggers that print graphs and hints to stderr when an export fails; the ExportError says it.
_NOISY_LOGGERS = ("torch.fx.experimental.symbolic_shapes", "torch._export", "torch.export", "torch.onnx")


@contextlib.contextmanager
def _quiet() -> Any:
    """The exporters' deprecation and tracer warnings are about PyTorch, not the user's model,
    and their failure logs repeat what our error says."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        for logger in loggers:
            logger.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def _serialize(proto: Any) -> bytes:
    try:
        return proto.SerializeToString()
    except ValueError as exc:  # protobuf refuses messages over 2 GB
        raise ExportError(
            f"the ONNX graph is too large for one file ({exc}); ONNX files hold at most 2 GB of weights"
        ) from exc


def _check_graph(data: bytes, names: Sequence[str]) -> bytes:
    """``onnx.checker`` (full check, with shape inference) and the input/output names."""
    import onnx

    proto = onnx.load_model_from_string(data)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ExportError(f"the exported graph fails onnx.checker: {first_line(exc)}") from exc
    outputs = [o.name for o in proto.graph.output]
    if outputs != list(names):
        raise ExportError(f"internal: the ONNX graph's outputs are {outputs}, expected the task names {list(names)}")
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    if not batch.dim_param:
        raise ExportError(
            "the ONNX graph's batch axis came out fixed; the model must not depend on the batch size"
        )
    return data


def run_onnx(model: Any, x: torch.Tensor, threads: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """Run an ONNX graph (bytes, a path, or an :func:`onnx_session`) in onnxruntime on the CPU:
    ``{output name: tensor}``."""
    session = model if hasattr(model, "get_outputs") else onnx_session(model, threads)
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {session.get_inputs()[0].name: x.detach().cpu().numpy()})
    return {name: torch.from_numpy(value) for name, value in zip(names, values)}


def onnx_session(model: Union[bytes, PathLike], threads: Optional[int] = None) -> Any:
    """An onnxruntime CPU session for an ONNX graph (bytes or a path)."""
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - in the test extra
        raise ExportError(
            "checking an ONNX export needs onnxruntime, which automtl installs with itself; this environment lacks it: "
            "pip install onnxscript onnxruntime (neither touches torch), or export with check=False (--no-check)"
        ) from exc
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else os.fspath(model)
    try:
        return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"onnxruntime cannot load the ONNX graph: {first_line(exc)}") from exc
