"""Which parameter-free nodes can run once on the stacked ``[B*G, ...]`` tensor.

An operator that treats every sample on its own (activations, pooling, element-wise arithmetic,
reductions and concatenations that leave the batch dimension alone, ...) gives, on the stacked
tensor, exactly the stacked per-task results. A *rule* checks a call against that - at run
time, since it depends on the arguments - and returns the call's arguments for the stacked
tensor, or raises :class:`NotPerSample`; the executor then runs the node the reference way.
Operators not listed here always run the reference way; a custom parameter-free module that
treats samples independently can be declared with :func:`register_per_sample_module`.
"""

from __future__ import annotations

import builtins
import math
import operator
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Type

import torch
import torch.nn.functional as F
from torch import nn


class NotPerSample(Exception):
    """A call that would mix samples (or tasks) if run on the stacked tensor."""


class ConstResult:
    """A rule's answer that needs no call: the same value for every task (e.g. a shape)."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


class Call:
    """What a rule sees: the stacked tensors (by identity), the batch size one task sees and the
    module of a ``call_module`` node."""

    def __init__(self, stacked_ids: Set[int], batch: int, module: Optional[nn.Module] = None):
        self.stacked_ids = stacked_ids
        self.batch = batch
        self.module = module

    def is_stacked(self, value: Any) -> bool:
        return isinstance(value, torch.Tensor) and id(value) in self.stacked_ids

    def logical_shape(self, tensor: torch.Tensor) -> torch.Size:
        return torch.Size((self.batch,) + tuple(tensor.shape[1:]))


Rule = Callable[[Call, tuple, dict], Any]


def _tensors(value: Any) -> List[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _tensors(item)]
    return []


def _check_operands(call: Call, args: tuple, kwargs: dict) -> int:
    """Every stacked operand has the same rank; a constant tensor broadcasts without reaching
    the batch dimension. Returns the rank of the stacked operands."""
    tensors = _tensors(args) + _tensors(kwargs)
    ranks = {t.dim() for t in tensors if call.is_stacked(t)}
    if len(ranks) != 1:
        raise NotPerSample("its input tensors differ in rank, so broadcasting would reach the batch dimension")
    rank = ranks.pop()
    for t in tensors:
        if not call.is_stacked(t) and (t.dim() > rank or (t.dim() == rank and t.shape[0] != 1)):
            raise NotPerSample(f"a constant tensor of shape {list(t.shape)} has a batch dimension of its own")
    return rank


def per_sample(call: Call, args: tuple, kwargs: dict) -> Tuple[tuple, dict]:
    """Element-wise and sample-local operators: the arguments stay as they are."""
    _check_operands(call, args, kwargs)
    return args, kwargs


def _argument(args: tuple, kwargs: dict, position: int, keyword: str, default: Any) -> Any:
    if keyword in kwargs:
        return kwargs[keyword]
    return args[position] if len(args) > position else default


def _reject_batch_dims(dims: Any, rank: int, what: str) -> None:
    if dims is None:
        raise NotPerSample(f"it {what} every dimension, the batch dimension included")
    for d in dims if isinstance(dims, (list, tuple)) else (dims,):
        if not isinstance(d, int):
            raise NotPerSample(f"its dimension argument {d!r} is not an integer")
        if d % rank == 0:
            raise NotPerSample(f"it {what} dimension {d}, the batch dimension")


def along(position: int, keyword: str, default: Any = None, *, new_dim: bool = False, what: str = "works along") -> Rule:
    """Operators with a dimension argument: per-sample unless it names the batch dimension."""

    def rule(call: Call, args: tuple, kwargs: dict) -> Tuple[tuple, dict]:
        rank = _check_operands(call, args, kwargs) + (1 if new_dim else 0)
        _reject_batch_dims(_argument(args, kwargs, position, keyword, default), rank, what)
        return args, kwargs

    return rule


def _all_stacked(call: Call, args: tuple, kwargs: dict) -> Tuple[tuple, dict]:
    for t in _tensors(args[0]):
        if not call.is_stacked(t):
            raise NotPerSample("it joins a constant tensor to tensors computed from the input")
    return args, kwargs


def joined(new_dim: bool) -> Rule:
    """``torch.cat``/``torch.stack``: every joined tensor computed from the input, not along
    the batch dimension."""
    inner = along(1, "dim", 0, new_dim=new_dim, what="joins along")

    def rule(call: Call, args: tuple, kwargs: dict) -> Tuple[tuple, dict]:
        _all_stacked(call, args, kwargs)
        return inner(call, args, kwargs)

    return rule


def no_indices(position: int) -> Rule:
    """Pooling that can return indices (a tuple) runs stacked only without them."""

    def rule(call: Call, args: tuple, kwargs: dict) -> Tuple[tuple, dict]:
        if _argument(args, kwargs, position, "return_indices", False):
            raise NotPerSample("it returns pooling indices")
        return per_sample(call, args, kwargs)

    return rule


def _pad_rule(call: Call, args: tuple, kwargs: dict) -> Tuple[tuple, dict]:
    rank = _check_operands(call, args, kwargs)
    pads = _argument(args, kwargs, 1, "pad", ())
    if len(pads) // 2 >= rank:
        raise NotPerSample("it pads the batch dimension")
    return args, kwargs


def _transpose_rule(call: Call, args: tuple, kwargs: dict) -> Tuple[tuple, dict]:
    rank = _check_operands(call, args, kwargs)
    _reject_batch_dims((_argument(args, kwargs, 1, "dim0", None), _argument(args, kwargs, 2, "dim1", None)), rank, "swaps")
    return args, kwargs


def _permute_rule(call: Call, args: tuple, kwargs: dict) -> Tuple[tuple, dict]:
    rank = _check_operands(call, args, kwargs)
    dims = kwargs.get("dims", args[1] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:])
    if not dims or not isinstance(dims[0], int) or dims[0] % rank != 0:
        raise NotPerSample("it moves the batch dimension")
    return args, kwargs


def _view_rule(call: Call, args: tuple, kwargs: dict) -> Tuple[tuple, dict]:
    """``view``/``reshape`` to ``[B, ...]`` or ``[-1, ...]`` that keeps every sample's elements
    together: the stacked tensor gets ``[B*G, ...]``."""
    x = args[0]
    if not call.is_stacked(x) or any(call.is_stacked(t) for t in _tensors(args[1:])):
        raise NotPerSample("it reshapes with a tensor argument")
    if "size" in kwargs or "shape" in kwargs:
        shape, packed = kwargs.get("size", kwargs.get("shape")), True
    elif len(args) == 2 and isinstance(args[1], (list, tuple, torch.Size)):
        shape, packed = args[1], True
    else:
        shape, packed = args[1:], False
    if not shape or not all(isinstance(d, int) for d in shape):
        raise NotPerSample("its target shape is not a list of integers")
    per_sample_size = math.prod(x.shape[1:])
    lead, rest = shape[0], list(shape[1:])
    if rest.count(-1) > 1 or (lead == -1 and -1 in rest):
        raise NotPerSample("its target shape is ambiguous")
    known = math.prod(d for d in rest if d != -1)
    fits = known > 0 and (per_sample_size % known == 0 if -1 in rest else known == per_sample_size)
    if lead not in (call.batch, -1) or not fits:
        raise NotPerSample(f"its target shape {list(shape)} does not keep the batch dimension")
    target = [x.shape[0]] + rest
    if kwargs:
        return (x,), {"size" if "size" in kwargs else "shape": target}
    return ((x, target) if packed else (x, *target)), {}


def _size_rule(call: Call, args: tuple, kwargs: dict) -> ConstResult:
    shape = call.logical_shape(args[0])
    dim = _argument(args, kwargs, 1, "dim", None)
    return ConstResult(shape if dim is None else shape[dim])


def _getattr_rule(call: Call, args: tuple, kwargs: dict) -> Any:
    x, name = args[0], args[1]
    if name == "shape":
        return ConstResult(call.logical_shape(x))
    if name == "ndim":
        return ConstResult(x.dim())
    if name in ("dtype", "device"):
        return ConstResult(getattr(x, name))
    raise NotPerSample(f"it reads the attribute {name!r}")


def _dim_query(call: Call, args: tuple, kwargs: dict) -> ConstResult:
    return ConstResult(args[0].dim())


def _getitem_rule(call: Call, args: tuple, kwargs: dict) -> Tuple[tuple, dict]:
    x, index = args
    if not call.is_stacked(x) or _tensors(index):
        raise NotPerSample("it indexes with tensors, or indexes a constant with them")
    items = index if isinstance(index, tuple) else (index,)
    if items and items[0] == slice(None):
        return args, kwargs
    if items and items[0] is Ellipsis and None not in items[1:] and len(items) - 1 < x.dim():
        return args, kwargs
    raise NotPerSample("it indexes the batch dimension")


_ELEMENTWISE_FUNCTIONS = (
    operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.mod,
    operator.pow, operator.neg, operator.pos, operator.abs,
    operator.iadd, operator.isub, operator.imul, operator.itruediv,
    torch.add, torch.sub, torch.subtract, torch.mul, torch.multiply, torch.div, torch.divide,
    torch.true_divide, torch.pow, torch.neg, torch.abs, torch.exp, torch.log, torch.sqrt,
    torch.rsqrt, torch.square, torch.reciprocal, torch.sign, torch.relu, torch.relu_,
    torch.sigmoid, torch.tanh, torch.clamp, torch.clip, torch.clamp_min, torch.clamp_max,
    torch.maximum, torch.minimum, torch.where, torch.lerp, torch.addcmul, torch.addcdiv,
    F.relu, F.relu_, F.relu6, F.elu, F.selu, F.celu, F.leaky_relu, F.hardtanh, F.hardswish,
    F.hardsigmoid, F.silu, F.mish, F.gelu, F.sigmoid, F.tanh, F.softplus, F.softsign,
    F.logsigmoid, F.threshold, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d,
    F.alpha_dropout, F.feature_alpha_dropout,
    F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d, F.lp_pool1d, F.lp_pool2d, F.interpolate, F.pixel_shuffle,
    F.pixel_unshuffle, torch.pixel_shuffle, torch.channel_shuffle, F.local_response_norm,
)

_REDUCTIONS = ("mean", "sum", "amax", "amin", "prod", "std", "var", "logsumexp", "nansum", "nanmean", "cumsum", "cumprod", "softmax", "log_softmax")

FUNCTION_RULES: Dict[Any, Rule] = {fn: per_sample for fn in _ELEMENTWISE_FUNCTIONS}
FUNCTION_RULES.update({
    F.max_pool1d: no_indices(6), F.max_pool2d: no_indices(6), F.max_pool3d: no_indices(6),
    F.adaptive_max_pool1d: no_indices(2), F.adaptive_max_pool2d: no_indices(2), F.adaptive_max_pool3d: no_indices(2),
    F.pad: _pad_rule,
    torch.flatten: along(1, "start_dim", 0, what="flattens from"),
    torch.cat: joined(False), torch.concat: joined(False), torch.concatenate: joined(False),
    torch.stack: joined(True),
    torch.unsqueeze: along(1, "dim", None, new_dim=True, what="inserts"),
    torch.squeeze: along(1, "dim", None, what="squeezes"),
    torch.transpose: _transpose_rule, torch.swapaxes: _transpose_rule, torch.permute: _permute_rule,
    torch.narrow: along(1, "dim", None, what="narrows"),
    torch.chunk: along(2, "dim", 0, what="splits along"),
    torch.split: along(2, "dim", 0, what="splits along"),
    torch.tensor_split: along(2, "dim", 0, what="splits along"),
    torch.unbind: along(1, "dim", 0, what="splits along"),
    torch.reshape: _view_rule,
    F.softmax: along(1, "dim", None, what="normalises along"),
    F.log_softmax: along(1, "dim", None, what="normalises along"),
    F.normalize: along(2, "dim", 1, what="normalises along"),
    operator.getitem: _getitem_rule,
    builtins.getattr: _getattr_rule,
})
FUNCTION_RULES.update({getattr(torch, name): along(1, "dim", None, what="reduces along") for name in _REDUCTIONS})

def _prototxt_rules() -> Dict[Any, Rule]:
    """Rules for the prototxt front end's Caffe helpers (one ``call_function`` node each)."""
    try:
        from automtl.compiler.prototxt import functional as caffe
    except ImportError:  # pragma: no cover - the front end is part of the package
        return {}

    def from_axis(position: int, keyword: str) -> Rule:
        """``crop_like``/``reshape``: per-sample when they start at axis 1 or later."""

        def rule(call: Call, args: tuple, kwargs: dict) -> Tuple[tuple, dict]:
            axis = _argument(args, kwargs, position, keyword, None)
            if not isinstance(axis, int) or axis < 1:
                raise NotPerSample(f"it works from axis {axis!r}, the batch dimension included")
            return args, kwargs

        return rule

    def aligned(call: Call, args: tuple, kwargs: dict) -> Tuple[tuple, dict]:
        """``scale_by``/``bias_by``: a second operand lined up from axis 0 is a per-sample tensor;
        lined up from a later axis it must be a constant (it broadcasts over the batch)."""
        x, other, axis = args[0], args[1], _argument(args, kwargs, 2, "axis", None)
        if axis == 0 and call.is_stacked(x) and call.is_stacked(other):
            return args, kwargs
        if isinstance(axis, int) and axis >= 1 and not call.is_stacked(other):
            return args, kwargs
        raise NotPerSample("its second operand does not line up with the batch dimension")

    rules: Dict[Any, Rule] = {}
    for name in ("power", "exp", "log", "threshold", "swish", "lrn_within_channel", "interp", "shuffle_channel", "max_unpool", "upsample_nearest"):
        if hasattr(caffe, name):
            rules[getattr(caffe, name)] = per_sample
    for name, rule in (("crop_like", from_axis(2, "axis")), ("reshape", from_axis(2, "start")), ("scale_by", aligned), ("bias_by", aligned)):
        if hasattr(caffe, name):
            rules[getattr(caffe, name)] = rule
    return rules


FUNCTION_RULES.update(_prototxt_rules())

METHOD_RULES: Dict[str, Rule] = {
    name: per_sample
    for name in (
        "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "pow", "neg", "abs", "exp",
        "log", "sqrt", "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_",
        "clamp_min", "clamp_max", "clip", "contiguous", "float", "double", "half", "bfloat16",
        "to", "type_as", "clone", "detach", "masked_fill", "masked_fill_", "expand_as",
    )
}
METHOD_RULES.update({name: along(1, "dim", None, what="reduces along") for name in _REDUCTIONS})
METHOD_RULES.update({
    "flatten": along(1, "start_dim", 0, what="flattens from"),
    "unsqueeze": along(1, "dim", None, new_dim=True, what="inserts"),
    "squeeze": along(1, "dim", None, what="squeezes"),
    "narrow": along(1, "dim", None, what="narrows"),
    "chunk": along(2, "dim", 0, what="splits along"),
    "split": along(2, "dim", 0, what="splits along"),
    "tensor_split": along(2, "dim", 0, what="splits along"),
    "unbind": along(1, "dim", 0, what="splits along"),
    "transpose": _transpose_rule, "swapaxes": _transpose_rule, "permute": _permute_rule,
    "view": _view_rule, "reshape": _view_rule,
    "size": _size_rule, "dim": _dim_query,
})

_ACTIVATIONS: Tuple[Type[nn.Module], ...] = (
    nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus,
    nn.Softsign, nn.Tanhshrink, nn.Threshold, nn.Hardshrink, nn.Softshrink, nn.LogSigmoid,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d, nn.LPPool1d, nn.LPPool2d, nn.Upsample, nn.UpsamplingNearest2d,
    nn.UpsamplingBilinear2d, nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle,
    nn.LocalResponseNorm,
)
_POOLS_WITH_INDICES: Tuple[Type[nn.Module], ...] = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
_PADS: Tuple[Type[nn.Module], ...] = tuple(
    getattr(nn, f"{kind}Pad{d}d")
    for kind in ("Zero", "Constant", "Reflection", "Replication", "Circular")
    for d in (1, 2, 3)
    if hasattr(nn, f"{kind}Pad{d}d")
)

_INSTANCE_NORMS: Tuple[Type[nn.Module], ...] = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)

_EXTRA_PER_SAMPLE: Set[type] = set()


def register_per_sample_module(cls: type) -> type:
    """Declare a parameter-free module class whose forward treats every sample on its own
    (its output for a batch is the batch of its outputs for each sample), so the fast path
    runs it once over all tasks. Usable as a class decorator."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_per_sample_module expects an nn.Module class, got {cls!r}")
    _EXTRA_PER_SAMPLE.add(cls)
    return cls


def _module_rule(module: nn.Module) -> Optional[Rule]:
    kind = type(module)
    if kind in _ACTIVATIONS or kind in _EXTRA_PER_SAMPLE:
        return per_sample
    if kind is nn.GroupNorm or (kind in _INSTANCE_NORMS and not module.track_running_stats):
        return per_sample  # statistics of each sample on its own (parameter-free here)
    if kind is nn.LayerNorm:
        covered = len(module.normalized_shape)

        def layer_norm_rule(call: Call, args: tuple, kwargs: dict) -> Tuple[tuple, dict]:
            if covered >= _check_operands(call, args, kwargs):
                raise NotPerSample("it normalises over the batch dimension too")
            return args, kwargs

        return layer_norm_rule
    if kind in _POOLS_WITH_INDICES:
        return None if module.return_indices else per_sample
    if kind in _PADS:
        pads = len(module.padding) // 2

        def pad_rule(call: Call, args: tuple, kwargs: dict) -> Tuple[tuple, dict]:
            if pads >= _check_operands(call, args, kwargs):
                raise NotPerSample("it pads the batch dimension")
            return args, kwargs

        return pad_rule
    if kind is nn.Flatten:
        return _fixed_dims(module.start_dim, "flattens from")
    if kind in (nn.Softmax, nn.LogSoftmax, nn.Softmin):
        return _fixed_dims(module.dim, "normalises along")
    if kind is nn.Unflatten:
        return _fixed_dims(module.dim, "unflattens")
    try:
        from torchvision.ops import StochasticDepth
    except ImportError:  # pragma: no cover - torchvision is optional
        StochasticDepth = None
    if StochasticDepth is not None and kind is StochasticDepth and module.mode == "row":
        return per_sample  # "batch" mode drops a whole batch: one draw per task, not per sample
    return None


def _fixed_dims(dims: Any, what: str) -> Rule:
    def rule(call: Call, args: tuple, kwargs: dict) -> Tuple[tuple, dict]:
        _reject_batch_dims(dims, _check_operands(call, args, kwargs), what)
        return args, kwargs

    return rule


def rule_for(op: str, target: Any, module: Optional[nn.Module]) -> Tuple[Optional[Rule], str]:
    """The rule of a parameter-free node, or None and why there is none."""
    if op == "call_function":
        try:
            rule = FUNCTION_RULES.get(target)
        except TypeError:  # an unhashable callable
            rule = None
        name = getattr(target, "__name__", repr(target))
        return rule, "" if rule else f"function {name} is not known to treat samples independently"
    if op == "call_method":
        rule = METHOD_RULES.get(target)
        return rule, "" if rule else f"method .{target}() is not known to treat samples independently"
    if op == "call_module" and module is not None:
        rule = _module_rule(module)
        return rule, "" if rule else f"{type(module).__name__} is not known to treat samples independently"
    return None, f"{op} nodes run the reference way"
