"""A real project's set-up end to end, at toy size: a config that names a local pretrained
torchvision weights file, a timm backbone and a dataset factory of the user's own
(``data.dataset``) runs ``automtl search``, ``compare`` and ``group``, resumes, and goes through
the Python drivers with ``data=``."""

import json
import os
import re

import pytest
import torch
import torchvision
import yaml

import automtl
from automtl.cli import main
from automtl.errors import ConfigError
from own_data_toy import make_dataset

TINY = {
    "seed": 0,
    "device": "cpu",
    "data": {"dataset": "own_data_toy:make_dataset", "options": {"size": 16, "n_train": 32, "n_val": 16, "n_test": 16},
             "batch_size": 8, "eval_batch_size": 16},
    "model": {"task_options": {"head_hidden": 4, "aspp_rates": [1]}},
    "pretrain": {"steps": 2},
    "policy_train": {"steps": 4, "weight_steps": 1, "policy_steps": 1},
    "post_train": {"steps": 2},
    "logging": {"log_every": 2, "eval_every": 0, "checkpoint_every": 0, "progress": False},
}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A 'pretrained' ResNet-18 state_dict on disk, as a user downloads it once."""
    torch.manual_seed(11)
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet18-pretrained.pth"
    torch.save(state, path)
    return str(path), state


def _config(tmp_path, backbone, name="config.yaml", **changes):
    config = {**TINY, "model": {**TINY["model"], "backbone": backbone}, **changes}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def _torchvision(pretrained):
    return {"torchvision": "resnet18", "weights": pretrained[0], "return_node": "layer1"}


def _assert_starts_from(init, state):
    """The SuperModel's initial weights (checkpoints/init.pt): the stem convolution, shared and
    each task's copy, is the pretrained file's."""
    stem = [k for k in init if re.fullmatch(r"vcns\.conv1\.(op|copies\.\w+)\.weight", k)]
    assert sorted(stem) == ["vcns.conv1.copies.seg.weight", "vcns.conv1.copies.side.weight", "vcns.conv1.op.weight"]
    for key in stem:
        assert torch.equal(init[key], state["conv1.weight"]), key


def test_search_with_pretrained_torchvision_weights_and_own_dataset(tmp_path, pretrained, capsys):
    out = tmp_path / "run"
    assert main(["search", "--config", _config(tmp_path, _torchvision(pretrained)), "--out", str(out), "--quiet", "--threads", "1"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "own_data_toy:make_dataset (test split), seed 0"
    assert [line.split()[0] for line in printed[4:7]] == ["Single-Task", "Multi-Task", "AutoMTL"]
    run = json.loads((out / "run.json").read_text())
    assert run["spec"]["backbone"] == {"torchvision": "resnet18", "kwargs": {}, "weights": pretrained[0], "return_node": "layer1", "features": False}
    assert run["spec"]["input_shape"] == [3, 16, 16] and run["tasks"] == ["seg", "side"]
    for where in (out, out / "baselines" / "single_task", out / "baselines" / "multi_task"):  # the baselines start there too
        _assert_starts_from(torch.load(where / "checkpoints" / "init.pt", weights_only=True)["model"], pretrained[1])
    model, meta = automtl.load_run(out)
    with torch.no_grad():
        outputs = model(torch.zeros(2, 3, 16, 16))
    assert outputs["seg"].shape == (2, 2, 16, 16) and outputs["side"].shape == (2, 2)


def test_compare_with_a_timm_backbone_on_own_dataset(tmp_path, capsys):
    backbone = {"timm": "test_resnet", "out_indices": [1]}
    out = tmp_path / "cmp"
    assert main(["compare", "--config", _config(tmp_path, backbone), "--methods", "single,multi,automtl",
                 "--out", str(out), "--quiet", "--threads", "1"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "own_data_toy:make_dataset (test split), seed 0, weighting equal"
    table = json.loads((out / "table.json").read_text())
    assert [row["name"] for row in table["rows"]] == ["Single-Task", "Multi-Task", "AutoMTL"]
    assert table["input_size"] == [3, 16, 16] and set(table["rows"][0]["metrics"]) == {"seg", "side"}
    assert json.loads((out / "automtl" / "run.json").read_text())["spec"]["backbone"]["timm"] == "test_resnet"


def test_group_with_pretrained_weights_from_the_dataset_flag(tmp_path, pretrained, capsys):
    config = _config(tmp_path, _torchvision(pretrained), data={**TINY["data"], "dataset": None})
    out = tmp_path / "group"
    assert main(["group", "--config", config, "--dataset", "own_data_toy:make_dataset", "--budget", "1.5",
                 "--no-half-size", "--out", str(out), "--quiet", "--threads", "1"]) == 0
    assert "task grouping: own_data_toy:make_dataset, 2 tasks" in capsys.readouterr().out
    grouping = json.loads((out / "grouping.json").read_text())
    assert sorted(c["name"] for c in grouping["candidates"]) == ["seg", "seg+side", "side"]
    for name in ("seg", "side", "seg+side"):
        init = torch.load(out / "candidates" / name / "checkpoints" / "init.pt", weights_only=True)["model"]
        assert torch.equal(init["vcns.conv1.op.weight"], pretrained[1]["conv1.weight"])


def test_resume_rebuilds_the_users_dataset(tmp_path, pretrained):
    config = yaml.safe_load(open(_config(tmp_path, _torchvision(pretrained))))
    config["baselines"] = {"single_task": False, "multi_task": False}
    whole = automtl.search(config=config, out=tmp_path / "whole", progress=False)
    automtl.search(config=config, out=tmp_path / "broken", stages=["pretrain"], progress=False)
    resumed = automtl.search(out=tmp_path / "broken", resume=True, progress=False)
    assert resumed.policy.to_dict() == whole.policy.to_dict()
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_python_drivers_take_data(tmp_path):
    from automtl.experiments import compare, group_tasks
    from automtl.search import search_with_baselines

    config = {**TINY, "data": {"batch_size": 8, "eval_batch_size": 16},
              "model": {**TINY["model"], "backbone": {"builtin": "dilated_resnet_tiny", "kwargs": {"widths": [4, 4], "dilations": [1, 2]}}}}
    data = make_dataset(size=12, n_train=16, n_val=8, n_test=8)
    result = compare(config, ["single", "multi"], data=data, progress=False)
    assert [row.name for row in result.table.rows] == ["Single-Task", "Multi-Task"]
    assert result.table.input_size == [3, 12, 12]
    grouping = group_tasks({**config, "grouping": {"half_size": False}}, [1.5], data=make_dataset, progress=False)
    assert sorted(n.name for n in grouping.candidates) == ["seg", "seg+side", "side"]
    comparison = search_with_baselines({**config, "baselines": {"single_task": False, "multi_task": True}}, data=data, progress=False)
    assert comparison.multi_task is not None and comparison.single_task is None
    with pytest.raises(ConfigError, match="give either experiment= or data=, not both"):
        compare(config, ["single"], data=data, experiment=object())


def test_own_dataset_errors(tmp_path, capsys):
    from automtl.data import load_dataset

    with pytest.raises(ConfigError, match=r"dataset factory 'own_data_toy:make_datasett': own_data_toy has no 'make_datasett' "
                       r"\(did you mean 'make_dataset'\?\)"):
        load_dataset("own_data_toy:make_datasett")
    with pytest.raises(ConfigError, match=r"the factory takes no argument 'sizes' \(did you mean 'size'\?\)"):
        load_dataset("own_data_toy:make_dataset", options={"sizes": 8})
    with pytest.raises(ConfigError, match="the dataset: no 'val' dataset"):
        load_dataset({"train": make_dataset()["train"], "task_specs": ["a:depth"]})
    with pytest.raises(ConfigError, match=r"unknown field 'tasks' \(did you mean 'task_specs'\?\)"):
        load_dataset({**make_dataset(), "tasks": []})
    with pytest.raises(ConfigError, match="task_specs\\[1\\] needs a 'name' and a 'kind'"):
        load_dataset({**make_dataset(), "task_specs": [{"name": "a", "kind": "depth"}, {"name": "b"}]})
    with pytest.raises(ConfigError, match="data names both a benchmark \\(scenes\\) and a dataset"):
        automtl.search(config={"data": {"benchmark": "scenes", "dataset": "own_data_toy:make_dataset"}})
    with pytest.raises(ConfigError, match="data.dataset 'own_data_toy' is not an import path"):
        automtl.search(config={"data": {"dataset": "own_data_toy"}})
    assert main(["compare", "--dataset", "own_data_toy:make_dataset", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "no backbone: set model.backbone" in capsys.readouterr().err
