"""The backbones shipped in proto/: each compiles, and each computes the same function as its
torchvision counterpart when given the same weights (copied by the mappings written here)."""

import pytest
import torch
import torchvision
from torch import nn

import automtl
from automtl.compiler.prototxt import load_prototxt, shipped_backbones

SIZE = (2, 3, 32, 32)


def _randomise_norms(model):
    """Non-trivial BatchNorm statistics and affine parameters, so that the comparison sees them."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=gen) - 0.5)


def _copy(reference, gm, mapping):
    """Copy every conv/norm/linear of ``reference`` into the module ``mapping(name)`` of ``gm``."""
    ours = dict(gm.named_modules())
    copied = 0
    for name, module in reference.named_modules():
        if isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)) and mapping(name) is not None:
            target = ours[mapping(name)]
            assert type(target) is type(module), name
            target.load_state_dict(module.state_dict())
            copied += 1
    assert copied == sum(1 for m in gm.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)))


def _same_function(reference, gm, x):
    reference.eval()
    gm.eval()
    with torch.no_grad():
        expected, got = reference(x), gm(x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5), (got - expected).abs().max()


def resnet_name(name):
    return name.replace("downsample.0", "downsample_conv").replace("downsample.1", "downsample_bn").replace(".", "_")


def mobilenetv2_name(name):
    parts = name.split(".")  # features.<i>...
    i = int(parts[1])
    if i == 0:
        return {"0": "stem_conv", "1": "stem_bn"}[parts[2]]
    if i == 18:
        return {"0": "head_conv", "1": "head_bn"}[parts[2]]
    rest = ".".join(parts[3:])
    if i == 1:  # no expansion: conv.0 = depthwise (conv, bn), conv.1 = project, conv.2 = its bn
        return "block1_" + {"0.0": "dw_conv", "0.1": "dw_bn", "1": "project_conv", "2": "project_bn"}[rest]
    return f"block{i}_" + {
        "0.0": "expand_conv", "0.1": "expand_bn", "1.0": "dw_conv", "1.1": "dw_bn", "2": "project_conv", "3": "project_bn"
    }[rest]


def mnasnet_name(name):
    i = int(name.split(".")[1])
    stem = {0: "stem_conv", 1: "stem_bn", 3: "stem_dw_conv", 4: "stem_dw_bn", 6: "stem_project_conv", 7: "stem_project_bn",
            14: "head_conv", 15: "head_bn"}
    if i in stem:
        return stem[i]
    counts = [3, 3, 3, 2, 4, 1]  # blocks per stack, layers 8..13
    _, _, j, _, k = name.split(".")  # layers.<stack>.<block>.layers.<k>
    block = sum(counts[: i - 8]) + int(j) + 1
    return f"block{block}_" + {"0": "expand_conv", "1": "expand_bn", "3": "dw_conv", "4": "dw_bn", "6": "project_conv", "7": "project_bn"}[k]


def test_the_shipped_backbones():
    assert list(shipped_backbones()) == ["deeplab_resnet34", "mnasnet", "mobilenetv2", "resnet18"]


def test_resnet18_is_torchvisions_resnet18():
    torch.manual_seed(0)
    tv = torchvision.models.resnet18()
    _randomise_norms(tv)
    gm = load_prototxt("resnet18", input_shape=SIZE)
    _copy(tv, gm, lambda n: None if n == "fc" else resnet_name(n))
    x = torch.randn(*SIZE)
    _same_function(nn.Sequential(*list(tv.children())[:-2]), gm, x)
    # with the classifier written on top in prototxt, it is the whole of torchvision's resnet18
    text = open(shipped_backbones()["resnet18"]).read() + """
layer { name: "avgpool" type: "Pooling" bottom: "layer4_1_out" top: "pool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 1000 } }
"""
    full = load_prototxt(text, input_shape=SIZE)
    _copy(tv, full, resnet_name)
    _same_function(tv, full, x)


def test_mobilenetv2_is_torchvisions_mobilenet_v2():
    torch.manual_seed(0)
    tv = torchvision.models.mobilenet_v2()
    _randomise_norms(tv)
    gm = load_prototxt("mobilenetv2", input_shape=SIZE)
    _copy(tv.features, gm, lambda n: mobilenetv2_name("features." + n))
    x = torch.randn(*SIZE)
    _same_function(tv.features, gm, x)
    text = open(shipped_backbones()["mobilenetv2"]).read() + """
layer { name: "pool" type: "Pooling" bottom: "head" top: "pool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "dropout" type: "Dropout" bottom: "pool" top: "pool" dropout_param { dropout_ratio: 0.2 } }
layer { name: "classifier" type: "InnerProduct" bottom: "pool" top: "logits" inner_product_param { num_output: 1000 } }
"""
    full = load_prototxt(text, input_shape=SIZE)
    _copy(tv, full, lambda n: "classifier" if n == "classifier.1" else mobilenetv2_name(n))
    _same_function(tv, full, x)


def test_mnasnet_is_torchvisions_mnasnet1_0():
    torch.manual_seed(0)
    tv = torchvision.models.mnasnet1_0()
    _randomise_norms(tv)
    gm = load_prototxt("mnasnet", input_shape=SIZE)
    _copy(tv.layers, gm, lambda n: mnasnet_name("layers." + n))
    _same_function(tv.layers, gm, torch.randn(*SIZE))
    assert all(m.momentum == pytest.approx(1 - 0.9997) for m in gm.modules() if isinstance(m, nn.BatchNorm2d))


def _dilated_resnet34():
    """torchvision's ResNet-34 turned into DeepLab's: layers 3 and 4 keep the resolution and
    dilate their 3x3 convolutions by 2 and 4; the stem's max-pooling rounds up."""
    model = torchvision.models.resnet34()
    model.maxpool.ceil_mode = True
    for layer, dilation in ((model.layer3, 2), (model.layer4, 4)):
        for block in layer:
            for conv in (block.conv1, block.conv2):
                conv.stride, conv.dilation, conv.padding = (1, 1), (dilation, dilation), (dilation, dilation)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)
    return nn.Sequential(*list(model.children())[:-2])


def test_deeplab_resnet34_is_the_dilated_resnet34():
    torch.manual_seed(0)
    reference = _dilated_resnet34()
    _randomise_norms(reference)
    size = (1, 3, 41, 41)
    gm = load_prototxt("deeplab_resnet34", input_shape=size)
    names = {str(i): n for i, n in enumerate(["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"])}
    _copy(reference, gm, lambda n: resnet_name(names[n.split(".")[0]] + n[len(n.split(".")[0]):]))
    _same_function(reference, gm, torch.randn(*size))
    # output stride 8 at the declared 224 x 224: 224 -> 112 -> 57 (pooling rounds up) -> 29
    assert load_prototxt("deeplab_resnet34").output_shapes == ((1, 512, 29, 29),)


@pytest.mark.parametrize("name,searchable,params", [
    ("deeplab_resnet34", 36, 21_284_672),
    ("resnet18", 20, 11_176_512),
    ("mobilenetv2", 52, 2_223_872),
    ("mnasnet", 52, 3_102_312),
])
def test_each_shipped_backbone_compiles_by_name(name, searchable, params):
    sm = automtl.compile(name, ["seg", "depth"], torch.randn(1, 3, 32, 32))
    assert len(sm.searchable_nodes) == searchable and sm.backbone_parameters() == params
    sm.eval().set_mode("fixed", policy=automtl.Policy.all_shared(sm))
    with torch.no_grad():
        out = sm(torch.randn(1, 3, 32, 32))
    assert set(out) == {"seg", "depth"} and out["seg"].shape[1] == (1280 if "m" in name[:2] else 512)
