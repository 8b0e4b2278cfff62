"""Per-task parameters and MACs of derived models, against hand counts and a direct count on
the original torchvision model."""

import math

import pytest
import torch
import torchvision
from torch import nn

import automtl
from automtl import Policy, Task
from automtl.errors import ExportError
from automtl.export import model_cost
from automtl.export.cost import human

from export_models import TinyNet


@pytest.fixture(scope="module")
def tiny():
    x = torch.randn(2, 3, 12, 12)
    tasks = [Task("cls", head=nn.Linear(5, 3)), Task("reg")]
    # per-task norms, as these hand counts assume (the default norm mode is not pinned here)
    return automtl.compile(TinyNet(), tasks, example_input=x, norm="per_task").eval()


# TinyNet on 3x12x12: stem conv 3->8 (k3, 12x12), mid conv 8->8 (k3, 12x12), down conv 8->16
# (k3, s2: 6x6), a BN after each, fc 16->5; the cls head is a Linear 5->3.
STEM, MID, DOWN = 8 * 144 * 3 * 9, 8 * 144 * 8 * 9, 16 * 36 * 8 * 9
BNS = 8 * 144 + 8 * 144 + 16 * 36
FC, HEAD = 5 * 16, 3 * 5
CONV_PARAMS = 8 * 3 * 9 + 8 * 8 * 9 + 16 * 8 * 9
BN_PARAMS = 2 * (8 + 8 + 16)
FC_PARAMS, HEAD_PARAMS = 16 * 5 + 5, 5 * 3 + 3


def test_all_shared_counts_shared_operators_once(tiny):
    cost = model_cost(tiny.derive(Policy.all_shared(tiny)), (3, 12, 12))
    backbone = STEM + MID + DOWN + FC
    assert cost.tasks["cls"].macs == backbone + BNS + HEAD  # every BN is per task (norm="per_task")
    assert cost.tasks["reg"].macs == backbone + BNS
    # the stem runs once for both; after their own batch norms the tasks feed different tensors
    # to the shared convolutions, so from there on each runs them for itself
    assert cost.macs == STEM + 2 * (MID + DOWN + FC) + 2 * BNS + HEAD
    assert cost.tasks["cls"].flops == 2 * cost.tasks["cls"].macs
    assert cost.tasks["cls"].parameters == CONV_PARAMS + BN_PARAMS + FC_PARAMS + HEAD_PARAMS
    assert cost.parameters == CONV_PARAMS + 2 * BN_PARAMS + FC_PARAMS + HEAD_PARAMS
    sharing = cost.sharing("cls")
    assert [op.path for op in sharing[("reg",)]] == ["shared.stem.conv", "shared.mid.conv", "shared.down.conv", "shared.fc"]
    assert [op.path for op in sharing[()]] == ["own.cls.stem.bn", "own.cls.mid.bn", "own.cls.down.bn", "heads.cls"]


def test_mixed_policy_with_skips(tiny):
    # cls: stem own, mid skipped (identity), down shared, fc shared; reg: stem shared, mid own,
    # down skipped (centre-tap down-sample + 1x1 projection 8->16), fc own
    table = {
        "cls": {"stem_conv": "own", "mid_conv": "skip", "down_conv": "shared", "fc": "shared"},
        "reg": {"stem_conv": "shared", "mid_conv": "own", "down_conv": "skip", "fc": "own"},
    }
    model = tiny.derive(Policy.from_dict(tiny, table))
    cost = model_cost(model, (3, 12, 12))
    skip_projection = 16 * 36 * 8
    assert cost.tasks["cls"].macs == STEM + DOWN + FC + BNS + HEAD
    assert cost.tasks["reg"].macs == STEM + MID + skip_projection + FC + BNS
    assert cost.macs == 2 * STEM + MID + DOWN + skip_projection + 2 * FC + 2 * BNS + HEAD
    for task in ("cls", "reg"):
        assert cost.tasks[task].parameters == model.num_parameters(task)
    assert cost.parameters == model.num_parameters()
    assert ("reg",) not in cost.sharing("cls")  # no operator runs for both
    assert [op.path for op in cost.sharing("cls")[()]] == [
        "own.cls.stem.conv", "own.cls.stem.bn", "own.cls.mid.bn", "shared.down.conv", "own.cls.down.bn", "shared.fc", "heads.cls",
    ]
    assert [op.path for op in cost.sharing("reg")[()]] == [
        "shared.stem.conv", "own.reg.stem.bn", "own.reg.mid.conv", "own.reg.mid.bn", "skip.reg.down_conv", "own.reg.down.bn", "own.reg.fc",
    ]
    assert not any(op.path.startswith("skip.cls") for op in cost.operators)  # the identity skip costs nothing


def _direct_macs(model, x):
    """Conv/linear/norm MACs of ``model`` counted with forward hooks on the original modules."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += output.numel() * module.in_channels // module.groups * math.prod(module.kernel_size)
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features
        elif isinstance(module, nn.BatchNorm2d):
            total += output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_all_shared_torchvision_model_costs_what_the_backbone_costs(arch):
    backbone = torchvision.models.get_model(arch, weights=None)
    x = torch.randn(1, 3, 64, 64)
    sm = automtl.compile(backbone, ["a", "b"], example_input=x, norm="follow")
    cost = model_cost(sm.derive(Policy.all_shared(sm)), (3, 64, 64))
    expected = _direct_macs(backbone, x)
    assert cost.tasks["a"].macs == cost.tasks["b"].macs == cost.macs == expected
    assert cost.parameters == sum(p.numel() for p in backbone.parameters())
    if arch == "resnet18":  # the published count: 1.82 GMACs at 224x224
        assert human(model_cost(sm.derive(Policy.all_shared(sm)), (3, 224, 224)).macs) == "1.82G"


def test_report_lists_every_task_and_its_sharing(tiny):
    cost = model_cost(tiny.derive(Policy.all_shared(tiny)), (3, 12, 12))
    text = cost.report(width=200)
    assert "cost at input 1x3x12x12 (batch 1)" in text
    assert text.splitlines()[5].split() == ["cls", human(cost.tasks["cls"].parameters), human(cost.tasks["cls"].macs), human(cost.tasks["cls"].flops)]
    assert "cls: operators by the tasks it shares them with" in text
    assert "  with reg: 4 operators, " in text
    assert "shared.stem.conv, shared.mid.conv, shared.down.conv, shared.fc\n" in text
    assert "  its own: 3 operators, 64 parameters: own.reg.stem.bn, own.reg.mid.bn, own.reg.down.bn" in text
    assert all(len(line) <= 80 for line in cost.report(width=80).splitlines())  # wrapped lists


def test_wrong_input_size_is_an_error(tiny):
    model = tiny.derive(Policy.all_shared(tiny))
    with pytest.raises(ExportError, match=r"the model cannot run on an input of size 1x1x12x12"):
        model_cost(model, (1, 12, 12))
    with pytest.raises(ExportError, match="input size must be positive"):
        model_cost(model, (3, 0, 12))
