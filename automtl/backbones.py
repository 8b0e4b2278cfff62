"""Named backbones, and a JSON-able spec from which a run can rebuild its backbone.

A *backbone spec* is a plain dict, saved with every run so the final model can be rebuilt
without pickled code:

* ``{"builtin": "dilated_resnet_tiny", "kwargs": {...}}``: a CPU-sized network defined here
  (see :data:`BUILTIN_BACKBONES`);
* ``{"prototxt": "deeplab_resnet34"}``: a prototxt model shipped in ``automtl/proto/``, or a
  path to a ``.prototxt`` file;
* ``{"torchvision": "resnet18", "kwargs": {...}, "features": true, "weights": ...}``: a
  torchvision model (``features`` drops the classifier and keeps the feature extractor;
  ``weights``: a torchvision weights name such as ``ResNet18_Weights.IMAGENET1K_V1``, or a
  local state_dict file);
* ``{"timm": "resnet50", "pretrained": true}``: a timm model (``timm.create_model``; by
  default its unpooled feature map, or ``features_only`` with ``out_indices``, the last map
  taken; ``weights``: a local state_dict file timm loads as its pretrained weights);
* ``{"module": "my_pkg.nets:make_net", "kwargs": {...}}``: any factory that returns an
  ``nn.Module`` (``weights``: a state_dict file).

Every ``nn.Module`` kind also takes ``return_node``: the node (torchvision's
``get_graph_node_names``, e.g. ``layer3``) whose output is the backbone's, cut with
``torchvision.models.feature_extraction.create_feature_extractor``. Weights are loaded into the
whole model before any cut and before compile, so every copy starts from them.

:func:`parse_backbone` turns the short strings users type (``dilated_resnet_tiny``,
``deeplab_resnet34``, ``torchvision:resnet18``, ``timm:resnet50``,
``module:my_pkg.nets:make_net``, ``path/to/net.prototxt``) into a spec, and
:func:`build_backbone` turns a spec into an ``nn.Module`` (or prototxt source for
:func:`automtl.compile`).
"""

from __future__ import annotations

import contextlib
import copy
import os
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.fx
from torch import nn

from automtl.errors import ConfigError
from automtl.importing import check_import_path, import_object
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
    if text.startswith("timm:"):
        return check_backbone_spec({"timm": text[len("timm:") :]})
    if text.startswith("module:"):
        return check_backbone_spec({"module": text[len("module:") :]})
    if text in BUILTIN_BACKBONES:
        return {"builtin": text, "kwargs": {}}
    if text.endswith(".prototxt") or os.sep in text or text in _shipped_prototxt():
        return check_backbone_spec({"prototxt": text})
    raise ConfigError(
        f"unknown backbone '{text}'{did_you_mean(text, available_backbones())}: use one of "
        f"{', '.join(available_backbones())}, 'torchvision:<arch>' (e.g. torchvision:resnet18), 'timm:<name>', "
        "'module:<package.module>:<factory>', or a path to a .prototxt file"
    )


#: the keys each kind of spec takes besides its own (``weights``: a state_dict file loaded
#: before compile - for torchvision also a weights enum name; ``return_node``: the node whose
#: output is the backbone's, torchvision's feature extraction)
_SPEC_KEYS: Dict[str, Tuple[str, ...]] = {
    "builtin": ("kwargs", "weights", "return_node"),
    "prototxt": ("kwargs",),
    "torchvision": ("kwargs", "features", "weights", "return_node"),
    "timm": ("kwargs", "features", "pretrained", "weights", "features_only", "out_indices", "return_node"),
    "module": ("kwargs", "weights", "return_node"),
}
_SPEC_KINDS = tuple(_SPEC_KEYS)
#: constructor arguments that have their own key in the spec (a user factory keeps all its own)
_MOVED_FROM_KWARGS: Dict[str, Tuple[str, ...]] = {
    "torchvision": ("weights",),
    "timm": ("pretrained", "features_only", "out_indices"),
}


def check_backbone_spec(spec: Mapping[str, Any]) -> BackboneSpec:
    kinds = [k for k in _SPEC_KINDS if k in spec]
    if len(kinds) != 1:
        raise ConfigError(
            f"a backbone spec names exactly one of {', '.join(_SPEC_KINDS)}; got keys {sorted(spec)}"
        )
    kind = kinds[0]
    allowed = {kind, *_SPEC_KEYS[kind]}
    for key in spec:
        if key not in allowed:
            raise ConfigError(
                f"backbone spec: unknown key '{key}'{did_you_mean(key, sorted(allowed))}; "
                f"a {kind} spec takes {', '.join(sorted(allowed))}"
            )
    kwargs = spec.get("kwargs", {}) or {}
    if not isinstance(kwargs, Mapping):
        raise ConfigError(f"backbone spec: kwargs must be a mapping, got {type(kwargs).__name__}")
    kwargs = copy.deepcopy(dict(kwargs))
    if not isinstance(spec[kind], str) or not spec[kind].strip():
        raise ConfigError(f"backbone spec: '{kind}' must be a name, got {spec[kind]!r}")
    out: BackboneSpec = {kind: spec[kind].strip(), "kwargs": kwargs}
    where = describe_backbone(out)
    # what the constructors would take as keyword arguments has one place in the spec: its own
    # key (torchvision's get_model(weights=...) and timm's create_model(pretrained=...) would
    # otherwise collide with the weights automtl loads)
    for key in ("weights", "pretrained", "features_only", "out_indices"):
        if key in kwargs and key in _MOVED_FROM_KWARGS.get(kind, ()):
            if key in spec:
                raise ConfigError(f"backbone {where}: '{key}' is given twice, at the spec's top level and in kwargs; keep one")
            out[key] = kwargs.pop(key)
        elif key in spec:
            out[key] = spec[key]
    if kind == "builtin" and out["builtin"] not in BUILTIN_BACKBONES:
        raise BUILTIN_BACKBONES.unknown(out["builtin"], shown=sorted(BUILTIN_BACKBONES))
    if kind == "module":
        out["module"] = check_import_path(out["module"], "backbone factory")
    if "weights" in out and out["weights"] is not None:
        if not isinstance(out["weights"], str) or not out["weights"].strip():
            raise ConfigError(f"backbone {where}: weights must be a file path{' or a weights name' if kind == 'torchvision' else ''}, got {out['weights']!r}")
        if kind != "torchvision" or _is_file_name(out["weights"]):  # a run saves its spec: the file wherever it runs from
            out["weights"] = os.path.abspath(os.path.expanduser(out["weights"]))
    elif "weights" in out:
        del out["weights"]
    if "return_node" in spec:
        if not isinstance(spec["return_node"], str) or not spec["return_node"]:
            raise ConfigError(f"backbone {where}: return_node must be a node name (e.g. 'layer3'), got {spec['return_node']!r}")
        out["return_node"] = spec["return_node"]
    if kind in ("torchvision", "timm"):
        # a node cut takes the whole model: there is nothing to drop first
        out["features"] = bool(spec.get("features", True)) and "return_node" not in out
    if kind == "timm":
        for flag in ("pretrained", "features_only"):
            if flag in out and not isinstance(out[flag], bool):
                raise ConfigError(f"backbone {where}: {flag} must be true or false, got {out[flag]!r}")
        if "out_indices" in out:
            indices = out["out_indices"]
            if isinstance(indices, int) and not isinstance(indices, bool):
                indices = [indices]
            if not isinstance(indices, (list, tuple)) or not indices or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
                raise ConfigError(f"backbone {where}: out_indices must be a list of feature levels (e.g. [3]), got {out['out_indices']!r}")
            out["out_indices"] = list(indices)
            out["features_only"] = True
    return out


def describe_backbone(spec: Mapping[str, Any]) -> str:
    if "builtin" in spec:
        return str(spec["builtin"])
    if "prototxt" in spec:
        return os.path.basename(str(spec["prototxt"]))
    kind = next((k for k in ("torchvision", "timm", "module") if k in spec), None)
    if kind is None:
        return "?"
    text = f"{kind}:{spec[kind]}"
    if spec.get("weights"):
        text += f" (weights {os.path.basename(str(spec['weights']))})"
    elif spec.get("pretrained"):
        text += " (pretrained)"
    if spec.get("return_node"):
        text += f" up to {spec['return_node']}"
    return text


def build_backbone(spec: Mapping[str, Any], load_weights: bool = True) -> Union[nn.Module, str]:
    """The backbone of ``spec``: an ``nn.Module``, or for prototxt specs the file's path (or
    shipped name) for :func:`automtl.compile`. Deterministic given the torch RNG state.

    Pretrained weights (``weights``, timm's ``pretrained``) are loaded into the model as built,
    before any feature cut, so every copy the compiler makes starts from them.
    ``load_weights=False`` builds the architecture only (for a model whose weights come from
    a saved state_dict next): no weights file is read and nothing is downloaded."""
    spec = check_backbone_spec(spec)
    kwargs = spec["kwargs"]
    where = describe_backbone(spec)
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
    weights = spec.get("weights") if load_weights else None
    if "builtin" in spec:
        try:
            model: nn.Module = BUILTIN_BACKBONES[spec["builtin"]](**kwargs)
        except TypeError as exc:
            raise ConfigError(f"backbone '{spec['builtin']}': {exc}") from exc
        if weights:
            load_weights_file(model, weights, f"backbone {where}")
    elif "torchvision" in spec:
        model = _torchvision_backbone(str(spec["torchvision"]), kwargs, spec["features"], spec.get("weights"), load_weights)
    elif "timm" in spec:
        model = _timm_backbone(spec, load_weights)
    else:
        factory = import_object(spec["module"], "backbone factory")
        try:
            model = factory(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"backbone {where}: {exc}") from exc
        if not isinstance(model, nn.Module):
            raise ConfigError(f"backbone {where}: the factory returned a {type(model).__name__}, not an nn.Module")
        if weights:
            load_weights_file(model, weights, f"backbone {where}")
    if spec.get("return_node"):
        model = cut_at_node(model, spec["return_node"], f"backbone {where}")
    return model


# -- pretrained weights --------------------------------------------------------------------------

_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar", ".safetensors")


def _is_file_name(text: str) -> bool:
    """Whether ``weights`` names a file (else a torchvision weights name)."""
    return os.path.exists(text) or "/" in text or os.sep in text or text.lower().endswith(_FILE_SUFFIXES)


def read_state_dict(path: str, where: str) -> Dict[str, torch.Tensor]:
    """The tensors of a state_dict file (``torch.load(weights_only=True)``); a checkpoint that
    wraps them (``{"state_dict": ...}``, ``{"model": ...}``) and DataParallel's ``module.``
    prefix are unwrapped."""
    from automtl.errors import CheckpointError
    from automtl.io import safe_torch_load

    if not os.path.isfile(path):
        raise ConfigError(f"{where}: weights file {path} does not exist")
    try:
        state = safe_torch_load(path)
    except CheckpointError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{where}: {path} is not a state_dict (a mapping of names to tensors, as torch.save(model.state_dict(), path) writes)")
    state = {str(k): v for k, v in state.items()}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def check_state_fits(
    expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], path: str, where: str, ignore: Sequence[str] = ()
) -> None:
    """Raise a :class:`ConfigError` naming the first key of ``state`` whose shape differs from
    the model's (``expected``: its state_dict), or the keys missing or left over; keys under
    a prefix of ``ignore`` are not compared."""

    def kept(key: str) -> bool:
        return not any(key == p or key.startswith(p + ".") for p in ignore)

    for key, value in expected.items():
        if kept(key) and key in state and tuple(state[key].shape) != tuple(value.shape):
            raise ConfigError(
                f"{where}: weights file {path}: '{key}' has shape {list(state[key].shape)} there, but the model's "
                f"'{key}' is {list(value.shape)}: the file is for another architecture or number of classes"
                " (set the model's kwargs to match it)"
            )
    missing = [k for k in expected if kept(k) and k not in state]
    unexpected = [k for k in state if kept(k) and k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(repr(k) for k in missing[:5])}{' ...' if len(missing) > 5 else ''} ({len(missing)} keys)")
        if unexpected:
            parts.append(f"not in the model {', '.join(repr(k) for k in unexpected[:5])}{' ...' if len(unexpected) > 5 else ''} ({len(unexpected)} keys)")
        raise ConfigError(f"{where}: weights file {path} does not fit the model: {'; '.join(parts)}")


def load_weights_file(model: nn.Module, path: str, where: str) -> None:
    """Load the state_dict file ``path`` into ``model`` strictly; a key missing, left over or
    of another shape is named."""
    state = read_state_dict(path, where)
    check_state_fits(model.state_dict(), state, path, where)
    model.load_state_dict(state, strict=True)


class _SkipLoad(dict):
    """What a torchvision weights enum gives while only the architecture is built."""


@contextlib.contextmanager
def _architecture_only(weights_enum_type: type) -> Iterator[None]:
    """torchvision's builders with ``weights=`` shape the model after the weights (classes,
    input transform) and then load them; here they do the first and skip the second, so that
    rebuilding a saved model downloads nothing."""
    own_get = weights_enum_type.__dict__.get("get_state_dict")  # usually inherited from WeightsEnum
    original_load = nn.Module.load_state_dict

    def get_state_dict(self: Any, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        return _SkipLoad()

    def load_state_dict(self: nn.Module, state_dict: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(state_dict, _SkipLoad):
            return nn.modules.module._IncompatibleKeys([], [])
        return original_load(self, state_dict, *args, **kwargs)

    weights_enum_type.get_state_dict = get_state_dict  # type: ignore[method-assign]
    nn.Module.load_state_dict = load_state_dict  # type: ignore[method-assign]
    try:
        yield
    finally:
        # put back what was there: an inherited method must stay inherited, or a later patch of
        # WeightsEnum (a test's, a user's) would be hidden behind the copy left on the subclass
        if own_get is None:
            del weights_enum_type.get_state_dict
        else:
            weights_enum_type.get_state_dict = own_get  # type: ignore[method-assign]
        nn.Module.load_state_dict = original_load  # type: ignore[method-assign]


def _torchvision_weights(arch: str, name: str) -> Any:
    """The weights enum member ``name`` (``ResNet18_Weights.IMAGENET1K_V1``, or just
    ``IMAGENET1K_V1`` / ``DEFAULT``) of torchvision model ``arch``."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"torchvision:{arch} has no pretrained weights in torchvision; give a state_dict file as weights") from exc
    members = [f"{enum.__name__}.{m}" for m in enum.__members__]
    prefix, _, member = name.rpartition(".")
    if prefix and prefix != enum.__name__:
        raise ConfigError(
            f"torchvision:{arch}: weights '{name}' are not {arch}'s; its weights are {', '.join(members)}"
        )
    if member not in enum.__members__:
        raise ConfigError(
            f"torchvision:{arch}: no weights '{name}'{did_you_mean(f'{enum.__name__}.{member}', members)}; "
            f"its weights are {', '.join(members)} (or give a state_dict file)"
        )
    return enum[member]


def _torchvision_backbone(arch: str, kwargs: Dict[str, Any], features: bool, weights: Optional[str], load: bool) -> nn.Module:
    try:
        import torchvision
    except ImportError as exc:  # pragma: no cover - torchvision is an optional extra
        raise ConfigError("torchvision backbones need torchvision: pip install 'automtl[vision]'") from exc
    names = torchvision.models.list_models(module=torchvision.models)
    if arch not in names:
        raise ConfigError(
            f"unknown torchvision model '{arch}'{did_you_mean(arch, names)}; see torchvision.models.list_models()"
        )
    where = f"backbone torchvision:{arch}"
    enum = _torchvision_weights(arch, weights) if weights and not _is_file_name(weights) else None
    try:
        if enum is not None and not load:
            with _architecture_only(type(enum)):
                model = torchvision.models.get_model(arch, weights=enum, **kwargs)
        else:
            model = torchvision.models.get_model(arch, weights=enum, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"torchvision:{arch}: {exc}") from exc
    except (OSError, RuntimeError) as exc:  # no network, or a download that failed
        raise ConfigError(
            f"{where}: the weights {enum} could not be loaded ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "torchvision downloads them once into $TORCH_HOME/hub/checkpoints - without a network, download the file "
            "elsewhere and give its path as weights"
        ) from exc
    if weights and enum is None and load:
        load_weights_file(model, weights, where)
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
        f"torchvision:{arch} has no feature extractor automtl knows how to cut out; name the node to cut at "
        "({'torchvision': '" + arch + "', 'return_node': 'NODE'}), or use "
        "{'torchvision': '" + arch + "', 'features': false} to take the whole model"
    )


class LastFeatureMap(nn.Module):
    """A timm ``features_only`` model, which returns one map per ``out_indices`` level, giving
    its last (deepest) map: the backbone's output. The model is kept whole (``net``), so its
    weights keep their names under ``net.``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[-1]


def _timm_backbone(spec: Mapping[str, Any], load: bool) -> nn.Module:
    name = str(spec["timm"])
    where = f"backbone timm:{name}"
    try:
        import timm
    except ImportError as exc:
        raise ConfigError(f"{where}: timm backbones need timm: pip install timm") from exc
    if not timm.is_model(name.split(".")[0]):
        raise ConfigError(f"{where}: timm has no model '{name}'{did_you_mean(name, timm.list_models())}; see timm.list_models()")
    args = dict(spec["kwargs"])
    features_only = bool(spec.get("features_only"))
    if features_only:
        args["features_only"] = True
        if "out_indices" in spec:
            args["out_indices"] = tuple(spec["out_indices"])
    elif spec.get("features", True):  # timm's feature map: no pooling, no classifier
        args.setdefault("num_classes", 0)
        args.setdefault("global_pool", "")
    pretrained = bool(spec.get("pretrained")) and load
    weights = spec.get("weights") if load else None
    if weights:
        if not os.path.isfile(weights):
            raise ConfigError(f"{where}: weights file {weights} does not exist")
        _check_timm_weights(timm, name, spec["kwargs"], weights, where)
        # timm loads the file as its own pretrained weights: into the whole model, before the
        # feature wrapper, the classifier dropped when num_classes differs
        args["pretrained_cfg_overlay"] = {"file": os.path.abspath(weights)}
        pretrained = True
    try:
        model = timm.create_model(name, pretrained=pretrained, **args)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    except RuntimeError as exc:
        text = " ".join(str(exc).split())
        raise ConfigError(f"{where}: the weights {'in ' + weights if weights else ''} do not fit the model: {text[:600]}") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{where}: the pretrained weights could not be loaded ({type(exc).__name__}: {exc}); without a network, "
            "give a local state_dict file as weights"
        ) from exc
    return LastFeatureMap(model) if features_only else model


def _check_timm_weights(timm: Any, name: str, kwargs: Mapping[str, Any], path: str, where: str) -> None:
    """timm loads pretrained weights leniently (a key that does not fit is logged, its layer
    left random): check the file against the whole model first, its classifier aside (timm
    drops it when the number of classes differs)."""
    state = read_state_dict(path, where)
    with torch.device("meta"):  # the architecture only: no memory, no initialisation
        reference = timm.create_model(name, pretrained=False, **kwargs)
    cfg = dict(getattr(reference, "pretrained_cfg", None) or {})
    classifier = cfg.get("classifier") or ()
    ignore = [classifier] if isinstance(classifier, str) else list(classifier)
    if "in_chans" in kwargs and cfg.get("first_conv"):  # timm adapts the first convolution to in_chans
        first = cfg["first_conv"]
        ignore += [first] if isinstance(first, str) else list(first)
    check_state_fits(reference.state_dict(), state, path, where, ignore)


# -- feature cut by node ---------------------------------------------------------------------------

def cut_at_node(model: nn.Module, node: str, where: str) -> nn.Module:
    """``model`` up to the node ``node`` (a name of torchvision's
    ``get_graph_node_names``, e.g. ``layer3`` or ``features.6``): a ``GraphModule`` that
    returns that node's output, built with torchvision's ``create_feature_extractor``."""
    try:
        from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
    except ImportError as exc:  # pragma: no cover - torchvision is an optional extra
        raise ConfigError(f"{where}: return_node needs torchvision: pip install 'automtl[vision]'") from exc
    training = model.training
    model.train()  # the graph of training mode, which is the one automtl traces
    try:
        extractor = create_feature_extractor(model, return_nodes={node: "out"})
    except ValueError as exc:
        names, _ = get_graph_node_names(model)
        shown = ", ".join(names[:3] + ["..."] + names[-3:]) if len(names) > 8 else ", ".join(names)
        modules = [name for name, _ in model.named_modules() if name]  # a module's name means its last node
        raise ConfigError(
            f"{where}: no node '{node}' to cut at{did_you_mean(node, modules + names)}; the nodes are {shown} "
            "(all of them: torchvision.models.feature_extraction.get_graph_node_names(model)[0])"
        ) from exc
    except Exception as exc:  # torch.fx cannot trace the model
        raise ConfigError(f"{where}: the model cannot be traced to cut it at '{node}': {type(exc).__name__}: {exc}") from exc
    graph = extractor.train_graph
    output = next(n for n in graph.nodes if n.op == "output")
    output.args = (output.args[0]["out"],)  # the node's tensor, not {"out": tensor}
    graph.eliminate_dead_code()
    cut = torch.fx.GraphModule(extractor, graph, class_name=type(model).__name__)
    cut.train(training)
    return cut


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
