"""SuperModel modes, checked numerically against a direct computation on a small graph."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import automtl
from automtl import Policy
from automtl.errors import ConfigError, PolicyError


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x)))


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    backbone = Tiny()
    x = torch.randn(2, 3, 8, 8)
    sm = automtl.compile(backbone, ["a", "b"], example_input=x)
    # make every copy differ from the backbone so a wrong option shows
    with torch.no_grad():
        for vcn in sm.vcns.values():
            for copy in vcn.copies.values():
                for p in copy.parameters():
                    p.add_(torch.randn_like(p) * 0.1)
    return sm, x


def _options(sm, node, task, value):
    vcn = sm.vcns[node]
    proj = vcn.skips[task].proj.weight
    stride = vcn.op.stride
    return [vcn.op(value), vcn.copies[task](value), F.conv2d(value, proj, stride=stride)]


def _direct(sm, x, task, weights):
    """The supermodel's function written out by hand: weights[node] = 3 option weights."""
    h = sum(w * o for w, o in zip(weights["conv1"], _options(sm, "conv1", task, x)))
    h = torch.relu(h)
    return sum(w * o for w, o in zip(weights["conv2"], _options(sm, "conv2", task, h)))


def test_structure(tiny):
    sm, _ = tiny
    assert sm.searchable_nodes == ["conv1", "conv2"]
    assert [sm.depth(n) for n in sm.searchable_nodes] == [0, 1]
    assert sm.search_space_size == 3 ** 4
    assert {id(p) for p in sm.arch_parameters()}.isdisjoint({id(p) for p in sm.weight_parameters()})
    assert len(sm.arch_parameters()) == 2 and sm.arch_parameters()[0].shape == (2, 3)
    assert len(list(sm.parameters())) == len(sm.arch_parameters()) + len(sm.weight_parameters())
    text = repr(sm)
    assert "node" in text and "searchable (depth 1)" in text and "search space 3^4" in text


def test_warmup_averages_the_three_options(tiny):
    sm, x = tiny
    sm.set_mode("warmup")
    out = sm(x)
    third = [1 / 3] * 3
    for task in ("a", "b"):
        expected = _direct(sm, x, task, {"conv1": third, "conv2": third})
        torch.testing.assert_close(out[task], expected, rtol=1e-5, atol=1e-6)


def test_gumbel_mixes_with_sampled_weights_and_reaches_the_logits(tiny):
    sm, x = tiny
    with torch.no_grad():
        sm.vcns["conv1"].logits.copy_(torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]]))
    sm.set_mode("gumbel", tau=0.7)
    torch.manual_seed(1)
    out = sm(x)
    weights = sm.last_weights
    for i, task in enumerate(("a", "b")):
        w = {node: weights[node][i] for node in ("conv1", "conv2")}
        assert torch.allclose(w["conv1"].sum(), torch.tensor(1.0))
        expected = _direct(sm, x, task, w)
        torch.testing.assert_close(out[task], expected, rtol=1e-5, atol=1e-6)
    sum(o.sum() for o in out.values()).backward()
    for logits in sm.arch_parameters():
        assert logits.grad is not None and logits.grad.abs().sum() > 0
    copy.deepcopy(sm)  # the kept weights are detached: nothing pins the autograd graph


def test_gumbel_temperature_controls_sharpness(tiny):
    sm, x = tiny
    with torch.no_grad():
        sm.vcns["conv1"].logits.copy_(torch.tensor([[3.0, 0.0, 0.0], [3.0, 0.0, 0.0]]))
    peaks = {}
    for tau in (10.0, 0.05):
        sm.set_mode("gumbel", tau=tau)
        torch.manual_seed(3)
        sm(x)
        peaks[tau] = float(sm.last_weights["conv1"].detach().max(dim=-1).values.mean())
    assert peaks[0.05] > 0.99 > 0.6 > peaks[10.0]


def test_fixed_mode_runs_exactly_the_chosen_options(tiny):
    sm, x = tiny
    policy = Policy.from_dict(sm, {"a": {"conv1": "own", "conv2": "skip"}, "b": {"conv1": "shared", "conv2": "own"}})
    sm.set_mode("fixed", policy=policy)
    out = sm(x)
    one_hot = {0: [1, 0, 0], 1: [0, 1, 0], 2: [0, 0, 1]}
    for task in ("a", "b"):
        weights = {n: one_hot[policy.choice(task, n)] for n in sm.searchable_nodes}
        torch.testing.assert_close(out[task], _direct(sm, x, task, weights), rtol=1e-5, atol=1e-6)
    derived = sm.derive(policy)(x)
    for task in ("a", "b"):
        torch.testing.assert_close(derived[task], out[task])


def test_restricted_options_drop_out_of_warmup_and_gumbel(tiny):
    sm, x = tiny
    sm.set_allowed_options(("shared", "skip"))
    sm.set_mode("warmup")
    out = sm(x)
    half = [0.5, 0.0, 0.5]
    torch.testing.assert_close(out["a"], _direct(sm, x, "a", {"conv1": half, "conv2": half}), rtol=1e-5, atol=1e-6)
    sm.set_mode("gumbel", tau=1.0)
    sm(x)
    assert float(sm.last_weights["conv1"][:, 1].abs().max()) == 0.0
    assert float(sm.policy_probs()["conv2"][:, 1].max()) == 0.0


def test_mode_errors(tiny):
    sm, _ = tiny
    with pytest.raises(ConfigError, match="mode must be one of"):
        sm.set_mode("soft")
    with pytest.raises(ConfigError, match="tau must be a positive number"):
        sm.set_mode("gumbel", tau=0)
    with pytest.raises(PolicyError, match="fixed mode needs a policy"):
        sm.set_mode("fixed")


def test_policy_probs_follow_the_logits(tiny):
    sm, _ = tiny
    with torch.no_grad():
        sm.vcns["conv2"].logits.copy_(torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]))
    probs = sm.policy_probs()
    torch.testing.assert_close(probs["conv2"][0], torch.full((3,), 1 / 3))
    torch.testing.assert_close(probs["conv2"][1], torch.softmax(torch.tensor([1.0, 2.0, 3.0]), 0))
    assert Policy.argmax(sm).option("b", "conv2") == "skip"
    differentiable = sm.policy_probs(grad=True)["conv2"]
    differentiable[1, 2].backward()
    assert sm.vcns["conv2"].logits.grad.abs().sum() > 0


def test_state_dicts_round_trip(tiny, tmp_path):
    sm, x = tiny
    torch.save(sm.state_dict(), tmp_path / "sm.pt")
    torch.manual_seed(0)
    other = automtl.compile(Tiny(), ["a", "b"], example_input=x)
    other.load_state_dict(torch.load(tmp_path / "sm.pt", weights_only=True))
    sm.set_mode("warmup")
    other.set_mode("warmup")
    torch.testing.assert_close(other(x)["b"], sm(x)["b"])

    policy = Policy.random(sm, seed=2)
    derived = sm.derive(policy)
    torch.save(derived.state_dict(), tmp_path / "mt.pt")
    rebuilt = other.derive(policy)
    for p in rebuilt.parameters():
        nn.init.zeros_(p)
    rebuilt.load_state_dict(torch.load(tmp_path / "mt.pt", weights_only=True))
    torch.testing.assert_close(rebuilt(x)["a"], derived(x)["a"])
