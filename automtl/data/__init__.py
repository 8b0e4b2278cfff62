"""Datasets and benchmarks yielding ``(image [3,H,W] float, {task name: target tensor})``, so
that the default DataLoader collate gives ``(images, {task: batch})``.

    from automtl.data import get_benchmark
    bench = get_benchmark("scenes", seed=0)      # also "multi-mnist", "nyuv2", "cityscapes", "taskonomy"
    bench = load_dataset("my_pkg.data:make_dataset", options={"size": 32})   # your own (automtl.data.factory)
"""

from automtl.data.benchmarks import BENCHMARKS, Benchmark, get_benchmark
from automtl.data.cityscapes import CityScapes
from automtl.data.factory import load_dataset
from automtl.data.multi_mnist import MultiMNIST
from automtl.data.nyuv2 import NYUv2
from automtl.data.scenes import ScenesDataset
from automtl.data.taskonomy import Taskonomy
from automtl.data.transforms import Transformed

__all__ = ["BENCHMARKS", "Benchmark", "get_benchmark", "ScenesDataset", "MultiMNIST", "NYUv2", "CityScapes", "Taskonomy", "Transformed", "load_dataset"]
