"""The report's pieces: the results table read back from table.json and laid out in HTML,
and the parameter breakdown of a derived model."""

import json
import os
import shutil

import pytest
import torch
from torch import nn

import automtl
from automtl import Policy, Task
from automtl.errors import ConfigError
from automtl.export import model_cost
from automtl.search.report import Row, Table, results_table
from automtl.viz.report import parameter_breakdown, table_html
from automtl.viz import read_run
from viz_runs import PageParser, parse_page


def toy_table():
    higher = {"seg": {"mIoU": True}, "depth": {"abs_err": False}}
    single = {"seg": {"mIoU": 40.0}, "depth": {"abs_err": 0.5}}
    searched = {"seg": {"mIoU": 44.0}, "depth": {"abs_err": 0.6}}
    rows = [Row("Single-Task", 2_000_000, single), Row("AutoMTL <b>", 1_500_000, searched)]
    return results_table(rows, single, higher, 2_000_000, title="toy & co")


def test_table_round_trips_through_its_dict():
    table = toy_table()
    again = Table.from_dict(table.to_dict())
    assert again.text() == table.text() and again.markdown() == table.markdown()
    assert again.to_dict() == table.to_dict()
    with pytest.raises(ConfigError, match=r"not a results table written by Table.to_dict \(missing or malformed 'rows'\)"):
        Table.from_dict({"tasks": ["seg"]})


def test_table_html_has_the_cells_of_the_text_table():
    table = toy_table()
    page = PageParser()
    page.feed(table_html(table, highlight=("AutoMTL <b>",)))
    groups, header, body = table.cells()
    heads = [attrs for tag, attrs in page.tags if tag == "th"]
    assert len(heads) == len(groups) + len(header)
    assert [int(a["colspan"]) for a in heads[: len(groups)]] == [span for _, span in groups]
    cells = [attrs for tag, attrs in page.tags if tag == "td"]
    assert len(cells) == sum(len(r) for r in body)
    text = [t for t in page.text if t.strip()]
    assert "AutoMTL <b>" in text  # escaped, not markup
    assert not any(tag == "b" for tag, _ in page.tags)
    rows = [attrs for tag, attrs in page.tags if tag == "tr"]
    assert [r.get("class") for r in rows[2:]] == [None, "searched"]
    # seg +10 %, depth -20 %: Δt cells coloured by sign
    classes = [a["class"] for a in cells if "class" in a]
    assert classes.count("num pos") == 1 and classes.count("num neg") == 2


def test_parameter_breakdown_adds_up():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2))
    tasks = [Task("a", head=nn.Conv2d(6, 2, 1)), Task("b", head=nn.Conv2d(6, 1, 1))]
    sm = automtl.compile(backbone, tasks, torch.zeros(2, 3, 12, 12))
    first, second = sm.searchable_nodes
    policy = Policy.from_dict(sm, {"a": {first: 0, second: 1}, "b": {first: 0, second: 2}})
    model = automtl.derive(sm, policy)
    found = parameter_breakdown(model)
    conv1, conv2 = 3 * 4 * 9 + 4, 4 * 6 * 9 + 6
    skip = sum(p.numel() for p in model.get_submodule(f"skip.b.{second}").parameters())
    assert found["kinds"] == {"shared": conv1, "own": conv2, "skip": skip, "heads": 6 * 2 + 2 + 6 + 1}
    assert found["total"] == model.num_parameters() == sum(found["kinds"].values())
    assert found["per_task"]["a"] == {"runs": model.num_parameters("a"), "only": conv2 + 14}
    assert found["per_task"]["b"] == {"runs": model.num_parameters("b"), "only": skip + 7}


def test_report_shows_the_final_models_macs(shown, toy_run):
    out, sm = toy_run
    model, _ = automtl.load_run(out, supermodel=sm)
    macs = model_cost(model, (1, 8, 8)).macs  # the toy images' size
    results = json.loads(open(os.path.join(out, "results.json")).read())
    assert results["macs"] == macs and results["input_size"] == [1, 8, 8]
    page = parse_page(shown.report)
    heads = [t.strip() for t in page.text if t.strip()]
    assert "MACs" in heads  # the column group of the results table
    table = read_run(out, supermodel=sm).table
    groups, header, body = table.cells()
    assert [label for label, _ in groups][:3] == ["", "# Params", "MACs"]
    assert body[-1][0] == "AutoMTL" and body[-1][3] == f"{macs / 1e6:.3f}"
    text = " ".join(page.text)
    assert f"compute for one 1x8x8 input: {macs:,} MACs" in text
    assert "MACs: multiply-accumulates of the model for one 1x8x8 input" in text  # the table's note


def test_report_table_takes_the_baselines_macs(toy_run, tmp_path):
    """A run without table.json: the table is built from results.json files, the single-task
    baseline's MACs the reference of the relative column."""
    out, sm = toy_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("plots", "report.html", "checkpoints"))
    results = json.loads((copy / "results.json").read_text())
    single = dict(results, method="single_task", macs=4 * results["macs"], parameters=2 * results["parameters"])
    os.makedirs(copy / "baselines" / "single_task")
    (copy / "baselines" / "single_task" / "results.json").write_text(json.dumps(single))
    table = read_run(str(copy), supermodel=sm).table
    rows = {r["name"]: r for r in table.to_dict()["rows"]}
    assert rows["Single-Task"]["macs"] == 4 * results["macs"] and rows["AutoMTL"]["macs"] == results["macs"]
    assert rows["AutoMTL"]["macs_vs_single_task_pct"] == -75.0
    assert table.cells()[2][1][3:5] == [f"{results['macs'] / 1e6:.3f}", "-75.0"]
