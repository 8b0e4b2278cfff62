"""Recording every node's shape without running the backbone's arithmetic: shapes a front end
knows statically, else a run on the meta device, else a real run."""

import torch
import torchvision
from torch import nn

from automtl.compiler.fx_frontend import _ShapeRecorder, record_shapes, trace_module
from automtl.compiler.prototxt import load_prototxt


def _real(gm, x):
    recorder = _ShapeRecorder(gm)
    gm.eval()
    with torch.no_grad():
        recorder.run(x)
    return recorder.shapes


def test_meta_run_gives_the_shapes_of_a_real_run():
    for model in (torchvision.models.resnet18(), torchvision.models.mobilenet_v3_small()):
        gm = trace_module(model)
        x = torch.randn(2, 3, 40, 48)
        assert record_shapes(gm, [x]) == _real(gm, x)
    assert model.training  # the mode is restored


class ValueDependent(nn.Module):
    def forward(self, x):
        return x[:, :2] if bool(x.sum() > 0) else x[:, :3]  # reads a value: no meta run


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.gate = ValueDependent()
        self.register_buffer("offset", torch.ones(1))
        self.scale = torch.full((1,), 2.0)  # a plain tensor attribute, not a buffer

    def forward(self, x):
        return self.gate(self.conv(x) + self.offset) * self.scale


def test_code_the_meta_device_cannot_run_falls_back_to_a_real_run():
    gm = trace_module(Net(), leaf_modules=[ValueDependent])
    x = torch.randn(1, 3, 8, 8)
    shapes = record_shapes(gm, [x])
    assert shapes == _real(gm, x) and shapes["gate"][1] in (2, 3)


def test_prototxt_shapes_are_known_without_running_anything():
    gm = load_prototxt("resnet18", input_shape=(1, 3, 32, 32))

    def refuse(*args, **kwargs):
        raise AssertionError("the net was run")

    for module in gm.modules():
        if isinstance(module, nn.Conv2d):
            module.forward = refuse
    shapes = record_shapes(gm, [torch.zeros(1, 3, 32, 32)])
    assert shapes["layer4_1_conv2"] == torch.Size([1, 512, 1, 1])
    # for another input shape than it was built for, it is run (on the meta device)
    other = load_prototxt("resnet18", input_shape=(1, 3, 32, 32))
    assert record_shapes(other, [torch.zeros(2, 3, 64, 64)])["layer4_1_conv2"] == torch.Size([2, 512, 2, 2])
