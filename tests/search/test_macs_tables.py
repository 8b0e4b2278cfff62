"""The MACs columns of the results tables (`automtl search`'s comparison table, `automtl
compare`'s table with its CSV and JSON): each row's MACs are model_cost's total for that row's
derived model at the SuperModel's input size, and the relative column is against the
single-task model's."""

import csv
import io

import pytest
from torch import nn

from automtl import Policy
from automtl.export import model_cost
from automtl.experiments.compare import TimedTable, comparison_of
from automtl.search.build import Experiment
from automtl.search.config import load_config
from automtl.search.pipeline import Comparison, SearchResult, input_size_of, model_macs
from automtl.search.report import comparison_table
from automtl.tasks import higher_is_better_of

from search_toy import TINY, toy_data, toy_supermodel

SIZE = (1, 8, 8)  # the toy images


@pytest.fixture(scope="module")
def finished_runs():
    """SearchResults as three methods' runs leave them (no training: the tables only read the
    models, metrics and times), on one toy SuperModel."""
    sm = toy_supermodel()
    metrics = {"single_task": 80.0, "multi_task": 70.0, "automtl": 75.0}
    policies = {
        "single_task": Policy.all_own(sm),
        "multi_task": Policy.all_shared(sm),
        "automtl": Policy.from_dict(sm, {"a": {"conv1": "own", "conv2": "shared"}, "b": {"conv1": "shared", "conv2": "skip"}}),
    }
    results = {}
    for name, policy in policies.items():
        model = sm.derive(policy)
        final = {"metrics": {"a": {"acc": metrics[name]}, "b": {"acc": metrics[name] - 10}}}
        results[name] = SearchResult(name, policy, model, final, final, sm, None, 2.0, model_macs(model, sm))
    return sm, results


def _macs(result):
    return model_cost(result.model, SIZE).macs


def test_model_macs_is_model_costs_total_at_the_compiled_input_size(finished_runs):
    sm, results = finished_runs
    assert input_size_of(sm) == list(SIZE)
    single, multi, searched = (results[n] for n in ("single_task", "multi_task", "automtl"))
    assert [r.macs for r in (single, multi, searched)] == [_macs(single), _macs(multi), _macs(searched)]
    # by hand, on 1x8x8: conv1 1->4 k3 (2304), its norm (256), conv2 4->4 k3 (9216), a linear
    # head 256->2 per task (512). All-own: two whole networks. The mix: two conv1 (a's own, b's
    # shared one) with their norms, conv2 once (for a; b skips it), both heads - in every norm mode.
    conv1, norm, conv2, head = 4 * 64 * 9, 4 * 64, 4 * 64 * 36, 256 * 2
    assert single.macs == 2 * (conv1 + norm + conv2 + head) == 24576
    assert searched.macs == 2 * (conv1 + norm) + conv2 + 2 * head
    assert single.macs > multi.macs


def test_search_comparison_table_has_macs_columns(finished_runs):
    sm, results = finished_runs
    single, multi, searched = (results[n] for n in ("single_task", "multi_task", "automtl"))
    comparison = Comparison(searched, single, multi, single.metrics, single.parameters, higher_is_better_of(sm.tasks), None,
                            single.macs, input_size_of(sm))
    table = comparison_table(comparison, "toy")
    groups, header, body = table.cells()
    assert groups[:3] == [("", 1), ("# Params", 2), ("MACs", 2)]
    assert header[:5] == ["Model", "Abs. (M)", "Rel. (%)", "Abs. (M)", "Rel. (%)"]
    for cells, result in zip(body, (single, multi, searched)):
        assert cells[3] == f"{_macs(result) / 1e6:.3f}"
    assert body[0][4] == "-"  # the reference
    assert body[1][4] == f"{(multi.macs - single.macs) / single.macs * 100:+.1f}"
    data = table.to_dict()
    assert [r["macs"] for r in data["rows"]] == [_macs(single), _macs(multi), _macs(searched)]
    assert data["rows"][2]["macs_vs_single_task_pct"] == pytest.approx((searched.macs - single.macs) / single.macs * 100)
    assert data["baseline_macs"] == single.macs and data["input_size"] == [1, 8, 8]
    assert "one 1x8x8 input" in table.text()

    # a single-task baseline read from a file: its MACs are those of the all-own model
    from_file = Comparison(searched, None, multi, single.metrics, single.parameters, higher_is_better_of(sm.tasks), None,
                           _macs(single), [1, 8, 8])
    rows = comparison_table(from_file).to_dict()["rows"]
    assert rows[0]["name"] == "Single-Task (file)" and rows[0]["macs"] == _macs(single)
    assert rows[0]["macs_vs_single_task_pct"] == 0.0


def test_compare_table_csv_and_json_carry_macs(finished_runs):
    sm, results = finished_runs
    train, val, test = toy_data()
    table = comparison_of(results, load_config(TINY), Experiment(sm, train, val, test, {}))
    assert isinstance(table, TimedTable)
    single_macs = model_cost(sm.derive(Policy.all_own(sm)), SIZE).macs
    assert table.baseline_macs == single_macs
    lines = list(csv.reader(io.StringIO(table.csv())))
    assert lines[0][:5] == ["Model", "# Params Abs. (M)", "# Params Rel. (%)", "MACs Abs. (M)", "MACs Rel. (%)"]
    assert lines[0][-1] == "Time (s)"
    by_name = {line[0]: line for line in lines[1:]}
    assert list(by_name) == ["Single-Task", "Multi-Task", "AutoMTL"]
    for name, result in zip(by_name, results.values()):
        assert by_name[name][3] == f"{_macs(result) / 1e6:.3f}"
        assert by_name[name][4] == ("-" if name == "Single-Task" else f"{(_macs(result) - single_macs) / single_macs * 100:+.1f}")
    rows = {r["name"]: r for r in table.to_dict()["rows"]}
    assert {n: r["macs"] for n, r in rows.items()} == {n: _macs(r) for n, r in zip(by_name, results.values())}
    assert table.notes[-1].startswith("MACs: multiply-accumulates of the model for one 1x8x8 input")


def test_a_model_that_cannot_be_counted_gets_no_macs_and_a_warning(finished_runs):
    sm, _ = finished_runs
    with pytest.warns(UserWarning, match=r"the model's MACs are not counted: .*dict \{task name: tensor\}"):
        assert model_macs(nn.Conv2d(1, 2, 3), sm) is None
