"""Inference speed of derived models, side by side with what they replace (CPU).

    python bench/inference.py                    # ResNet-34 and MobileNetV2, 3 tasks, batch 8 at 128x128, 2 threads
    python bench/inference.py --details          # ... and the comparisons below the first one
    python bench/inference.py --arch mobilenet_v2 --tasks 2 --threads 1 --repeats 50 --details

Every comparison is timed in one run, the two sides interleaved (A, B, A, B, ...) so that load
from other processes hits both alike; times are medians over ``--repeats`` forward passes
after two untimed ones, with ``--threads`` intra-op threads for PyTorch and onnxruntime.

* **defaults only** (always printed, for every ``--arch``): ``automtl.compile`` with no options
  and ``Policy.all_shared``, against what it should cost - one forward of the torchvision model
  (classifier included) for ``Task(name, head=None)`` tasks, and the backbone's features then
  the 1x1-convolution heads for tasks with real heads. Target: ratio <= 1.05.
* **all-shared vs the plain backbone followed by the task heads** per ``norm`` mode (ratio
  should be <= 1.05 but for ``norm="per_task"``: there every task has its own copy of each batch
  norm, so the tasks part ways after the very first convolution and the all-shared model does
  about T times the work - the original AutoMTL code's setting; ``Policy.hard_sharing`` shares
  those norms too).
* **all-own vs T independent backbone+head models** (ratio should be <= 1.05).
* **mixed policies vs the naive execution** that runs each task's path on its own (the derived
  graph cut down to one task's output, run once per task): the derived model computes the
  shared prefix once, so the speed-up should follow ``sum of the tasks' MACs / the model's
  MACs``, printed as "expected". Policies: the first 25/50/75 % of the searchable operators
  shared by all tasks and the rest own, and a random policy.
* **onnxruntime vs PyTorch eager** on the exported 50 %-shared model.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.fx
import torchvision
from torch import nn
from tqdm import tqdm

import automtl
from automtl import Policy, Task
from automtl.export import model_cost
from automtl.export.onnx import export_onnx, onnx_session


def features(arch: str) -> nn.Module:
    """A torchvision backbone without its classifier: a dense feature map for dense heads."""
    model = torchvision.models.get_model(arch, weights=None)
    if hasattr(model, "fc"):
        return nn.Sequential(*list(model.children())[:-2])
    return model.features


def out_channels(backbone: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return int(backbone.eval()(x).shape[1])


class BackboneThenHeads(nn.Module):
    """The hand-written hard-sharing model: the backbone once, then every head."""

    def __init__(self, backbone: nn.Module, heads: Dict[str, nn.Module]):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        feature = self.backbone(x)
        return {name: head(feature) for name, head in self.heads.items()}


class Independent(nn.Module):
    """T single-task models, one backbone and one head each."""

    def __init__(self, backbone: nn.Module, heads: Dict[str, nn.Module]):
        super().__init__()
        self.backbones = nn.ModuleDict({name: copy.deepcopy(backbone) for name in heads})
        self.heads = nn.ModuleDict(heads)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {name: self.heads[name](self.backbones[name](x)) for name in self.heads}


def task_only(model: torch.fx.GraphModule, task: str) -> torch.fx.GraphModule:
    """The derived model cut down to one task's output (dead code removed): that task's path."""
    graph = copy.deepcopy(model.graph)
    output = next(n for n in graph.nodes if n.op == "output")
    output.args = ({task: output.args[0][task]},)
    graph.eliminate_dead_code(is_impure_node=lambda node: node.op in ("placeholder", "output"))
    return torch.fx.GraphModule(model, graph)


class Naive(nn.Module):
    """Runs each task's path separately, one after the other."""

    def __init__(self, model: torch.fx.GraphModule, tasks: Sequence[str]):
        super().__init__()
        self.paths = nn.ModuleDict({task: task_only(model, task) for task in tasks})

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        out: Dict[str, torch.Tensor] = {}
        for path in self.paths.values():
            out.update(path(x))
        return out


def prefix_policy(sm: automtl.SuperModel, fraction: float) -> Policy:
    """The first ``fraction`` of the searchable operators (in depth order) shared, the rest own."""
    cut = round(fraction * len(sm.searchable_nodes))
    choices = {t: {n: ("shared" if i < cut else "own") for i, n in enumerate(sm.searchable_nodes)} for t in sm.task_names}
    return Policy.from_dict(sm, choices)


def interleaved(functions: Dict[str, Callable[[], object]], repeats: int, label: str) -> Dict[str, float]:
    """Median seconds of each function, the functions run in turn in every round."""
    times: Dict[str, List[float]] = {name: [] for name in functions}
    with torch.inference_mode():
        for fn in functions.values():  # warm-up: first-call allocations, lazy inits
            fn()
            fn()
        for _ in tqdm(range(repeats), desc=label, leave=False):
            for name, fn in functions.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def check_same(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor], what: str) -> None:
    for task in a:
        error = float((a[task] - b[task]).abs().max() / b[task].abs().max().clamp_min(1e-12))
        if error > 1e-4:
            raise SystemExit(f"{what}: outputs differ for task {task} (relative {error:.1e}); the timing would be meaningless")


Row = Tuple[str, float, float, str]


def print_table(title: str, rows: Sequence[Row]) -> None:
    print(title)
    width = max(len(r[0]) for r in rows)
    print(f"{'comparison (model / reference)':{width}s}  {'model':>9s}  {'reference':>9s}  {'ratio':>6s}  note")
    for name, model_s, ref_s, note in rows:
        print(f"{name:{width}s}  {model_s * 1e3:9.2f}  {ref_s * 1e3:9.2f}  {model_s / ref_s:6.3f}  {note}")


def defaults_only(arch: str, args: argparse.Namespace, x: torch.Tensor) -> List[Row]:
    """The all-shared model of a default compile against one backbone forward (tasks without
    heads), and against the backbone's features then the heads (tasks with 1x1-conv heads)."""
    names = [f"task{i}" for i in range(args.tasks)]
    rows: List[Row] = []
    whole = torchvision.models.get_model(arch, weights=None).eval()
    sm = automtl.compile(whole, [Task(name, head=None) for name in names], example_input=x).eval()
    model = sm.derive(Policy.all_shared(sm)).eval()
    with torch.no_grad():
        check_same(model(x), {name: whole(x) for name in names}, f"{arch}: all-shared, no heads")
    t = interleaved({"model": lambda: model(x), "ref": lambda: whole(x)}, args.repeats, f"{arch} no heads")
    target = "within target (<= 1.05)" if t["model"] <= 1.05 * t["ref"] else "ABOVE the 1.05 target"
    rows.append((f"{arch}: all-shared, heads=None / one backbone forward", t["model"], t["ref"], target))

    backbone = features(arch).eval()
    channels = out_channels(backbone, x)
    heads = {name: nn.Conv2d(channels, 8, 1) for name in names}
    sm = automtl.compile(backbone, [Task(name, head=copy.deepcopy(heads[name])) for name in names], example_input=x).eval()
    model = sm.derive(Policy.all_shared(sm)).eval()
    hard = BackboneThenHeads(backbone, heads).eval()
    with torch.no_grad():
        check_same(model(x), hard(x), f"{arch}: all-shared with heads")
    t = interleaved({"model": lambda: model(x), "ref": lambda: hard(x)}, args.repeats, f"{arch} heads")
    target = "within target (<= 1.05)" if t["model"] <= 1.05 * t["ref"] else "ABOVE the 1.05 target"
    rows.append((f"{arch} features: all-shared, 1x1-conv heads / backbone+heads", t["model"], t["ref"], target))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--arch",
        default="resnet34,mobilenet_v2",
        help="torchvision models, comma-separated (for the detailed comparisons: their features are the backbone)",
    )
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--size", type=int, default=128, help="input height and width")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--details", action="store_true", help="also the per-mode, all-own, mixed-policy and onnxruntime comparisons")
    parser.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime comparison")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    archs = [a.strip() for a in args.arch.split(",") if a.strip()]
    setting = f"{args.tasks} tasks, batch {args.batch} at {args.size}x{args.size}, {args.threads} thread(s), eval, median of {args.repeats} runs (ms)"
    headline: List[Row] = []
    for arch in archs:
        torch.manual_seed(0)
        x = torch.randn(args.batch, 3, args.size, args.size)
        headline += defaults_only(arch, args, x)
    print_table(f"defaults only (automtl.compile with no options, Policy.all_shared): {setting}", headline)
    if args.details:
        for arch in archs:
            print()
            details(arch, args)


def details(arch: str, args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size)
    backbone = features(arch).eval()
    channels = out_channels(backbone, x)
    names = [f"task{i}" for i in range(args.tasks)]
    heads = {name: nn.Conv2d(channels, 8, 1) for name in names}
    rows: List[Tuple[str, float, float, str]] = []

    def compiled(norm: str) -> automtl.SuperModel:
        tasks = [Task(name, head=copy.deepcopy(heads[name])) for name in names]
        return automtl.compile(backbone, tasks, example_input=x, norm=norm).eval()

    # all-shared vs backbone + heads, per norm mode
    hard = BackboneThenHeads(backbone, heads).eval()
    for norm in ("follow", "search", "per_task"):
        sm = compiled(norm)
        model = sm.derive(Policy.all_shared(sm)).eval()
        with torch.no_grad():
            check_same(model(x), hard(x), f"all-shared ({norm})")
        t = interleaved({"model": lambda: model(x), "ref": lambda: hard(x)}, args.repeats, f"all-shared {norm}")
        note = "hard sharing" if norm != "per_task" else f"per-task BNs: tasks part after conv1 (~{args.tasks}x work)"
        rows.append((f"all-shared (norm={norm}) / backbone+heads", t["model"], t["ref"], note))

    # all-own vs independent models
    sm = compiled("follow")
    own = sm.derive(Policy.all_own(sm)).eval()
    independent = Independent(backbone, heads).eval()
    with torch.no_grad():
        check_same(own(x), independent(x), "all-own")
    t = interleaved({"model": lambda: own(x), "ref": lambda: independent(x)}, args.repeats, "all-own")
    rows.append((f"all-own / {args.tasks} independent models", t["model"], t["ref"], ""))

    # mixed policies vs each task's path on its own
    policies = [(f"{int(f * 100)}% shared prefix", prefix_policy(sm, f)) for f in (0.25, 0.5, 0.75)]
    policies.append(("random policy (seed 0)", Policy.random(sm, seed=0)))
    half = None
    for label, policy in policies:
        model = sm.derive(policy).eval()
        naive = Naive(model, names).eval()
        with torch.no_grad():
            check_same(model(x), naive(x), label)
        cost = model_cost(model, (3, args.size, args.size))
        separate = sum(c.macs for c in cost.tasks.values())
        # with a prefix P shared by all T tasks and suffixes S: separate = T(P+S), model = P+TS,
        # so the shared fraction of a task's path P/(P+S) = T(separate-model) / ((T-1) separate)
        shared = args.tasks * (separate - cost.macs) / ((args.tasks - 1) * separate) if args.tasks > 1 else 0.0
        t = interleaved({"model": lambda: model(x), "ref": lambda: naive(x)}, args.repeats, label)
        rows.append(
            (
                f"{label} / each task's path alone",
                t["model"],
                t["ref"],
                f"speed-up {t['ref'] / t['model']:.2f}x, expected {separate / cost.macs:.2f}x (shared fraction {shared:.0%})",
            )
        )
        if label.startswith("50%"):
            half = model

    # onnxruntime vs PyTorch eager
    if not args.no_onnx and half is not None:
        with tempfile.TemporaryDirectory() as folder:
            path = export_onnx(half, os.path.join(folder, "m.onnx"), x)
            session = onnx_session(path, threads=args.threads)
            feed = {session.get_inputs()[0].name: x.numpy()}
            t = interleaved({"model": lambda: session.run(None, feed), "ref": lambda: half(x)}, args.repeats, "onnxruntime")
        rows.append(("onnxruntime / PyTorch eager (50% prefix)", t["model"], t["ref"], ""))

    print_table(
        f"{arch} features, {args.tasks} tasks, batch {args.batch} at {args.size}x{args.size}, "
        f"{args.threads} thread(s), median of {args.repeats} runs (ms)",
        rows,
    )


if __name__ == "__main__":
    main()
