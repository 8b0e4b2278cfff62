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
tasks, plus half-size single-task networks; record each network's validation loss per task
and its inference cost; then, for every budget, choose exactly (branch and bound) the
networks that cover every task with the lowest total validation loss within the budget, and
print the groups per budget with the Random and Pessimal references and the pairwise
affinity table (how much each task's loss changes when trained with another).

--mode says how the candidates' losses are obtained (the output names it):
  full  every candidate trained for all post_train.steps (the paper's method; default)
  esa   early-stopping approximation: candidates trained for --fraction (0.2) of the steps,
        the chosen networks then trained fully
  hoa   higher-order approximation: networks of 1-2 tasks trained, larger ones predicted
        from the pairs (mean of a task's losses in its pairs), the chosen ones then trained

BUDGET is in units of one single-task network: the mean multiply-accumulates per image of
the full-size single-task networks, heads included. A network costs the MACs of the model
built for its tasks (backbone and heads, shared work counted once), so T single-task
networks cost T together, a k-task network what it computes (with norms that follow their
operator: one backbone and k heads, a little over 1), and a half-size one (every backbone
width / sqrt 2) a little over 0.5. Default budgets: the cost of the network of all tasks
(the smallest that fits every task in one network), then 1.5, 2, ..., the number of tasks.

On scenes every candidate trains for 200 steps here (against automtl search's 300), so that
the 19 candidates train in minutes on a CPU; change it with --config or
--set post_train.steps=N.
"""

EPILOG = """\
The run directory holds candidates/<network>/ and final/<network>/ (ordinary run
directories), grouping.json (mode, every candidate's cost, MACs and losses, the choices and
the references), affinity.json and affinity.csv, and the table as table.txt, table.md and
table.csv.

--candidates all|pairs is the old name of --mode (all: full, or esa with --fraction < 1;
pairs: hoa).

examples:
  automtl group --benchmark scenes --budget 2.5
  automtl group --benchmark scenes --budget 1,2,3 --mode esa --fraction 0.2
  automtl group --benchmark scenes --budget 1,2,3 --mode hoa

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
                          help="inference budget in single-task networks (repeatable, or comma-separated: 1.6,2.5); "
                          "default: the all-task network's cost, then 1.5, 2, ..., number of tasks")
    grouping.add_argument("--mode", choices=("full", "esa", "hoa"),
                          help="full: train every candidate fully (default); esa: early-stopping approximation; "
                          "hoa: higher-order approximation from pairs")
    grouping.add_argument("--candidates", choices=("all", "pairs"),
                          help="old name of --mode: all is full (esa with --fraction < 1), pairs is hoa")
    grouping.add_argument("--fraction", type=float,
                          help="share of post_train.steps each trained candidate gets before the choice "
                          "(esa: default 0.2; hoa: default 1)")
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
                raise ConfigError(f"--budget {part!r} is not a number of single-task networks (e.g. 2.5)") from None
            if not value > 0:
                raise ConfigError(f"--budget must be positive, got {part}")
            budgets.append(value)
    return budgets


def group_config(args: argparse.Namespace) -> Any:
    """The checked :class:`~automtl.search.config.SearchConfig` of ``automtl group ARGS``."""
    from automtl.experiments.grouping import GROUP_BUDGETS
    from automtl.search.config import apply_override, load_config

    data = build_config(args, GROUP_BUDGETS)
    if args.mode:
        apply_override(data, f"grouping.mode={args.mode}")
    if args.candidates:
        apply_override(data, f"grouping.candidates={args.candidates}")
    if args.fraction is not None:
        apply_override(data, f"grouping.fraction={args.fraction}")
    if args.no_half_size:
        apply_override(data, "grouping.half_size=false")
    return load_config(data)


def run_group(args: argparse.Namespace) -> int:
    from automtl.experiments.grouping import group_tasks

    started = time.perf_counter()
    set_threads(args.threads)
    budgets = parse_budgets(args.budget)
    config = group_config(args)
    out = args.out or default_out("group", config.data.benchmark or config.data.dataset)
    result = group_tasks(config, budgets or None, out=out, progress=not args.quiet)
    print(result.text())
    trained = [n for n in result.candidates if n.source == "trained"]
    predicted = len(result.candidates) - len(trained)
    steps = sorted({n.steps for n in trained})
    retrained = sum(1 for n in result.final.values() if all(n is not c for c in result.candidates))
    print(f"\ncandidates: {len(trained)} trained ({'/'.join(map(str, steps))} steps)"
          + (f", {predicted} predicted" if predicted else "")
          + f"; chosen networks then trained fully: {retrained}; grouping by: {result.mode}")
    print(f"run directory: {result.run_dir}")
    print(f"wall time: {time.perf_counter() - started:.1f} s")
    return 0
