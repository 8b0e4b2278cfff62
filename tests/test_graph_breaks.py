"""torch.compile traces the SuperModel whole: torch._dynamo.explain finds one graph and no
graph break in every mode, on the reference path (ResNet-18, what the CPU runs) and on the
fast path (what GPUs run), and a compiled model computes what the eager one does."""

import pytest
import torch
import torchvision
from torch import nn

import automtl
from automtl import Policy

MODES = ("warmup", "gumbel", "fixed")


def _set_mode(sm, mode):
    if mode == "fixed":
        sm.set_mode("fixed", policy=Policy.argmax(sm))
    else:
        sm.set_mode(mode, tau=2.0)


def _explain(sm, x):
    torch._dynamo.reset()
    try:
        return torch._dynamo.explain(sm)(x)
    finally:
        torch._dynamo.reset()


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    # batch 2: in training mode the last stage's batch norm needs more than one value per channel
    x = torch.randn(2, 3, 32, 32)
    sm = automtl.compile(torchvision.models.resnet18(num_classes=4), ["a", "b"], example_input=x)
    return sm.train(), x


@pytest.mark.parametrize("mode", MODES)
def test_resnet18_supermodel_has_no_graph_break(resnet18, mode):
    sm, x = resnet18
    _set_mode(sm, mode)
    found = _explain(sm, x)
    assert (found.graph_count, found.graph_break_count) == (1, 0), [b.reason for b in found.break_reasons]


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.down = nn.Conv2d(4, 8, 3, stride=2, padding=1)

    def forward(self, x):
        h = torch.relu(self.bn(self.stem(x)))
        return self.down(torch.relu(h + self.conv(h)))


@pytest.fixture
def small():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 8, 8)
    sm = automtl.compile(Residual(), ["a", "b", "c"], example_input=x)
    return sm.train(), x


@pytest.mark.parametrize("mode", MODES)
def test_fast_path_has_no_graph_break(small, mode):
    sm, x = small
    sm.set_execution("fast")
    _set_mode(sm, mode)
    found = _explain(sm, x)
    assert (found.graph_count, found.graph_break_count) == (1, 0), [b.reason for b in found.break_reasons]


def test_restricted_options_have_no_graph_break(small):
    """AdaShare turns the own option off: the mask is read on the host, not from the device."""
    sm, x = small
    sm.set_allowed_options(("shared", "skip"))
    _set_mode(sm, "gumbel")
    found = _explain(sm, x)
    assert (found.graph_count, found.graph_break_count) == (1, 0), [b.reason for b in found.break_reasons]
    assert float(sm.last_weights["stem"][:, 1].abs().max()) == 0.0  # the own option stays off
    sm.set_mode("warmup")
    assert sm.mixing_weights()["stem"][0] == [0.5, 0.0, 0.5]


def test_compiled_supermodel_matches_eager_and_compiles_once_per_mode(small):
    sm, x = small
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(sm, backend=backend)
    try:
        for mode in MODES:
            _set_mode(sm, mode)
            for batch in (x, x + 1.0):  # a new input tensor each step must not recompile
                torch.manual_seed(3)
                got = compiled(batch)
                torch.manual_seed(3)
                want = sm(batch)
                assert all(torch.equal(got[t], want[t]) for t in sm.task_names)
    finally:
        torch._dynamo.reset()
    assert len(graphs) == len(MODES)
