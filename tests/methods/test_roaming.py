"""Maximum Roaming as the paper specifies it: Bernoulli(p) initial masks with uncovered
channels handed to a random task, the uniform update of Def. 1 (i- from the task's active
set, i+ from the channels it never visited, no other task's mask touched) whose plan ends
after max_t (S - |A_t(0)|) updates, masks after the norm so that a masked channel emits 0, the
masked model equal to a per-task model with the masked channels zeroed, and a run end to end."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import automtl
from automtl import Policy, Task
from automtl.errors import ConfigError
from automtl.methods.masking import ChannelMaskedModel, mask_channels, maskable_layers
from automtl.methods.roaming import LayerRoaming, MaximumRoaming, RoamingPlan

from methods_toy import TINY, res_supermodel
from search_toy import toy_data


@pytest.mark.parametrize("channels, tasks, ratio", [(16, 3, 0.5), (10, 2, 0.6), (12, 4, 0.25), (9, 3, 0.1), (6, 2, 1.0), (8, 2, 0.0)])
def test_roaming_invariants_and_plan_length(channels, tasks, ratio):
    layer = LayerRoaming(channels, tasks, ratio, torch.Generator().manual_seed(channels * tasks))
    counts = layer.masks.sum(1).tolist()
    assert counts == layer.counts and min(counts) >= 1
    assert bool(layer.masks.any(0).all())  # constraint (3) at initialisation
    if ratio == 1.0:
        assert bool(layer.masks.all())
    if ratio == 0.0:
        assert layer.masks.sum(0).tolist() == [1] * channels  # a disjoint partition
    updates = 0
    while not layer.done:
        before, masks_before = layer.visited.sum(1), layer.masks.clone()
        layer.update()
        updates += 1
        assert layer.masks.sum(1).tolist() == counts  # the count per task is constant
        assert bool((layer.masks <= layer.visited).all())
        grew = layer.visited.sum(1) - before
        unfinished = before < channels
        assert grew[unfinished].tolist() == [1] * int(unfinished.sum())  # one new channel per unfinished task
        assert torch.equal(layer.masks[~unfinished], masks_before[~unfinished])  # finished tasks keep their masks
    assert updates == layer.length == channels - min(counts)


def test_initial_masks_are_bernoulli_p_with_uncovered_channels_assigned():
    # E[fraction of channels a task uses] = p + (1 - p)^T / T: Bernoulli(p), plus the share of
    # the uncovered channels (probability (1 - p)^T each) handed to one of the T tasks
    generator = torch.Generator().manual_seed(0)
    for tasks, p in ((3, 0.5), (2, 0.8), (4, 0.2)):
        fractions, overlap = [], []
        for _ in range(300):
            layer = LayerRoaming(64, tasks, p, generator)
            assert bool(layer.masks.any(0).all())
            fractions.append(layer.masks.float().mean().item())
            overlap.append(layer.masks.sum(0).float().mean().item())
        expected = p + (1 - p) ** tasks / tasks
        assert abs(sum(fractions) / len(fractions) - expected) < 0.01, (tasks, p)
        assert abs(sum(overlap) / len(overlap) - tasks * expected) < 0.03, (tasks, p)
    # the counts vary from draw to draw (not a fixed round(p·S))
    counts = {tuple(LayerRoaming(20, 2, 0.5, generator).counts) for _ in range(30)}
    assert len(counts) > 3


def _count_draws(masks, visited, draws):
    """How often each channel is dropped and taken by task 0 in ``draws`` updates, each from
    the same state."""
    layer = LayerRoaming(masks.shape[1], masks.shape[0], 0.5, torch.Generator().manual_seed(123))
    dropped, taken = torch.zeros(masks.shape[1]), torch.zeros(masks.shape[1])
    for _ in range(draws):
        layer.masks, layer.visited = masks.clone(), visited.clone()
        layer.update()
        dropped += (masks[0] & ~layer.masks[0]).float()
        taken += (~masks[0] & layer.masks[0]).float()
        assert torch.equal(layer.masks[1], masks[1])  # task 1 has visited everything: untouched
    return dropped, taken


def _chi_square(counts, expected):
    return float(((counts - expected) ** 2 / expected).sum())


def test_removed_channel_is_uniform_over_the_active_set():
    # task 0 uses channels 0-3; 0 and 1 it alone uses (the old rule never dropped those),
    # 2 and 3 task 1 uses too; it has visited 0-4, so 5, 6, 7 are fresh
    masks = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    visited = masks.clone()
    visited[0, 4] = True
    visited[1] = True
    draws = 20000
    dropped, taken = _count_draws(masks, visited, draws)
    assert dropped.sum() == draws and taken.sum() == draws  # one of each per update
    assert dropped[4:].sum() == 0 and taken[:5].sum() == 0
    # chi-square with 3 and 2 degrees of freedom: 16.27 and 13.82 are the 0.1% tails
    assert _chi_square(dropped[:4], draws / 4) < 16.27, dropped.tolist()
    assert _chi_square(taken[5:], draws / 3) < 13.82, taken.tolist()
    assert (dropped[:4] / draws - 0.25).abs().max() < 0.015


def test_update_may_leave_a_channel_to_no_task():
    # the uniform rule does not protect a channel only the task uses (Lemma 2 needs that)
    masks = torch.tensor([[1, 0, 0], [0, 1, 0]], dtype=torch.bool)  # channel 2 is fresh for task 0
    visited = torch.tensor([[1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    layer = LayerRoaming(3, 2, 0.5, torch.Generator().manual_seed(0))
    layer.masks, layer.visited = masks.clone(), visited.clone()
    layer.update()
    assert layer.masks.tolist() in ([[False, True, False], [False, True, False]], [[False, False, True], [False, True, False]])
    assert torch.equal(layer.masks[1], masks[1])
    assert not bool(layer.masks[:, 0].any())  # channel 0 has no task now


def test_plan_is_replayed_from_its_seed():
    plan = RoamingPlan({"a": 8, "b": 16}, tasks=3, sharing_ratio=0.5, seed=4)
    length = plan.length
    assert length == max(16 - min(plan.layers["b"].counts), 8 - min(plan.layers["a"].counts))
    plan.advance_to(5)
    plan.advance_to(3)
    fresh = RoamingPlan({"a": 8, "b": 16}, tasks=3, sharing_ratio=0.5, seed=4)
    fresh.advance_to(3)
    assert all(torch.equal(plan.masks()[k], fresh.masks()[k]) for k in ("a", "b"))
    plan.advance_to(100)
    assert plan.updates == length and plan.done


def test_sharing_ratio_out_of_range():
    with pytest.raises(ConfigError, match=r"sharing ratio p must be in \[0, 1\]"):
        RoamingPlan({"a": 4}, tasks=2, sharing_ratio=1.5)
    with pytest.raises(ConfigError, match="sharing ratio"):
        MaximumRoaming(sharing_ratio=-0.1)


def test_masks_change_every_delta_steps_until_the_plan_is_done():
    sm = res_supermodel()
    layers = maskable_layers(sm)
    assert layers == {"shared.stem": 4, "shared.b1c1": 4, "shared.b1c2": 4, "shared.b2c1": 6, "shared.b2sc": 6, "shared.b2c2": 6}
    method = MaximumRoaming(sharing_ratio=2 / 3, delta=3, seed=1)
    model = method.adapt_model(sm.derive(Policy.all_shared(sm)), sm)
    length = method.plan.length
    assert isinstance(model, ChannelMaskedModel) and length == max(r.channels - min(r.counts) for r in method.plan.layers.values())
    assert length >= 1
    seen, changed = None, []
    for step in range(3 * length + 8):
        method.before_step(model, "post_train", step)
        masks = model.masks()
        if seen is not None and any(not torch.equal(masks[k], seen[k]) for k in masks):
            changed.append(step)
        seen = masks
    assert changed == [3 * (u + 1) for u in range(length)]  # done after Δ·plan length steps
    assert method.plan.done


class Biased(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 5, 3, padding=1)
        self.n1 = nn.BatchNorm2d(5)
        self.c2 = nn.Conv2d(5, 4, 3, padding=1)

    def forward(self, x):
        return self.c2(torch.relu(self.n1(self.c1(x))))


def _biased_supermodel():
    torch.manual_seed(0)
    tasks = [Task("a", head=nn.Sequential(nn.Flatten(), nn.Linear(64, 3))), Task("b", head=nn.Sequential(nn.Flatten(), nn.Linear(64, 2)))]
    sm = automtl.compile(Biased(), tasks, torch.zeros(2, 1, 4, 4))
    with torch.no_grad():  # norms that shift and scale, with statistics that are not 0 and 1
        for module in sm.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(0.5, 1.0)
                module.running_mean.uniform_(-1.0, 1.0)
                module.running_var.uniform_(0.5, 2.0)
    return sm


def _zero_channels(reference, path, mask):
    """Zero the masked channels of the convolution at ``path`` and of the norm(s) it feeds."""
    conv = reference.get_submodule(path)
    conv.weight[mask == 0] = 0
    conv.bias[mask == 0] = 0
    for node in reference.graph.nodes:
        if node.op == "call_module" and node.target == path:
            for user in node.users:
                norm = reference.get_submodule(user.target) if user.op == "call_module" else None
                if isinstance(norm, nn.BatchNorm2d):  # eval: gamma = beta = 0 gives exactly 0
                    norm.weight[mask == 0] = 0
                    norm.bias[mask == 0] = 0


def test_masked_model_equals_zeroed_channels_per_task():
    sm = _biased_supermodel()
    plain = sm.derive(Policy.all_shared(sm)).eval()
    model = mask_channels(plain, list(maskable_layers(sm))).eval()
    masks = {"shared.c1": torch.tensor([[1, 0, 1, 1, 0], [0, 1, 1, 0, 1]]), "shared.c2": torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]])}
    model.set_masks(masks)
    assert model.num_parameters() == plain.num_parameters()  # the tasks share the filters
    x = torch.randn(3, 1, 4, 4)
    with torch.no_grad():
        got = model(x)
        for t, task in enumerate(("a", "b")):
            reference = sm.derive(Policy.all_shared(sm)).eval()
            for path, mask in masks.items():
                _zero_channels(reference, path, mask[t])
            assert torch.allclose(got[task], reference(x)[task], atol=1e-6)


class ConvNorm(nn.Module):
    """A convolution and its norm as the whole backbone, so the tasks' outputs are the masked
    layer's output."""

    def __init__(self, norm):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.norm = norm

    def forward(self, x):
        return self.norm(self.conv(x))


@pytest.mark.parametrize("norm", [nn.BatchNorm2d(4), nn.GroupNorm(2, 4)], ids=["batchnorm", "groupnorm"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_a_masked_channel_emits_zero_after_the_norm(norm, training):
    torch.manual_seed(0)
    with torch.no_grad():
        norm.bias.uniform_(0.5, 1.0)  # a shift a mask before the norm would let through
    sm = automtl.compile(ConvNorm(norm), ["a", "b"], torch.zeros(2, 2, 5, 5))
    plain = sm.derive(Policy.all_shared(sm)).train(training)
    model = mask_channels(plain, list(maskable_layers(sm))).train(training)
    mask = torch.tensor([[1, 0, 1, 0], [0, 1, 1, 1]])
    model.set_masks({"shared.conv": mask})
    x = torch.randn(6, 2, 5, 5)
    with torch.no_grad():
        got = model(x)
        unmasked = plain(x)
    for t, task in enumerate(("a", "b")):
        off, on = mask[t] == 0, mask[t] == 1
        assert torch.equal(got[task][:, off], torch.zeros_like(got[task][:, off]))
        # the kept channels are the norm's output of the unmasked convolution
        assert torch.allclose(got[task][:, on], unmasked[task][:, on], atol=1e-5)
    # the mask sits right after the norm: conv -> norm -> mul, per task
    calls = [n for n in model.graph.nodes if n.op in ("call_module", "call_function")]
    for i, node in enumerate(calls):
        if node.op == "call_module" and isinstance(model.get_submodule(node.target), type(norm)):
            assert calls[i + 1].args[0] is node and calls[i + 1].args[1].target.startswith("channel_masks.")


def test_a_task_trains_only_the_filters_it_uses():
    sm = res_supermodel()
    model = mask_channels(sm.derive(Policy.all_shared(sm)), list(maskable_layers(sm)))
    masks = {k: torch.ones(2, c) for k, c in maskable_layers(sm).items()}
    masks["shared.b1c1"][0] = torch.tensor([1.0, 0.0, 1.0, 0.0])
    model.set_masks(masks)
    images, targets = next(iter(torch.utils.data.DataLoader(toy_data()[0], batch_size=8)))
    F.cross_entropy(model(images)["a"], targets["a"]).backward()
    grad = model.get_submodule("shared.b1c1").weight.grad
    assert torch.equal(grad[1], torch.zeros_like(grad[1])) and torch.equal(grad[3], torch.zeros_like(grad[3]))
    assert grad[0].abs().sum() > 0 and grad[2].abs().sum() > 0


def test_roaming_run_end_to_end(tmp_path):
    train, val, test = toy_data()
    result = automtl.search(res_supermodel(), train, val, test, config={**TINY, "roaming": {"delta": 1, "sharing_ratio": 0.5}}, method="roaming",
                            out=tmp_path, progress=False)
    assert isinstance(result.model, ChannelMaskedModel) and result.policy == Policy.all_shared(res_supermodel())
    masks = result.model.masks()
    # each task keeps the number of channels its initial Bernoulli(p) draw gave it
    plan = RoamingPlan(maskable_layers(res_supermodel()), 2, 0.5, seed=0)
    assert masks["shared.b2c1"].sum(1).tolist() == plan.layers["shared.b2c1"].counts
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["channel_masks"] == list(maskable_layers(res_supermodel()))
    model, _ = automtl.load_run(tmp_path, supermodel=res_supermodel())
    assert isinstance(model, ChannelMaskedModel)
    x = torch.randn(4, 1, 8, 8)
    result.model.eval()
    with torch.no_grad():
        assert all(torch.equal(model(x)[t], result.model(x)[t]) for t in ("a", "b"))


def test_roaming_needs_a_convolution():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(4, 4))
    sm = automtl.compile(mlp, ["a", "b"], torch.zeros(2, 1, 2, 2))
    with pytest.raises(ConfigError, match="has no searchable convolution; use another method"):
        MaximumRoaming().adapt_model(sm.derive(Policy.all_shared(sm)), sm)
