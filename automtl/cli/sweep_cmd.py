"""``automtl sweep``: one search per value of a config key (by default AutoMTL's λ_reg) and seed,
beside the reference methods; the table (mean ± std over seeds) and the front."""

from __future__ import annotations

import argparse
import time
from typing import Any

from automtl.cli import set_threads
from automtl.cli.compare_cmd import add_config_arguments, build_config, default_out

DESCRIPTION = """\
Trace the trade-off one setting controls. For every seed, the reference methods (single-task,
multi-task, AdaShare, Maximum Roaming) run once, and the searched method (AutoMTL) once per
value of the swept key - all from the same initial weights, data order and steps - then one
table (mean ± std over the seeds, Δt per seed) and the front: Δt against parameters and
against MACs (front.png), with the reference methods on the same axes.

The steps are those of automtl compare on the built-in benchmarks (change them with --config
or --set).
"""

EPILOG = """\
examples:
  automtl sweep --benchmark scenes --lambda-reg 0,1e-4,3e-4,1e-3,3e-3,1e-2
  automtl sweep --benchmark multi-mnist --lambda-reg 0,1e-3,1e-2 --seeds 0,1,2
  automtl sweep --benchmark scenes --vary policy_train.tau_decay=0.9,0.95,0.99 --reference single,multi

The run directory holds seed-<s>/ (one run directory per row, and that seed's table), the
summary as table.txt, table.md, table.csv and table.json, front.json and front.png.

Exit status: 0 on success, 2 on a user error.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="one search per value of a config key (default: lambda_reg), with the front against parameters and MACs",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_argument_group("what to sweep")
    choice = what.add_mutually_exclusive_group(required=True)
    choice.add_argument("--lambda-reg", metavar="VALUES", help="comma-separated values of policy_train.lambda_reg")
    choice.add_argument("--vary", metavar="KEY=VALUES", help="any config key and its comma-separated values")
    what.add_argument("--method", default="automtl", help="the method run once per value (default: %(default)s)")
    what.add_argument("--reference", default="single,multi,adashare,roaming",
                      help="methods run once per seed beside the front ('' for none; default: %(default)s)")
    what.add_argument("--seeds", help="comma-separated seeds (default: the config's seed)")
    add_config_arguments(parser)
    parser.set_defaults(run=run_sweep)


def run_sweep(args: argparse.Namespace) -> int:
    from automtl.errors import ConfigError
    from automtl.experiments.compare import COMPARE_BUDGETS
    from automtl.experiments.seeds import parse_seeds
    from automtl.experiments.sweep import sweep
    from automtl.search.config import load_config

    started = time.perf_counter()
    set_threads(args.threads)
    if args.vary is not None:
        key, sep, values = args.vary.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--vary takes KEY=V1,V2,...; got {args.vary!r}")
        key = key.strip()
    else:
        key, values = "policy_train.lambda_reg", args.lambda_reg
    config = load_config(build_config(args, COMPARE_BUDGETS))
    seeds = parse_seeds(args.seeds, first=config.seed) if args.seeds else None
    out = args.out or default_out("sweep", config.data.benchmark)
    result = sweep(config, key, values, seeds=seeds, method=args.method, reference=args.reference,
                   out=out, progress=not args.quiet, overrides=args.overrides)  # (already applied: named in the title)
    print(result.table.text())
    print(f"\nrun directory: {result.run_dir} (front: front.png)")
    print(f"wall time: {time.perf_counter() - started:.1f} s")
    return 0
