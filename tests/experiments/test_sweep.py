"""automtl sweep and compare over seeds: one run per value and seed, tables, the front; and the
regulariser's knob really trades tasks' own operators for shared ones."""

import json

import pytest

import automtl
from automtl.cli import main
from automtl.errors import ConfigError
from automtl.experiments.sweep import parse_values, sweep, value_label
from automtl.search.config import merge

from search_toy import TINY, TINY_SCENES, tiny_scenes_yaml, toy_data, toy_supermodel


def test_parse_values():
    assert parse_values("0, 1e-4,3e-3", "k") == [0, 1e-4, 3e-3]
    assert parse_values("true,false", "k") == [True, False]
    with pytest.raises(ConfigError, match="listed twice"):
        parse_values("1,1", "k")
    with pytest.raises(ConfigError, match="no values"):
        parse_values(",", "k")
    assert value_label("automtl", "policy_train.lambda_reg", 0.01) == "AutoMTL λ_reg=0.01"
    assert value_label("automtl", "post_train.policy", "docs/policies/seg-own.json") == "Policy seg-own.json"
    assert value_label("adashare", "post_train.steps", 10) == "AdaShare post_train.steps=10"


def test_shared_fraction_grows_with_lambda_reg():
    """The front's promise: a larger λ_reg never gives a model that shares less (same seed,
    data and initial weights; arg-max draw)."""
    train, val, test = toy_data()
    config = merge(TINY, {"policy_train": {"steps": 20, "weight_steps": 1, "policy_steps": 1,
                                           "policy_optimizer": {"name": "adam", "lr": 0.1}},
                          "post_train": {"steps": 1, "draw": "argmax"},
                          "logging": {"eval_every": 0, "checkpoint_every": 0}})
    shared = []
    for value in (0.0, 0.3, 10.0):
        sm = toy_supermodel(seed=0)
        result = automtl.search(sm, train, val, config=merge(config, {"policy_train": {"lambda_reg": value}}))
        shared.append(result.policy.count("shared") / (len(sm.searchable_nodes) * len(sm.task_names)))
    assert shared == sorted(shared), shared
    # the deepest node weighs (L - L)/L = 0 in L_reg: nothing pushes it, so "all shared" is not owed
    assert shared[-1] > shared[0], shared


@pytest.mark.slow
def test_sweep_command_writes_table_front_and_per_seed_runs(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_scenes_yaml(post_train={"steps": 2}))
    out = tmp_path / "sweep"
    assert main(["sweep", "--config", str(config), "--lambda-reg", "0,100", "--seeds", "0,1",
                 "--reference", "single,multi", "--out", str(out), "--quiet", "--threads", "1",
                 "--set", "policy_train.reg_weights=cost"]) == 0
    printed = capsys.readouterr().out
    # the title names the --set overrides, which every row of the sweep ran with
    assert "with policy_train.reg_weights=cost: policy_train.lambda_reg over [0, 100], seeds 0,1: mean ± std" in printed
    for name in ("Single-Task", "Multi-Task", "AutoMTL λ_reg=0", "AutoMTL λ_reg=100"):
        assert name in printed
    assert (out / "front.png").stat().st_size > 1000
    front = json.loads((out / "front.json").read_text())
    points = {p["name"]: p for p in front["points"]}
    assert points["AutoMTL λ_reg=100"]["value"] == 100 and "value" not in points["Single-Task"]
    # the larger λ_reg gives the smaller model, between multi-task and single-task
    assert (points["Multi-Task"]["parameters"] <= points["AutoMTL λ_reg=100"]["parameters"]
            <= points["AutoMTL λ_reg=0"]["parameters"] <= points["Single-Task"]["parameters"])
    for seed in (0, 1):
        table = json.loads((out / f"seed-{seed}" / "table.json").read_text())
        assert [r["name"] for r in table["rows"]] == ["Single-Task", "Multi-Task", "AutoMTL λ_reg=0", "AutoMTL λ_reg=100"]
        assert (out / f"seed-{seed}" / "automtl-1" / "results.json").is_file()
    summary = json.loads((out / "table.json").read_text())
    deltas = next(r for r in summary["rows"] if r["name"] == "Multi-Task")["summary"]["delta"]["per_seed"]
    assert deltas == [next(r for r in json.loads((out / f"seed-{s}" / "table.json").read_text())["rows"]
                           if r["name"] == "Multi-Task")["delta"]["mean"] for s in (0, 1)]


def test_a_sweep_over_policy_files_trains_each_file_without_a_search(tmp_path):
    from automtl.policy import Policy
    from automtl.search.build import build_experiment, build_supermodel
    from automtl.search.config import load_config

    config = merge(TINY_SCENES, {"pretrain": {"steps": 0}, "policy_train": {"steps": 0}, "logging": {"progress": False}})
    sm, _ = build_supermodel(build_experiment(load_config(config)).spec)
    files = {"shared.json": Policy.all_shared(sm), "mixed.json": Policy.random(sm, seed=3)}
    for name, policy in files.items():
        policy.save(tmp_path / name)
    result = sweep(config, "post_train.policy", ",".join(str(tmp_path / n) for n in files), seeds=[0],
                   reference="single", out=tmp_path / "sweep", progress=False)
    runs = result.results[0]
    assert list(runs) == ["single_task", "Policy shared.json", "Policy mixed.json"]
    for name, policy in files.items():
        trained = runs[f"Policy {name}"]
        assert trained.policy.as_table() == policy.as_table()  # the file's policy, not a drawn one
    # all shared: one backbone under the heads, fewer parameters than the task-own networks
    assert runs["Policy shared.json"].test is not None
    shared_params = sum(p.numel() for p in runs["Policy shared.json"].model.parameters())
    assert shared_params < sum(p.numel() for p in runs["single_task"].model.parameters())
    assert "Policy shared.json" in result.table.text()


def test_sweep_refuses_a_bad_key_before_training(tmp_path):
    with pytest.raises(ConfigError, match="lambda_regg"):
        sweep(merge(TINY, {"data": {"benchmark": "scenes"}}), "policy_train.lambda_regg", "0,1", out=tmp_path / "s")
    assert not (tmp_path / "s").exists()
    assert main(["sweep", "--benchmark", "scenes", "--vary", "nokey", "--out", str(tmp_path / "t")]) == 2
