"""Network selection: branch and bound returns the brute-force optimum, and visits far fewer
candidate sets."""

import itertools
import math
import random

import pytest

from automtl.experiments.selection import brute_force_selection, score, select_networks

INF = math.inf


def random_instance(rng, tasks, candidates):
    costs, losses = [], []
    for _ in range(candidates):
        solved = set(rng.sample(range(tasks), rng.randint(1, tasks)))
        costs.append(rng.choice([0.5, 1.0]) if len(solved) == 1 else 1.0)
        losses.append([round(rng.uniform(0.1, 1.0), 6) if t in solved else INF for t in range(tasks)])
    return costs, losses


def test_a_hand_made_instance():
    costs = [1.0, 1.0, 1.0, 0.5, 1.0]
    losses = [
        [0.30, 0.40, INF],  # 0: {s, d}
        [INF, INF, 0.20],   # 1: {n}
        [0.25, 0.46, 0.50],  # 2: {s, d, n}
        [INF, INF, 0.22],   # 3: {n} half-size
        [0.35, INF, INF],   # 4: {s}
    ]
    one = select_networks(costs, losses, 1.0)
    assert one.networks == (2,) and one.serving == (2, 2, 2) and one.loss == pytest.approx(1.21)
    assert select_networks(costs, losses, 1.5).networks == (0, 3)  # 0.30 + 0.40 + 0.22 beats 0.25 + 0.46 + 0.22
    two = select_networks(costs, losses, 2.0)  # {s,d} + {n}: 0.90 beats {s,d,n} + {n}: 0.91
    assert two.networks == (0, 1) and two.loss == pytest.approx(0.90) and two.cost == 2.0
    # 2.5: {s,d} serves d, {s,d,n} serves s, the half-size {n} serves n: 0.25 + 0.40 + 0.22
    best = select_networks(costs, losses, 2.5)
    assert best.networks == (0, 2, 3) and best.serving == (2, 0, 3) and best.loss == pytest.approx(0.87)
    assert best.cost == 2.5
    assert select_networks(costs, losses, 0.5) is None  # nothing within budget covers s and d
    assert score((2, 3), costs, losses, 3)[2] == (2, 2, 3)


def test_ties_go_to_the_cheaper_set():
    costs = [1.0, 0.5]
    losses = [[0.2], [0.2]]
    assert select_networks(costs, losses, 2.0).networks == (1,)
    assert brute_force_selection(costs, losses, 2.0).networks == (1,)


def test_branch_and_bound_equals_brute_force_on_random_instances():
    rng = random.Random(7)
    checked = 0
    for _ in range(150):
        tasks = rng.randint(1, 8)
        costs, losses = random_instance(rng, tasks, rng.randint(1, 11))
        budget = rng.choice([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 8.0])
        expected = brute_force_selection(costs, losses, budget)
        got = select_networks(costs, losses, budget)
        if expected is None:
            assert got is None
            continue
        checked += 1
        assert got.networks == expected.networks and got.loss == expected.loss and got.cost == expected.cost
        assert got.serving == expected.serving
    assert checked > 80


def test_every_subset_candidate_set_with_half_size_networks():
    """The shape task grouping produces: 2^T - 1 full networks and T half-size ones."""
    rng = random.Random(3)
    tasks = 3
    costs, losses = [], []
    for k in range(1, tasks + 1):
        for subset in itertools.combinations(range(tasks), k):
            costs.append(1.0)
            losses.append([rng.uniform(0.1, 1.0) if t in subset else INF for t in range(tasks)])
    for t in range(tasks):
        costs.append(0.5)
        losses.append([rng.uniform(0.3, 1.2) if u == t else INF for u in range(tasks)])
    assert len(costs) == 10
    for budget in (1.0, 1.5, 2.0, 2.5, 3.0):
        assert select_networks(costs, losses, budget).networks == brute_force_selection(costs, losses, budget).networks


def test_far_less_work_than_brute_force_on_larger_instances(monkeypatch):
    """The work is counted, not timed (a loaded machine must not fail the test): the search
    nodes visited and the candidate sets scored."""
    import automtl.experiments.selection as selection

    scored = []
    real_score = selection.score
    monkeypatch.setattr(selection, "score", lambda *a, **k: scored.append(1) or real_score(*a, **k))
    rng = random.Random(11)
    costs, losses = random_instance(rng, 8, 17)
    expected = brute_force_selection(costs, losses, 3.0)
    brute_scored, scored[:] = len(scored), []
    got = select_networks(costs, losses, 3.0)
    assert got.networks == expected.networks and got.loss == expected.loss
    assert expected.nodes == 2**17 - 1  # brute force: every non-empty subset
    assert got.nodes < expected.nodes / 100  # search nodes: deterministic
    assert len(scored) < brute_scored / 100


def test_bad_input():
    with pytest.raises(ValueError, match="2 costs for 1 candidates"):
        select_networks([1.0, 1.0], [[0.1]], 1.0)
    with pytest.raises(ValueError, match="candidate 1 has 1 task losses, the others 2"):
        select_networks([1.0, 1.0], [[0.1, 0.2], [0.1]], 1.0)
