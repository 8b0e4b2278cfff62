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


# -- pretrained weights, timm, user factories and node cuts (issue 17) --------------------------

import torchvision  # noqa: E402

from automtl.backbones import cut_at_node  # noqa: E402
from automtl.search.build import build_supermodel  # noqa: E402
from search_toy import model_spec


def _spec(backbone, size=16, tasks=("a:classification:3", "b:classification:2")):
    return model_spec(backbone, [3, size, size], tasks, norm="follow", seed=5)


def _copies_hold(sm, state, key_of=lambda path: path):
    """Every operator of ``sm`` - the shared one and each task's copy - holds ``state``'s tensors;
    returns how many tensors were compared."""
    compared = 0
    for name, vcn in sm.vcns.items():
        target = sm.graph[name].target
        for module in [vcn.op, *vcn.copies.values()]:
            for key, value in module.state_dict().items():
                assert torch.equal(value, state[key_of(f"{target}.{key}")]), (name, key)
                compared += 1
    return compared


def test_torchvision_weights_file_is_where_every_copy_starts(tmp_path):
    torch.manual_seed(123)
    reference = torchvision.models.resnet18()
    for m in reference.modules():  # running statistics unlike a fresh model's, so they are checked too
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    state = reference.state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    backbone = parse_backbone({"torchvision": "resnet18", "weights": str(path), "return_node": "layer1"})
    assert backbone == {"torchvision": "resnet18", "kwargs": {}, "weights": str(path), "return_node": "layer1", "features": False}
    sm, resolved = build_supermodel(_spec(backbone))
    # conv1 and bn1, then 2 blocks of 2 convs and 2 norms: 10 operators, each shared and one copy per task
    compared = _copies_hold(sm, state)
    assert compared == 3 * (1 + 5 + 4 * (1 + 5))  # a conv has a weight, a norm 5 tensors
    # a run rebuilds the same model from its spec: the weights again, not a new random draw
    again, _ = build_supermodel(resolved)
    assert _copies_hold(again, state) > 0


def test_a_weights_file_that_does_not_fit_names_the_key(tmp_path):
    state = torchvision.models.resnet18().state_dict()
    wrong = dict(state, **{"layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)})
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(ConfigError, match=r"backbone torchvision:resnet18: weights file .*wrong.pt: "
                       r"'layer1.0.conv1.weight' has shape \[64, 64, 1, 1\] there, but the model's 'layer1.0.conv1.weight' is \[64, 64, 3, 3\]"):
        build_backbone(parse_backbone({"torchvision": "resnet18", "weights": str(tmp_path / "wrong.pt")}))
    torch.save({k: v for k, v in state.items() if k != "fc.bias"}, tmp_path / "short.pt")
    with pytest.raises(ConfigError, match=r"short.pt does not fit the model: missing 'fc.bias' \(1 keys\)"):
        build_backbone(parse_backbone({"torchvision": "resnet18", "weights": str(tmp_path / "short.pt")}))
    # a checkpoint that wraps the state_dict, with DataParallel's prefix, loads
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "wrapped.pt")
    backbone = build_backbone(parse_backbone({"torchvision": "resnet18", "weights": str(tmp_path / "wrapped.pt"), "features": False}))
    assert torch.equal(backbone.conv1.weight, state["conv1.weight"])
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ConfigError, match="list.pt is not a state_dict"):
        build_backbone(parse_backbone({"torchvision": "resnet18", "weights": str(tmp_path / "list.pt")}))
    with pytest.raises(ConfigError, match="weights file .*missing.pt does not exist"):
        build_backbone(parse_backbone({"torchvision": "resnet18", "weights": str(tmp_path / "missing.pt")}))


def test_torchvision_weights_names(monkeypatch):
    state = torchvision.models.resnet18().state_dict()
    asked = []

    def fake_download(self, *args, **kwargs):  # what torchvision would download, without the network
        asked.append(str(self))
        return state

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", fake_download)
    for name in ("ResNet18_Weights.IMAGENET1K_V1", "IMAGENET1K_V1", "DEFAULT"):
        backbone = build_backbone(parse_backbone({"torchvision": "resnet18", "weights": name}))
        assert torch.equal(backbone.conv1.weight, state["conv1.weight"])
    assert asked == ["ResNet18_Weights.IMAGENET1K_V1"] * 3
    # the architecture only (a saved model about to get its own weights): nothing is downloaded
    backbone = build_backbone(parse_backbone({"torchvision": "resnet18", "weights": "DEFAULT"}), load_weights=False)
    assert len(asked) == 3 and not torch.equal(backbone.conv1.weight, state["conv1.weight"])
    # and leaves torchvision as it was: the download method stays the one WeightsEnum gives
    assert "get_state_dict" not in torchvision.models.ResNet18_Weights.__dict__
    # kwargs: {weights: ...} is the spec's weights, not a second argument to get_model
    assert parse_backbone({"torchvision": "resnet18", "kwargs": {"weights": "DEFAULT"}})["weights"] == "DEFAULT"
    with pytest.raises(ConfigError, match="'weights' is given twice"):
        parse_backbone({"torchvision": "resnet18", "weights": "DEFAULT", "kwargs": {"weights": "DEFAULT"}})
    with pytest.raises(ConfigError, match="weights 'ResNet50_Weights.IMAGENET1K_V2' are not resnet18's; its weights are "
                       "ResNet18_Weights.IMAGENET1K_V1, ResNet18_Weights.DEFAULT"):
        build_backbone(parse_backbone({"torchvision": "resnet18", "weights": "ResNet50_Weights.IMAGENET1K_V2"}))
    with pytest.raises(ConfigError, match=r"no weights 'IMAGENET1K_V2' \(did you mean 'ResNet18_Weights.IMAGENET1K_V1'\?\)"):
        build_backbone(parse_backbone({"torchvision": "resnet18", "weights": "IMAGENET1K_V2"}))


def test_return_node_cuts_where_torchvision_feature_extraction_does():
    torch.manual_seed(0)
    backbone = build_backbone(parse_backbone({"torchvision": "resnet18", "return_node": "layer2"}))
    x = torch.randn(1, 3, 64, 64)
    full = torchvision.models.resnet18()
    full.load_state_dict({k: v for k, v in backbone.state_dict().items()}, strict=False)
    with torch.no_grad():
        out = backbone.eval()(x)
        full.eval()
        expected = full.layer2(full.layer1(full.maxpool(full.relu(full.bn1(full.conv1(x))))))
    assert out.shape == (1, 128, 8, 8) and torch.equal(out, expected)
    assert not any(k.startswith(("layer3", "layer4", "fc")) for k in backbone.state_dict())
    sm = automtl.compile(backbone, ["a", "b"], example_input=torch.zeros(2, 3, 64, 64))
    assert sm.graph[sm.searchable_nodes[-1]].target.startswith("layer2.")
    with pytest.raises(ConfigError, match=r"no node 'layer22' to cut at \(did you mean 'layer2'\?\); the nodes are x, conv1"):
        cut_at_node(torchvision.models.resnet18(), "layer22", "backbone torchvision:resnet18")


def test_timm_backbone_with_local_weights(tmp_path):
    import timm  # in the test extra
    torch.manual_seed(7)
    state = timm.create_model("test_resnet").state_dict()
    torch.save(state, tmp_path / "test_resnet.pth")
    assert parse_backbone("timm:test_resnet") == {"timm": "test_resnet", "kwargs": {}, "features": True}
    # the default: timm's unpooled feature map (num_classes=0, global_pool='')
    whole = build_backbone(parse_backbone({"timm": "test_resnet", "weights": str(tmp_path / "test_resnet.pth")}))
    assert all(torch.equal(v, state[k]) for k, v in whole.state_dict().items())
    assert whole(torch.zeros(2, 3, 64, 64)).shape == (2, 96, 2, 2)
    # features_only, as timm does it: the map of the last out_indices level
    spec = parse_backbone({"timm": "test_resnet", "weights": str(tmp_path / "test_resnet.pth"), "kwargs": {"out_indices": [2]}})
    assert spec["features_only"] is True and spec["out_indices"] == [2] and spec["kwargs"] == {}
    sm, _ = build_supermodel(_spec(spec, size=32))
    assert _copies_hold(sm, state, key_of=lambda path: path[len("net."):]) > 0
    assert sm.graph[sm.graph.output].out_shape[1:] == (48, 4, 4)
    # a file of another model: named before timm would load it leniently
    torch.save(timm.create_model("test_convnext").state_dict(), tmp_path / "convnext.pth")
    with pytest.raises(ConfigError, match=r"convnext.pth does not fit the model: missing 'conv1.0.weight'.*not in the model 'stem.0.weight'"):
        build_backbone(parse_backbone({"timm": "test_resnet", "weights": str(tmp_path / "convnext.pth")}))
    with pytest.raises(ConfigError, match=r"timm has no model 'test_resnett' \(did you mean 'test_resnet'\?\)"):
        build_backbone(parse_backbone("timm:test_resnett"))


def test_module_factory_backbone(tmp_path, monkeypatch):
    (tmp_path / "my_nets.py").write_text(
        "from torch import nn\n\n"
        "def tiny(width=4):\n"
        "    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, width, 3))\n\n"
        "def not_a_module():\n"
        "    return 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = parse_backbone("module:my_nets:tiny")
    assert spec == {"module": "my_nets:tiny", "kwargs": {}}
    net = build_backbone({"module": "my_nets:tiny", "kwargs": {"width": 6}})
    assert net(torch.zeros(1, 3, 8, 8)).shape == (1, 6, 6, 6)
    torch.save(net.state_dict(), tmp_path / "tiny.pt")
    again = build_backbone({"module": "my_nets:tiny", "kwargs": {"width": 6}, "weights": str(tmp_path / "tiny.pt"), "return_node": "2"})
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), net.eval()[:3](x))  # cut after the ReLU, with the file's weights
    with pytest.raises(ConfigError, match=r"my_nets has no 'tinny' \(did you mean 'tiny'\?\)"):
        build_backbone(parse_backbone("module:my_nets:tinny"))
    with pytest.raises(ConfigError, match="no module named 'no_such_module'"):
        build_backbone(parse_backbone("module:no_such_module:make"))
    with pytest.raises(ConfigError, match="the factory returned a int, not an nn.Module"):
        build_backbone(parse_backbone("module:my_nets:not_a_module"))
    with pytest.raises(ConfigError, match="'my_nets' is not an import path"):
        parse_backbone({"module": "my_nets"})
