"""``automtl info MODEL_OR_RUN``: per task, parameters, MACs/FLOPs and what it shares with whom."""

from __future__ import annotations

import argparse
from typing import Optional, Tuple

from automtl.errors import ConfigError

DESCRIPTION = """\
Print what a derived multi-task model costs per task: its parameters, its multiply-accumulates
(MACs) and FLOPs (2 x MACs) for one input of the given size, and, for every task, which
operators it shares with which other tasks and which are its own. A task's cost counts every
operator on its path (shared ones included); 'all tasks' counts each operator once - the
model's real cost, since shared work is computed once.
"""

EPILOG = """\
MODEL_OR_RUN is a search run directory (automtl search --out DIR) or a file written by
automtl.save_model(model, path, spec).

MACs count convolutions, linear layers / matmuls, and one per output element for each
normalisation layer; pooling, activations and element-wise ops are not counted.

examples:
  automtl info runs/scenes
  automtl info model.pt --input-size 3x224x224

Exit status: 0 on success, 2 on a user error.
"""


def parse_input_size(text: str) -> Tuple[int, ...]:
    """``3x224x224`` -> (3, 224, 224): one input's size, without the batch."""
    try:
        dims = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--input-size {text!r}: write CxHxW, e.g. 3x224x224") from None
    if len(dims) < 1 or any(d < 1 for d in dims):
        raise ConfigError(f"--input-size {text!r}: every dimension must be a positive integer, e.g. 3x224x224")
    return dims


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="per-task parameters, MACs/FLOPs and sharing of a derived model",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL_OR_RUN", help="a search run directory or a saved derived-model file")
    parser.add_argument(
        "--input-size",
        metavar="CxHxW",
        help="size of one input (no batch), e.g. 3x224x224; default: the size the model was built for",
    )
    parser.add_argument("--trust-code", action="store_true",
                        help="the model's backbone is a factory of yours (module:<package.module>:<factory>): import and call it")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from automtl.export.cost import model_cost
    from automtl.export.saved import load_derived

    size: Optional[Tuple[int, ...]] = parse_input_size(args.input_size) if args.input_size else None
    loaded = load_derived(args.model, trust_code=args.trust_code)
    if size is None:
        size = loaded.input_shape or (3, 224, 224)
    model = loaded.model
    print(f"{loaded.source}: {len(model.task_names)} tasks ({', '.join(model.task_names)})")
    if model.policy is not None:
        policy = model.policy
        print(
            f"policy: {len(policy.nodes)} searchable operators x {len(policy.tasks)} tasks: "
            f"{policy.count('shared')} shared, {policy.count('own')} own, {policy.count('skip')} skipped"
        )
    print()
    print(model_cost(model, size).report())
    return 0
