"""The scripts under examples/ run as a user runs them, and print what they promise."""

import json
import os
import re
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def _run(script, *args, cwd):
    done = subprocess.run([sys.executable, os.path.join(EXAMPLES, script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _onnx_error(stdout):
    """max |onnxruntime - PyTorch| from export_onnx.py's report."""
    return float(re.search(r"^ONNX \(onnxruntime\) max \|output - PyTorch\| = (\S+)$", stdout, re.M).group(1))


def test_compile_torchvision_reproduces_the_backbone(tmp_path):
    stdout = _run("compile_torchvision.py", "--arch", "resnet18", "--size", "32", cwd=tmp_path)
    shared = next(line for line in stdout.splitlines() if line.startswith("all-shared"))
    assert shared.endswith("= 0.00e+00")


@pytest.mark.slow
def test_search_then_export_the_model_it_found(tmp_path):
    stdout = _run("search_benchmark.py", "--steps", "2", "--out", "runs/example", cwd=tmp_path)
    assert re.search(r"^policy found: Policy\(4 tasks x \d+ nodes", stdout, re.M)
    assert re.search(r"^reloaded model: [\d,]+ parameters; outputs seg \(4, 6, 32, 32\), depth \(4, 1, 32, 32\)", stdout, re.M)
    stdout = _run("export_onnx.py", "--run", "runs/example", "--out", "exported", cwd=tmp_path)
    assert _onnx_error(stdout) < 1e-4
    assert "TorchScript and Python: checked against PyTorch by the exporters" in stdout
    for name in ("model.onnx", "model.pt", os.path.join("python", "model.py"), os.path.join("python", "weights.pt")):
        assert os.path.isfile(tmp_path / "exported" / name), name


@pytest.mark.slow
def test_export_a_sampled_policy_of_the_shipped_resnet18(tmp_path):
    assert _onnx_error(_run("export_onnx.py", "--out", "exported", cwd=tmp_path)) < 1e-3


def test_own_dataset_runs_through_compare_from_its_config_key(tmp_path):
    stdout = _run("own_dataset.py", "--out", "runs/own", "--steps", "3", cwd=tmp_path)
    assert stdout.startswith("own_dataset:make_dataset (test split), seed 0")  # the table names the user's data
    assert re.search(r"^policy found: Policy\(2 tasks x \d+ nodes", stdout, re.M)
    table = json.loads((tmp_path / "runs" / "own" / "table.json").read_text())
    assert [row["name"] for row in table["rows"]] == ["Single-Task", "Multi-Task", "AutoMTL"]
    assert table["input_size"] == [3, 16, 16]
    for row in table["rows"]:
        assert set(row["metrics"]) == {"mask", "side"} and 0.0 <= row["metrics"]["side"]["accuracy"] <= 100.0
