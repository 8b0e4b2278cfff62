"""L_reg (AutoMTL Eq. 2) against a hand computation on the Gumbel-softmax soft policy P' of
Eq. 1 with fixed (seeded) noise, its depth weights (L - l)/L with L the maximum depth, and the
τ schedule."""

import math

import pytest
import torch
import torchvision
from torch import nn

import automtl
from automtl.errors import ConfigError
from automtl.search import TauSchedule, policy_regularizer
from automtl.search.regularizer import cost_weights, depth_weights, parameter_weights, soft_policy

from search_toy import toy_supermodel


class Chain(nn.Module):
    """Three convolutions in a row: searchable depths 0, 1, 2."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 3, 3, padding=1)
        self.c2 = nn.Conv2d(3, 3, 3, padding=1)
        self.c3 = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x):
        return self.c3(torch.relu(self.c2(torch.relu(self.c1(x)))))


LOGITS = {
    "c1": [[0.5, -1.0, 2.0], [0.0, 0.3, -0.7]],
    "c2": [[1.5, 0.2, 0.1], [-2.0, 1.0, 0.4]],
    "c3": [[0.2, 0.9, -0.4], [0.7, -0.3, 1.1]],
}
WEIGHTS = {"c1": 1.0, "c2": 0.5, "c3": 0.0}  # (L - l)/L with L = 2, the maximum depth


def _chain():
    torch.manual_seed(0)
    sm = automtl.compile(Chain(), ["a", "b"], torch.zeros(2, 1, 4, 4))
    assert sm.searchable_nodes == ["c1", "c2", "c3"]
    with torch.no_grad():
        for node, rows in LOGITS.items():
            sm.vcns[node].logits.copy_(torch.tensor(rows))
    return sm


def _gumbel_noise(seed, nodes, tasks=2):
    """The Gumbel(0, 1) noise torch's gumbel_softmax draws after ``manual_seed(seed)``, one
    [tasks, 3] draw per node in order (G = -log E, E ~ Exp(1))."""
    torch.manual_seed(seed)
    return {n: (-torch.empty(tasks, 3).exponential_().log()).tolist() for n in nodes}


def _softmax(row):
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    return [e / sum(exps) for e in exps]


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _softplus(x):
    return math.log(1.0 + math.exp(x))


def _hand_regularizer(logits, noise, tau, weights):
    """Eq. 2 on P' = softmax((z + G)/τ), and its gradient with respect to the logits z:
    ∂L/∂P'(0) = -w(s₁ + s₂), ∂L/∂P'(k) = w·sₖ (sₖ = sigmoid(P'(k) - P'(0))), and
    ∂L/∂zⱼ = P'(j)/τ · (∂L/∂P'(j) - Σₖ P'(k) ∂L/∂P'(k))."""
    value, grads = 0.0, {}
    for node, rows in logits.items():
        w, node_grads = weights[node], []
        for z, g in zip(rows, noise[node]):
            p = _softmax([(zk + gk) / tau for zk, gk in zip(z, g)])
            value += w * (_softplus(p[1] - p[0]) + _softplus(p[2] - p[0]))
            s1, s2 = _sigmoid(p[1] - p[0]), _sigmoid(p[2] - p[0])
            dp = [-w * (s1 + s2), w * s1, w * s2]
            mean = sum(pk * dk for pk, dk in zip(p, dp))
            node_grads.append([p[j] / tau * (dp[j] - mean) for j in range(3)])
        grads[node] = node_grads
    return value, grads


@pytest.mark.parametrize("tau", [5.0, 0.7])
def test_regularizer_matches_hand_computation_with_the_forward_pass_noise(tau):
    sm = _chain()
    sm.set_mode("gumbel", tau=tau)
    x = torch.randn(2, 1, 4, 4)
    torch.manual_seed(11)
    sm(x)  # draws the noise (the first random numbers of the pass)
    noise = _gumbel_noise(11, sm.searchable_nodes)
    # the pass mixed its options with exactly these P' (a check that the noise is known)
    for node in sm.searchable_nodes:
        expected_p = [_softmax([(zk + gk) / tau for zk, gk in zip(z, g)]) for z, g in zip(LOGITS[node], noise[node])]
        assert torch.allclose(sm.last_weights[node], torch.tensor(expected_p), atol=1e-6)
    torch.manual_seed(999)  # the regulariser must not draw new noise: a changed RNG changes nothing
    got = policy_regularizer(sm)
    value, grads = _hand_regularizer(LOGITS, noise, tau, WEIGHTS)
    assert got.item() == pytest.approx(value, rel=1e-5)
    got.backward()
    for node in sm.searchable_nodes:
        assert torch.allclose(sm.vcns[node].logits.grad, torch.tensor(grads[node]), rtol=1e-4, atol=1e-7), node
    assert not torch.equal(sm.vcns["c1"].logits.grad, torch.zeros(2, 3))
    assert torch.equal(sm.vcns["c3"].logits.grad, torch.zeros(2, 3))  # the deepest node weighs 0
    assert all(p.grad is None for p in sm.weight_parameters())


def test_regularizer_differs_from_the_plain_softmax_form():
    # the old form (softmax of the logits, no noise, no τ) gives another value and a gradient
    # about τ times larger at τ = 5 - the point of the change
    sm = _chain()
    sm.set_mode("gumbel", tau=5.0)
    sm(torch.randn(2, 1, 4, 4))
    got = policy_regularizer(sm)
    got.backward()
    plain = 0.0
    for node, rows in LOGITS.items():
        for z in rows:
            p = _softmax(z)
            plain += WEIGHTS[node] * (_softplus(p[1] - p[0]) + _softplus(p[2] - p[0]))
    assert abs(got.item() - plain) > 1e-3
    grad = torch.cat([sm.vcns[n].logits.grad.flatten() for n in ("c1", "c2")]).abs().sum()
    logits = {n: torch.tensor(LOGITS[n], requires_grad=True) for n in ("c1", "c2")}
    plain_t = sum(
        WEIGHTS[n] * (torch.nn.functional.softplus(p[:, 1] - p[:, 0]) + torch.nn.functional.softplus(p[:, 2] - p[:, 0])).sum()
        for n, p in ((n, logits[n].softmax(-1)) for n in logits)
    )
    plain_t.backward()
    plain_grad = sum(logits[n].grad.abs().sum() for n in logits)
    assert plain_grad > 2.0 * grad


def test_regularizer_draws_fresh_noise_without_a_soft_gumbel_pass():
    # hard (straight-through) samples record one-hot weights, warm-up none: P' is drawn anew
    # at sm.tau, as Eq. 1 defines it
    for mode, hard in (("gumbel", True), ("warmup", False)):
        sm = _chain()
        sm.set_mode(mode, tau=2.5, hard=hard)
        sm(torch.randn(2, 1, 4, 4))
        torch.manual_seed(5)
        got = policy_regularizer(sm)
        value, _ = _hand_regularizer(LOGITS, _gumbel_noise(5, sm.searchable_nodes), 2.5, WEIGHTS)
        assert got.item() == pytest.approx(value, rel=1e-5), mode


def test_soft_policy_with_a_disallowed_option_stays_finite():
    sm = _chain()
    sm.set_allowed_options(("shared", "skip"))
    sm.set_mode("gumbel", tau=0.5)
    sm(torch.randn(2, 1, 4, 4))
    probs = soft_policy(sm)
    for node, p in probs.items():
        assert torch.equal(p[:, 1], torch.zeros(2))
        assert torch.allclose(p, sm.last_weights[node], atol=1e-6)
    loss = policy_regularizer(sm)
    loss.backward()
    assert math.isfinite(loss.item())
    assert all(bool(torch.isfinite(p.grad).all()) and bool((p.grad[:, 1] == 0).all()) for p in sm.arch_parameters())


def test_regularizer_pushes_towards_sharing():
    sm = toy_supermodel()
    sm.set_mode("gumbel", tau=5.0)
    for seed in range(5):
        torch.manual_seed(seed)
        sm(torch.randn(2, 1, 8, 8))
        for p in sm.arch_parameters():
            p.grad = None
        policy_regularizer(sm).backward()
        first = sm.vcns["conv1"].logits.grad  # conv2 is the deepest node: weight 0
        # descending the gradient raises the shared logit and lowers own and skip together
        assert (first[:, 0] < 0).all() and (first[:, 1:].sum(1) > 0).all()


def test_depth_weights_on_a_chain_and_the_toy():
    assert depth_weights(_chain()) == WEIGHTS
    assert depth_weights(toy_supermodel()) == {"conv1": 1.0, "conv2": 0.0}


def test_parameter_weights_follow_the_parameters_and_weigh_the_regulariser():
    sm = _chain()
    # c1: 3*1*9+3 = 30, c2: 3*3*9+3 = 84, c3: 2*3*9+2 = 56 parameters; mean 170/3
    counts = {"c1": 30, "c2": 84, "c3": 56}
    expected = {n: c / (170 / 3) for n, c in counts.items()}
    assert parameter_weights(sm) == pytest.approx(expected)
    sm.set_mode("gumbel", tau=0.7)
    x = torch.randn(2, 1, 4, 4)
    torch.manual_seed(11)
    sm(x)
    noise = _gumbel_noise(11, sm.searchable_nodes)
    value, _ = _hand_regularizer(LOGITS, noise, 0.7, expected)
    assert policy_regularizer(sm, "params").item() == pytest.approx(value, rel=1e-5)
    # the deepest node, which the paper's depth weights leave alone, is pushed towards sharing
    policy_regularizer(sm, "params").backward()
    assert not torch.equal(sm.vcns["c3"].logits.grad, torch.zeros(2, 3))
    with pytest.raises(ConfigError, match="unknown regulariser weights 'size'; use depth, params, cost"):
        policy_regularizer(sm, "size")
    with pytest.raises(ConfigError, match=r"reg_weights must be depth \(the paper's \(L - l\)/L\), cost or params, got 'size'"):
        automtl.search.load_config({"policy_train": {"reg_weights": "size"}})


def test_cost_weights_average_the_shares_of_parameters_and_macs():
    sm = _chain()
    # batch 2 of 1x4x4: MACs = output elements x input channels x 9 - c1 96*1*9, c2 96*3*9, c3 64*3*9
    macs = {"c1": 864, "c2": 2592, "c3": 1728}
    params = {"c1": 30, "c2": 84, "c3": 56}
    expected = {n: (params[n] / (170 / 3) + macs[n] / (5184 / 3)) / 2 for n in macs}
    assert cost_weights(sm) == pytest.approx(expected)
    assert sum(cost_weights(sm).values()) == pytest.approx(3.0)
    sm.set_mode("gumbel", tau=0.7)
    x = torch.randn(2, 1, 4, 4)
    torch.manual_seed(5)
    sm(x)
    value, _ = _hand_regularizer(LOGITS, _gumbel_noise(5, sm.searchable_nodes), 0.7, expected)
    assert policy_regularizer(sm, "cost").item() == pytest.approx(value, rel=1e-5)
    config = automtl.search.load_config({"policy_train": {"reg_weights": "cost"}})
    assert config.policy_train.reg_weights == "cost"


def test_cost_weights_macs_agree_with_the_cost_count_of_the_all_shared_model():
    from automtl.export.cost import model_cost
    from automtl.search.regularizer import _node_macs

    sm = _chain()
    model = sm.derive(automtl.Policy.all_shared(sm))
    # the derived model's total counts each convolution once, for one input: half the batch of 2
    assert sum(_node_macs(sm).values()) == 2 * model_cost(model, [1, 4, 4]).macs_by_kind["conv"]


def test_depth_weights_all_one_without_depth():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    sm = automtl.compile(mlp, ["a", "b"], torch.zeros(2, 1, 2, 2))
    assert depth_weights(sm) == {sm.searchable_nodes[0]: 1.0}


def test_depth_weights_on_resnet18():
    torch.manual_seed(0)
    sm = automtl.compile(torchvision.models.resnet18(num_classes=4), ["a", "b"], torch.zeros(1, 3, 32, 32))
    weights = depth_weights(sm)
    depths = {n: sm.depth(n) for n in sm.searchable_nodes}
    deepest = max(depths.values())
    assert weights[sm.searchable_nodes[0]] == 1.0 and depths[sm.searchable_nodes[0]] == 0
    assert all(weights[n] == 0.0 for n, d in depths.items() if d == deepest)
    assert weights["fc"] == 0.0  # the classifier is the deepest searchable node
    assert all(0.0 <= w <= 1.0 for w in weights.values())
    # shallower never weighs less
    ordered = sorted(sm.searchable_nodes, key=depths.get)
    assert all(weights[a] >= weights[b] for a, b in zip(ordered, ordered[1:]))


def test_tau_schedule():
    taus = TauSchedule(init=5.0, decay=0.965, steps_per_epoch=3, minimum=1.0)
    assert [taus(n) for n in range(7)] == pytest.approx([5.0, 5.0, 5.0, 5 * 0.965, 5 * 0.965, 5 * 0.965, 5 * 0.965**2])
    assert taus.epoch(6) == 2
    assert taus(3 * 1000) == 1.0  # never below the minimum
    with pytest.raises(ConfigError, match="tau schedule"):
        TauSchedule(init=5.0, decay=1.5)
