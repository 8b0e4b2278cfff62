"""The loaders rebuild a saved model on the meta device and assign its weights
(``load_state_dict(assign=True)``): the loaded model computes what the saved one did, output
for output; no SuperModel is materialised (every tensor of the one built is on the meta
device); the backbone's pretrained weights are neither read nor downloaded; ``map_location``
goes to ``torch.load``."""

import os

import pytest
import torch
import torchvision

import automtl
import automtl.search.build as build
import automtl.search.pipeline as pipeline
from automtl.backbones import DilatedResNet
from automtl.errors import CheckpointError
from automtl.export.saved import load_derived, load_model, save_model
from automtl.methods.masking import mask_channels, maskable_layers
from automtl.policy import Policy
from automtl.search.run import RunDir
from search_toy import SEG_DEPTH, model_spec

KWARGS = {"widths": [8, 8, 16], "dilations": [1, 2, 1]}


def _spec(weights):
    return model_spec({"builtin": "dilated_resnet_tiny", "kwargs": KWARGS, "weights": weights}, [3, 12, 12], SEG_DEPTH)


@pytest.fixture()
def trained(tmp_path):
    """A derived model with a mixed policy and trained-looking weights, from a backbone whose
    pretrained weights file is deleted afterwards (a loader that read it would fail)."""
    torch.manual_seed(3)
    weights = tmp_path / "pretrained.pt"
    torch.save(DilatedResNet(**KWARGS).state_dict(), weights)
    sm, spec = build.build_supermodel(_spec(str(weights)))
    table = {t: {n: ("own", "shared", "skip")[(i + j) % 3] for j, n in enumerate(sm.searchable_nodes)} for i, t in enumerate(sm.task_names)}
    model = sm.derive(Policy.from_dict(sm, table)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    os.remove(weights)
    return sm, model, spec


def _watch(monkeypatch, module):
    """Every SuperModel ``module.build_supermodel`` builds, with the ``meta`` flag it got."""
    built = []
    original = build.build_supermodel

    def watched(spec, **kwargs):
        sm, resolved = original(spec, **kwargs)
        built.append((sm, kwargs.get("meta", False)))
        return sm, resolved

    monkeypatch.setattr(module, "build_supermodel", watched)
    return built


def _same_outputs(a, b):
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out_a, out_b = a.eval()(x), b.eval()(x)
    assert list(out_a) == list(out_b) == ["seg", "depth"]
    for task in out_a:
        assert torch.equal(out_a[task], out_b[task]), task


def _all_meta(sm):
    tensors = [*sm.parameters(), *sm.buffers()]
    return len(tensors) > 0 and all(t.is_meta for t in tensors)


def test_load_model_assigns_the_weights_to_a_meta_rebuild(trained, tmp_path, monkeypatch):
    _, model, spec = trained
    path = tmp_path / "model.pt"
    save_model(model, path, spec)
    built = _watch(monkeypatch, build)
    loaded = load_model(path)
    assert len(built) == 1 and built[0][1] is True and _all_meta(built[0][0])  # no full SuperModel
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    assert {p.device.type for p in loaded.parameters()} == {"cpu"}
    _same_outputs(model, loaded)
    # the weights are the file's tensors themselves, not copies into an initialised model
    assert loaded.num_parameters() == model.num_parameters()

    seen = []
    def where(storage, location):  # any map_location torch.load takes
        seen.append(location)
        return storage

    again = load_derived(path, map_location=where)
    assert seen and set(seen) == {"cpu"}
    _same_outputs(model, again.model)


def test_load_run_assigns_the_weights_to_a_meta_rebuild(trained, tmp_path, monkeypatch):
    sm, model, spec = trained
    shared = [path for path in maskable_layers(sm) if path in dict(model.named_modules())]
    assert len(shared) >= 2
    masked = mask_channels(model, shared[:2])  # Maximum Roaming's channel masks, saved with the run
    with torch.no_grad():
        for name, buffer in masked.named_buffers():
            if name.startswith("channel_masks."):
                buffer.bernoulli_(0.5, generator=torch.Generator().manual_seed(len(name)))
    run = RunDir(str(tmp_path / "run"))
    os.makedirs(run.path)
    pipeline.save_final_model(run, masked, masked.policy, spec)
    built = _watch(monkeypatch, pipeline)
    loaded, meta = automtl.load_run(run.path, map_location=torch.device("cpu"))
    assert len(built) == 1 and built[0][1] is True and _all_meta(built[0][0])
    assert meta["channel_masks"] == list(masked.mask_layers)
    _same_outputs(masked, loaded)


def test_a_torchvision_weights_name_is_not_downloaded_on_load(tmp_path, monkeypatch):
    """A model whose backbone started from torchvision's pretrained weights loads without them."""
    state = torchvision.models.resnet18().state_dict()
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", lambda self, *a, **k: state)
    spec = dict(_spec(None), backbone={"torchvision": "resnet18", "weights": "DEFAULT", "return_node": "layer1"}, input_shape=[3, 16, 16],
                tasks=[{"kind": "classification", "name": "seg", "classes": 2}, {"kind": "classification", "name": "depth", "classes": 3}])
    sm, spec = build.build_supermodel(spec)
    model = sm.derive(Policy.all_shared(sm))
    save_model(model, tmp_path / "m.pt", spec)

    def offline(self, *args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    loaded = load_model(tmp_path / "m.pt")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model.eval()(x).values(), loaded(x).values()))


def test_weights_that_do_not_fit_are_refused(trained, tmp_path):
    _, model, spec = trained
    path = tmp_path / "model.pt"
    save_model(model, path, spec)
    payload = torch.load(path, weights_only=True)
    del payload["state_dict"][next(iter(payload["state_dict"]))]
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"model.pt: the saved weights do not fit the rebuilt model: Error\(s\) in loading state_dict"):
        load_model(path)


def test_load_supermodel_takes_map_location(tmp_path):
    from automtl.serialize import HeadSpec, compile_with_heads, save_supermodel

    prototxt = """
name: "tiny"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "r1" type: "ReLU" bottom: "c1" top: "c1" }
"""
    sm = compile_with_heads(prototxt, [HeadSpec("a", 2), HeadSpec("b", 3)])
    save_supermodel(sm, tmp_path / "super.pt")
    for where in (None, "cpu", torch.device("cpu")):
        loaded = automtl.load_supermodel(tmp_path / "super.pt", map_location=where)
        assert {t.device.type for t in [*loaded.parameters(), *loaded.buffers()]} == {"cpu"}
        assert all(torch.equal(a, b) for a, b in zip(sm.state_dict().values(), loaded.state_dict().values()))


def test_a_loaded_file_does_not_run_the_code_it_names(tmp_path, monkeypatch):
    """A backbone from a user's factory (``module:``) is rebuilt from a saved model or run only
    when the caller trusts the file: a file could name any importable callable."""
    (tmp_path / "user_nets.py").write_text(
        "from torch import nn\n"
        "CALLS = []\n\n"
        "def net():\n"
        "    CALLS.append(1)\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import user_nets

    spec = dict(_spec(None), backbone={"module": "user_nets:net"},
                tasks=[{"kind": "classification", "name": "seg", "classes": 2}, {"kind": "classification", "name": "depth", "classes": 3}])
    sm, spec = build.build_supermodel(spec)
    model = sm.derive(Policy.all_own(sm))
    save_model(model, tmp_path / "m.pt", spec)
    run = RunDir(str(tmp_path / "run"))
    os.makedirs(run.path)
    pipeline.save_final_model(run, model, model.policy, spec)
    calls = len(user_nets.CALLS)
    for load in (lambda **k: load_model(tmp_path / "m.pt", **k), lambda **k: automtl.load_run(run.path, **k)[0]):
        with pytest.raises(CheckpointError, match=r"names code to import and run \(backbone factory 'user_nets:net'\); automtl does not run "
                           "code a loaded file names. If you trust where it came from, load it with trust_code=True"):
            load()
        assert len(user_nets.CALLS) == calls
        x = torch.randn(2, 3, 12, 12)
        with torch.no_grad():
            assert all(torch.equal(a, b) for a, b in zip(model.eval()(x).values(), load(trust_code=True)(x).values()))
        calls += 1
        assert len(user_nets.CALLS) == calls
