"""L_reg against a hand computation, and the τ schedule."""

import math

import pytest
import torch

from automtl.errors import ConfigError
from automtl.search import TauSchedule, policy_regularizer
from automtl.search.regularizer import depth_weights

from search_toy import toy_supermodel


def _softmax(row):
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def _softplus(x):
    return math.log(1.0 + math.exp(x))


def test_regularizer_matches_hand_computation():
    sm = toy_supermodel()
    assert sm.searchable_nodes == ["conv1", "conv2"]
    logits = {"conv1": [[0.5, -1.0, 2.0], [0.0, 0.3, -0.7]], "conv2": [[1.5, 0.2, 0.1], [-2.0, 1.0, 0.4]]}
    with torch.no_grad():
        for node, rows in logits.items():
            sm.vcns[node].logits.copy_(torch.tensor(rows))
    # L = 2 searchable nodes at depths 0 and 1: weights (2-0)/2 = 1 and (2-1)/2 = 0.5
    assert depth_weights(sm) == {"conv1": 1.0, "conv2": 0.5}
    expected = 0.0
    for node, weight in (("conv1", 1.0), ("conv2", 0.5)):
        for row in logits[node]:
            p = _softmax(row)
            expected += weight * (_softplus(p[1] - p[0]) + _softplus(p[2] - p[0]))
    got = policy_regularizer(sm)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    got.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in sm.arch_parameters())
    assert all(p.grad is None for p in sm.weight_parameters())


def test_regularizer_pushes_towards_sharing():
    sm = toy_supermodel()
    loss = policy_regularizer(sm)
    loss.backward()
    for p in sm.arch_parameters():
        # descending the gradient raises the shared logit and lowers own and skip
        assert (p.grad[:, 0] < 0).all() and (p.grad[:, 1:] > 0).all()


def test_tau_schedule():
    taus = TauSchedule(init=5.0, decay=0.965, steps_per_epoch=3, minimum=1.0)
    assert [taus(n) for n in range(7)] == pytest.approx([5.0, 5.0, 5.0, 5 * 0.965, 5 * 0.965, 5 * 0.965, 5 * 0.965**2])
    assert taus.epoch(6) == 2
    assert taus(3 * 1000) == 1.0  # never below the minimum
    with pytest.raises(ConfigError, match="tau schedule"):
        TauSchedule(init=5.0, decay=1.5)
