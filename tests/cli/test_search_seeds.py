"""`automtl search --seeds`: the whole job once per seed, each seed's table, and the summary."""

import json

import pytest

from automtl.cli import main
from search_toy import tiny_scenes_yaml


@pytest.mark.slow
def test_search_over_seeds(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_scenes_yaml())
    out = tmp_path / "seeds"
    assert main(["search", "--config", str(config), "--out", str(out), "--quiet", "--seeds", "0,2"]) == 0
    printed = capsys.readouterr().out
    assert "seeds 0,2: mean ± std" in printed and "Δt per seed (0,2)" in printed
    per_seed = {}
    for seed in (0, 2):
        table = json.loads((out / f"seed-{seed}" / "table.json").read_text())
        assert table["title"].endswith(f"seed {seed}")
        assert (out / f"seed-{seed}" / "table.csv").read_text().startswith("Model,")
        assert json.loads((out / f"seed-{seed}" / "run.json").read_text())["stages"] == ["pretrain", "policy_train", "post_train"]
        per_seed[seed] = {r["name"]: r for r in table["rows"]}
    summary = json.loads((out / "table.json").read_text())
    assert summary["seeds"] == [0, 2]
    automtl = next(r for r in summary["rows"] if r["name"] == "AutoMTL")["summary"]
    assert automtl["parameters"]["per_seed"] == [per_seed[s]["AutoMTL"]["parameters"] for s in (0, 2)]
    assert automtl["delta"]["mean"] == pytest.approx(sum(per_seed[s]["AutoMTL"]["delta"]["mean"] for s in (0, 2)) / 2)
    # the seed drives the initial weights: two seeds, two different single-task results
    assert per_seed[0]["Single-Task"]["metrics"] != per_seed[2]["Single-Task"]["metrics"]
    # a second run into the same directory is refused before any training
    assert main(["search", "--config", str(config), "--out", str(out), "--quiet", "--seeds", "2"]) == 2
    assert "already holds seed-2" in capsys.readouterr().err


def test_seeds_errors(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_scenes_yaml())
    assert main(["search", "--config", str(config), "--out", str(tmp_path / "a"), "--seeds", "0,x"]) == 2
    assert "comma-separated integers" in capsys.readouterr().err
    assert main(["search", "--config", str(config), "--out", str(tmp_path / "b"), "--seeds", "0,1", "--seed", "3"]) == 2
    assert "either --seed or --seeds" in capsys.readouterr().err
