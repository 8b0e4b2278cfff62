"""Caffe layer types -> torch ops, with Caffe's semantics and shape rules.

Each builder takes the build context, the layer and its input blobs (fx node + shape), adds
the layer's nodes to the graph and returns its output blobs. Layers with parameters become
``call_module`` nodes of standard torch modules (``Conv2d``, ``ConvTranspose2d``,
``BatchNorm2d``, ``Linear``, ``PReLU``; ``Scale``/``Bias`` from :mod:`.modules` otherwise),
so the compiler's role rules apply to them; parameter-free layers are ``call_function``
nodes (or modules where the op keeps settings or a train/eval switch: pooling, dropout, LRN).

Output shapes are computed here with Caffe's formulas before anything runs, so that a layer
whose inputs do not fit is reported by name.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from automtl.errors import InvalidLayerError, PrototxtError, ShapeMismatchError

from . import functional as caffe_fn
from .modules import Bias, FrozenBatchNorm2d, Normalize, Scale
from .parse import LayerSpec
from .schema import AUTOMTL_DIALECT_FIELDS, INPUT_TYPES, SINK_TYPES, TRAINING_ONLY_TYPES
from .weights import fill, load_blob

Shape = Tuple[int, ...]


@dataclasses.dataclass
class Blob:
    """A value flowing between layers: its fx node and its shape (batch included)."""

    node: torch.fx.Node
    shape: Shape


def _f(value: float) -> float:
    """A float32 field as the decimal written in the file (1e-05, not 9.99999974e-06)."""
    return float(f"{value:.7g}")


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def _error(ctx, cls: Type[PrototxtError], layer: LayerSpec, text: str) -> PrototxtError:
    return cls(f"{ctx.label}: {layer.where()}: {text}")


def _count(ctx, layer: LayerSpec, bottoms: Sequence[Blob], n_bottoms: Optional[int], n_tops: Optional[int]) -> None:
    if n_bottoms is not None and len(bottoms) != n_bottoms:
        raise _error(ctx, InvalidLayerError, layer, f"takes {n_bottoms} bottom(s), got {len(bottoms)}")
    if n_tops is not None and len(layer.tops) != n_tops:
        raise _error(ctx, InvalidLayerError, layer, f"produces {n_tops} top(s), got {len(layer.tops)}")


def _axis(ctx, layer: LayerSpec, axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < rank:
        raise _error(ctx, InvalidLayerError, layer, f"{what} {axis} is out of range for a {rank}-D input")
    return axis % rank


def _numel(shape: Sequence[int]) -> int:
    return int(math.prod(shape))


# -- unary, parameter-free -----------------------------------------------------------------


def _unary(fn: Callable[..., Any], kwargs_of: Callable[[LayerSpec], Dict[str, Any]] = lambda layer: {}):
    """A same-shape layer that maps each bottom to its top (Caffe allows any number of
    bottom/top pairs, usually one)."""

    def build(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
        if len(bottoms) != len(layer.tops) or not bottoms:
            raise _error(ctx, InvalidLayerError, layer, f"needs as many tops as bottoms (got {len(bottoms)} and {len(layer.tops)})")
        kwargs = kwargs_of(layer)
        return [
            Blob(ctx.call_function(fn, (b.node,), kwargs, name=_node_name(layer, i)), b.shape)
            for i, b in enumerate(bottoms)
        ]

    return build


def _node_name(layer: LayerSpec, i: int) -> str:
    return layer.name if i == 0 else f"{layer.name}_{i}"


def _relu_kwargs(layer: LayerSpec) -> Dict[str, Any]:
    slope = _f(layer.params("relu_param").negative_slope)
    return {"negative_slope": slope} if slope else {}


def _build_relu(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    fn = F.leaky_relu if _relu_kwargs(layer) else F.relu
    return _unary(fn, _relu_kwargs)(ctx, layer, bottoms)


def _build_clip(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    p = layer.params("clip_param")
    if not (p.HasField("min") and p.HasField("max")):
        raise _error(ctx, InvalidLayerError, layer, "clip_param needs both min and max")
    if p.min > p.max:
        raise _error(ctx, InvalidLayerError, layer, f"clip_param min {_f(p.min)} is above max {_f(p.max)}")
    return _unary(torch.clamp, lambda l: {"min": _f(p.min), "max": _f(p.max)})(ctx, layer, bottoms)


def _build_power(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    p = layer.params("power_param")
    kw = {"exponent": _f(p.power), "scale": _f(p.scale), "shift": _f(p.shift)}
    return _unary(caffe_fn.power, lambda l: kw)(ctx, layer, bottoms)


def _exp_log(fn: Callable[..., Any], field: str):
    def build(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
        p = layer.params(field)
        if p.base != -1 and p.base <= 0:
            raise _error(ctx, InvalidLayerError, layer, f"base must be positive (or -1 for e), got {_f(p.base)}")
        kw = {"base": _f(p.base), "scale": _f(p.scale), "shift": _f(p.shift)}
        return _unary(fn, lambda l: kw)(ctx, layer, bottoms)

    return build


def _build_dropout(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    _count(ctx, layer, bottoms, 1, 1)
    ratio = _f(layer.params("dropout_param").dropout_ratio)
    if not 0.0 <= ratio < 1.0:
        raise _error(ctx, InvalidLayerError, layer, f"dropout_ratio must be in [0, 1), got {ratio}")
    target = ctx.add_module(layer, nn.Dropout(ratio))
    return [Blob(ctx.call_module(target, (bottoms[0].node,), name=layer.name), bottoms[0].shape)]


def _build_softmax(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    _count(ctx, layer, bottoms, 1, 1)
    x = bottoms[0]
    axis = _axis(ctx, layer, layer.params("softmax_param").axis, len(x.shape))
    return [Blob(ctx.call_function(F.softmax, (x.node,), {"dim": axis}, name=layer.name), x.shape)]


# -- convolutions ----------------------------------------------------------------------------


def _per_axis(ctx, layer, values, hw: Optional[Tuple[int, int]], n: int, default: Optional[int], what: str) -> List[int]:
    short = what.replace("_size", "")  # kernel_size -> kernel_h / kernel_w
    if hw is not None:
        if n != 2:
            raise _error(ctx, InvalidLayerError, layer, f"{short}_h/{short}_w are for 2-D inputs; this input has {n} spatial axes")
        return [int(hw[0]), int(hw[1])]
    values = [int(v) for v in values]
    if not values:
        if default is None:
            raise _error(ctx, InvalidLayerError, layer, f"{what} is not given (write {what}: N, or {short}_h and {short}_w)")
        return [default] * n
    if len(values) == 1:
        return values * n
    if len(values) == n:
        return values
    raise _error(ctx, InvalidLayerError, layer, f"{what} has {len(values)} values; give 1 or {n} (one per spatial axis)")


def _hw(p, name: str) -> Optional[Tuple[int, int]]:
    h, w = f"{name}_h", f"{name}_w"
    if p.HasField(h) or p.HasField(w):
        return getattr(p, h), getattr(p, w)
    return None


def _conv_settings(ctx, layer: LayerSpec, x: Blob):
    p = layer.params("convolution_param")
    rank = len(x.shape)
    if _axis(ctx, layer, p.axis, rank) != 1:
        raise _error(ctx, InvalidLayerError, layer, "automtl supports convolutions over axis 1 (channels) only")
    n = rank - 2
    if n not in (1, 2, 3):
        raise _error(ctx, InvalidLayerError, layer, f"needs a 3-D to 5-D input (N, C, spatial...), got {_fmt(x.shape)}")
    if not p.HasField("num_output") or p.num_output == 0:
        raise _error(ctx, InvalidLayerError, layer, "convolution_param needs num_output")
    kernel_hw = _hw(p, "kernel")
    if kernel_hw is not None and not (p.HasField("kernel_h") and p.HasField("kernel_w")):
        raise _error(ctx, InvalidLayerError, layer, "give both kernel_h and kernel_w")
    kernel = _per_axis(ctx, layer, p.kernel_size, kernel_hw, n, None, "kernel_size")
    pad = _per_axis(ctx, layer, p.pad, _hw(p, "pad"), n, 0, "pad")
    stride = _per_axis(ctx, layer, p.stride, _hw(p, "stride"), n, 1, "stride")
    dilation = _per_axis(ctx, layer, p.dilation, None, n, 1, "dilation")
    hole = _hole(ctx, layer, p, n)
    if hole is not None:
        if p.dilation and list(dilation) != hole:
            raise _error(ctx, InvalidLayerError, layer, f"dilation {dilation} and hole {hole} disagree; keep one of them")
        dilation = hole
    if min(kernel) < 1 or min(stride) < 1 or min(dilation) < 1:
        raise _error(ctx, InvalidLayerError, layer, "kernel_size, stride and dilation must be at least 1")
    channels, group, out = x.shape[1], int(p.group), int(p.num_output)
    if group < 1 or channels % group or out % group:
        raise _error(
            ctx, ShapeMismatchError, layer,
            f"group {group} must divide both the input channels ({channels}) and num_output ({out})",
        )
    return p, n, channels, out, group, kernel, pad, stride, dilation


def _hole(ctx, layer: LayerSpec, p, n: int) -> Optional[List[int]]:
    """DeepLab-v1's ``hole`` (``hole_h``/``hole_w``): the dilation under its earlier name."""
    if not (p.HasField("hole") or p.HasField("hole_h") or p.HasField("hole_w")):
        return None
    if n != 2:
        raise _error(ctx, InvalidLayerError, layer, f"hole is for 2-D convolutions; this input has {n} spatial axes")
    base = int(p.hole) if p.HasField("hole") else 1
    hole = [int(p.hole_h) if p.HasField("hole_h") else base, int(p.hole_w) if p.HasField("hole_w") else base]
    if min(hole) < 1:
        raise _error(ctx, InvalidLayerError, layer, f"hole must be at least 1, got {hole}")
    return hole


def _device_for(p, weight_field: str) -> Optional[str]:
    """Where to create a conv/linear module: on the meta device (no memory, no init) when the
    file gives a weight filler, which would overwrite torch's default initialisation anyway."""
    return "meta" if p.HasField(weight_field) else None


def _default_bias_init(module: nn.Module) -> None:
    """torch's default bias initialisation for conv and linear layers: U(-1/sqrt(fan_in), ...)."""
    fan_in = _numel(module.weight.shape[1:])
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    with torch.no_grad():
        module.bias.uniform_(-bound, bound)


def _fill_and_load(ctx, layer: LayerSpec, module: nn.Module, weight_field: str, bias_field: str, p, transpose_ip: bool = False) -> None:
    where = f"{ctx.label}: {layer.where()}"
    if module.weight.is_meta:  # created without memory (see _device_for): allocate, then fill
        module.to_empty(device="cpu")
        if module.bias is not None and not p.HasField(bias_field):
            _default_bias_init(module)
    if p.HasField(weight_field):
        fill(module.weight, getattr(p, weight_field), where)
    if module.bias is not None and p.HasField(bias_field):
        fill(module.bias, getattr(p, bias_field), where)
    blobs = layer.blobs
    if blobs:
        transform = (lambda t: t.reshape(-1, module.weight.shape[0]).t()) if transpose_ip else None
        stored = tuple(reversed(module.weight.shape)) if transpose_ip else None
        load_blob(module.weight, blobs[0], where, "weight", transform, stored)
        if len(blobs) > 1:
            if module.bias is None:
                raise _error(ctx, ShapeMismatchError, layer, "stores a bias blob but has bias_term: false")
            load_blob(module.bias, blobs[1], where, "bias")


def _apply_module(ctx, layer: LayerSpec, target: str, bottoms: List[Blob], shape_of: Callable[[Blob], Shape]) -> List[Blob]:
    if len(bottoms) != len(layer.tops) or not bottoms:
        raise _error(ctx, InvalidLayerError, layer, f"needs as many tops as bottoms (got {len(bottoms)} and {len(layer.tops)})")
    out = []
    for i, b in enumerate(bottoms):
        if b.shape[1:] != bottoms[0].shape[1:]:
            raise _error(ctx, ShapeMismatchError, layer, f"its bottoms share the weights but have shapes {_fmt(bottoms[0].shape)} and {_fmt(b.shape)}")
        out.append(Blob(ctx.call_module(target, (b.node,), name=_node_name(layer, i)), shape_of(b)))
    return out


_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_DECONV = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def _build_convolution(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    if not bottoms:
        raise _error(ctx, InvalidLayerError, layer, "has no bottom")
    p, n, channels, out, group, kernel, pad, stride, dilation = _conv_settings(ctx, layer, bottoms[0])

    def shape_of(b: Blob) -> Shape:
        spatial = []
        for size, k, pd, s, d in zip(b.shape[2:], kernel, pad, stride, dilation):
            o = (size + 2 * pd - d * (k - 1) - 1) // s + 1
            if o < 1:
                raise _error(
                    ctx, ShapeMismatchError, layer,
                    f"its input {_fmt(b.shape)} is smaller than the (dilated) kernel {kernel} with padding {pad}",
                )
            spatial.append(o)
        return (b.shape[0], out, *spatial)

    shape_of(bottoms[0])  # report a too-small input before building anything
    ctx.check_parameters(layer, out * (channels // group) * _numel(kernel) + (out if p.bias_term else 0))
    module = _CONV[n](channels, out, kernel, stride, pad, dilation, group, bool(p.bias_term), device=_device_for(p, "weight_filler"))
    target = ctx.add_module(layer, module, lambda m: _fill_and_load(ctx, layer, m, "weight_filler", "bias_filler", p))
    return _apply_module(ctx, layer, target, bottoms, shape_of)


def _build_deconvolution(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    if not bottoms:
        raise _error(ctx, InvalidLayerError, layer, "has no bottom")
    p, n, channels, out, group, kernel, pad, stride, dilation = _conv_settings(ctx, layer, bottoms[0])

    def shape_of(b: Blob) -> Shape:
        spatial = []
        for size, k, pd, s, d in zip(b.shape[2:], kernel, pad, stride, dilation):
            o = s * (size - 1) + d * (k - 1) + 1 - 2 * pd
            if o < 1:
                raise _error(ctx, ShapeMismatchError, layer, f"the padding {pad} leaves no output for input {_fmt(b.shape)}")
            spatial.append(o)
        return (b.shape[0], out, *spatial)

    shape_of(bottoms[0])
    ctx.check_parameters(layer, channels * (out // group) * _numel(kernel) + (out if p.bias_term else 0))
    module = _DECONV[n](channels, out, kernel, stride, pad, 0, group, bool(p.bias_term), dilation, device=_device_for(p, "weight_filler"))
    target = ctx.add_module(layer, module, lambda m: _fill_and_load(ctx, layer, m, "weight_filler", "bias_filler", p))
    return _apply_module(ctx, layer, target, bottoms, shape_of)


def _build_inner_product(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    _count(ctx, layer, bottoms, 1, 1)
    x = bottoms[0]
    p = layer.params("inner_product_param")
    if not p.HasField("num_output") or p.num_output == 0:
        raise _error(ctx, InvalidLayerError, layer, "inner_product_param needs num_output")
    axis = _axis(ctx, layer, p.axis, len(x.shape))
    features = _numel(x.shape[axis:])
    ctx.check_parameters(layer, (features + (1 if p.bias_term else 0)) * int(p.num_output))
    module = nn.Linear(features, int(p.num_output), bool(p.bias_term), device=_device_for(p, "weight_filler"))
    target = ctx.add_module(
        layer, module, lambda m: _fill_and_load(ctx, layer, m, "weight_filler", "bias_filler", p, transpose_ip=p.transpose)
    )
    node = x.node
    if len(x.shape) > axis + 1:  # Caffe flattens every axis from `axis` on
        node = ctx.call_function(torch.flatten, (node, axis), name=f"{layer.name}_flatten", shape=(*x.shape[:axis], features))
    return [Blob(ctx.call_module(target, (node,), name=layer.name), (*x.shape[:axis], int(p.num_output)))]


# -- normalisation and per-channel parameters ----------------------------------------------


_BN = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
_DIALECT_BN_FIELDS = AUTOMTL_DIALECT_FIELDS["batch_norm_param"]


def is_pytorch_style_batchnorm(layer: LayerSpec) -> bool:
    """A BatchNorm written in the AutoMTL dialect (PyTorch's arguments): it has its own learned
    scale and shift, so it is never fused with a following Scale."""
    p = layer.params("batch_norm_param")
    return any(p.HasField(f) for f in _DIALECT_BN_FIELDS)


def fusable_scale(layer: LayerSpec) -> bool:
    """A Scale that a Caffe BatchNorm right before it can absorb: one bottom, a learned
    per-channel scale and a bias."""
    p = layer.params("scale_param")
    return len(layer.bottoms) == 1 and len(layer.tops) == 1 and p.axis == 1 and p.num_axes == 1 and bool(p.bias_term)


def _build_batch_norm(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    _count(ctx, layer, bottoms, 1, 1)
    x = bottoms[0]
    if len(x.shape) not in _BN:
        raise _error(ctx, InvalidLayerError, layer, f"needs a 2-D to 5-D input (N, C, ...), got {_fmt(x.shape)}")
    p = layer.params("batch_norm_param")
    dialect = is_pytorch_style_batchnorm(layer)
    scale_layer: Optional[LayerSpec] = ctx.fused_scale(layer)
    if p.HasField("momentum"):
        momentum = _f(p.momentum)
    elif p.HasField("moving_average_fraction"):
        momentum = round(1.0 - _f(p.moving_average_fraction), 7)
    else:
        momentum = 0.1
    if not (math.isfinite(p.eps) and p.eps >= 0):
        raise _error(ctx, InvalidLayerError, layer, f"eps must be a finite number, 0 or more; got {_f(p.eps)}")
    affine = (p.affine if p.HasField("affine") else True) if dialect else scale_layer is not None
    track = p.track_running_stats if p.HasField("track_running_stats") else True
    module = _BN[len(x.shape)](x.shape[1], eps=_f(p.eps), momentum=momentum, affine=affine, track_running_stats=track)

    def initialise(m: nn.Module) -> None:
        where = f"{ctx.label}: {layer.where()}"
        blobs = layer.blobs
        if blobs:
            if len(blobs) < 3 or not track:
                raise _error(ctx, ShapeMismatchError, layer, "stores blobs, but a BatchNorm's are mean, variance and their scale factor (3)")
            factor = float(_blob_scalar(ctx, layer, blobs[2]))
            inv = 0.0 if factor == 0 else 1.0 / factor
            load_blob(m.running_mean, blobs[0], where, "mean", lambda t: t * inv)
            load_blob(m.running_var, blobs[1], where, "variance", lambda t: t * inv)
            if len(blobs) > 3 and affine and scale_layer is None:
                load_blob(m.weight, blobs[3], where, "weight")
                if len(blobs) > 4:
                    load_blob(m.bias, blobs[4], where, "bias")
        if scale_layer is not None:
            sp = scale_layer.params("scale_param")
            swhere = f"{ctx.label}: {scale_layer.where()}"
            if sp.HasField("filler"):
                fill(m.weight, sp.filler, swhere)
            if sp.HasField("bias_filler"):
                fill(m.bias, sp.bias_filler, swhere)
            if scale_layer.blobs:
                load_blob(m.weight, scale_layer.blobs[0], swhere, "scale")
                if len(scale_layer.blobs) > 1:
                    load_blob(m.bias, scale_layer.blobs[1], swhere, "bias")

    target = ctx.add_module(layer, module, initialise)
    return [Blob(ctx.call_module(target, (x.node,), name=layer.name), x.shape)]


def _blob_scalar(ctx, layer: LayerSpec, blob) -> float:
    from .weights import blob_tensor

    value = blob_tensor(blob, f"{ctx.label}: {layer.where()}")
    if value.numel() != 1:
        raise _error(ctx, ShapeMismatchError, layer, f"its third blob (the scale factor) must hold 1 value, it holds {value.numel()}")
    return float(value.reshape(()))


def _param_axes(ctx, layer: LayerSpec, shape: Shape, axis: int, num_axes: int) -> Tuple[Shape, int]:
    rank = len(shape)
    axis = _axis(ctx, layer, axis, rank)
    if num_axes == -1:
        num_axes = rank - axis
    if num_axes < 0 or axis + num_axes > rank:
        raise _error(ctx, InvalidLayerError, layer, f"num_axes {num_axes} from axis {axis} does not fit a {rank}-D input")
    return tuple(shape[axis : axis + num_axes]), rank - axis - num_axes


def _two_bottom_operand(ctx, layer: LayerSpec, x: Blob, other: Blob, axis: int) -> int:
    """Check that ``other`` lines up with ``x`` from ``axis`` on (Caffe's rule for the second
    bottom of Scale and Bias); returns the normalised axis."""
    rank = len(x.shape)
    axis = _axis(ctx, layer, axis, rank)
    if len(other.shape) and tuple(x.shape[axis : axis + len(other.shape)]) != tuple(other.shape):
        raise _error(
            ctx, ShapeMismatchError, layer,
            f"its second bottom {_fmt(other.shape)} must match the first bottom {_fmt(x.shape)} on the "
            f"axes from {axis} on",
        )
    return axis


def _build_scale(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    p = layer.params("scale_param")
    if len(bottoms) not in (1, 2):
        raise _error(ctx, InvalidLayerError, layer, f"takes 1 or 2 bottoms, got {len(bottoms)}")
    _count(ctx, layer, bottoms, None, 1)
    x = bottoms[0]
    where = f"{ctx.label}: {layer.where()}"
    if len(bottoms) == 2:
        axis = _two_bottom_operand(ctx, layer, x, bottoms[1], p.axis)
        node = ctx.call_function(caffe_fn.scale_by, (x.node, bottoms[1].node, axis), name=layer.name, shape=x.shape)
        if p.bias_term:
            trailing = len(x.shape) - axis - len(bottoms[1].shape)

            def init_bias(m: nn.Module) -> None:
                if p.HasField("bias_filler"):
                    fill(m.bias, p.bias_filler, where)
                if layer.blobs:
                    load_blob(m.bias, layer.blobs[0], where, "bias")

            target = ctx.add_module(layer, Bias(bottoms[1].shape, trailing), init_bias)
            node = ctx.call_module(target, (node,), name=f"{layer.name}_bias", shape=x.shape)
        return [Blob(node, x.shape)]
    shape, trailing = _param_axes(ctx, layer, x.shape, p.axis, p.num_axes)

    def initialise(m: nn.Module) -> None:
        if p.HasField("filler"):
            fill(m.weight, p.filler, where)
        if m.bias is not None and p.HasField("bias_filler"):
            fill(m.bias, p.bias_filler, where)
        if layer.blobs:
            load_blob(m.weight, layer.blobs[0], where, "scale")
            if len(layer.blobs) > 1 and m.bias is not None:
                load_blob(m.bias, layer.blobs[1], where, "bias")

    target = ctx.add_module(layer, Scale(shape, trailing, bool(p.bias_term)), initialise)
    return [Blob(ctx.call_module(target, (x.node,), name=layer.name), x.shape)]


def _build_bias(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    p = layer.params("bias_param")
    if len(bottoms) not in (1, 2):
        raise _error(ctx, InvalidLayerError, layer, f"takes 1 or 2 bottoms, got {len(bottoms)}")
    _count(ctx, layer, bottoms, None, 1)
    x = bottoms[0]
    if len(bottoms) == 2:
        axis = _two_bottom_operand(ctx, layer, x, bottoms[1], p.axis)
        return [Blob(ctx.call_function(caffe_fn.bias_by, (x.node, bottoms[1].node, axis), name=layer.name), x.shape)]
    shape, trailing = _param_axes(ctx, layer, x.shape, p.axis, p.num_axes)
    where = f"{ctx.label}: {layer.where()}"

    def initialise(m: nn.Module) -> None:
        if p.HasField("filler"):
            fill(m.bias, p.filler, where)
        if layer.blobs:
            load_blob(m.bias, layer.blobs[0], where, "bias")

    target = ctx.add_module(layer, Bias(shape, trailing), initialise)
    return [Blob(ctx.call_module(target, (x.node,), name=layer.name), x.shape)]


def _build_prelu(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    x = _channel_input(ctx, layer, bottoms)
    p = layer.params("prelu_param")
    module = nn.PReLU(1 if p.channel_shared else x.shape[1], init=0.25)
    return _shape_keeping_module(ctx, layer, x, module, p.filler if p.HasField("filler") else None, "slopes")


def _channel_input(ctx, layer: LayerSpec, bottoms: List[Blob]) -> Blob:
    """The one bottom of a layer whose weights run along the channel axis (axis 1)."""
    _count(ctx, layer, bottoms, 1, 1)
    x = bottoms[0]
    if len(x.shape) < 2:
        raise _error(ctx, InvalidLayerError, layer, f"needs an input with a channel axis, got {_fmt(x.shape)}")
    return x


def _image_input(ctx, layer: LayerSpec, bottoms: List[Blob], verb: str) -> Blob:
    """The one bottom of a layer that works on images, (N, C, H, W); ``verb`` says what the
    layer does with it in the error ("resizes")."""
    _count(ctx, layer, bottoms, 1, 1)
    x = bottoms[0]
    if len(x.shape) != 4:
        raise _error(ctx, InvalidLayerError, layer, f"{verb} (N, C, H, W) inputs, got {_fmt(x.shape)}")
    return x


def _shape_keeping_module(ctx, layer: LayerSpec, x: Blob, module: nn.Module, filler: Any, blob: str) -> List[Blob]:
    """Add ``module`` (one ``weight``, output shaped like its input) called on ``x``; its weight
    comes from ``filler`` when one is given and from the layer's first blob when it has one
    (``blob`` names it in errors)."""
    where = f"{ctx.label}: {layer.where()}"

    def initialise(m: nn.Module) -> None:
        if filler is not None:
            fill(m.weight, filler, where)
        if layer.blobs:
            load_blob(m.weight, layer.blobs[0], where, blob)

    target = ctx.add_module(layer, module, initialise)
    return [Blob(ctx.call_module(target, (x.node,), name=layer.name), x.shape)]


def _build_lrn(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    _count(ctx, layer, bottoms, 1, 1)
    x = bottoms[0]
    p = layer.params("lrn_param")
    size = int(p.local_size)
    if size % 2 == 0:
        raise _error(ctx, InvalidLayerError, layer, f"local_size must be odd (Caffe's rule), got {size}")
    region = p.DESCRIPTOR.fields_by_name["norm_region"].enum_type.values_by_number[p.norm_region].name
    if region == "ACROSS_CHANNELS":
        if len(x.shape) < 3:
            raise _error(ctx, InvalidLayerError, layer, f"needs an (N, C, ...) input, got {_fmt(x.shape)}")
        target = ctx.add_module(layer, nn.LocalResponseNorm(size, _f(p.alpha), _f(p.beta), _f(p.k)))
        return [Blob(ctx.call_module(target, (x.node,), name=layer.name), x.shape)]
    if len(x.shape) != 4:
        raise _error(ctx, InvalidLayerError, layer, f"WITHIN_CHANNEL needs an (N, C, H, W) input, got {_fmt(x.shape)}")
    kwargs = {"size": size, "alpha": _f(p.alpha), "beta": _f(p.beta)}
    return [Blob(ctx.call_function(caffe_fn.lrn_within_channel, (x.node,), kwargs, name=layer.name), x.shape)]


# -- pooling -------------------------------------------------------------------------------


def _pool_round_mode(ctx, layer: LayerSpec, p) -> bool:
    """True for CEIL rounding (Caffe's default; FLOOR in a file of the AutoMTL dialect, whose
    schema defaults to it)."""
    if p.HasField("round_mode") or not getattr(ctx, "automtl_dialect", False):
        ceil = p.round_mode == p.CEIL
    else:
        ceil = False
    if p.HasField("ceil_mode"):
        if p.HasField("round_mode") and ceil != p.ceil_mode:
            raise _error(ctx, InvalidLayerError, layer, "round_mode and ceil_mode disagree; keep one of them")
        ceil = bool(p.ceil_mode)
    return ceil


def caffe_pooled_size(size: int, kernel: int, pad: int, stride: int, ceil: bool) -> int:
    """Caffe's pooling output size: rounded up (or down), and with padding the last window
    must start inside the padded input."""
    span = (size + 2 * pad - kernel) / stride
    out = (math.ceil(span) if ceil else math.floor(span)) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _build_pooling(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    _count(ctx, layer, bottoms, 1, None)
    x = bottoms[0]
    if len(x.shape) != 4:
        raise _error(ctx, InvalidLayerError, layer, f"Caffe pools (N, C, H, W) inputs, got {_fmt(x.shape)}")
    p = layer.params("pooling_param")
    method = p.DESCRIPTOR.fields_by_name["pool"].enum_type.values_by_number[p.pool].name
    if method == "STOCHASTIC":
        raise _error(ctx, InvalidLayerError, layer, "STOCHASTIC pooling has no torch equivalent; use MAX or AVE")
    n_tops = len(layer.tops)
    if n_tops not in (1, 2) or (n_tops == 2 and method != "MAX"):
        raise _error(ctx, InvalidLayerError, layer, "produces 1 top, or 2 for MAX pooling (values and argmax mask)")
    if p.global_pooling:
        if n_tops == 2:
            raise _error(ctx, InvalidLayerError, layer, "global pooling has no mask top")
        module = nn.AdaptiveMaxPool2d(1) if method == "MAX" else nn.AdaptiveAvgPool2d(1)
        target = ctx.add_module(layer, module)
        return [Blob(ctx.call_module(target, (x.node,), name=layer.name), (*x.shape[:2], 1, 1))]
    kernel_hw = _hw(p, "kernel")
    if kernel_hw is not None:
        if not (p.HasField("kernel_h") and p.HasField("kernel_w")):
            raise _error(ctx, InvalidLayerError, layer, "give both kernel_h and kernel_w")
        kernel = list(kernel_hw)
    elif p.HasField("kernel_size"):
        kernel = [p.kernel_size, p.kernel_size]
    else:
        raise _error(ctx, InvalidLayerError, layer, "pooling_param needs kernel_size (or global_pooling: true)")
    pad = list(_hw(p, "pad") or (p.pad, p.pad))
    stride_hw = _hw(p, "stride")
    stride = list(stride_hw) if stride_hw is not None else [p.stride, p.stride]
    if min(kernel) < 1 or min(stride) < 1:
        raise _error(ctx, InvalidLayerError, layer, "kernel_size and stride must be at least 1")
    for k, pd in zip(kernel, pad):
        if pd >= k:
            raise _error(ctx, InvalidLayerError, layer, f"pad {pd} must be smaller than the kernel {k} (Caffe's rule)")
        if 2 * pd > k:
            raise _error(
                ctx, InvalidLayerError, layer,
                f"pad {pd} is more than half the kernel {k}, which torch's pooling cannot do; pad the "
                "input with a Convolution-free layer or use a smaller pad",
            )
    ceil = _pool_round_mode(ctx, layer, p)
    spatial = []
    for size, k, pd, s in zip(x.shape[2:], kernel, pad, stride):
        if size + 2 * pd < k:
            raise _error(ctx, ShapeMismatchError, layer, f"its input {_fmt(x.shape)} is smaller than the kernel {kernel}")
        caffe = caffe_pooled_size(size, k, pd, s, ceil)
        torch_size = math.floor((size + 2 * pd - k + (s - 1 if ceil else 0)) / s) + 1
        if ceil and (torch_size - 1) * s >= size + pd:
            torch_size -= 1
        if caffe != torch_size:
            raise _error(
                ctx, InvalidLayerError, layer,
                f"with stride {s} > kernel {k} and CEIL rounding Caffe's last window lies outside the input; "
                "use round_mode: FLOOR",
            )
        spatial.append(caffe)
    if method == "MAX":
        module = nn.MaxPool2d(kernel, stride, pad, ceil_mode=ceil, return_indices=n_tops == 2)
    else:
        module = nn.AvgPool2d(kernel, stride, pad, ceil_mode=ceil, count_include_pad=True)
    target = ctx.add_module(layer, module)
    out_shape = (*x.shape[:2], *spatial)
    node = ctx.call_module(target, (x.node,), name=layer.name, shape=None if n_tops == 2 else out_shape)
    if n_tops == 1:
        return [Blob(node, out_shape)]
    values = ctx.call_function(operator.getitem, (node, 0), name=f"{layer.name}_values")
    mask = ctx.call_function(operator.getitem, (node, 1), name=f"{layer.name}_mask")
    return [Blob(values, out_shape), Blob(mask, out_shape)]


# -- combining and reshaping ----------------------------------------------------------------


def _build_eltwise(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    _count(ctx, layer, bottoms, None, 1)
    if len(bottoms) < 2:
        raise _error(ctx, InvalidLayerError, layer, f"combines at least 2 bottoms, got {len(bottoms)}")
    for b, name in zip(bottoms[1:], layer.bottoms[1:]):
        if b.shape != bottoms[0].shape:
            raise _error(
                ctx, ShapeMismatchError, layer,
                f"its bottoms must have the same shape, but '{layer.bottoms[0]}' is {_fmt(bottoms[0].shape)} and "
                f"'{name}' is {_fmt(b.shape)}",
            )
    p = layer.params("eltwise_param")
    op = p.DESCRIPTOR.fields_by_name["operation"].enum_type.values_by_number[p.operation].name
    coeffs = [_f(c) for c in p.coeff]
    if coeffs and op != "SUM":
        raise _error(ctx, InvalidLayerError, layer, "coeff applies to operation SUM only")
    if coeffs and len(coeffs) != len(bottoms):
        raise _error(ctx, InvalidLayerError, layer, f"has {len(coeffs)} coeff values for {len(bottoms)} bottoms; give one per bottom")
    last = len(bottoms) - 1

    def name(i: int) -> str:  # the final node carries the layer's name
        return layer.name if i == last else f"{layer.name}_{i}"

    acc = bottoms[0].node
    if op == "SUM" and coeffs and coeffs[0] != 1.0:
        acc = ctx.call_function(operator.mul, (acc, coeffs[0]), name=f"{layer.name}_scaled", shape=bottoms[0].shape)
    for i, b in enumerate(bottoms[1:], start=1):
        if op == "SUM":
            c = coeffs[i] if coeffs else 1.0
            kwargs = {} if c == 1.0 else {"alpha": c}
            acc = ctx.call_function(torch.add, (acc, b.node), kwargs, name=name(i), shape=b.shape)
        elif op == "PROD":
            acc = ctx.call_function(torch.mul, (acc, b.node), name=name(i), shape=b.shape)
        else:
            acc = ctx.call_function(torch.maximum, (acc, b.node), name=name(i), shape=b.shape)
    return [Blob(acc, bottoms[0].shape)]


def _legacy_axis(p, legacy: str) -> int:
    if p.HasField("axis") or not p.HasField(legacy):
        return p.axis
    return getattr(p, legacy)


def _build_concat(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    _count(ctx, layer, bottoms, None, 1)
    if not bottoms:
        raise _error(ctx, InvalidLayerError, layer, "has no bottom")
    rank = len(bottoms[0].shape)
    axis = _axis(ctx, layer, _legacy_axis(layer.params("concat_param"), "concat_dim"), rank)
    for b, name in zip(bottoms, layer.bottoms):
        same = len(b.shape) == rank and all(b.shape[i] == bottoms[0].shape[i] for i in range(rank) if i != axis)
        if not same:
            raise _error(
                ctx, ShapeMismatchError, layer,
                f"concatenates along axis {axis}, so every other axis must match, but '{layer.bottoms[0]}' is "
                f"{_fmt(bottoms[0].shape)} and '{name}' is {_fmt(b.shape)}",
            )
    if len(bottoms) == 1:
        return [bottoms[0]]
    total = sum(b.shape[axis] for b in bottoms)
    shape = tuple(total if i == axis else s for i, s in enumerate(bottoms[0].shape))
    node = ctx.call_function(torch.cat, ([b.node for b in bottoms],), {"dim": axis}, name=layer.name)
    return [Blob(node, shape)]


def _build_slice(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    _count(ctx, layer, bottoms, 1, None)
    x = bottoms[0]
    p = layer.params("slice_param")
    axis = _axis(ctx, layer, _legacy_axis(p, "slice_dim"), len(x.shape))
    n = len(layer.tops)
    size = x.shape[axis]
    if p.slice_point:
        points = [int(v) for v in p.slice_point]
        if len(points) != n - 1:
            raise _error(ctx, InvalidLayerError, layer, f"{n} tops need {n - 1} slice_point values, got {len(points)}")
        bounds = [0, *points, size]
        if any(b >= a for a, b in zip(bounds[1:], bounds)) or points[-1] >= size:
            raise _error(
                ctx, ShapeMismatchError, layer,
                f"slice points {points} must increase and stay inside axis {axis} of size {size}",
            )
    else:
        if size % n:
            raise _error(ctx, ShapeMismatchError, layer, f"cannot split axis {axis} of size {size} into {n} equal parts; give slice_point")
        bounds = [i * size // n for i in range(n + 1)]
    out = []
    for i, top in enumerate(layer.tops):
        start, length = bounds[i], bounds[i + 1] - bounds[i]
        node = ctx.call_function(torch.narrow, (x.node, axis, start, length), name=top)
        out.append(Blob(node, tuple(length if a == axis else s for a, s in enumerate(x.shape))))
    return out


def _build_split(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    _count(ctx, layer, bottoms, 1, None)
    return [bottoms[0]] * len(layer.tops)


def _build_crop(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    _count(ctx, layer, bottoms, 2, 1)
    x, ref = bottoms
    p = layer.params("crop_param")
    rank = len(x.shape)
    if len(ref.shape) != rank:
        raise _error(ctx, ShapeMismatchError, layer, f"crops {_fmt(x.shape)} to a reference of another rank {_fmt(ref.shape)}")
    axis = _axis(ctx, layer, p.axis, rank)
    n = rank - axis
    given = [int(o) for o in p.offset]
    if len(given) not in (0, 1, n):
        raise _error(ctx, InvalidLayerError, layer, f"give 0, 1 or {n} offsets (one per cropped axis), got {len(given)}")
    offsets = given * n if len(given) == 1 else (given or [0] * n)
    for i, off in enumerate(offsets):
        a = axis + i
        if off + ref.shape[a] > x.shape[a]:
            raise _error(
                ctx, ShapeMismatchError, layer,
                f"cannot crop axis {a} of '{layer.bottoms[0]}' {_fmt(x.shape)} at offset {off} to the size "
                f"{ref.shape[a]} of '{layer.bottoms[1]}' {_fmt(ref.shape)}",
            )
    shape = (*x.shape[:axis], *ref.shape[axis:])
    node = ctx.call_function(caffe_fn.crop_like, (x.node, ref.node, axis, offsets), name=layer.name)
    return [Blob(node, shape)]


def _build_flatten(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    _count(ctx, layer, bottoms, 1, 1)
    x = bottoms[0]
    p = layer.params("flatten_param")
    start = _axis(ctx, layer, p.axis, len(x.shape))
    end = _axis(ctx, layer, p.end_axis, len(x.shape), "end_axis")
    if end < start:
        raise _error(ctx, InvalidLayerError, layer, f"end_axis {end} is before axis {start}")
    shape = (*x.shape[:start], _numel(x.shape[start : end + 1]), *x.shape[end + 1 :])
    return [Blob(ctx.call_function(torch.flatten, (x.node, start, end), name=layer.name), shape)]


def _build_reshape(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    _count(ctx, layer, bottoms, 1, 1)
    x = bottoms[0]
    p = layer.params("reshape_param")
    rank = len(x.shape)
    start = p.axis if p.axis >= 0 else rank + p.axis + 1
    if not 0 <= start <= rank:
        raise _error(ctx, InvalidLayerError, layer, f"axis {p.axis} is out of range for a {rank}-D input")
    end = rank if p.num_axes == -1 else start + p.num_axes
    if p.num_axes < -1 or end > rank:
        raise _error(ctx, InvalidLayerError, layer, f"num_axes {p.num_axes} from axis {start} does not fit a {rank}-D input")
    dims = [int(d) for d in p.shape.dim]
    if sum(1 for d in dims if d == -1) > 1 or any(d < -1 for d in dims):
        raise _error(ctx, InvalidLayerError, layer, "reshape_param shape may hold one -1 (inferred) and no other negative value")
    new = []
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= rank:
                raise _error(ctx, InvalidLayerError, layer, f"dim 0 at position {i} copies input axis {start + i}, which does not exist")
            new.append(x.shape[start + i])
        else:
            new.append(d)
    replaced = _numel(x.shape[start:end])
    known = _numel([d for d in new if d != -1])
    if -1 in new:
        if known == 0 or replaced % known:
            raise _error(ctx, ShapeMismatchError, layer, f"cannot reshape axes {start}..{end - 1} of {_fmt(x.shape)} into {dims}")
        new[new.index(-1)] = replaced // known
    elif known != replaced:
        raise _error(ctx, ShapeMismatchError, layer, f"cannot reshape axes {start}..{end - 1} of {_fmt(x.shape)} ({replaced} values) into {dims}")
    shape = (*x.shape[:start], *new, *x.shape[end:])
    node = ctx.call_function(caffe_fn.reshape, (x.node, dims, start, end), name=layer.name)
    return [Blob(node, shape)]


def _build_interp(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    x = _image_input(ctx, layer, bottoms, "resizes")
    p = layer.params("interp_param")
    if p.pad_beg or p.pad_end:
        raise _error(ctx, InvalidLayerError, layer, "pad_beg/pad_end are not supported; crop with a Crop layer instead")
    if p.zoom_factor < 1 or p.shrink_factor < 1:
        raise _error(ctx, InvalidLayerError, layer, "zoom_factor and shrink_factor must be at least 1")
    if (p.height > 0) != (p.width > 0):
        raise _error(ctx, InvalidLayerError, layer, "give both height and width, or neither")
    if p.height > 0:
        h, w = int(p.height), int(p.width)
    else:
        h = (x.shape[2] - 1) // p.shrink_factor + 1
        w = (x.shape[3] - 1) // p.shrink_factor + 1
        h, w = h + (h - 1) * (p.zoom_factor - 1), w + (w - 1) * (p.zoom_factor - 1)
    kwargs = {"height": int(p.height), "width": int(p.width), "shrink": int(p.shrink_factor), "zoom": int(p.zoom_factor)}
    return [Blob(ctx.call_function(caffe_fn.interp, (x.node,), kwargs, name=layer.name), (*x.shape[:2], h, w))]


def _build_tile(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    _count(ctx, layer, bottoms, 1, 1)
    x = bottoms[0]
    p = layer.params("tile_param")
    axis = _axis(ctx, layer, p.axis, len(x.shape))
    if p.tiles < 1:
        raise _error(ctx, InvalidLayerError, layer, "tile_param needs tiles >= 1")
    repeats = [int(p.tiles) if i == axis else 1 for i in range(len(x.shape))]
    shape = tuple(s * r for s, r in zip(x.shape, repeats))
    return [Blob(ctx.call_function(torch.tile, (x.node, repeats), name=layer.name), shape)]


# -- layers of Caffe forks -----------------------------------------------------------------


def _build_convolution_depthwise(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    """``ConvolutionDepthwise`` (MobileNet/ShuffleNet ports, e.g. farmingyard/caffe-mobilenet):
    one k x k filter per channel, C channels in and out; weight blob C x 1 x kh x kw."""
    x = _image_input(ctx, layer, bottoms, "convolves")
    p = layer.params("convolution_param")
    channels = x.shape[1]
    if p.HasField("num_output") and p.num_output != channels:
        raise _error(
            ctx, ShapeMismatchError, layer,
            f"a depthwise convolution keeps the channel count ({channels} in, {channels} out), but num_output is "
            f"{p.num_output}; set num_output: {channels}, or use a Convolution with group",
        )
    kernel_hw = _hw(p, "kernel")
    if kernel_hw is not None and not (p.HasField("kernel_h") and p.HasField("kernel_w")):
        raise _error(ctx, InvalidLayerError, layer, "give both kernel_h and kernel_w")
    kernel = _per_axis(ctx, layer, p.kernel_size, kernel_hw, 2, None, "kernel_size")
    pad = _per_axis(ctx, layer, p.pad, _hw(p, "pad"), 2, 0, "pad")
    stride = _per_axis(ctx, layer, p.stride, _hw(p, "stride"), 2, 1, "stride")
    dilation = _hole(ctx, layer, p, 2) or _per_axis(ctx, layer, p.dilation, None, 2, 1, "dilation")
    if min(kernel) < 1 or min(stride) < 1 or min(dilation) < 1:
        raise _error(ctx, InvalidLayerError, layer, "kernel_size, stride and dilation must be at least 1")
    spatial = []
    for size, k, pd, st, d in zip(x.shape[2:], kernel, pad, stride, dilation):
        o = (size + 2 * pd - d * (k - 1) - 1) // st + 1
        if o < 1:
            raise _error(ctx, ShapeMismatchError, layer, f"its input {_fmt(x.shape)} is smaller than the (dilated) kernel {kernel}")
        spatial.append(o)
    ctx.check_parameters(layer, channels * _numel(kernel) + (channels if p.bias_term else 0))
    module = nn.Conv2d(channels, channels, kernel, stride, pad, dilation, channels, bool(p.bias_term), device=_device_for(p, "weight_filler"))
    target = ctx.add_module(layer, module, lambda m: _fill_and_load(ctx, layer, m, "weight_filler", "bias_filler", p))
    return [Blob(ctx.call_module(target, (x.node,), name=layer.name), (x.shape[0], channels, *spatial))]


def _build_shuffle_channel(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    """``ShuffleChannel`` (ShuffleNet, farmingyard/ShuffleNet): channel j * group + i of the
    output is channel i * (C / group) + j of the input."""
    _count(ctx, layer, bottoms, 1, 1)
    x = bottoms[0]
    group = int(layer.params("shuffle_channel_param").group)
    if len(x.shape) < 2 or group < 1 or x.shape[1] % group:
        raise _error(
            ctx, ShapeMismatchError, layer,
            f"group {group} must divide the channels of its input {_fmt(x.shape)}",
        )
    node = ctx.call_function(caffe_fn.shuffle_channel, (x.node, group), name=layer.name)
    return [Blob(node, x.shape)]


def bn_flavour(layer: LayerSpec) -> str:
    """Which fork's ``BN`` a layer is: "segnet_inference", "segnet_learn" (caffe-segnet:
    ``bn_mode``, ``scale_filler``, ``shift_filler``; 2 blobs) or "pspnet" (hszhao/PSPNet,
    yjxiong/caffe: ``slope_filler``, ``frozen``...; 4 blobs, and a bare BN)."""
    p = layer.params("bn_param")
    segnet = any(p.HasField(f) for f in ("bn_mode", "scale_filler", "shift_filler"))
    pspnet = any(p.HasField(f) for f in ("slope_filler", "bias_filler", "momentum", "eps", "frozen"))
    if segnet and pspnet:
        return "mixed"
    if not segnet and not pspnet and len(layer.blobs) == 2:
        segnet = True  # SegNet's BN stores scale and shift only
    if segnet:
        return "segnet_inference" if p.bn_mode == p.INFERENCE else "segnet_learn"
    return "pspnet"


#: caffe-segnet's BN adds this to the batch variance (a constant there)
SEGNET_BN_EPS = 1e-9


def _build_bn(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    """The forks' ``BN`` layer, with each fork's semantics (see :func:`bn_flavour`)."""
    x = _image_input(ctx, layer, bottoms, "normalises")
    p = layer.params("bn_param")
    flavour = bn_flavour(layer)
    if flavour == "mixed":
        raise _error(
            ctx, InvalidLayerError, layer,
            "bn_param mixes SegNet's fields (bn_mode, scale_filler, shift_filler) and PSPNet's (slope_filler, "
            "bias_filler, momentum, eps, frozen); keep one fork's",
        )
    channels = x.shape[1]
    where = f"{ctx.label}: {layer.where()}"
    blobs = layer.blobs
    if flavour.startswith("segnet"):
        if blobs and len(blobs) != 2:
            raise _error(ctx, ShapeMismatchError, layer, f"stores {len(blobs)} blobs; SegNet's BN stores 2 (scale, shift)")
        if flavour == "segnet_inference":  # statistics folded into scale and shift
            module: nn.Module = Scale((channels,), 2, bias=True)
        else:  # normalises with the batch's statistics in every phase
            module = nn.BatchNorm2d(channels, eps=SEGNET_BN_EPS, affine=True, track_running_stats=False)
        fillers = (("scale_filler", "scale"), ("shift_filler", "shift"))
    else:
        if blobs and len(blobs) != 4:
            raise _error(
                ctx, ShapeMismatchError, layer,
                f"stores {len(blobs)} blobs; PSPNet's BN stores 4 (slope, bias, mean, variance)",
            )
        eps = _f(p.eps)
        if not (math.isfinite(p.eps) and p.eps >= 0):
            raise _error(ctx, InvalidLayerError, layer, f"eps must be a finite number, 0 or more; got {eps}")
        if p.frozen:
            module = FrozenBatchNorm2d(channels, eps)
        else:
            module = nn.BatchNorm2d(channels, eps=eps, momentum=round(1.0 - _f(p.momentum), 7), affine=True)
        fillers = (("slope_filler", "slope"), ("bias_filler", "bias"))

    def initialise(m: nn.Module) -> None:
        for param, (field, _) in zip((m.weight, m.bias), fillers):
            if p.HasField(field):
                fill(param, getattr(p, field), where)
        for param, blob, (_, what) in zip((m.weight, m.bias), blobs, fillers):
            load_blob(param, blob, where, what)
        if len(blobs) == 4:
            load_blob(m.running_mean, blobs[2], where, "mean")
            load_blob(m.running_var, blobs[3], where, "variance")

    target = ctx.add_module(layer, module, initialise)
    return [Blob(ctx.call_module(target, (x.node,), name=layer.name), x.shape)]


def _build_upsample(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    """``Upsample``: with the mask of a MAX Pooling as second bottom, SegNet's max-unpooling;
    with one bottom, nearest-neighbour repetition (the YOLO ports' Upsample)."""
    if len(bottoms) not in (1, 2):
        raise _error(ctx, InvalidLayerError, layer, f"takes 1 bottom, or 2 (values and the pooling mask), got {len(bottoms)}")
    _count(ctx, layer, bottoms, None, 1)
    x = bottoms[0]
    if len(x.shape) != 4:
        raise _error(ctx, InvalidLayerError, layer, f"upsamples (N, C, H, W) inputs, got {_fmt(x.shape)}")
    p = layer.params("upsample_param")
    if p.HasField("upsample_h") != p.HasField("upsample_w"):
        raise _error(ctx, InvalidLayerError, layer, "give both upsample_h and upsample_w, or neither")
    if p.HasField("scale_h") != p.HasField("scale_w"):
        raise _error(ctx, InvalidLayerError, layer, "give both scale_h and scale_w, or neither (or scale)")
    scale_h, scale_w = (int(p.scale_h), int(p.scale_w)) if p.HasField("scale_h") else (int(p.scale), int(p.scale))
    pad_h, pad_w = int(p.pad_out_h), int(p.pad_out_w)
    height, width = (int(p.upsample_h), int(p.upsample_w)) if p.HasField("upsample_h") else (0, 0)
    if height == 0 and (min(scale_h, scale_w) < 1 or (pad_h and scale_h != 2) or (pad_w and scale_w != 2)):
        raise _error(
            ctx, InvalidLayerError, layer,
            f"scale {scale_h}x{scale_w} must be at least 1, and pad_out_h/pad_out_w need a scale of 2 (SegNet's rule); "
            "or give upsample_h and upsample_w",
        )
    out_h = height or x.shape[2] * scale_h - pad_h
    out_w = width or x.shape[3] * scale_w - pad_w
    if out_h < 1 or out_w < 1:
        raise _error(ctx, InvalidLayerError, layer, f"its output size {out_h}x{out_w} is empty")
    sizes = {"scale_h": scale_h, "scale_w": scale_w, "pad_h": pad_h, "pad_w": pad_w, "height": height, "width": width}
    if len(bottoms) == 1:
        node = ctx.call_function(caffe_fn.upsample_nearest, (x.node,), sizes, name=layer.name)
        return [Blob(node, (*x.shape[:2], out_h, out_w))]
    mask = bottoms[1]
    if mask.shape != x.shape:
        raise _error(
            ctx, ShapeMismatchError, layer,
            f"its mask '{layer.bottoms[1]}' {_fmt(mask.shape)} must have the shape of '{layer.bottoms[0]}' {_fmt(x.shape)}",
        )
    node = ctx.call_function(caffe_fn.max_unpool, (x.node, mask.node), sizes, name=layer.name)
    return [Blob(node, (*x.shape[:2], out_h, out_w))]


def _build_permute(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    """SSD's ``Permute``: the axes in ``order``, then the axes it does not name, in order."""
    _count(ctx, layer, bottoms, 1, 1)
    x = bottoms[0]
    order = [int(a) for a in layer.params("permute_param").order]
    rank = len(x.shape)
    if any(a >= rank for a in order) or len(set(order)) != len(order):
        raise _error(ctx, InvalidLayerError, layer, f"order {order} must name distinct axes of a {rank}-D input")
    dims = order + [a for a in range(rank) if a not in order]
    node = ctx.call_function(torch.permute, (x.node, dims), name=layer.name)
    return [Blob(node, tuple(x.shape[a] for a in dims))]


def _build_normalize(ctx, layer: LayerSpec, bottoms: List[Blob]) -> List[Blob]:
    """SSD's ``Normalize`` (see :class:`.modules.Normalize`); the scale starts at 1 unless
    ``scale_filler`` says otherwise."""
    x = _channel_input(ctx, layer, bottoms)
    p = layer.params("norm_param")
    if not (math.isfinite(p.eps) and p.eps >= 0):
        raise _error(ctx, InvalidLayerError, layer, f"eps must be a finite number, 0 or more; got {_f(p.eps)}")
    module = Normalize(x.shape[1], bool(p.across_spatial), bool(p.channel_shared), _f(p.eps))
    return _shape_keeping_module(ctx, layer, x, module, p.scale_filler if p.HasField("scale_filler") else None, "scale")


# -- the registry --------------------------------------------------------------------------

Builder = Callable[[Any, LayerSpec, List[Blob]], List[Blob]]

BUILDERS: Dict[str, Builder] = {
    "AbsVal": _unary(torch.abs),
    "BatchNorm": _build_batch_norm,
    "Bias": _build_bias,
    "BN": _build_bn,
    "BNLL": _unary(F.softplus),
    "Clip": _build_clip,
    "Concat": _build_concat,
    "Convolution": _build_convolution,
    "ConvolutionDepthwise": _build_convolution_depthwise,
    "Crop": _build_crop,
    "Deconvolution": _build_deconvolution,
    "Dropout": _build_dropout,
    "Eltwise": _build_eltwise,
    "ELU": _unary(F.elu, lambda l: {"alpha": _f(l.params("elu_param").alpha)}),
    "Exp": _exp_log(caffe_fn.exp, "exp_param"),
    "Flatten": _build_flatten,
    "InnerProduct": _build_inner_product,
    "Interp": _build_interp,
    "Log": _exp_log(caffe_fn.log, "log_param"),
    "LRN": _build_lrn,
    "Normalize": _build_normalize,
    "Permute": _build_permute,
    "Pooling": _build_pooling,
    "Power": _build_power,
    "PReLU": _build_prelu,
    "ReLU": _build_relu,
    "ReLU6": _unary(F.relu6),
    "Reshape": _build_reshape,
    "Scale": _build_scale,
    "ShuffleChannel": _build_shuffle_channel,
    "Sigmoid": _unary(torch.sigmoid),
    "Slice": _build_slice,
    "Softmax": _build_softmax,
    "Split": _build_split,
    "Swish": _unary(caffe_fn.swish, lambda l: {"beta": _f(l.params("swish_param").beta)}),
    "TanH": _unary(torch.tanh),
    "Threshold": _unary(caffe_fn.threshold, lambda l: {"value": _f(l.params("threshold_param").threshold)}),
    "Tile": _build_tile,
    "Upsample": _build_upsample,
}


def is_supported(layer_type: str) -> bool:
    """Whether automtl can build (or knowingly drop) a layer of this type."""
    return layer_type in BUILDERS or layer_type in INPUT_TYPES or layer_type in SINK_TYPES or layer_type in TRAINING_ONLY_TYPES


def supported_types() -> List[str]:
    return sorted(set(BUILDERS) | INPUT_TYPES | SINK_TYPES)
