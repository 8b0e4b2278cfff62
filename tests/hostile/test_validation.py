"""A user's mistakes are caught before any training step, each with a message that says what
does not fit, where, and what to do. The search's pre-flight check runs one batch of the
training data through the model and every task's loss before the run directory is even
written. (Covered elsewhere, same rule: a dataset without a target for a task -
tests/search/test_pipeline.py; a misspelled config key - tests/search/test_config.py.)"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

import automtl
from automtl import Task
from automtl.errors import CompileError, ConfigError, DataError, TrainingError
from automtl.search import Callback

from search_toy import TINY, ToyData, ToyNet, toy_data, toy_supermodel, toy_tasks


class Steps(Callback):
    def __init__(self):
        self.logged = []

    def on_log(self, record):
        self.logged.append(record)


def _search_fails(sm, error, tmp_path, train=None, val=None):
    steps = Steps()
    data_train, data_val, _ = toy_data()
    out = tmp_path / "run"
    with pytest.raises(error) as info:
        automtl.search(sm, train or data_train, val or data_val, config=TINY, out=out, callbacks=[steps], progress=False)
    assert steps.logged == [] and not out.exists()  # no step ran, nothing was written
    return str(info.value)


def test_task_names_used_twice():
    with pytest.raises(ConfigError) as info:
        automtl.compile(ToyNet(), [Task("seg"), "depth", Task("seg", weight=2.0)], example_input=torch.zeros(2, 1, 8, 8))
    assert str(info.value) == "task name 'seg' is used twice; every task needs its own name"


def test_an_example_input_without_its_batch_axis():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1))
    assert net(torch.zeros(1, 8, 8)).shape == (4, 4, 4)  # torch accepts it, unbatched
    with pytest.raises(CompileError) as info:
        automtl.compile(net, ["a", "b"], example_input=torch.zeros(1, 8, 8))
    assert str(info.value) == (
        "example_input has shape [1, 8, 8], and module '0' (Conv2d) receives a 3-D tensor [1, 8, 8] from it, but "
        "takes a batch of 4-D inputs (N, C, H, W). Give example_input its batch axis, e.g. example_input.unsqueeze(0)"
    )


class Reshaped(Dataset):
    """The toy data with every image passed through ``change``."""

    def __init__(self, change, base=None):
        self.base = base or ToyData(64, 1)
        self.change = change

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        image, targets = self.base[i]
        return self.change(image), targets


def test_data_of_another_rank_than_the_example_input(tmp_path):
    message = _search_fails(toy_supermodel(), DataError, tmp_path, train=Reshaped(lambda x: x[0]))
    assert message == (
        "the training dataset's images batch to [2, 8, 8] (rank 3), but the model was compiled with an example input "
        "of shape [2, 1, 8, 8] (rank 4). Give each sample the shape [1, 8, 8] (a batch adds the first axis), or "
        "compile with an example input shaped like a batch of the data"
    )


def test_data_with_another_channel_count(tmp_path):
    message = _search_fails(toy_supermodel(), DataError, tmp_path, train=Reshaped(lambda x: x.expand(3, 8, 8)))
    assert message == (
        "the training dataset's images have 3 channels (batch [2, 3, 8, 8]), but the model was compiled for 1 "
        "(example input [2, 1, 8, 8])"
    )


def test_a_head_whose_output_does_not_fit_its_loss(tmp_path):
    tasks = toy_tasks()
    tasks[0].head = None  # the backbone's [N, 4, 8, 8] feature map, into a classification loss
    torch.manual_seed(0)
    sm = automtl.compile(ToyNet(), tasks, example_input=torch.zeros(2, 1, 8, 8))
    message = _search_fails(sm, ConfigError, tmp_path)
    assert message == (
        "task 'a': its loss cannot take its head's output: prediction [2, 4, 8, 8] float32, target [2] int64 "
        "(RuntimeError: only batches of spatial targets supported (3D tensors) but got targets of dimension: 1). Make the head produce what the loss expects "
        "(e.g. [N, classes] scores for cross-entropy with [N] class indices), or give the task a loss that fits the head"
    )


def test_a_loss_that_does_not_return_a_scalar(tmp_path):
    sm = toy_supermodel()
    sm.tasks[1].loss = lambda prediction, target: F.cross_entropy(prediction, target, reduction="none")
    message = _search_fails(sm, ConfigError, tmp_path)
    assert message == (
        "task 'b': its loss must return a floating-point scalar tensor, but it returned [2] float32 for prediction "
        "[2, 2] float32 and target [2] int64; reduce it (e.g. reduction='mean')"
    )


def test_data_that_give_a_nan_loss_before_any_step(tmp_path):
    def poisoned(image):
        image = image.clone()
        image[0, 0, 0] = float("nan")
        return image

    message = _search_fails(toy_supermodel(), TrainingError, tmp_path, train=Reshaped(poisoned))
    assert message == (
        "pre-flight check: the loss of task 'a' is nan on the first training batch, before any step; check this "
        "task's targets and the images for NaN or infinite values, and its loss"
    )


def test_data_the_backbone_cannot_run_on_name_the_node(tmp_path):
    message = _search_fails(toy_supermodel(), DataError, tmp_path, train=Reshaped(lambda x: x.double()))
    assert message == (
        "pre-flight check: the model fails on a batch of the training data (images [2, 1, 8, 8] float64) at node "
        "'conv1' (Conv2d(1->4, k3x3), compiled for output [2, 4, 8, 8]): RuntimeError: Input type (double) and bias "
        "type (float) should be the same. Check that the data have the shape, dtype and value range the backbone "
        "was compiled for"
    )


def test_samples_that_do_not_batch(tmp_path):
    sizes = Reshaped(lambda x: x)
    sizes.change = lambda x, n=iter(range(10**6)): x[:, : 8 - next(n) % 2]
    message = _search_fails(toy_supermodel(), DataError, tmp_path, train=sizes)
    assert message.startswith("the training dataset's first 2 samples cannot be batched together (RuntimeError: ")
    assert message.endswith("; every sample's image and targets must have the same shapes")


def test_a_misspelled_config_key_in_a_search(tmp_path):
    train, val, _ = toy_data()
    with pytest.raises(ConfigError) as info:
        automtl.search(toy_supermodel(), train, val, config={**TINY, "post_train": {"stpes": 2}})
    assert str(info.value).startswith(
        "config: unknown config key 'post_train.stpes' (did you mean 'steps'?); post_train takes: steps, optimizer,"
    )


def test_the_pre_flight_check_changes_nothing():
    """Same weights, normalisation statistics, modes and random stream before and after."""
    from automtl.search.distributed import setup_runtime
    from automtl.search.preflight import preflight

    sm = toy_supermodel().train()
    before = {k: v.clone() for k, v in sm.state_dict().items()}
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    preflight(sm, toy_data()[0], setup_runtime("cpu"))
    assert torch.equal(torch.rand(3), expected)
    assert all(torch.equal(before[k], v) for k, v in sm.state_dict().items())
    assert all(m.training for m in sm.modules())
