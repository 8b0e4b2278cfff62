"""The three normalisation modes (``norm="follow"`` - the default -, ``"per_task"``, ``"search"``),
the rule for norms with no single feeding operator, and hard sharing (the multi-task baseline).

Pinned here: an all-shared policy is the backbone itself - same outputs, parameters and FLOPs -
wherever that is meant to hold; a derived model computes what the SuperModel computes in fixed
mode, with every task's copy of every operator, norm and skip made distinct first.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import automtl
from automtl import Policy, Task
from automtl.compiler.ir import FOLLOW, PER_TASK, SEARCHABLE
from automtl.compiler.passes import DEFAULT_NORM, NORM_POLICIES, assign_roles
from automtl.errors import CompileError, ConfigError, PolicyError
from automtl.search.config import ModelConfig
from automtl.search.regularizer import policy_regularizer
from automtl.methods.fixed import FixedPolicy
from automtl.serialize import compile_with_heads

MODES = ("follow", "per_task", "search")
TASKS = ("a", "b", "c")


class DenseToy(nn.Module):
    """A norm on the input (nothing upstream), norms after concatenations (in both argument
    orders) and a norm after pooling."""

    def __init__(self):
        super().__init__()
        self.norm_in = nn.BatchNorm2d(3)
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 4, 3, padding=1, bias=False)
        self.bn_cat = nn.BatchNorm2d(12)
        self.bn_cat2 = nn.BatchNorm2d(12)
        self.conv2 = nn.Conv2d(24, 6, 1)
        self.bn_pool = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        x = self.norm_in(x)
        a = torch.relu(self.bn0(self.conv0(x)))
        b = self.conv1(a)
        c = torch.relu(self.bn_cat(torch.cat([a, b], 1)))
        d = torch.relu(self.bn_cat2(torch.cat([b, a], 1)))
        e = self.bn_pool(F.max_pool2d(self.conv2(torch.cat([c, d], 1)), 2))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(e, 1), 1))


def _randomise_statistics(module, seed):
    generator = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.2)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)


def _perturb(sm, seed=0):
    """Distinct values in every copy of every VCN - the backbone operator, each task's copy,
    each task's skip - parameters and running statistics alike, so that an option taken in the
    wrong place shows."""
    generator = torch.Generator().manual_seed(seed)
    seen = set()
    with torch.no_grad():
        for vcn in sm.vcns.values():
            for module in [vcn.op, *vcn.copies.values(), *vcn.skips.values()]:
                if id(module) in seen:
                    continue
                seen.add(id(module))
                for p in module.parameters():
                    p.add_(torch.randn(p.shape, generator=generator) * 0.1)
                for name, b in module.named_buffers():
                    if name.endswith("running_var"):
                        b.mul_(torch.rand(b.shape, generator=generator) + 0.5)
                    elif name.endswith("running_mean"):
                        b.add_(torch.randn(b.shape, generator=generator) * 0.1)
    return sm


def _params(module):
    return sum(p.numel() for p in module.parameters())


def _flops(model, x):
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def _close(got, expected, tol=1e-5):
    for task in expected:
        assert torch.allclose(got[task], expected[task], rtol=tol, atol=tol), task


# -- defaults and bad input --------------------------------------------------------------------
def test_the_default_norm_mode_is_follow():
    import inspect

    assert DEFAULT_NORM == "follow" and NORM_POLICIES == MODES
    for fn in (automtl.compile, assign_roles, compile_with_heads):
        assert inspect.signature(fn).parameters["norm"].default == "follow", fn
    assert ModelConfig().norm == "follow"
    sm = automtl.compile(torchvision.models.resnet18(weights=None), ["a"], example_input=torch.randn(1, 3, 32, 32))
    assert sm.graph["bn1"].role == FOLLOW and sm.graph["bn1"].follows == "conv1"
    assert not any(n.role == PER_TASK for n in sm.graph)


def test_the_cli_compiles_with_the_default_norm(tmp_path):
    from automtl.cli import main

    assert main(["compile", "resnet18", "--task", "a:2", "--input-shape", "1,3,16,16", "--out", str(tmp_path / "s.pt")]) == 0
    sm = automtl.load_supermodel(tmp_path / "s.pt")
    assert sm.compile_spec["options"]["norm"] == "follow"
    assert all(n.role != PER_TASK for n in sm.graph)


def test_an_unknown_norm_mode_names_the_three_modes():
    with pytest.raises(CompileError) as info:
        automtl.compile(DenseToy(), ["a"], example_input=torch.randn(2, 3, 8, 8), norm="bogus")
    message = str(info.value)
    assert "'bogus'" in message and all(f"'{mode}'" in message for mode in MODES)
    with pytest.raises(ConfigError, match="model.norm must be one of follow, per_task, search"):
        ModelConfig(norm="bogus").check("model")


# -- roles: the rule for norms without a single feeding operator ---------------------------------
def test_roles_of_the_dense_toy_in_each_mode():
    x = torch.randn(2, 3, 8, 8)
    norms = ("norm_in", "bn0", "bn_cat", "bn_cat2", "bn_pool")
    follow = automtl.compile(DenseToy(), TASKS, example_input=x).graph
    # nothing upstream of the input's norm: searched on its own
    assert follow["norm_in"].role == SEARCHABLE and follow["norm_in"].depth == 0 and follow["conv0"].depth == 1
    # the first operator reached in argument order, through relu / concatenation / pooling
    assert {n: follow[n].follows for n in norms[1:]} == {"bn0": "conv0", "bn_cat": "conv0", "bn_cat2": "conv1", "bn_pool": "conv2"}
    assert all(follow[n].role == FOLLOW for n in norms[1:])

    search = automtl.compile(DenseToy(), TASKS, example_input=x, norm="search")
    assert all(search.graph[n].role == SEARCHABLE for n in norms)
    assert search.depth("bn0") == search.depth("conv0") + 1 and search.depth("conv1") == search.depth("bn0") + 1
    assert all(isinstance(search.vcns[n].skips[t], nn.Identity) for n in norms for t in TASKS)  # a norm's skip

    per_task = automtl.compile(DenseToy(), TASKS, example_input=x, norm="per_task").graph
    assert all(per_task[n].role == PER_TASK for n in norms)


@pytest.mark.parametrize("norm", MODES)
def test_all_own_is_independent_networks_and_all_shared_is_the_backbone(norm):
    torch.manual_seed(0)
    backbone = DenseToy()
    _randomise_statistics(backbone, 1)
    backbone.eval()
    x = torch.randn(2, 3, 8, 8)
    sm = automtl.compile(backbone, TASKS, example_input=x, norm=norm).eval()
    own = sm.derive(Policy.all_own(sm))
    assert own.num_parameters() == len(TASKS) * _params(backbone)
    assert not own.shared_with()  # nothing run by two tasks
    # the multi-task baseline is hard sharing in every mode; all-shared is, except with per-task norms
    hard = sm.derive(FixedPolicy("shared").draw_policy(sm, None))
    shared = sm.derive(Policy.all_shared(sm))
    expected = backbone(x)
    models = [hard] + ([shared] if norm != "per_task" else [])
    for model in models:
        assert model.num_parameters() == _params(backbone)
        assert all(torch.equal(out, expected) for out in model(x).values())
    if norm == "per_task":
        assert shared.num_parameters() > _params(backbone)  # per-task copies of every norm


# -- torchvision backbones: outputs, parameters and FLOPs of all-shared ---------------------------
@pytest.fixture(scope="module", params=["resnet18", "mobilenet_v2"])
def torchvision_net(request):
    torch.manual_seed(0)
    backbone = torchvision.models.get_model(request.param, weights=None, num_classes=10)
    _randomise_statistics(backbone, 2)
    for m in backbone.modules():
        if isinstance(m, nn.Dropout):  # train-mode draws differ between per-task and task-batched runs
            m.p = 0.0
    return backbone.eval()


@pytest.mark.parametrize("norm", MODES)
@pytest.mark.parametrize("with_heads", [False, True])
def test_all_shared_is_the_backbone_plus_heads_computed_once(torchvision_net, norm, with_heads):
    backbone = torchvision_net
    x = torch.randn(1, 3, 64, 64)
    torch.manual_seed(1)
    heads = {t: nn.Linear(10, 2) if with_heads else None for t in TASKS}
    sm = automtl.compile(backbone, [Task(t, head=copy.deepcopy(heads[t])) for t in TASKS], example_input=x, norm=norm).eval()
    policy = Policy.hard_sharing(sm) if norm == "per_task" else Policy.all_shared(sm)
    model = sm.derive(policy).eval()
    head_params = sum(_params(sm.heads[t]) for t in TASKS)
    assert model.num_parameters() == _params(backbone) + head_params
    with torch.no_grad():
        feature = backbone(x)
        got = model(x)
        sm.set_mode("fixed", policy=policy)
        in_fixed_mode = sm(x)
    for t in TASKS:
        expected = sm.heads[t](feature)
        assert torch.equal(got[t], expected)
        assert torch.allclose(in_fixed_mode[t], expected, atol=1e-6)
    # the backbone runs once for all tasks: FLOPs of one backbone forward, plus the heads
    head_flops = sum(_flops(sm.heads[t], feature) for t in TASKS) if with_heads else 0
    assert _flops(model, x) == _flops(backbone, x) + head_flops


def test_per_task_norms_part_the_tasks_unless_hard_sharing():
    backbone = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    sm = automtl.compile(backbone, TASKS, example_input=x, norm="per_task").eval()
    # the original AutoMTL code's sharing: every task its own batch norms, so ~T backbones of work
    assert _flops(sm.derive(Policy.all_shared(sm)), x) > 2.5 * _flops(backbone, x)


# -- derived model == SuperModel in fixed mode, with distinct copies ------------------------------
def _mixed(sm, seed):
    """A random policy with every option somewhere (norms included in search mode)."""
    for s in range(seed, seed + 100):
        policy = Policy.random(sm, seed=s)
        if all(policy.count(o) for o in ("shared", "own", "skip")):
            return policy
    raise AssertionError("no mixed policy found")


def _check_derived_equals_fixed(sm, x, policy, train):
    # in double precision: the fast path's grouped operators sum in another order than per-task calls
    sm, x = copy.deepcopy(sm).double(), x.double()
    model = sm.derive(policy)
    sm.set_mode("fixed", policy=policy)
    sm.train(train)
    model.train(train)
    ref = copy.deepcopy(sm).set_execution("reference")
    fast = copy.deepcopy(sm).set_execution("fast")
    expected = ref(x)
    _close(model(x), expected)
    _close(fast(x), expected)
    if train:  # the running statistics moved alike: compare once more in eval mode
        for m in (model, ref, fast):
            m.eval()
        with torch.no_grad():
            expected = ref(x)
            _close(model(x), expected)
            _close(fast(x), expected)


@pytest.mark.parametrize("norm", MODES)
@pytest.mark.parametrize("train", [False, True])
def test_dense_toy_derived_equals_fixed_mode_with_distinct_copies(norm, train):
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8)
    tasks = [Task("a", head=nn.Linear(5, 2)), Task("b"), Task("c", head=nn.Sequential(nn.Linear(5, 3), nn.Tanh()))]
    sm = _perturb(automtl.compile(DenseToy(), tasks, example_input=x, norm=norm))
    for seed in (0, 10):
        _check_derived_equals_fixed(sm, x, _mixed(sm, seed), train)
    hard = Policy.hard_sharing(sm)
    _check_derived_equals_fixed(sm, x, hard, train)


@pytest.mark.parametrize("norm", MODES)
def test_torchvision_derived_equals_fixed_mode_with_distinct_copies(torchvision_net, norm):
    # batch 4: train-mode batch norm over 2 samples at MobileNetV2's 1x1 end is ill-conditioned
    # enough for the fast path's other summation order to show
    x = torch.randn(4, 3, 32, 32)
    sm = _perturb(automtl.compile(torchvision_net, TASKS, example_input=x, norm=norm), seed=3)
    policy = _mixed(sm, 0)
    if norm == "search":  # norms chose on their own: some differ from their convolution's choice
        conv_of = {n.name: n.parents[0] for n in sm.graph if n.description.startswith("BatchNorm")}
        assert any(policy.choice(t, bn) != policy.choice(t, conv) for bn, conv in conv_of.items() for t in TASKS)
    _check_derived_equals_fixed(sm, x, policy, train=False)
    _check_derived_equals_fixed(sm, x, policy, train=True)


# -- search mode: regulariser, policies, exports ----------------------------------------------------
def test_searched_norms_take_part_in_the_regulariser_and_policies(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    sm = automtl.compile(DenseToy(), TASKS, example_input=x, norm="search")
    norms = [n for n in sm.searchable_nodes if sm.graph[n].description.startswith("BatchNorm")]
    assert len(norms) == 5 and len(sm.arch_parameters()) == len(sm.searchable_nodes)
    policy_regularizer(sm).backward()
    assert all(sm.vcns[n].logits.grad is not None and sm.vcns[n].logits.grad.abs().sum() > 0 for n in norms)
    with torch.no_grad():
        sm.vcns["bn0"].logits[:, 2] = 10.0  # every task skips bn0 - the identity
    assert all(Policy.argmax(sm).option(t, "bn0") == "skip" for t in TASKS)
    policy = Policy.sample(sm, seed=0)
    policy.save(tmp_path / "p.json")
    assert Policy.load(sm, tmp_path / "p.json") == policy
    assert Policy.all_own(sm).count("own") == len(TASKS) * len(sm.searchable_nodes)

    skipped = Policy.from_dict(sm, {t: {n: "skip" if n == "bn0" else "shared" for n in sm.searchable_nodes} for t in TASKS})
    model = sm.derive(skipped).eval()
    assert not any("bn0" in path for path in model.usage)
    reference = copy.deepcopy(sm.vcns["bn0"].op)
    sm.vcns["bn0"].op = nn.Identity()  # what skipping bn0 means, checked against the shared model
    try:
        sm.eval().set_mode("fixed", policy=Policy.all_shared(sm))
        _close(model(x), sm(x))
    finally:
        sm.vcns["bn0"].op = reference


@pytest.mark.parametrize("norm", ["search", "follow"])
def test_exports_of_a_mixed_policy(norm, tmp_path):
    from automtl.export import export_onnx, export_python, export_torchscript

    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    sm = _perturb(automtl.compile(DenseToy(), TASKS, example_input=x, norm=norm)).eval()
    model = sm.derive(_mixed(sm, 0)).eval()
    # each export checks itself against the model on x
    export_python(model, tmp_path / "py", x)
    export_torchscript(model, tmp_path / "m.ts", "script", x)
    export_onnx(model, tmp_path / "m.onnx", x)
    loaded = torch.jit.load(str(tmp_path / "m.ts"))
    with torch.no_grad():
        _close(loaded(x), model(x))


# -- hard sharing as a policy value ---------------------------------------------------------------------
def test_hard_sharing_survives_a_round_trip_and_old_files_read_as_before():
    sm = automtl.compile(DenseToy(), TASKS, example_input=torch.randn(2, 3, 8, 8), norm="per_task")
    hard = Policy.hard_sharing(sm)
    assert hard.share_per_task and hard != Policy.all_shared(sm)
    assert hard.to_dict()["share_per_task"] is True
    assert "share_per_task" not in Policy.all_shared(sm).to_dict()  # other policies' files unchanged
    assert Policy.from_dict(sm, hard.to_dict()) == hard
    assert not Policy.from_dict(sm, Policy.all_shared(sm).to_dict()).share_per_task
    assert FixedPolicy("shared").draw_policy(sm, None) == hard
    assert FixedPolicy("own").draw_policy(sm, None) == Policy.all_own(sm)
    assert "per-task nodes shared" in repr(hard)
    follow = automtl.compile(DenseToy(), TASKS, example_input=torch.randn(2, 3, 8, 8))
    assert Policy.hard_sharing(follow) == Policy.all_shared(follow)  # nothing per task to share
    bad = dict(hard.to_dict(), share_per_task="yes")
    with pytest.raises(PolicyError, match="share_per_task"):
        Policy.from_dict(sm, bad)


def test_saved_supermodels_keep_their_norm_mode(tmp_path):
    import automtl.serialize as serialize

    heads = [serialize.HeadSpec("a", 2), serialize.HeadSpec("b", 3)]
    old = compile_with_heads("resnet18", heads, norm="per_task", input_shape=(1, 3, 16, 16))
    serialize.save_supermodel(old, tmp_path / "old.pt")
    loaded = automtl.load_supermodel(tmp_path / "old.pt")
    assert loaded.compile_spec["options"]["norm"] == "per_task"
    assert any(n.role == PER_TASK for n in loaded.graph)
    searched = compile_with_heads("resnet18", heads, norm="search", input_shape=(1, 3, 16, 16))
    serialize.save_supermodel(searched, tmp_path / "search.pt")
    again = automtl.load_supermodel(tmp_path / "search.pt")
    assert again.searchable_nodes == searched.searchable_nodes and len(again.searchable_nodes) > 21
    # every version wrote the norm mode; a file without it was not written by automtl
    payload = torch.load(tmp_path / "old.pt", weights_only=True)
    del payload["options"]["norm"]
    torch.save(payload, tmp_path / "edited.pt")
    from automtl.errors import CheckpointError

    with pytest.raises(CheckpointError, match="compile options are missing or malformed"):
        automtl.load_supermodel(tmp_path / "edited.pt")
