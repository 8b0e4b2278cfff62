"""The results table: Δtᵢ, Δt and parameter ratios, checked by hand."""

import pytest

from automtl.search.report import Row, results_table


def test_table_against_hand_computation():
    higher = {"seg": {"mIoU": True, "pixel_acc": True}, "depth": {"abs_err": False}}
    single = {"seg": {"mIoU": 40.0, "pixel_acc": 80.0}, "depth": {"abs_err": 0.5}}
    searched = {"seg": {"mIoU": 44.0, "pixel_acc": 76.0}, "depth": {"abs_err": 0.4}}
    rows = [Row("Single-Task", 2_000_000, single), Row("Multi-Task", 1_000_000, single), Row("AutoMTL", 1_500_000, searched)]
    table = results_table(rows, single, higher, 2_000_000, title="toy")
    # seg: (+10% mIoU, -5% pixel acc) / 2 = +2.5; depth: lower is better, 0.5 -> 0.4 = +20
    assert table.relative["AutoMTL"]["per_task"] == pytest.approx({"seg": 2.5, "depth": 20.0})
    assert table.relative["AutoMTL"]["mean"] == pytest.approx(11.25)
    assert table.relative["Single-Task"]["mean"] == 0.0
    text = table.text().splitlines()
    assert text[0] == "toy"
    assert "seg" in text[1] and "depth" in text[1] and "# Params" in text[1]
    assert text[2].split() == ["Model", "Abs.", "(M)", "Rel.", "(%)", "mIoU", "↑", "pixel_acc", "↑", "Δt", "seg", "↑",
                               "abs_err", "↓", "Δt", "depth", "↑", "Δt", "↑"]
    assert text[4].split() == ["Single-Task", "2.000", "-", "40.00", "80.00", "+0.0", "0.5000", "+0.0", "+0.0"]
    assert text[5].split() == ["Multi-Task", "1.000", "-50.0", "40.00", "80.00", "+0.0", "0.5000", "+0.0", "+0.0"]
    assert text[6].split() == ["AutoMTL", "1.500", "-25.0", "44.00", "76.00", "+2.5", "0.4000", "+20.0", "+11.2"]
    markdown = table.markdown()
    assert "| AutoMTL | 1.500 | -25.0 | 44.00 | 76.00 | +2.5 | 0.4000 | +20.0 | +11.2 |" in markdown
    data = table.to_dict()
    assert data["rows"][2]["parameters_vs_single_task_pct"] == -25.0
