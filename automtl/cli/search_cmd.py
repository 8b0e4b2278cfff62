"""``automtl search``: run the three-stage search on a benchmark or a config, next to the
single-task and multi-task baselines, and print the results table."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Dict, List

from automtl.cli import set_threads
from automtl.errors import ConfigError

# flags that map one-to-one onto config keys (flag dest -> key path)
_FLAG_KEYS = {
    "seed": "seed",
    "device": "device",
    "method": "method",
    "weighting": "weighting",
    "dataset": "data.dataset",
    "batch_size": "data.batch_size",
    "data_root": "data.root",
    "pretrain_steps": "pretrain.steps",
    "policy_steps": "policy_train.steps",
    "post_steps": "post_train.steps",
    "lambda_reg": "policy_train.lambda_reg",
    "draw": "post_train.draw",
    "baseline_file": "baselines.file",
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "search",
        help="search a sharing policy (pre-train, policy-train, post-train) and compare with baselines",
        description="Run the three-stage AutoMTL search on a built-in benchmark or your own config, train the "
        "single-task and multi-task baselines with the same settings, and print the results table "
        "(parameters, per-task metrics, relative performance). Under torchrun, runs data-parallel.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    source = parser.add_argument_group("what to run")
    source.add_argument("--benchmark", help="built-in benchmark (scenes, multi-mnist, textured-mnist) or an on-disk one with --data-root")
    source.add_argument("--dataset", metavar="MODULE:FACTORY",
                        help="your own dataset: a factory 'package.module:factory' returning train/val/test and the task specs "
                        "(see automtl.data.load_dataset)")
    source.add_argument("--config", help="YAML config file (keys of automtl.search.SearchConfig)")
    source.add_argument("--backbone", help="backbone: a built-in name, a shipped prototxt name, torchvision:<arch>, timm:<name>, module:<package.module>:<factory> or a .prototxt path (pretrained weights: in --config, model.backbone.weights)")
    source.add_argument("--task", action="append", dest="tasks", metavar="SPEC", help="task spec name:kind[:classes] (repeat for more tasks)")
    source.add_argument("--data-root", help="folder of an on-disk dataset")
    source.add_argument("--method", help="sharing method (automtl, single_task, multi_task, adashare, roaming)")
    source.add_argument("--weighting", help="loss weighting (equal, uncertainty; with torchjd: upgrad, mgda, pcgrad, cagrad, nash_mtl, ...)")
    source.add_argument("--stage", action="append", dest="stages", choices=("pretrain", "policy_train", "post_train"),
                        help="run only this stage (repeatable); the others are loaded from --out when done there")
    run = parser.add_argument_group("run directory")
    run.add_argument("--out", help="run directory (default: runs/<benchmark>-<time>)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR where it stopped")
    train = parser.add_argument_group("training (overrides the config)")
    train.add_argument("--seed", type=int)
    train.add_argument("--seeds", help="comma-separated seeds: one run each (OUT/seed-<s>), then a table of mean ± std")
    train.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    train.add_argument("--amp", action="store_true", default=None, help="mixed precision (float16 on CUDA, bfloat16 on CPU)")
    train.add_argument("--threads", type=int, help="CPU threads torch may use (default: torch's choice; 1 is faster on a busy machine)")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--pretrain-steps", type=int)
    train.add_argument("--policy-steps", type=int, help="policy-train steps (weight and policy steps together)")
    train.add_argument("--post-steps", type=int)
    train.add_argument("--lambda-reg", type=float, help="weight of the policy regulariser L_reg")
    train.add_argument("--draw", choices=("sample", "argmax", "best_of_k"), help="how post-train draws its policy")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                       help="any config key, e.g. --set policy_train.tau_decay=0.9 (repeatable)")
    out = parser.add_argument_group("baselines and output")
    out.add_argument("--no-baselines", action="store_true", help="train only the searched model (no table)")
    out.add_argument("--baseline-file", help="read the single-task metrics from this baseline file instead of training them")
    out.add_argument("--quiet", action="store_true", help="no progress bars")
    out.add_argument("--plots", action="store_true",
                     help="redraw the plots (RUN_DIR/plots) at every evaluation, and write TensorBoard scalars "
                     "(RUN_DIR/tensorboard) when the tensorboard package is installed; `automtl show` draws them after")
    parser.set_defaults(run=run_search)


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def build_config(args: argparse.Namespace) -> Dict[str, Any]:
    """The config mapping of a fresh run: benchmark preset < --config file < flags."""
    from automtl.search.config import apply_override, merge, read_yaml
    from automtl.search.presets import preset

    user = read_yaml(args.config) if args.config else {}
    benchmark = args.benchmark or (user.get("data") or {}).get("benchmark")
    if not benchmark and not args.config and not args.dataset:
        raise ConfigError(
            "say what to search on: --benchmark scenes (or multi-mnist, textured-mnist), --dataset my_pkg.data:make_dataset, "
            "or --config my.yaml"
        )
    data = merge(preset(benchmark) if benchmark else {}, user)
    if args.benchmark:
        apply_override(data, f"data.benchmark={args.benchmark}")
    if args.backbone:
        data.setdefault("model", {})["backbone"] = args.backbone
    if args.tasks:
        data.setdefault("model", {})["tasks"] = list(args.tasks)
    if args.amp:
        data["amp"] = True
    if args.no_baselines:
        data.setdefault("baselines", {}).update({"single_task": False, "multi_task": False})
    for dest, key in _FLAG_KEYS.items():
        value = getattr(args, dest)
        if value is not None:
            node = data
            parts = key.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
    if args.quiet:
        data.setdefault("logging", {})["progress"] = False
    for text in args.overrides:
        apply_override(data, text)
    return data


_RESUMABLE_FLAGS = ("quiet", "device", "resume", "stages", "overrides", "threads", "plots")


def _plot_callbacks() -> List[Any]:
    """--plots: plots at every evaluation; TensorBoard scalars when tensorboard is installed."""
    from automtl.viz.live import PlotCallback, tensorboard_callback

    def say(line: str) -> None:
        if _is_main():
            print(f"automtl search: {line}", file=sys.stderr)

    board = tensorboard_callback(say)
    return [PlotCallback()] + ([board] if board is not None else [])


def run_search(args: argparse.Namespace) -> int:
    from automtl.search.config import load_config
    from automtl.search.pipeline import search, search_with_baselines

    started = time.perf_counter()
    set_threads(args.threads)
    overrides: List[str] = []
    if args.resume:
        given = [f"--{k.replace('_', '-')}" for k, v in vars(args).items()
                 if k not in _RESUMABLE_FLAGS + ("command", "run", "no_baselines", "tasks") and v not in (None, False, [])]
        if given or args.tasks or args.no_baselines:
            raise ConfigError(
                f"--resume continues a run with its saved config; drop {', '.join(given or ['--task/--no-baselines'])} "
                "(only --device, --threads, --quiet, --plots, --stage and --set may change)"
            )
        out = args.resume
        overrides = list(args.overrides)
        if args.device:
            overrides.append(f"device={args.device}")
        if args.quiet:
            overrides.append("logging.progress=false")
        config: Any = None
    else:
        config = load_config(build_config(args))
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = config.data.benchmark or (config.data.dataset or "search").rpartition(":")[2]
        out = args.out or os.path.join("runs", f"{name}-{stamp}")
    progress = not args.quiet
    callbacks = _plot_callbacks() if args.plots else []

    if args.seeds:
        return _search_seeds(args, config, out, progress, callbacks, started)
    if args.stages or (config is not None and not (config.baselines.single_task or config.baselines.multi_task or config.baselines.file)):
        result = search(config=config, out=out, resume=bool(args.resume), stages=args.stages, progress=progress, overrides=overrides,
                        callbacks=callbacks)
        if _is_main():
            print(f"run directory: {result.run_dir}")
            if result.metrics is not None:
                print(f"parameters: {result.parameters:,}  policy: {result.policy}")
                for task, values in result.metrics.items():
                    print(f"  {task}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
            print(f"wall time: {time.perf_counter() - started:.1f} s")
        return 0

    comparison = search_with_baselines(config, out, resume=bool(args.resume), progress=progress, overrides=overrides, callbacks=callbacks)
    if not _is_main():
        return 0
    table = _write_table(comparison, out)
    print(table.text())
    print(f"\npolicy: {comparison.searched.policy}; run directory: {os.path.abspath(out)}")
    print(f"wall time: {time.perf_counter() - started:.1f} s")
    sys.stdout.flush()
    return 0


def _write_table(comparison: Any, out: str) -> Any:
    """The results table of one finished run with its baselines, written into its directory."""
    from automtl.search.config import load_config
    from automtl.search.report import comparison_table
    from automtl.search.run import RunDir

    cfg = load_config(os.path.join(out, "config.yaml"))
    split = "test" if comparison.searched.test is not None else "val"
    table = comparison_table(comparison, f"{cfg.data.benchmark or cfg.data.dataset or 'search'} ({split} split), seed {cfg.seed}")
    run = RunDir(out)
    run.write_table(table)
    return table


def _search_seeds(args: argparse.Namespace, config: Any, out: str, progress: bool, callbacks: List[Any], started: float) -> int:
    """--seeds: the whole job (search and baselines) once per seed, in OUT/seed-<s>, and the
    summary (mean ± std over the seeds) in OUT."""
    from automtl.experiments.seeds import parse_seeds, seed_table
    from automtl.search.pipeline import search_with_baselines
    from automtl.search.run import RunDir

    if args.stages:
        raise ConfigError("--seeds runs whole jobs: run stages of one seed's run (--out OUT/seed-<s> --seed S) instead")
    if args.seed is not None:
        raise ConfigError("give either --seed or --seeds, not both")
    seeds = parse_seeds(args.seeds)
    run = RunDir(out)
    taken = [f"seed-{s}" for s in seeds if os.path.exists(run.file(f"seed-{s}"))]
    if taken:
        raise ConfigError(f"{run.path} already holds {', '.join(taken)}; choose another --out")
    tables = {}
    for seed in seeds:
        where = run.file(f"seed-{seed}")
        comparison = search_with_baselines(config.replace(seed=seed), where, progress=progress, callbacks=callbacks)
        if _is_main():
            tables[seed] = _write_table(comparison, where)
    if not _is_main():
        return 0
    summary = seed_table(tables)
    run.write_table(summary)
    print(summary.text())
    print(f"\nrun directory: {run.path} (one run per seed in seed-<s>/)")
    print(f"wall time: {time.perf_counter() - started:.1f} s")
    sys.stdout.flush()
    return 0
