"""`automtl group` end to end on a tiny `scenes` config, its --help, its flags (old and new), and
its errors."""

import json

import pytest

from automtl.cli import build_parser, main
from automtl.cli.group_cmd import group_config
from search_toy import tiny_scenes_yaml

TINY = tiny_scenes_yaml(data={"options": {"n_train": 32}}, pretrain=None, policy_train=None)


@pytest.mark.slow
def test_group_end_to_end(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    out = tmp_path / "grp"
    argv = ["group", "--config", str(config), "--out", str(out), "--quiet", "--budget", "0.5", "--budget", "4",
            "--mode", "esa", "--fraction", "0.5", "--no-half-size"]
    assert main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    # the output says which approximation produced the grouping, and the cost unit
    assert printed[0] == ("task grouping: scenes, 4 tasks, seed 0; mode esa: ESA, the early-stopping approximation: "
                          "candidates trained for 50% of the post-train steps (1 of 2), the chosen networks then trained fully")
    assert printed[1].startswith("cost in single-task networks: 1 = ")
    assert printed[3].split()[:3] == ["Budget", "Grouping", "Networks"]
    assert [line.split()[:2] for line in printed[5:11]] == [
        ["0.5", "ESA"], ["0.5", "Random"], ["0.5", "Pessimal"], ["4", "ESA"], ["4", "Random"], ["4", "Pessimal"]]
    assert all("(no set of networks fits)" in line for line in printed[5:8])  # a network costs at least 1
    assert printed[11].startswith("Random: one draw per budget; mean val loss (choice) over 1000 draws - 0.5: -, 4: ")
    assert printed[13].startswith("pairwise affinity (Standley et al., Tables 2-3): % lower validation loss")
    assert "(full-size single-task network)" in printed[13]  # no half-size networks to compare with
    assert printed[14].split() == ["seg", "depth", "normal", "edge"]
    tail = [line for line in printed if line.startswith("candidates: ")]
    assert len(tail) == 1 and tail[0].startswith("candidates: 15 trained (1 steps); chosen networks then trained fully: ")
    assert tail[0].endswith("; grouping by: esa")
    saved = json.loads((out / "grouping.json").read_text())
    assert saved["mode"] == "esa" and saved["approximation"].startswith("ESA, the early-stopping approximation")
    assert len(saved["candidates"]) == 15 and all(c["size"] == "full" for c in saved["candidates"])
    assert [c["budget"] for c in saved["choices"]] == [0.5, 4.0]
    assert saved["choices"][1]["cost"] <= 4 and saved["pessimal"][1]["selection_loss"] >= saved["choices"][1]["selection_loss"]
    assert set(json.loads((out / "affinity.json").read_text())["change_pct"]) == {"seg", "depth", "normal", "edge"}


def _args(tmp_path, *flags):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    return build_parser().parse_args(["group", "--config", str(config), *flags])


@pytest.mark.parametrize("flags, mode, fraction", [
    ((), "full", 1.0),
    (("--mode", "esa"), "esa", 0.2),
    (("--mode", "hoa"), "hoa", 1.0),
    (("--fraction", "0.25"), "esa", 0.25),                      # the old way to ask for the approximation
    (("--candidates", "pairs", "--fraction", "0.2"), "hoa", 0.2),  # the README's old example
    (("--candidates", "all"), "full", 1.0),
])
def test_group_modes_from_flags(tmp_path, flags, mode, fraction):
    grouping = group_config(_args(tmp_path, *flags)).grouping
    assert (grouping.resolved_mode, grouping.steps_fraction) == (mode, fraction)


def test_group_help_says_the_modes_and_the_budget_unit(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["group", "--help"])
    text = capsys.readouterr().out
    assert "BUDGET is in units of one single-task network" in text and "inference budget in single-task networks" in text
    assert "--mode {full,esa,hoa}" in text and "full  every candidate trained for all post_train.steps" in text


def test_group_errors(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    assert main(["group", "--config", str(config), "--budget", "two"]) == 2
    assert capsys.readouterr().err.strip() == "automtl group: error: --budget 'two' is not a number of single-task networks (e.g. 2.5)"
    assert main(["group", "--config", str(config), "--fraction", "1.5"]) == 2
    assert "grouping.fraction must be in (0, 1], got 1.5" in capsys.readouterr().err
    assert main(["group", "--config", str(config), "--mode", "full", "--fraction", "0.5"]) == 2
    assert "set grouping.mode=esa for the early-stopping approximation" in capsys.readouterr().err
    assert main(["group", "--config", str(config), "--mode", "hoa", "--candidates", "all"]) == 2
    assert "contradicts grouping.mode=hoa: drop grouping.candidates" in capsys.readouterr().err
