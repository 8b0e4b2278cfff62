"""The public API end to end: automtl.search writes a complete run directory, and
automtl.load_run gives back the final model."""

import json
import os

import pytest
import torch

import automtl
from automtl import Policy
from automtl.errors import CheckpointError, ConfigError, DataError
from automtl.search import load_config
from automtl.search.build import build_supermodel
from automtl.search.config import merge

from search_toy import TINY, ToyData, model_spec, toy_data, toy_supermodel


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train, val, test = toy_data()
    sm = toy_supermodel()
    result = automtl.search(sm, train, val, test, config=TINY, out=out)
    return out, result, sm


def test_run_directory_layout(finished):
    out, result, sm = finished
    for name in ("config.yaml", "run.json", "metrics.jsonl", "policy.json", "results.json", "model/model.json", "model/weights.pt"):
        assert os.path.isfile(out / name), name
    assert sorted(os.listdir(out / "checkpoints")) == ["init.pt", "policy_train.pt", "post_train.pt", "pretrain.pt"]
    assert load_config(str(out / "config.yaml")) == load_config(TINY)
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    # log every 2 steps: pretrain 4 steps -> 2 lines, policy-train 10 -> 5, post-train 4 -> 2;
    # evaluations every 4 steps and at the end: 1 + 3 + 1; then the final test evaluation
    kinds = [(r["stage"], r["kind"]) for r in records]
    assert kinds.count(("pretrain", "train")) == 2 and kinds.count(("policy_train", "train")) == 5
    assert kinds.count(("post_train", "train")) == 2 and kinds.count(("policy_train", "eval")) == 3
    assert kinds[-1] == ("post_train", "final")
    policy_steps = [r for r in records if r["stage"] == "policy_train" and r["kind"] == "train"]
    # τ decays every 2 policy steps; steps 2, 5, 8 are policy steps (2 weight, then 1 policy)
    assert [r["tau"] for r in policy_steps] == pytest.approx([5.0, 5.0, 5.0, 5 * 0.965, 5 * 0.965])
    assert [("loss_reg" in r) for r in policy_steps] == [False, True, True, False, True]
    saved = Policy.load(sm, out / "policy.json")
    assert saved == result.policy and saved.probs is not None
    results = json.loads((out / "results.json").read_text())
    assert results["parameters"] == result.model.num_parameters()
    assert results["test"]["metrics"] == result.test["metrics"]


def test_results_carry_the_final_models_macs(finished):
    out, result, sm = finished
    from automtl.export import model_cost

    expected = model_cost(result.model, (1, 8, 8)).macs  # the toy images' size
    assert result.macs == expected > 0
    results = json.loads((out / "results.json").read_text())
    assert results["macs"] == expected and results["input_size"] == [1, 8, 8]


def test_load_run_with_the_supermodel(finished):
    out, result, sm = finished
    model, meta = automtl.load_run(out, supermodel=toy_supermodel())
    x = torch.randn(5, 1, 8, 8)
    result.model.eval()
    with torch.no_grad():
        expected, got = result.model(x), model(x)
    assert all(torch.equal(expected[t], got[t]) for t in ("a", "b"))
    assert meta["tasks"] == ["a", "b"] and meta["spec"] is None
    with pytest.raises(CheckpointError, match="pass the same SuperModel: automtl.load_run\\(run_dir, supermodel=sm\\)"):
        automtl.load_run(out)


def test_load_run_rebuilds_from_the_spec(tmp_path):
    spec = model_spec(
        {"builtin": "small_convnet", "kwargs": {"in_channels": 1, "widths": [4, 4], "strides": [1, 2], "features": 8, "grid": 2}},
        [1, 8, 8], [{"name": "a", "kind": "classification", "classes": 2}, {"name": "b", "kind": "classification", "classes": 2}],
        seed=4,
    )
    sm, resolved = build_supermodel(spec)
    assert resolved["tasks"][0]["in_channels"] == 8
    again, _ = build_supermodel(resolved)
    assert all(torch.equal(a, b) for a, b in zip(sm.state_dict().values(), again.state_dict().values()))
    train, val, _ = toy_data()
    result = automtl.search(sm, train, val, config=TINY, out=tmp_path / "run", spec=resolved)
    model, meta = automtl.load_run(tmp_path / "run")
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(result.model.eval()(x)["b"], model(x)["b"])
    assert meta["spec"]["backbone"]["builtin"] == "small_convnet"


def test_bad_inputs_are_caught_before_training(tmp_path):
    sm = toy_supermodel()
    train, val, _ = toy_data()

    class MissingB(ToyData):
        def __getitem__(self, i):
            image, targets = super().__getitem__(i)
            return image, {"a": targets["a"]}

    with pytest.raises(DataError) as info:
        automtl.search(sm, MissingB(16, 0), val, config=TINY)
    assert str(info.value) == (
        "the training dataset's targets have no entry for task(s) b (sample 0 has a); every task needs a target in every sample"
    )
    with pytest.raises(ConfigError, match="unknown stage 'warmup'; the stages are pretrain, policy_train, post_train"):
        automtl.search(sm, train, val, config=TINY, stages=["warmup"])
    with pytest.raises(ConfigError, match="unknown sharing method 'automl' \\(did you mean 'automtl'\\?\\)"):
        automtl.search(sm, train, val, config=TINY, method="automl")
    with pytest.raises(ConfigError, match="no data to search on: set data.benchmark"):
        automtl.search(config=TINY)
    with pytest.raises(CheckpointError, match="holds no automtl run"):
        automtl.search(sm, train, val, out=tmp_path / "nothing", resume=True)


def test_baseline_methods_train_fixed_policies():
    sm = toy_supermodel()
    train, val, _ = toy_data()
    single = automtl.search(sm, train, val, config=TINY, method="single_task")
    assert single.policy == Policy.all_own(sm)
    # all-own is exactly one independent model per task: no shared operator holds parameters
    shared = single.model.shared_with()
    assert list(shared) == ["shared.drop"]
    assert not list(single.model.get_submodule("shared.drop").parameters())
    multi = automtl.search(toy_supermodel(), train, val, config=TINY, method="multi_task")
    assert multi.policy == Policy.all_shared(sm)
    assert multi.parameters < single.parameters


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path):
    import torch.nn.functional as F

    sm = toy_supermodel()
    calls = {"n": 0}

    def exploding(prediction, target):
        calls["n"] += 1
        # call 1 is the pre-flight check, calls 2-4 are steps 1-3
        return F.cross_entropy(prediction, target) * (float("nan") if calls["n"] > 4 else 1.0)

    sm.tasks[1].loss = exploding
    train, val, _ = toy_data()
    from automtl.errors import TrainingError

    with pytest.raises(TrainingError) as info:
        automtl.search(sm, train, val, config=TINY, out=tmp_path / "run")
    assert str(info.value).startswith("pretrain, step 4: the loss of task 'b' is nan; training stopped")
    state = torch.load(tmp_path / "run" / "checkpoints" / "pretrain.pt", weights_only=True)
    assert state["step"] == 3 and not state["done"]


def test_mixed_precision_on_the_cpu():
    train, val, _ = toy_data()
    result = automtl.search(toy_supermodel(), train, val, config=merge(TINY, {"amp": True}))
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    assert all(0.0 <= m["acc"] <= 100.0 for m in result.metrics.values())
