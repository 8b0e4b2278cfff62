"""Derivation: only the operators a policy uses, and shared work computed once."""

import collections
import copy

import pytest
import torch
import torchvision
from torch import nn

import automtl
from automtl import MultiTaskModel, Policy
from automtl.compiler.passes import NORM_POLICIES
from task_copies import all_own_outputs, perturb_copies


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = Block(3, 8, 1)
        self.mid = Block(8, 8, 1)
        self.down = Block(8, 16, 2)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.down(self.mid(self.stem(x)))
        return self.fc(x.mean(dim=(2, 3)))


def _call_counts(model, x):
    counts = collections.Counter()
    hooks = [
        m.register_forward_hook(lambda mod, i, o, name=name: counts.update([name]))
        for name, m in model.named_modules()
        if name and not list(m.children())
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return counts


@pytest.fixture
def net():
    torch.manual_seed(0)
    return Net().eval(), torch.randn(2, 3, 16, 16)


def _params(module):
    return sum(p.numel() for p in module.parameters())


def test_all_shared_with_following_norms_is_the_backbone_once(net):
    backbone, x = net
    tasks = [automtl.Task("a", head=nn.Linear(5, 2)), automtl.Task("b", head=nn.Linear(5, 3)), automtl.Task("c")]
    sm = automtl.compile(backbone, tasks, example_input=x, norm="follow").eval()
    mt = sm.derive(Policy.all_shared(sm))
    heads = _params(tasks[0].head) + _params(tasks[1].head)
    assert mt.num_parameters() == _params(backbone) + heads
    counts = _call_counts(mt, x)
    assert all(n == 1 for n in counts.values()), counts  # every operator runs once for all tasks
    assert counts["shared.stem.conv"] == 1 and "heads.c" not in counts
    assert set(mt.usage["shared.stem.conv"]) == {"a", "b", "c"}
    out = mt(x)
    with torch.no_grad():
        feature = backbone(x)
        torch.testing.assert_close(out["a"], tasks[0].head(feature))
        torch.testing.assert_close(out["c"], feature)


def test_all_own_is_one_backbone_per_task(net):
    backbone, x = net
    sm = automtl.compile(backbone, ["a", "b"], example_input=x, norm="follow").eval()
    mt = sm.derive(Policy.all_own(sm))
    assert mt.num_parameters() == 2 * _params(backbone)
    assert mt.num_parameters("a") == _params(backbone)
    counts = _call_counts(mt, x)
    assert not any(name.startswith("shared.") and ("conv" in name or "bn" in name or "fc" in name) for name in counts)
    assert counts["own.a.stem.conv"] == 1 and counts["own.b.stem.conv"] == 1
    assert mt.shared_with() == {}


def test_parameter_count_of_a_mixed_policy_is_exact(net):
    backbone, x = net
    sm = perturb_copies(automtl.compile(backbone, ["a", "b"], example_input=x, norm="follow"))
    policy = Policy.from_dict(
        sm,
        {
            "a": {"stem_conv": "shared", "mid_conv": "skip", "down_conv": "skip", "fc": "own"},
            "b": {"stem_conv": "shared", "mid_conv": "own", "down_conv": "shared", "fc": "shared"},
        },
    )
    mt = sm.derive(policy)
    stem, mid, down, fc = (_params(getattr(backbone, n)) for n in ("stem", "mid", "down", "fc"))
    down_skip = 8 * 16  # 1x1 projection 8 -> 16 channels, no bias; mid's skip is the identity
    assert mt.num_parameters() == stem + mid + down + down_skip + 2 * fc
    assert mt.num_parameters("a") == stem + down_skip + fc
    assert "skip.a.down_conv" in dict(mt.named_modules())
    counts = _call_counts(mt, x)
    assert counts["shared.stem.conv"] == 1  # both tasks share the stem: it runs once
    assert counts["shared.stem.bn"] == 1
    # the skipped block's norm is skipped with it (norm="follow"), the identity skip costs nothing
    assert "shared.mid.bn" not in counts and "own.a.mid.bn" not in counts and counts["own.b.mid.bn"] == 1
    derived, fixed = mt(x), sm.set_mode("fixed", policy=policy)(x)
    for task in ("a", "b"):  # distinct copies: a task run on the other's copy would differ
        torch.testing.assert_close(derived[task], fixed[task])


def test_all_skip_keeps_only_skips_and_parameter_free_ops(net):
    backbone, x = net
    sm = automtl.compile(backbone, ["a"], example_input=x, norm="follow")
    mt = sm.derive(Policy.all_skip(sm))
    # stem 3->8 and down 8->16 need projections, fc 16->5 a linear projection; mid is the identity
    assert mt.num_parameters() == 3 * 8 + 8 * 16 + 16 * 5
    with torch.no_grad():
        h = torch.relu(sm.vcns["stem_conv"].skips["a"](x))
        h = torch.relu(h)  # mid: identity skip, its norm skipped too, relu stays
        h = torch.relu(sm.vcns["down_conv"].skips["a"](h))
        expected = sm.vcns["fc"].skips["a"](h.mean(dim=(2, 3)))
        torch.testing.assert_close(mt(x)["a"], expected)


def test_per_task_norms_split_tasks_after_a_shared_operator(net):
    backbone, x = net
    sm = automtl.compile(backbone, ["a", "b"], example_input=x, norm="per_task")
    mt = sm.derive(Policy.all_shared(sm))
    counts = _call_counts(mt, x)
    assert counts["shared.stem.conv"] == 1  # same input for both tasks: once
    assert counts["own.a.stem.bn"] == 1 and counts["own.b.stem.bn"] == 1
    assert counts["shared.mid.conv"] == 2  # inputs differ after the per-task norms


def test_derived_model_is_independent_of_the_supermodel(net):
    backbone, x = net
    sm = automtl.compile(backbone, ["a", "b"], example_input=x)
    mt = sm.derive(Policy.all_shared(sm))
    before = sm.vcns["stem_conv"].op.weight.clone()
    with torch.no_grad():
        mt.get_submodule("shared.stem.conv").weight.add_(1.0)
    torch.testing.assert_close(sm.vcns["stem_conv"].op.weight, before)


def test_derived_model_is_readable_and_copyable(net):
    backbone, x = net
    sm = automtl.compile(backbone, ["a", "b"], example_input=x)
    policy = Policy.random(sm, seed=1)
    mt = sm.derive(policy)
    assert isinstance(mt, MultiTaskModel) and isinstance(mt, torch.fx.GraphModule)
    assert "self.shared.stem.conv(x)" in mt.code or "self.own." in mt.code
    clone = copy.deepcopy(mt)
    assert clone.task_names == ("a", "b") and clone.policy == policy and clone.usage == mt.usage
    torch.testing.assert_close(clone(x)["b"], mt(x)["b"])


def test_policy_that_does_not_fit_is_refused(net):
    backbone, x = net
    sm = automtl.compile(backbone, ["a", "b"], example_input=x)
    other = automtl.compile(backbone, ["a", "c"], example_input=x)
    with pytest.raises(automtl.errors.PolicyError, match=r"the policy is for tasks \['a', 'c'\]"):
        sm.derive(Policy.all_shared(other))


@pytest.mark.parametrize("norm", NORM_POLICIES)
def test_derived_equals_the_fixed_supermodel_with_distinct_copies(net, norm):
    """Every task's copies made different first, so that the wrong copy (another task's, or
    the shared operator) cannot go unnoticed: random policies, three tasks, every norm mode."""
    backbone, x = net
    tasks = ["a", "b", "c"]
    sm = perturb_copies(automtl.compile(backbone, tasks, example_input=x, norm=norm).eval(), seed=2)
    with torch.no_grad():
        for seed in range(4):
            policy = Policy.random(sm, seed=seed)
            derived = sm.derive(policy).eval()(x)
            fixed = sm.set_mode("fixed", policy=policy)(x)
            for task in tasks:
                torch.testing.assert_close(derived[task], fixed[task], msg=f"policy seed {seed}, task {task}")


@pytest.mark.parametrize("norm", NORM_POLICIES)
def test_all_own_is_t_independent_networks(net, norm):
    backbone, x = net
    tasks = ["a", "b", "c"]
    sm = perturb_copies(automtl.compile(backbone, tasks, example_input=x, norm=norm).eval(), seed=3)
    derived, fixed, alone = all_own_outputs(sm, backbone, x)
    for task in tasks:
        torch.testing.assert_close(derived[task], alone[task])
        torch.testing.assert_close(fixed[task], alone[task])
    assert not torch.allclose(alone["a"], alone["b"], rtol=1e-3, atol=1e-4)  # they are different networks
