"""AdaShare: its two policy losses and its curriculum against hand computation, the block skip
(a skipped block gives its input, or its own down-sample path's output), one Gumbel sample per
block and task, only residual blocks as units, the select-or-skip draw, the final choice by
re-training k candidates, and a whole run."""

import json
import math

import pytest
import torch
import torchvision
from torch import nn

import automtl
from automtl import Policy, Task
from automtl.compiler.ir import SHARED, SKIP
from automtl.errors import PolicyError
from automtl.export.derive import derive
from automtl.methods.adashare import AdaShare, is_pinned, open_units, sharing_loss, sparsity_loss
from automtl.search.checkpoint import load_checkpoint
from automtl.search.config import OptimizerConfig
from automtl.search.stages import make_optimizer
from automtl.search import Callback
from automtl.search.trainer import StageLoop

from methods_toy import TINY, ResToy, res_supermodel, toy_tasks
from search_toy import model_spec, toy_data

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


def _prepared(curriculum=False, **kwargs):
    sm = res_supermodel()
    method = AdaShare(curriculum=curriculum, **kwargs)
    method.prepare(sm)
    return sm, method


def test_policy_loss_of_the_supermodel_by_hand():
    sm, method = _prepared(lambda_sparsity=0.01, lambda_sharing=0.5)
    assert sm.allowed_options.tolist() == [True, False, True]  # no own copies
    alpha = torch.tensor([[0.9, 0.2], [0.1, 0.7]])  # the toy's 2 blocks x 2 tasks
    _set_alpha(sm, method, alpha)
    loss = method.policy_loss(sm)
    # L_sharing: (L - l)/L = 1, 1/2 -> 2 * 0.7 * 1 + 2 * 0.6 / 2 = 2.0
    expected = 0.01 * sum(math.log(a) for a in alpha.flatten().tolist()) + 0.5 * 2.0
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    for logits in (sm.vcns["b1c1"].logits, sm.vcns["b2c1"].logits):
        assert logits.grad is not None and bool(logits.grad.abs().sum() > 0)


def test_only_residual_blocks_are_units_the_rest_runs_shared():
    sm, method = _prepared()
    assert [u.nodes for u in method.units] == [("b1c1", "b1c2"), ("b2c1", "b2c2")]
    for node in ("stem", "b2sc"):  # the stem and the down-sample path: always run, shared
        logits = sm.vcns[node].logits
        assert is_pinned(logits) and not logits.requires_grad
    sm.set_mode("gumbel", tau=5.0)
    weights = sm.mixing_weights()
    for node in ("stem", "b2sc"):
        assert weights[node].tolist() == [[1.0, 0.0, 0.0]] * 2  # exactly shared, whatever the noise
    _set_alpha(sm, method, torch.tensor([[0.0, 0.0], [0.0, 0.0]]))  # every block skipped by every task
    policy = method.argmax(sm)
    assert policy.count("skip") == 8 and policy.choice("a", "stem") == policy.choice("b", "b2sc") == SHARED


def test_block_logits_are_tied_and_drawn_once_per_block_and_task(monkeypatch):
    sm, method = _prepared()
    assert sm.vcns["b2c1"].logits is sm.vcns["b2c2"].logits
    assert sm.vcns["b1c1"].logits is not sm.vcns["b2c1"].logits
    arch = sm.arch_parameters()
    assert len(arch) == 4 and len({id(p) for p in arch}) == 4  # stem, block 1, down-sample, block 2
    draws = []
    real = torch.nn.functional.gumbel_softmax

    def counted(logits, *args, **kwargs):
        draws.append(logits.shape)
        return real(logits, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "gumbel_softmax", counted)
    sm.set_mode("gumbel", tau=1.0)
    weights = sm.mixing_weights()
    assert len(draws) == 4 and all(shape == (2, 3) for shape in draws)  # one [tasks, options] draw per tensor
    assert weights["b2c1"] is weights["b2c2"] and weights["b1c1"] is weights["b1c2"]
    assert not torch.equal(weights["b1c1"], weights["b2c1"])
    # a learning step moves the tied logits once
    optimizer = make_optimizer(OptimizerConfig("adam", 0.1), [p for p in arch if p.requires_grad])
    method.policy_loss(sm).backward()
    optimizer.step()
    probs = sm.policy_probs()
    assert torch.equal(probs["b2c1"], probs["b2c2"]) and torch.equal(probs["b1c1"], probs["b1c2"])


def _block_model(downsample: bool) -> nn.Module:
    """One torchvision BasicBlock as the whole backbone: 8 -> 8 channels, or 4 -> 8 at stride 2
    with its down-sample path (1x1 convolution and norm)."""
    torch.manual_seed(0)
    if not downsample:
        return torchvision.models.resnet.BasicBlock(8, 8)
    path = nn.Sequential(nn.Conv2d(4, 8, 1, stride=2, bias=False), nn.BatchNorm2d(8))
    return torchvision.models.resnet.BasicBlock(4, 8, stride=2, downsample=path)


def _randomise_norms(model: nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 2)
                m.bias.uniform_(-1, 1)


@pytest.mark.parametrize("downsample", [False, True])
def test_a_skipped_torchvision_block_gives_its_input_or_its_downsample(downsample):
    block = _block_model(downsample)
    _randomise_norms(block)
    channels = 4 if downsample else 8
    tasks = [Task("a"), Task("b")]  # no heads: the outputs are the block's
    # norm="follow": each norm goes with its convolution, so the parameter counts below are the block's
    sm = automtl.compile(block, tasks, example_input=torch.zeros(2, channels, 8, 8), norm="follow")
    method = AdaShare(curriculum=False)
    method.prepare(sm)
    assert len(method.units) == 1
    policy = method._policy(sm, torch.tensor([[False, True]]))  # task a skips the block, b selects it
    x = torch.randn(3, channels, 8, 8)
    block.eval()
    sm.eval()
    with torch.no_grad():  # the block's ReLUs work in place: the expectations get their own input
        expected_skip = block.downsample(x.clone()) if downsample else x.clone()
        expected_run = block(x.clone())
        sm.set_mode("fixed", policy=policy)
        out = sm(x)
        model = derive(sm, policy).eval()
        derived = model(x)
    assert torch.equal(out["a"], expected_skip) and torch.equal(derived["a"], expected_skip)
    assert torch.equal(out["b"], expected_run) and torch.equal(derived["b"], expected_run)
    if not downsample:
        assert out["a"] is x and derived["a"] is x  # the input itself, untouched
    # no projection is added, and a skipping task runs none of the block's branch
    assert not [name for name, _ in model.named_modules() if name.startswith("skip")]
    shared = derive(sm, Policy.all_shared(sm)).num_parameters()
    assert model.num_parameters() == shared
    branch = sum(p.numel() for name, p in block.named_parameters() if not name.startswith("downsample"))
    assert model.num_parameters("a") == shared - branch


def _toy_backbone_by_hand(toy: ResToy, x: torch.Tensor, skip_first: bool, skip_second: bool) -> torch.Tensor:
    x = torch.relu(toy.bn(toy.stem(x)))
    if not skip_first:
        x = torch.relu(x + toy.b1n2(toy.b1c2(torch.relu(toy.b1n1(toy.b1c1(x))))))
    if skip_second:
        return toy.b2sc(x)
    return torch.relu(torch.add(toy.b2n2(toy.b2c2(torch.relu(toy.b2n1(toy.b2c1(x))))), toy.b2sc(x)))


def test_skipped_blocks_of_the_toy_by_hand():
    torch.manual_seed(0)
    toy = ResToy()
    _randomise_norms(toy)
    sm = automtl.compile(toy, toy_tasks(), example_input=torch.zeros(2, 1, 8, 8))
    method = AdaShare(curriculum=False)
    method.prepare(sm)
    # task a skips block 1, task b skips block 2 (the one that changes the width)
    policy = method._policy(sm, torch.tensor([[False, True], [True, False]]))
    x = torch.randn(4, 1, 8, 8)
    toy.eval()
    sm.eval()
    sm.set_mode("fixed", policy=policy)
    model = derive(sm, policy).eval()
    with torch.no_grad():
        for task, skips in (("a", (True, False)), ("b", (False, True))):
            expected = sm.heads[task](_toy_backbone_by_hand(toy, x, *skips))
            assert torch.equal(sm(x)[task], expected)
            assert torch.equal(model(x)[task], expected)
    assert not [name for name, _ in model.named_modules() if name.startswith("skip")]


def test_a_block_is_skipped_as_a_whole_or_not_at_all():
    sm, method = _prepared()
    choices = Policy.all_shared(sm).as_table()
    choices["a"]["b1c1"] = SKIP  # b1c2 still shared
    half = Policy(sm.task_names, sm.searchable_nodes, choices)
    with pytest.raises(PolicyError, match=r"task 'a' skips part of residual block block@add \(b1c1=skip, b1c2=shared\)"):
        derive(sm, half)


def test_soft_mode_mixes_the_block_with_its_shortcut():
    """Gumbel mode: the block's operators run shared, its output is w_select * block + w_skip * shortcut."""
    torch.manual_seed(0)
    toy = ResToy()
    sm = automtl.compile(toy, toy_tasks(), example_input=torch.zeros(2, 1, 8, 8))
    AdaShare(curriculum=False).prepare(sm)
    with torch.no_grad():  # task a: select block 2 with probability ~1, b: skip it ~surely
        sm.vcns["b2c1"].logits[0] = torch.tensor([30.0, 0.0, -30.0])
        sm.vcns["b2c1"].logits[1] = torch.tensor([-30.0, 0.0, 30.0])
        sm.vcns["b1c1"].logits[:, SKIP] = -30.0
    sm.eval()
    sm.set_mode("gumbel", tau=1.0)
    x = torch.randn(2, 1, 8, 8)
    toy.eval()
    with torch.no_grad():
        out = sm(x)
        w = sm.last_weights["b2c1"]
        full = _toy_backbone_by_hand(toy, x, False, False)
        skipped = _toy_backbone_by_hand(toy, x, False, True)
        for k, task in enumerate(("a", "b")):
            mixed = (w[k, 0] + w[k, 1]) * full + w[k, 2] * skipped
            w1 = sm.last_weights["b1c1"][k]
            assert float(w1[2]) < 1e-6
            assert torch.allclose(out[task], sm.heads[task](mixed), atol=1e-4)


def test_curriculum_opens_one_unit_per_epoch_from_the_top():
    assert list(open_units(3, 0)) == [2]
    assert list(open_units(3, 1)) == [1, 2]
    assert list(open_units(3, 7)) == [0, 1, 2]
    sm, method = _prepared(curriculum=True)  # epoch 0
    block1, block2 = (sm.vcns[u.nodes[0]].logits for u in method.units)
    assert is_pinned(block1) and not block1.requires_grad
    assert block1[:, SHARED].tolist() == [0.0, 0.0] and torch.isneginf(block1[:, SKIP]).all()
    assert torch.equal(block2, torch.zeros(2, 3)) and block2.requires_grad
    sm.set_mode("gumbel", tau=5.0)
    assert sm.mixing_weights()["b1c2"].tolist() == [[1.0, 0.0, 0.0]] * 2  # a pinned block runs exactly
    with torch.no_grad():
        block2.fill_(0.7)  # as if learned in epoch 0
    method.on_policy_epoch(sm, 1)
    assert torch.equal(block1, torch.zeros(2, 3)) and block1.requires_grad  # back at its initial logits
    assert torch.equal(block2, torch.full((2, 3), 0.7))  # kept
    with torch.no_grad():
        block1.fill_(-0.3)
    method.on_policy_epoch(sm, 1)  # again (e.g. after a resume): nothing changes
    assert torch.equal(block1, torch.full((2, 3), -0.3))


def test_only_open_units_learn_during_policy_train():
    sm = res_supermodel()
    train, val, _ = toy_data()
    config = {**TINY, "policy_train": {**TINY["policy_train"], "tau_decay_every": 100}}  # epoch 0 throughout
    automtl.search(sm, train, val, config=config, method="adashare", stages=["pretrain", "policy_train"], progress=False)
    stem, block1, block2 = (sm.vcns[n].logits for n in ("stem", "b1c1", "b2c1"))
    assert is_pinned(stem) and is_pinned(block1) and torch.equal(block1[:, SHARED], torch.zeros(2))
    assert not torch.equal(block2, torch.zeros(2, 3))


def test_the_draw_is_select_or_skip_per_block():
    sm, method = _prepared(draw="best_of_k", k=5, seed=3)
    _set_alpha(sm, method, torch.tensor([[0.3, 0.8], [0.6, 0.4]]))
    policy = method.sample(sm, 11)
    for unit in method.units:
        for task in sm.task_names:
            assert {policy.choice(task, n) for n in unit.nodes} <= {SHARED, SKIP}
            assert len({policy.choice(task, n) for n in unit.nodes}) == 1
    assert method.sample(sm, 11) == policy
    draws = [method.sample(sm, 3 + j) for j in range(5)]
    skips = lambda p: p.count("skip") + 0.01 * p.count("shared")  # noqa: E731 - a stand-in validation loss
    assert method.draw_policy(sm, skips) == min(draws, key=skips)  # the cheap ranking: no re-training
    assert method.retrain_candidates(sm) == []
    argmax = AdaShare(curriculum=False, draw="argmax")
    argmax.units = method.units
    assert argmax.draw_policy(sm, skips).choice("b", "b1c1") == SHARED  # α = 0.8


def test_no_residual_blocks_falls_back_to_operators_with_a_warning():
    from automtl.backbones import SmallConvNet

    sm = automtl.compile(SmallConvNet(in_channels=1, widths=[4, 4], strides=[1, 2], features=8, grid=2), ["x"], torch.zeros(2, 1, 8, 8))
    method = AdaShare(curriculum=False)
    with pytest.warns(UserWarning, match="has none it can skip.*decides per operator instead"):
        method.prepare(sm)
    assert method.granularity == "operator" and not sm.block_skips
    assert [u.nodes for u in method.units] == [(n,) for n in sm.searchable_nodes]
    assert not any(is_pinned(sm.vcns[n].logits) for n in sm.searchable_nodes)


def test_the_final_choice_retrains_k_candidates_and_keeps_the_best(tmp_path, monkeypatch):
    trainings = []
    real_loop = StageLoop.loop

    def counted(self, stage, *args, **kwargs):
        if stage == "post_train":
            trainings.append(stage)
        return real_loop(self, stage, *args, **kwargs)

    monkeypatch.setattr(StageLoop, "loop", counted)
    sm = res_supermodel()
    train, val, test = toy_data()
    config = {**TINY, "adashare": {"k": 3, "curriculum": False, "lambda_sparsity": 0.5}, "post_train": {"steps": 2}}
    result = automtl.search(sm, train, val, test, config=config, method="adashare", out=tmp_path, progress=False)
    records = json.loads((tmp_path / "results.json").read_text())["candidates"]
    assert len(records) >= 2 and len(trainings) == len(records)  # one post-training per distinct candidate, none more
    best = min(range(len(records)), key=lambda j: records[j]["weighted_loss"])
    assert result.val["weighted_loss"] == pytest.approx(records[best]["weighted_loss"])
    assert all(result.val["weighted_loss"] <= r["weighted_loss"] + 1e-9 for r in records)
    search = load_checkpoint(str(tmp_path / "checkpoints" / "post_train.pt"), "post_train")["candidates"]
    assert search["best"]["index"] == best and Policy.from_dict(sm, search["policies"][best]) == result.policy
    assert Policy.load(sm, tmp_path / "policy.json") == result.policy
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["candidate"] for r in lines if r.get("kind") == "candidate"] == list(range(len(records)))
    # the final model is the chosen candidate's, not a new training
    model, _ = automtl.load_run(tmp_path, supermodel=res_supermodel())
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x)["a"], result.model.eval()(x)["a"])


def test_adashare_run_end_to_end(tmp_path):
    sm = res_supermodel()
    train, val, test = toy_data()
    config = {**TINY, "adashare": {"k": 2, "draw": "best_of_k"}}
    result = automtl.search(sm, train, val, test, config=config, method="adashare", out=tmp_path, progress=False)
    assert result.policy.count("own") == 0
    for task in ("a", "b"):  # one decision per block; the down-sample path always shared
        assert result.policy.choice(task, "b2c1") == result.policy.choice(task, "b2c2")
        assert result.policy.choice(task, "b2sc") == result.policy.choice(task, "stem") == SHARED
    assert "candidates" not in json.loads((tmp_path / "results.json").read_text())
    x = torch.randn(3, 1, 8, 8)
    out = result.model.eval()(x)
    assert out["a"].shape == (3, 2) and out["b"].shape == (3, 2)
    model, meta = automtl.load_run(tmp_path, supermodel=res_supermodel())
    assert meta["block_skips"] == ["add", "add_1"]
    with torch.no_grad():
        assert torch.equal(model(x)["a"], result.model(x)["a"])
    assert Policy.from_dict(sm, meta["policy"]) == result.policy


class _StopInSecondCandidate(Callback):
    """Stops the run at the first periodic post-train checkpoint of the second candidate."""

    def __init__(self):
        self.seen = 0

    def on_checkpoint(self, stage, step, path):
        if stage == "post_train" and path is not None and 0 < step < 4:
            self.seen += 1
            if self.seen == 2:
                raise KeyboardInterrupt


def test_the_candidate_search_resumes_where_it_stopped(tmp_path):
    config = {**TINY, "adashare": {"k": 3, "curriculum": False, "lambda_sparsity": 0.5}}
    train, val, test = toy_data()
    reference = automtl.search(res_supermodel(), train, val, test, config=config, method="adashare", out=tmp_path / "a", progress=False)
    with pytest.raises(KeyboardInterrupt):
        automtl.search(res_supermodel(), train, val, test, config=config, method="adashare", out=tmp_path / "b",
                       progress=False, callbacks=[_StopInSecondCandidate()])
    resumed = automtl.search(res_supermodel(), train, val, test, out=tmp_path / "b", resume=True, method="adashare", progress=False)
    assert resumed.policy == reference.policy and resumed.val == reference.val
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == (tmp_path / "b" / "metrics.jsonl").read_text()
    a, b = reference.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


SPEC = model_spec(
    {"builtin": "dilated_resnet_tiny", "kwargs": {"widths": [4, 8], "dilations": [1, 2]}}, [3, 8, 8],
    [{"kind": "segmentation", "name": "seg", "classes": 3, "aspp_rates": [1], "head_hidden": 4},
     {"kind": "depth", "name": "depth", "aspp_rates": [1], "head_hidden": 4}],
)


def test_a_saved_adashare_model_loads_with_its_block_skips(tmp_path):
    from automtl.export.saved import load_model, save_model
    from automtl.search.build import build_supermodel

    sm, spec = build_supermodel(SPEC)
    method = AdaShare(curriculum=False)
    method.prepare(sm)
    # seg skips the block that changes the width (its down-sample path stands in), depth the other
    selected = torch.tensor([[True, False], [False, True]])
    model = derive(sm, method._policy(sm, selected)).eval()
    assert set(model.block_skips) == {b.merge for b in sm.block_skips.blocks}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    save_model(model, tmp_path / "m.pt", spec)
    loaded = load_model(tmp_path / "m.pt")
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected, got = model(x), loaded(x)
    assert all(torch.equal(expected[t], got[t]) for t in ("seg", "depth"))
    assert not [name for name, _ in loaded.named_modules() if name.startswith("skip")]


def test_a_run_of_a_config_reads_back_with_its_block_skips(tmp_path):
    from automtl.viz.show import read_run
    from search_toy import TINY_SCENES

    config = {**TINY_SCENES, "adashare": {"k": 2, "curriculum": False, "lambda_sparsity": 1.0}, "post_train": {"steps": 1}}
    result = automtl.search(config=config, method="adashare", out=tmp_path, progress=False)
    model, meta = automtl.load_run(tmp_path)  # rebuilt from the run's spec alone
    assert meta["block_skips"] and set(model.block_skips) == set(meta["block_skips"])
    contents = read_run(tmp_path)
    assert {b.merge for b in contents.supermodel.block_skips.blocks} == set(meta["block_skips"])
    redrawn = derive(contents.supermodel, contents.policy)
    assert sorted(redrawn.state_dict()) == sorted(result.model.state_dict())
