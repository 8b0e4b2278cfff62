"""The report's pieces: the results table read back from table.json and laid out in HTML,
and the parameter breakdown of a derived model."""

import pytest
import torch
from torch import nn

import automtl
from automtl import Policy, Task
from automtl.errors import ConfigError
from automtl.search.report import Row, Table, results_table
from automtl.viz.report import parameter_breakdown, table_html
from viz_runs import PageParser


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
