"""The benchmark registry: every benchmark's splits, tasks and shapes, end to end with a SuperModel."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import automtl
from automtl.data import BENCHMARKS, get_benchmark
from automtl.errors import ConfigError
from automtl.tasks import infer_in_channels


def tiny_backbone():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())


def run_one_step(bench, **task_overrides):
    """Compile the benchmark's tasks on a tiny backbone, take one training step and evaluate."""
    x = torch.randn(2, *bench.input_shape)
    sm0 = automtl.compile(tiny_backbone(), ["probe"], x)
    tasks = bench.make_tasks(in_channels=infer_in_channels(sm0), **task_overrides)
    sm = automtl.compile(tiny_backbone(), tasks, x)
    images, targets = next(iter(DataLoader(bench.train, batch_size=2)))
    assert images.shape == (2, *bench.input_shape) and set(targets) == set(bench.task_names)
    out = sm(images)
    loss = sum(t.weight * t.loss(out[t.name], targets[t.name]) for t in tasks)
    assert torch.isfinite(loss)
    loss.backward()
    metrics = {t.name: t.metrics() for t in tasks}
    with torch.no_grad():
        for images, targets in DataLoader(bench.test, batch_size=2):
            out = sm(images)
            for t in tasks:
                metrics[t.name].update(out[t.name], targets[t.name])
    return {name: m.compute() for name, m in metrics.items()}


def test_registry_lists_the_six_benchmarks():
    assert list(BENCHMARKS) == ["scenes", "multi-mnist", "textured-mnist", "nyuv2", "cityscapes", "taskonomy"]


def test_scenes_benchmark():
    bench = get_benchmark("scenes", seed=0, size=16, n_train=4, n_val=2, n_test=2)
    assert (len(bench.train), len(bench.val), len(bench.test)) == (4, 2, 2)
    assert bench.input_shape == (3, 16, 16) and bench.task_names == ["seg", "depth", "normal", "edge"]
    assert bench.task_specs[0]["classes"] == 6 and bench.task_specs[0]["output_size"] == [16, 16]
    assert "segmentation" in bench.description
    results = run_one_step(bench)
    assert set(results["depth"]) == {"abs_err", "rel_err", "delta_1.25", "delta_1.25^2", "delta_1.25^3"}


def test_multi_mnist_benchmark():
    bench = get_benchmark("multi-mnist", seed=0, n_train=4, n_val=2, n_test=4)
    assert bench.input_shape == (3, 40, 40) and bench.task_names == ["left", "right"]
    results = run_one_step(bench)
    assert set(results) == {"left", "right"} and 0.0 <= results["left"]["accuracy"] <= 100.0


def test_nyuv2_benchmark(nyu_root):
    bench = get_benchmark("nyuv2", root=str(nyu_root), size=(8, 8))
    assert bench.task_names == ["seg", "normal", "depth"] and bench.task_specs[0]["classes"] == 13
    assert bench.input_shape == (3, 8, 8) and bench.task_specs[1]["output_size"] == [8, 8]
    assert len(bench.train) + len(bench.val) == 5 and len(bench.test) == 2
    results = run_one_step(bench, head_hidden=4, aspp_rates=[1])
    assert set(results["seg"]) == {"mIoU", "pixel_acc"}


def test_real_benchmarks_without_a_size_keep_the_native_resolution(cityscapes_root, taskonomy_root):
    bench = get_benchmark("cityscapes", root=str(cityscapes_root), classes=7)
    assert bench.input_shape == (3, 4, 6) and "output_size" not in bench.task_specs[0]
    assert bench.task_specs[0] == {"name": "seg", "kind": "segmentation", "classes": 7}
    run_one_step(bench, head_hidden=4, aspp_rates=[1])
    bench = get_benchmark("taskonomy", root=str(taskonomy_root), size=(4, 6))
    assert bench.task_names == ["seg", "normal", "depth", "keypoint", "edge"]
    assert len(bench.task_specs[0]["class_weights"]) == 17
    results = run_one_step(bench, head_hidden=4, aspp_rates=[1])
    assert set(results["keypoint"]) == {"l1"}


def test_benchmark_errors(tmp_path):
    with pytest.raises(ConfigError) as err:
        get_benchmark("imagenet")
    assert str(err.value) == "unknown benchmark 'imagenet'; the benchmarks are: scenes, multi-mnist, textured-mnist, nyuv2, cityscapes, taskonomy"
    with pytest.raises(ConfigError) as err:
        get_benchmark("nyuv2")
    assert str(err.value) == (
        "benchmark 'nyuv2' is read from disk: pass root= (the dataset folder, in the layout the README describes)"
    )
    with pytest.raises(ConfigError) as err:
        get_benchmark("scenes", colour="red")
    assert str(err.value) == "benchmark 'scenes' has no option(s) colour; its options: n_test, n_train, n_val, size"
    with pytest.raises(automtl.errors.DataError, match="the root folder .* does not exist"):
        get_benchmark("cityscapes", root=str(tmp_path / "missing"))
