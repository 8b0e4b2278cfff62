"""The skip option: identity where the shape is kept, a down-sample matching the output otherwise."""

import itertools

import pytest
import torch
from torch import nn

from automtl.compiler.skip import ConvSkip, ConvTransposeSkip, LinearSkip, build_skip
from automtl.errors import CompileError

CONV_CASES = [
    # kernel, stride, padding, dilation
    (3, 1, 1, 1),
    (3, 2, 1, 1),
    (7, 2, 3, 1),
    (1, 2, 0, 1),
    (3, 1, 0, 1),  # "valid": the output shrinks
    (3, 2, 0, 1),
    (3, 1, 2, 2),  # dilated, same size
    (3, 2, 4, 2),
    (5, 3, 4, 1),  # over-padded: output larger than a centre-tap subsample could reach
    (4, 2, 1, 1),  # even kernel
]


@pytest.mark.parametrize("k, s, p, d", CONV_CASES)
@pytest.mark.parametrize("size", [7, 8, 13])
def test_conv_skip_matches_the_convolution_output_size_for_any_input(k, s, p, d, size):
    conv = nn.Conv2d(4, 4, k, stride=s, padding=p, dilation=d)
    skip = ConvSkip(conv)
    x = torch.randn(2, 4, size, size + 3)
    out = skip(x)
    assert out.shape == conv(x).shape
    # no projection: every output pixel is the input pixel under the kernel's centre tap
    centre = d * ((k - 1) // 2) - p
    for i, j in itertools.product(range(out.shape[2]), range(out.shape[3])):
        r, c = i * s + centre, j * s + centre
        inside = 0 <= r < x.shape[2] and 0 <= c < x.shape[3]
        expected = x[:, :, r, c] if inside else torch.zeros(2, 4)
        torch.testing.assert_close(out[:, :, i, j], expected)


def test_conv_skip_projects_channels_like_a_strided_1x1_convolution():
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1)
    skip = ConvSkip(conv)
    x = torch.randn(2, 8, 9, 9)
    expected = nn.functional.conv2d(x, skip.proj.weight, stride=2)  # ResNet's down-sample
    torch.testing.assert_close(skip(x), expected)
    assert sum(p.numel() for p in skip.parameters()) == 8 * 16


@pytest.mark.parametrize("dims", [1, 3])
def test_conv_skip_in_other_dimensions(dims):
    conv = {1: nn.Conv1d, 3: nn.Conv3d}[dims](3, 5, 3, stride=2, padding=1)
    x = torch.randn(1, 3, *([6] * dims))
    assert ConvSkip(conv)(x).shape == conv(x).shape


@pytest.mark.parametrize("k, s, p, op", [(4, 2, 1, 0), (2, 2, 0, 0), (3, 2, 1, 1), (3, 1, 1, 0), (16, 8, 4, 0), (3, 2, 0, 0)])
def test_transposed_conv_skip_matches_the_output_size(k, s, p, op):
    conv = nn.ConvTranspose2d(6, 3, k, stride=s, padding=p, output_padding=op)
    x = torch.randn(1, 6, 5, 7)
    assert ConvTransposeSkip(conv)(x).shape == conv(x).shape


def test_linear_skip_and_identity():
    assert isinstance(build_skip(nn.Linear(4, 4), torch.Size([2, 4]), torch.Size([2, 4]), "fc"), nn.Identity)
    skip = build_skip(nn.Linear(4, 6), torch.Size([2, 4]), torch.Size([2, 6]), "fc")
    assert isinstance(skip, LinearSkip) and skip(torch.randn(3, 4)).shape == (3, 6)


def test_a_shape_changing_operator_without_a_skip_rule_is_refused():
    with pytest.raises(CompileError) as info:
        build_skip(nn.Embedding(10, 4), torch.Size([2]), torch.Size([2, 4]), "embed")
    assert "node 'embed' (Embedding) changes the shape from [2] to [2, 4]" in str(info.value)
    assert "Leave this type out of `searchable`" in str(info.value)


def test_skips_script():
    x = torch.randn(1, 4, 9, 9)
    for skip in (ConvSkip(nn.Conv2d(4, 8, 3, stride=2, padding=0)), ConvSkip(nn.Conv2d(4, 4, 3, stride=2, padding=1)), ConvTransposeSkip(nn.ConvTranspose2d(4, 2, 4, 2, 1))):
        scripted = torch.jit.script(skip)
        torch.testing.assert_close(scripted(x), skip(x))
