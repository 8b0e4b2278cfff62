"""Summaries over seeds: mean ± sample std per cell, paired Δt per seed, clear errors."""

import statistics

import pytest

from automtl.errors import ConfigError
from automtl.experiments.seeds import parse_seeds, seed_table, spread
from automtl.search.report import Row, results_table

HIB = {"a": {"acc": True}, "b": {"err": False}}


def _table(seed, single, multi, params_multi):
    rows = [Row("Single-Task", 1000, single, 10.0 + seed), Row("Multi-Task", params_multi, multi, 5.0)]
    return results_table(rows, single, HIB, 1000, title=f"toy (val split), seed {seed}, weighting equal")


def _tables():
    return {
        0: _table(0, {"a": {"acc": 80.0}, "b": {"err": 1.0}}, {"a": {"acc": 84.0}, "b": {"err": 1.0}}, 600),
        1: _table(1, {"a": {"acc": 90.0}, "b": {"err": 2.0}}, {"a": {"acc": 81.0}, "b": {"err": 2.0}}, 600),
        2: _table(2, {"a": {"acc": 50.0}, "b": {"err": 1.0}}, {"a": {"acc": 55.0}, "b": {"err": 0.9}}, 600),
    }


def test_parse_seeds():
    assert parse_seeds("0,1, 2") == [0, 1, 2]
    assert parse_seeds(None, repeats=3, first=5) == [5, 6, 7]
    assert parse_seeds(None, first=4) == [4]
    with pytest.raises(ConfigError, match="comma-separated integers"):
        parse_seeds("0,x")
    with pytest.raises(ConfigError, match="listed twice"):
        parse_seeds("1,1")
    with pytest.raises(ConfigError, match="either --seeds or --repeats"):
        parse_seeds("1", repeats=2)
    with pytest.raises(ConfigError, match="at least 1"):
        parse_seeds(None, repeats=0)


def test_spread_is_mean_and_sample_std():
    assert spread([1.0, 2.0, 4.0]) == (pytest.approx(7 / 3), pytest.approx(statistics.stdev([1.0, 2.0, 4.0])))
    assert spread([3.0]) == (3.0, 0.0)
    assert spread([None, float("nan")]) is None


def test_seed_table_cells_are_paired_means():
    tables = _tables()
    summary = seed_table(tables)
    deltas = [tables[s].relative["Multi-Task"]["mean"] for s in (0, 1, 2)]
    assert summary.values("Multi-Task", "delta") == deltas
    mean, std = statistics.fmean(deltas), statistics.stdev(deltas)
    text = summary.text()
    assert f"{mean:+.1f} ± {std:.1f}" in text
    assert " ".join(f"{d:+.1f}" for d in deltas) in text  # per seed, side by side
    assert "seeds 0,1,2: mean ± std" in text
    # the single-task row's Δt is 0 on every seed; accuracy of a: 73.33 ± 21.7
    acc = [80.0, 90.0, 50.0]
    assert f"{statistics.fmean(acc):.2f} ± {statistics.stdev(acc):.2f}" in text
    # the std has the mean's decimals: error of b 1.33 ± 0.58 (not ± 0.5774)
    err = [1.0, 2.0, 1.0]
    assert f"{statistics.fmean(err):.2f} ± {statistics.stdev(err):.2f}" in text and "0.5774" not in text
    # sizes also in % of each seed's single-task network
    assert summary.percent_of_single_task("Multi-Task", "parameters") == [60.0, 60.0, 60.0]
    assert "60.0 ± 0.0" in text
    # a size that differs between seeds: its std in millions too, like the mean
    spread_tables = {s: _table(s, {"a": {"acc": 80.0}, "b": {"err": 1.0}}, {"a": {"acc": 81.0}, "b": {"err": 1.0}}, p)
                     for s, p in ((0, 600_000), (1, 700_000), (2, 800_000))}
    assert "0.700 ± 0.100" in seed_table(spread_tables).text()
    data = summary.to_dict()
    assert data["seeds"] == [0, 1, 2] and set(data["per_seed"]) == {"0", "1", "2"}
    row = next(r for r in data["rows"] if r["name"] == "Multi-Task")
    assert row["summary"]["parameters"]["mean"] == 600 and row["summary"]["parameters"]["std"] == 0
    assert row["summary"]["delta"]["per_seed"] == deltas
    assert summary.csv().splitlines()[0].startswith("Model,# Params (M) mean ± std,# Params % of Single-Task")


def test_rows_within_the_spread_are_named():
    summary = seed_table(_tables())
    deltas = summary.values("Multi-Task", "delta")
    within = abs(statistics.fmean(deltas)) <= statistics.stdev(deltas)
    assert within  # +5.0, -5.0, +7.5 -> mean 2.5 < std
    assert any("not told apart from single-task" in n and "Multi-Task" in n for n in summary.notes)


def test_mismatched_tables_are_refused():
    tables = _tables()
    tables[3] = results_table([Row("Single-Task", 1000, {"a": {"acc": 1.0}, "b": {"err": 1.0}})],
                              {"a": {"acc": 1.0}, "b": {"err": 1.0}}, HIB, 1000)
    with pytest.raises(ConfigError, match="seed 3 has other rows"):
        seed_table(tables)
    with pytest.raises(ConfigError, match="no per-seed tables"):
        seed_table({})
