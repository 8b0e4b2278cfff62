"""A tiny two-task problem for the search tests: 1x8x8 noise images; task ``a`` tells whether
the left half is brighter than the right, task ``b`` whether the top half is brighter. Also the
tiny ``scenes`` config the command-line tests run (:func:`tiny_scenes_yaml`)."""

from __future__ import annotations

import copy
from typing import Any, Dict, Mapping, Tuple

import torch
import yaml
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

import automtl
from automtl import Task
from automtl.search import Callback


class ToyData(Dataset):
    def __init__(self, count: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(count, 1, 8, 8, generator=generator)
        left = self.images[:, 0, :, :4].mean((1, 2)) > self.images[:, 0, :, 4:].mean((1, 2))
        top = self.images[:, 0, :4, :].mean((1, 2)) > self.images[:, 0, 4:, :].mean((1, 2))
        self.a, self.b = left.long(), top.long()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        return self.images[i], {"a": self.a[i], "b": self.b[i]}


class Accuracy:
    higher_is_better = {"acc": True}

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.right = 0
        self.total = 0

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        self.right += int((prediction.argmax(1) == target).sum())
        self.total += int(target.numel())

    def compute(self) -> Dict[str, float]:
        return {"acc": 100.0 * self.right / max(self.total, 1)}


class ToyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(torch.relu(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


def toy_tasks():
    def head():
        return nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 2))

    return [
        Task("a", head=head(), loss=F.cross_entropy, metrics=Accuracy),
        Task("b", head=head(), loss=F.cross_entropy, metrics=Accuracy, weight=0.5),
    ]


def toy_supermodel(seed: int = 0) -> automtl.SuperModel:
    torch.manual_seed(seed)
    return automtl.compile(ToyNet(), toy_tasks(), example_input=torch.zeros(2, 1, 8, 8))


def toy_data():
    return ToyData(64, 1), ToyData(32, 2), ToyData(32, 3)


def model_spec(backbone: Mapping[str, Any], input_shape, tasks, *, norm: str = "per_task", seed: int = 0) -> Dict[str, Any]:
    """A model spec (the ``model.json`` a search writes) of ``backbone`` for ``tasks`` - task
    mappings or ``name:kind[:classes]`` strings - on inputs of ``input_shape`` (no batch). Every
    call gives its own copies, as a literal would: specs made from one SEG_DEPTH share nothing."""
    return {"format": "automtl.model", "version": 1, "backbone": copy.deepcopy(dict(backbone)),
            "input_shape": list(input_shape), "tasks": copy.deepcopy(list(tasks)), "task_options": {},
            "compile": {"norm": norm, "searchable": ["conv", "linear"]}, "seed": seed}


#: a segmentation and a depth task with small ASPP heads, for tiny dense model specs
SEG_DEPTH = (
    {"kind": "segmentation", "name": "seg", "classes": 3, "aspp_rates": [1, 2], "head_hidden": 8},
    {"kind": "depth", "name": "depth", "aspp_rates": [1], "head_hidden": 8},
)


#: a config small enough for unit tests (a few steps of every stage)
TINY = {
    "device": "cpu",
    "data": {"batch_size": 8, "eval_batch_size": 16},
    "pretrain": {"steps": 4},
    "policy_train": {"steps": 10, "weight_steps": 2, "policy_steps": 1, "tau_decay_every": 2},
    "post_train": {"steps": 4},
    "logging": {"log_every": 2, "eval_every": 4, "checkpoint_every": 3, "progress": False},
}


#: the built-in ``scenes`` benchmark at toy size, for tests that go through the command line
TINY_SCENES = {
    "seed": 0,
    "device": "cpu",
    "data": {
        "benchmark": "scenes",
        "options": {"size": 16, "n_train": 48, "n_val": 16, "n_test": 16},
        "batch_size": 8,
        "eval_batch_size": 16,
    },
    "model": {
        "backbone": {"builtin": "dilated_resnet_tiny", "kwargs": {"widths": [4, 8], "dilations": [1, 2], "stem_stride": 2}},
        "task_options": {"head_hidden": 4, "aspp_rates": [1]},
    },
    "pretrain": {"steps": 2},
    "policy_train": {"steps": 4, "weight_steps": 1, "policy_steps": 1},
    "post_train": {"steps": 2},
    "logging": {"log_every": 2, "eval_every": 0, "checkpoint_every": 0},
}


def _merge(base: Dict[str, Any], changes: Mapping[str, Any]) -> None:
    for key, value in changes.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def tiny_scenes_yaml(**changes: Any) -> str:
    """:data:`TINY_SCENES` as YAML text, with ``changes`` merged in per section (nested mappings
    merge key by key; ``None`` removes a key)."""
    config = copy.deepcopy(TINY_SCENES)
    _merge(config, changes)
    return yaml.safe_dump(config, sort_keys=False)


class Interrupt(Exception):
    """What :class:`StopAfter` raises: a run killed at a checkpoint."""


class StopAfter(Callback):
    """Kill a run right after the checkpoint of ``stage`` at ``step`` (for resume tests)."""

    def __init__(self, stage, step):
        self.stage, self.step = stage, step

    def on_checkpoint(self, stage, step, path):
        if (stage, step) == (self.stage, self.step):
            raise Interrupt
