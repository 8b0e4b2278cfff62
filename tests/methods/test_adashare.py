"""AdaShare: its two policy losses and its curriculum against hand computation, tied block
logits, the select-or-skip draw, and a whole run."""

import math

import pytest
import torch

import automtl
from automtl import Policy
from automtl.compiler.ir import SHARED, SKIP
from automtl.methods.adashare import PINNED, AdaShare, open_units, sharing_loss, sparsity_loss
from automtl.search.stages import make_optimizer
from automtl.search.config import OptimizerConfig

from methods_toy import TINY, res_supermodel
from search_toy import toy_data

ALPHA = torch.tensor([[0.9, 0.2], [0.5, 0.5], [0.1, 0.7]])  # 3 units (bottom-up) x 2 tasks


def test_sparsity_loss_by_hand():
    expected = sum(math.log(a) for a in (0.9, 0.2, 0.5, 0.5, 0.1, 0.7))
    assert float(sparsity_loss(ALPHA.log())) == pytest.approx(expected)


def test_sharing_loss_by_hand():
    # (L - l)/L = 1, 2/3, 1/3; ordered pairs count each pair twice:
    # unit 0: 2 * |0.9 - 0.2| * 1 = 1.4; unit 1: 0; unit 2: 2 * |0.1 - 0.7| / 3 = 0.4
    assert float(sharing_loss(ALPHA)) == pytest.approx(1.8)
    three = torch.tensor([[0.2, 0.5, 0.9]])  # one unit, weight 1: 2 * (0.3 + 0.7 + 0.4)
    assert float(sharing_loss(three)) == pytest.approx(2.8)


def _set_alpha(sm, method, alpha):
    with torch.no_grad():
        for u, unit in enumerate(method.units):
            logits = sm.vcns[unit.nodes[0]].logits
            logits.zero_()
            logits[:, SHARED] = alpha[u].log()
            logits[:, SKIP] = (1 - alpha[u]).log()


def test_policy_loss_of_the_supermodel_by_hand():
    sm = res_supermodel()
    method = AdaShare(lambda_sparsity=0.01, lambda_sharing=0.5, curriculum=False)
    method.prepare(sm)
    assert sm.allowed_options.tolist() == [True, False, True]  # no own copies
    _set_alpha(sm, method, ALPHA)
    loss = method.policy_loss(sm)
    expected = 0.01 * sum(math.log(a) for a in ALPHA.flatten().tolist()) + 0.5 * 1.8
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    # d/dz_shared of λ_sp log α = λ_sp (1 - α) for a unit's shared logit (plus the sharing term)
    assert all(p.grad is not None for p in sm.arch_parameters())


def test_block_logits_are_tied():
    sm = res_supermodel()
    method = AdaShare(curriculum=False)
    method.prepare(sm)
    assert sm.vcns["b2c1"].logits is sm.vcns["b2sc"].logits is sm.vcns["b2c2"].logits
    assert sm.vcns["b1c1"].logits is not sm.vcns["b2c1"].logits
    arch = sm.arch_parameters()
    assert len(arch) == 3 and len({id(p) for p in arch}) == 3  # one tensor per unit, listed once
    optimizer = make_optimizer(OptimizerConfig("adam", 0.1), arch)
    method.policy_loss(sm).backward()
    optimizer.step()
    probs = sm.policy_probs()
    assert torch.equal(probs["b2c1"], probs["b2c2"]) and torch.equal(probs["b1c1"], probs["b1c2"])


def test_curriculum_opens_one_unit_per_epoch_from_the_top():
    assert list(open_units(3, 0)) == [2]
    assert list(open_units(3, 1)) == [1, 2]
    assert list(open_units(3, 7)) == [0, 1, 2]
    sm = res_supermodel()
    method = AdaShare()
    method.prepare(sm)  # epoch 0
    stem, block1, block2 = (sm.vcns[u.nodes[0]].logits for u in method.units)
    for pinned in (stem, block1):
        assert pinned[:, SHARED].tolist() == [PINNED, PINNED] and not pinned.requires_grad
    assert torch.equal(block2, torch.zeros(2, 3)) and block2.requires_grad
    sm.set_mode("gumbel", tau=5.0)
    weights = sm.mixing_weights()
    assert float(weights["b1c2"][:, SHARED].min()) > 1 - 1e-6  # a pinned block runs its operators
    with torch.no_grad():
        block2.fill_(0.7)  # as if learned in epoch 0
    method.on_policy_epoch(sm, 1)
    assert torch.equal(block1, torch.zeros(2, 3)) and block1.requires_grad  # back at its initial logits
    assert torch.equal(block2, torch.full((2, 3), 0.7))  # kept
    assert stem[:, SHARED].tolist() == [PINNED, PINNED] and not stem.requires_grad
    with torch.no_grad():
        block1.fill_(-0.3)
    method.on_policy_epoch(sm, 1)  # again (e.g. after a resume): nothing changes
    assert torch.equal(block1, torch.full((2, 3), -0.3))
    method.on_policy_epoch(sm, 2)
    assert torch.equal(stem, torch.zeros(2, 3)) and stem.requires_grad


def test_only_open_units_learn_during_policy_train():
    sm = res_supermodel()
    train, val, _ = toy_data()
    config = {**TINY, "policy_train": {**TINY["policy_train"], "tau_decay_every": 100}}  # epoch 0 throughout
    automtl.search(sm, train, val, config=config, method="adashare", stages=["pretrain", "policy_train"], progress=False)
    stem, block1, block2 = (sm.vcns[n].logits for n in ("stem", "b1c1", "b2c1"))
    expected = torch.zeros(2, 3)
    expected[:, SHARED] = PINNED
    assert torch.equal(stem, expected) and torch.equal(block1, expected)
    assert not torch.equal(block2, torch.zeros(2, 3))


def test_the_draw_is_select_or_skip_per_block():
    sm = res_supermodel()
    method = AdaShare(curriculum=False, k=5, seed=3)
    method.prepare(sm)
    _set_alpha(sm, method, torch.tensor([[0.5, 0.5], [0.3, 0.8], [0.6, 0.4]]))
    policy = method.sample(sm, 11)
    for unit in method.units:
        for task in sm.task_names:
            assert {policy.choice(task, n) for n in unit.nodes} <= {SHARED, SKIP}
            assert len({policy.choice(task, n) for n in unit.nodes}) == 1
    assert method.sample(sm, 11) == policy
    draws = [method.sample(sm, 3 + j) for j in range(5)]
    skips = lambda p: p.count("skip") + 0.01 * p.count("shared")  # noqa: E731 - a stand-in validation loss
    assert method.draw_policy(sm, skips) == min(draws, key=skips)
    argmax = AdaShare(curriculum=False, draw="argmax")
    argmax.units = method.units
    assert argmax.draw_policy(sm, skips).choice("b", "b1c1") == SHARED  # α = 0.8


def test_adashare_run_end_to_end(tmp_path):
    sm = res_supermodel()
    train, val, test = toy_data()
    result = automtl.search(sm, train, val, test, config={**TINY, "adashare": {"k": 2}}, method="adashare", out=tmp_path, progress=False)
    assert result.policy.count("own") == 0
    for task in ("a", "b"):  # one decision per block
        assert result.policy.choice(task, "b2c1") == result.policy.choice(task, "b2sc") == result.policy.choice(task, "b2c2")
    x = torch.randn(3, 1, 8, 8)
    out = result.model.eval()(x)
    assert out["a"].shape == (3, 2) and out["b"].shape == (3, 2)
    model, meta = automtl.load_run(tmp_path, supermodel=res_supermodel())
    with torch.no_grad():
        assert torch.equal(model(x)["a"], result.model(x)["a"])
    assert Policy.from_dict(sm, meta["policy"]) == result.policy
