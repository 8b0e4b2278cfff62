"""ONNX export: one graph, one output per task, a dynamic batch axis, checked by onnx.checker
and by onnxruntime against PyTorch - for a tiny CNN, torchvision ResNet-34 and MobileNetV2 and a
prototxt backbone, each under the all-shared, all-own and a mixed policy with skips."""

import os

import onnx
import pytest
import torch
import torchvision
from torch import nn

import automtl
from automtl.errors import ExportError
from automtl.export import onnx as onnx_export
from automtl.export.onnx import export_onnx, run_onnx

from export_models import POLICIES, mixed_policy, policy_for, tiny_supermodel


def _relative_error(got, expected):
    return float((got - expected).abs().max() / expected.abs().max())


def _assert_matches(model, path, sizes):
    """The ONNX file at ``path`` computes what ``model`` computes at every batch size."""
    model.eval()
    for batch, shape in sizes:
        x = torch.randn(batch, *shape)
        with torch.no_grad():
            expected = model(x)
        got = run_onnx(path, x)
        assert list(got) == list(model.task_names)
        for task in model.task_names:
            assert got[task].shape == expected[task].shape
            assert _relative_error(got[task], expected[task]) <= 1e-4, (task, batch)


def _graph_io(path):
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    inputs = [(i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]) for i in proto.graph.input]
    outputs = [(o.name, [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]) for o in proto.graph.output]
    return proto, inputs, outputs


@pytest.fixture(scope="module")
def tiny():
    return tiny_supermodel()


@pytest.mark.parametrize("policy_name", POLICIES)
def test_tiny_model_exports_with_named_outputs_and_dynamic_batch(tiny, tmp_path, policy_name):
    sm, x = tiny
    model = sm.derive(policy_for(sm, policy_name))
    path = export_onnx(model, tmp_path / "m.onnx", x)
    assert path == str(tmp_path / "m.onnx")
    proto, inputs, outputs = _graph_io(path)
    assert inputs == [("input", ["batch", 3, 12, 12])]
    assert outputs == [("cls", ["batch", 3]), ("reg", ["batch", 5])]
    _assert_matches(model, path, [(1, (3, 12, 12)), (3, (3, 12, 12)), (5, (3, 12, 12))])
    assert os.listdir(tmp_path) == ["m.onnx"]  # one self-contained file, no temporaries left


def test_mixed_policy_really_has_every_kind_of_choice(tiny):
    sm, _ = tiny
    policy = mixed_policy(sm)
    model = sm.derive(policy)
    assert policy.count("skip") and policy.count("own") and policy.count("shared")
    assert any(type(model.get_submodule(p)).__name__ == "ConvSkip" for p in model.usage if p.startswith("skip."))


def test_opset_train_mode_and_a_batch_of_one(tiny, tmp_path):
    """A batch-of-one example still gives a dynamic batch; the opset is the one asked for; the
    model is exported in eval mode and handed back in the mode it was in."""
    sm, x = tiny
    model = sm.derive(automtl.Policy.all_own(sm)).train()
    path = export_onnx(model, tmp_path / "m.onnx", x[:1], opset=18)
    assert all(m.training for m in model.modules())
    proto, inputs, _ = _graph_io(path)
    assert {o.domain: o.version for o in proto.opset_import}[""] == 18
    assert inputs[0][1][0] == "batch"
    _assert_matches(model, path, [(4, (3, 12, 12))])


def test_torchscript_based_exporter_on_request(tiny, tmp_path):
    sm, x = tiny
    model = sm.derive(mixed_policy(sm))
    path = export_onnx(model, tmp_path / "m.onnx", x, exporter="torchscript")
    _, inputs, outputs = _graph_io(path)
    assert inputs[0][0] == "input" and inputs[0][1][0] == "batch"
    assert [name for name, _ in outputs] == ["cls", "reg"]
    _assert_matches(model, path, [(3, (3, 12, 12))])


# -- errors ----------------------------------------------------------------------------------
class Gate(nn.Module):
    """Data-dependent Python control flow: torch.export cannot capture it."""

    def forward(self, x):
        if x.mean() > 0:
            return x * 2
        return x


class Zeta(nn.Module):
    """An operator without an ONNX translation."""

    def forward(self, x):
        return torch.special.zeta(x.abs() + 2, x.abs() + 1)


class FixedBatch(nn.Module):
    def forward(self, x):
        return x.reshape(2, -1).reshape(x.shape)


class WithLeaf(nn.Module):
    def __init__(self, leaf):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.leaf = leaf
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.conv2(self.leaf(self.conv(x)))


def _leaf_model(leaf):
    x = torch.randn(2, 3, 8, 8)
    sm = automtl.compile(WithLeaf(leaf), ["a", "b"], example_input=x, leaf_modules=[type(leaf)])
    return sm.derive(automtl.Policy.all_shared(sm)).eval(), x


@pytest.mark.parametrize(
    "leaf, message",
    [
        (Gate(), "torch.export could not capture the model at node 'shared_leaf' (shared.leaf: Gate, run by tasks a, b)"),
        (Zeta(), "the ONNX exporter could not translate the model at node 'shared_leaf' (shared.leaf: Zeta, run by tasks a, b)"),
        (FixedBatch(), "the model fixes its batch size to 2 (e.g. a reshape to a constant batch), so it cannot be exported with a dynamic batch axis"),
    ],
)
def test_unexportable_model_names_the_node_and_writes_nothing(tmp_path, leaf, message):
    model, x = _leaf_model(leaf)
    target = tmp_path / "m.onnx"
    with pytest.raises(ExportError) as info:
        export_onnx(model, target, x)
    assert message in str(info.value)
    assert os.listdir(tmp_path) == []


def test_why_the_default_exporter_is_dynamo(tmp_path):
    """The TorchScript-based exporter traces one run: it exports the data-dependent Gate with the
    branch the example took, and the graph then disagrees with PyTorch on other data. The
    default exporter refuses it (test above)."""
    model, x = _leaf_model(Gate())
    x = x.abs() + 1  # mean > 0: PyTorch doubles
    path = export_onnx(model, tmp_path / "m.onnx", x, exporter="torchscript")
    other = -x  # mean < 0: PyTorch passes it through, the traced graph still doubles
    with torch.no_grad():
        expected = model(other)["a"]
    assert _relative_error(run_onnx(path, other)["a"], expected) > 0.1


def test_failed_export_keeps_an_existing_file(tmp_path):
    model, x = _leaf_model(Gate())
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous")
    with pytest.raises(ExportError):
        export_onnx(model, target, x)
    assert target.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["m.onnx"]


def test_mismatch_with_pytorch_is_an_error_and_writes_nothing(tiny, tmp_path, monkeypatch):
    sm, x = tiny
    model = sm.derive(mixed_policy(sm))
    real = onnx_export.run_onnx

    def off_by_a_little(data, inputs, threads=None):
        out = real(data, inputs, threads)
        out["reg"] = out["reg"] * (1 + 1e-3)
        return out

    monkeypatch.setattr(onnx_export, "run_onnx", off_by_a_little)
    # the check does not depend on the exporter: take the quicker one
    with pytest.raises(ExportError) as info:
        export_onnx(model, tmp_path / "m.onnx", x, exporter="torchscript")
    assert "does not compute what the PyTorch model computes: 'reg' differs from PyTorch by 1.00e-03" in str(info.value)
    assert os.listdir(tmp_path) == []
    # without the check the (here: tampered-with) comparison is not run and the file is written
    export_onnx(model, tmp_path / "m.onnx", x, check=False, exporter="torchscript")
    assert os.listdir(tmp_path) == ["m.onnx"]


def test_bad_arguments(tiny, tmp_path):
    sm, x = tiny
    model = sm.derive(automtl.Policy.all_shared(sm))
    with pytest.raises(ExportError, match="needs example_input, a tensor the model accepts"):
        export_onnx(model, tmp_path / "m.onnx", [1, 2])
    with pytest.raises(ExportError, match="exporter must be one of dynamo, torchscript, got 'tf'"):
        export_onnx(model, tmp_path / "m.onnx", x, exporter="tf")
    with pytest.raises(ExportError, match="opset must be an ONNX opset number such as 18, got 'new'"):
        export_onnx(model, tmp_path / "m.onnx", x, opset="new")
    with pytest.raises(ExportError, match=r"needs a derived model .* got str"):
        export_onnx("model.pt", tmp_path / "m.onnx", x)
    with pytest.raises(ExportError, match=r"the model fails on example_input of shape \[2, 1, 12, 12\]"):
        export_onnx(model, tmp_path / "m.onnx", torch.randn(2, 1, 12, 12))
    with pytest.raises(ExportError, match=r"must return a non-empty dict \{task name: tensor\}, got Tensor"):
        export_onnx(nn.Conv2d(3, 3, 1), tmp_path / "m.onnx", x)
    assert os.listdir(tmp_path) == []


# -- real backbones --------------------------------------------------------------------------
def _backbone_supermodel(name):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    if name == "resnet34":
        sm = automtl.compile(torchvision.models.resnet34(weights=None), ["seg", "depth"], example_input=x)
    elif name == "mobilenet_v2":  # hard sharing of the norms: each follows its convolution
        sm = automtl.compile(torchvision.models.mobilenet_v2(weights=None), ["seg", "depth"], example_input=x, norm="follow")
    else:  # a shipped prototxt backbone, through the prototxt front end
        sm = automtl.compile("resnet18", ["seg", "depth"], example_input=x)
    return sm.eval(), x


@pytest.fixture(scope="module", params=["resnet34", "mobilenet_v2", "prototxt_resnet18"])
def backbone(request):
    return request.param, _backbone_supermodel(request.param)


@pytest.mark.slow
@pytest.mark.parametrize("policy_name", POLICIES)
def test_backbones_export_and_match_onnxruntime(backbone, tmp_path, policy_name):
    name, (sm, x) = backbone
    policy = policy_for(sm, policy_name)
    model = sm.derive(policy)
    # the built-in check is covered on the tiny model; here the comparison below, from the file
    path = export_onnx(model, tmp_path / f"{name}.onnx", x, check=False)
    _, inputs, outputs = _graph_io(path)
    assert inputs == [("input", ["batch", 3, 32, 32])]
    assert [o[0] for o in outputs] == ["seg", "depth"] and all(o[1][0] == "batch" for o in outputs)
    _assert_matches(model, path, [(3, (3, 32, 32))])
