"""The default heads: shapes at small inputs, the ASPP sum, scripting."""

import warnings

import pytest
import torch
from torch import nn

from automtl.errors import ConfigError
from automtl.tasks import ASPPHead, ClassificationHead


@pytest.mark.parametrize("hw", [(1, 1), (2, 2), (3, 5), (8, 8)])
def test_aspp_keeps_the_feature_size_with_the_published_rates(hw):
    head = ASPPHead(8, 5, hidden=4)
    assert head.rates == (6, 12, 18, 24) and len(head.branches) == 4
    assert head(torch.randn(2, 8, *hw)).shape == (2, 5, *hw)


def test_aspp_upsamples_to_the_output_size():
    head = ASPPHead(8, 3, rates=(1, 2), hidden=4, output_size=(16, 12))
    assert head(torch.randn(2, 8, 2, 3)).shape == (2, 3, 16, 12)


def test_aspp_is_the_sum_of_its_branches():
    torch.manual_seed(0)
    head = ASPPHead(4, 2, rates=(1, 3, 5), hidden=6, dropout=0.0).eval()
    x = torch.randn(1, 4, 7, 7)
    expected = sum(branch(x) for branch in head.branches)
    assert torch.allclose(head(x), expected)
    conv = head.branches[1][0]
    assert isinstance(conv, nn.Conv2d) and conv.dilation == (3, 3) and conv.padding == (3, 3) and conv.kernel_size == (3, 3)


def test_heads_script_to_the_same_output():
    warnings.simplefilter("ignore", FutureWarning)
    x = torch.randn(2, 4, 3, 3)
    for head in (ASPPHead(4, 2, rates=(1, 2), hidden=4, output_size=(6, 6)).eval(), ClassificationHead(4, 7)):
        assert torch.equal(torch.jit.script(head)(x), head(x))


def test_classification_head_pools_maps_and_takes_vectors():
    head = ClassificationHead(6, 10)
    x = torch.randn(3, 6, 2, 2)
    assert torch.allclose(head(x), head.fc(x.mean((2, 3))))
    assert head(torch.randn(3, 6)).shape == (3, 10)


def test_bad_head_arguments():
    with pytest.raises(ConfigError, match=r"every ASPP rate must be a positive integer, got 0"):
        ASPPHead(4, 2, rates=(1, 0))
    with pytest.raises(ConfigError, match=r"output_size must be \(height, width\), got \(1, 2, 3\)"):
        ASPPHead(4, 2, output_size=(1, 2, 3))
