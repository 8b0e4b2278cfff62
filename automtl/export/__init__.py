"""Derivation of fixed multi-task models and their export (ONNX, Python source, TorchScript),
and what they cost per task."""

from .cost import ModelCost, model_cost
from .derive import MultiTaskModel, derive
from .onnx import export_onnx
from .python_source import export_python
from .saved import load_derived, load_model, save_model
from .torchscript import export_torchscript

__all__ = [
    "MultiTaskModel",
    "derive",
    "export_onnx",
    "export_python",
    "export_torchscript",
    "model_cost",
    "ModelCost",
    "save_model",
    "load_model",
    "load_derived",
]
