"""The three figures, checked against what they draw from: the sharing diagram against the
calls of the derived model's graph, the heat map against the policy's probabilities, the
curves against the lines of metrics.jsonl."""

import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from torch import nn

import automtl
from automtl import Policy, Task
from automtl.errors import PolicyError
from automtl.search.run import RunDir
from automtl.viz._figure import OPTION_COLOURS
from automtl.viz.curves import collect, stages_in, training_curves
from automtl.viz.diagram import CELL_W, _runs, sharing_diagram, sharing_layout
from automtl.viz.heatmap import CHOSEN_COLOUR, PolicyDistribution, policy_heatmap


class Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv3 = nn.Conv2d(4, 8, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv3(torch.relu(self.conv2(torch.relu(self.bn(self.conv1(x))))))


TASKS = ("a", "b", "c")
# conv1: all share; conv2: a and c share, b has its own; conv3: all share, but b's input differs
CHOICES = {"a": {"conv1": 0, "conv2": 0, "conv3": 0}, "b": {"conv1": 0, "conv2": 1, "conv3": 0}, "c": {"conv1": 0, "conv2": 0, "conv3": 0}}


def chain_model(norm):
    torch.manual_seed(0)
    return automtl.compile(Chain(), [Task(t) for t in TASKS], torch.zeros(2, 3, 8, 8), norm=norm)


def fx_calls(model, target):
    return [n for n in model.graph.nodes if n.op == "call_module" and n.target == target]


@pytest.mark.parametrize(
    "norm, expected",
    [
        # the norm follows conv1, so tasks stay on one value until their choices differ
        ("follow", {"conv1": [("a", "b", "c")], "conv2": [("a", "c")], "conv3": [("a", "c"), ("b",)]}),
        # a per-task norm after conv1 gives every task its own value: later shared weights run once per task
        ("per_task", {"conv1": [("a", "b", "c")], "conv2": [("a",), ("c",)], "conv3": [("a",), ("b",), ("c",)]}),
    ],
)
def test_layout_groups_are_the_calls_of_the_derived_graph(norm, expected):
    sm = chain_model(norm)
    assert sm.searchable_nodes == ["conv1", "conv2", "conv3"]
    policy = Policy.from_dict(sm, CHOICES)
    layout = sharing_layout(policy, sm)
    assert layout.calls == expected
    model = automtl.derive(sm, policy)
    for node, groups in layout.calls.items():  # one group per call of the shared operator
        assert len(fx_calls(model, f"shared.{node}")) == len(groups)
    assert layout.computed_once() == sum(len(g) > 1 for groups in expected.values() for g in groups)
    assert layout.task_parameters == {t: model.num_parameters(t) for t in TASKS}
    assert layout.info["conv3"].endswith(f"{sm.graph['conv3'].num_params}")
    assert np.array_equal(layout.choices, [[0, 0, 0], [0, 1, 0], [0, 0, 0]])


def test_down_sampling_skips_are_marked():
    sm = chain_model("follow")
    policy = Policy.from_dict(sm, {"a": {"conv1": 0, "conv2": 2, "conv3": 2}, "b": {"conv1": 2, "conv2": 0, "conv3": 0}, "c": {"conv1": 0, "conv2": 0, "conv3": 0}})
    layout = sharing_layout(policy, sm)
    # conv2 keeps the shape (identity skip); conv3 halves it and conv1 changes channels (projections)
    assert layout.down_skips == {("conv3", "a"), ("conv1", "b")}


def _cells(ax):
    found = {}
    for patch in ax.patches:
        if isinstance(patch, Rectangle):
            found.setdefault(to_hex(patch.get_facecolor()), []).append(patch)
    return found


def test_diagram_draws_one_block_per_call_and_a_line_per_shared_row():
    sm = chain_model("follow")
    policy = Policy.from_dict(sm, CHOICES)
    figure = sharing_diagram(sharing_layout(policy, sm))
    ax = figure.axes[0]
    cells = _cells(ax)
    # blocks: conv1 one merged block; conv2 (a, c) in two pieces; conv3 (a, c) in two pieces + b
    shared = cells[OPTION_COLOURS["shared"]]
    assert len(shared) == 1 + 2 + 3
    assert sorted(round(p.get_width(), 6) for p in shared)[-1] == pytest.approx(2 + CELL_W)  # three columns merged
    assert len(cells[OPTION_COLOURS["own"]]) == policy.count("own") == 1
    assert OPTION_COLOURS["skip"] not in cells
    # a call drawn in pieces carries a letter in each piece; every row has 2+ shared tasks: one line each
    assert sum(t.get_text() == "a" for t in ax.texts) == 4
    assert len([line for line in ax.lines if isinstance(line, Line2D)]) == 3
    assert [t.get_text() for t in ax.get_yticklabels()] == ["conv1", "conv2", "conv3"]


def test_diagram_without_a_model_shows_choices_only():
    sm = chain_model("follow")
    policy = Policy.from_dict(sm, CHOICES)
    layout = sharing_layout(policy)
    assert layout.calls is None and layout.info == {} and layout.task_parameters == {}
    cells = _cells(sharing_diagram(layout).axes[0])
    assert len(cells[OPTION_COLOURS["shared"]]) == policy.count("shared") == 8  # one cell each, nothing merged


def test_runs_of_neighbouring_columns():
    assert _runs([0, 1, 2]) == [(0, 2)]
    assert _runs([3, 0, 2]) == [(0, 0), (2, 3)]
    assert _runs([]) == []


def test_heatmap_panels_hold_the_probabilities_and_outline_the_choice():
    sm = chain_model("follow")
    with torch.no_grad():
        for i, node in enumerate(sm.searchable_nodes):
            sm.vcns[node].logits.copy_(torch.arange(9, dtype=torch.float32).view(3, 3) * (0.3 + 0.2 * i) - 1.0)
    policy = Policy.sample(sm, seed=3)
    dist = PolicyDistribution.from_policy(policy)
    reference = np.stack([sm.policy_probs()[n].numpy() for n in sm.searchable_nodes])
    assert np.allclose(dist.probs, reference, atol=1e-6)
    assert np.allclose(PolicyDistribution.from_supermodel(sm).probs, reference)
    figure = policy_heatmap(dist, policy)
    panels = [ax for ax in figure.axes if ax.images and isinstance(ax.images[0], AxesImage) and ax.get_title().startswith("P(")]
    assert [ax.get_title() for ax in panels] == ["P(shared)", "P(own)", "P(skip)"]
    for k, ax in enumerate(panels):
        assert np.allclose(np.asarray(ax.images[0].get_array()), reference[:, :, k], atol=1e-6)
        outlined = [p for p in ax.patches if to_hex(p.get_edgecolor()) == CHOSEN_COLOUR]
        assert len(outlined) == policy.count(k)
        assert [t.get_text() for t in ax.get_xticklabels()] == list(TASKS)


def test_distribution_shape_is_checked():
    with pytest.raises(PolicyError, match=r"2 nodes x 3 tasks needs probabilities of shape \(2, 3, 3\), got \(3, 2, 3\)"):
        PolicyDistribution(TASKS, ("n1", "n2"), np.full((3, 2, 3), 1 / 3))
    policy = Policy.from_dict(chain_model("follow"), CHOICES)
    assert PolicyDistribution.from_policy(policy) is None  # a hand-made policy carries no distribution


def test_curves_follow_metrics_jsonl(toy_run):
    out, _ = toy_run
    records = RunDir(out).read_metrics()
    assert stages_in(records) == ["pretrain", "policy_train", "post_train"]
    train = [r for r in records if r["stage"] == "policy_train" and r["kind"] == "train"]
    evals = [r for r in records if r["stage"] == "policy_train" and r["kind"] == "eval"]
    groups = collect(records, "policy_train")
    assert groups["train"]["tau"] == ([r["step"] for r in train], [r["tau"] for r in train])
    assert groups["metrics"]["a/acc"][1] == [r["metrics"]["a"]["acc"] for r in evals]
    assert groups["policy"]["shared"][1] == [r["policy"]["argmax_share"]["shared"] for r in evals]

    figure = training_curves(records, "policy_train")
    titles = {ax.get_title(): ax for ax in figure.axes if ax.get_visible()}
    assert {"training loss", "temperature τ", "validation loss", "val a: acc", "val b: acc", "policy entropy (nats)"} <= set(titles)
    (tau,) = titles["temperature τ"].get_lines()
    assert list(tau.get_ydata()) == [r["tau"] for r in train]
    losses = {line.get_label(): list(line.get_ydata()) for line in titles["training loss"].get_lines()}
    assert losses["a"] == [r["loss/a"] for r in train if "loss/a" in r]
    # pre-train evaluates once: its metrics are listed, not drawn as lone dots
    pretrain = {ax.get_title() for ax in training_curves(records, "pretrain").axes if ax.get_visible()}
    assert "temperature τ" not in pretrain and any(t.startswith("validation metrics at step") for t in pretrain)
    assert training_curves(records, "no_such_stage") is None
