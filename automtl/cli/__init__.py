"""The ``automtl`` command line: one module per sub-command.

Each command module has ``register(subparsers)``, which adds its parser and sets
``run=<function(args) -> int>`` as the parser's default. User errors (any
:class:`automtl.errors.AutoMTLError`) print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

from automtl.errors import AutoMTLError


def _command_modules() -> List[object]:
    # imported here, not at package import, so `automtl --help` stays fast; one line per command
    from automtl.cli import compile_cmd
    from automtl.cli import search_cmd
    from automtl.cli import export_cmd
    from automtl.cli import info_cmd

    return [compile_cmd, search_cmd, export_cmd, info_cmd]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="automtl",
        description="Compile CNN backbones into multi-task supermodels, search sharing policies, "
        "and export the models they find.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _command_modules():
        module.register(commands)  # type: ignore[attr-defined]
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except AutoMTLError as exc:
        print(f"automtl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"automtl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
