"""Contract tests driven by the registries: every registered sharing method, loss weighting,
built-in backbone, task kind and benchmark runs the same short checks, so a new entry is
tested without new test code."""

import copy
import importlib.util

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import automtl
from automtl.backbones import BUILTIN_BACKBONES
from automtl.compiler.ir import OPTIONS
from automtl.data import BENCHMARKS, get_benchmark
from automtl.export.derive import MultiTaskModel
from automtl.methods import METHODS, SharingMethod, make_method
from automtl.policy import Policy
from automtl.search.config import STAGES, load_config
from automtl.search.weighting import JD_AGGREGATORS, WEIGHTINGS, LossWeighting, make_weighting
from automtl.tasks import TASK_KINDS, infer_in_channels, make_task

from search_toy import TINY, toy_data, toy_supermodel

# -- sharing methods --------------------------------------------------------------------------

#: two steps of every stage the method runs; two candidates where a method draws several
TWO_STEPS = copy.deepcopy(TINY)
TWO_STEPS.update(
    pretrain={"steps": 2},
    policy_train={"steps": 2, "weight_steps": 1, "policy_steps": 1, "tau_decay_every": 1},
    post_train={"steps": 2, "k": 2},
    adashare={"k": 2},
    logging={"log_every": 1, "eval_every": 0, "checkpoint_every": 0, "progress": False},
)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_runs_a_two_step_search_and_keeps_the_base_promises(name):
    config = load_config(TWO_STEPS)
    method = make_method(name, config)
    assert isinstance(method, SharingMethod) and method.name == name
    assert method.stages and list(method.stages) == [s for s in STAGES if s in method.stages]
    train, val, _ = toy_data()
    sm = toy_supermodel()
    result = automtl.search(sm, train, val, config=config, method=name, progress=False)
    assert result.method == name
    # the policy is a value valid for this supermodel, using only the options the method allows
    assert isinstance(result.policy, Policy)
    assert Policy.from_dict(sm, result.policy.to_dict()) == result.policy
    allowed = {OPTIONS[i] for i in torch.nonzero(sm.allowed_options).flatten().tolist()}
    used = {result.policy.option(t, n) for t in sm.task_names for n in sm.searchable_nodes}
    assert used <= allowed
    # post-train ran (every method ends with it): a trained model, evaluated per task
    assert "post_train" in method.stages
    assert isinstance(result.model, nn.Module) and result.val is not None
    result.model.eval()
    with torch.no_grad():
        out = result.model(torch.randn(3, 1, 8, 8))
    assert set(out) == {"a", "b"} and all(out[t].shape == (3, 2) and torch.isfinite(out[t]).all() for t in out)


@pytest.mark.parametrize("alias", sorted(METHODS.aliases))
def test_every_alias_builds_its_method(alias):
    config = load_config(TWO_STEPS)
    assert make_method(alias, config).name == METHODS.aliases[alias]


# -- loss weightings --------------------------------------------------------------------------

#: packages a weighting needs beyond torch (checked, so a missing one is a reported skip)
NEEDS = {name: ("torchjd",) for name in JD_AGGREGATORS}
NEEDS["cagrad"] = ("torchjd", "numpy", "cvxpy", "clarabel")  # torchjd[cagrad]
NEEDS["nash_mtl"] = ("torchjd", "numpy", "cvxpy", "ecos")  # torchjd[nash_mtl]


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Linear(4, 3)
        self.heads = nn.ModuleDict({"a": nn.Linear(3, 1), "b": nn.Linear(3, 1)})

    def forward(self, x):
        features = torch.relu(self.trunk(x))
        return {t: head(features) for t, head in self.heads.items()}


@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_every_weighting_steps_once(name):
    missing = [p for p in NEEDS.get(name, ()) if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(f"loss weighting '{name}' needs {', '.join(missing)}, not installed")
    torch.manual_seed(0)
    weighting = make_weighting(name, {"a": 1.0, "b": 0.5})
    assert isinstance(weighting, LossWeighting) and isinstance(weighting, nn.Module)
    model = TwoHeads()
    params = list(model.parameters()) + list(weighting.parameters())
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.SGD(params, lr=0.1)
    x, y = torch.randn(8, 4), torch.randn(8, 1)
    with weighting.watch(model):
        out = model(x)
        losses = {t: ((out[t] - y) ** 2).mean() for t in ("a", "b")}
        total = weighting.backward(losses, params=params)
    assert total.dim() == 0 and torch.isfinite(total) and not total.requires_grad
    assert model.trunk.weight.grad is not None and torch.isfinite(model.trunk.weight.grad).all()
    assert all(model.heads[t].weight.grad is not None for t in ("a", "b"))
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, params))
    # its state round-trips through a state_dict, as checkpoints do
    again = make_weighting(name, {"a": 1.0, "b": 0.5})
    again.load_state_dict(weighting.state_dict())
    assert all(torch.equal(p, q) for p, q in zip(weighting.parameters(), again.parameters()))


# -- built-in backbones -----------------------------------------------------------------------

@pytest.mark.parametrize("name", BUILTIN_BACKBONES.names())
def test_every_builtin_backbone_compiles_and_derives(name):
    torch.manual_seed(0)
    backbone = BUILTIN_BACKBONES.get(name)().eval()
    x = torch.randn(2, 3, 16, 16)
    sm = automtl.compile(backbone, ["a", "b"], example_input=x).eval()
    assert sm.searchable_nodes
    with torch.no_grad():
        reference = backbone(x)
        sm.set_mode("fixed", policy=Policy.all_shared(sm))
        shared = sm(x)
        assert all(torch.allclose(shared[t], reference, atol=1e-5) for t in ("a", "b"))
        policy = Policy.random(sm, seed=1)
        sm.set_mode("fixed", policy=policy)
        expected = sm(x)
        model = automtl.derive(sm, policy).eval()
        assert isinstance(model, MultiTaskModel)
        got = model(x)
    assert all(torch.allclose(got[t], expected[t], atol=1e-5) for t in ("a", "b"))


# -- task kinds -------------------------------------------------------------------------------

#: one batch of targets per kind (a new kind adds its row: the test below checks the set)
TARGETS = {
    "segmentation": lambda: torch.randint(0, 4, (2, 6, 6)),
    "depth": lambda: torch.rand(2, 1, 6, 6) + 0.1,
    "normal": lambda: torch.randn(2, 3, 6, 6),
    "keypoint": lambda: torch.rand(2, 1, 6, 6),
    "edge": lambda: torch.rand(2, 1, 6, 6),
    "classification": lambda: torch.tensor([1, 3]),
}


def test_every_task_kind_has_a_target_here():
    assert set(TARGETS) == set(TASK_KINDS)


@pytest.mark.parametrize("kind", TASK_KINDS.names())
def test_every_task_kind_builds_head_loss_metric_and_runs_a_batch(kind):
    torch.manual_seed(0)
    info = TASK_KINDS.get(kind)
    options = {"head_hidden": 4, "aspp_rates": [1], "output_size": (6, 6)} if info.dense else {}
    task = make_task(kind, name="t", classes=4 if info.needs_classes else None, in_channels=8, **options)
    prediction = task.head(torch.randn(2, 8, 3, 3))
    classes = 4 if info.needs_classes else None
    assert prediction.shape[:2] == (2, info.out_channels(classes))
    target = TARGETS[kind]()
    loss = task.loss(prediction, target)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    metric = task.metrics()
    metric.update(prediction.detach(), target)
    assert set(metric.compute()) == set(info.higher_is_better)


# -- benchmarks -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [n for n, (_, needs_root, _) in BENCHMARKS.items() if not needs_root])
def test_every_benchmark_without_a_root_builds_tiny_splits(name):
    bench = get_benchmark(name, seed=0, n_train=4, n_val=2, n_test=2)
    assert (len(bench.train), len(bench.val), len(bench.test)) == (4, 2, 2)
    images, targets = next(iter(DataLoader(bench.train, batch_size=2)))
    assert images.shape == (2, *bench.input_shape) and set(targets) == set(bench.task_names)
    backbone = nn.Sequential(nn.Conv2d(bench.input_shape[0], 4, 3, padding=1), nn.ReLU())
    tasks = bench.make_tasks(in_channels=infer_in_channels(backbone, images))
    sm = automtl.compile(backbone, tasks, images)
    out = sm(images)
    loss = sum(t.weight * t.loss(out[t.name], targets[t.name]) for t in tasks)
    assert torch.isfinite(loss)
