"""The results table: Δtᵢ, Δt, parameter and MAC ratios, checked by hand."""

import pytest

from automtl.search.report import Row, Table, results_table


def test_table_against_hand_computation():
    higher = {"seg": {"mIoU": True, "pixel_acc": True}, "depth": {"abs_err": False}}
    single = {"seg": {"mIoU": 40.0, "pixel_acc": 80.0}, "depth": {"abs_err": 0.5}}
    searched = {"seg": {"mIoU": 44.0, "pixel_acc": 76.0}, "depth": {"abs_err": 0.4}}
    rows = [Row("Single-Task", 2_000_000, single, macs=300_000_000), Row("Multi-Task", 1_000_000, single, macs=100_000_000),
            Row("AutoMTL", 1_500_000, searched, macs=240_000_000)]
    table = results_table(rows, single, higher, 2_000_000, title="toy", baseline_macs=300_000_000, input_size=(3, 64, 64))
    # seg: (+10% mIoU, -5% pixel acc) / 2 = +2.5; depth: lower is better, 0.5 -> 0.4 = +20
    assert table.relative["AutoMTL"]["per_task"] == pytest.approx({"seg": 2.5, "depth": 20.0})
    assert table.relative["AutoMTL"]["mean"] == pytest.approx(11.25)
    assert table.relative["Single-Task"]["mean"] == 0.0
    text = table.text().splitlines()
    assert text[0] == "toy"
    assert text[1].split() == ["#", "Params", "MACs", "seg", "depth"]
    assert text[2].split() == ["Model", "Abs.", "(M)", "Rel.", "(%)", "Abs.", "(M)", "Rel.", "(%)", "mIoU", "↑", "pixel_acc", "↑",
                               "Δt", "seg", "↑", "abs_err", "↓", "Δt", "depth", "↑", "Δt", "↑"]
    assert text[4].split() == ["Single-Task", "2.000", "-", "300.000", "-", "40.00", "80.00", "+0.0", "0.5000", "+0.0", "+0.0"]
    assert text[5].split() == ["Multi-Task", "1.000", "-50.0", "100.000", "-66.7", "40.00", "80.00", "+0.0", "0.5000", "+0.0", "+0.0"]
    assert text[6].split() == ["AutoMTL", "1.500", "-25.0", "240.000", "-20.0", "44.00", "76.00", "+2.5", "0.4000", "+20.0", "+11.2"]
    assert text[7] == ("MACs: multiply-accumulates of the model for one 3x64x64 input, work shared by several tasks "
                       "counted once (automtl info shows them per task)")
    markdown = table.markdown()
    assert "| Model | # Params Abs. (M) | # Params Rel. (%) | MACs Abs. (M) | MACs Rel. (%) | seg mIoU ↑ |" in markdown
    assert "| AutoMTL | 1.500 | -25.0 | 240.000 | -20.0 | 44.00 | 76.00 | +2.5 | 0.4000 | +20.0 | +11.2 |" in markdown
    data = table.to_dict()
    assert data["rows"][2]["parameters_vs_single_task_pct"] == -25.0
    assert data["rows"][2]["macs"] == 240_000_000 and data["rows"][2]["macs_vs_single_task_pct"] == -20.0
    assert data["baseline_macs"] == 300_000_000 and data["input_size"] == [3, 64, 64]
    again = Table.from_dict(data)
    assert again.to_dict() == data and again.text() == table.text()


def test_a_table_written_before_macs_were_counted_still_loads():
    single = {"seg": {"mIoU": 40.0}}
    old = {  # table.json as Table.to_dict wrote it before the MACs columns
        "title": "old", "tasks": ["seg"], "higher_is_better": {"seg": {"mIoU": True}}, "baseline_parameters": 2_000_000,
        "notes": [],
        "rows": [
            {"name": "Single-Task", "parameters": 2_000_000, "parameters_vs_single_task_pct": 0.0, "metrics": single,
             "delta": {"per_task": {"seg": 0.0}, "mean": 0.0}, "seconds": 3.0},
            {"name": "AutoMTL", "parameters": 1_000_000, "parameters_vs_single_task_pct": -50.0, "metrics": {"seg": {"mIoU": 44.0}},
             "delta": {"per_task": {"seg": 10.0}, "mean": 10.0}, "seconds": 5.0},
        ],
    }
    table = Table.from_dict(old)
    lines = table.text().splitlines()
    assert lines[4].split() == ["Single-Task", "2.000", "-", "-", "-", "40.00", "+0.0", "+0.0"]
    assert lines[5].split() == ["AutoMTL", "1.000", "-50.0", "-", "-", "44.00", "+10.0", "+10.0"]
    data = table.to_dict()
    assert data["baseline_macs"] is None and data["input_size"] is None
    assert [(r["macs"], r["macs_vs_single_task_pct"]) for r in data["rows"]] == [(None, None), (None, None)]


def test_no_macs_note_without_counted_macs():
    single = {"seg": {"mIoU": 40.0}}
    table = results_table([Row("Single-Task", 10, single)], single, {"seg": {"mIoU": True}}, 10, input_size=(3, 8, 8))
    assert table.notes == [] and table.text().splitlines()[3].split() == ["Single-Task", "0.000", "-", "-", "-", "40.00", "+0.0", "+0.0"]
