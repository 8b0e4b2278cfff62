"""Prototxt text -> :class:`NetSpec`: the layers of the net in its TEST phase, in one form for
both the current (``layer {}``) and the V1 (``layers {}``) format.

Parsing uses ``google.protobuf.text_format`` against the schema in ``proto/automtl.proto``;
nothing in the file is ever evaluated. Errors carry the file, line and column.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Any, Callable, List, Optional, Tuple

from google.protobuf import text_format

from automtl.errors import PrototxtSyntaxError, UnknownFieldError, UnsupportedLayerError

from .cut import apply_cut, suggest_cut
from .schema import NetParameter, Phase, V1_TYPE_NAMES, default_params, has_field, uses_automtl_dialect
from .source import PrototxtSource


@dataclasses.dataclass
class LayerSpec:
    """One layer, whichever format it was written in."""

    index: int
    name: str
    type: str
    bottoms: Tuple[str, ...]
    tops: Tuple[str, ...]
    #: the LayerParameter or V1LayerParameter message
    message: Any
    #: line of the layer's opening keyword in the file (1-based), when known
    line: Optional[int]
    #: names given to its parameters (``param { name: ... }``), used for weight sharing
    param_names: Tuple[str, ...] = ()

    def params(self, field: str) -> Any:
        """The layer's ``field`` message (e.g. ``"convolution_param"``); defaults if unset."""
        if field in self.message.DESCRIPTOR.fields_by_name:
            return getattr(self.message, field)
        return default_params(field)

    def has(self, field: str) -> bool:
        return has_field(self.message, field)

    @property
    def blobs(self) -> List[Any]:
        return list(self.message.blobs)

    def where(self) -> str:
        line = f", line {self.line}" if self.line else ""
        return f"layer '{self.name}' ({self.type}{line})"


@dataclasses.dataclass
class NetSpec:
    name: str
    source: PrototxtSource
    #: net-level input declarations (``input:`` names) and their shapes (None: not declared)
    inputs: List[Tuple[str, Optional[Tuple[int, ...]]]]
    #: layers of the TEST phase, in file order
    layers: List[LayerSpec]
    #: layers left out by include/exclude rules
    excluded: List[LayerSpec]
    #: the blobs asked for with ``output=`` (empty: every blob no layer reads is an output)
    outputs: Tuple[str, ...] = ()
    #: layers dropped because ``output=`` does not need them (see :mod:`.cut`)
    cut: List[LayerSpec] = dataclasses.field(default_factory=list)
    #: written in the AutoMTL project's dialect (see :data:`.schema.AUTOMTL_DIALECT_FIELDS`)
    automtl_dialect: bool = False

    @property
    def label(self) -> str:
        return self.source.label


# -- locating layer blocks -----------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r\f\v]+) | (?P<newline>\n) | (?P<comment>\#[^\n]*)
    | (?P<string>"(?:[^"\\\n]|\\.)*"? | '(?:[^'\\\n]|\\.)*'?)
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*) | (?P<open>[{<]) | (?P<close>[}>]) | (?P<other>.)
    """,
    re.X,
)


def layer_block_spans(text: str) -> List[Tuple[str, int, int]]:
    """``(keyword, first line, last line)`` of every top-level ``layer``/``layers`` block, in
    file order. A light tokenizer (strings and comments aware), only used to point error
    messages at the right lines (and, for a cut, to blank the layers it drops)."""
    return [block[:3] for block in _layer_blocks(text)]


def _layer_blocks(text: str) -> List[Tuple[str, int, int, int, int]]:
    """:func:`layer_block_spans` plus each block's character offsets ``[start, end)``."""
    spans: List[Tuple[str, int, int, int, int]] = []
    depth = 0
    line = 1
    pending: Optional[Tuple[str, int, int]] = None  # a top-level layer keyword waiting for its brace
    current: Optional[Tuple[str, int, int]] = None
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        if kind == "newline":
            line += 1
            continue
        if kind in ("space", "comment"):
            continue
        if kind == "string":
            line += match.group().count("\n")
            pending = None
            continue
        if kind == "word" and depth == 0:
            pending = (match.group(), line, match.start()) if match.group() in ("layer", "layers") else None
            continue
        if kind == "open":
            if depth == 0 and pending is not None:
                current = pending
            depth += 1
            pending = None
            continue
        if kind == "close":
            depth = max(0, depth - 1)
            if depth == 0 and current is not None:
                spans.append((current[0], current[1], line, current[2], match.end()))
                current = None
            continue
        if not (kind == "other" and match.group() == ":"):
            pending = None
    return spans


#: Deepest block nesting accepted. Caffe's schema nests four levels (net > layer > settings >
#: filler); protobuf's text parser recurses once per level, so a hostile file nested
#: thousands deep would exhaust Python's stack.
MAX_NESTING = 64

_NESTING_TOKEN = re.compile(r""""(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?|\#[^\n]*|[{}<>\n]""")


def check_nesting(source: PrototxtSource) -> None:
    """Refuse text whose blocks nest deeper than :data:`MAX_NESTING`, before parsing it."""
    depth, line, line_start = 0, 1, 0
    for match in _NESTING_TOKEN.finditer(source.text):
        token = match.group()
        if token == "\n":
            line, line_start = line + 1, match.end()
        elif token in "{<":
            depth += 1
            if depth > MAX_NESTING:
                column = match.start() - line_start + 1
                raise PrototxtSyntaxError(
                    f"{source.label}:{line}:{column}: blocks are nested more than {MAX_NESTING} deep; a Caffe "
                    "net nests a few levels (net > layer > settings > filler). Check the braces"
                )
        elif token in "}>":
            depth = max(0, depth - 1)
        elif token[0] in "\"'":
            line += token.count("\n")


# -- parsing -------------------------------------------------------------------------------

_POSITION = re.compile(r"^\s*\d+:\d+\s*:\s*")
_NO_FIELD = re.compile(r'Message type "(?:[\w.]+\.)?(\w+)" has no field named "([^"]+)"')
_NO_ENUM = re.compile(r'Enum type "(?:automtl\.)?([\w.]+)" has no value named (\S+?)\.?$')


def _message_descriptor(name: str):
    from automtl.proto import automtl_pb2

    return automtl_pb2.DESCRIPTOR.message_types_by_name.get(name) or _nested_descriptor(automtl_pb2.DESCRIPTOR, name)


def _nested_descriptor(file_descriptor, name: str):
    for message in file_descriptor.message_types_by_name.values():
        for nested in message.nested_types:
            if nested.name == name:
                return nested
    return None


def _unknown_field_hint(message_type: str, field: str) -> str:
    descriptor = _message_descriptor(message_type)
    if descriptor is None:
        return ""
    close = difflib.get_close_matches(field, [f.name for f in descriptor.fields], n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _enum_hint(enum_path: str) -> str:
    from automtl.proto import automtl_pb2

    owner, _, enum_name = enum_path.rpartition(".")
    descriptor = automtl_pb2.DESCRIPTOR.message_types_by_name.get(owner) if owner else None
    enum = None
    if descriptor is not None:
        enum = descriptor.enum_types_by_name.get(enum_name)
    elif enum_name in automtl_pb2.DESCRIPTOR.enum_types_by_name:
        enum = automtl_pb2.DESCRIPTOR.enum_types_by_name[enum_name]
    if enum is None:
        return ""
    return f"; the values are {', '.join(v.name for v in enum.values)}"


def _block_index_at(spans: List[Tuple[str, int, int]], keyword: str, line: int) -> Optional[int]:
    """Index among the ``keyword`` blocks of the block holding ``line``."""
    index = 0
    for kw, first, last in spans:
        if kw != keyword:
            continue
        if first <= line <= last:
            return index
        index += 1
    return None


def parse_net(source: PrototxtSource, is_supported: Callable[[str], bool], output: Any = None) -> NetSpec:
    """Parse ``source`` into a :class:`NetSpec` (TEST phase).

    ``is_supported(type)`` tells whether a layer type can be built: an unknown field inside a
    layer of an unsupported type (a custom layer's own parameters) is reported as that
    unsupported layer, together with every other unsupported layer of the file.
    ``output`` (blob names, see :mod:`.cut`) keeps only the layers those blobs need; the
    fields of the layers it drops are not checked.
    """
    check_nesting(source)
    net = NetParameter()
    spans = layer_block_spans(source.text)
    try:
        text_format.Parse(source.text, net)
    except text_format.ParseError as exc:
        if output is not None:
            spec = _parse_cut(source, output, is_supported)
            if spec is not None:
                return spec
        _raise_parse_error(source, exc, spans, is_supported)
    spec = _net_spec(source, net, spans)
    return apply_cut(spec, output) if output is not None else spec


def _parse_cut(source: PrototxtSource, output: Any, is_supported: Callable[[str], bool]) -> Optional[NetSpec]:
    """A file that the schema does not read strictly, cut at ``output``: read it leniently,
    cut, then read strictly what the cut keeps (the dropped layers blanked out, line numbers
    unchanged). None when the file does not even read leniently (a syntax error)."""
    lenient = NetParameter()
    try:
        text_format.Parse(source.text, lenient, allow_unknown_field=True)
    except text_format.ParseError:
        return None
    blocks = _layer_blocks(source.text)
    spec = apply_cut(_net_spec(source, lenient, [b[:3] for b in blocks]), output)
    unsupported = [l for l in spec.layers if not is_supported(l.type)]
    if unsupported:
        raise unsupported_layers_error(source.label, unsupported, suggest_cut(spec.layers, is_supported))
    keyword = "layers" if len(lenient.layers) else "layer"
    kept = {l.index for l in spec.layers}
    text = source.text
    for index, (start, end) in enumerate((b[3], b[4]) for b in blocks if b[0] == keyword):
        if index not in kept:
            text = text[:start] + re.sub(r"[^\n]", " ", text[start:end]) + text[end:]
    strict = NetParameter()
    try:
        text_format.Parse(text, strict)
    except text_format.ParseError as exc:
        blanked = dataclasses.replace(source, text=text)
        _raise_parse_error(blanked, exc, layer_block_spans(text), is_supported)
    return spec


def _raise_parse_error(
    source: PrototxtSource,
    exc: text_format.ParseError,
    spans: List[Tuple[str, int, int]],
    is_supported: Callable[[str], bool],
) -> None:
    line, column = exc.GetLine(), exc.GetColumn()
    where = f"{source.label}:{line}:{column}" if line else source.label
    message = _POSITION.sub("", str(exc)).rstrip(".")
    unknown = _NO_FIELD.search(message)
    if unknown is None:
        enum = _NO_ENUM.search(message)
        hint = _enum_hint(enum.group(1)) if enum else ""
        raise PrototxtSyntaxError(
            f"{where}: {message}{hint}. Fix the text at that position (prototxt is protobuf text "
            "format: `field: value` and `block { ... }`)"
        ) from None
    message_type, field = unknown.group(1), unknown.group(2)
    # an unknown field inside a layer automtl cannot build anyway: report the layers instead
    if message_type != "NetParameter" and line:
        lenient = NetParameter()
        try:
            text_format.Parse(source.text, lenient, allow_unknown_field=True)
        except text_format.ParseError:
            lenient = None
        if lenient is not None:
            spec = _net_spec(source, lenient, spans)
            index = _block_index_at(spans, "layers" if len(lenient.layers) else "layer", line)
            everything = spec.layers + spec.excluded
            holder = next((l for l in everything if l.index == index), None) if index is not None else None
            if holder is not None and not is_supported(holder.type):
                # its parameters are unknown to the schema, so the file cannot be read strictly
                # in any phase: list every layer of an unsupported type
                everything.sort(key=lambda l: l.index)
                raise unsupported_layers_error(
                    source.label, [l for l in everything if not is_supported(l.type)], suggest_cut(spec.layers, is_supported)
                )
    hint = _unknown_field_hint(message_type, field)
    raise UnknownFieldError(
        f'{where}: {message_type} has no field "{field}"{hint}. automtl reads the fields of '
        "Caffe's caffe.proto plus its own extensions (proto/automtl.proto); fix the spelling "
        "or remove the field"
    ) from None


def unsupported_layers_error(label: str, layers: List[LayerSpec], cut: Optional[str] = None) -> UnsupportedLayerError:
    """One error listing every layer automtl cannot build, grouped by type; ``cut`` is a blob
    to compile up to that avoids them (see :func:`.cut.suggest_cut`), when there is one."""
    from .layers import supported_types

    by_type: dict = {}
    for layer in layers:
        by_type.setdefault(layer.type or "<no type>", []).append(layer)
    groups = []
    for layer_type, members in by_type.items():
        names = ", ".join(
            f"'{l.name}'" + (f" (line {l.line})" if l.line else "") + _python_layer_detail(l) for l in members
        )
        groups.append(f"{layer_type} ({len(members)}: {names})")
    fix = (
        f"To compile the part of the net before them, cut it at blob '{cut}' (automtl.compile(path, tasks, "
        f"output=\"{cut}\"), or `automtl compile FILE --until {cut}`); or replace them"
        if cut
        else "Replace them"
    )
    return UnsupportedLayerError(
        f"{label}: {len(layers)} layer(s) of types automtl cannot map to torch ops: "
        + "; ".join(groups)
        + f". {fix} with supported layers (e.g. BatchNorm + Scale for a custom BN), or write "
        "the backbone as an nn.Module and compile that. Supported layer types: "
        + ", ".join(supported_types()),
        [(l.name, l.type) for l in layers],
    )


def _python_layer_detail(layer: LayerSpec) -> str:
    if layer.type != "Python" or not layer.has("python_param"):
        return ""
    p = layer.params("python_param")
    return f" [Python code {p.module}.{p.layer}, not run]"


def _shape_of(blob_shape) -> Tuple[int, ...]:
    return tuple(int(d) for d in blob_shape.dim)


def _net_inputs(source: PrototxtSource, net) -> List[Tuple[str, Optional[Tuple[int, ...]]]]:
    names = list(net.input)
    if net.input_shape:
        if len(net.input_shape) != len(names):
            raise PrototxtSyntaxError(
                f"{source.label}: {len(names)} input(s) but {len(net.input_shape)} input_shape "
                "block(s); give one input_shape per input"
            )
        return [(n, _shape_of(s)) for n, s in zip(names, net.input_shape)]
    if net.input_dim:
        dims = [int(d) for d in net.input_dim]
        if len(dims) != 4 * len(names):
            raise PrototxtSyntaxError(
                f"{source.label}: {len(names)} input(s) need {4 * len(names)} input_dim values "
                f"(N, C, H, W each), got {len(dims)}"
            )
        return [(n, tuple(dims[4 * i : 4 * i + 4])) for i, n in enumerate(names)]
    return [(n, None) for n in names]


def _meets(rule, phase: int) -> bool:
    """Caffe's NetStateRule check for the state (TEST phase, level 0, no stages)."""
    if rule.HasField("phase") and rule.phase != phase:
        return False
    if rule.HasField("min_level") and 0 < rule.min_level:
        return False
    if rule.HasField("max_level") and 0 > rule.max_level:
        return False
    if len(rule.stage):
        return False  # the state has no stages
    return True


def _included(message, phase: int) -> bool:
    if len(message.include):
        return any(_meets(rule, phase) for rule in message.include)
    if len(message.exclude):
        return not any(_meets(rule, phase) for rule in message.exclude)
    return True


def _net_spec(source: PrototxtSource, net, spans: List[Tuple[str, int, int]]) -> NetSpec:
    if len(net.layer) and len(net.layers):
        raise PrototxtSyntaxError(
            f"{source.label}: the file mixes `layer {{}}` and the old `layers {{}}` blocks; use one format"
        )
    v1 = len(net.layers) > 0
    messages = net.layers if v1 else net.layer
    lines = [first for kw, first, _ in spans if kw == ("layers" if v1 else "layer")]
    phase = Phase.Value("TEST")
    kept: List[LayerSpec] = []
    excluded: List[LayerSpec] = []
    for i, message in enumerate(messages):
        if v1 and message.HasField("layer"):
            line = f":{lines[i]}" if i < len(lines) else ""
            raise PrototxtSyntaxError(
                f"{source.label}{line}: layer '{message.layer.name or message.name}' is written in the V0 format "
                "(`layers { layer { ... } }`, before 2014), which automtl does not build; upgrade the file with "
                "Caffe's tools/upgrade_net_proto_text"
            )
        if v1:
            layer_type = V1_TYPE_NAMES.get(message.DESCRIPTOR.fields_by_name["type"].enum_type.values_by_number[message.type].name, "")
            param_names = tuple(message.param)
        else:
            layer_type = message.type
            param_names = tuple(p.name for p in message.param)
        spec = LayerSpec(
            index=i,
            name=message.name or f"layer{i}",
            type=layer_type,
            bottoms=tuple(message.bottom),
            tops=tuple(message.top),
            message=message,
            line=lines[i] if i < len(lines) else None,
            param_names=param_names,
        )
        (kept if _included(message, phase) else excluded).append(spec)
    return NetSpec(
        name=net.name or "net",
        source=source,
        inputs=_net_inputs(source, net),
        layers=kept,
        excluded=excluded,
        automtl_dialect=any(uses_automtl_dialect(m) for m in messages),
    )
