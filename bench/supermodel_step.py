"""One SuperModel training step: fast path vs reference path vs the arithmetic floor.

    python bench/supermodel_step.py                      # CPU, 2 threads, batch 8 at 128x128
    python bench/supermodel_step.py --device cuda --size 321

For each backbone and number of tasks T it times, side by side in one run, one training step
(forward, backward, optimiser step) of

* the plain backbone at batch B (``plain``): in ``warmup``/``gumbel`` mode every task needs the
  shared operator and its own copy on its own input, so the floor of a SuperModel step is about
  ``2 * T`` plain steps;
* the SuperModel on the task-batched fast path (``sm.set_execution("fast")``; ``"auto"``, the
  default, picks it on accelerators and the reference path on the CPU);
* the SuperModel on the reference path (``sm.set_execution("reference")``, every task on its
  own), on the same SuperModel, steps interleaved so that load from other processes hits both.

On the CPU every case runs twice (``--allocator both``): with glibc's default malloc, which maps
every block above 32 MiB afresh (so each large tensor faults in its pages), then after
:func:`automtl.fastpath.keep_freed_memory`, which keeps freed memory for reuse - the fast path's
T-times larger tensors cross that threshold first. With the default malloc the fast path runs a
node per task where its stacked tensors would exceed :func:`automtl.fastpath.cpu_stack_limit`
(``--stack-limit``); keeping freed memory lifts the limit. The table says how many nodes ran
per task.

Times are medians over ``--repeats`` steps after one untimed step. Peak memory is the largest
growth of memory over one step: on CUDA, ``torch.cuda.max_memory_allocated`` minus what was
allocated before the step; on the CPU, the peak resident set size of the process (``VmHWM``,
reset through ``/proc/self/clear_refs`` before the step, after ``malloc_trim`` returned freed
heap to the system) minus the resident size before it - torch's CPU allocator keeps no
statistics and ``tracemalloc`` does not see it.

The dilated ResNet-34 is the shipped ``deeplab_resnet34`` prototxt (output stride 8, as in the
AutoMTL and AdaShare papers); MobileNetV2 is torchvision's.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
from tqdm import tqdm

import automtl
from automtl import Policy
from automtl.fastpath import DEFAULT_CPU_STACK_LIMIT, cpu_stack_limit, keep_freed_memory, set_cpu_stack_limit
from automtl.fastpath.cpu_memory import format_bytes


# -- memory -------------------------------------------------------------------------------
def _status_kb(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory growth (MiB) over a block; None where the platform cannot tell."""

    def __init__(self, device: torch.device):
        self.device = device
        self.mib: Optional[float] = None

    def __enter__(self) -> "PeakMemory":
        _trim()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
        else:
            self._before = _status_kb("VmRSS")
            try:
                with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
                    refs.write("5")  # resets VmHWM to the current RSS
            except OSError:
                self._before = None
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self._before) / 2**20
        elif self._before is not None:
            peak = _status_kb("VmHWM")
            self.mib = None if peak is None else (peak - self._before) / 1024


# -- backbones: (the plain network, what automtl.compile gets) -----------------------------
def _deeplab_resnet34() -> Tuple[torch.nn.Module, object]:
    from automtl.compiler.prototxt import load_prototxt

    return load_prototxt("deeplab_resnet34"), "deeplab_resnet34"


def _mobilenet_v2() -> Tuple[torch.nn.Module, object]:
    import torchvision

    model = torchvision.models.mobilenet_v2(weights=None)
    return model, model


BACKBONES: Dict[str, Callable[[], Tuple[torch.nn.Module, object]]] = {
    "deeplab_resnet34": _deeplab_resnet34,
    "mobilenet_v2": _mobilenet_v2,
}


# -- steps --------------------------------------------------------------------------------
def _loss(out) -> torch.Tensor:
    if isinstance(out, dict):
        return sum(o.float().pow(2).mean() for o in out.values())
    return out.float().pow(2).mean()


def _step_fn(model: torch.nn.Module, x: torch.Tensor, params) -> Callable[[], None]:
    optimiser = torch.optim.SGD(params, lr=1e-4)

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        _loss(model(x)).backward()
        optimiser.step()

    return step


def _timed(step: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _weight_stacking_seconds(sm, repeats: int) -> float:
    """What concatenating the task copies' parameters costs per forward pass (the fast path
    does it inside the forward, so that the copies stay separate parameters)."""
    by_name: List[List[torch.Tensor]] = []
    for vcn in sm.vcns.values():
        copies = list(vcn.copies.values())
        for name, _ in copies[0].named_parameters(recurse=False):
            by_name.append([getattr(c, name) for c in copies])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            for tensors in by_name:
                torch.cat(tensors)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str, tasks: int, args, device: torch.device, bar: tqdm) -> Dict[str, object]:
    torch.manual_seed(0)
    backbone, source = BACKBONES[name]()
    example = torch.randn(2, 3, args.size, args.size)
    sm = automtl.compile(source, [f"task{i}" for i in range(tasks)], example_input=example)
    skip_share = _skip_share(sm, (3, args.size, args.size))
    sm = sm.to(device).train().set_mode(args.mode, tau=1.0)
    backbone = backbone.to(device).train()
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    steps = {
        "plain": _step_fn(backbone, x, backbone.parameters()),
        "fast": _step_fn(sm, x, sm.parameters()),
        "reference": _step_fn(sm, x, sm.parameters()),
    }
    paths = {"plain": None, "fast": "fast", "reference": "reference"}
    times: Dict[str, List[float]] = {k: [] for k in steps}
    memory: Dict[str, Optional[float]] = {}
    for key, step in steps.items():  # untimed first step (allocator warm-up), memory measured on the second
        if paths[key]:
            sm.set_execution(paths[key])
        step()
        with PeakMemory(device) as peak:
            step()
        memory[key] = peak.mib
        if key == "fast":  # the plan and this step's per-task nodes (set_execution forgets them)
            report = sm.execution_report()
        bar.update(2)
    for _ in range(args.repeats):
        for key, step in steps.items():
            if paths[key]:
                sm.set_execution(paths[key])
            times[key].append(_timed(step, device))
            bar.update(1)
    result = {k: statistics.median(v) for k, v in times.items()}
    fastest = {k: min(v) for k, v in times.items()}
    # the paths' steps alternate: the ratio within each round cancels slow drifts of the machine
    paired = statistics.median(r / f for r, f in zip(times["reference"], times["fast"]))
    stacking = _weight_stacking_seconds(sm, 3) if device.type == "cpu" else None
    fallback = {"nodes": len(report.fast) + len(report.fallback), "by size": 0, "other": {}}
    for node, why in report.fallback.items():
        if "stack limit" in why:
            fallback["by size"] += 1
        else:
            fallback["other"][node] = why
    return {"times": result, "fastest": fastest, "paired": paired, "memory": memory, "stacking": stacking, "fallback": fallback,
            "skip_share": skip_share}


def _skip_share(sm, input_shape: Tuple[int, ...]) -> float:
    """MACs of one task's skips (the all-skip model) over MACs of the backbone (all-shared):
    in warmup/gumbel mode every task also runs every skip, and a skip that projects to new
    channels (a 1x1 convolution) costs as much as a 1x1 operator - MobileNetV2's are most of
    its arithmetic - so the floor with skips is T * (2 + share) plain steps."""
    task = sm.task_names[0]
    backbone = automtl.model_cost(sm.derive(Policy.all_shared(sm)), input_shape).tasks[task].macs
    skips = automtl.model_cost(sm.derive(Policy.all_skip(sm)), input_shape).tasks[task].macs
    return skips / backbone


def _fmt_mib(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--size", type=int, default=128, help="input height and width (default 128)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 3, 5])
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--mode", default="warmup", choices=("warmup", "gumbel"))
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per path (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--allocator", default="both", choices=("default", "kept", "both"),
                        help="CPU: glibc's default malloc, keep_freed_memory(), or both one after "
                        "the other (default)")
    parser.add_argument("--stack-limit", type=float, default=DEFAULT_CPU_STACK_LIMIT / 2**20, metavar="MIB",
                        help="CPU, default malloc: the fast path runs a node per task above this size of "
                        f"stacked tensors (default {DEFAULT_CPU_STACK_LIMIT // 2**20} MiB; 0 = every node per task, "
                        "-1 = no limit)")
    args = parser.parse_args()
    set_cpu_stack_limit(None if args.stack_limit < 0 else int(args.stack_limit * 2**20))
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda given but no CUDA device is available")
    torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    allocators = ["default"] if device.type != "cpu" else (["default", "kept"] if args.allocator == "both" else [args.allocator])
    cases = [(b, t) for b in args.backbones for t in args.tasks]
    with tqdm(total=len(allocators) * len(cases) * 3 * (args.repeats + 2), desc="steps", unit="step") as bar:
        for allocator in allocators:  # "kept" cannot be undone within the process: it runs last
            load_before = os.getloadavg()
            if allocator == "kept" and not keep_freed_memory():
                print("keep_freed_memory: this C library has no mallopt; the allocator is unchanged")
            rows = [(name, tasks, measure(name, tasks, args, device, bar)) for name, tasks in cases]
            bar.clear()
            _print_table(rows, args, device, allocator, load_before)
            bar.refresh()


def _print_table(rows: List[Tuple[str, int, Dict[str, object]]], args, device: torch.device, allocator: str, load_before) -> None:
    where = f"{device.type}" + (f" ({torch.get_num_threads()} threads)" if device.type == "cpu" else f" ({torch.cuda.get_device_name(device)})")
    memory = {"default": "glibc's default malloc (large blocks mmap'd afresh)",
              "kept": "keep_freed_memory() (freed memory kept for reuse)"}[allocator]
    print(f"\nSuperModel training step, {args.mode} mode, batch {args.batch} at {args.size}x{args.size}, {where}")
    if device.type == "cpu":
        limit = cpu_stack_limit()
        print(f"allocator: {memory}; fast path's stack limit: {'none' if limit is None else format_bytes(limit)}")
    load = os.getloadavg()
    print(
        f"load average (1 min) {load_before[0]:.1f} before, {load[0]:.1f} after, on {os.cpu_count()} CPUs"
        " - other processes compete for the cores when it exceeds the threads used"
    )
    print(
        f"times: median of {args.repeats} steps (s); ref/fast: median of the ratios of steps taken in turn; floor = 2*T plain steps; +skips = T*(2 + s) plain steps, s the "
        "skips' MACs over the backbone's; ratios also from the fastest step of each (less disturbed by other "
        "processes); memory: peak growth over a step (MiB); per task: nodes the fast path ran per task for "
        "the stack limit / all nodes"
    )
    header = (
        f"{'backbone':18s} {'T':>2s} {'plain':>7s} {'floor':>7s} {'fast':>7s} {'ref':>7s} {'fast/floor':>10s} "
        f"{'ref/fast':>8s} {'min: fast/floor':>15s} {'ref/fast':>8s} {'s':>5s} {'fast/+skips':>11s} "
        f"{'mem plain':>9s} {'mem fast':>9s} {'mem ref':>9s} {'per task':>9s}"
    )
    print(header)
    print("-" * len(header))
    for name, tasks, r in rows:
        t, f, m = r["times"], r["fastest"], r["memory"]  # type: ignore[index]
        floor = 2 * tasks * t["plain"]
        print(
            f"{name:18s} {tasks:2d} {t['plain']:7.3f} {floor:7.3f} {t['fast']:7.3f} {t['reference']:7.3f} "
            f"{t['fast'] / floor:10.2f} {r['paired']:8.2f} "
            f"{f['fast'] / (2 * tasks * f['plain']):15.2f} {f['reference'] / f['fast']:8.2f} "
            f"{r['skip_share']:5.2f} {t['fast'] / (tasks * (2 + r['skip_share']) * t['plain']):11.2f} "
            f"{_fmt_mib(m['plain']):>9s} {_fmt_mib(m['fast']):>9s} {_fmt_mib(m['reference']):>9s} "
            f"{r['fallback']['by size']:>4d}/{r['fallback']['nodes']:<4d}"  # type: ignore[index]
        )
    from automtl.fastpath import path_for

    print(f"sm.set_execution('auto') runs the {path_for('auto', device)} path on {device.type}")
    for name, tasks, r in rows:
        if r["stacking"] is not None:
            share = r["stacking"] / r["times"]["fast"]  # type: ignore[index, operator]
            print(f"{name} T={tasks}: concatenating the copies' parameters takes {r['stacking'] * 1e3:.1f} ms per forward ({share:.1%} of the fast step)")
        if r["fallback"]["other"]:  # type: ignore[index]
            print(f"{name} T={tasks}: nodes the fast path does not cover: {', '.join(r['fallback']['other'])}")  # type: ignore[index]


if __name__ == "__main__":
    main()
