"""A tiny residual network for the method tests, on the search tests' two-task problem
(``search_toy.ToyData``: 1x8x8 noise images; task ``a`` tells whether the left half is brighter
than the right, task ``b`` the top half)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import automtl
from automtl import Task

from search_toy import Accuracy


class ResToy(nn.Module):
    """A stem and two residual blocks: the first adds with ``+``, the second with
    ``torch.add`` and a 1x1 projection shortcut."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.b1c1, self.b1n1 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.b1c2, self.b1n2 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.b2c1, self.b2n1 = nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.b2c2, self.b2n2 = nn.Conv2d(6, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.b2sc = nn.Conv2d(4, 6, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        y = self.b1n2(self.b1c2(torch.relu(self.b1n1(self.b1c1(x)))))
        x = torch.relu(x + y)
        y = self.b2n2(self.b2c2(torch.relu(self.b2n1(self.b2c1(x)))))
        return torch.relu(torch.add(y, self.b2sc(x)))


def toy_tasks():
    def head():
        return nn.Sequential(nn.Flatten(), nn.Linear(6 * 8 * 8, 2))

    return [
        Task("a", head=head(), loss=F.cross_entropy, metrics=Accuracy),
        Task("b", head=head(), loss=F.cross_entropy, metrics=Accuracy),
    ]


def res_supermodel(seed: int = 0) -> automtl.SuperModel:
    torch.manual_seed(seed)
    return automtl.compile(ResToy(), toy_tasks(), example_input=torch.zeros(2, 1, 8, 8))


TINY = {
    "device": "cpu",
    "data": {"batch_size": 8, "eval_batch_size": 16},
    "pretrain": {"steps": 4},
    "policy_train": {"steps": 12, "weight_steps": 1, "policy_steps": 1, "tau_decay_every": 2},
    "post_train": {"steps": 4},
    "logging": {"log_every": 2, "eval_every": 0, "checkpoint_every": 3, "progress": False},
}
