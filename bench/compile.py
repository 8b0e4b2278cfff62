"""Compile time: backbone -> SuperModel, median of several runs.

    python bench/compile.py [--repeats 5] [--threads 2]

Times torch.fx tracing + shape recording + building the SuperModel (copies, skips, logits)
for torchvision ResNet-34 and MobileNetV2 with 2, 3 and 5 tasks; and the prototxt path for
the shipped Deeplab-ResNet-34 (parse + build the GraphModule + SuperModel, at its declared
224x224 input), the step the AutoMTL paper reports as about 0.6 s.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, List, Tuple

import torch
import torchvision

import automtl


def _time(fn: Callable[[], object], repeats: int) -> Tuple[float, float]:
    """Median wall-clock and median CPU seconds of this process (the CPU time is what a machine
    busy with other jobs inflates least)."""
    fn()  # warm-up: imports, first-call caches
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def cases() -> List[Tuple[str, Callable[[int], object]]]:
    x = torch.randn(2, 3, 128, 128)
    found = []
    for arch in ("resnet34", "mobilenet_v2"):
        model = torchvision.models.get_model(arch, weights=None)
        found.append((f"torchvision {arch}", lambda n, m=model: automtl.compile(m, [f"t{i}" for i in range(n)], example_input=x)))
    found.append(("prototxt deeplab_resnet34", lambda n: automtl.compile("deeplab_resnet34", [f"t{i}" for i in range(n)])))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=2, help="torch intra-op threads (compiling is mostly memory-bound copies)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'backbone':32s} {'tasks':>5s} {'compile (s)':>12s} {'cpu (s)':>8s}")
    for name, build in cases():
        for tasks in (2, 3, 5):
            seconds, cpu = _time(lambda: build(tasks), args.repeats)
            print(f"{name:32s} {tasks:5d} {seconds:12.3f} {cpu:8.3f}")


if __name__ == "__main__":
    main()
