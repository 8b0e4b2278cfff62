"""The torch.fx front end: tracing, shapes, roles, and the errors a user can act on."""

import pytest
import torch
import torchvision
from torch import nn

import automtl
from automtl import Policy
from automtl.compiler.ir import FOLLOW, PER_TASK, PLAIN, SEARCHABLE
from automtl.errors import CompileError, ConfigError, TraceError


class Gate(nn.Module):
    """Data-dependent control flow: fx cannot trace this."""

    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.gate = Gate()
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.gate(self.conv(x)))


def test_untraceable_module_is_named_with_the_fix():
    with pytest.raises(TraceError) as info:
        automtl.compile(Gated(), ["a"], example_input=torch.randn(1, 3, 8, 8))
    message = str(info.value)
    assert "module 'gate' (Gate)" in message
    assert "leaf_modules=[Gate]" in message and "leaf_modules=['gate']" in message


@pytest.mark.parametrize("leaf", [Gate, "gate"])
def test_leaf_modules_keep_a_module_whole(leaf):
    torch.manual_seed(0)
    model = Gated().eval()
    x = torch.randn(2, 3, 8, 8)
    sm = automtl.compile(model, ["a", "b"], example_input=x, leaf_modules=[leaf]).eval()
    assert sm.graph["gate"].op == "call_module" and sm.graph["gate"].role == PLAIN
    with torch.no_grad():
        torch.testing.assert_close(sm.derive(Policy.all_shared(sm))(x)["b"], model(x))


def test_compile_leaves_the_users_model_untouched():
    model = torchvision.models.resnet18(weights=None)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sm = automtl.compile(model, ["a"], example_input=torch.randn(2, 3, 32, 32))
    assert model.training and all(m.training for m in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # no running-statistics update
    assert sm.vcns["conv1"].op is not model.conv1


def test_shapes_are_recorded():
    sm = automtl.compile(torchvision.models.resnet18(weights=None), ["a"], example_input=torch.randn(2, 3, 32, 32))
    node = sm.graph["layer2_0_conv1"]
    assert tuple(node.in_shapes[0]) == (2, 64, 8, 8) and tuple(node.out_shape) == (2, 128, 4, 4)
    assert node.description == "Conv2d(64->128, k3x3, s2x2)"
    assert sm.graph["flatten"].description == "torch.flatten"


def test_roles_and_depths():
    sm = automtl.compile(torchvision.models.resnet18(weights=None), ["a", "b"], example_input=torch.randn(1, 3, 32, 32))
    g = sm.graph
    assert g["conv1"].role == SEARCHABLE and g["fc"].role == SEARCHABLE
    # norm="follow" is the default: a norm takes its convolution's choice
    assert g["bn1"].role == FOLLOW and g["bn1"].follows == "conv1"
    assert g["relu"].role == PLAIN and g["add"].role == PLAIN
    # the residual branch's down-sample sits at the same depth as the block's first conv
    assert g["layer2_0_downsample_0"].depth == g["layer2_0_conv1"].depth == g["layer1_1_conv2"].depth + 1
    assert g["fc"].depth == len(sm.searchable_nodes) - 4  # 4 blocks have a parallel down-sample
    depths = [sm.depth(n) for n in sm.searchable_nodes]
    assert depths == sorted(depths)
    assert sm.graph.nx.has_edge("conv1", "bn1")


def test_norms_can_follow_their_operator():
    sm = automtl.compile(
        torchvision.models.resnet18(weights=None), ["a", "b"], example_input=torch.randn(1, 3, 32, 32), norm="follow"
    )
    assert sm.graph["bn1"].role == FOLLOW and sm.graph["bn1"].follows == "conv1"
    assert sm.graph["layer2_0_downsample_1"].follows == "layer2_0_downsample_0"


def test_a_norm_fed_by_a_concatenation_follows_the_operator_of_its_first_input():
    sm = automtl.compile(
        torchvision.models.densenet121(weights=None), ["a"], example_input=torch.randn(1, 3, 32, 32), norm="follow"
    )
    g = sm.graph
    concat_fed = [n for n in g if n.description.startswith("BatchNorm2d") and g[n.parents[0]].op == "call_function"]
    assert concat_fed and all(n.role == FOLLOW for n in concat_fed)
    assert not any(n.role == PER_TASK for n in g)
    # the first dense layer's concatenation reads the stem (conv0 -> norm0 -> relu0 -> pool0) first
    assert g["features_denseblock1_denselayer1_norm1"].follows == "features_conv0"
    # the first dense layer of the second block: the transition's convolution, through its pooling
    assert g["features_denseblock2_denselayer1_norm1"].follows == "features_transition1_conv"


def test_bare_parameters_follow_the_operator_feeding_them():
    sm = automtl.compile(torchvision.models.convnext_tiny(weights=None), ["a"], example_input=torch.randn(1, 3, 32, 32))
    scales = [n for n in sm.graph if n.op == "get_attr" and n.role == FOLLOW]
    assert scales, "ConvNeXt's layer scales are parameters read with get_attr"
    first = scales[0]
    assert sm.graph[first.follows].description.startswith("Linear")


def test_searchable_types_are_configurable():
    model = torchvision.models.resnet18(weights=None)
    sm = automtl.compile(model, ["a"], example_input=torch.randn(1, 3, 32, 32), searchable=(nn.Linear,))
    assert sm.searchable_nodes == ["fc"]
    # the convolutions are no longer searchable, and nothing searchable feeds them: per-task copies
    assert sm.graph["conv1"].role == PER_TASK and sm.graph["layer1_0_conv1"].role == PER_TASK


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({}, CompileError, "needs example_input="),
        ({"example_input": torch.randn(1, 4, 32, 32)}, CompileError, "failed at node 'conv1' (call_module conv1): RuntimeError: Given groups=1, weight of size [64, 3, 7, 7], expected input[1, 4, 32, 32] to have 3 channels"),
        ({"example_input": torch.randn(3, 32, 32)}, CompileError, "failed at node 'bn1' (call_module bn1): ValueError: expected 4D input (got 3D input). Check that example_input"),
        ({"example_input": [1, 2]}, CompileError, "example_input must be a torch.Tensor"),
        ({"example_input": torch.randn(1, 3, 32, 32), "norm": "shared"}, CompileError, "norm must be one of"),
        ({"example_input": torch.randn(1, 3, 32, 32), "leaf_modules": [3]}, CompileError, "leaf_modules entries must be"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error) as info:
        automtl.compile(torchvision.models.resnet18(weights=None), ["a"], **kwargs)
    assert message in str(info.value)


def test_bad_tasks():
    model = nn.Conv2d(3, 4, 3)
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ConfigError, match="task name 'seg' is used twice"):
        automtl.compile(model, ["seg", "seg"], example_input=x)
    with pytest.raises(ConfigError, match="task name 'my task' is not usable"):
        automtl.compile(model, ["my task"], example_input=x)
    with pytest.raises(CompileError, match="cannot compile a int"):
        automtl.compile(3, ["a"], example_input=x)


def test_a_backbone_without_searchable_operators_is_refused():
    with pytest.raises(CompileError, match="has no searchable operators"):
        automtl.compile(nn.ReLU(), ["a"], example_input=torch.randn(1, 3))


def test_backbones_with_several_inputs_are_refused():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x, y):
            return self.conv(x) + y

    with pytest.raises(CompileError, match="takes 2 input"):
        automtl.compile(TwoInputs(), ["a"], example_input=torch.randn(1, 3, 4, 4))
