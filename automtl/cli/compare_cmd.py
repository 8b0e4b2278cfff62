"""``automtl compare``: run several sharing methods with the same data, backbone, budget of
steps and seed, and print one table."""

from __future__ import annotations

import argparse
import copy
import os
import time
from typing import Any, Dict, Mapping, Optional

from automtl.cli import set_threads
from automtl.errors import ConfigError

DESCRIPTION = """\
Run each sharing method with the same data, backbone, configuration (steps, optimisers, data
order) and seed - every method's SuperModel compiled afresh from the same spec, so all start
from the same weights - and print one table: parameters and MACs (what the final model
computes for one input of the benchmark's size, work shared by tasks counted once; both
absolute, and % against single-task), each task's metrics, the relative performance dt_i per
task and dt (against the single-task row), and the wall time of each method's run. Every
final model trains for post_train.steps; the search methods spend their pre-train and
policy-train steps on top.

On the built-in benchmarks the steps are lighter than automtl search's, so that the five
methods finish in a few minutes on a 2-core CPU: scenes and textured-mnist 80 / 160 / 160, multi-mnist
150 / 300 / 300 pre- / policy- / post-train steps (change them with --config or --set).
"""

EPILOG = """\
methods (comma-separated): single (single_task: one independent model per task), multi
(multi_task: all-shared backbone), automtl (shared / own / skip search), adashare
(select-or-skip per residual block), roaming (Maximum Roaming: roaming per-task channel
masks on the all-shared network).

weightings: equal (default), uncertainty, and with torchjd installed (pip install
'automtl[jd]') upgrad, dualproj, mgda, cagrad, pcgrad, nash_mtl, imtl_g, aligned_mtl,
graddrop, rlw.

The run directory holds one run directory per method and the table as table.txt, table.md,
table.csv and table.json.

examples:
  automtl compare --benchmark scenes --out runs/cmp
  automtl compare --benchmark textured-mnist --seeds 0,1,2 --out runs/cmp-tm
  automtl compare --benchmark multi-mnist --methods single,multi,adashare --weighting uncertainty
  automtl compare --config my.yaml --methods automtl,roaming --set roaming.sharing_ratio=0.3
  automtl compare --dataset my_pkg.data:make_dataset --config model.yaml --methods single,multi,automtl

Exit status: 0 on success, 2 on a user error.
"""


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags ``compare`` and ``group`` share: what to run on, and training overrides."""
    source = parser.add_argument_group("what to run on")
    source.add_argument("--benchmark", help="built-in benchmark (scenes, multi-mnist, textured-mnist) or an on-disk one with --data-root")
    source.add_argument("--dataset", metavar="MODULE:FACTORY",
                        help="your own dataset: a factory 'package.module:factory' returning train/val/test and the task specs "
                        "(see automtl.data.load_dataset); name the backbone in --config or with --set model.backbone=...")
    source.add_argument("--config", help="YAML config file (keys of automtl.search.SearchConfig), on top of the benchmark's preset")
    source.add_argument("--data-root", help="folder of an on-disk dataset")
    train = parser.add_argument_group("training (overrides the config)")
    train.add_argument("--seed", type=int, help="seed of everything (weights, data order, Gumbel noise, masks)")
    train.add_argument("--weighting", help="loss weighting (equal, uncertainty, or a torchjd aggregator: upgrad, mgda, ...)")
    train.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    train.add_argument("--threads", type=int, help="CPU threads torch may use (1 is fastest on a busy machine)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                       help="any config key, e.g. --set post_train.steps=100 (repeatable)")
    output = parser.add_argument_group("output")
    output.add_argument("--out", help="run directory (default: runs/<command>-<benchmark>-<time>)")
    output.add_argument("--quiet", action="store_true", help="no progress bars")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="run several sharing methods on one benchmark and print one comparison table",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--methods", default="single,multi,automtl,adashare,roaming",
                        help="comma-separated methods (default: %(default)s)")
    parser.add_argument("--seeds", help="comma-separated seeds: the comparison once per seed (OUT/seed-<s>), "
                        "then one table of mean ± std with every row's Δt per seed")
    add_config_arguments(parser)
    parser.set_defaults(run=run_compare)


def build_config(args: argparse.Namespace, budgets: Optional[Mapping[str, Mapping[str, Any]]] = None) -> Dict[str, Any]:
    """The config mapping: the benchmark's preset < the command's lighter ``budgets`` for it
    < the --config file < the flags."""
    from automtl.search.config import apply_override, merge, read_yaml
    from automtl.search.presets import preset

    user = read_yaml(args.config) if args.config else {}
    benchmark = args.benchmark or (user.get("data") or {}).get("benchmark")
    dataset = getattr(args, "dataset", None) or (user.get("data") or {}).get("dataset")
    if not benchmark and not dataset:
        raise ConfigError(
            "say what to run on: --benchmark scenes (or multi-mnist, textured-mnist), --dataset my_pkg.data:make_dataset, "
            "or --config my.yaml naming data.benchmark or data.dataset"
        )
    if benchmark:
        data = merge(merge(preset(benchmark), dict((budgets or {}).get(benchmark, {}))), user)
        apply_override(data, f"data.benchmark={benchmark}")
    else:  # your own dataset: no preset, the config says everything
        data = copy.deepcopy(user)
    if getattr(args, "dataset", None):
        data.setdefault("data", {})["dataset"] = args.dataset
    for flag, key in (("data_root", "data.root"), ("seed", "seed"), ("weighting", "weighting"), ("device", "device")):
        value = getattr(args, flag)
        if value is not None:
            apply_override(data, f"{key}={value}")
    if args.quiet:
        apply_override(data, "logging.progress=false")
    for text in args.overrides:
        apply_override(data, text)
    return data


def default_out(command: str, benchmark: Any) -> str:
    name = str(benchmark).rpartition(":")[2] if benchmark else "run"  # a dataset factory: its name
    return os.path.join("runs", f"{command}-{name}-{time.strftime('%Y%m%d-%H%M%S')}")


def run_compare(args: argparse.Namespace) -> int:
    from automtl.experiments.compare import COMPARE_BUDGETS, compare, resolve_methods
    from automtl.search.config import load_config

    started = time.perf_counter()
    set_threads(args.threads)
    methods = resolve_methods(args.methods)
    config = load_config(build_config(args, COMPARE_BUDGETS))
    out = args.out or default_out("compare", config.data.benchmark or config.data.dataset)
    if args.seeds:
        from automtl.experiments.seeds import parse_seeds
        from automtl.experiments.sweep import compare_seeds

        if args.seed is not None:
            raise ConfigError("give either --seed or --seeds, not both")
        result = compare_seeds(config, methods, parse_seeds(args.seeds), out=out, progress=not args.quiet)
    else:
        result = compare(config, methods, out=out, progress=not args.quiet)
    print(result.table.text())
    print(f"\nrun directory: {result.run_dir}")
    print(f"wall time: {time.perf_counter() - started:.1f} s")
    return 0
