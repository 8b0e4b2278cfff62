"""`automtl compare` end to end on tiny `scenes` and `multi-mnist` configs: every method, one
table (text, Markdown, CSV, JSON), and the errors users see."""

import csv
import json

import pytest
import torch
import yaml

from automtl.cli import main
from search_toy import tiny_scenes_yaml

SCENES = tiny_scenes_yaml(policy_train={"tau_decay_every": 1}, post_train={"steps": 3}, adashare={"k": 2}, roaming={"delta": 1})

MNIST = """
seed: 1
device: cpu
data:
  benchmark: multi-mnist
  options: {n_train: 64, n_val: 32, n_test: 32}
  batch_size: 16
  eval_batch_size: 32
model:
  backbone: {builtin: small_convnet, kwargs: {in_channels: 3, widths: [4, 8], strides: [2, 2], features: 16, grid: 2}}
pretrain: {steps: 2}
policy_train: {steps: 4, weight_steps: 1, policy_steps: 1}
post_train: {steps: 3}
adashare: {k: 2}
logging: {log_every: 2, eval_every: 0, checkpoint_every: 0}
"""


@pytest.mark.slow
def test_compare_all_methods_on_scenes(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(SCENES)
    out = tmp_path / "cmp"
    threads = torch.get_num_threads()
    assert main(["compare", "--config", str(config), "--out", str(out), "--quiet", "--threads", "1"]) == 0
    assert torch.get_num_threads() == threads  # --threads holds for the one command
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "scenes (test split), seed 0, weighting equal"
    assert "Time (s)" in printed[2] and "Δt ↑" in printed[2] and "mIoU ↑" in printed[2]
    assert [line.split()[0] for line in printed[4:9]] == ["Single-Task", "Multi-Task", "AutoMTL", "AdaShare", "Max-Roaming"]
    table = json.loads((out / "table.json").read_text())
    rows = {r["name"]: r for r in table["rows"]}
    assert rows["Single-Task"]["delta"]["mean"] == 0.0
    assert rows["Max-Roaming"]["parameters"] == rows["Multi-Task"]["parameters"] < rows["Single-Task"]["parameters"]
    assert all(r["seconds"] > 0 for r in table["rows"])
    # MACs: what each method's final model computes for one 3x16x16 scene, shared work once
    import automtl
    from automtl.export import model_cost

    methods = ["single_task", "multi_task", "automtl", "adashare", "roaming"]
    macs = {name: model_cost(automtl.load_run(out / name)[0], (3, 16, 16)).macs for name in methods}
    assert [r["macs"] for r in table["rows"]] == [macs[name] for name in methods]
    assert table["baseline_macs"] == macs["single_task"] and table["input_size"] == [3, 16, 16]
    assert rows["Multi-Task"]["macs_vs_single_task_pct"] == pytest.approx((macs["multi_task"] - macs["single_task"]) / macs["single_task"] * 100)
    with open(out / "table.csv", newline="") as f:
        lines = list(csv.reader(f))
    assert lines[0][:5] == ["Model", "# Params Abs. (M)", "# Params Rel. (%)", "MACs Abs. (M)", "MACs Rel. (%)"]
    assert lines[0][-1] == "Time (s)"
    assert [line[0] for line in lines[1:]] == ["Single-Task", "Multi-Task", "AutoMTL", "AdaShare", "Max-Roaming"]
    assert [line[3] for line in lines[1:]] == [f"{macs[name] / 1e6:.3f}" for name in methods]
    assert "| AdaShare |" in (out / "table.md").read_text()
    for method, stages in [("single_task", ["post_train"]), ("multi_task", ["post_train"]), ("roaming", ["post_train"]),
                           ("automtl", ["pretrain", "policy_train", "post_train"]), ("adashare", ["pretrain", "policy_train", "post_train"])]:
        assert json.loads((out / method / "run.json").read_text())["stages"] == stages
        assert yaml.safe_load((out / method / "config.yaml").read_text())["method"] == method
        assert (out / method / "results.json").is_file()
    adashare = json.loads((out / "adashare" / "results.json").read_text())
    assert adashare["policy_counts"]["own"] == 0


@pytest.mark.slow
def test_compare_on_multi_mnist_with_uncertainty_weighting(tmp_path, capsys):
    config = tmp_path / "mnist.yaml"
    config.write_text(MNIST)
    out = tmp_path / "cmp"
    argv = ["compare", "--config", str(config), "--out", str(out), "--quiet", "--methods", "single,multi,adashare,roaming",
            "--weighting", "uncertainty", "--seed", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "multi-mnist (test split), seed 2, weighting uncertainty"
    assert "accuracy ↑" in printed[2]
    assert [line.split()[0] for line in printed[4:8]] == ["Single-Task", "Multi-Task", "AdaShare", "Max-Roaming"]
    assert json.loads((out / "roaming" / "run.json").read_text())["weighting"] == "uncertainty"
    assert (out / "table.csv").is_file()


def test_compare_errors(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(SCENES)
    assert main(["compare", "--config", str(config), "--methods", "single,adashar"]) == 2
    assert capsys.readouterr().err.strip() == (
        "automtl compare: error: unknown method 'adashar' (did you mean 'adashare'?); the methods are: "
        "adashare, automtl, maximum_roaming, multi, multi_task, roaming, single, single_task"
    )
    assert main(["compare", "--config", str(config), "--methods", "single,single_task"]) == 2
    assert "method 'single_task' is listed twice" in capsys.readouterr().err
    assert main(["compare"]) == 2
    assert "say what to run on: --benchmark scenes" in capsys.readouterr().err
    assert main(["compare", "--config", str(config), "--weighting", "uncertain", "--methods", "multi", "--out", str(tmp_path / "x")]) == 2
    assert "unknown loss weighting 'uncertain' (did you mean 'uncertainty'?)" in capsys.readouterr().err
