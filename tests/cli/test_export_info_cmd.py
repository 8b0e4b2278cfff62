"""``automtl export`` and ``automtl info`` on a saved derived model and on a run directory."""

import os
import subprocess
import sys
import warnings

import onnx
import pytest
import torch

import automtl
from automtl import Policy
from automtl.cli import main
from automtl.errors import CheckpointError, ExportError
from automtl.export.onnx import run_onnx
from automtl.export.saved import load_derived, load_model, save_model
from automtl.search.build import build_supermodel
from search_toy import SEG_DEPTH, model_spec

SPEC = model_spec({"builtin": "dilated_resnet_tiny", "kwargs": {"widths": [8, 8, 16], "dilations": [1, 2, 1]}}, [3, 12, 12], SEG_DEPTH)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A derived model with a mixed policy (own, shared and skipped convolutions), saved."""
    sm, spec = build_supermodel(SPEC)
    table = {t: {n: ("own", "shared", "skip")[(i + j) % 3] for j, n in enumerate(sm.searchable_nodes)} for i, t in enumerate(sm.task_names)}
    model = sm.derive(Policy.from_dict(sm, table)).eval()
    for p in model.parameters():  # trained-looking weights, not the copies' shared start
        p.data.add_(torch.randn_like(p) * 0.01)
    path = tmp_path_factory.mktemp("saved") / "model.pt"
    save_model(model, path, spec)
    return model, spec, str(path)


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_save_and_load_round_trip(saved):
    model, _, path = saved
    loaded = load_model(path)
    assert loaded.task_names == ("seg", "depth") and loaded.policy == model.policy
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        expected, got = model(x), loaded(x)
    for task in expected:
        assert torch.equal(expected[task], got[task])
    assert load_derived(path).input_shape == (3, 12, 12)


def test_export_writes_every_format_and_each_matches(saved, tmp_path, capsys):
    model, _, path = saved
    onnx_path, py_dir, ts_path = tmp_path / "m.onnx", tmp_path / "py", tmp_path / "m.pt"
    code, out, err = _run(["export", path, "--onnx", str(onnx_path), "--python", str(py_dir), "--torchscript", str(ts_path)], capsys)
    assert code == 0, err
    assert f"wrote {onnx_path} (ONNX; outputs seg, depth; input [batch, 3, 12, 12])" in out
    assert f"wrote {py_dir / 'model.py'} and its weights" in out
    assert f"wrote {ts_path} (TorchScript, scripted)" in out
    onnx.checker.check_model(onnx.load(str(onnx_path)), full_check=True)
    x = torch.randn(3, 3, 12, 12)
    with torch.no_grad():
        expected = model(x)
    got = run_onnx(onnx_path, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(ts_path))
    for task in expected:
        assert float((got[task] - expected[task]).abs().max() / expected[task].abs().max()) <= 1e-4
        torch.testing.assert_close(scripted(x)[task], expected[task], rtol=1e-5, atol=1e-6)
    assert sorted(os.listdir(py_dir)) == ["model.py", "weights.pt"]


def test_export_from_a_run_directory(saved, tmp_path, capsys):
    from automtl.search.pipeline import save_final_model
    from automtl.search.run import RunDir

    model, spec, _ = saved
    run = RunDir(str(tmp_path / "run"))
    save_final_model(run, model, model.policy, spec)
    code, out, err = _run(["export", str(tmp_path / "run"), "--torchscript", str(tmp_path / "t.pt"), "--trace"], capsys)
    assert code == 0, err
    assert "(TorchScript, traced)" in out
    code, out, err = _run(["info", str(tmp_path / "run")], capsys)
    assert code == 0, err
    assert out.startswith(f"run {tmp_path / 'run'}: 2 tasks (seg, depth)")


def test_info_prints_cost_and_sharing(saved, capsys):
    model, _, path = saved
    code, out, err = _run(["info", path, "--input-size", "3x24x24"], capsys)
    assert code == 0, err
    cost = automtl.model_cost(model, (3, 24, 24))
    lines = out.splitlines()
    assert lines[0] == f"file {path}: 2 tasks (seg, depth)"
    policy = model.policy
    assert lines[1] == (
        f"policy: {len(policy.nodes)} searchable operators x 2 tasks: {policy.count('shared')} shared, "
        f"{policy.count('own')} own, {policy.count('skip')} skipped"
    )
    assert "cost at input 1x3x24x24 (batch 1)" in out
    assert "seg: operators by the tasks it shares them with" in out and "depth: operators by the tasks" in out
    row = next(line for line in lines if line.startswith("seg "))
    from automtl.export.cost import human

    assert row.split() == ["seg", human(cost.tasks["seg"].parameters), human(cost.tasks["seg"].macs), human(cost.tasks["seg"].flops)]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["export", "{path}"], "automtl export: error: nothing to export: give --onnx FILE, --python DIR and/or --torchscript FILE"),
        (["export", "{missing}", "--onnx", "{out}"], "automtl export: error: {missing}: no such file or run directory"),
        (["info", "{path}", "--input-size", "3x224"], "automtl info: error: the model cannot run on an input of size 1x3x224"),
        (["info", "{path}", "--input-size", "3xbig"], "automtl info: error: --input-size '3xbig': write CxHxW, e.g. 3x224x224"),
        (["info", "{notmodel}"], "automtl info: error: {notmodel} is not a derived model saved by automtl.save_model"),
        (["info", "{emptydir}"], "automtl info: error: {emptydir} is a directory without model/model.json"),
    ],
)
def test_user_errors_exit_2_with_one_line(saved, tmp_path, capsys, argv, message):
    _, _, path = saved
    names = {
        "path": path,
        "missing": str(tmp_path / "nope.pt"),
        "out": str(tmp_path / "m.onnx"),
        "notmodel": str(tmp_path / "weights.pt"),
        "emptydir": str(tmp_path / "empty"),
    }
    torch.save({"conv.weight": torch.zeros(1)}, names["notmodel"])
    os.makedirs(names["emptydir"])
    code, out, err = _run([a.format(**names) for a in argv], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(message.format(**names)), err
    assert not os.path.exists(names["out"])


def test_save_model_refuses_what_it_cannot_rebuild(saved, tmp_path):
    model, spec, _ = saved
    with pytest.raises(ExportError, match="spec must be a model spec"):
        save_model(model, tmp_path / "m.pt", {"backbone": "resnet18"})
    with pytest.raises(ExportError, match="save_model: spec.compile.searchable holds a type; a spec holds JSON values only"):
        save_model(model, tmp_path / "m.pt", dict(spec, compile={"norm": "per_task", "searchable": [torch.nn.Conv2d]}))
    with pytest.raises(ExportError, match="save_model needs a derived model"):
        save_model(torch.nn.Linear(2, 2), tmp_path / "m.pt", spec)
    assert not os.listdir(tmp_path)


def test_tampered_file_is_refused(saved, tmp_path):
    _, _, path = saved
    payload = torch.load(path, weights_only=True)
    payload["state_dict"].pop(next(iter(payload["state_dict"])))
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="the saved weights do not fit the rebuilt model"):
        load_model(tmp_path / "bad.pt")


def test_console_script_runs(saved):
    _, _, path = saved
    done = subprocess.run([sys.executable, "-m", "automtl", "info", path], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "all tasks" in done.stdout
