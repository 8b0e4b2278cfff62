"""TorchScript: derived models (skips included) script and trace, and compute what they compute."""

import os
import warnings

import pytest
import torch
import torchvision
from torch import nn

import automtl
from automtl.errors import ExportError
from automtl.export import export_torchscript

from export_models import POLICIES, mixed_policy, policy_for, tiny_supermodel


def _load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated upstream
        return torch.jit.load(str(path))


def _assert_same(model, loaded, x):
    with torch.no_grad():
        expected = model.eval()(x)
        got = loaded(x)
    assert list(got) == list(expected)
    for task in expected:
        torch.testing.assert_close(got[task], expected[task], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def tiny():
    return tiny_supermodel()


@pytest.mark.parametrize("method", ["script", "trace"])
@pytest.mark.parametrize("policy_name", POLICIES)
def test_tiny_model_scripts_and_traces(tiny, tmp_path, method, policy_name):
    sm, x = tiny
    model = sm.derive(policy_for(sm, policy_name))
    path = export_torchscript(model, tmp_path / "m.pt", method, x)
    assert path == str(tmp_path / "m.pt") and os.listdir(tmp_path) == ["m.pt"]
    _assert_same(model, _load(path), torch.randn(3, 3, 12, 12))  # another batch size


def test_scripted_skips_run_at_any_input_size(tiny, tmp_path):
    """Scripting keeps the skips' size arithmetic: the module runs at sizes it never saw."""
    sm, x = tiny
    model = sm.derive(mixed_policy(sm))
    path = export_torchscript(model, tmp_path / "m.pt", "script")
    _assert_same(model, _load(path), torch.randn(2, 3, 15, 9))


@pytest.mark.slow
def test_resnet18_mixed_policy_scripts(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    sm = automtl.compile(torchvision.models.resnet18(weights=None), ["seg", "depth"], example_input=x).eval()
    model = sm.derive(mixed_policy(sm))
    path = export_torchscript(model, tmp_path / "m.pt", "script", x)
    _assert_same(model, _load(path), torch.randn(3, 3, 40, 40))  # another batch and image size


class Unscriptable(nn.Module):
    def forward(self, x):
        return x * len({int(v) for v in range(2)})  # set comprehensions do not script


class WithLeaf(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.odd = Unscriptable()

    def forward(self, x):
        return self.odd(self.conv(x))


def test_unscriptable_module_is_named(tmp_path):
    x = torch.randn(2, 3, 8, 8)
    sm = automtl.compile(WithLeaf(), ["a", "b"], example_input=x, leaf_modules=[Unscriptable])
    model = sm.derive(automtl.Policy.all_shared(sm))
    with pytest.raises(ExportError) as info:
        export_torchscript(model, tmp_path / "m.pt", "script", x)
    assert "torch.jit.script cannot compile the model at submodule 'shared.odd' (Unscriptable)" in str(info.value)
    assert "use method='trace'" in str(info.value)
    assert os.listdir(tmp_path) == []
    # tracing records what runs, so the same model traces
    _assert_same(model, _load(export_torchscript(model, tmp_path / "m.pt", "trace", x)), x)


def test_bad_arguments(tiny, tmp_path):
    sm, x = tiny
    model = sm.derive(automtl.Policy.all_shared(sm))
    with pytest.raises(ExportError, match=r"export_torchscript\(method='trace'\) needs example_input"):
        export_torchscript(model, tmp_path / "m.pt", "trace")
    with pytest.raises(ExportError, match="method must be 'script' or 'trace', got 'compile'"):
        export_torchscript(model, tmp_path / "m.pt", "compile", x)
    assert os.listdir(tmp_path) == []
