"""Small models shared by the export tests (``import export_models``): a tiny CNN whose random
policies include both kinds of skip (identity, and a strided down-sample with a 1x1
projection), with a head on one task."""

import torch
from torch import nn

import automtl
from automtl import Policy, Task


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = Block(3, 8, 1)
        self.mid = Block(8, 8, 1)
        self.down = Block(8, 16, 2)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.down(self.mid(self.stem(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def tiny_supermodel(norm="per_task"):
    torch.manual_seed(0)
    tasks = [Task("cls", head=nn.Sequential(nn.Linear(5, 3), nn.Tanh())), Task("reg")]
    x = torch.randn(2, 3, 12, 12)
    sm = automtl.compile(TinyNet(), tasks, example_input=x, norm=norm)
    _randomise_norms(sm)
    return sm.eval(), x


def _randomise_norms(module):
    """Non-trivial running statistics, so eval-mode batch norm is not the identity."""
    generator = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)


def mixed_policy(sm, seed=0):
    """A random policy with at least one skip that changes shape (a ConvSkip) and one identity
    skip, and both shared and own choices: the seeds are searched, not assumed."""
    for s in range(seed, seed + 200):
        policy = Policy.random(sm, seed=s)
        model = sm.derive(policy)
        kinds = {type(model.get_submodule(p)).__name__ for p in model.usage if p.startswith("skip.")}
        if policy.count("shared") and policy.count("own") and "ConvSkip" in kinds and _has_identity_skip(sm, policy):
            return policy
    raise AssertionError("no random policy with every kind of choice among 200 seeds")


def _has_identity_skip(sm, policy):
    return any(
        policy.choice(t, n) == 2 and isinstance(sm.vcns[n].skips[t], nn.Identity)
        for t in sm.task_names
        for n in sm.searchable_nodes
    )


POLICIES = ("all_shared", "all_own", "mixed")


def policy_for(sm, name):
    if name == "all_shared":
        return Policy.all_shared(sm)
    if name == "all_own":
        return Policy.all_own(sm)
    return mixed_policy(sm)
