"""``automtl show RUN_DIR``: the policy heat map, the sharing diagram, the training curves and
``report.html`` of a search run, written into the run directory."""

from __future__ import annotations

import argparse
import os

DESCRIPTION = """\
Draw what a search found and write it into the run directory:

  plots/policy_heatmap.{png,svg}   the learned policy distribution: for shared / own / skip,
                                   the probability per task and searchable node (outlined:
                                   the option the final model uses)
  plots/sharing_diagram.{png,svg}  the derived model: what each task runs at every node;
                                   tasks using the same shared weights are joined by a line,
                                   one call computed once for several tasks is one merged block
  plots/curves_<stage>.png         losses, tau, learning rates, validation loss and metrics
  report.html                      one self-contained page with all of the above, the results
                                   table, parameter counts and the run's config; it opens
                                   from disk (images embedded, no scripts, no external links)
"""

EPILOG = """\
examples:
  automtl search --benchmark scenes --out runs/scenes && automtl show runs/scenes
  automtl show runs/scenes --no-baselines

Exit status: 0 on success, 2 on a user error (e.g. not a run directory).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "show",
        help="draw a search run: policy heat map, sharing diagram, training curves, report.html",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by automtl search --out")
    parser.add_argument("--no-baselines", action="store_true", help="leave out the curves of RUN_DIR/baselines/*")
    parser.add_argument("--quiet", action="store_true", help="print only the path of report.html")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from automtl.viz.show import describe, show

    result = show(args.run_dir, baselines=not args.no_baselines)
    if args.quiet:
        print(result.report)
    else:
        print(describe(result, os.path.abspath(args.run_dir)))
        print(f"open {result.report}")
    return 0
