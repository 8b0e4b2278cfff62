"""The contract test over the model zoo: every supported torchvision backbone goes through
compile -> equivalence with the original -> derive (all-shared, all-own, random) -> fixed mode.

Equivalence is the core promise: a compiled model whose policy shares every operator (or gives
every task its own copy, which starts as a copy of the backbone's weights) computes exactly
what the backbone computes. The checks of a policy that mixes the options run after every
task's copies are made distinct (task_copies.perturb_copies), so running a task on another
task's copy, or on the shared operator, fails them; the all-own model must then equal T
independent backbones, each loaded with one task's copies.
"""

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

import automtl
from automtl import Policy
from automtl.compiler.passes import NORM_POLICIES
from task_copies import all_own_outputs, perturb_copies

ARCHS = [
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "mnasnet0_5",
    "efficientnet_b0",
    "densenet121",
    "regnet_x_400mf",
    "regnet_y_400mf",
    "shufflenet_v2_x0_5",
    "squeezenet1_1",
    "vgg11_bn",
    "convnext_tiny",
]


def _truncated_resnet():
    # a dense-prediction backbone: ResNet-18 without its pooling and classifier
    return nn.Sequential(*list(torchvision.models.resnet18(weights=None).children())[:-2])


def _feature_extractor():
    return create_feature_extractor(torchvision.models.mobilenet_v2(weights=None), {"features.13": "c4"})


def _feature_dict():
    return create_feature_extractor(
        torchvision.models.resnet34(weights=None), {"layer2": "c3", "layer3": "c4"}
    )


BACKBONES = {arch: (lambda a=arch: torchvision.models.get_model(a, weights=None)) for arch in ARCHS}
BACKBONES["resnet18_sequential_trunk"] = _truncated_resnet
BACKBONES["mobilenet_v2_feature_extractor"] = _feature_extractor
BACKBONES["resnet34_feature_dict"] = _feature_dict


def _max_rel_error(out, ref):
    if isinstance(ref, dict):
        return max(_max_rel_error(out[k], ref[k]) for k in ref)
    return float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def _params(module_or_list):
    params = module_or_list.parameters() if isinstance(module_or_list, nn.Module) else module_or_list
    return sum(p.numel() for p in params)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_zoo_contract(name):
    torch.manual_seed(0)
    backbone = BACKBONES[name]().eval()
    x = torch.randn(2, 3, 64, 64)
    tasks = ["a", "b"]
    sm = automtl.compile(backbone, tasks, example_input=x).eval()
    assert len(sm.searchable_nodes) > 0
    assert sm.search_space_size == 3 ** (2 * len(sm.searchable_nodes))
    assert "searchable" in sm.summary()

    with torch.no_grad():
        reference = backbone(x)
        shared = sm.derive(Policy.all_shared(sm)).eval()
        own = sm.derive(Policy.all_own(sm)).eval()
        for model in (shared, own):
            out = model(x)
            for task in tasks:
                assert _max_rel_error(out[task], reference) <= 1e-5

        # the fixed SuperModel and the derived model agree on a random mixed policy with skips,
        # every task's copies distinct (a task run on another's copy would differ)
        perturb_copies(sm, seed=3)
        policy = Policy.random(sm, seed=7)
        assert policy.count("skip") > 0 and policy.count("own") > 0 and policy.count("shared") > 0
        derived = sm.derive(policy).eval()(x)
        fixed = sm.set_mode("fixed", policy=policy)(x)
        for task in tasks:
            assert _max_rel_error(derived[task], fixed[task]) <= 1e-5
        assert _max_rel_error(derived["a"], derived["b"]) > 1e-3  # the perturbation shows

    # parameters: all-shared = backbone (+ a per-task copy of every norm); all-own = one backbone per task
    backbone_params = _params(backbone)
    per_task = {id(m): m for n, m in sm.vcns.items() if m.role == "per_task"}
    per_task_params = sum(_params(m.op) for m in per_task.values())
    assert shared.num_parameters() == backbone_params + (len(tasks) - 1) * per_task_params
    assert own.num_parameters() == len(tasks) * backbone_params
    for task in tasks:
        assert own.num_parameters(task) == backbone_params


@pytest.mark.parametrize("norm", NORM_POLICIES)
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_all_own_is_one_independent_backbone_per_task(name, norm):
    """With distinct copies, the all-own model (derived, and the SuperModel in fixed mode) gives
    each task what the backbone loaded with that task's copies computes, in every norm mode."""
    torch.manual_seed(0)
    backbone = BACKBONES[name]().eval()
    x = torch.randn(2, 3, 32, 32)
    tasks = ["a", "b", "c"]
    sm = perturb_copies(automtl.compile(backbone, tasks, example_input=x, norm=norm).eval(), seed=1)
    derived, fixed, expected = all_own_outputs(sm, backbone, x)
    for task in tasks:
        assert _max_rel_error(derived[task], expected[task]) <= 1e-5, task
        assert _max_rel_error(fixed[task], expected[task]) <= 1e-5, task
    for a, b in (("a", "b"), ("b", "c"), ("a", "c")):
        assert _max_rel_error(expected[a], expected[b]) > 1e-3  # three different networks
