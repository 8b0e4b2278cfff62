"""Maximum Roaming: the masks keep every task's channel count and cover every channel, the
visit plan ends after (1 - p)·S updates (Δ·(1 - p)·S steps), the masked model equals a
per-task model with the masked filters zeroed, and a run end to end."""

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


@pytest.mark.parametrize("channels, tasks, ratio", [(16, 3, 0.5), (10, 2, 0.6), (12, 4, 0.25), (9, 3, 0.1), (6, 2, 1.0)])
def test_roaming_invariants_and_plan_length(channels, tasks, ratio):
    layer = LayerRoaming(channels, tasks, ratio, torch.Generator().manual_seed(channels * tasks))
    per_task = max(round(ratio * channels), -(-channels // tasks))
    assert layer.masks.sum(1).tolist() == [per_task] * tasks
    assert bool(layer.masks.any(0).all())
    updates = 0
    while not layer.done:
        before = layer.visited.sum(1)
        layer.update()
        updates += 1
        assert layer.masks.sum(1).tolist() == [per_task] * tasks  # the count per task is constant
        assert bool(layer.masks.any(0).all())  # every channel is used by some task
        assert bool((layer.masks <= layer.visited).all())
        grew = layer.visited.sum(1) - before
        assert bool(((grew >= 1) | (before == channels)).all())  # one new channel per unfinished task
    # within (1 - p)·S updates (k = p·S when p·S ≥ S/T); earlier when exchanges gave some
    # task extra channels
    assert 0 < updates <= channels - per_task or per_task == channels


def test_plan_takes_exactly_one_minus_p_times_s_updates_without_exchanges():
    # two tasks of 8 of 12 channels always overlap: every swap drops a shared channel
    layer = LayerRoaming(12, 2, 2 / 3, torch.Generator().manual_seed(0))
    for _ in range(3):
        layer.update()
    assert not layer.done and layer.visited.sum(1).tolist() == [11, 11]
    layer.update()
    assert layer.done  # (1 - 2/3) * 12 = 4 updates


def test_plan_is_replayed_from_its_seed():
    plan = RoamingPlan({"a": 8, "b": 16}, tasks=3, sharing_ratio=0.5, seed=4)
    assert plan.length == 8
    plan.advance_to(5)
    plan.advance_to(3)
    fresh = RoamingPlan({"a": 8, "b": 16}, tasks=3, sharing_ratio=0.5, seed=4)
    fresh.advance_to(3)
    assert all(torch.equal(plan.masks()[k], fresh.masks()[k]) for k in ("a", "b"))
    plan.advance_to(100)
    assert plan.updates == 8 and plan.done


def test_masks_change_every_delta_steps_until_the_plan_is_done():
    sm = res_supermodel()
    layers = maskable_layers(sm)
    assert layers == {"shared.stem": 4, "shared.b1c1": 4, "shared.b1c2": 4, "shared.b2c1": 6, "shared.b2c2": 6, "shared.b2sc": 6}
    # p = 2/3: two tasks of 4 of the 6 channels always share some, so no exchange shortens the plan
    method = MaximumRoaming(sharing_ratio=2 / 3, delta=3, seed=1)
    model = method.adapt_model(sm.derive(Policy.all_shared(sm)), sm)
    assert isinstance(model, ChannelMaskedModel) and method.plan.length == 2  # (1 - p)·S = 6 / 3
    seen, changed = None, []
    for step in range(14):
        method.before_step(model, "post_train", step)
        masks = model.masks()
        if seen is not None and any(not torch.equal(masks[k], seen[k]) for k in masks):
            changed.append(step)
        seen = masks
    assert changed == [3, 6]  # done after Δ·(1 - p)·S = 3 * 2 = 6 steps
    assert method.plan.done


class Biased(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 5, 3, padding=1)
        self.n1 = nn.BatchNorm2d(5)
        self.c2 = nn.Conv2d(5, 4, 3, padding=1)

    def forward(self, x):
        return self.c2(torch.relu(self.n1(self.c1(x))))


def test_masked_model_equals_zeroed_filters_per_task():
    torch.manual_seed(0)
    tasks = [Task("a", head=nn.Sequential(nn.Flatten(), nn.Linear(64, 3))), Task("b", head=nn.Sequential(nn.Flatten(), nn.Linear(64, 2)))]
    sm = automtl.compile(Biased(), tasks, torch.zeros(2, 1, 4, 4))
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
                conv = reference.get_submodule(path)
                conv.weight[mask[t] == 0] = 0
                conv.bias[mask[t] == 0] = 0
            assert torch.allclose(got[task], reference(x)[task], atol=1e-6)


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
    assert masks["shared.b2c1"].sum(1).tolist() == [3, 3] and bool(masks["shared.b2c1"].any(0).all())
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
