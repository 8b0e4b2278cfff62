"""Metric state is made of sums, so all_reduce over processes equals one evaluation of all data."""


import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from automtl.tasks import DepthMetric, NormalMetric, SegmentationMetric


def _data():
    g = torch.Generator().manual_seed(0)
    return {
        "seg": (torch.randn(4, 3, 5, 5, generator=g), torch.randint(0, 3, (4, 5, 5), generator=g)),
        "depth": (torch.rand(4, 1, 5, 5, generator=g) + 0.5, torch.rand(4, 1, 5, 5, generator=g) + 0.5),
        "normal": (torch.randn(4, 3, 5, 5, generator=g), torch.randn(4, 3, 5, 5, generator=g)),
    }


def _metrics():
    return {"seg": SegmentationMetric(3), "depth": DepthMetric(), "normal": NormalMetric()}


def _rank(rank, store, out):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        metrics = _metrics()
        for name, (pred, target) in _data().items():
            metrics[name].update(pred[rank * 2 : rank * 2 + 2], target[rank * 2 : rank * 2 + 2])
            metrics[name].all_reduce()
        torch.save({name: m.compute() for name, m in metrics.items()}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_all_reduce_over_two_processes_equals_one_pass(tmp_path):
    mp.spawn(_rank, args=(str(tmp_path / "store"), str(tmp_path / "result")), nprocs=2, join=True)
    expected = _metrics()
    for name, (pred, target) in _data().items():
        expected[name].update(pred, target)
    expected = {name: m.compute() for name, m in expected.items()}
    for rank in range(2):
        got = torch.load(f"{tmp_path / 'result'}.{rank}", weights_only=True)
        assert got == {name: pytest.approx(values) for name, values in expected.items()}


def test_all_reduce_without_a_process_group_is_a_no_op():
    m = DepthMetric()
    m.update(torch.full((1, 1, 1, 1), 2.0), torch.full((1, 1, 1, 1), 1.0))
    m.all_reduce()
    assert m.compute()["abs_err"] == 1.0
