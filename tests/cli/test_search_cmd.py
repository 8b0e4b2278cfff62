"""`automtl search` end to end on a tiny config: three runs (searched, single-task,
multi-task), the results table, resume, and the errors users see."""

import contextlib
import io
import json
import os

import pytest

from automtl.cli import main
from automtl.policy import Policy
from search_toy import tiny_scenes_yaml

TINY_YAML = tiny_scenes_yaml(logging={"checkpoint_every": 2})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One finished `automtl search` of the tiny config, and what it printed: built here, so
    every test that reads the run finds it whatever runs before it (or alone)."""
    folder = tmp_path_factory.mktemp("cli")
    config = folder / "tiny.yaml"
    config.write_text(TINY_YAML)
    out = folder / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["search", "--config", str(config), "--out", str(out), "--quiet", "--set", "policy_train.lambda_reg=0.01"])
    assert code == 0
    return config, out, printed.getvalue()


@pytest.mark.slow
def test_search_end_to_end(tiny_run):
    config, out, stdout = tiny_run
    printed = stdout.splitlines()
    assert printed[0] == "scenes (test split), seed 0"
    assert [line.split()[0] for line in printed[4:7]] == ["Single-Task", "Multi-Task", "AutoMTL"]
    header = printed[2]
    for column in ("mIoU ↑", "abs_err ↓", "mean_angle ↓", "Δt seg ↑", "Δt edge ↑", "Δt ↑"):
        assert column in header
    assert printed[4].split()[2] == "-"  # single-task: the parameter reference
    table = json.loads((out / "table.json").read_text())
    rows = {r["name"]: r for r in table["rows"]}
    assert rows["Single-Task"]["delta"]["mean"] == 0.0
    multi, single = rows["Multi-Task"]["parameters"], rows["Single-Task"]["parameters"]
    assert rows["Multi-Task"]["parameters_vs_single_task_pct"] == pytest.approx((multi - single) / single * 100)
    for run in (out, out / "baselines" / "single_task", out / "baselines" / "multi_task"):
        assert os.path.isfile(run / "results.json") and os.path.isfile(run / "model" / "weights.pt")
    assert json.loads((out / "run.json").read_text())["stages"] == ["pretrain", "policy_train", "post_train"]
    assert json.loads((out / "baselines" / "single_task" / "run.json").read_text())["stages"] == ["post_train"]
    saved = json.loads((out / "policy.json").read_text())
    assert saved["tasks"].keys() == {"seg", "depth", "normal", "edge"}
    assert "lambda_reg: 0.01" in (out / "config.yaml").read_text()
    assert json.loads((out / "baseline.json").read_text())["format"] == "automtl.baseline"

    import automtl

    model, meta = automtl.load_run(out)
    assert meta["tasks"] == ["seg", "depth", "normal", "edge"]
    assert Policy.from_dict(automtl.search.build.build_supermodel(meta["spec"])[0], meta["policy"]).to_dict() == meta["policy"]


@pytest.mark.slow
def test_resume_of_a_finished_run_reprints_the_table(tiny_run, capsys):
    config, out, stdout = tiny_run
    first = (out / "table.txt").read_text()
    assert stdout.startswith(first)  # the table the search printed is the one it saved
    assert main(["search", "--resume", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.startswith(first)


def test_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {benchmark: scenes}\npretrain: {step: 3}\n")
    assert main(["search", "--config", str(bad), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("automtl search: error: config: unknown config key 'pretrain.step' (did you mean 'steps'?)")
    assert main(["search"]) == 2
    assert "say what to search on: --benchmark scenes" in capsys.readouterr().err
    assert main(["search", "--resume", str(tmp_path), "--seed", "3"]) == 2
    assert "--resume continues a run with its saved config; drop --seed" in capsys.readouterr().err
    assert main(["search", "--benchmark", "scenez"]) == 2
    assert "unknown benchmark 'scenez'" in capsys.readouterr().err
    assert main(["search", "--benchmark", "scenes", "--threads", "0"]) == 2
    assert capsys.readouterr().err == "automtl search: error: --threads must be 1 or more, got 0\n"
