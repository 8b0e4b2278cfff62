"""Python-source export: a standalone module (imports only torch) plus weights that, imported in
a fresh interpreter, computes what the derived model computes."""

import ast
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.fx
import torchvision
from torch import nn

import automtl
from automtl import Task
from automtl.errors import ExportError
from automtl.export import export_python
from automtl.export.python_source import torch_constructor

from export_models import TinyNet, mixed_policy

# Runs in a fresh interpreter: imports the written module, computes on the saved input, saves
# the outputs, and reports which packages ended up imported.
_RUNNER = textwrap.dedent(
    """
    import sys, json
    folder, name, inputs, outputs = sys.argv[1:5]
    sys.path.insert(0, folder)
    import importlib
    module = importlib.import_module(name)
    import torch
    net = module.load()
    x = torch.load(inputs, weights_only=True)
    with torch.no_grad():
        out = net(x)
    torch.save({k: v for k, v in out.items()}, outputs)
    tops = sorted({m.split(".")[0] for m in sys.modules})
    print(json.dumps({"tasks": list(out), "training": net.training, "modules": tops}))
    """
)


def _run_fresh(folder, name, x, tmp_path):
    inputs, outputs = tmp_path / "x.pt", tmp_path / "out.pt"
    torch.save(x, inputs)
    done = subprocess.run(
        [sys.executable, "-c", _RUNNER, str(folder), name, str(inputs), str(outputs)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(tmp_path),  # not the repository: nothing of automtl is importable by accident
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return torch.load(outputs, weights_only=True), report


def _imports(source_path):
    tree = ast.parse(open(source_path, encoding="utf-8").read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add(node.module)
    return found


class ScaledConvHead(nn.Module):
    """A user head that is neither a torch.nn module nor a Sequential: its own parameter and
    functional calls, which the export writes out as torch operations."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(5, 4)
        self.scale = nn.Parameter(torch.linspace(0.5, 2.0, 4))
        self.register_buffer("shift", torch.arange(4.0))

    def forward(self, x):
        return torch.nn.functional.gelu(self.proj(x)) * self.scale + self.shift


@pytest.fixture(scope="module")
def mixed_model():
    torch.manual_seed(0)
    tasks = [Task("cls", head=nn.Sequential(nn.Linear(5, 3), nn.Tanh())), Task("reg"), Task("aux", head=ScaledConvHead())]
    x = torch.randn(2, 3, 12, 12)
    sm = automtl.compile(TinyNet(), tasks, example_input=x).eval()
    return sm.derive(mixed_policy(sm)).eval(), x


def test_written_module_runs_standalone_in_a_fresh_interpreter(mixed_model, tmp_path):
    model, x = mixed_model
    folder = tmp_path / "exported"
    path = export_python(model, folder)
    assert path == str(folder / "model.py")
    assert sorted(os.listdir(folder)) == ["model.py", "weights.pt"]
    # `from torch import nn` is module "torch"; `from __future__ import annotations` is a compiler flag
    assert _imports(path) == {"__future__", "torch", "torch.nn.functional"}

    x3 = torch.randn(3, 3, 12, 12)
    got, report = _run_fresh(folder, "model", x3, tmp_path)
    assert report["tasks"] == ["cls", "reg", "aux"] and report["training"] is False
    assert "automtl" not in report["modules"] and "torchvision" not in report["modules"]
    with torch.no_grad():
        expected = model(x3)
    for task in expected:
        torch.testing.assert_close(got[task], expected[task], rtol=1e-5, atol=1e-6)


def test_source_reads_like_the_model(mixed_model, tmp_path):
    model, _ = mixed_model
    source = open(export_python(model, tmp_path), encoding="utf-8").read()
    # one line per operator, with the tasks that run it; skips written out as source
    assert "_put(self, 'own.cls.stem.conv', nn.Conv2d(3, 8, 3, padding=1, bias=False))  # cls\n" in source
    assert "_put(self, 'shared.down.conv', nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False))  # cls\n" in source
    assert "class ConvSkip(nn.Module):" in source and "class LinearSkip(nn.Module):" in source
    assert "def _pad_one_axis(" in source
    assert (
        "_put(self, 'skip.reg.down_conv', ConvSkip(kernel_size=[3, 3], stride=[2, 2], padding=[1, 1], "
        "dilation=[1, 1], proj=nn.Conv2d(8, 16, 1, bias=False)))  # reg\n"
    ) in source
    # the user head is flattened into torch operations on its own parameter and buffer
    assert "_put_parameter(self, 'heads.aux.scale', (4,), torch.float32, requires_grad=True)  # aux\n" in source
    assert "_put_buffer(self, 'heads.aux.shift', (4,), torch.float32)  # aux\n" in source
    assert "gelu = F.gelu(heads_aux_proj)" in source
    assert "def forward(self, x):" in source
    assert "return {'cls': heads_cls_1, 'reg': skip_reg_fc, 'aux': add}" in source


def test_weights_are_plain_tensors(mixed_model, tmp_path):
    model, _ = mixed_model
    export_python(model, tmp_path)
    state = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    reference = model.state_dict()  # the flattened model keeps every path: the same keys
    assert set(state) == set(reference)
    for key, value in state.items():
        assert torch.equal(value, reference[key]), key


def test_in_process_check_and_module_name(mixed_model, tmp_path):
    model, x = mixed_model
    path = export_python(model, tmp_path, x, module_name="mtl_net")
    assert os.path.basename(path) == "mtl_net.py"
    with pytest.raises(ExportError, match="module_name must be a Python identifier"):
        export_python(model, tmp_path, module_name="my-model")


def test_model_exported_to_torchscript_first_still_writes(tmp_path):
    """torch.jit.script marks the modules it compiles (``__overloads__``): not part of them."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 12, 12)
    sm = automtl.compile(TinyNet(), ["a", "b"], example_input=x).eval()
    model = sm.derive(automtl.Policy.all_skip(sm)).eval()
    automtl.export_torchscript(model, tmp_path / "model.pt", example_input=x)
    assert any("__overloads__" in vars(m) for m in model.modules())
    path = export_python(model, tmp_path / "python", x)
    assert "__overloads__" not in open(path).read()


@pytest.mark.slow
def test_mobilenet_v2_mixed_policy(tmp_path):
    """A real backbone; the written module is imported in this process (the fresh-interpreter
    run is the test above) and compared by export_python itself, then once more here."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    sm = automtl.compile(torchvision.models.mobilenet_v2(weights=None), ["seg", "depth"], example_input=x).eval()
    model = sm.derive(mixed_policy(sm)).eval()
    path = export_python(model, tmp_path / "out", x, module_name="mobilenet_mtl")
    spec = importlib.util.spec_from_file_location("mobilenet_mtl", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x3 = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected, got = model(x3), module.load()(x3)
    for task in expected:
        torch.testing.assert_close(got[task], expected[task], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "module",
    [
        nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),
        nn.Conv2d(4, 8, (3, 5), padding="same", dilation=2, groups=4, padding_mode="reflect"),
        nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1, output_padding=1),
        nn.BatchNorm2d(8, eps=1e-3, momentum=None, affine=False),
        nn.LayerNorm((8, 4), elementwise_affine=True, bias=False),
        nn.GroupNorm(2, 8, eps=1e-4),
        nn.Linear(3, 4, bias=False),
        nn.MaxPool2d(3, 2, 1, ceil_mode=True),
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False),
        nn.Hardtanh(-2.0, 2.0),
        nn.PReLU(8),
        nn.Dropout(0.25),
        nn.Flatten(1),
        nn.GELU("tanh"),
    ],
    ids=lambda m: type(m).__name__,
)
def test_torch_modules_rebuild_from_their_constructor_call(module):
    args, kwargs = torch_constructor(module, "op")
    rebuilt = type(module)(*args, **kwargs)
    assert repr(rebuilt) == repr(module)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in module.state_dict().items()}


class PoolIfNeeded(nn.Module):
    """Shape-dependent Python control flow: torch.fx cannot go inside, so the module is run
    whole and written out from its source (its helper function too)."""

    def __init__(self, classes):
        super().__init__()
        self.fc = nn.Linear(5, classes)
        self.register_buffer("offset", torch.full((classes,), 0.5))
        self._sign = -1.0

    def forward(self, x):
        if x.dim() > 2:
            x = x.flatten(2).mean(-1)
        y = self.fc(x) * self._sign + self.offset
        return _flip_if_positive(y)


def _flip_if_positive(y):
    return -y if bool(y.sum() > 0) else y


def test_untraceable_module_is_written_from_its_source(tmp_path):
    x = torch.randn(2, 3, 12, 12)
    sm = automtl.compile(TinyNet(), [Task("a", head=PoolIfNeeded(4)), "b"], example_input=x)
    model = sm.derive(automtl.Policy.all_shared(sm)).eval()
    path = export_python(model, tmp_path / "out", x)
    source = open(path, encoding="utf-8").read()
    assert "class PoolIfNeeded(nn.Module):" in source and "def _flip_if_positive(y):" in source
    assert "def __init__(self, _sign, fc, offset):" in source and "self.register_buffer('offset', offset)" in source
    assert "_put(self, 'heads.a', PoolIfNeeded(_sign=-1.0, fc=nn.Linear(5, 4), offset=torch.empty((4,), dtype=torch.float32)))  # a" in source
    for sign in (1, -1):  # both branches of the data-dependent flip
        xs = sign * torch.randn(3, 3, 12, 12).abs()
        got, _ = _run_fresh(tmp_path / "out", "model", xs, tmp_path)
        with torch.no_grad():
            expected = model(xs)
        for task in expected:
            torch.testing.assert_close(got[task], expected[task], rtol=1e-5, atol=1e-6)


LOOKUP = {"scale": 2.0}


class ReadsAGlobal(nn.Module):
    def forward(self, x):
        if x.dim() > 2:
            x = x.mean((2, 3))
        return x * LOOKUP["scale"]


class GatedLinear(nn.Linear):
    def forward(self, x):
        return super().forward(x) if x.dim() == 2 else x


@pytest.mark.parametrize(
    "head, message",
    [
        (ReadsAGlobal(), "ReadsAGlobal (module 'heads.a', run as a whole because torch.fx cannot go inside it) reads the global 'LOOKUP' (dict"),
        (GatedLinear(5, 5), "module 'heads.a' (GatedLinear) is run as a whole (torch.fx cannot go inside it), and its class derives from Linear, not nn.Module"),
    ],
    ids=["global", "base-class"],
)
def test_module_that_cannot_be_written_is_named(tmp_path, head, message):
    x = torch.randn(2, 3, 12, 12)
    sm = automtl.compile(TinyNet(), [Task("a", head=head), "b"], example_input=x)
    model = sm.derive(automtl.Policy.all_shared(sm))
    with pytest.raises(ExportError) as info:
        export_python(model, tmp_path / "out")
    assert message in str(info.value)
    assert not os.path.exists(tmp_path / "out")


def test_model_whose_own_forward_cannot_be_traced(tmp_path):
    class Branchy(nn.Module):
        def forward(self, x):
            return {"a": x} if x.sum() > 0 else {"a": -x}

    with pytest.raises(ExportError, match=r"export_python: torch.fx cannot trace the model's forward \(Branchy\)"):
        export_python(Branchy(), tmp_path / "out")


def _outside_torch(x):
    return x * 2


torch.fx.wrap("_outside_torch")


class CallsOutside(nn.Module):
    def forward(self, x):
        return _outside_torch(x)


def test_function_outside_torch_is_named(tmp_path):
    x = torch.randn(2, 3, 12, 12)
    sm = automtl.compile(TinyNet(), [Task("a", head=CallsOutside()), "b"], example_input=x)
    model = sm.derive(automtl.Policy.all_shared(sm))
    with pytest.raises(ExportError) as info:
        export_python(model, tmp_path / "out")
    message = str(info.value)
    assert "node '_outside_torch' (run by a) calls" in message and "_outside_torch, which is not part of torch" in message
    assert not os.path.exists(tmp_path / "out")
