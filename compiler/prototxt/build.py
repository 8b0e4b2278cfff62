""":class:`NetSpec` -> ``torch.fx.GraphModule``, built directly with the ``torch.fx.Graph`` API.

The rules, in the order they apply:

* **Phase.** The net is read in Caffe's TEST phase (``include``/``exclude`` rules).
  Training-only layers (losses, ``Accuracy``, ``HDF5Output``) are dropped: a backbone computes
  features, and automtl's tasks bring their own heads and losses. ``Silence`` layers only
  stop their bottoms from being outputs.
* **Input.** A net takes one image tensor, declared by ``input:`` + ``input_shape`` or four
  ``input_dim``, or by an ``Input`` (also ``MemoryData``/``DummyData``) layer. Data layers that
  read files (``Data``, ``ImageData``, ``HDF5Data``, ``WindowData``) declare the input without
  its full shape, so it must be given; their other tops (labels) are not available. A net
  whose declared input is read by no layer while exactly one blob is read before any layer
  produces it takes that blob as its input - the AutoMTL model files declare
  ``input: "blob1"`` and read ``"data"``; the guess is logged as a warning and kept in
  ``gm.notes`` (``SuperModel.summary()`` shows it). A net that declares no input at all
  takes its one unproduced blob as the input, with the shape given by the caller.
* **Blobs.** Layers run in file order; a top with the name of a bottom is an in-place update
  and later layers read the new value. A bottom that no earlier layer produces is an error.
* **BatchNorm + Scale.** A Caffe ``BatchNorm`` (no learned scale and shift) whose only reader
  is a per-channel ``Scale`` with a bias becomes one ``nn.BatchNorm2d(affine=True)``: the
  Scale's scale and bias are the norm's weight and bias. Otherwise BatchNorm has
  ``affine=False`` and Scale is a module of its own. A BatchNorm written with PyTorch's
  arguments (the AutoMTL dialect: ``track_running_stats``, ``affine``, ``momentum``) follows
  PyTorch: affine unless ``affine: false``.
* **Outputs.** Every blob that no layer reads is an output of the net, in the order produced;
  one output is returned as a tensor, several as a tuple. A cut (``output=``, see :mod:`.cut`)
  names the outputs instead.
* **Names.** Modules and nodes are named after their layers, with characters other than
  letters, digits and ``_`` replaced by ``_`` (``conv1/7x7_s2`` -> ``conv1_7x7_s2``), made
  unique.
* **Shared weights.** Layers whose parameters carry the same names (``param { name: ... }``)
  call one module.
"""

from __future__ import annotations

import dataclasses
import difflib
import keyword
import logging
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import torch
import torch.fx
from torch import nn

from automtl.errors import (
    InvalidLayerError,
    MissingBottomError,
    MissingInputShapeError,
    PrototxtError,
    ShapeMismatchError,
)

from ..fx_frontend import STATIC_SHAPE_KEY as SHAPE_KEY
from .layers import BUILDERS, Blob, fusable_scale, is_pytorch_style_batchnorm, is_supported
from .cut import suggest_cut
from .limits import check_blob, check_parameters
from .parse import LayerSpec, NetSpec, unsupported_layers_error
from .schema import INPUT_TYPES, INPUT_TYPES_READING_FILES, SINK_TYPES, TRAINING_ONLY_TYPES

_UNSET = object()

logger = logging.getLogger("automtl.prototxt")

_RESERVED = set(dir(torch.fx.GraphModule)) | set(vars(nn.Module())) | {"net_name", "input_shape", "output_shapes", "output_names", "source_label"}


def sanitize(name: str) -> str:
    """A layer name as a Python identifier usable as a module attribute."""
    text = re.sub(r"[^0-9A-Za-z_]", "_", name) or "layer"
    if text[0].isdigit():
        text = "_" + text
    if keyword.iskeyword(text) or text in _RESERVED:
        text += "_"
    return text


@dataclasses.dataclass
class _Input:
    name: str
    shape: Optional[Tuple[int, ...]]
    #: the data layer declaring it, or None for a net-level `input:`
    layer: Optional[LayerSpec]


@dataclasses.dataclass
class _Version:
    """One value of a blob name (in-place layers give a name several values)."""

    blob: str
    kind: str  # "input", "label", "layer" or "unresolved"
    layer: Optional[LayerSpec] = None


class _Dataflow:
    """Which value every bottom reads and who reads every value (layers in file order)."""

    def __init__(self, layers: Sequence[LayerSpec], inputs: Sequence[_Input], labels: Dict[str, LayerSpec], label: str):
        self.versions: List[_Version] = []
        self.reads: Dict[int, List[int]] = {}
        self.writes: Dict[int, List[int]] = {}
        self.consumers: Dict[int, List[LayerSpec]] = {}
        self.unresolved: Dict[str, LayerSpec] = {}  # blob -> first layer reading it unproduced
        self.input_versions: Dict[str, int] = {}
        current: Dict[str, int] = {}

        def new(blob: str, kind: str, layer: Optional[LayerSpec] = None) -> int:
            self.versions.append(_Version(blob, kind, layer))
            current[blob] = len(self.versions) - 1
            return current[blob]

        for inp in inputs:
            self.input_versions[inp.name] = new(inp.name, "input", inp.layer)
        for blob, owner in labels.items():
            new(blob, "label", owner)
        for layer in layers:
            ids = []
            for blob in layer.bottoms:
                if blob not in current:
                    self.unresolved[blob] = layer
                    new(blob, "unresolved", layer)
                ids.append(current[blob])
                self.consumers.setdefault(current[blob], []).append(layer)
            self.reads[layer.index] = ids
            outs = []
            for top in layer.tops:
                if top in current and top not in layer.bottoms and self.versions[current[top]].kind != "unresolved":
                    earlier = self.versions[current[top]]
                    by = f"by {earlier.layer.where()}" if earlier.layer is not None else "as the net's input"
                    raise InvalidLayerError(
                        f"{label}: {layer.where()}: writes top '{top}', which is already produced {by}. "
                        "Caffe reuses a blob name only in place (as a bottom and a top of the same layer); "
                        "rename the top"
                    )
                outs.append(new(top, "layer", layer))
            self.writes[layer.index] = outs
        self.last: Dict[str, int] = current  # blob -> its last value

    def outputs(self, names: Sequence[str] = ()) -> List[int]:
        """The values the net returns: the last values of ``names`` (a cut), else every value
        that no layer reads, in the order produced."""
        if names:
            return [self.last[name] for name in names]
        return [i for i, v in enumerate(self.versions) if v.kind == "layer" and i not in self.consumers]


class _Context:
    """What layer builders use to add modules and nodes (see :mod:`.layers`)."""

    def __init__(self, label: str, fused: Dict[int, LayerSpec], automtl_dialect: bool = False):
        self.label = label
        #: the file is written in the AutoMTL dialect (Pooling rounds down unless told otherwise)
        self.automtl_dialect = automtl_dialect
        self.graph = torch.fx.Graph()
        self.root = nn.Module()
        self._fused = fused
        self._module_names: Set[str] = set()
        self._param_owner: Dict[str, Tuple[Tuple[str, ...], str, str, LayerSpec]] = {}
        self.parameters = 0  # of the modules added so far (see limits.py)
        #: (layer, module target) of every module a layer called, for writing .caffemodel files
        self.layer_modules: List[Tuple[LayerSpec, str]] = []

    def check_parameters(self, layer: LayerSpec, count: int) -> None:
        """Refuse, before allocating it, a layer of ``count`` parameters beyond the limits."""
        check_parameters(f"{self.label}: {layer.where()}", count, self.parameters)

    def fused_scale(self, layer: LayerSpec) -> Optional[LayerSpec]:
        return self._fused.get(layer.index)

    def _module_name(self, layer_name: str) -> str:
        base = sanitize(layer_name)
        name, i = base, 1
        while name in self._module_names:
            name, i = f"{base}_{i}", i + 1
        self._module_names.add(name)
        return name

    def add_module(self, layer: LayerSpec, module: nn.Module, initialise: Optional[Callable[[nn.Module], None]] = None) -> str:
        """Register ``module`` for ``layer`` (initialised by ``initialise``) and return its
        target; a layer naming the same parameters as an earlier one gets that one's module."""
        names = tuple(n for n in layer.param_names if n)
        if names:
            owners = {self._param_owner[n][1]: self._param_owner[n] for n in names if n in self._param_owner}
            if owners:
                key, target, signature, owner = next(iter(owners.values()))
                if len(owners) > 1 or key != names or len(names) != len(layer.param_names):
                    raise InvalidLayerError(
                        f"{self.label}: {layer.where()}: shares only some of {owner.where()}'s parameters "
                        f"({', '.join(names)} vs {', '.join(key)}); automtl shares whole layers: name all of "
                        "their parameters alike, or none"
                    )
                if signature != repr(module):
                    raise ShapeMismatchError(
                        f"{self.label}: {layer.where()}: shares its parameters with {owner.where()}, but the "
                        f"layers differ: {signature} vs {module!r}"
                    )
                self.layer_modules.append((layer, target))
                return target
        count = sum(p.numel() for p in module.parameters())
        self.check_parameters(layer, count)
        self.parameters += count
        if initialise is not None:
            initialise(module)
        target = self._module_name(layer.name)
        self.root.add_module(target, module)
        self.layer_modules.append((layer, target))
        if names and len(names) == len(layer.param_names):
            for n in names:
                self._param_owner[n] = (names, target, repr(module), layer)
        return target

    def call_module(self, target: str, args: Sequence[Any], name: str, shape: Any = _UNSET) -> torch.fx.Node:
        """A call of module ``target``; ``shape`` is its output's shape (None: not a tensor)
        when the node is not a layer's output (whose shape the layer's Blob gives)."""
        return _with_shape(self.graph.create_node("call_module", target, tuple(args), {}, name=sanitize(name)), shape)

    def call_function(
        self, fn: Callable[..., Any], args: Sequence[Any], kwargs: Optional[Dict[str, Any]] = None, name: Optional[str] = None, shape: Any = _UNSET
    ) -> torch.fx.Node:
        node = self.graph.create_node("call_function", fn, tuple(args), dict(kwargs or {}), name=sanitize(name) if name else None)
        return _with_shape(node, shape)


def _with_shape(node: torch.fx.Node, shape: Any) -> torch.fx.Node:
    if shape is not _UNSET:
        node.meta[SHAPE_KEY] = None if shape is None else torch.Size(shape)
    return node


def _shape_from_blob(blob_shape) -> Tuple[int, ...]:
    return tuple(int(d) for d in blob_shape.dim)


def _declared_inputs(net: NetSpec, layers: Sequence[LayerSpec]) -> Tuple[List[_Input], Dict[str, LayerSpec]]:
    inputs = [_Input(name, shape, None) for name, shape in net.inputs]
    labels: Dict[str, LayerSpec] = {}
    for layer in layers:
        if layer.type not in INPUT_TYPES:
            continue
        if layer.type == "Input":
            shapes = [_shape_from_blob(s) for s in layer.params("input_param").shape]
            if shapes and len(shapes) not in (1, len(layer.tops)):
                raise InvalidLayerError(
                    f"{net.label}: {layer.where()}: {len(layer.tops)} tops but {len(shapes)} shapes; give one shape, or one per top"
                )
            for i, top in enumerate(layer.tops):
                shape = (shapes[0] if len(shapes) == 1 else shapes[i]) if shapes else None
                inputs.append(_Input(top, shape, layer))
        elif layer.type == "DummyData":
            p = layer.params("dummy_data_param")
            shapes = [_shape_from_blob(s) for s in p.shape] or [
                (int(n), int(c), int(h), int(w)) for n, c, h, w in zip(p.num, p.channels, p.height, p.width)
            ]
            for i, top in enumerate(layer.tops):
                shape = shapes[0] if len(shapes) == 1 else (shapes[i] if i < len(shapes) else None)
                inputs.append(_Input(top, shape, layer))
        else:
            shape = None
            if layer.type == "MemoryData":
                p = layer.params("memory_data_param")
                shape = (int(p.batch_size), int(p.channels), int(p.height), int(p.width))
            if layer.tops:
                inputs.append(_Input(layer.tops[0], shape, layer))
            for top in layer.tops[1:]:
                labels[top] = layer
    return inputs, labels


def _missing_bottoms_error(net: NetSpec, flow: _Dataflow, layers: Sequence[LayerSpec]) -> MissingBottomError:
    produced = {}
    for layer in layers:
        for top in layer.tops:
            produced.setdefault(top, layer)
    known = sorted({v.blob for v in flow.versions if v.kind != "unresolved"})
    lines = []
    for blob, reader in flow.unresolved.items():
        text = f"{reader.where()} reads '{blob}'"
        later = produced.get(blob)
        if later is not None and later.index > reader.index:
            text += f", which only the later {later.where()} produces (Caffe runs layers in file order)"
        else:
            close = difflib.get_close_matches(blob, known, n=1)
            text += ", which no layer produces" + (f" (did you mean '{close[0]}'?)" if close else "")
        lines.append(text)
    return MissingBottomError(
        f"{net.label}: " + "; ".join(lines) + ". Every bottom must be the top of an earlier layer or a declared input"
    )


def _input_shape_error(net: NetSpec, name: str, inp: Optional[_Input], reader: Optional[LayerSpec]) -> MissingInputShapeError:
    fix = (
        "automtl.compile(..., example_input=torch.randn(1, 3, H, W)), or `automtl compile --input-shape 1,3,H,W`"
    )
    if inp is None:
        first = f" (first by {reader.where()})" if reader is not None else ""
        return MissingInputShapeError(
            f"{net.label}: the net declares no input, and blob '{name}' is read{first} but never produced. "
            f"Declare it (`input: \"{name}\"` with `input_shape {{ dim: 1 dim: 3 dim: 224 dim: 224 }}`, or an "
            f"Input layer), or give the shape: {fix}"
        )
    if inp.layer is not None and inp.layer.type in INPUT_TYPES_READING_FILES:
        p = inp.layer.params("transform_param")
        crop = p.crop_size or (inp.layer.params("data_param").crop_size if inp.layer.type == "Data" else 0)
        hint = f" (its transform_param crops to {crop}x{crop}: e.g. shape 1,3,{crop},{crop})" if crop else ""
        dense = inp.layer.params("dense_image_data_param")
        for verb, h, w in (("crops", dense.crop_height, dense.crop_width), ("resizes", dense.new_height, dense.new_width)):
            if inp.layer.type == "DenseImageData" and h and w and not hint:
                channels = 3 if dense.is_color else 1
                hint = f" (its dense_image_data_param {verb} to {h}x{w}: e.g. shape 1,{channels},{h},{w})"
        return MissingInputShapeError(
            f"{net.label}: the input '{name}' comes from {inp.layer.where()}, which reads a dataset and does "
            f"not declare the channel count{hint}. This is a training net; give the input shape: {fix}"
        )
    where = inp.layer.where() if inp.layer is not None else f"`input: \"{name}\"`"
    return MissingInputShapeError(
        f"{net.label}: the input '{name}' ({where}) has no shape. Add `input_shape {{ dim: N dim: C dim: H dim: W }}` "
        f"(or four input_dim values, or input_param {{ shape {{ ... }} }}), or give it: {fix}"
    )


def _choose_input(
    net: NetSpec, flow: _Dataflow, inputs: Sequence[_Input], layers: Sequence[LayerSpec], notes: List[str]
) -> Tuple[str, Optional[_Input], List[int]]:
    """The input blob's name (as the layers read it), its declaration, and the value ids that
    stand for it. A guess it makes is logged and added to ``notes``."""
    if len(inputs) > 1:
        described = ", ".join(f"'{i.name}'" + (f" {list(i.shape)}" if i.shape else "") for i in inputs)
        raise PrototxtError(
            f"{net.label}: the net declares {len(inputs)} inputs ({described}); automtl compiles backbones "
            "that take one image tensor. Keep one input and drop the others (or their layers)"
        )
    unresolved = list(flow.unresolved)
    if len(inputs) == 1:
        inp = inputs[0]
        vid = flow.input_versions[inp.name]
        if not unresolved:
            return inp.name, inp, [vid]
        if vid not in flow.consumers and len(unresolved) == 1:
            alias = unresolved[0]  # the AutoMTL dialect: declared "blob1", layers read "data"
            note = (
                f"{net.label}: the declared input '{inp.name}' is read by no layer, and '{alias}' is read "
                f"(first by {flow.unresolved[alias].where()}) but never produced: '{alias}' is taken as the input "
                "(the AutoMTL model files' convention). If a layer should produce it, fix that layer's top"
            )
            logger.warning("%s", note)
            notes.append(note)
            return alias, inp, [vid, _unresolved_id(flow, alias)]
        raise _missing_bottoms_error(net, flow, layers)
    if len(unresolved) == 1:
        return unresolved[0], None, [_unresolved_id(flow, unresolved[0])]
    if not unresolved:
        raise PrototxtError(f"{net.label}: the net has no input (no `input:`, no Input layer, and every layer's bottoms are produced)")
    raise _missing_bottoms_error(net, flow, layers)


def _unresolved_id(flow: _Dataflow, blob: str) -> int:
    return next(i for i, v in enumerate(flow.versions) if v.kind == "unresolved" and v.blob == blob)


def _check_shape(net: NetSpec, shape: Sequence[Any], what: str) -> Tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise MissingInputShapeError(f"{net.label}: {what} {shape!r} is not a sequence of integers") from None
    if not dims or any(d < 1 for d in dims) or any(int(d) != d for d in shape):
        raise MissingInputShapeError(f"{net.label}: {what} {list(shape)} must be positive integers (N, C, H, W)")
    return dims


def _fusion_plan(flow: _Dataflow, layers: Sequence[LayerSpec]) -> Dict[int, LayerSpec]:
    """BatchNorm layer index -> the Scale layer it absorbs."""
    fused: Dict[int, LayerSpec] = {}
    for layer in layers:
        if layer.type != "BatchNorm" or is_pytorch_style_batchnorm(layer) or len(layer.tops) != 1 or len(layer.bottoms) != 1:
            continue
        readers = flow.consumers.get(flow.writes[layer.index][0], [])
        if len(readers) == 1 and readers[0].type == "Scale" and fusable_scale(readers[0]):
            fused[layer.index] = readers[0]
    return fused


def build_graph_module(
    net: NetSpec, input_shape: Optional[Sequence[int]] = None, batch_size: Optional[int] = None
) -> torch.fx.GraphModule:
    """The ``GraphModule`` of ``net`` (see the module docstring for the rules). ``input_shape``
    (batch included) overrides the shape the net declares; ``batch_size`` just its batch."""
    layers = [l for l in net.layers if l.type not in TRAINING_ONLY_TYPES]
    unsupported = [l for l in layers if not is_supported(l.type)]
    if unsupported:
        raise unsupported_layers_error(net.label, unsupported, suggest_cut(net.layers, is_supported))
    inputs, labels = _declared_inputs(net, layers)
    compute = [l for l in layers if l.type not in INPUT_TYPES]
    if not compute:
        raise PrototxtError(f"{net.label}: the net has no layers to compute")
    flow = _Dataflow(compute, inputs, labels, net.label)
    notes: List[str] = []
    input_name, declared, input_ids = _choose_input(net, flow, inputs, compute, notes)
    if input_shape is not None:
        shape = _check_shape(net, input_shape, "the input shape")
    elif declared is not None and declared.shape is not None:
        shape = _check_shape(net, declared.shape, f"the declared shape of input '{declared.name}'")
    else:
        raise _input_shape_error(net, input_name, declared, flow.unresolved.get(input_name))
    if batch_size is not None and input_shape is None:
        shape = _check_shape(net, (batch_size, *shape[1:]), "the input shape")
    check_blob(f"{net.label}: the input '{input_name}'", shape, PrototxtError, "use a smaller input shape")

    fused = _fusion_plan(flow, compute)
    absorbed = {scale.index for scale in fused.values()}
    ctx = _Context(net.label, fused, net.automtl_dialect)
    placeholder = _with_shape(ctx.graph.placeholder(sanitize(input_name)), shape)
    env: Dict[int, Blob] = {vid: Blob(placeholder, shape) for vid in input_ids}
    for layer in compute:
        if layer.type in SINK_TYPES:
            if layer.tops:
                raise InvalidLayerError(
                    f"{net.label}: {layer.where()}: a {layer.type} layer only consumes its bottoms, but it "
                    f"declares top(s) {', '.join(repr(t) for t in layer.tops)}; remove them"
                )
            continue
        reads = flow.reads[layer.index]
        for vid in reads:
            version = flow.versions[vid]
            if version.kind == "label":
                raise PrototxtError(
                    f"{net.label}: {layer.where()} reads '{version.blob}', the labels of {version.layer.where()}; "
                    "a backbone sees only the image. Drop this layer (automtl's tasks define their own losses)"
                )
        if layer.index in absorbed:  # its scale and bias live in the BatchNorm before it
            env[flow.writes[layer.index][0]] = env[reads[0]]
            continue
        outputs = BUILDERS[layer.type](ctx, layer, [env[vid] for vid in reads])
        for vid, blob in zip(flow.writes[layer.index], outputs):
            check_blob(f"{net.label}: {layer.where()}: its output '{flow.versions[vid].blob}'", blob.shape)
            env[vid] = blob
            blob.node.meta.setdefault(SHAPE_KEY, torch.Size(blob.shape))
    out_ids = flow.outputs(net.outputs)
    if not out_ids:
        raise PrototxtError(f"{net.label}: every blob is read by another layer, so the net has no output")
    results = [env[vid] for vid in out_ids]
    output = ctx.graph.output(results[0].node if len(results) == 1 else tuple(b.node for b in results))
    _with_shape(output, results[0].shape if len(results) == 1 else None)
    ctx.graph.lint()
    gm = torch.fx.GraphModule(ctx.root, ctx.graph, class_name=sanitize(net.name))
    gm.net_name = net.name
    gm.input_shape = tuple(shape)
    gm.output_shapes = tuple(tuple(b.shape) for b in results)
    gm.output_names = tuple(flow.versions[vid].blob for vid in out_ids)
    gm.source_label = net.label
    gm.caffe_params = _caffe_params(ctx, fused)
    gm.notes = tuple(notes)  # guesses made while building (SuperModel.summary shows them)
    return gm


def _caffe_params(ctx: _Context, fused: Dict[int, LayerSpec]) -> Tuple[Tuple[str, str, str, str], ...]:
    """(layer name, layer type, module target, part) of every layer with parameters: what
    :func:`.caffemodel.write_caffemodel` writes. ``part`` says how the module holds the layer's
    blobs: "transpose" (InnerProduct with transpose: true), "has_scale" (a BatchNorm whose
    Scale is fused into it), "fused" (that Scale), or ""."""
    params = []
    for layer, target in ctx.layer_modules:
        if not any(True for _ in ctx.root.get_submodule(target).parameters()):
            continue
        part = ""
        if layer.type == "InnerProduct" and layer.params("inner_product_param").transpose:
            part = "transpose"
        scale = fused.get(layer.index)
        if scale is not None:
            part = "has_scale"
        params.append((layer.name, layer.type, target, part))
        if scale is not None:
            params.append((scale.name, scale.type, target, "fused"))
    return tuple(params)
