"""The training step without host synchronisation: the loop reads the losses back (one
transfer) only at log, evaluation and checkpoint steps and checks them for non-finite values
there; the built-in losses read nothing from the device; ``compile: true`` trains through
torch.compile and ends where eager training does."""

import copy

import pytest
import torch

from automtl.errors import DataError, TrainingError
from automtl.search import Callback, search, stages, trainer
from automtl.search.config import LoggingConfig, merge
from automtl.search.distributed import Runtime
from automtl.tasks import ClassificationLoss, DepthLoss, NormalLoss, PixelL1Loss, SegmentationLoss, label_checks

from search_toy import TINY, toy_data, toy_supermodel


class Records(Callback):
    def __init__(self):
        self.lines = []

    def on_log(self, record):
        self.lines.append(dict(record))


def _loop(monkeypatch, logging, steps, step_fn, evaluate=None):
    reads, saves, records = [], [], Records()
    real = trainer._read_back
    monkeypatch.setattr(trainer, "_read_back", lambda pending: reads.append([s for s, _ in pending]) or real(pending))
    loop = trainer.StageLoop(None, Runtime(torch.device("cpu")), LoggingConfig(progress=False, **logging), [records])
    save = lambda done, final, window: saves.append((done, final, copy.deepcopy(window)))  # noqa: E731 (the loop goes on filling it)
    loop.loop("pretrain", steps, 0, step_fn, save, evaluate)
    return reads, saves, records.lines


def test_the_loop_reads_losses_back_only_at_log_eval_and_checkpoint_steps(monkeypatch):
    def step(i):
        return {"loss": torch.tensor(float(i)), "loss/a": torch.tensor(2.0 * i), "lr": 0.1}

    reads, saves, lines = _loop(monkeypatch, {"log_every": 4, "eval_every": 6, "checkpoint_every": 5}, 10, step, lambda: {"x": 1})
    assert reads == [[1, 2, 3, 4], [5], [6], [7, 8], [9, 10]]
    train = [(r["step"], r["loss"], r["loss/a"]) for r in lines if r["kind"] == "train"]
    assert train == [(4, 1.5, 3.0), (8, 5.5, 11.0), (10, 8.5, 17.0)]
    assert [r["step"] for r in lines if r["kind"] == "eval"] == [6, 10]
    # the window a checkpoint keeps holds plain floats (weights_only loading)
    assert saves == [(5, False, {"loss": [4.0], "loss/a": [8.0], "lr": [0.1]}), (10, True, {})]


def test_a_non_finite_loss_is_found_at_the_next_read_and_named_by_its_step(monkeypatch):
    def step(i):
        return {"loss": torch.tensor(1.0), "loss/b": torch.tensor(float("nan") if i == 5 else 1.0)}

    with pytest.raises(TrainingError) as err:
        _loop(monkeypatch, {"log_every": 10, "eval_every": 0, "checkpoint_every": 7}, 10, step)
    assert str(err.value).startswith("pretrain, step 6: the loss of task 'b' is nan; training stopped and nothing is saved")


def test_no_checkpoint_is_written_after_a_non_finite_step(monkeypatch):
    saved = []

    def step(i):
        return {"loss": torch.tensor(float("inf") if i == 2 else 1.0)}

    with pytest.raises(TrainingError, match="pretrain, step 3: loss is inf"):
        loop = trainer.StageLoop(None, Runtime(torch.device("cpu")), LoggingConfig(log_every=50, eval_every=0, checkpoint_every=4, progress=False))
        loop.loop("pretrain", 10, 0, step, lambda done, final, window: saved.append(done))
    assert saved == []


def _losses():
    torch.manual_seed(0)
    seg = torch.randint(0, 3, (2, 4, 4))
    seg[0, 0] = 255
    depth = torch.rand(2, 1, 4, 4)
    depth[0, 0, 0] = 0.0
    depth[1, 0, 1] = float("nan")
    normal = torch.randn(2, 3, 4, 4)
    normal[:, :, 0] = 0.0
    mask = torch.rand(2, 4, 4) > 0.3
    return [
        (SegmentationLoss(3, class_weights=[1.0, 2.0, 0.5]), torch.randn(2, 3, 2, 2), seg, mask),
        (SegmentationLoss(3), torch.randn(2, 3, 4, 4), torch.full((2, 4, 4), 255), None),  # nothing counted
        (DepthLoss(), torch.randn(2, 1, 4, 4), depth, mask),
        (NormalLoss(), torch.randn(2, 3, 4, 4), normal, mask),
        (PixelL1Loss("edge", "edge"), torch.randn(2, 1, 4, 4), torch.rand(2, 1, 4, 4), mask),
        (ClassificationLoss(3), torch.randn(2, 3), torch.tensor([0, 2]), None),
    ]


def test_built_in_losses_read_nothing_from_the_device_in_the_training_step():
    """fullgraph=True: a .item(), a bool() of a tensor or a boolean index (a data-dependent
    shape) would be a graph break and an error here; values and gradients are the eager ones."""
    for loss, pred, target, mask in _losses():
        compiled = torch.compile(lambda p, t, m: loss(p, t, m), backend="eager", fullgraph=True)
        p1, p2 = pred.clone().requires_grad_(), pred.clone().requires_grad_()
        with label_checks(False):
            got = compiled(p1, target, mask)
            want = loss(p2, target, mask)
        assert torch.equal(got, want) and torch.isfinite(got), type(loss).__name__
        got.backward()
        want.backward()
        assert torch.equal(p1.grad, p2.grad) and torch.isfinite(p1.grad).all(), type(loss).__name__
    torch._dynamo.reset()


def test_a_bad_label_past_the_pre_flight_batch_is_still_named():
    sm = toy_supermodel()
    sm.tasks[0].loss = ClassificationLoss(2, task="a")
    train, val, _ = toy_data()
    train.a[2:] = 5  # the pre-flight check sees samples 0 and 1 only
    with pytest.raises(DataError) as err:
        search(sm, train, val, config=TINY)
    assert str(err.value) == "task 'a': classification target holds label(s) [5] outside 0..1"


def test_compile_true_trains_through_torch_compile_and_ends_where_eager_does(monkeypatch, tmp_path):
    graphs = []

    def backend(gm, example_inputs):  # dynamo's capture, run as captured: results comparable bit for bit
        graphs.append(gm)
        return gm.forward

    monkeypatch.setitem(stages.COMPILE_OPTIONS, "backend", backend)
    config = merge(TINY, {"pretrain": {"steps": 2}, "policy_train": {"steps": 4}, "post_train": {"steps": 2}})
    train, val, _ = toy_data()
    torch._dynamo.reset()
    try:
        compiled = search(toy_supermodel(), train, val, config=merge(config, {"compile": True}), out=tmp_path / "compiled")
    finally:
        torch._dynamo.reset()
    assert graphs  # the stages ran their steps through torch.compile
    eager = search(toy_supermodel(), train, val, config=config, out=tmp_path / "eager")
    assert (tmp_path / "compiled" / "metrics.jsonl").read_text() == (tmp_path / "eager" / "metrics.jsonl").read_text()
    assert compiled.policy == eager.policy
    a, b = eager.model.state_dict(), compiled.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
