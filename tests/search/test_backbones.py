"""Named backbones and the JSON-able backbone spec."""

import json

import pytest
import torch

import automtl
from automtl.backbones import DilatedResNet, SmallConvNet, build_backbone, parse_backbone
from automtl.errors import ConfigError


def test_dilated_resnet_keeps_the_resolution():
    net = DilatedResNet(3, widths=(8, 16), dilations=(1, 2))
    out = net(torch.randn(2, 3, 12, 20))
    assert out.shape == (2, 16, 12, 20) and net.out_channels == 16
    assert DilatedResNet(3, (8,), (1,), stem_stride=2)(torch.randn(1, 3, 12, 20)).shape == (1, 8, 6, 10)
    sm = automtl.compile(net, ["a", "b"], example_input=torch.randn(2, 3, 12, 20))
    # stem conv, 2 convs per block and the 1x1 shortcut of the widening block
    assert len(sm.searchable_nodes) == 6


def test_small_convnet_keeps_where_things_are():
    net = SmallConvNet(in_channels=3, widths=(4, 8), strides=(2, 2), features=10, grid=2)
    x = torch.zeros(2, 3, 40, 40)
    x[0, :, :10, :10] = 1.0  # top-left
    x[1, :, -10:, -10:] = 1.0  # bottom-right: same pixels, other place
    out = net.eval()(x)
    assert out.shape == (2, 10) and not torch.allclose(out[0], out[1])
    assert SmallConvNet(features=0)(torch.zeros(1, 3, 28, 28)).shape == (1, 32, 7, 7)


def test_parse_backbone():
    assert parse_backbone("dilated_resnet_tiny") == {"builtin": "dilated_resnet_tiny", "kwargs": {}}
    assert parse_backbone("torchvision:resnet18") == {"torchvision": "resnet18", "kwargs": {}, "features": True}
    assert parse_backbone("path/to/net.prototxt") == {"prototxt": "path/to/net.prototxt", "kwargs": {}}
    spec = parse_backbone({"builtin": "small_convnet", "kwargs": {"features": 4}})
    assert json.loads(json.dumps(spec)) == spec
    with pytest.raises(ConfigError) as info:
        parse_backbone("dilated_resnet_tinny")
    assert str(info.value).startswith("unknown backbone 'dilated_resnet_tinny' (did you mean 'dilated_resnet_tiny'?)")
    with pytest.raises(ConfigError, match="backbone spec: unknown key 'kwarg' \\(did you mean 'kwargs'\\?\\)"):
        parse_backbone({"builtin": "small_convnet", "kwarg": {}})
    with pytest.raises(ConfigError, match="backbone 'small_convnet': .*unexpected keyword argument 'depth'"):
        build_backbone({"builtin": "small_convnet", "kwargs": {"depth": 3}})


def test_torchvision_features():
    backbone = build_backbone(parse_backbone("torchvision:resnet18"))
    assert backbone(torch.randn(1, 3, 64, 64)).shape == (1, 512, 2, 2)
    mobile = build_backbone(parse_backbone("torchvision:mobilenet_v3_small"))
    assert mobile(torch.randn(1, 3, 64, 64)).shape[1] == 576
    with pytest.raises(ConfigError, match="unknown torchvision model 'resnet19' \\(did you mean 'resnet18'\\?\\)"):
        build_backbone(parse_backbone("torchvision:resnet19"))
