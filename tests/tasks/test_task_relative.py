"""Relative performance Δt against a hand computation, and baseline files."""

import json

import pytest

from automtl.errors import ConfigError, DataError
from automtl.tasks import load_baseline, make_task, relative_performance, save_baseline

BASELINE = {"seg": {"mIoU": 40.0, "pixel_acc": 80.0}, "depth": {"abs_err": 0.02, "delta_1.25": 50.0}}
DIRECTIONS = {"seg": {"mIoU": True, "pixel_acc": True}, "depth": {"abs_err": False, "delta_1.25": True}}


def test_relative_performance_hand_computation():
    metrics = {"seg": {"mIoU": 44.0, "pixel_acc": 78.0}, "depth": {"abs_err": 0.018, "delta_1.25": 55.0}}
    out = relative_performance(metrics, BASELINE, DIRECTIONS)
    # seg: (+10% + -2.5%) / 2 = 3.75; depth: (-(0.018 - 0.02)/0.02 = +10%, +10%) / 2 = 10
    assert out["per_task"] == {"seg": pytest.approx(3.75), "depth": pytest.approx(10.0)}
    assert out["mean"] == pytest.approx((3.75 + 10.0) / 2)


def test_single_task_baseline_against_itself_is_zero_and_flat_directions_work():
    out = relative_performance(BASELINE, BASELINE, {"mIoU": True, "pixel_acc": True, "abs_err": False, "delta_1.25": True})
    assert out == {"per_task": {"seg": 0.0, "depth": 0.0}, "mean": 0.0}


def test_directions_come_from_the_tasks():
    tasks = [make_task("depth", in_channels=4, head_hidden=2)]
    directions = {t.name: t.higher_is_better for t in tasks}
    out = relative_performance({"depth": {"abs_err": 0.01}}, {"depth": {"abs_err": 0.02}}, directions)
    assert out["mean"] == pytest.approx(50.0)


@pytest.mark.parametrize(
    "metrics, baseline, message",
    [
        ({"sn": {"mean_angle": 1.0}}, BASELINE, "the single-task baseline has no entry for task 'sn' (it has: seg, depth); train the baseline for this task or add it to the baseline file"),
        ({"seg": {"iou": 1.0}}, BASELINE, "task 'seg': metric 'iou' does not say whether higher or lower is better"),
        ({"seg": {"mIoU": 1.0}}, {"seg": {"pixel_acc": 1.0}}, "the single-task baseline of task 'seg' has no value for metric 'mIoU'"),
        ({"seg": {"mIoU": 1.0}}, {"seg": {"mIoU": 0.0}}, "task 'seg': the baseline value of 'mIoU' is 0.0; relative performance divides by it, so it must be finite and non-zero"),
    ],
)
def test_relative_performance_errors(metrics, baseline, message):
    with pytest.raises(ConfigError) as err:
        relative_performance(metrics, baseline, DIRECTIONS)
    assert str(err.value) == message


def test_baseline_round_trip(tmp_path):
    path = tmp_path / "runs" / "baseline.json"
    save_baseline(path, BASELINE)
    document = json.loads(path.read_text())
    assert document["format"] == "automtl.baseline" and document["version"] == 1
    assert load_baseline(path) == BASELINE
    assert [p.name for p in path.parent.iterdir()] == ["baseline.json"]  # no temporary left behind


def test_bad_baseline_files(tmp_path):
    missing = tmp_path / "none.json"
    with pytest.raises(DataError) as err:
        load_baseline(missing)
    assert str(err.value) == f"{missing}: no such baseline file; write one with automtl.tasks.save_baseline"

    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "automtl.baseline",\n "version": 1,\n "tasks": {oops}}')
    with pytest.raises(DataError) as err:
        load_baseline(broken)
    assert str(err.value) == f"{broken}:3:12: the baseline file is not valid JSON (Expecting property name enclosed in double quotes)"

    other = tmp_path / "other.json"
    other.write_text(json.dumps({"tasks": {}}))
    with pytest.raises(DataError, match=r'not an automtl baseline file \(expected "format": "automtl.baseline"'):
        load_baseline(other)

    future = tmp_path / "future.json"
    future.write_text(json.dumps({"format": "automtl.baseline", "version": 9, "tasks": BASELINE}))
    with pytest.raises(DataError, match="baseline file version 9 is not supported"):
        load_baseline(future)

    text = tmp_path / "text.json"
    text.write_text(json.dumps({"format": "automtl.baseline", "version": 1, "tasks": {"seg": {"mIoU": "high"}}}))
    with pytest.raises(DataError) as err:
        load_baseline(text)
    assert str(err.value) == f"{text}: task 'seg', metric 'mIoU': 'high' is not a finite number"

    with pytest.raises(DataError):
        save_baseline(tmp_path / "nan.json", {"seg": {"mIoU": float("nan")}})
    assert not (tmp_path / "nan.json").exists()
