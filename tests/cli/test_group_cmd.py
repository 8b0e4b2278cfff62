"""`automtl group` end to end on a tiny `scenes` config, its --help, and its errors."""

import json

import pytest

from automtl.cli import build_parser, main
from search_toy import tiny_scenes_yaml

TINY = tiny_scenes_yaml(data={"options": {"n_train": 32}}, pretrain=None, policy_train=None)


@pytest.mark.slow
def test_group_end_to_end(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    out = tmp_path / "grp"
    argv = ["group", "--config", str(config), "--out", str(out), "--quiet", "--budget", "1", "--budget", "2.5",
            "--fraction", "0.5", "--no-half-size"]
    assert main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("task grouping: scenes, 4 tasks, seed 0; cost in full-size backbones (1 = ")
    assert printed[1].split()[:2] == ["Budget", "Networks"]
    assert printed[3].startswith("1    ") and "{seg, depth, normal, edge}" in printed[3]  # one network: all tasks
    assert printed[4].startswith("2.5  ")
    assert any(line == "candidates: 15 trained; chosen networks trained fully: " + line.split(": ")[-1] for line in printed)
    saved = json.loads((out / "grouping.json").read_text())
    assert len(saved["candidates"]) == 15 and all(c["size"] == "full" for c in saved["candidates"])
    assert [c["budget"] for c in saved["choices"]] == [1.0, 2.5]
    assert saved["choices"][1]["cost"] <= 2.5


def test_group_help_says_the_budget_unit(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["group", "--help"])
    text = capsys.readouterr().out
    assert "BUDGET is in units of one full-size network" in text and "inference budget in full-size networks" in text


def test_group_errors(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    assert main(["group", "--config", str(config), "--budget", "two"]) == 2
    assert capsys.readouterr().err.strip() == "automtl group: error: --budget 'two' is not a number of full-size networks (e.g. 2.5)"
    assert main(["group", "--config", str(config), "--fraction", "1.5"]) == 2
    assert "grouping.fraction must be in (0, 1], got 1.5" in capsys.readouterr().err
