"""Loss weightings: uncertainty weighting by hand, torchjd's aggregators through mtl_backward
against per-task gradients computed directly, and both in a run."""

import math
import sys

import pytest
import torch
from torch import nn

import automtl
from automtl.errors import ConfigError
from automtl.search.checkpoint import load_checkpoint
from automtl.search.weighting import UncertaintyWeighting, make_weighting

from search_toy import TINY, toy_data, toy_supermodel


def test_uncertainty_weighting_by_hand():
    w = UncertaintyWeighting({"a": 1.0, "b": 0.5})
    with torch.no_grad():
        w.log_vars.copy_(torch.tensor([0.3, -0.2]))
    la, lb = torch.tensor(2.0), torch.tensor(0.5)
    total = w.combine({"a": la, "b": lb})
    expected = 1.0 * (0.5 * math.exp(-0.3) * 2.0 + 0.5 * 0.3) + 0.5 * (0.5 * math.exp(0.2) * 0.5 + 0.5 * -0.2)
    assert float(total.detach()) == pytest.approx(expected)
    total.backward()
    # d/ds_i = λ_i (−½ e^(−s_i) L_i + ½)
    assert w.log_vars.grad.tolist() == pytest.approx([-0.5 * math.exp(-0.3) * 2.0 + 0.5, 0.5 * (-0.5 * math.exp(0.2) * 0.5 + 0.5)])
    assert w.variances() == pytest.approx({"a": math.exp(0.3), "b": math.exp(-0.2)})
    other = UncertaintyWeighting({"a": 1.0, "b": 0.5})
    other.load_state_dict(w.state_dict())
    assert torch.equal(other.log_vars, w.log_vars)
    with pytest.raises(ConfigError, match="does not fit these 3 tasks"):
        UncertaintyWeighting({"a": 1, "b": 1, "c": 1}).load_state_dict(w.state_dict())


def test_uncertainty_weighting_is_trained_and_checkpointed(tmp_path):
    train, val, _ = toy_data()
    automtl.search(toy_supermodel(), train, val, config=TINY, method="multi_task", weighting="uncertainty", out=tmp_path, progress=False)
    state = load_checkpoint(str(tmp_path / "checkpoints" / "post_train.pt"), "post_train")
    log_vars = state["weighting"]["log_vars"]
    assert log_vars.shape == (2,) and bool((log_vars != 0).all())  # moved from σ² = 1


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(3, 4)
        self.heads = nn.ModuleDict({"a": nn.Linear(4, 1), "b": nn.Linear(4, 1)})

    def forward(self, x):
        features = torch.tanh(self.shared(x))
        return {t: head(features).squeeze(1) for t, head in self.heads.items()}


def _problem(seed):
    torch.manual_seed(seed)
    model, x, ya, yb = TwoHeads(), torch.randn(8, 3), torch.randn(8), torch.randn(8)

    def losses():
        out = model(x)
        return {"a": ((out["a"] - ya) ** 2).mean(), "b": ((out["b"] - yb) ** 2).mean()}

    shared = list(model.shared.parameters())
    flat = lambda grads: torch.cat([g.flatten() for g in grads])  # noqa: E731
    ga = flat(torch.autograd.grad(losses()["a"], shared))
    gb = flat(torch.autograd.grad(losses()["b"], shared))
    head_a = flat(torch.autograd.grad(losses()["a"], list(model.heads["a"].parameters())))
    return model, losses, ga, gb, head_a, flat


def _jd_step(name, model, losses):
    weighting = make_weighting(name, {"a": 1.0, "b": 1.0})
    model.zero_grad()
    with weighting.watch(model):
        total = weighting.backward(losses(), params=list(model.parameters()))
    return total


def test_upgrad_through_mtl_backward_by_hand():
    pytest.importorskip("torchjd")
    model, losses, ga, gb, head_a, flat = _problem(seed=1)
    assert float(ga @ gb) > 0  # no conflict: every gradient is in the dual cone, UPGrad averages them
    total = _jd_step("upgrad", model, losses)
    assert torch.allclose(flat([p.grad for p in model.shared.parameters()]), (ga + gb) / 2, atol=1e-6)
    assert torch.allclose(flat([p.grad for p in model.heads["a"].parameters()]), head_a)  # heads: their own gradient
    assert float(total) == pytest.approx(float(sum(losses().values())))


def test_pcgrad_projects_conflicting_gradients_by_hand():
    pytest.importorskip("torchjd")
    model, losses, ga, gb, _, flat = _problem(seed=0)
    assert float(ga @ gb) < 0
    projected = (ga - (ga @ gb) / (gb @ gb) * gb) + (gb - (ga @ gb) / (ga @ ga) * ga)
    _jd_step("pcgrad", model, losses)
    assert torch.allclose(flat([p.grad for p in model.shared.parameters()]), projected, atol=1e-6)


def test_jd_weighting_in_a_search_run(tmp_path):
    pytest.importorskip("torchjd")
    train, val, test = toy_data()
    result = automtl.search(toy_supermodel(), train, val, test, config=TINY, weighting="upgrad", out=tmp_path, progress=False)
    assert all(math.isfinite(v) for v in result.val["loss"].values())
    assert (tmp_path / "run.json").read_text().count('"weighting": "upgrad"') == 1


def test_jd_weighting_without_torchjd(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchjd", None)  # import torchjd -> ImportError
    with pytest.raises(ConfigError, match=r"loss weighting 'mgda' is torchjd's aggregator; install torchjd: pip install 'automtl\[jd\]'"):
        make_weighting("mgda", {"a": 1.0})


def test_unknown_weighting_says_did_you_mean():
    with pytest.raises(ConfigError, match="unknown loss weighting 'uncertainity' \\(did you mean 'uncertainty'\\?\\)"):
        make_weighting("uncertainity", {"a": 1.0})
    assert isinstance(make_weighting("uncertainty", {"a": 1.0}), UncertaintyWeighting)


def test_weightings_are_modules_whose_state_keeps_the_old_checkpoint_keys(tmp_path):
    w = UncertaintyWeighting({"a": 1.0, "b": 0.5})
    assert isinstance(w, nn.Module) and list(w.parameters()) == [w.log_vars]
    assert list(w.state_dict()) == ["log_vars"]
    assert dict(make_weighting("equal", {"a": 1.0}).state_dict()) == {}
    # a checkpoint written before the weightings were modules: a plain dict of a CPU tensor
    torch.save({"weighting": {"log_vars": torch.tensor([0.25, -0.5])}}, tmp_path / "old.pt")
    old = torch.load(tmp_path / "old.pt", weights_only=True)
    w.load_state_dict(old["weighting"])
    assert w.log_vars.tolist() == [0.25, -0.5]
    make_weighting("equal", {"a": 1.0}).load_state_dict({})
    # .to() keeps the Parameter an optimiser already holds
    param = w.log_vars
    assert w.to(torch.device("cpu")) is w and w.log_vars is param
    with pytest.raises(ConfigError, match="the saved uncertainty weighting does not fit these 2 tasks"):
        w.load_state_dict({"other": torch.zeros(2)})


def test_jacobian_descent_checkpoints_hold_no_state():
    pytest.importorskip("torchjd", reason="torchjd is an optional extra (pip install 'automtl[jd]')")
    w = make_weighting("upgrad", {"a": 1.0, "b": 1.0})
    assert dict(w.state_dict()) == {} and list(w.parameters()) == []
