"""make_task, parse_task_spec, TASK_KINDS, infer_in_channels, and tasks inside a SuperModel."""

import json
import pickle

import pytest
import torch
from torch import nn

import automtl
from automtl.errors import ConfigError
from automtl.task import Task
from automtl.tasks import (
    TASK_KINDS,
    ASPPHead,
    ClassificationHead,
    higher_is_better_of,
    infer_in_channels,
    make_task,
    parse_task_spec,
)

SMALL = {"head_hidden": 4, "aspp_rates": [1, 2]}


def test_every_kind_builds_a_task_with_head_loss_and_metrics():
    assert set(TASK_KINDS) == {"segmentation", "depth", "normal", "keypoint", "edge", "classification"}
    x = torch.randn(2, 8, 3, 3)
    targets = {
        "segmentation": torch.randint(0, 4, (2, 6, 6)),
        "depth": torch.rand(2, 1, 6, 6) + 0.1,
        "normal": torch.randn(2, 3, 6, 6),
        "keypoint": torch.rand(2, 1, 6, 6),
        "edge": torch.rand(2, 1, 6, 6),
        "classification": torch.tensor([1, 3]),
    }
    channels = {"segmentation": 4, "depth": 1, "normal": 3, "keypoint": 1, "edge": 1}
    for kind, target in targets.items():
        classes = 4 if TASK_KINDS[kind].needs_classes else None
        opts = dict(SMALL, output_size=(6, 6)) if TASK_KINDS[kind].dense else {}
        task = make_task(kind, name="t", classes=classes, in_channels=8, weight=0.5, **opts)
        assert isinstance(task, Task) and task.kind == kind and task.weight == 0.5 and task.name == "t"
        pred = task.head(x)
        if kind == "classification":
            assert isinstance(task.head, ClassificationHead) and pred.shape == (2, 4)
        else:
            assert isinstance(task.head, ASPPHead) and pred.shape == (2, channels[kind], 6, 6)
        loss = task.loss(pred, target)
        assert loss.dim() == 0 and torch.isfinite(loss)
        metric = task.metrics()
        metric.update(pred, target)
        values = metric.compute()
        assert set(values) == set(metric.higher_is_better) == set(TASK_KINDS[kind].higher_is_better)
        assert task.metrics() is not metric  # fresh each call


def test_spec_is_json_and_rebuilds_the_same_architecture():
    task = make_task("segmentation", name="seg", classes=13, in_channels=16, weight=2.0, head_hidden=8, output_size=[8, 8])
    assert task.spec == {
        "name": "seg", "kind": "segmentation", "classes": 13, "weight": 2.0, "in_channels": 16, "ignore_index": 255,
        "class_weights": None, "aspp_rates": [6, 12, 18, 24], "head_hidden": 8, "head_dropout": 0.5, "output_size": [8, 8],
    }
    again = make_task(**json.loads(json.dumps(task.spec)))
    assert again.spec == task.spec
    shapes = lambda t: {k: v.shape for k, v in t.head.state_dict().items()}  # noqa: E731
    assert shapes(again) == shapes(task)


def test_published_defaults():
    task = make_task("depth", in_channels=512)
    assert task.name == "depth" and task.head.rates == (6, 12, 18, 24)
    assert task.head.branches[0][0].out_channels == 1024 and task.head.branches[0][2].p == 0.5


def test_custom_head_and_its_spec():
    head = nn.Conv2d(8, 1, 1)
    task = make_task("edge", name="e", head=head)
    assert task.head is head and task.spec["custom_head"] is True
    with pytest.raises(ConfigError) as err:
        make_task(**task.spec)
    assert str(err.value) == (
        "task 'e' was built with a custom head, which a spec cannot hold; pass head= (your nn.Module) to rebuild it"
    )
    assert make_task(**task.spec, head=nn.Conv2d(8, 1, 1)).spec == task.spec


def test_parse_task_spec_forms():
    t = parse_task_spec("seg:segmentation:13", in_channels=32, head_hidden=4)
    assert (t.name, t.kind, t.spec["classes"], t.spec["in_channels"]) == ("seg", "segmentation", 13, 32)
    t = parse_task_spec("d:depth:weight=2:aspp_rates=1,2,4:head_hidden=8", in_channels=32)
    assert (t.weight, t.spec["aspp_rates"], t.spec["head_hidden"]) == (2.0, [1, 2, 4], 8)
    t = parse_task_spec("left:classification:10", in_channels=32)
    assert t.head(torch.randn(1, 32, 2, 2)).shape == (1, 10)


@pytest.mark.parametrize(
    "text, message",
    [
        ("seg", "task spec 'seg' is not 'name:kind[:classes]' (e.g. 'seg:segmentation:13', 'depth:depth')"),
        ("seg:segm:13", "task spec 'seg:segm:13': unknown kind 'segm'; the built-in kinds are: segmentation, depth, normal, keypoint, edge, classification"),
        ("seg:segmentation:x", "task spec 'seg:segmentation:x': the class count 'x' is not an integer"),
        ("seg:segmentation", "task 'seg': a segmentation task needs classes= (the number of classes)"),
        ("d:depth:3", "task 'd': a depth task has no classes; leave classes unset"),
        ("d:depth:weight=1:oops", "task spec 'd:depth:weight=1:oops': part 4 ('oops') is not option=value"),
        ("d:depth:colour=red", "task 'd': option(s) colour do not apply to a depth task (its options: aspp_rates, head_dropout, head_hidden, output_size)"),
        ("2d:depth", "task name '2d' is not usable: task names become module and output names, so use letters, digits and '_' and start with a letter (e.g. 'seg')"),
    ],
)
def test_parse_task_spec_errors(text, message):
    with pytest.raises(ConfigError) as err:
        parse_task_spec(text, in_channels=8)
    assert str(err.value) == message


def test_make_task_errors():
    with pytest.raises(ConfigError) as err:
        make_task("segmentation", name="seg", classes=5)
    assert str(err.value).startswith("task 'seg': the default ASPP head needs in_channels= (the backbone's output channels;")
    with pytest.raises(ConfigError, match="ignore_index 2 is one of the 5 classes"):
        make_task("segmentation", name="seg", classes=5, in_channels=4, ignore_index=2)
    with pytest.raises(ConfigError, match="class_weights must be a list of 5 numbers"):
        make_task("segmentation", name="seg", classes=5, in_channels=4, class_weights=[1.0])
    with pytest.raises(ConfigError, match="weight must be a finite number >= 0"):
        make_task("depth", in_channels=4, weight=-1)
    with pytest.raises(ConfigError, match="unknown task kind 'box'"):
        make_task("box", in_channels=4)


def test_infer_in_channels_from_supermodel_graph_and_module():
    backbone = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, stride=2, padding=1))
    x = torch.randn(2, 3, 8, 8)
    sm = automtl.compile(backbone, ["a"], x)
    assert infer_in_channels(sm) == infer_in_channels(sm.graph) == infer_in_channels(backbone, x) == 5
    with pytest.raises(ConfigError, match="an nn.Module backbone needs an example input tensor"):
        infer_in_channels(backbone)


def test_tasks_in_a_supermodel_and_derived_model():
    backbone = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, stride=2, padding=1))
    x = torch.randn(2, 3, 8, 8)
    tasks = [
        make_task("segmentation", name="seg", classes=4, in_channels=5, output_size=8, **SMALL),
        make_task("normal", name="sn", in_channels=5, output_size=8, **SMALL),
        make_task("classification", name="cls", classes=3, in_channels=5),
    ]
    sm = automtl.compile(backbone, tasks, x)
    out = sm(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"seg": (2, 4, 8, 8), "sn": (2, 3, 8, 8), "cls": (2, 3)}
    total = sum(t.weight * t.loss(out[t.name], target) for t, target in zip(
        tasks, (torch.randint(0, 4, (2, 8, 8)), torch.randn(2, 3, 8, 8), torch.tensor([0, 2]))))
    total.backward()
    mt = sm.derive(automtl.Policy.all_shared(sm)).eval()
    sm.eval().set_mode("fixed", policy=automtl.Policy.all_shared(sm))
    for name, value in mt(x).items():
        assert torch.allclose(value, sm(x)[name], atol=1e-5)
    assert higher_is_better_of(tasks)["cls"] == {"accuracy": True}


def test_tasks_pickle():
    task = make_task("segmentation", name="seg", classes=3, in_channels=4, class_weights=[1, 2, 3], **SMALL)
    again = pickle.loads(pickle.dumps(task))
    assert again.spec == task.spec
    assert set(again.metrics().compute()) == {"mIoU", "pixel_acc"}
