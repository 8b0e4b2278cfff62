"""Every file automtl reads back - search checkpoints, compiled supermodels, derived models,
the final weights of a run - loads with ``torch.load(weights_only=True)``; a tampered one
(carrying pickled code, truncated, garbage, of another version or format) is refused with a
:class:`CheckpointError` that says so, and pickled code is never run: the payload below
would create a marker file, and the marker never appears."""

import os
import pickle
import shutil

import pytest
import torch

import automtl
from automtl import Policy
from automtl.errors import CheckpointError
from automtl.export.saved import load_derived, load_model, save_model
from automtl.io import safe_torch_load
from automtl.search.build import build_supermodel
from automtl.search.checkpoint import load_checkpoint, save_checkpoint
from automtl.serialize import HeadSpec, compile_with_heads, save_supermodel

from search_toy import TINY, model_spec, toy_data, toy_supermodel

PROTOTXT = """
name: "tiny"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "r1" type: "ReLU" bottom: "c1" top: "c1" }
"""

SPEC = model_spec({"builtin": "dilated_resnet_tiny", "kwargs": {"widths": [4, 4], "dilations": [1, 2]}}, [3, 8, 8],
                  [{"kind": "depth", "name": "depth", "aspp_rates": [1], "head_hidden": 4}])


class CreatesMarker:
    """Unpickling this calls open(marker, "w"): code run by merely loading the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One good file of every kind automtl reads, and the function that reads it."""
    folder = tmp_path_factory.mktemp("good")
    checkpoint = folder / "pretrain.pt"
    save_checkpoint(str(checkpoint), {"stage": "pretrain", "step": 3, "done": False, "model": {"w": torch.ones(2)}})
    supermodel = folder / "super.pt"
    save_supermodel(compile_with_heads(PROTOTXT, [HeadSpec("a", 2)]), supermodel)
    sm, spec = build_supermodel(SPEC)
    derived = folder / "derived.pt"
    save_model(sm.derive(Policy.all_shared(sm)), derived, spec)
    run = folder / "run"
    train, val, test = toy_data()
    automtl.search(toy_supermodel(), train, val, test, config=TINY, out=run, progress=False)
    return {
        "checkpoint": (checkpoint, lambda p: load_checkpoint(str(p), "pretrain")),
        "supermodel": (supermodel, automtl.load_supermodel),
        "derived model": (derived, load_model),
        "derived model (load_derived)": (derived, load_derived),
        "run weights": (run / "model" / "weights.pt", lambda p: automtl.load_run(p.parent.parent, supermodel=toy_supermodel())),
        "any tensor file": (checkpoint, safe_torch_load),
    }


KINDS = ["checkpoint", "supermodel", "derived model", "derived model (load_derived)", "run weights", "any tensor file"]


def _tampered_copy(files, kind, tmp_path):
    """A copy of the good file (and of its run directory) to tamper with, and its loader."""
    good, load = files[kind]
    if kind == "run weights":
        run = tmp_path / "run"
        shutil.copytree(good.parent.parent, run)
        return run / "model" / "weights.pt", load
    path = tmp_path / good.name
    shutil.copyfile(good, path)
    return path, load


def test_the_good_files_load(files):
    for kind in KINDS:
        path, load = files[kind]
        assert load(path) is not None


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("pickler", ["torch.save", "pickle"])
def test_pickled_code_is_refused_and_never_run(files, kind, pickler, tmp_path):
    path, load = _tampered_copy(files, kind, tmp_path)
    marker = tmp_path / "marker"
    payload = torch.load(path, weights_only=True)
    payload["extra"] = CreatesMarker(marker)  # the file is otherwise intact
    if pickler == "torch.save":
        torch.save(payload, path)
    else:  # torch's legacy format: a bare pickle (of plain values, and the code)
        path.write_bytes(pickle.dumps({"format": payload.get("format"), "extra": CreatesMarker(marker)}, protocol=2))
    with pytest.raises(CheckpointError) as info:
        load(path)
    assert str(info.value) == (
        f"{path} cannot be loaded safely: it refers to the Python object io.open, and loading it would run code "
        "(automtl reads tensors and plain values only). It was not written by automtl, or it was changed; do not "
        "load it with torch.load(weights_only=False) unless you trust its source"
    )
    assert not marker.exists()


def test_the_payload_does_run_code_when_loaded_unsafely(tmp_path):
    """So the test above would catch a loader that is not safe."""
    marker = tmp_path / "marker"
    torch.save({"extra": CreatesMarker(marker)}, tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_files_are_refused(files, kind, damage, tmp_path):
    path, load = _tampered_copy(files, kind, tmp_path)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": bytes(range(256)) * 4, "empty": b""}[damage])
    with pytest.raises(CheckpointError) as info:
        load(path)
    message = str(info.value)
    if damage == "empty":
        assert message == f"{path} is empty (0 bytes): it was never written completely, or it was truncated"
        return
    # the middle quotes torch's reason, which depends on where the file breaks off
    assert message.startswith(f"{path} cannot be loaded safely (") and "\n" not in message
    assert message.endswith("); it is truncated, from another program, or holds more than tensors and plain values")


@pytest.mark.parametrize(
    "kind, edit, message",
    [
        ("checkpoint", {"version": 7}, "is a version 7 checkpoint; this automtl reads version 1"),
        ("checkpoint", {"format": "something.else"}, "is not an automtl checkpoint"),
        ("supermodel", {"version": 7}, "supermodel file version 7; this automtl reads version 1. Compile the backbone again with this version"),
        ("derived model", {"version": 7}, "derived-model file version 7; this automtl reads version 1"),
        ("derived model", {"format": "automtl.supermodel"}, "is not a derived model saved by automtl.save_model (format 'automtl.supermodel')"),
    ],
)
def test_another_version_or_format_is_refused(files, kind, edit, message, tmp_path):
    path, load = _tampered_copy(files, kind, tmp_path)
    torch.save({**torch.load(path, weights_only=True), **edit}, path)
    with pytest.raises(CheckpointError, match=message.replace("(", "\\(").replace(")", "\\)").replace(".", "\\.")):
        load(path)


def test_weights_that_do_not_fit_the_run_are_refused(files, tmp_path):
    path, load = _tampered_copy(files, "run weights", tmp_path)
    state = torch.load(path, weights_only=True)
    state[next(iter(state))] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=f"{path} does not fit the rebuilt model: Error\\(s\\) in loading state_dict"):
        load(path)


def test_a_torn_run_description_is_refused(files, tmp_path):
    path, load = _tampered_copy(files, "run weights", tmp_path)
    description = path.parent / "model.json"
    description.write_text(description.read_text()[:40])
    with pytest.raises(CheckpointError, match=f"{description} cannot be read: "):
        load(path)
