"""Task grouping: modes (full training, ESA, HOA) and the old config keys, candidates, costs in
MACs of the networks as built, the Random and Pessimal references, the pairwise affinity table,
and whole runs whose choices, references, costs and affinities are checked against independent
computations from the recorded losses."""

import csv
import io
import itertools
import json
import math
import random
import re

import pytest

import automtl
from automtl.errors import ConfigError
from automtl.export.cost import model_cost
from automtl.experiments.grouping import (
    Network,
    candidate_subsets,
    default_budgets,
    group_tasks,
    half_size_spec,
    network_macs,
    pairwise_affinity,
    pessimal_grouping,
    predict_higher_order,
    random_grouping,
    subset_spec,
)
from automtl.experiments.selection import brute_force_selection, score
from automtl.search.build import build_experiment, build_supermodel
from automtl.search.config import load_config
from search_toy import model_spec

SPEC = model_spec(
    {"builtin": "dilated_resnet_tiny", "kwargs": {"widths": [4], "dilations": [1]}}, [3, 8, 8],
    [{"name": "a", "kind": "classification", "classes": 2, "in_channels": 4},
     {"name": "b", "kind": "classification", "classes": 3, "in_channels": 4}],
    norm="follow",
)

TINY = {
    "seed": 0,
    "device": "cpu",
    "data": {"benchmark": "scenes", "options": {"size": 16, "n_train": 32, "n_val": 16, "n_test": 16}, "batch_size": 8, "eval_batch_size": 16},
    # norms follow their convolution: the network of all tasks is one backbone and four heads
    "model": {"backbone": {"builtin": "dilated_resnet_tiny", "kwargs": {"widths": [4, 8], "dilations": [1, 2], "stem_stride": 2}},
              "task_options": {"head_hidden": 4, "aspp_rates": [1]}, "norm": "follow"},
    "post_train": {"steps": 2},
    "grouping": {"half_size": True},
    "logging": {"log_every": 2, "eval_every": 0, "checkpoint_every": 0, "progress": False},
}
TASKS = ["seg", "depth", "normal", "edge"]


# -- config: modes and the old keys -------------------------------------------------------------

@pytest.mark.parametrize("grouping, mode, fraction", [
    ({}, "full", 1.0),                                   # the paper's method is the default
    ({"mode": "esa"}, "esa", 0.2),                       # the paper's 20%
    ({"mode": "esa", "fraction": 0.3}, "esa", 0.3),
    ({"mode": "hoa"}, "hoa", 1.0),                       # pairs trained fully, as in the paper
    ({"candidates": "pairs"}, "hoa", 1.0),               # old key
    ({"candidates": "pairs", "fraction": 0.5}, "hoa", 0.5),
    ({"candidates": "all"}, "full", 1.0),
    ({"candidates": "all", "fraction": 0.25}, "esa", 0.25),
    ({"fraction": 0.25}, "esa", 0.25),                  # an old config that only set the fraction
    ({"candidates": "pairs", "mode": "hoa"}, "hoa", 1.0),
])
def test_grouping_modes_and_old_keys(grouping, mode, fraction):
    cfg = load_config({"grouping": grouping})
    assert (cfg.grouping.resolved_mode, cfg.grouping.steps_fraction) == (mode, fraction)
    again = load_config(cfg.to_dict()).grouping  # the saved config loads to the same mode
    assert (again.resolved_mode, again.steps_fraction) == (mode, fraction)


@pytest.mark.parametrize("grouping, message", [
    ({"mode": "full", "fraction": 0.5}, "grouping.mode=full trains every candidate for all post_train.steps"),
    ({"mode": "esa", "fraction": 1.0}, "that is grouping.mode=full"),
    ({"mode": "full", "candidates": "pairs"}, "grouping.candidates=pairs (the old name of grouping.mode"),
    ({"mode": "hoa", "candidates": "all"}, "contradicts grouping.mode=hoa: drop grouping.candidates"),
    ({"mode": "optimal"}, "grouping.mode must be one of full, esa, hoa"),
    ({"fraction": 1.5}, "grouping.fraction must be in (0, 1], got 1.5"),
])
def test_grouping_config_errors(grouping, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config({"grouping": grouping})


# -- candidates, costs --------------------------------------------------------------------------

def test_higher_order_approximation_of_the_paper():
    # a&b: 0.1 & 0.2, b&c: 0.3 & 0.4, a&c: 0.5 & 0.6 -> a&b&c: a (0.1 + 0.5)/2, b (0.2 + 0.3)/2,
    # c (0.4 + 0.6)/2 (the paper prints a = (0.1 + 0.6)/2, reading c's loss for a: a typo)
    pairs = {("a", "b"): {"a": 0.1, "b": 0.2}, ("b", "c"): {"b": 0.3, "c": 0.4}, ("a", "c"): {"a": 0.5, "c": 0.6}}
    assert predict_higher_order(pairs, ("a", "b", "c")) == pytest.approx({"a": 0.3, "b": 0.25, "c": 0.5})
    with pytest.raises(ConfigError, match=r"needs the network of the pair \{a, d\}"):
        predict_higher_order(pairs, ("a", "d"))


def test_candidate_subsets():
    assert len(candidate_subsets("sdnke", "all")) == len(candidate_subsets("sdnke", "full")) == 31
    assert candidate_subsets(["s", "d", "n"], "hoa") == candidate_subsets(["s", "d", "n"], "pairs") \
        == [("s",), ("d",), ("n",), ("s", "d"), ("s", "n"), ("d", "n")]


def test_network_macs_by_hand():
    # stem conv 3->4, 3x3 on 8x8: 256 outputs x 27; two 3x3 convs 4->4: 256 x 36 each; three
    # batch norms: one MAC per output element (256 each); the heads: linear 4->2 and 4->3.
    # With norms that follow their convolution, the network of both tasks computes the backbone
    # once and both heads.
    backbone = 256 * 27 + 2 * 256 * 36 + 3 * 256
    assert network_macs(SPEC, ["a"]) == backbone + 4 * 2
    assert network_macs(SPEC, ["b"]) == backbone + 4 * 3
    assert network_macs(SPEC) == network_macs(SPEC, ["a", "b"]) == backbone + 4 * 2 + 4 * 3


def test_half_size_scales_every_width():
    half = half_size_spec({**SPEC, "backbone": {"builtin": "dilated_resnet_tiny", "kwargs": {"widths": [16, 32], "dilations": [1, 2]}}})
    assert half["backbone"]["kwargs"]["widths"] == [11, 23]  # x 1/sqrt(2), rounded
    assert all("in_channels" not in t for t in half["tasks"])  # the heads follow the new width
    assert network_macs(half_size_spec(SPEC), ["a"]) / network_macs(SPEC, ["a"]) == pytest.approx(0.5, abs=0.15)
    with pytest.raises(ConfigError, match="set grouping.half_size=false"):
        half_size_spec({**SPEC, "backbone": {"prototxt": "deeplab_resnet34"}})


def test_default_budgets_start_at_the_all_task_network():
    assert default_budgets(1.0, 3) == [1.0, 1.5, 2.0, 2.5, 3.0]
    assert default_budgets(1.581, 4) == [1.59, 2.0, 2.5, 3.0, 3.5, 4.0]  # rounded up: the network fits


# -- the references -----------------------------------------------------------------------------

def _instance(rng, tasks, count):
    costs, losses = [], []
    for _ in range(count):
        solved = rng.sample(range(tasks), rng.randint(1, tasks))
        costs.append(rng.choice([0.5, 1.0, 1.25]))
        losses.append([round(rng.random(), 2) if t in solved else math.inf for t in range(tasks)])
    return costs, losses


def _valid(subset, costs, losses, budget):
    loss, cost, _ = score(subset, costs, losses, len(losses[0]))
    return not math.isinf(loss) and cost <= budget + 1e-12


def test_pessimal_is_the_worst_valid_set_by_brute_force():
    rng = random.Random(7)
    for trial in range(40):
        tasks = rng.randint(1, 4)
        costs, losses = _instance(rng, tasks, rng.randint(1, 8))
        budget = rng.choice([0.5, 1.0, 2.0, 3.0, 10.0])
        valid = [s for k in range(1, len(costs) + 1) for s in itertools.combinations(range(len(costs)), k)
                 if _valid(s, costs, losses, budget)]
        got = pessimal_grouping(costs, losses, budget)
        if not valid:
            assert got is None and brute_force_selection(costs, losses, budget) is None
            continue
        worst = max(score(s, costs, losses, tasks)[0] for s in valid)
        cheapest = min(score(s, costs, losses, tasks)[1] for s in valid if score(s, costs, losses, tasks)[0] == worst)
        assert _valid(got, costs, losses, budget)
        assert score(got, costs, losses, tasks)[0] == worst, trial
        assert score(got, costs, losses, tasks)[1] == pytest.approx(cheapest)
        assert worst >= brute_force_selection(costs, losses, budget).loss


def test_random_grouping_is_valid_seeded_and_varies():
    rng = random.Random(3)
    costs, losses = _instance(rng, 3, 8)
    budget = 3.0
    valid = {s for k in range(1, 9) for s in itertools.combinations(range(8), k) if _valid(s, costs, losses, budget)}
    draws = [random_grouping(costs, losses, budget, random.Random(seed)) for seed in range(50)]
    assert all(d in valid for d in draws)
    assert len(set(draws)) > 3  # not one fixed answer
    assert draws == [random_grouping(costs, losses, budget, random.Random(seed)) for seed in range(50)]
    assert random_grouping(costs, losses, 0.1, random.Random(0)) is None


# -- the affinity table -------------------------------------------------------------------------

def _net(tasks, size, losses, steps=10):
    return Network(tuple(tasks), size, 1.0, dict(losses), "trained", steps)


def test_affinity_against_hand_computation():
    nets = [
        _net("a", "full", {"a": 1.0}), _net("b", "full", {"b": 2.0}), _net("c", "full", {"c": 4.0}),
        _net("ab", "full", {"a": 0.9, "b": 2.5}), _net("ac", "full", {"a": 1.2, "c": 3.0}), _net("bc", "full", {"b": 1.0, "c": 4.0}),
        Network(("a", "b", "c"), "full", 1.0, {"a": 0.1, "b": 0.1, "c": 0.1}, "predicted"),  # not used
    ]
    aff = pairwise_affinity(nets, ["a", "b", "c"])
    assert aff.reference == "full-size single-task network"
    # a with b: (1.0 - 0.9) / 1.0 = +10 % (b helps a); b with a: (2.0 - 2.5) / 2.0 = -25 %
    assert aff.directed["a"]["b"] == pytest.approx(10.0) and aff.directed["b"]["a"] == pytest.approx(-25.0)
    assert aff.directed["a"]["c"] == pytest.approx(-20.0) and aff.directed["c"]["a"] == pytest.approx(25.0)
    assert aff.directed["b"]["c"] == pytest.approx(50.0) and aff.directed["c"]["b"] == pytest.approx(0.0)
    assert aff.pairs == pytest.approx({("a", "b"): -7.5, ("a", "c"): 2.5, ("b", "c"): 25.0})
    rows = list(csv.DictReader(io.StringIO(aff.csv())))
    assert len(rows) == 6 and [(r["task"], r["trained_with"]) for r in rows] == [
        ("a", "b"), ("a", "c"), ("b", "a"), ("b", "c"), ("c", "a"), ("c", "b")]
    assert [float(rows[0][k]) for k in ("loss_alone", "loss_with", "change_pct", "pair_affinity_pct")] == pytest.approx([1.0, 0.9, 10.0, -7.5])
    assert float(rows[2]["pair_affinity_pct"]) == pytest.approx(-7.5) and float(rows[2]["change_pct"]) == pytest.approx(-25.0)
    # with half-size single-task networks, they are the reference (the paper's Table 2)
    halves = [_net("a", "half", {"a": 2.0}), _net("b", "half", {"b": 1.0}), _net("c", "half", {"c": 1.0})]
    aff = pairwise_affinity(nets + halves, ["a", "b", "c"])
    assert aff.reference == "half-size single-task network"
    assert aff.directed["a"]["b"] == pytest.approx(55.0) and aff.directed["b"]["a"] == pytest.approx(-150.0)
    text = aff.text()
    assert "+55.00" in text and "-150.00" in text and "half-size single-task network" in text
    with pytest.raises(ConfigError, match="needs trained networks for b\\+c"):
        pairwise_affinity(nets[:5], ["a", "b", "c"])
    assert pairwise_affinity(nets[:1], ["a"]) is None


# -- whole runs ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def experiment():
    return build_experiment(load_config(TINY))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, experiment):
    out = tmp_path_factory.mktemp("group-full")
    return out, group_tasks(TINY, None, out=out, progress=False, experiment=experiment)


def _check_references(result, tasks):
    costs = [n.cost for n in result.candidates]
    losses = [[n.losses.get(t, math.inf) for t in tasks] for n in result.candidates]
    index = {n.name: i for i, n in enumerate(result.candidates)}
    assert len(result.random) == len(result.pessimal) == len(result.choices)
    for choice, rand, pess in zip(result.choices, result.random, result.pessimal):
        assert (rand.kind, pess.kind) == ("Random", "Pessimal") and rand.budget == pess.budget == choice.budget
        if not choice.networks:
            assert not rand.networks and not pess.networks
            continue
        for ref in (choice, rand, pess):
            chosen = [index[name] for name in ref.networks]
            assert {t for i in chosen for t in result.candidates[i].tasks} == set(tasks)
            assert ref.cost == pytest.approx(sum(costs[i] for i in chosen)) and ref.cost <= ref.budget + 1e-12
            assert ref.macs == sum(result.candidates[i].macs for i in chosen)
            assert ref.selection_loss == pytest.approx(score(chosen, costs, losses, len(tasks))[0])
        assert choice.selection_loss <= rand.selection_loss <= pess.selection_loss
        # no valid set of one or two networks is worse than Pessimal
        for k in (1, 2):
            for subset in itertools.combinations(range(len(costs)), k):
                if _valid(subset, costs, losses, choice.budget):
                    assert score(subset, costs, losses, len(tasks))[0] <= pess.selection_loss + 1e-12


@pytest.mark.slow
def test_full_training_is_the_default(full_run, experiment):
    out, result = full_run
    assert result.tasks == TASKS and result.mode == "full"
    assert result.title.startswith("task grouping: scenes, 4 tasks, seed 0; mode full: full training (the paper's method)")
    # every subset and half-size network trained for all post-train steps, nothing predicted
    assert len(result.candidates) == 15 + 4 and all(n.source == "trained" and n.steps == 2 for n in result.candidates)
    assert set(result.final) == {n.name for n in result.candidates}  # nothing trained again
    assert not (out / "final").exists()
    assert all(c.kind == "Optimal" for c in result.choices)

    # costs: the MACs of the derived network for its tasks (heads included) over the mean of the
    # single-task networks' - computed here independently of the grouping code
    spec = experiment.spec

    def derived_macs(s, tasks):
        sm, _ = build_supermodel(subset_spec(s, tasks))
        return model_cost(sm.derive(automtl.Policy.all_shared(sm)), tuple(s["input_shape"])).macs

    unit = sum(derived_macs(spec, [t]) for t in TASKS) / 4
    assert result.unit_macs == unit
    half = half_size_spec(spec)
    for n in result.candidates:
        assert n.macs == derived_macs(half if n.size == "half" else spec, n.tasks)
        assert n.cost == n.macs / unit
    assert sum(n.cost for n in result.candidates if n.size == "full" and len(n.tasks) == 1) == pytest.approx(4.0)
    everything = next(n for n in result.candidates if len(n.tasks) == 4)
    assert result.choices[0].budget == math.ceil(everything.cost * 100 - 1e-9) / 100  # default budgets
    assert result.choices[0].networks == [everything.name]  # only the all-task network fits
    assert [c.budget for c in result.choices][1:] == [b for b in (2.0, 2.5, 3.0, 3.5, 4.0) if b > result.choices[0].budget]

    _check_references(result, TASKS)
    # trained fully: the loss after training is the loss the choice was made on, references too
    for ref in result.choices + result.random + result.pessimal:
        if ref.networks:
            assert ref.loss == pytest.approx(ref.selection_loss) and set(ref.serving) == set(TASKS)

    # the affinity table from the recorded losses, against the half-size single-task networks
    by_name = {n.name: n for n in result.candidates}
    aff = result.affinity
    assert aff.reference == "half-size single-task network" and aff.steps == 2
    for a, b in itertools.permutations(TASKS, 2):
        alone = by_name[f"{a}-half"].losses[a]
        pair = by_name["+".join(t for t in TASKS if t in (a, b))].losses[a]
        assert aff.directed[a][b] == pytest.approx(100 * (alone - pair) / alone)
    for a, b in itertools.combinations(TASKS, 2):
        assert aff.pairs[(a, b)] == pytest.approx((aff.directed[a][b] + aff.directed[b][a]) / 2)

    saved = json.loads((out / "grouping.json").read_text())
    assert saved["mode"] == "full" and saved["approximation"].startswith("full training")
    assert [c["kind"] for c in saved["random"]] == ["Random"] * len(result.choices)
    assert len(saved["random_mean_selection_loss"]) == len(result.choices)
    saved_aff = json.loads((out / "affinity.json").read_text())
    assert saved_aff["change_pct"]["seg"]["depth"] == pytest.approx(aff.directed["seg"]["depth"])
    assert saved_aff["pair_affinity_pct"]["seg+depth"] == pytest.approx(aff.pairs[("seg", "depth")])
    assert len((out / "affinity.csv").read_text().splitlines()) == 1 + 12
    table = (out / "table.csv").read_text().splitlines()
    assert table[0] == "Budget,Grouping,Networks,Cost,MACs,Val loss (choice),Val loss (trained)"
    assert [row.split(",")[1] for row in table[1:4]] == ["Optimal", "Random", "Pessimal"]
    text = (out / "table.txt").read_text()
    assert "pairwise affinity (Standley et al., Tables 2-3)" in text and "mode full: full training" in text


@pytest.mark.slow
def test_hoa_from_the_old_keys(tmp_path, experiment):
    # the old `candidates: pairs` with `fraction: 0.5`: HOA on pairs trained for half the steps
    config = {**TINY, "grouping": {"candidates": "pairs", "half_size": True, "fraction": 0.5}}
    result = group_tasks(config, [0.5, 2.5], out=tmp_path, progress=False, experiment=experiment)
    assert result.mode == "hoa" and "HOA, the higher-order approximation" in result.title
    assert all(c.kind == "HOA+ESA" for c in result.choices)
    trained = [n for n in result.candidates if n.source == "trained"]
    predicted = [n for n in result.candidates if n.source == "predicted"]
    # 4 singles + 6 pairs + 4 half-size networks trained, 4 triples + 1 quadruple predicted
    assert len(trained) == 14 and len(predicted) == 5
    assert all(n.steps == 1 for n in trained)  # fraction 0.5 of 2 post-train steps
    pairs = {n.tasks: n.losses for n in trained if len(n.tasks) == 2}
    for n in predicted:
        assert n.losses == pytest.approx(predict_higher_order(pairs, n.tasks))
        assert n.macs == network_macs(experiment.spec, n.tasks)  # predicted networks cost what they would compute

    assert result.choices[0].networks == []  # 0.5: even one half-size network per task costs more
    _check_references(result, TASKS)
    choice = result.choices[1]
    assert set(choice.serving) == set(TASKS) and set(choice.serving.values()) <= set(choice.networks)
    assert choice.loss == pytest.approx(sum(result.final[choice.serving[t]].losses[t] for t in TASKS))
    assert all(n.steps == 2 for n in result.final.values())
    for name in choice.networks:
        assert (tmp_path / "final" / name / "results.json").is_file()
    # references are scored on the same (approximate) losses; not retrained
    for ref in (result.random[1], result.pessimal[1]):
        assert (ref.loss is None) == any(name not in result.final for name in ref.networks)
    assert result.affinity.steps == 1
