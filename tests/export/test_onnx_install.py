"""ONNX export works after the base install: onnxscript (the exporter's translator) and
onnxruntime (the check every export runs by default) are install requirements, with ranges;
the ``export`` extra stays as an empty alias; the errors for a broken environment say so."""

import ast
import os
import sys

import pytest
import torch

from automtl.errors import ExportError
from automtl.export import onnx as onnx_export

SETUP = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "setup.py")


def _setup_arguments():
    tree = ast.parse(open(SETUP, encoding="utf-8").read())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    found = {}
    for keyword in call.keywords:
        if keyword.arg in ("install_requires", "extras_require"):
            found[keyword.arg] = keyword.value
    return found


def _strings(node):
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_the_exporters_packages_are_in_the_base_install():
    arguments = _setup_arguments()
    requires = _strings(arguments["install_requires"])
    for name in ("onnxscript", "onnxruntime"):
        (entry,) = [r for r in requires if r.split(">")[0].split("<")[0].split("=")[0] == name]
        assert ">=" in entry and "<" in entry, entry  # a range: a floor that works, and no future major version
    extras = arguments["extras_require"]
    keys = [k.value for k in extras.keys]
    export = extras.values[keys.index("export")]
    assert isinstance(export, ast.List) and export.elts == []  # `pip install "automtl[export]"` still resolves


def test_the_installed_metadata_asks_for_them():
    from importlib.metadata import requires

    names = {r.split(">")[0].split("<")[0].split("=")[0].split(";")[0].strip() for r in requires("automtl") or [] if "extra ==" not in r}
    assert {"onnxscript", "onnxruntime", "onnx"} <= names


def test_errors_of_an_environment_without_them(monkeypatch):
    model = torch.nn.Conv2d(3, 2, 1)
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript raises ImportError
    with pytest.raises(ExportError) as info:
        onnx_export._export_dynamo(model, torch.zeros(2, 3, 4, 4), ["out"], None)
    assert "which automtl installs with itself" in str(info.value) and "pip install onnxscript onnxruntime" in str(info.value)
    assert "automtl[export]" not in str(info.value)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ExportError) as info:
        onnx_export.onnx_session(b"")
    assert "which automtl installs with itself" in str(info.value) and "check=False (--no-check)" in str(info.value)
