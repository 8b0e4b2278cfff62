"""automtl: compile a CNN backbone into a multi-task supermodel, search its sharing policy,
and derive and export the fixed multi-task model it finds."""

from automtl import errors
from automtl.api import compile
from automtl.export import MultiTaskModel, derive, export_onnx, export_python, export_torchscript, model_cost
from automtl.export.saved import load_model, save_model
from automtl.policy import Policy
from automtl.serialize import load_supermodel, save_supermodel
from automtl.supermodel import SuperModel
from automtl.task import Task
from automtl import search  # a callable package: automtl.search(sm, train, val, ...) runs a search
from automtl.search import load_run

__version__ = "0.1.0"

__all__ = ["compile", "Task", "Policy", "SuperModel", "MultiTaskModel", "derive", "search", "load_run", "load_supermodel", "save_supermodel", "errors", "__version__",
           "export_onnx", "export_python", "export_torchscript", "model_cost", "save_model", "load_model"]
