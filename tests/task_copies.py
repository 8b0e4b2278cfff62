"""Per-task copies made distinct, for equivalence checks that can fail.

A freshly compiled SuperModel's per-task copies all hold the backbone's weights, so a derived
model that runs task ``a`` on task ``b``'s copy (or on the shared operator) still computes the
right numbers. :func:`perturb_copies` gives every task's copy its own noise first;
:func:`task_backbone` is the backbone loaded with one task's copies, i.e. what the all-own
policy must compute for that task.

Used by tests/test_zoo.py, tests/export/test_derive.py and fuzz/properties.py.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def _noise(shape: torch.Size, g: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, generator=g).to(like)


@torch.no_grad()
def perturb_copies(sm: nn.Module, seed: int = 0, scale: float = 0.1) -> nn.Module:
    """Add distinct random noise to every task's copy of every VCN (weights, biases, the
    running mean and variance of norms) and to every task's skip. Returns ``sm``.

    The noise is relative to each tensor's size (with a floor, so zero biases and unit norm
    weights move too): the outputs stay on the backbone's scale, yet no two tasks' copies and
    no copy and the shared operator are equal."""
    g = torch.Generator().manual_seed(seed)
    seen = set()  # an operator called at several sites has one set of copies
    for vcn in sm.vcns.values():
        for task in sm.task_names:
            modules = [vcn.copies[task]] + ([vcn.skips[task]] if task in vcn.skips else [])
            for module in modules:
                if id(module) in seen:
                    continue
                seen.add(id(module))
                for p in module.parameters():
                    if p.numel() and p.is_floating_point():
                        size = float(p.detach().norm()) / p.numel() ** 0.5 + 0.01  # root mean square
                        p.add_(_noise(p.shape, g, p), alpha=scale * size)
                for name, b in module.named_buffers():
                    if name.endswith("running_var"):
                        b.mul_(torch.rand(b.shape, generator=g).to(b).add_(0.5))  # x [0.5, 1.5)
                    elif name.endswith("running_mean"):
                        b.add_(_noise(b.shape, g, b) * scale)
    return sm


@torch.no_grad()
def task_backbone(sm: nn.Module, backbone: nn.Module, task: str) -> nn.Module:
    """A copy of ``backbone`` holding ``task``'s copy of every VCN of ``sm`` (compiled from
    ``backbone``): an independent network, what the all-own policy computes for ``task``."""
    net = copy.deepcopy(backbone)
    for name, vcn in sm.vcns.items():
        node = sm.graph[name]
        own = vcn.copies[task]
        if node.op == "call_module":
            net.get_submodule(node.target).load_state_dict(own.state_dict())
        elif node.op == "get_attr":  # a parameter read directly, held by a ParamHolder
            owner, _, attr = node.target.rpartition(".")
            getattr(net.get_submodule(owner), attr).copy_(own.value)
        else:
            raise AssertionError(f"VCN {name}: unexpected node kind {node.op}")
    return net


def all_own_outputs(sm, backbone: nn.Module, x: torch.Tensor):
    """(derived, fixed, alone): each task's output of the all-own derived model, of the SuperModel
    in fixed mode, and of the backbone loaded with that task's copies (no gradients, eval mode)."""
    from automtl import Policy

    policy = Policy.all_own(sm)
    with torch.no_grad():
        derived = sm.derive(policy).eval()(x)
        fixed = sm.set_mode("fixed", policy=policy)(x)
        alone = {task: task_backbone(sm, backbone, task).eval()(x) for task in sm.task_names}
    return derived, fixed, alone
