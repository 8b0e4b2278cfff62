"""A tiny residual network and a two-task problem for the method tests: 1x8x8 noise images;
task ``a`` tells whether the left half is brighter than the right, task ``b`` the top half."""

from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

import automtl
from automtl import Task


class Pairs(Dataset):
    def __init__(self, count: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(count, 1, 8, 8, generator=generator)
        self.a = (self.images[:, 0, :, :4].mean((1, 2)) > self.images[:, 0, :, 4:].mean((1, 2))).long()
        self.b = (self.images[:, 0, :4, :].mean((1, 2)) > self.images[:, 0, 4:, :].mean((1, 2))).long()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        return self.images[i], {"a": self.a[i], "b": self.b[i]}


class Accuracy:
    higher_is_better = {"acc": True}

    def __init__(self) -> None:
        self.right = self.total = 0

    def reset(self) -> None:
        self.right = self.total = 0

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        self.right += int((prediction.argmax(1) == target).sum())
        self.total += int(target.numel())

    def compute(self) -> Dict[str, float]:
        return {"acc": 100.0 * self.right / max(self.total, 1)}


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


def toy_data():
    return Pairs(64, 1), Pairs(32, 2), Pairs(32, 3)


TINY = {
    "device": "cpu",
    "data": {"batch_size": 8, "eval_batch_size": 16},
    "pretrain": {"steps": 4},
    "policy_train": {"steps": 12, "weight_steps": 1, "policy_steps": 1, "tau_decay_every": 2},
    "post_train": {"steps": 4},
    "logging": {"log_every": 2, "eval_every": 0, "checkpoint_every": 3, "progress": False},
}
