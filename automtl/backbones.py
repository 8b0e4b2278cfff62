"""Named backbones, and a JSON-able spec from which a run can rebuild its backbone.

A *backbone spec* is a plain dict, saved with every run so the final model can be rebuilt
without pickled code:

* ``{"builtin": "dilated_resnet_tiny", "kwargs": {...}}``: a CPU-sized network defined here
  (see :data:`BUILTIN_BACKBONES`);
* ``{"prototxt": "deeplab_resnet34"}``: a prototxt model shipped in ``automtl/proto/``, or a
  path to a ``.prototxt`` file;
* ``{"torchvision": "resnet18", "kwargs": {...}, "features": true}``: a torchvision model
  built without weights (``features`` drops the classifier and keeps the feature extractor).

:func:`parse_backbone` turns the short strings users type (``dilated_resnet_tiny``,
``deeplab_resnet34``, ``torchvision:resnet18``, ``path/to/net.prototxt``) into a spec, and
:func:`build_backbone` turns a spec into an ``nn.Module`` (or prototxt source for
:func:`automtl.compile`).
"""

from __future__ import annotations

import copy
import os
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple, Union

import torch
from torch import nn

from automtl.errors import ConfigError
from automtl.registry import Registry, did_you_mean

#: Built-in backbones by name: constructor and the keyword arguments users may set. A new
#: backbone is a class decorated with ``@BUILTIN_BACKBONES.register("name")``.
BUILTIN_BACKBONES: Registry[Callable[..., nn.Module]] = Registry("built-in backbone", listing="built-ins")

BackboneSpec = Dict[str, Any]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection, dilated instead of strided so that the
    output keeps the input's resolution (as DeepLab's dilated ResNets do)."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


@BUILTIN_BACKBONES.register("dilated_resnet_tiny")
class DilatedResNet(nn.Module):
    """A narrow dilated ResNet for dense prediction on the CPU: a 3x3 stem and one
    :class:`BasicBlock` per entry of ``widths``/``dilations``. Output: ``[B, widths[-1], H, W]``
    at the input's resolution (``stem_stride=2`` halves it)."""

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = (16, 16, 32, 32),
        dilations: Sequence[int] = (1, 1, 2, 4),
        stem_stride: int = 1,
    ):
        super().__init__()
        if len(widths) != len(dilations) or not widths:
            raise ConfigError(
                f"DilatedResNet: widths {list(widths)} and dilations {list(dilations)} must be "
                "non-empty lists of the same length (one entry per residual block)"
            )
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        blocks: List[nn.Module] = []
        previous = widths[0]
        for width, dilation in zip(widths, dilations):
            blocks.append(BasicBlock(previous, width, dilation))
            previous = width
        self.blocks = nn.Sequential(*blocks)
        self.out_channels = previous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))


@BUILTIN_BACKBONES.register("small_convnet")
class SmallConvNet(nn.Module):
    """A small strided CNN for image classification (e.g. multi-digit MNIST): ``conv-BN-ReLU``
    stages, then - with ``features`` set - average pooling to a ``grid`` x ``grid`` map, a
    flatten and a linear layer, so that the output keeps *where* things are in the image
    (global pooling would not). Output: ``[B, features]``, or ``[B, widths[-1], h, w]`` when
    ``features`` is 0."""

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = (16, 32, 32),
        strides: Sequence[int] = (1, 2, 2),
        features: int = 64,
        grid: int = 4,
    ):
        super().__init__()
        if len(widths) != len(strides) or not widths:
            raise ConfigError(
                f"SmallConvNet: widths {list(widths)} and strides {list(strides)} must be "
                "non-empty lists of the same length (one entry per stage)"
            )
        layers: List[nn.Module] = []
        previous = in_channels
        for channels, stride in zip(widths, strides):
            layers += [
                nn.Conv2d(previous, channels, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(),
            ]
            previous = channels
        self.features = nn.Sequential(*layers)
        self.head: nn.Module = nn.Identity()
        self.out_channels = previous
        if features:
            self.head = nn.Sequential(
                nn.AdaptiveAvgPool2d(grid), nn.Flatten(), nn.Linear(previous * grid * grid, features), nn.ReLU()
            )
            self.out_channels = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))




def _shipped_prototxt() -> Dict[str, str]:
    """Names -> paths of the prototxt backbones shipped in ``automtl/proto/``."""
    from automtl.compiler.prototxt import shipped_backbones

    return shipped_backbones()


def available_backbones() -> List[str]:
    """Every name :func:`parse_backbone` accepts without a prefix."""
    return sorted(BUILTIN_BACKBONES) + sorted(_shipped_prototxt())


def parse_backbone(text: Union[str, Mapping[str, Any]]) -> BackboneSpec:
    """A backbone spec from what a user typed (or a spec, checked and copied)."""
    if isinstance(text, Mapping):
        return check_backbone_spec(text)
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"a backbone is a name or a spec mapping, got {text!r}")
    text = text.strip()
    if text.startswith("torchvision:"):
        return check_backbone_spec({"torchvision": text[len("torchvision:") :], "features": True})
    if text in BUILTIN_BACKBONES:
        return {"builtin": text, "kwargs": {}}
    if text.endswith(".prototxt") or os.sep in text or text in _shipped_prototxt():
        return check_backbone_spec({"prototxt": text})
    raise ConfigError(
        f"unknown backbone '{text}'{did_you_mean(text, available_backbones())}: use one of "
        f"{', '.join(available_backbones())}, 'torchvision:<arch>' (e.g. torchvision:resnet18), "
        "or a path to a .prototxt file"
    )


_SPEC_KINDS = ("builtin", "prototxt", "torchvision")


def check_backbone_spec(spec: Mapping[str, Any]) -> BackboneSpec:
    kinds = [k for k in _SPEC_KINDS if k in spec]
    if len(kinds) != 1:
        raise ConfigError(
            f"a backbone spec names exactly one of {', '.join(_SPEC_KINDS)}; got keys {sorted(spec)}"
        )
    allowed = {kinds[0], "kwargs", "features"}
    for key in spec:
        if key not in allowed:
            raise ConfigError(
                f"backbone spec: unknown key '{key}'{did_you_mean(key, sorted(allowed))}; "
                f"a {kinds[0]} spec takes {', '.join(sorted(allowed))}"
            )
    kwargs = spec.get("kwargs", {}) or {}
    if not isinstance(kwargs, Mapping):
        raise ConfigError(f"backbone spec: kwargs must be a mapping, got {type(kwargs).__name__}")
    out: BackboneSpec = {kinds[0]: spec[kinds[0]], "kwargs": copy.deepcopy(dict(kwargs))}
    if kinds[0] == "builtin" and spec["builtin"] not in BUILTIN_BACKBONES:
        raise BUILTIN_BACKBONES.unknown(spec["builtin"], shown=sorted(BUILTIN_BACKBONES))
    if kinds[0] == "torchvision":
        out["features"] = bool(spec.get("features", True))
    return out


def describe_backbone(spec: Mapping[str, Any]) -> str:
    if "builtin" in spec:
        return str(spec["builtin"])
    if "prototxt" in spec:
        return os.path.basename(str(spec["prototxt"]))
    return f"torchvision:{spec['torchvision']}"


def build_backbone(spec: Mapping[str, Any]) -> Union[nn.Module, str]:
    """The backbone of ``spec``: an ``nn.Module``, or for prototxt specs the file's path (or
    shipped name) for :func:`automtl.compile`. Deterministic given the torch RNG state."""
    spec = check_backbone_spec(spec)
    kwargs = spec["kwargs"]
    if "builtin" in spec:
        try:
            return BUILTIN_BACKBONES[spec["builtin"]](**kwargs)
        except TypeError as exc:
            raise ConfigError(f"backbone '{spec['builtin']}': {exc}") from exc
    if "prototxt" in spec:
        source = str(spec["prototxt"])
        shipped = _shipped_prototxt()
        if source in shipped:
            return shipped[source]
        if not os.path.exists(source):
            raise ConfigError(
                f"prototxt backbone '{source}' is neither a shipped model "
                f"({', '.join(shipped) or 'none shipped'}) nor an existing file"
            )
        return source
    return _torchvision_backbone(str(spec["torchvision"]), kwargs, spec["features"])


def _torchvision_backbone(arch: str, kwargs: Dict[str, Any], features: bool) -> nn.Module:
    try:
        import torchvision
    except ImportError as exc:  # pragma: no cover - torchvision is an optional extra
        raise ConfigError("torchvision backbones need torchvision: pip install 'automtl[vision]'") from exc
    names = torchvision.models.list_models(module=torchvision.models)
    if arch not in names:
        raise ConfigError(
            f"unknown torchvision model '{arch}'{did_you_mean(arch, names)}; see torchvision.models.list_models()"
        )
    try:
        model = torchvision.models.get_model(arch, weights=None, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"torchvision:{arch}: {exc}") from exc
    if not features:
        return model
    if isinstance(getattr(model, "features", None), nn.Module):
        return model.features  # VGG, MobileNet, EfficientNet, ConvNeXt, ...
    if hasattr(model, "fc") and hasattr(model, "avgpool"):  # ResNet-style: drop pool and classifier
        children = [(name, m) for name, m in model.named_children() if name not in ("avgpool", "fc")]
        from collections import OrderedDict

        return nn.Sequential(OrderedDict(children))
    if hasattr(model, "layers") and isinstance(model.layers, nn.Module):  # MNASNet
        return model.layers
    raise ConfigError(
        f"torchvision:{arch} has no feature extractor automtl knows how to cut out; use "
        "{'torchvision': '" + arch + "', 'features': false} to take the whole model"
    )


def output_channels(backbone: nn.Module, example_input: torch.Tensor) -> Tuple[int, torch.Size]:
    """Channels (dim 1) and full shape of the backbone's output on ``example_input``."""
    flags = [(m, m.training) for m in backbone.modules()]
    backbone.eval()
    try:
        with torch.no_grad():
            out = backbone(example_input)
    finally:
        for m, flag in flags:
            m.training = flag
    if not isinstance(out, torch.Tensor) or out.dim() < 2:
        raise ConfigError(
            f"the backbone's output must be a tensor of at least 2 dimensions, got "
            f"{type(out).__name__}{'' if not isinstance(out, torch.Tensor) else ' ' + str(list(out.shape))}"
        )
    return int(out.shape[1]), out.shape
