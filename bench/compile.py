"""Compile time: backbone -> SuperModel, median of several runs.

    python bench/compile.py [--repeats 5]

Times torch.fx tracing + shape recording + building the SuperModel (copies, skips, logits)
for torchvision ResNet-34 and MobileNetV2 with 2, 3 and 5 tasks.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, List, Tuple

import torch
import torchvision

import automtl


def _time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: imports, first-call caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cases() -> List[Tuple[str, Callable[[int], object]]]:
    x = torch.randn(2, 3, 128, 128)
    found = []
    for arch in ("resnet34", "mobilenet_v2"):
        model = torchvision.models.get_model(arch, weights=None)
        found.append((f"torchvision {arch}", lambda n, m=model: automtl.compile(m, [f"t{i}" for i in range(n)], example_input=x)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"{'backbone':32s} {'tasks':>5s} {'compile (s)':>12s}")
    for name, build in cases():
        for tasks in (2, 3, 5):
            seconds = _time(lambda: build(tasks), args.repeats)
            print(f"{name:32s} {tasks:5d} {seconds:12.3f}")


if __name__ == "__main__":
    main()
