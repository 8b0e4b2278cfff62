"""``automtl group``: task grouping - which tasks to train together under an inference budget."""

from __future__ import annotations

import argparse
import time
from typing import Any, List

from automtl.cli import set_threads
from automtl.cli.compare_cmd import add_config_arguments, build_config, default_out
from automtl.errors import ConfigError

DESCRIPTION = """\
Task grouping (Standley et al., 2020): train an all-shared network for every subset of the
tasks (or only for subsets of one and two tasks, predicting larger ones from them), plus
half-size single-task networks; record each network's validation loss per task and its
inference cost; then, for every budget, choose exactly (branch and bound) the networks that
cover every task with the lowest total validation loss within the budget, train the chosen
networks fully, and print the groups per budget.

BUDGET is in units of one full-size network: the multiply-accumulates of the backbone (the
task heads not counted) of the config's model per image. A full-size network costs 1, a
half-size one (every backbone width / sqrt 2) about 0.5; --budget 2.5 allows e.g. two
full-size networks and one half-size one.

Each candidate trains for --fraction of post_train.steps (on scenes 200 steps here, against
automtl search's 300, so that the 19 candidates and the chosen networks train in a few
minutes on a 2-core CPU; change it with --config or --set post_train.steps=N).
"""

EPILOG = """\
The run directory holds candidates/<network>/ and final/<network>/ (ordinary run
directories), grouping.json (every candidate's cost and losses, the choices) and the table as
table.txt, table.md and table.csv.

examples:
  automtl group --benchmark scenes --budget 2.5
  automtl group --benchmark scenes --budget 1,2,3 --candidates pairs --fraction 0.2

Exit status: 0 on success, 2 on a user error.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "group",
        help="task grouping: choose which tasks to train together under an inference budget",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    grouping = parser.add_argument_group("grouping")
    grouping.add_argument("--budget", action="append", default=[], metavar="BUDGET",
                          help="inference budget in full-size networks (repeatable, or comma-separated: 1,2.5); "
                          "default: 1, 1.5, ..., number of tasks")
    grouping.add_argument("--candidates", choices=("all", "pairs"),
                          help="networks to train: every subset of tasks (all), or subsets of 1-2 tasks with the "
                          "higher-order approximation for larger ones (pairs)")
    grouping.add_argument("--fraction", type=float,
                          help="share of post_train.steps each candidate trains before the choice "
                          "(early-stopping approximation when < 1; default 0.25)")
    grouping.add_argument("--no-half-size", action="store_true", help="no half-size single-task candidates")
    add_config_arguments(parser)
    parser.set_defaults(run=run_group)


def parse_budgets(values: List[str]) -> List[float]:
    budgets: List[float] = []
    for text in values:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                value = float(part)
            except ValueError:
                raise ConfigError(f"--budget {part!r} is not a number of full-size networks (e.g. 2.5)") from None
            if not value > 0:
                raise ConfigError(f"--budget must be positive, got {part}")
            budgets.append(value)
    return budgets


def run_group(args: argparse.Namespace) -> int:
    from automtl.methods.grouping import GROUP_BUDGETS, group_tasks
    from automtl.search.config import apply_override, load_config

    started = time.perf_counter()
    set_threads(args.threads)
    budgets = parse_budgets(args.budget)
    data = build_config(args, GROUP_BUDGETS)
    if args.candidates:
        apply_override(data, f"grouping.candidates={args.candidates}")
    if args.fraction is not None:
        apply_override(data, f"grouping.fraction={args.fraction}")
    if args.no_half_size:
        apply_override(data, "grouping.half_size=false")
    config = load_config(data)
    out = args.out or default_out("group", config.data.benchmark)
    result = group_tasks(config, budgets or None, out=out, progress=not args.quiet)
    print(result.text())
    trained = sum(1 for n in result.candidates if n.source == "trained")
    predicted = len(result.candidates) - trained
    print(f"\ncandidates: {trained} trained" + (f", {predicted} predicted" if predicted else "")
          + f"; chosen networks trained fully: {len(result.final)}")
    print(f"run directory: {result.run_dir}")
    print(f"wall time: {time.perf_counter() - started:.1f} s")
    return 0
