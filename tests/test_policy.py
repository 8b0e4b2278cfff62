"""Policy: a plain value that serialises to JSON and checks itself against a SuperModel."""

import collections
import json

import pytest
import torch
from torch import nn

import automtl
from automtl import Policy
from automtl.errors import PolicyError


@pytest.fixture(scope="module")
def sm():
    torch.manual_seed(0)
    layers = [("c0", nn.Conv2d(3, 4, 3)), ("act", nn.ReLU()), ("c2", nn.Conv2d(4, 4, 3)), ("flat", nn.Flatten()), ("c4", nn.Linear(16, 2))]
    backbone = nn.Sequential(collections.OrderedDict(layers))
    return automtl.compile(backbone, ["seg", "depth"], example_input=torch.randn(1, 3, 6, 6))


def test_constant_policies(sm):
    assert sm.searchable_nodes == ["c0", "c2", "c4"]
    for make, option in ((Policy.all_shared, "shared"), (Policy.all_own, "own"), (Policy.all_skip, "skip")):
        policy = make(sm)
        assert policy.count(option) == 6
        assert all(policy.option(t, n) == option for t in sm.task_names for n in sm.searchable_nodes)


def test_json_round_trip_keeps_choices_and_probabilities(sm, tmp_path):
    with torch.no_grad():
        for logits in sm.arch_parameters():
            logits.normal_()
    policy = Policy.sample(sm, seed=4)
    path = tmp_path / "policy.json"
    policy.save(path)
    data = json.loads(path.read_text())
    assert data["format"] == "automtl.policy" and data["options"] == ["shared", "own", "skip"]
    entry = data["tasks"]["seg"]["c2"]
    assert entry["choice"] in ("shared", "own", "skip") and len(entry["probs"]) == 3
    assert abs(sum(entry["probs"]) - 1) < 1e-5
    loaded = Policy.load(sm, path)
    assert loaded == policy
    assert loaded.probs["depth"]["c4"] == pytest.approx(policy.probs["depth"]["c4"], abs=1e-6)


def test_sample_is_reproducible_and_follows_the_distribution(sm):
    with torch.no_grad():
        for logits in sm.arch_parameters():
            logits.copy_(torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 5.0]]))
    assert Policy.sample(sm, seed=1) == Policy.sample(sm, seed=1)
    draws = [Policy.sample(sm, seed=s) for s in range(50)]
    seg_shared = sum(d.count("shared") for d in draws) / (50 * 6)
    assert 0.45 < seg_shared < 0.55  # seg picks shared (p=0.987), depth picks skip
    assert Policy.argmax(sm).as_table() == {"seg": {n: 0 for n in sm.searchable_nodes}, "depth": {n: 2 for n in sm.searchable_nodes}}


def test_bare_mapping_with_names_or_indices(sm):
    policy = Policy.from_dict(sm, {"seg": {"c0": 0, "c2": "own", "c4": 2}, "depth": {"c0": "skip", "c2": 1, "c4": "shared"}})
    assert policy.choice("seg", "c2") == 1 and policy.option("depth", "c0") == "skip"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"seg": {"c0": 0, "c2": 0, "c4": 0}, "dpeth": {}}, "task 'dpeth', which the SuperModel does not have (did you mean 'depth'?)"),
        ({"seg": {"c0": 0, "c2": 0, "c4": 0}}, "no choices for task 'depth'"),
        ({"seg": {"c0": 0, "c2": 0}, "depth": {"c0": 0, "c2": 0, "c4": 0}}, "no choice for task 'seg' at node 'c4'"),
        ({"seg": {"c0": 0, "c2": 0, "c4": 0, "c44": 1}, "depth": {"c0": 0, "c2": 0, "c4": 0}}, "node 'c44' for task 'seg', which is not a searchable node of the SuperModel (did you mean 'c4'?)"),
        ({"seg": {"c0": "shard", "c2": 0, "c4": 0}, "depth": {"c0": 0, "c2": 0, "c4": 0}}, "task 'seg', node 'c0': option must be one of"),
        ({"format": "automtl.policy", "version": 99, "tasks": {}}, "version 99"),
        ([1, 2], "a policy must be a mapping"),
    ],
)
def test_bad_policies_are_refused_with_a_clear_message(sm, data, message):
    with pytest.raises(PolicyError) as info:
        Policy.from_dict(sm, data)
    assert message in str(info.value)


def test_unreadable_policy_file(sm, tmp_path):
    path = tmp_path / "p.json"
    path.write_text("{not json")
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        Policy.load(sm, path)
