"""model_cost against an independent count: for mixed policies on torchvision ResNet-18 and
MobileNetV2, in every norm mode, the convolution/linear MACs of the derived model equal half
the FLOPs torch.utils.flop_counter.FlopCounterMode records for one batch-1 forward."""

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import automtl
from automtl import Policy, Task
from automtl.compiler.passes import NORM_POLICIES
from automtl.export import model_cost
from automtl.export.cost import KINDS

SIZE = (3, 64, 64)


def _policies(sm):
    """Mixes of shared / own / skip: uniform draws, a shared prefix (computed once when the
    norm mode lets it), and two tasks sharing everything next to a third that does not."""
    nodes = sm.searchable_nodes
    tasks = sm.task_names
    policies = [Policy.random(sm, seed=seed) for seed in (0, 1)]
    drawn = Policy.random(sm, seed=3).as_table()
    half = len(nodes) // 2
    policies.append(Policy.from_dict(sm, {t: {n: 0 if i < half else drawn[t][n] for i, n in enumerate(nodes)} for t in tasks}))
    pair = {t: {n: 0 for n in nodes} for t in tasks[:2]}
    pair[tasks[2]] = {n: (1, 2)[i % 2] for i, n in enumerate(nodes)}
    policies.append(Policy.from_dict(sm, pair))
    return policies


def _dense_macs_by_flop_counter(model):
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *SIZE))
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return flops // 2


@pytest.mark.parametrize("norm", NORM_POLICIES)
@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_conv_and_linear_macs_equal_half_the_flop_counters_flops(arch, norm):
    torch.manual_seed(0)
    backbone = torchvision.models.get_model(arch, weights=None)
    tasks = [Task("a", head=nn.Linear(1000, 3)), Task("b"), Task("c", head=nn.Linear(1000, 5))]
    sm = automtl.compile(backbone, tasks, example_input=torch.zeros(2, *SIZE), norm=norm)
    totals = []
    for policy in _policies(sm):
        assert all(policy.count(option) > 0 for option in ("shared", "own", "skip")), policy
        model = sm.derive(policy).eval()
        cost = model_cost(model, SIZE)
        assert set(cost.macs_by_kind) == set(KINDS)
        assert sum(cost.macs_by_kind.values()) == cost.macs
        assert cost.macs_by_kind["norm"] > 0
        dense = cost.macs_by_kind["conv"] + cost.macs_by_kind["linear"]
        assert dense == _dense_macs_by_flop_counter(model), (arch, norm, policy)
        totals.append(dense)
    assert len(set(totals)) == len(totals)  # the policies are different models, not one counted four times


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_a_shared_prefix_is_counted_once(arch):
    """With norms that follow their operator, tasks that share the first half of the network
    compute it once: model_cost and the FLOP counter agree on less than three times its cost."""
    torch.manual_seed(0)
    backbone = torchvision.models.get_model(arch, weights=None)
    sm = automtl.compile(backbone, ["a", "b", "c"], example_input=torch.zeros(2, *SIZE), norm="follow")
    nodes = sm.searchable_nodes
    half = len(nodes) // 2
    prefix_shared = Policy.from_dict(sm, {t: {n: 0 if i < half else 1 for i, n in enumerate(nodes)} for t in sm.task_names})
    all_own = sm.derive(Policy.all_own(sm)).eval()
    model = sm.derive(prefix_shared).eval()
    cost, own_cost = model_cost(model, SIZE), model_cost(all_own, SIZE)
    dense = cost.macs_by_kind["conv"] + cost.macs_by_kind["linear"]
    assert dense == _dense_macs_by_flop_counter(model)
    single = own_cost.tasks["a"].macs  # one task's whole network
    assert own_cost.macs == 3 * single
    assert cost.tasks["a"].macs == single
    # the prefix runs once instead of three times: the saving is twice the prefix's cost
    prefix = sum(op.macs for op in cost.operators if len(op.tasks) == 3)
    assert prefix > 0
    assert own_cost.macs - cost.macs == 2 * prefix
