"""The task-batched fast path computes what the reference path computes.

Every comparison runs one SuperModel and a deep copy of it, one on each path, on the same input
with the same Gumbel noise (the global RNG seeded before each forward), and checks the outputs,
the gradients of every parameter (weights, copies, skips, heads and policy logits) and every
buffer (running statistics, batch counters) after two training steps.
"""

import collections
import copy
import random
import re

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import automtl
from automtl import Policy
from automtl.errors import ConfigError
from automtl.fastpath import cpu_stack_limit, path_for, register_per_sample_module, run_fast, set_cpu_stack_limit


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors gain nothing from threads, and on a busy machine every parallel region can
    stall at its barrier for milliseconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- small backbones ----------------------------------------------------------------------
class GroupedNet(nn.Module):
    """Grouped, depthwise and dilated convolutions, a reflect-padded convolution, group norm,
    a cumulative-average batch norm, projection and down-sampling skips, a residual, a channel
    concatenation, a view and a linear classifier that changes width."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)  # first node: every task reads x
        self.bn0 = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
        self.gn = nn.GroupNorm(2, 8)
        self.reflect = nn.Conv2d(8, 4, 3, padding=1, padding_mode="reflect")
        self.down = nn.Conv2d(12, 16, 1, stride=2)
        self.bn2 = nn.BatchNorm2d(16, momentum=None)
        self.dw_strided = nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16)
        self.fc = nn.Linear(16 * 2 * 2, 5)

    def forward(self, x):
        x = F.relu6(self.bn0(self.stem(x)))
        y = torch.relu(self.bn1(self.grouped(x)))
        x = x + self.gn(self.depthwise(y))
        x = torch.cat([x, self.reflect(x)], dim=1)
        x = self.dw_strided(self.bn2(self.down(x)))
        return self.fc(x.view(x.size(0), -1))


class SequenceNet(nn.Module):
    """1-d convolution (grouped, dilated), batch norm over ``[B, C, L]``, and linear layers on
    ``[B, L, F]`` inputs (one keeps the width: identity skip; one changes it: projection)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 3, padding=2, dilation=2, groups=2)
        self.bn = nn.BatchNorm1d(6)
        self.mix = nn.Linear(6, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        x = self.bn(self.conv(x)).transpose(1, 2)
        return self.out(F.gelu(self.mix(x)))


class DecoderNet(nn.Module):
    """Transposed convolutions: strided with a width change (up-sampling skip with a
    projection), grouped at stride 1 (identity skip), and strided without a width change."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.mix = nn.ConvTranspose2d(4, 4, 3, padding=1, groups=2)
        self.up2 = nn.ConvTranspose2d(4, 4, 2, stride=2, bias=False)

    def forward(self, x):
        return self.up2(torch.relu(self.mix(self.bn(self.up(self.down(x))))))


# A Caffe net in the prototxt dialect: a standalone Scale, a dilated depthwise convolution,
# Eltwise, a Deconvolution cropped back with Crop, and a Concat.
CAFFE_NET = """
name: "caffe_small"
input: "data"
input_shape { dim: 2 dim: 3 dim: 12 dim: 12 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "dw" type: "Convolution" bottom: "conv1" top: "dw"
  convolution_param { num_output: 8 kernel_size: 3 pad: 2 dilation: 2 group: 8 } }
layer { name: "sum" type: "Eltwise" bottom: "dw" bottom: "conv1" top: "sum" }
layer { name: "scale" type: "Scale" bottom: "sum" top: "scaled" scale_param { bias_term: true } }
layer { name: "pool" type: "Pooling" bottom: "scaled" top: "pool" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "up" type: "Deconvolution" bottom: "pool" top: "up"
  convolution_param { num_output: 4 kernel_size: 4 stride: 2 pad: 1 } }
layer { name: "crop" type: "Crop" bottom: "up" bottom: "sum" top: "crop" crop_param { axis: 2 offset: 0 } }
layer { name: "cat" type: "Concat" bottom: "crop" bottom: "scaled" top: "cat" }
layer { name: "score" type: "Convolution" bottom: "cat" top: "score" convolution_param { num_output: 5 kernel_size: 1 } }
"""


class ShuffleNet(nn.Module):
    """ShuffleNet's pattern: split the channels in two (a tuple), transform one half, join
    them again and shuffle the channels with a view/transpose/view."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.branch = nn.Conv2d(4, 4, 3, padding=1, groups=4)

    def forward(self, x):
        x = self.stem(x)
        left, right = x.chunk(2, dim=1)
        x = torch.cat((left, self.branch(right)), dim=1)
        b, c, h, w = x.size()
        x = x.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().view(b, c, h, w)
        parts = torch.unbind(x, dim=1)
        return parts[0] + parts[1] * parts[-1]


class Centre(nn.Module):
    def forward(self, x):
        return x - 0.5 * x.mean(dim=(2, 3), keepdim=True)


class FallbackNet(nn.Module):
    """Operators the fast path leaves to the reference path: PReLU (a parameter with no
    task-batched form), layer norm, a mean over the batch, an unknown function, and a split
    along the batch dimension (a tuple per task, whose items are tensors per task again)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.act = nn.PReLU(6)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.norm = nn.LayerNorm([6, 6, 6])
        self.centre = Centre()
        self.conv3 = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        x = self.act(self.conv1(x))
        x = self.conv2(x)
        x = x - x.mean(dim=0, keepdim=True)  # mixes the samples of a batch
        x = torch.roll(self.norm(x), 1, dims=3)
        first, second = torch.split(x, 1, dim=0)
        return self.conv3(self.centre(torch.cat([second, first], dim=0)))


# -- the comparison -----------------------------------------------------------------------
def _perturbed(sm, seed=0):
    """Make every copy, skip and head differ from the backbone so a wrong option shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sm.named_parameters():
            if ".logits" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            elif ".copies." in name or ".skips." in name:
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.1)
        for name, b in sm.named_buffers():
            if "running_var" in name:
                b.uniform_(0.5, 1.5, generator=g)
            elif "running_mean" in name:
                b.normal_(0, 0.1, generator=g)
    return sm


def _probe(out, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in out.items()}


def _steps(model, x, steps=2):
    outs = []
    for step in range(steps):
        torch.manual_seed(100 + step)  # the same Gumbel noise (and dropout masks) on both paths
        out = model(x)
        probe = _probe(out, step)
        sum((o * probe[k]).sum() for k, o in out.items()).backward()
        outs.append(out)
    return outs


def _assert_paths_agree(sm, x, mode, train, *, policy_seed=0, rtol=1e-9, atol=1e-10, steps=2, covered=True):
    # real backbones pass rtol=1e-6: 2-sample batch norms at 1x1 amplify float64 rounding to ~1e-8
    """Run ``sm`` on the fast path and a copy on the reference path; compare everything."""
    if mode == "fixed":
        sm.set_mode("fixed", policy=Policy.random(sm, seed=policy_seed))
    else:
        sm.set_mode(mode, tau=0.7)
    sm.train(train)
    sm.zero_grad(set_to_none=True)  # deepcopy does not copy .grad
    ref = copy.deepcopy(sm).set_execution("reference")
    sm.set_execution("fast")
    fast_outs, ref_outs = _steps(sm, x, steps), _steps(ref, x, steps)
    for fast_out, ref_out in zip(fast_outs, ref_outs):
        assert fast_out.keys() == ref_out.keys()
        for task in ref_out:
            torch.testing.assert_close(fast_out[task], ref_out[task], rtol=rtol, atol=atol)
    grads = dict(ref.named_parameters())
    largest = max(float(p.grad.abs().max()) for p in grads.values() if p.grad is not None)
    checked = 0
    for name, p in sm.named_parameters():
        q = grads[name]
        if q.grad is None:
            assert p.grad is None, name
            continue
        assert p.grad is not None, name
        # gradients that are zero in exact arithmetic come out as rounding noise on both paths
        torch.testing.assert_close(p.grad, q.grad, rtol=rtol * 100, atol=atol * 10 + rtol * 10 * largest, msg=name)
        checked += 1
    assert checked > 0
    if mode == "gumbel":  # the logits' gradients were compared above; they must not be trivially zero
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in sm.arch_parameters())
    buffers = dict(ref.named_buffers())
    for name, b in sm.named_buffers():
        torch.testing.assert_close(b, buffers[name], rtol=rtol, atol=atol, msg=name)
    if covered:  # every node ran task-batched
        assert sm.execution_report().fallback == {}
    return sm, ref


SMALL_NETS = {
    "grouped": (GroupedNet, (2, 3, 16, 16)),
    "sequence": (SequenceNet, (3, 4, 10)),
    "decoder": (DecoderNet, (2, 3, 8, 8)),
    "shuffle": (ShuffleNet, (2, 3, 6, 6)),
    "caffe": (lambda: CAFFE_NET, (2, 3, 12, 12)),
}


@pytest.mark.parametrize("net", sorted(SMALL_NETS))
@pytest.mark.parametrize("tasks", [2, 3, 5])
@pytest.mark.parametrize("mode", ["warmup", "gumbel", "fixed"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_small_nets_agree_with_the_reference(net, tasks, mode, train):
    build, shape = SMALL_NETS[net]
    torch.manual_seed(tasks)
    x = torch.randn(*shape, dtype=torch.float64)
    sm = automtl.compile(build(), [f"t{i}" for i in range(tasks)], example_input=x.float()).double()
    _assert_paths_agree(_perturbed(sm, seed=tasks), x, mode, train, policy_seed=tasks)


def test_follow_norms_share_batch_statistics_per_call():
    """With norm="follow" the shared batch norm runs once per task's input on the reference
    path: per-task statistics, and the running statistics updated once per task, in order."""
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    sm = automtl.compile(GroupedNet(), ["a", "b", "c"], example_input=x.float(), norm="follow").double()
    _assert_paths_agree(_perturbed(sm), x, "warmup", True)
    # each task's input differs after the (mixed) stem: one update per task and step
    assert [int(sm.vcns[n].op.num_batches_tracked) for n in ("bn0", "bn1", "bn2")] == [2 * 3] * 3


def test_restricted_options_and_hard_gumbel():
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    sm = _perturbed(automtl.compile(GroupedNet(), ["a", "b", "c"], example_input=x.float()).double())
    sm.set_allowed_options(("shared", "skip"))
    _assert_paths_agree(sm, x, "warmup", True)
    sm.hard_gumbel = True
    _assert_paths_agree(sm, x, "gumbel", True)


def test_uncovered_nodes_fall_back_and_are_reported():
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    sm = automtl.compile(FallbackNet(), ["a", "b", "c"], example_input=x.float(), leaf_modules=[Centre]).double()
    _assert_paths_agree(_perturbed(sm), x, "gumbel", True, covered=False)
    report = sm.execution_report()
    assert report.fallback == {
        "act": "no task-batched form for PReLU",
        "mean": "it reduces along dimension 0, the batch dimension",
        "sub": "its input 'mean' is not one tensor per task",  # [1, ...] per task: not a batch
        "norm": "no task-batched form for LayerNorm",
        "roll": "function roll is not known to treat samples independently",
        "split": "it splits along dimension 0, the batch dimension",
        "getitem": "its input 'split' is not one tensor per task",
        "getitem_1": "its input 'split' is not one tensor per task",
        "cat": "its input 'getitem_1' is not one tensor per task",  # [1, ...] per task: not a batch
        "centre": "Centre is not known to treat samples independently",
    }
    assert report.fast == ["conv1", "conv2", "conv3"]
    assert "execution: fast -> task-batched fast path on cpu for 3/13 nodes; 10 run the reference way:" in sm.summary()
    assert "  act: no task-batched form for PReLU" in str(report)

    with pytest.raises(ConfigError, match=r"node 'act' \(PReLU\) cannot run on the fast path: no task-batched form"):
        run_fast(sm, x, soft=sm.mixing_weights(), strict=True)

    register_per_sample_module(Centre)
    _assert_paths_agree(sm, x, "warmup", False, covered=False)
    assert "centre" not in sm.execution_report().fallback


def test_execution_setting():
    x = torch.randn(2, 3, 16, 16)
    sm = automtl.compile(GroupedNet(), ["a", "b"], example_input=x)
    assert sm.execution == "auto"
    with pytest.raises(ConfigError, match=r"execution must be one of \('auto', 'fast', 'reference'\), got 'gpu'"):
        sm.set_execution("gpu")
    # auto: per task on the CPU (measured as fast there), task-batched on accelerators
    report = sm.execution_report()
    assert (report.execution, report.device, report.path) == ("auto", "cpu", "reference")
    assert str(report).startswith("execution: auto -> reference path (per task) on cpu: on the CPU the arithmetic sets the pace")
    assert path_for("auto", torch.device("cuda", 0)) == "fast" and path_for("fast", torch.device("cpu")) == "fast"
    assert sm.set_execution("fast").execution_report().path == "fast"
    assert str(sm.set_execution("reference").execution_report()).startswith("execution: reference -> reference path")
    with pytest.raises(ConfigError, match="exactly one of soft="):
        run_fast(sm, x)


@pytest.fixture
def stack_limit():
    """``set_cpu_stack_limit`` for one test (the limit is process-wide)."""
    before = cpu_stack_limit()
    yield set_cpu_stack_limit
    set_cpu_stack_limit(before)


SIZE_REASON = r"^on the CPU its stacked tensors \(\d+\.\d KiB\) would exceed the stack limit \(\d+\.\d KiB\)$"


@pytest.mark.parametrize("tasks", [2, 3, 5])
@pytest.mark.parametrize("mode", ["warmup", "gumbel", "fixed"])
def test_large_nodes_run_per_task_on_the_cpu(tasks, mode, stack_limit):
    """Above the stack limit a node runs per task; the paths still agree, and the report names
    exactly the nodes whose tensors exceed it: one task's values at 8x8 are 8 KiB (float64,
    batch 2), 4 KiB at 4x4; ``down`` reads the 12-channel 8x8 concatenation."""
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    sm = automtl.compile(GroupedNet(), [f"t{i}" for i in range(tasks)], example_input=x.float()).double()
    stack_limit(6 * 1024 * tasks)
    _assert_paths_agree(_perturbed(sm, seed=tasks), x, mode, True, policy_seed=tasks, covered=False)
    report = sm.execution_report()
    large = {n.name for n in sm.graph if n.out_shape is not None and n.out_shape[-2:] == (8, 8)} | {"down"}
    assert set(report.fallback) == large and len(large) == 12
    assert all(re.match(SIZE_REASON, why) for why in report.fallback.values())
    assert report.fast == ["bn2", "dw_strided", "size", "view", "fc"]

    stack_limit(None)  # no limit: every node task-batched again
    _assert_paths_agree(sm, x, mode, True, policy_seed=tasks)
    stack_limit(0)  # strict asks what the executor covers, whatever the size
    options = {"hard": sm._hard} if mode == "fixed" else {"soft": sm.mixing_weights()}
    run_fast(sm, x, strict=True, **options)
    assert sm.execution_report().fallback == {}


def test_in_place_mixing_check_agrees_with_torch_broadcasting():
    """The mixing adds an option in place only where it broadcasts to the running sum's shape."""
    from automtl.fastpath.executor import _broadcasts_to

    rng = random.Random(0)
    shape = lambda: torch.Size(rng.choice((1, 2, 3)) for _ in range(rng.randint(0, 4)))  # noqa: E731
    answers = collections.Counter()
    for _ in range(2000):
        target, others = shape(), [shape() for _ in range(rng.randint(1, 2))]
        try:
            expected = torch.broadcast_shapes(target, *others) == target
        except RuntimeError:
            expected = False
        assert _broadcasts_to(target, *others) == expected, (target, others)
        answers[expected] += 1
    assert min(answers[True], answers[False]) > 200  # both answers well exercised


class _CountOps(TorchDispatchMode):
    """Counts the operators that compute, by name (views and detaches launch no kernel)."""

    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and func.overloadpacket is not torch.ops.aten.detach:
            self.calls[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def _calls_per_step(tasks, execution):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    backbone = GroupedNet()
    backbone.bn2.momentum = 0.1  # a cumulative average updates each copy with its own factor
    # per-task norms: one grouped batch norm per node. (A shared norm - norm="follow" - updates its
    # running statistics once per distinct task input, in task order, as the reference does.)
    sm = automtl.compile(backbone, [f"t{i}" for i in range(tasks)], example_input=x, norm="per_task")
    sm.set_mode("gumbel").set_execution(execution)
    with _CountOps() as forward:
        out = sm(x)
    loss = sum(o.sum() for o in out.values())
    with _CountOps() as backward:
        loss.backward()
    return forward.calls, backward.calls


HEAVY_BACKWARD = ("convolution_backward", "native_batch_norm_backward", "native_group_norm_backward", "mm", "bmm")


def test_operator_calls_do_not_grow_with_the_number_of_tasks():
    (fast_forward_2, fast_backward_2), (fast_forward_5, fast_backward_5) = (_calls_per_step(t, "fast") for t in (2, 5))
    assert fast_forward_5 == fast_forward_2
    assert [fast_backward_5[op] for op in HEAVY_BACKWARD] == [fast_backward_2[op] for op in HEAVY_BACKWARD]
    (ref_forward_2, _), (ref_forward_5, _) = (_calls_per_step(t, "reference") for t in (2, 5))
    # the reference runs every backbone convolution (7) at least once more for each extra task
    assert ref_forward_5["convolution"] - ref_forward_2["convolution"] >= 3 * 7
    assert sum(fast_forward_5.values()) < sum(ref_forward_5.values()) / 2
    assert fast_forward_5["_local_scalar_dense"] <= 1  # no device-to-host read per node (a GPU sync)


def test_the_copies_stay_separate_parameters():
    """Own copies are concatenated inside the forward: training on the fast path updates
    ``vcn.copies[task]`` and the state dict keeps its keys."""
    x = torch.randn(2, 3, 16, 16)
    sm = automtl.compile(GroupedNet(), ["a", "b"], example_input=x)
    keys = list(sm.state_dict())
    before = sm.vcns["grouped"].copies["b"].weight.detach().clone()
    sm.set_execution("fast")
    optimiser = torch.optim.SGD(sm.weight_parameters(), lr=0.1)
    sum(o.pow(2).sum() for o in sm(x).values()).backward()
    optimiser.step()
    assert list(sm.state_dict()) == keys
    assert not torch.equal(sm.vcns["grouped"].copies["b"].weight, before)
    assert sm.vcns["grouped"].copies["a"].weight is not sm.vcns["grouped"].copies["b"].weight


def test_view_rules_keep_the_batch_dimension():
    class Views(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 4 * 4, 2)

        def forward(self, x):
            y = self.conv(x)
            y = y.reshape(-1, 4, 16)[:, :, 3:].reshape(y.shape[0], 4 * 13)  # per sample
            z = self.conv(x).view(-1, 16)  # merges the batch with channels
            return self.fc(self.conv(x).flatten(1)) + y.sum(1, keepdim=True) + z.sum() * 0

    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    sm = automtl.compile(Views(), ["a", "b"], example_input=x.float()).double()
    _assert_paths_agree(_perturbed(sm), x, "warmup", True, covered=False)
    fallback = sm.execution_report().fallback
    assert fallback == {
        "view": "its target shape [-1, 16] does not keep the batch dimension",
        "sum_2": "its input 'view' is not one tensor per task",  # [8, 16] per task
        "mul": "its input 'sum_2' is not one tensor per task",  # a scalar per task
        "add_1": "its input 'mul' is not one tensor per task",
    }


# -- real backbones -----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("tasks,mode,train", [(2, "warmup", True), (5, "gumbel", True), (3, "fixed", False), (5, "warmup", False)])
def test_mobilenet_v2_agrees_with_the_reference(tasks, mode, train):
    torch.manual_seed(0)
    backbone = torchvision.models.mobilenet_v2(width_mult=0.25, num_classes=10)
    backbone.classifier[0].p = 0.0  # dropout draws per call: the paths would draw differently
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    sm = automtl.compile(backbone, [f"t{i}" for i in range(tasks)], example_input=x.float()).double()
    _assert_paths_agree(_perturbed(sm), x, mode, train, rtol=1e-6, atol=1e-7, steps=1)


@pytest.mark.slow
def test_mobilenet_v2_partly_per_task_agrees_with_the_reference(stack_limit):
    """The stack limit splits MobileNetV2 in three: its large early layers per task, the middle
    task-batched, the 1280-channel end per task again; outputs and gradients survive the
    switches between the two layouts."""
    torch.manual_seed(0)
    backbone = torchvision.models.mobilenet_v2(width_mult=0.25, num_classes=10)
    backbone.classifier[0].p = 0.0
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    sm = automtl.compile(backbone, ["a", "b", "c"], example_input=x.float()).double()
    stack_limit(48 * 1024)
    _assert_paths_agree(_perturbed(sm), x, "gumbel", True, rtol=1e-6, atol=1e-7, steps=1, covered=False)
    report = sm.execution_report()
    assert all(re.match(SIZE_REASON, why) for why in report.fallback.values())
    assert list(report.fallback)[:2] == ["features_0_0", "features_0_1"] and "features_18_0" in report.fallback
    assert report.fast[0] == "features_2_conv_3" and "features_10_conv_1_0" in report.fast


@pytest.mark.slow
def test_torchvision_resnet34_agrees_with_the_reference():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    sm = automtl.compile(torchvision.models.resnet34(num_classes=10), ["a", "b", "c"], example_input=x.float()).double()
    _assert_paths_agree(_perturbed(sm), x, "gumbel", True, rtol=1e-6, atol=1e-7, steps=1)


@pytest.mark.slow
def test_dilated_deeplab_resnet34_prototxt_agrees_with_the_reference():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 33, 33, dtype=torch.float64)
    sm = automtl.compile("deeplab_resnet34", ["a", "b"], example_input=x.float()).double()
    assert any(m.dilation != (1, 1) for m in sm.modules() if isinstance(m, nn.Conv2d))
    _assert_paths_agree(_perturbed(sm), x, "warmup", True, rtol=1e-6, atol=1e-7, steps=1)


@pytest.mark.slow
@pytest.mark.parametrize("tasks,mode,train", [(2, "gumbel", True), (3, "warmup", True), (5, "fixed", False)])
def test_prototxt_mobilenetv2_agrees_with_the_reference(tasks, mode, train):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    sm = automtl.compile("mobilenetv2", [f"t{i}" for i in range(tasks)], example_input=x.float()).double()
    assert any(m.groups == m.in_channels > 1 for m in sm.modules() if isinstance(m, nn.Conv2d))  # depthwise
    _assert_paths_agree(_perturbed(sm), x, mode, train, rtol=1e-6, atol=1e-7, steps=1, policy_seed=tasks)
