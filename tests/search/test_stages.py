"""What each stage may and may not change, the disjoint splits, and how post-train gets its model."""

import copy

import pytest
import torch

from automtl import Policy
from automtl.errors import DataError
from automtl.search import AutoMTL, Callback, search
from automtl.search.batches import BatchStream, split_indices
from automtl.search.config import merge

from search_toy import TINY, ToyData, toy_data, toy_supermodel


class Snapshots(Callback):
    """The SuperModel's full state after every step (checkpoint_every=1)."""

    def __init__(self, sm):
        self.sm = sm
        self.states = [copy.deepcopy(sm.state_dict())]
        self.steps = []

    def on_checkpoint(self, stage, step, path):
        if step != (self.steps[-1] if self.steps else None):
            self.steps.append(step)
            self.states.append(copy.deepcopy(self.sm.state_dict()))


def _split(state, sm):
    logits = {f"vcns.{n}.logits" for n in sm.searchable_nodes}
    return {k: v for k, v in state.items() if k in logits}, {k: v for k, v in state.items() if k not in logits}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_weight_steps_keep_logits_and_policy_steps_keep_weights(tmp_path):
    sm = toy_supermodel()
    train, val, _ = toy_data()
    cfg = merge(TINY, {"policy_train": {"steps": 6, "weight_steps": 2, "policy_steps": 1}, "logging": {"checkpoint_every": 1}})
    snaps = Snapshots(sm)
    search(sm, train, val, config=cfg, out=tmp_path / "run", stages=["policy_train"], callbacks=[snaps])
    assert snaps.steps == [1, 2, 3, 4, 5, 6]
    kinds = ["weight", "weight", "policy", "weight", "weight", "policy"]
    for before, after, kind in zip(snaps.states, snaps.states[1:], kinds):
        logits_before, weights_before = _split(before, sm)
        logits_after, weights_after = _split(after, sm)
        if kind == "weight":
            assert _same(logits_before, logits_after)
            assert not _same(weights_before, weights_after)
        else:  # weights, BN running statistics and counters all unchanged
            assert _same(weights_before, weights_after)
            assert not _same(logits_before, logits_after)


def test_pretrain_leaves_the_logits_at_zero(tmp_path):
    sm = toy_supermodel()
    train, val, _ = toy_data()
    search(sm, train, val, config=TINY, stages=["pretrain"])
    assert all(torch.equal(p, torch.zeros_like(p)) for p in sm.arch_parameters())
    first = toy_supermodel()
    assert not torch.equal(first.vcns["conv1"].op.weight, sm.vcns["conv1"].op.weight)


class Recording(ToyData):
    def __init__(self, *args):
        super().__init__(*args)
        self.seen = []

    def __getitem__(self, i):
        self.seen.append(i)
        return super().__getitem__(i)


def test_weight_and_policy_steps_read_disjoint_splits():
    sm = toy_supermodel()
    train = Recording(64, 1)
    _, val, _ = toy_data()
    cfg = merge(TINY, {"policy_train": {"steps": 12, "weight_steps": 2, "policy_steps": 1, "policy_fraction": 0.25}})
    search(sm, train, val, config=cfg, stages=["policy_train"])
    seen = train.seen[3:]  # the first read is the dataset check, the next two the pre-flight batch
    batches = [seen[i : i + 8] for i in range(0, len(seen), 8)]
    assert len(batches) == 12
    weight = {i for b, batch in enumerate(batches) if b % 3 < 2 for i in batch}
    policy = {i for b, batch in enumerate(batches) if b % 3 == 2 for i in batch}
    expect_weight, expect_policy = split_indices(64, 0.25, 0 * 1000 + 20)
    assert weight.isdisjoint(policy)
    assert weight <= set(expect_weight) and policy <= set(expect_policy)
    assert len(expect_policy) == 16 and set(expect_weight) | set(expect_policy) == set(range(64))
    assert len(policy) == 16  # 4 policy steps of 8 = two passes over its 16 samples


def test_batch_stream_is_a_function_of_seed_and_position():
    data = ToyData(20, 0)
    a = BatchStream(data, None, 4, seed=5)
    first = [a.next()[0] for _ in range(7)]  # crosses into the second epoch (5 batches per epoch)
    b = BatchStream(data, None, 4, seed=5)
    b.load_state_dict({"epoch": 1, "position": 0, "seed": 5, "size": 20})
    assert torch.equal(b.next()[0], first[5])
    assert a.state_dict() == {"epoch": 1, "position": 2, "seed": 5, "size": 20}
    ranks = [BatchStream(data, None, 2, seed=5, rank=r, world=2).epoch_batches(0) for r in range(2)]
    flat = [set(i for batch in r for i in batch) for r in ranks]
    assert flat[0].isdisjoint(flat[1]) and len(flat[0]) == len(flat[1]) == 10
    with pytest.raises(DataError, match="the train split has 20 samples, fewer than one batch of 32"):
        BatchStream(data, None, 32, seed=0)


def test_post_train_starts_from_the_initial_weights_with_the_seeded_policy():
    sm = toy_supermodel()
    train, val, _ = toy_data()
    with torch.no_grad():  # a learned distribution to sample from
        sm.vcns["conv1"].logits.copy_(torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.5, 0.0]]))
    cfg = merge(TINY, {"post_train": {"steps": 0, "draw_seed": 11}})
    expected_policy = Policy.sample(sm, seed=11)
    result = search(sm, train, val, config=cfg, stages=["post_train"])
    assert result.policy == expected_policy
    fresh = toy_supermodel()
    reference = fresh.derive(expected_policy).state_dict()
    got = result.model.state_dict()
    assert got.keys() == reference.keys()
    assert all(torch.equal(got[k], reference[k]) for k in got)


def test_best_of_k_takes_the_lowest_validation_loss():
    sm = toy_supermodel()
    with torch.no_grad():
        for p in sm.arch_parameters():
            p.normal_()
    method = AutoMTL(draw="best_of_k", k=5, seed=3)
    candidates = [Policy.sample(sm, seed=3 + j) for j in range(5)]
    scores = {c: float(i * 7 % 5) for i, c in enumerate(candidates)}  # the 0 is the first candidate
    chosen = method.draw_policy(sm, lambda p: scores[p])
    assert chosen == min(scores, key=scores.get)
