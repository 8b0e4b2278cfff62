"""Task grouping: candidates, costs, the higher-order approximation, and a whole run whose
choices are checked against brute force on the recorded losses."""

import itertools
import json
import math

import pytest

from automtl.errors import ConfigError
from automtl.methods.grouping import backbone_macs, candidate_subsets, group_tasks, half_size_spec, predict_higher_order

SPEC = {
    "format": "automtl.model",
    "version": 1,
    "backbone": {"builtin": "dilated_resnet_tiny", "kwargs": {"widths": [4], "dilations": [1]}},
    "input_shape": [3, 8, 8],
    "tasks": [{"name": "a", "kind": "classification", "classes": 2, "in_channels": 4},
              {"name": "b", "kind": "classification", "classes": 3, "in_channels": 4}],
    "task_options": {},
    "compile": {"norm": "per_task", "searchable": ["conv", "linear"]},
    "seed": 0,
}

TINY = {
    "seed": 0,
    "device": "cpu",
    "data": {"benchmark": "scenes", "options": {"size": 16, "n_train": 32, "n_val": 16, "n_test": 16}, "batch_size": 8, "eval_batch_size": 16},
    "model": {"backbone": {"builtin": "dilated_resnet_tiny", "kwargs": {"widths": [4, 8], "dilations": [1, 2], "stem_stride": 2}},
              "task_options": {"head_hidden": 4, "aspp_rates": [1]}},
    "post_train": {"steps": 4},
    "grouping": {"candidates": "pairs", "half_size": True, "fraction": 0.5},
    "logging": {"log_every": 2, "eval_every": 0, "checkpoint_every": 0, "progress": False},
}


def test_higher_order_approximation_of_the_paper():
    # a&b: 0.1 & 0.2, b&c: 0.3 & 0.4, a&c: 0.5 & 0.6 -> a&b&c: a (0.1 + 0.5)/2, b (0.2 + 0.3)/2,
    # c (0.4 + 0.6)/2 (the paper prints a = (0.1 + 0.6)/2, reading c's loss for a: a typo)
    pairs = {("a", "b"): {"a": 0.1, "b": 0.2}, ("b", "c"): {"b": 0.3, "c": 0.4}, ("a", "c"): {"a": 0.5, "c": 0.6}}
    assert predict_higher_order(pairs, ("a", "b", "c")) == pytest.approx({"a": 0.3, "b": 0.25, "c": 0.5})
    with pytest.raises(ConfigError, match=r"needs the network of the pair \{a, d\}"):
        predict_higher_order(pairs, ("a", "d"))


def test_candidate_subsets():
    assert len(candidate_subsets("sdnke", "all")) == 31
    assert candidate_subsets(["s", "d", "n"], "pairs") == [("s",), ("d",), ("n",), ("s", "d"), ("s", "n"), ("d", "n")]


def test_backbone_macs_by_hand():
    # stem conv 3->4, 3x3 on 8x8: 256 outputs x 27; two 3x3 convs 4->4: 256 x 36 each;
    # three batch norms: one MAC per output element (256 each); heads not counted
    assert backbone_macs(SPEC) == 256 * 27 + 2 * 256 * 36 + 3 * 256


def test_half_size_scales_every_width():
    half = half_size_spec({**SPEC, "backbone": {"builtin": "dilated_resnet_tiny", "kwargs": {"widths": [16, 32], "dilations": [1, 2]}}})
    assert half["backbone"]["kwargs"]["widths"] == [11, 23]  # x 1/sqrt(2), rounded
    assert all("in_channels" not in t for t in half["tasks"])  # the heads follow the new width
    assert backbone_macs(half_size_spec(SPEC)) / backbone_macs(SPEC) == pytest.approx(0.5, abs=0.15)
    with pytest.raises(ConfigError, match="set grouping.half_size=false"):
        half_size_spec({**SPEC, "backbone": {"prototxt": "deeplab_resnet34"}})


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    out = tmp_path_factory.mktemp("group")
    return out, group_tasks(TINY, [0.5, 1.0, 2.5], out=out, progress=False)


@pytest.mark.slow
def test_grouping_end_to_end(grouped):
    out, result = grouped
    tasks = ["seg", "depth", "normal", "edge"]
    assert result.tasks == tasks
    trained = [n for n in result.candidates if n.source == "trained"]
    predicted = [n for n in result.candidates if n.source == "predicted"]
    # pairs mode: 4 singles + 6 pairs + 4 half-size networks trained, 4 triples + 1 quadruple predicted
    assert len(trained) == 14 and len(predicted) == 5
    assert all(n.steps == 2 for n in trained)  # fraction 0.5 of 4 post-train steps
    pairs = {n.tasks: n.losses for n in trained if len(n.tasks) == 2}
    for n in predicted:
        assert n.losses == pytest.approx(predict_higher_order(pairs, n.tasks))
    assert all(n.cost == 1.0 for n in result.candidates if n.size == "full")
    half = [n for n in result.candidates if n.size == "half"]
    assert len({n.cost for n in half}) == 1 and 0.3 < half[0].cost < 0.8

    costs = [n.cost for n in result.candidates]
    losses = [[n.losses.get(t, math.inf) for t in tasks] for n in result.candidates]
    for choice in result.choices:
        if choice.budget == 0.5:
            assert choice.networks == []  # half-size networks solve one task each: 4 x ~0.5 > 0.5
            continue
        chosen = [n for n in result.candidates if n.name in choice.networks]
        assert choice.cost == pytest.approx(sum(n.cost for n in chosen)) and choice.cost <= choice.budget
        assert {t for n in chosen for t in n.tasks} == set(tasks)
        assert choice.selection_loss == pytest.approx(sum(min(n.losses.get(t, math.inf) for n in chosen) for t in tasks))
        for pair in itertools.combinations(range(len(costs)), 2):  # no set of one or two networks does better
            pair_cost = costs[pair[0]] + costs[pair[1]]
            if pair_cost <= choice.budget:
                assert choice.selection_loss <= sum(min(losses[i][t] for i in pair) for t in range(4)) + 1e-12
        # after full training, each task is served by the chosen network with its lowest loss
        assert set(choice.serving) == set(tasks) and set(choice.serving.values()) <= set(choice.networks)
        assert choice.loss == pytest.approx(sum(result.final[choice.serving[t]].losses[t] for t in tasks))
        assert set(choice.metrics) == set(tasks)
    assert all(n.steps == 4 for n in result.final.values())

    saved = json.loads((out / "grouping.json").read_text())
    assert [c["budget"] for c in saved["choices"]] == [0.5, 1.0, 2.5]
    assert (out / "table.md").read_text().startswith("**task grouping: scenes, 4 tasks")
    assert (out / "table.csv").read_text().splitlines()[0] == "Budget,Networks,Cost,Val loss (choice),Val loss (trained)"
    for name in result.final:
        assert (out / "final" / name / "results.json").is_file()
