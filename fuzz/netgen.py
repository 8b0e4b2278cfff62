"""Generators of hostile inputs for the two front ends, driven by any source of choices.

* :func:`prototxt_net` writes the text of a small random Caffe net: random layer types
  (supported, training-only and unsupported ones), random wiring (in-place tops, several
  bottoms, blobs read before they exist), random settings with now and then an absurd value
  (``num_output: 4294967295``, a zero kernel, a NaN filler, a stored blob of the wrong size).
* :func:`mutate_text` applies random edits to a real prototxt file (numbers swapped for edge
  values, lines deleted or duplicated, names and layer types swapped, bytes changed).
* :func:`cnn_spec` / :class:`RandomCNN` describe and build a small random ``nn.Module``
  (random depths, channels, branches, strides, groups, dilations) for the torch.fx front end.

A *source* answers ``integer(lo, hi)``, ``choice(options)`` and ``boolean()``; adapters make
one from ``random.Random`` (:class:`RandomSource`), a hypothesis ``draw`` (:class:`DrawSource`)
or an atheris ``FuzzedDataProvider`` (:class:`ProviderSource`), so the hypothesis tests and
the coverage-guided fuzzer share the generators.
"""

from __future__ import annotations

import random
import re
from typing import Any, Dict, List, Sequence

import torch
from torch import nn


# -- sources of choices -----------------------------------------------------------------------

class RandomSource:
    def __init__(self, rng: random.Random):
        self.rng = rng

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def choice(self, options: Sequence[Any]) -> Any:
        return options[self.rng.randrange(len(options))]

    def boolean(self) -> bool:
        return self.rng.random() < 0.5


class DrawSource:
    """Choices drawn from hypothesis strategies (so that failures shrink)."""

    def __init__(self, draw: Any):
        from hypothesis import strategies as st

        self.draw, self.st = draw, st

    def integer(self, lo: int, hi: int) -> int:
        return self.draw(self.st.integers(lo, hi))

    def choice(self, options: Sequence[Any]) -> Any:
        return self.draw(self.st.sampled_from(list(options)))

    def boolean(self) -> bool:
        return self.draw(self.st.booleans())


class ProviderSource:
    """Choices read from an atheris ``FuzzedDataProvider`` (the fuzzer steers them)."""

    def __init__(self, provider: Any):
        self.fdp = provider

    def integer(self, lo: int, hi: int) -> int:
        return self.fdp.ConsumeIntInRange(lo, hi)

    def choice(self, options: Sequence[Any]) -> Any:
        return options[self.fdp.ConsumeIntInRange(0, len(options) - 1)]

    def boolean(self) -> bool:
        return self.fdp.ConsumeBool()


def _edgy(src: Any, lo: int, hi: int, edges: Sequence[Any]) -> Any:
    """Mostly a value in ``[lo, hi]``; one time in sixteen an edge value."""
    return src.choice(edges) if src.integer(0, 15) == 0 else src.integer(lo, hi)


# -- random prototxt nets ---------------------------------------------------------------------

HUGE = (0, 4294967295, 2147483647, 65536, 100000)
FLOATS = ("0", "1", "-1", "0.5", "1e-05", "2", "1e30", "-1e30", "nan", "inf", "-inf")

_UNARY = ("ReLU", "Sigmoid", "TanH", "AbsVal", "BNLL", "ELU", "ReLU6", "Swish", "Threshold", "Clip",
          "Power", "Exp", "Log", "Dropout", "Softmax", "BatchNorm", "Scale", "Bias", "PReLU", "LRN",
          "Flatten", "Reshape", "Interp", "Tile", "Pooling", "Convolution", "Deconvolution", "InnerProduct")
_COMBINE = ("Eltwise", "Concat", "Crop", "Scale", "Bias")
_MULTI_TOP = ("Slice", "Split")
_ODD = ("Silence", "Python", "MyCustomLayer", "SoftmaxWithLoss", "Accuracy", "Input")


def _filler(src: Any, name: str) -> str:
    kind = src.choice(("constant", "uniform", "gaussian", "xavier", "msra", "bilinear", "positive_unitball", "unknown"))
    fields = [f'type: "{kind}"']
    for field in src.choice(((), ("value",), ("min", "max"), ("mean", "std"), ("std",), ("sparse",), ("variance_norm",))):
        if field == "variance_norm":
            fields.append(f"variance_norm: {src.choice(('FAN_IN', 'FAN_OUT', 'AVERAGE'))}")
        elif field == "sparse":
            fields.append(f"sparse: {src.integer(-1, 3)}")
        else:
            fields.append(f"{field}: {src.choice(FLOATS)}")
    return f"{name} {{ {' '.join(fields)} }}"


def _blob(src: Any) -> str:
    dims = [src.integer(0, 4) for _ in range(src.integer(0, 4))]
    count = src.choice((1, 0, 2, 3, 4, 8, 9, 16)) if src.integer(0, 2) == 0 else (1 if not dims else _product(dims))
    shape = f"shape {{ {' '.join(f'dim: {d}' for d in dims)} }} " if dims or src.boolean() else ""
    data = " ".join(f"data: {src.choice(('0.5', '-1', '2', 'nan'))}" for _ in range(min(count, 64)))
    return f"blobs {{ {shape}{data} }}"


def _product(dims: Sequence[int]) -> int:
    out = 1
    for d in dims:
        out *= d
    return out


def _conv_param(src: Any) -> str:
    parts = [f"num_output: {_edgy(src, 1, 8, HUGE)}"]
    if src.integer(0, 5) == 0:
        parts += [f"kernel_h: {_edgy(src, 1, 4, HUGE)}", f"kernel_w: {_edgy(src, 1, 4, HUGE)}"]
    else:
        parts += [f"kernel_size: {_edgy(src, 1, 4, HUGE)}" for _ in range(src.choice((1,) * 14 + (2, 2, 0, 3)))]
    if src.boolean():
        parts.append(f"stride: {_edgy(src, 1, 3, (0, 100000))}")
    if src.boolean():
        parts.append(f"pad: {_edgy(src, 0, 2, (100000, 4294967295))}")
    if src.integer(0, 3) == 0:
        parts.append(f"dilation: {_edgy(src, 1, 3, (0, 1000))}")
    if src.integer(0, 5) == 0:
        parts.append(f"group: {src.choice((1, 2, 3, 4, 0))}")
    if src.integer(0, 4) == 0:
        parts.append("bias_term: false")
    if src.integer(0, 9) == 0:
        parts.append(f"axis: {src.choice((1, 0, 2, -1, 7))}")
    if src.integer(0, 3) == 0:
        parts.append(_filler(src, "weight_filler"))
    if src.integer(0, 5) == 0:
        parts.append(_filler(src, "bias_filler"))
    return f"convolution_param {{ {' '.join(parts)} }}"


def _params(src: Any, kind: str, n_bottoms: int) -> List[str]:
    """The settings block(s) of a layer of type ``kind``."""
    if kind in ("Convolution", "Deconvolution"):
        return [_conv_param(src)]
    if kind == "InnerProduct":
        parts = [f"num_output: {_edgy(src, 1, 10, HUGE)}"]
        if src.boolean():
            parts.append(f"axis: {src.choice((1, 0, -1, 2, 5))}")
        if src.integer(0, 3) == 0:
            parts.append("transpose: true")
        if src.integer(0, 3) == 0:
            parts.append(_filler(src, "weight_filler"))
        return [f"inner_product_param {{ {' '.join(parts)} }}"]
    if kind == "Pooling":
        parts = [f"pool: {src.choice(('MAX', 'AVE', 'STOCHASTIC'))}"]
        if src.integer(0, 4) == 0:
            parts.append("global_pooling: true")
        elif src.integer(0, 4) == 0:
            parts += [f"kernel_h: {_edgy(src, 1, 3, HUGE)}", f"kernel_w: {_edgy(src, 1, 3, HUGE)}"]
        else:
            parts.append(f"kernel_size: {_edgy(src, 1, 4, HUGE)}")
        if src.boolean():
            parts.append(f"stride: {_edgy(src, 1, 3, (0, 100000))}")
        if src.boolean():
            parts.append(f"pad: {_edgy(src, 0, 2, (100000,))}")
        if src.integer(0, 3) == 0:
            parts.append(f"round_mode: {src.choice(('CEIL', 'FLOOR'))}")
        if src.integer(0, 4) == 0:
            parts.append(f"ceil_mode: {src.choice(('true', 'false'))}")
        return [f"pooling_param {{ {' '.join(parts)} }}"]
    if kind == "ReLU" and src.boolean():
        return [f"relu_param {{ negative_slope: {src.choice(FLOATS)} }}"]
    if kind == "ELU" and src.boolean():
        return [f"elu_param {{ alpha: {src.choice(FLOATS)} }}"]
    if kind == "Swish" and src.boolean():
        return [f"swish_param {{ beta: {src.choice(FLOATS)} }}"]
    if kind == "Threshold" and src.boolean():
        return [f"threshold_param {{ threshold: {src.choice(FLOATS)} }}"]
    if kind == "Clip":
        fields = [f for f in ("min", "max") if src.integer(0, 5)]
        return [f"clip_param {{ {' '.join(f'{f}: {src.choice(FLOATS)}' for f in fields)} }}"]
    if kind in ("Power", "Exp", "Log"):
        field = {"Power": "power", "Exp": "base", "Log": "base"}[kind]
        return [f"{kind.lower()}_param {{ {field}: {src.choice(FLOATS)} scale: {src.choice(FLOATS)} shift: {src.choice(FLOATS)} }}"]
    if kind == "Dropout":
        return [f"dropout_param {{ dropout_ratio: {src.choice(('0.5', '0', '1', '-0.5', '0.1', 'nan'))} }}"]
    if kind == "Softmax" and src.boolean():
        return [f"softmax_param {{ axis: {src.choice((1, 0, -1, 3, 9))} }}"]
    if kind == "BatchNorm":
        parts = []
        for field, values in (("eps", FLOATS), ("use_global_stats", ("true", "false")),
                              ("moving_average_fraction", FLOATS), ("affine", ("true", "false")),
                              ("momentum", FLOATS), ("track_running_stats", ("true", "false"))):
            if src.integer(0, 3) == 0:
                parts.append(f"{field}: {src.choice(values)}")
        return [f"batch_norm_param {{ {' '.join(parts)} }}"] if parts else []
    if kind in ("Scale", "Bias"):
        parts = [f"axis: {src.choice((1, 0, -1, 2))}"] if src.boolean() else []
        if src.boolean():
            parts.append(f"num_axes: {src.choice((1, 0, -1, 2, 3))}")
        if kind == "Scale" and src.boolean():
            parts.append(f"bias_term: {src.choice(('true', 'false'))}")
        if src.integer(0, 3) == 0:
            parts.append(_filler(src, "filler"))
        return [f"{kind.lower()}_param {{ {' '.join(parts)} }}"] if parts else []
    if kind == "PReLU" and src.boolean():
        return ["prelu_param { channel_shared: true }"]
    if kind == "LRN":
        return [f"lrn_param {{ local_size: {_edgy(src, 1, 7, (0, 2, 100000))} "
                f"norm_region: {src.choice(('ACROSS_CHANNELS', 'WITHIN_CHANNEL'))} alpha: {src.choice(FLOATS)} }}"]
    if kind == "Eltwise":
        parts = [f"operation: {src.choice(('SUM', 'PROD', 'MAX'))}"]
        parts += [f"coeff: {src.choice(FLOATS)}" for _ in range(src.choice((0, 0, n_bottoms, 1)))]
        return [f"eltwise_param {{ {' '.join(parts)} }}"]
    if kind == "Concat" and src.boolean():
        return [f"concat_param {{ axis: {src.choice((1, 0, 2, 3, -1, 4))} }}"]
    if kind == "Crop":
        parts = [f"axis: {src.choice((2, 1, 0, 3, -1, 4))}"] if src.boolean() else []
        parts += [f"offset: {_edgy(src, 0, 2, (1000, 4294967295))}" for _ in range(src.choice((0, 1, 2)))]
        return [f"crop_param {{ {' '.join(parts)} }}"]
    if kind == "Flatten" and src.boolean():
        return [f"flatten_param {{ axis: {src.choice((1, 0, 2, -1, 5))} end_axis: {src.choice((-1, 1, 2, 0, -4))} }}"]
    if kind == "Reshape":
        dims = " ".join(f"dim: {src.choice((0, -1, 1, 2, 3, 4, -2, 4294967295))}" for _ in range(src.integer(0, 4)))
        extra = f" axis: {src.choice((0, 1, -1, 2, 9))}" if src.integer(0, 2) == 0 else ""
        extra += f" num_axes: {src.choice((-1, 0, 1, 2, -2))}" if src.integer(0, 2) == 0 else ""
        return [f"reshape_param {{ shape {{ {dims} }}{extra} }}"]
    if kind == "Interp":
        return [src.choice((
            f"interp_param {{ zoom_factor: {_edgy(src, 1, 3, (0, -1, 100000))} }}",
            f"interp_param {{ shrink_factor: {_edgy(src, 1, 3, (0, -2))} }}",
            f"interp_param {{ height: {_edgy(src, 1, 9, (0, -3, 100000))} width: {_edgy(src, 1, 9, (0, 100000))} }}",
            "interp_param { pad_beg: 1 }",
        ))]
    if kind == "Tile":
        return [f"tile_param {{ axis: {src.choice((1, 0, 2, -1, 6))} tiles: {_edgy(src, 1, 3, (0, -1, 2147483647))} }}"]
    if kind == "Slice":
        points = " ".join(f"slice_point: {src.integer(0, 5)}" for _ in range(src.choice((0, 0, 1, 2))))
        return [f"slice_param {{ axis: {src.choice((1, 0, 2, -1, 4))} {points} }}"]
    if kind == "Python":
        return ['python_param { module: "os" layer: "system" param_str: "touch /tmp/pwned" }']
    if kind == "Input":
        return [f"input_param {{ shape {{ dim: 1 dim: {src.integer(1, 3)} dim: 5 dim: 5 }} }}"]
    return []


def _input_declaration(src: Any) -> str:
    rank = src.choice((4,) * 24 + (2, 2, 3, 3, 5, 5, 0))
    dims = [1] + [src.integer(1, 3)] + [src.integer(3, 12) for _ in range(max(0, rank - 2))]
    dims = dims[:rank]
    if src.integer(0, 39) == 0 and dims:
        dims[src.integer(0, len(dims) - 1)] = src.choice((0, -1, 100000, 2147483647, 9223372036854775807))
    shape = " ".join(f"dim: {d}" for d in dims)
    form = src.integer(0, 39)
    if form <= 5:
        return f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {shape} }} }} }}\n'
    if form == 6 and len(dims) == 4:
        return 'input: "data"\n' + "".join(f"input_dim: {d}\n" for d in dims)
    if form == 7:
        return 'input: "data"\n'  # no shape: the caller must give one
    return f'input: "data"\ninput_shape {{ {shape} }}\n'


def prototxt_net(src: Any, max_layers: int = 6) -> str:
    """The text of a random net of up to ``max_layers`` layers."""
    text = f'name: "fuzz{src.integer(0, 99)}"\n' + _input_declaration(src)
    blobs = ["data"]
    for i in range(src.integer(1, max_layers)):
        group = src.integer(0, 19)
        if group < 4 or i == 0 and src.boolean():
            kind, n_bottoms, n_tops = "Convolution", 1, 1
        elif group < 13:
            kind, n_bottoms, n_tops = src.choice(_UNARY), 1, 1
        elif group < 17:
            kind, n_bottoms, n_tops = src.choice(_COMBINE), src.choice((2, 2, 3)), 1
        elif group < 19:
            kind, n_bottoms, n_tops = src.choice(_MULTI_TOP), 1, src.choice((2, 3))
        else:
            kind, n_bottoms, n_tops = src.choice(_ODD), src.choice((1, 2)), src.choice((0, 1))
        if kind == "Pooling" and src.integer(0, 5) == 0:
            n_tops = 2
        bottoms = [src.choice(blobs) for _ in range(n_bottoms)]
        if src.integer(0, 39) == 0:
            bottoms[0] = src.choice(("missing", "data_", "Data"))
        in_place = n_tops == 1 and n_bottoms == 1 and src.integer(0, 3) == 0
        tops = [bottoms[0]] if in_place else [f"b{i}_{t}" for t in range(n_tops)]
        if src.integer(0, 29) == 0 and blobs:
            tops[0:1] = [src.choice(blobs)]  # re-writes an earlier blob: not in place
        lines = [f'name: "{src.choice(("l", "conv/", "1x", "class", "forward"))}{i}"', f'type: "{kind}"']
        lines += [f'bottom: "{b}"' for b in bottoms] + [f'top: "{t}"' for t in tops]
        lines += _params(src, kind, n_bottoms)
        if kind in ("Convolution", "InnerProduct", "Scale", "PReLU", "BatchNorm") and src.integer(0, 15) == 0:
            lines += [_blob(src) for _ in range(src.integer(1, 3))]
        if src.integer(0, 11) == 0:
            lines.append(f'param {{ name: "{src.choice(("w", "shared", "w2"))}" }}')
        if src.integer(0, 14) == 0:
            lines.append(f"include {{ phase: {src.choice(('TRAIN', 'TEST'))} }}")
        text += "layer {\n  " + "\n  ".join(lines) + "\n}\n"
        blobs += [t for t in tops if t not in blobs]
    return text


# -- mutations of real files ------------------------------------------------------------------

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")
_QUOTED = re.compile(r'"[^"\n]*"')
_EDGE_NUMBERS = ("0", "-1", "1", "2", "3", "7", "65536", "100000", "2147483647", "4294967295",
                 "-2147483648", "9223372036854775807", "1e38", "nan", "inf", "-inf", "0.5")
_SUPPORTED_TYPES = ("Convolution", "Pooling", "InnerProduct", "ReLU", "Eltwise", "Concat", "BatchNorm",
                    "Scale", "Deconvolution", "Reshape", "Slice", "Crop", "Flatten", "LRN", "Interp", "Tile",
                    "Softmax", "Power", "PReLU", "Bias", "Dropout", "Split", "Silence", "Input", "Python")


def mutate_text(src: Any, text: str, edits: int = 3) -> str:
    """``text`` with ``edits`` random edits."""
    for _ in range(edits):
        op = src.integer(0, 7)
        if op <= 2:
            numbers = list(_NUMBER.finditer(text))
            if numbers:
                m = numbers[src.integer(0, len(numbers) - 1)]
                text = text[: m.start()] + src.choice(_EDGE_NUMBERS) + text[m.end():]
        elif op == 3:
            lines = text.split("\n")
            del lines[src.integer(0, len(lines) - 1)]
            text = "\n".join(lines)
        elif op == 4:
            lines = text.split("\n")
            lines.insert(src.integer(0, len(lines)), lines[src.integer(0, len(lines) - 1)])
            text = "\n".join(lines)
        elif op == 5:
            quoted = list(_QUOTED.finditer(text))
            if len(quoted) > 1:
                a, b = quoted[src.integer(0, len(quoted) - 1)], quoted[src.integer(0, len(quoted) - 1)]
                if a.start() != b.start():
                    text = text[: a.start()] + b.group() + text[a.end():]
        elif op == 6:
            types = list(re.finditer(r'type: *"\w+"', text))
            if types:
                m = types[src.integer(0, len(types) - 1)]
                text = text[: m.start()] + f'type: "{src.choice(_SUPPORTED_TYPES)}"' + text[m.end():]
        elif text:
            i = src.integer(0, len(text) - 1)
            text = text[:i] + chr(src.integer(0, 127)) + text[i + 1:]
    return text


# -- random CNNs for the fx front end -----------------------------------------------------------

def cnn_spec(src: Any, max_blocks: int = 5) -> Dict[str, Any]:
    """A random CNN as plain data: input channels and size, then blocks (conv, norm,
    activation, pooling, two-branch blocks joined by add or concat, residual blocks), and
    optionally a global pool and a linear classifier."""
    channels = src.integer(1, 4)
    size = src.integer(5, 16)
    blocks: List[Dict[str, Any]] = []
    c = channels
    for _ in range(src.integer(1, max_blocks)):
        kind = src.choice(("conv", "conv", "conv", "norm", "act", "pool", "branch", "residual"))
        if kind == "conv":
            block = _conv_block(src, c)
            c = block["out"]
        elif kind == "branch":
            left, right = _conv_block(src, c), _conv_block(src, c)
            if src.boolean():  # make both branches the same shape, most of the time joinable
                right = dict(left, groups=1, out=right["out"] if src.boolean() else left["out"])
            join = src.choice(("add", "cat"))
            block = {"kind": "branch", "left": left, "right": right, "join": join}
            c = left["out"] + right["out"] if join == "cat" else left["out"]
        elif kind == "residual":
            inner = dict(_conv_block(src, c), out=c, stride=1, groups=1)
            inner["padding"] = inner["dilation"] * (inner["kernel"] - 1) // 2 if inner["kernel"] % 2 else inner["padding"]
            block = {"kind": "residual", "conv": inner}
        elif kind == "norm":
            block = {"kind": "norm", "type": src.choice(("bn", "bn", "gn", "in")), "channels": c}
        elif kind == "act":
            block = {"kind": "act", "type": src.choice(("relu", "relu6", "sigmoid", "hardswish", "gelu"))}
        else:
            block = {"kind": "pool", "type": src.choice(("max", "avg")), "kernel": src.integer(1, 3), "stride": src.integer(1, 2)}
        blocks.append(block)
    head = src.choice(("none", "none", "linear", "mean_linear"))
    classes = src.integer(1, 5)
    return {"channels": channels, "size": size, "blocks": blocks, "head": head, "classes": classes, "final": c}


def _conv_block(src: Any, c: int) -> Dict[str, Any]:
    groups = src.choice([g for g in (1, 2, 3, 4) if c % g == 0])
    out = groups * src.integer(1, 3)
    return {
        "kind": "conv",
        "in": c,
        "out": out,
        "kernel": src.integer(1, 5),
        "stride": src.choice((1, 1, 2, 3)),
        "padding": src.integer(0, 2),
        "dilation": src.choice((1, 1, 1, 2, 3)),
        "groups": groups,
        "bias": src.boolean(),
        "transposed": src.integer(0, 7) == 0,
    }


def _make_conv(block: Dict[str, Any]) -> nn.Module:
    if block["transposed"]:
        return nn.ConvTranspose2d(block["in"], block["out"], block["kernel"], block["stride"], block["padding"],
                                  groups=block["groups"], bias=block["bias"], dilation=block["dilation"])
    return nn.Conv2d(block["in"], block["out"], block["kernel"], block["stride"], block["padding"],
                     block["dilation"], block["groups"], block["bias"])


class _Branch(nn.Module):
    def __init__(self, block: Dict[str, Any]):
        super().__init__()
        self.left, self.right = _make_conv(block["left"]), _make_conv(dict(block["right"], **{"in": block["left"]["in"]}))
        self.join = block["join"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.left(x), self.right(x)
        return a + b if self.join == "add" else torch.cat([a, b], dim=1)


class _Residual(nn.Module):
    def __init__(self, block: Dict[str, Any]):
        super().__init__()
        self.conv = _make_conv(block["conv"])
        self.bn = nn.BatchNorm2d(block["conv"]["out"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn(self.conv(x)))


_ACTS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "sigmoid": nn.Sigmoid, "hardswish": nn.Hardswish, "gelu": nn.GELU}


class RandomCNN(nn.Module):
    """The module a :func:`cnn_spec` describes. Its layers are built as the spec says even
    where they do not fit together (a kernel larger than its input, an add of two shapes):
    those nets must be refused by ``automtl.compile`` with a clear error."""

    def __init__(self, spec: Dict[str, Any]):
        super().__init__()
        layers: List[nn.Module] = []
        for block in spec["blocks"]:
            if block["kind"] == "conv":
                layers.append(_make_conv(block))
            elif block["kind"] == "branch":
                layers.append(_Branch(block))
            elif block["kind"] == "residual":
                layers.append(_Residual(block))
            elif block["kind"] == "norm":
                c = block["channels"]
                layers.append({"bn": lambda: nn.BatchNorm2d(c), "gn": lambda: nn.GroupNorm(1, c),
                               "in": lambda: nn.InstanceNorm2d(c, affine=True)}[block["type"]]())
            elif block["kind"] == "act":
                layers.append(_ACTS[block["type"]]())
            else:
                pool = nn.MaxPool2d if block["type"] == "max" else nn.AvgPool2d
                layers.append(pool(block["kernel"], block["stride"]))
        self.body = nn.Sequential(*layers)
        self.head_kind = spec["head"]
        if spec["head"] == "linear":
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(spec["final"], spec["classes"])
        elif spec["head"] == "mean_linear":
            self.fc = nn.Linear(spec["final"], spec["classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(x)
        if self.head_kind == "linear":
            return self.fc(torch.flatten(self.pool(x), 1))
        if self.head_kind == "mean_linear":
            return self.fc(x.mean(dim=(2, 3)))
        return x
