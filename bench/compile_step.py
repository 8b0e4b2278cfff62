"""One SuperModel training step, eager and under ``torch.compile``, side by side.

    OMP_NUM_THREADS=1 python bench/compile_step.py            # CPU, a small residual net, ~2 minutes
    python bench/compile_step.py --backbone resnet18 --size 64 --device cuda

For each mode (``warmup`` as in pre-training, ``gumbel`` as in policy training, ``fixed`` as in
evaluations) it times one training step as the search runs it with ``compile: false`` and with
``compile: true``: the SuperModel's forward pass (compiled or not), the task losses, backward,
an SGD step. The compiled model is the same module (its parameters shared), so the two take
turns, step by step, and load from other processes hits both alike. Times are medians over
``--repeats`` steps after the compiler's first steps, which are reported on their own
(``compile s``: the first compiled steps, tracing and code generation included; inductor keeps
the code it generates in its cache directory, so only a first run on a machine pays the full
price - about 4 minutes of this script's default on a busy 2-core CPU, under 1 minute after).
``graphs`` counts what dynamo handed the backend for the mode: 1 means the whole forward pass
is one graph.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import automtl
from automtl import Policy, Task


class SmallResNet(nn.Module):
    """A stem and two residual stages: big enough to have shared work, small enough that the
    compiler finishes in seconds on a 2-core CPU."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.conv2 = nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(2 * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn0(self.stem(x)))
        h = torch.relu(h + self.bn1(self.conv1(h)))
        h = torch.relu(self.bn2(self.down(h)))
        return torch.relu(h + self.bn3(self.conv2(h)))


def build(backbone: str, tasks: int, classes: int, example: torch.Tensor) -> automtl.SuperModel:
    net = SmallResNet() if backbone == "small" else torchvision.models.get_model(backbone, num_classes=classes)
    channels = net(example).shape[1] if backbone == "small" else classes

    def head() -> nn.Module:
        if backbone != "small":  # a torchvision classifier's output is already [N, classes]
            return nn.Identity()
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes))

    specs = [Task(f"t{i}", head=head(), loss=F.cross_entropy) for i in range(tasks)]
    return automtl.compile(net, specs, example_input=example)


def set_mode(sm: automtl.SuperModel, mode: str) -> None:
    if mode == "fixed":
        sm.set_mode("fixed", policy=Policy.sample(sm, seed=0))  # a mix of shared, own and skipped nodes
    else:
        sm.set_mode(mode, tau=2.0)


def time_steps(steps: Dict[str, Callable[[], None]], repeats: int, sync: Callable[[], None]) -> Dict[str, float]:
    """Median seconds per step of each entry, the entries taking turns."""
    times: Dict[str, List[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            sync()
            start = time.perf_counter()
            step()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="small", help="'small' (built in here) or a torchvision classifier, e.g. resnet18")
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=32, help="input height and width")
    parser.add_argument("--modes", default="warmup,gumbel,fixed")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup-steps", type=int, default=3, help="compiled steps counted as compile time")
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: as the environment says)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    torch.manual_seed(0)
    classes = 10
    x = torch.randn(args.batch, 3, args.size, args.size)
    sm = build(args.backbone, args.tasks, classes, x[:2]).to(device).train()
    x = x.to(device)
    targets = {t: torch.randint(0, classes, (args.batch,), device=device) for t in sm.task_names}
    optimizer = torch.optim.SGD(sm.parameters(), lr=1e-3, momentum=0.9)

    graphs = [0]
    inner = torch._dynamo.lookup_backend(args.backend)

    def counting(gm: torch.fx.GraphModule, example_inputs: List[torch.Tensor]):
        graphs[0] += 1
        return inner(gm, example_inputs)

    compiled = torch.compile(sm, backend=counting)

    def step(model: nn.Module) -> Callable[[], None]:
        def run() -> None:
            optimizer.zero_grad(set_to_none=True)
            outputs = model(x)
            loss = sum(F.cross_entropy(outputs[t], targets[t]) for t in sm.task_names)
            loss.backward()  # type: ignore[union-attr]
            optimizer.step()

        return run

    print(
        f"torch {torch.__version__}, {device}, {torch.get_num_threads()} thread(s), backend {args.backend}; "
        f"SuperModel of {args.backbone} with {args.tasks} tasks, {len(sm.searchable_nodes)} searchable nodes, "
        f"{sm.num_parameters():,} parameters; batch {args.batch}x3x{args.size}x{args.size}; "
        f"median of {args.repeats} steps"
    )
    rows: List[Tuple[str, ...]] = [("mode", "eager ms", "compiled ms", "eager/compiled", "compile s", "graphs")]
    for mode in args.modes.split(","):
        set_mode(sm, mode)
        step(sm)()  # untimed: first-call caches of the eager path
        before = graphs[0]
        sync()
        start = time.perf_counter()
        for _ in range(args.warmup_steps):
            step(compiled)()
        sync()
        compile_s = time.perf_counter() - start
        median = time_steps({"eager": step(sm), "compiled": step(compiled)}, args.repeats, sync)
        rows.append(
            (
                mode,
                f"{median['eager'] * 1e3:.1f}",
                f"{median['compiled'] * 1e3:.1f}",
                f"{median['eager'] / median['compiled']:.2f}x",
                f"{compile_s:.1f}",
                str(graphs[0] - before),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(cell.rjust(w) if j else cell.ljust(w) for j, (cell, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    main()
