"""``automtl compile``: a prototxt backbone + tasks -> a summary of the supermodel (and the file)."""

from __future__ import annotations

import argparse
import math
import os
from typing import List, Optional, Sequence

from automtl.compiler.passes import DEFAULT_NORM, NORM_POLICIES
from automtl.errors import ConfigError

DESCRIPTION = """\
Compile a prototxt backbone into a multi-task supermodel and print what it holds: the
searchable operators, the size of the sharing-policy search space, and the parameters of the
backbone and of the supermodel. Every task gets a head from the backbone's output to its
channels: a 1x1 convolution on a feature map, a linear layer on a vector.
"""

EPILOG = """\
BACKBONE is a .prototxt file or the name of a shipped backbone (deeplab_resnet34, resnet18,
mobilenetv2, mnasnet). Caffe files load unchanged: see the README for the layer types and
the rules (TEST phase, BatchNorm + Scale fusion, input declaration).

examples:
  automtl compile deeplab_resnet34 --task seg:19 --task depth:1
  automtl compile net.prototxt --task seg:40 --task normal:3 --out super.pt
  automtl compile train_val.prototxt --task cls:10 --input-shape 1,3,227,227
  automtl compile ssd.prototxt --task seg:21 --until fc7 --weights ssd.caffemodel

--out writes a file that torch.load(weights_only=True) reads; automtl.load_supermodel(path)
rebuilds the supermodel from it. Exit status: 0 on success, 2 on a user error.
"""


def parse_task_arg(text: str):
    """A ``--task`` value -> the task's :class:`~automtl.serialize.HeadSpec`.

    ``name:channels`` (e.g. ``seg:19``). This is the one place task specs are read, so more
    forms (e.g. built-in kinds) go here."""
    from automtl.serialize import HeadSpec

    name, sep, channels = text.partition(":")
    if not sep or not name or ":" in channels:
        raise ConfigError(f"--task {text!r}: write NAME:CHANNELS, e.g. --task seg:19")
    try:
        count = int(channels)
    except ValueError:
        raise ConfigError(f"--task {text!r}: the channel count {channels!r} is not an integer") from None
    if count < 1:
        raise ConfigError(f"--task {text!r}: the channel count must be at least 1")
    from automtl.task import Task

    Task(name)  # checks the name
    return HeadSpec(name, count)


def parse_shape_arg(text: str) -> List[int]:
    """``--input-shape 1,3,224,224`` -> [1, 3, 224, 224]."""
    try:
        dims = [int(part) for part in text.replace("x", ",").split(",")]
    except ValueError:
        raise ConfigError(f"--input-shape {text!r}: write comma-separated integers, e.g. 1,3,224,224") from None
    if not dims or any(d < 1 for d in dims):
        raise ConfigError(f"--input-shape {text!r}: every dimension must be a positive integer")
    return dims


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compile",
        help="compile a prototxt backbone into a multi-task supermodel",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("backbone", metavar="BACKBONE", help="a .prototxt file or a shipped backbone name")
    parser.add_argument(
        "--task",
        dest="tasks",
        action="append",
        required=True,
        metavar="NAME:CHANNELS",
        help="a task and its output channels, e.g. seg:19 (repeat for every task)",
    )
    parser.add_argument("--out", metavar="PATH", help="write the compiled supermodel here (e.g. super.pt)")
    parser.add_argument(
        "--input-shape",
        metavar="N,C,H,W",
        help="the input shape to compile for (default: the one the file declares, batch 1); needed for "
        "training nets whose Data layers do not declare one",
    )
    parser.add_argument(
        "--until",
        dest="until",
        action="append",
        metavar="BLOB",
        help="compile up to this blob, the one the task heads read; the layers it does not need - detection "
        "heads, proposal layers, losses - are dropped before any check",
    )
    parser.add_argument(
        "--weights",
        metavar="FILE",
        help="a Caffe .caffemodel whose blobs initialise the layers of the same names (shapes checked)",
    )
    parser.add_argument(
        "--norm",
        choices=NORM_POLICIES,
        default=DEFAULT_NORM,
        help="normalisation layers: follow the operator they normalise (default), a copy per task "
        "(batch statistics per task, as the original AutoMTL code), or searched on their own",
    )
    parser.add_argument("--verbose", action="store_true", help="also print every node: operator, shapes, role")
    parser.set_defaults(run=run)


def _space(exponent: int) -> str:
    if exponent == 0:
        return "1"
    digits = exponent * math.log10(3)
    mantissa = 10 ** (digits - math.floor(digits))
    return f"3^{exponent} (about {mantissa:.2f}e{int(math.floor(digits))})"


def _shape(shape: Optional[Sequence[int]]) -> str:
    return "?" if shape is None else "x".join(str(int(s)) for s in shape)


def summary(sm, source: str) -> str:
    """What ``automtl compile`` prints about a compiled supermodel."""
    from automtl.compiler.ir import SEARCHABLE

    graph = sm.graph
    ops = {}
    for node in graph:
        if node.role == SEARCHABLE:
            kind = node.description.split("(")[0]
            ops[kind] = ops.get(kind, 0) + 1
    tasks = ", ".join(f"{t.name} ({_channels(t.head)})" for t in sm.tasks)
    head_params = sum(p.numel() for p in sm.heads.parameters())
    lines = [
        f"compiled '{sm.backbone_name}' from {source} for {sm.num_tasks} task(s): {tasks}",
        f"input {_shape(graph[graph.inputs[0]].out_shape)} -> backbone output {_shape(graph[graph.output].out_shape)}",
        f"searchable operators: {len(sm.searchable_nodes)} ("
        + ", ".join(f"{n} {k}" for k, n in sorted(ops.items()))
        + f"), in {max((n.depth or 0) for n in graph if n.role == SEARCHABLE) + 1} depth levels",
        f"search space: {_space(sm.num_tasks * len(sm.searchable_nodes))} sharing policies "
        f"(shared / own / skip per task and operator)",
        f"parameters: backbone {sm.backbone_parameters():,}; supermodel {sm.num_parameters():,} "
        f"(heads {head_params:,}; + {sum(p.numel() for p in sm.arch_parameters()):,} policy logits)",
    ]
    return "\n".join(lines)


def _channels(head) -> str:
    out = getattr(head, "out_channels", None) or getattr(head, "out_features", None)
    return f"{out} channel{'s' if out != 1 else ''}" if out else type(head).__name__


def run(args: argparse.Namespace) -> int:
    from automtl.serialize import compile_with_heads, save_supermodel

    heads = [parse_task_arg(text) for text in args.tasks]
    names = [h.name for h in heads]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(f"--task names must be unique; {', '.join(duplicated)} is given twice")
    shape = parse_shape_arg(args.input_shape) if args.input_shape else None
    if args.until and len(args.until) > 1:
        raise ConfigError(
            f"--until is given {len(args.until)} times ({', '.join(args.until)}); the task heads read one blob, so "
            "name one (automtl.compile(path, tasks, output=[...]) returns several)"
        )
    sm = compile_with_heads(args.backbone, heads, norm=args.norm, input_shape=shape, output=args.until, weights=args.weights)
    source = args.backbone if os.path.exists(args.backbone) else f"the shipped '{args.backbone}'"
    print(summary(sm, source))
    if args.verbose:
        print()
        print(sm.summary())
    if args.out:
        save_supermodel(sm, args.out)
        print(f"wrote {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MiB); load it with automtl.load_supermodel")
    return 0
