"""Plots and TensorBoard scalars while a search runs (`automtl search --plots`)."""

import logging
import os
import sys

import pytest
import torch

from automtl.cli import main
from automtl.search.batches import eval_batches
from automtl.search.run import RunDir
from automtl.viz.live import PlotCallback, TensorBoardCallback, record_scalars, tensorboard_callback
from search_toy import ToyData, tiny_scenes_yaml
from viz_runs import png_size, toy_search

TB_LINE = 'tensorboard is not installed: no TensorBoard scalars (pip install "automtl[tensorboard]" to have them)'


class Broken(PlotCallback):
    def _draw(self, stage):
        raise RuntimeError(f"cannot draw {stage}")


@pytest.mark.slow
def test_plots_are_drawn_at_every_evaluation_and_a_failing_one_costs_nothing(tmp_path, caplog):
    seen = []

    class Watch(PlotCallback):
        def _draw(self, stage):
            super()._draw(stage)
            seen.append((stage, sorted(self.written)))

    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="automtl.viz"):
        toy_search(str(out), callbacks=[Watch(), Broken()], overrides=["logging.eval_every=0"])
    # one evaluation per stage; policy-train adds the heat map and the arg-max diagram
    assert seen == [
        ("pretrain", ["curves_pretrain.png"]),
        ("policy_train", ["curves_policy_train.png", "curves_pretrain.png", "policy_heatmap.png", "sharing_diagram.png"]),
        ("post_train", ["curves_policy_train.png", "curves_post_train.png", "curves_pretrain.png", "policy_heatmap.png", "sharing_diagram.png"]),
    ]
    for name in seen[-1][1]:
        assert png_size(out / "plots" / name)[0] > 300
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 3  # the broken callback: one line per evaluation, and the search finished
    assert warnings[0] == (
        f"automtl --plots: could not draw the plots of {out} (RuntimeError: cannot draw pretrain); the search goes on"
    )
    assert os.path.exists(out / "results.json")


def test_record_scalars_of_every_kind_of_line(toy_run):
    out, _ = toy_run
    records = RunDir(out).read_metrics()
    train = next(r for r in records if r["stage"] == "policy_train" and r["kind"] == "train")
    scalars = record_scalars(train)
    assert scalars == {f"policy_train/train/{k}": v for k, v in train.items() if k not in ("stage", "step", "kind")}
    evaluation = next(r for r in records if r["stage"] == "policy_train" and r["kind"] == "eval")
    scalars = record_scalars(evaluation)
    assert scalars["policy_train/val/loss/a"] == evaluation["loss"]["a"]
    assert scalars["policy_train/val/b/acc"] == evaluation["metrics"]["b"]["acc"]
    assert scalars["policy_train/val/weighted_loss"] == evaluation["weighted_loss"]
    assert scalars["policy_train/policy/share_skip"] == evaluation["policy"]["argmax_share"]["skip"]
    assert scalars["policy_train/policy/entropy"] == evaluation["policy"]["entropy"]
    final = next(r for r in records if r["kind"] == "final")
    assert record_scalars(final)["final/test/a/acc"] == final["test"]["metrics"]["a"]["acc"]
    assert record_scalars({"stage": "x", "step": 1, "kind": "train", "loss": None, "lr": float("nan")}) == {}


class FakeWriter:
    made = []

    def __init__(self, log_dir):
        self.log_dir, self.scalars, self.closed = log_dir, [], False
        FakeWriter.made.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        pass

    def close(self):
        self.closed = True


def test_tensorboard_callback_writes_every_scalar(toy_run, tmp_path):
    out, sm = toy_run
    records = RunDir(out).read_metrics()
    callback = TensorBoardCallback(FakeWriter)
    callback.on_search_start(sm, RunDir(tmp_path))
    for record in records:
        callback.on_log(record)
    callback.on_search_end()
    (writer,) = FakeWriter.made
    assert writer.log_dir == str(tmp_path / "tensorboard") and writer.closed
    assert writer.scalars == [(tag, value, r["step"]) for r in records for tag, value in record_scalars(r).items()]
    callback.on_search_start(sm, RunDir(tmp_path, writer=False))  # a rank that does not write
    assert callback.writer is None and len(FakeWriter.made) == 1


def test_tensorboard_not_installed_says_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as without the package
    said = []
    assert tensorboard_callback(said.append) is None
    assert said == [TB_LINE]


TINY_SCENES = tiny_scenes_yaml(data={"options": {"n_train": 32}})


@pytest.mark.slow
def test_search_plots_then_show_on_the_command_line(tmp_path, capsys, monkeypatch):
    """A benchmark run keeps its model spec, so `automtl show` rebuilds the model and draws
    which shared calls are computed once."""
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_SCENES)
    out = tmp_path / "run"
    assert main(["search", "--config", str(config), "--out", str(out), "--quiet", "--no-baselines", "--plots"]) == 0
    captured = capsys.readouterr()
    assert captured.err == f"automtl search: {TB_LINE}\n"
    assert sorted(os.listdir(out / "plots")) == [
        "curves_policy_train.png", "curves_post_train.png", "curves_pretrain.png", "policy_heatmap.png", "sharing_diagram.png"
    ]
    assert main(["show", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        "wrote plots/policy_heatmap.png", "wrote plots/policy_heatmap.svg", "wrote plots/sharing_diagram.png",
        "wrote plots/sharing_diagram.svg", "wrote plots/curves_pretrain.png", "wrote plots/curves_policy_train.png",
        "wrote plots/curves_post_train.png", "wrote report.html", f"open {out / 'report.html'}",
    ]
    with open(out / "report.html", encoding="utf-8") as f:
        page = f.read()
    assert "shared call" in page and "computed once for two or more tasks" in page  # the model was rebuilt
    assert "backbone dilated_resnet_tiny" in page


def test_an_evaluation_leaves_the_training_random_numbers_alone():
    """More evaluations (for finer curves) must not change what a search finds: the eval
    loader must not draw its seed from the global RNG that dropout and Gumbel noise use."""
    torch.manual_seed(5)
    before = torch.get_rng_state()
    batches = list(eval_batches(ToyData(10, 0), 4))
    assert [len(images) for images, _ in batches] == [4, 4, 2]
    assert torch.equal(torch.get_rng_state(), before)
