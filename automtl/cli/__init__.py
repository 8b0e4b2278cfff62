"""The ``automtl`` command line: one module per sub-command.

Each command module has ``register(subparsers)``, which adds its parser and sets
``run=<function(args) -> int>`` as the parser's default. User errors (any
:class:`automtl.errors.AutoMTLError`) print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

from automtl.errors import AutoMTLError, ConfigError, RunInterrupted


def _command_modules() -> List[object]:
    # imported here, not at package import, so `automtl --help` stays fast; one line per command
    from automtl.cli import compile_cmd
    from automtl.cli import search_cmd
    from automtl.cli import export_cmd
    from automtl.cli import info_cmd
    from automtl.cli import show_cmd
    from automtl.cli import compare_cmd
    from automtl.cli import group_cmd
    from automtl.cli import sweep_cmd

    return [compile_cmd, search_cmd, export_cmd, info_cmd, show_cmd, compare_cmd, group_cmd, sweep_cmd]


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


def set_threads(threads: Optional[int]) -> None:
    """``--threads N``: torch's intra-op threads for this command (None: torch's default)."""
    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"--threads must be 1 or more, got {threads}")
    import torch

    torch.set_num_threads(threads)


def main(argv: Optional[Sequence[str]] = None) -> int:
    import torch

    parser = build_parser()
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    try:
        return int(args.run(args) or 0)
    except RunInterrupted as exc:  # a checkpoint was written: not an error, a stop
        print(f"automtl {args.command}: {exc}", file=sys.stderr)
        return 128 + exc.signal
    except AutoMTLError as exc:
        print(f"automtl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"automtl {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        torch.set_num_threads(threads)  # --threads holds for one command: main() is also called in-process


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
