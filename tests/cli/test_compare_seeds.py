"""`automtl compare --seeds`: one comparison per seed, the per-seed tables kept, one summary."""

import csv
import json

import pytest

from automtl.cli import main
from search_toy import tiny_scenes_yaml


@pytest.mark.slow
def test_compare_over_seeds(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_scenes_yaml())
    out = tmp_path / "cmp"
    assert main(["compare", "--config", str(config), "--methods", "single,multi", "--seeds", "0,1",
                 "--out", str(out), "--quiet", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "scenes (test split), seeds 0,1: mean ± std" in printed
    summary = json.loads((out / "table.json").read_text())
    rows = {r["name"]: r["summary"] for r in summary["rows"]}
    assert list(rows) == ["Single-Task", "Multi-Task"]
    for seed in (0, 1):
        table = json.loads((out / f"seed-{seed}" / "table.json").read_text())
        assert table["title"].startswith(f"scenes (test split), seed {seed},")
        multi = next(r for r in table["rows"] if r["name"] == "Multi-Task")
        assert rows["Multi-Task"]["delta"]["per_seed"][seed] == multi["delta"]["mean"]
        assert rows["Multi-Task"]["macs"]["per_seed"][seed] == multi["macs"]
    # the all-shared network is the same whatever the seed: no spread in its size
    assert rows["Multi-Task"]["parameters"]["std"] == 0 and rows["Multi-Task"]["macs"]["std"] == 0
    with open(out / "table.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header[:5] == ["Model", "# Params (M) mean ± std", "# Params % of Single-Task", "MACs (M) mean ± std", "MACs % of Single-Task"]
    # each seed's size against that seed's single-task network
    assert rows["Single-Task"]["parameters_percent"]["mean"] == 100.0
    assert rows["Multi-Task"]["macs_percent"]["per_seed"][0] == pytest.approx(
        100.0 * rows["Multi-Task"]["macs"]["per_seed"][0] / rows["Single-Task"]["macs"]["per_seed"][0])
    assert main(["compare", "--config", str(config), "--seeds", "0,1", "--seed", "2", "--out", str(tmp_path / "x")]) == 2
    assert "either --seed or --seeds" in capsys.readouterr().err
