"""In-place operators become out-of-place at compile time: the SuperModel gives several tasks
one tensor (a shared operator's output, a skip's identity), and torchvision's ResNets write
into theirs (``ReLU(inplace=True)``, ``out += identity``), which broke the backward pass of
any policy where tasks part ways."""

import operator

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import automtl
from automtl.policy import Policy


class InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.act(self.conv1(x))
        z = self.conv2(y)
        z += y
        z = F.relu(z, inplace=True)
        z = F.leaky_relu(z, 0.1, True)
        z.mul_(2.0)  # its result unused: what reads z next reads the product
        return torch.relu_(z)


def test_every_in_place_form_is_made_out_of_place():
    torch.manual_seed(0)
    net = InPlace()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        expected = net(x.clone())
    sm = automtl.compile(net, ["a", "b"], example_input=torch.zeros(2, 3, 6, 6))
    targets = [node.target for node in sm.graph]
    assert operator.add in targets and operator.iadd not in targets
    assert "mul" in targets and "mul_" not in targets
    assert torch.relu in targets and torch.relu_ not in targets
    calls = {node.target: node for node in sm.graph if node.op == "call_function"}
    assert calls[F.relu].kwargs.get("inplace") is False
    assert calls[F.leaky_relu].kwargs.get("inplace") is False
    mul = next(node for node in sm.graph if node.target == "mul")
    assert [node.name for node in sm.graph if mul.name in node.parents] == [calls[torch.relu].name]  # relu_(z) read z after z.mul_
    assert all(getattr(m, "inplace", False) is False for m in sm.modules())
    assert net.act.inplace is True  # the user's module is left as it was
    sm.eval().set_mode("fixed", policy=Policy.all_shared(sm))
    with torch.no_grad():
        out = sm(x)
    assert torch.allclose(out["a"], expected) and torch.allclose(out["b"], expected)


def test_resnet_trains_under_policies_where_tasks_part_ways():
    torch.manual_seed(0)
    trunk = torchvision.models.resnet18()
    backbone = nn.Sequential(trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool, trunk.layer1)
    sm = automtl.compile(backbone, ["a", "b"], example_input=torch.zeros(2, 3, 16, 16))
    x = torch.randn(4, 3, 16, 16)
    nodes = sm.searchable_nodes
    for shift in range(3):  # every node: one task shares, one owns, one skips, in turn
        table = {t: {n: ("own", "shared", "skip")[(shift + j + k) % 3] for j, n in enumerate(nodes)} for k, t in enumerate(sm.task_names)}
        policy = Policy.from_dict(sm, table)
        sm.train().set_mode("fixed", policy=policy)
        sum(o.sum() for o in sm(x).values()).backward()
        model = sm.derive(policy).train()
        sum(o.sum() for o in model(x).values()).backward()
        assert all(p.grad is not None for p in model.parameters())
    sm.set_mode("gumbel")
    sum(o.sum() for o in sm(x).values()).backward()
