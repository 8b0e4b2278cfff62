"""Residual blocks found on the IR graph, the skippable blocks (shortcut, branch, end) and the
decision units built from them."""

import pytest
import torch
import torchvision
from torch import nn

import automtl
from automtl.backbones import DilatedResNet, SmallConvNet
from automtl.errors import ConfigError
from automtl.methods.blocks import decision_units, find_block_skips, residual_blocks

from methods_toy import res_supermodel


def test_blocks_of_a_residual_toy_network():
    sm = res_supermodel()
    assert residual_blocks(sm.graph) == [("add", ["b1c1", "b1c2"]), ("add_1", ["b2c1", "b2c2", "b2sc"])]
    first, second = find_block_skips(sm)
    # block 1: identity shortcut (the stem's relu), the relu after the addition closes it
    assert (first.merge, first.end, first.shortcut) == ("add", "relu_2", "relu")
    assert first.branch == ("b1c1", "b1n1", "relu_1", "b1c2", "b1n2", "add", "relu_2")
    assert first.members == ("b1c1", "b1c2")
    # block 2 changes the width: its shortcut is its own 1x1 projection, which is no member
    assert (second.end, second.shortcut, second.members) == ("relu_4", "b2sc", ("b2c1", "b2c2"))
    assert "b2sc" not in second.branch
    units = decision_units(sm, "block")
    # only residual blocks are units: not the stem, not the down-sample path
    assert [u.nodes for u in units] == [("b1c1", "b1c2"), ("b2c1", "b2c2")]
    assert [u.name for u in units] == ["block@add", "block@add_1"]
    assert [u.nodes for u in decision_units(sm, "operator")] == [(n,) for n in sm.searchable_nodes]


def test_blocks_of_torchvision_resnet18():
    sm = automtl.compile(torchvision.models.resnet18(num_classes=3), ["a", "b"], torch.zeros(1, 3, 32, 32))
    blocks = find_block_skips(sm)
    assert len(blocks) == 8  # the paper's "ResNet-18 (8 blocks)"
    assert [b.shortcut for b in blocks] == [
        "maxpool", "layer1_0_relu_1",
        "layer2_0_downsample_1", "layer2_0_relu_1",
        "layer3_0_downsample_1", "layer3_0_relu_1",
        "layer4_0_downsample_1", "layer4_0_relu_1",
    ]
    assert blocks[2].end == "layer2_0_relu_1" and blocks[2].members == ("layer2_0_conv1", "layer2_0_conv2")
    units = {n for u in decision_units(sm) for n in u.nodes}
    assert units.isdisjoint({"conv1", "fc", "layer2_0_downsample_0", "layer3_0_downsample_0", "layer4_0_downsample_0"})
    assert len(units) == 16


def test_blocks_of_the_builtin_dilated_resnet():
    sm = automtl.compile(DilatedResNet(widths=[4, 4, 8], dilations=[1, 1, 2]), ["x", "y"], torch.zeros(2, 3, 8, 8))
    assert [u.nodes for u in decision_units(sm)] == [
        ("blocks_0_conv1", "blocks_0_conv2"),
        ("blocks_1_conv1", "blocks_1_conv2"),
        ("blocks_2_conv1", "blocks_2_conv2"),
    ]
    assert find_block_skips(sm)[2].shortcut == "blocks_2_shortcut_1"  # the down-sample's norm


def test_no_residual_connection_means_no_block_units():
    sm = automtl.compile(SmallConvNet(in_channels=1, widths=[4, 4], strides=[1, 2], features=8, grid=2), ["x"], torch.zeros(2, 1, 8, 8))
    assert residual_blocks(sm.graph) == [] and find_block_skips(sm) == []
    assert decision_units(sm) == []
    assert [u.nodes for u in decision_units(sm, "operator")] == [(n,) for n in sm.searchable_nodes]


class TwoInputs(nn.Module):
    """An addition whose inputs share no fork besides the image: one block of both branches."""

    def __init__(self):
        super().__init__()
        self.left, self.right, self.out = nn.Conv2d(1, 2, 1), nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return self.out(self.left(x).add(self.right(x)))


def test_a_method_add_counts_as_a_merge_but_two_equal_branches_are_no_skippable_block():
    sm = automtl.compile(TwoInputs(), ["x"], torch.zeros(2, 1, 4, 4))
    assert residual_blocks(sm.graph) == [("add", ["left", "right"])]
    assert find_block_skips(sm) == []  # one convolution each side: neither is the shortcut


class Leaky(nn.Module):
    """A block whose residual branch is also read outside the block: skipping it would change
    what the outside reads, so it is no skippable block."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 1)

    def forward(self, x):
        h = self.a(x)
        return self.c(torch.relu(self.b(h) + x) + h)


def test_a_branch_read_from_outside_is_not_skippable():
    sm = automtl.compile(Leaky(), ["x"], torch.zeros(2, 2, 4, 4))
    # the inner addition (b(h) + x) is read by the outer one through a's h: only the outer block,
    # whose shortcut is h, can be skipped
    assert [(b.merge, b.shortcut) for b in find_block_skips(sm)] == [("add_1", "a")]


def test_unknown_granularity():
    with pytest.raises(ConfigError, match="granularity must be one of block, operator, got 'layer'"):
        decision_units(res_supermodel(), "layer")
