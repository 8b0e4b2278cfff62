"""Residual blocks found on the IR graph, and the decision units built from them."""

import pytest
import torch
from torch import nn

import automtl
from automtl.backbones import DilatedResNet, SmallConvNet
from automtl.errors import ConfigError
from automtl.methods.blocks import decision_units, residual_blocks

from methods_toy import res_supermodel


def test_blocks_of_a_residual_toy_network():
    sm = res_supermodel()
    assert residual_blocks(sm.graph) == [("add", ["b1c1", "b1c2"]), ("add_1", ["b2c1", "b2c2", "b2sc"])]
    units = decision_units(sm, "block")
    # bottom-up; the stem is in no block; the projection shortcut belongs to its block
    assert [u.nodes for u in units] == [("stem",), ("b1c1", "b1c2"), ("b2c1", "b2sc", "b2c2")]
    assert [u.name for u in units] == ["stem", "block@add", "block@add_1"]
    assert [u.nodes for u in decision_units(sm, "operator")] == [(n,) for n in sm.searchable_nodes]


def test_blocks_of_the_builtin_dilated_resnet():
    sm = automtl.compile(DilatedResNet(widths=[4, 4, 8], dilations=[1, 1, 2]), ["x", "y"], torch.zeros(2, 3, 8, 8))
    units = decision_units(sm)
    assert [u.nodes for u in units] == [
        ("stem_0",),
        ("blocks_0_conv1", "blocks_0_conv2"),
        ("blocks_1_conv1", "blocks_1_conv2"),
        ("blocks_2_conv1", "blocks_2_shortcut_0", "blocks_2_conv2"),
    ]


def test_no_residual_connection_means_one_unit_per_operator():
    sm = automtl.compile(SmallConvNet(in_channels=1, widths=[4, 4], strides=[1, 2], features=8, grid=2), ["x"], torch.zeros(2, 1, 8, 8))
    assert residual_blocks(sm.graph) == []
    assert [u.nodes for u in decision_units(sm)] == [(n,) for n in sm.searchable_nodes]


class TwoInputs(nn.Module):
    """An addition whose inputs share no fork besides the image: one block of both branches."""

    def __init__(self):
        super().__init__()
        self.left, self.right, self.out = nn.Conv2d(1, 2, 1), nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return self.out(self.left(x).add(self.right(x)))


def test_a_method_add_counts_as_a_merge():
    sm = automtl.compile(TwoInputs(), ["x"], torch.zeros(2, 1, 4, 4))
    assert residual_blocks(sm.graph) == [("add", ["left", "right"])]
    assert [u.nodes for u in decision_units(sm)] == [("left", "right"), ("out",)]


def test_unknown_granularity():
    with pytest.raises(ConfigError, match="granularity must be one of block, operator, got 'layer'"):
        decision_units(res_supermodel(), "layer")
