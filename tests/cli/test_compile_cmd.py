"""`automtl compile`, end to end through automtl.cli.main and once through the console script;
and the supermodel files it writes (automtl.load_supermodel)."""

import shutil
import subprocess

import pytest
import torch

import automtl
from automtl.cli import main
from automtl.errors import CheckpointError, ConfigError
from automtl.serialize import HeadSpec, compile_with_heads, save_supermodel

TINY = """name: "tiny"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "bn1" type: "BatchNorm" bottom: "c1" top: "c1" }
layer { name: "sc1" type: "Scale" bottom: "c1" top: "c1" scale_param { bias_term: true } }
layer { name: "r1" type: "ReLU" bottom: "c1" top: "c1" }
layer { name: "c2" type: "Convolution" bottom: "c1" top: "c2" convolution_param { num_output: 6 kernel_size: 3 stride: 2 pad: 1 } }
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.prototxt"
    path.write_text(TINY)
    return str(path)


def test_compile_prints_the_summary(capsys):
    assert main(["compile", "resnet18", "--task", "seg:19", "--task", "depth:1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "compiled 'resnet18' from the shipped 'resnet18' for 2 task(s): seg (19 channels), depth (1 channel)",
        "input 1x3x224x224 -> backbone output 1x512x7x7",
        "searchable operators: 20 (20 Conv2d), in 17 depth levels",  # conv1 + 16 block convs
        "search space: 3^40 (about 1.22e19) sharing policies (shared / own / skip per task and operator)",
        f"parameters: backbone 11,176,512; supermodel {out[4].split('supermodel ')[1].split(' ')[0]} "
        "(heads 10,260; + 120 policy logits)",
    ]
    supermodel = int(out[4].split("supermodel ")[1].split(" ")[0].replace(",", ""))
    # the backbone, a copy of it per task, the skips' projections, the heads
    assert supermodel > 3 * 11_176_512 + 10_260


def test_compile_writes_a_file_that_loads_safely_and_rebuilds(tiny, tmp_path, capsys):
    out = tmp_path / "super.pt"
    assert main(["compile", tiny, "--task", "seg:5", "--task", "depth:1", "--out", str(out), "--verbose"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "searchable (depth 0)" in printed
    payload = torch.load(out, weights_only=True)
    assert payload["format"] == "automtl.supermodel" and payload["version"] == 1
    assert payload["prototxt"] == TINY and payload["tasks"] == [{"name": "seg", "channels": 5}, {"name": "depth", "channels": 1}]
    assert payload["options"] == {"norm": "follow", "input_shape": [1, 3, 8, 8]}  # the default norm mode
    sm = automtl.load_supermodel(out)
    assert sm.task_names == ("seg", "depth") and sm.searchable_nodes == ["c1", "c2"]
    assert isinstance(sm.heads["seg"], torch.nn.Conv2d) and sm.heads["seg"].out_channels == 5
    for key, value in sm.state_dict().items():
        assert torch.equal(value, payload["state_dict"][key]), key


def test_a_saved_supermodel_computes_what_it_did(tiny, tmp_path):
    torch.manual_seed(0)
    sm = compile_with_heads(tiny, [HeadSpec("a", 2), HeadSpec("b", 3)], norm="follow", input_shape=(2, 3, 8, 8))
    with torch.no_grad():
        for logits in sm.arch_parameters():
            logits.normal_()
    sm.set_mode("gumbel", tau=0.5)
    path = tmp_path / "sm.pt"
    save_supermodel(sm, path)
    loaded = automtl.load_supermodel(path)
    assert loaded.graph[loaded.graph.inputs[0]].out_shape == torch.Size([2, 3, 8, 8])
    x = torch.randn(2, 3, 8, 8)
    sm.eval(), loaded.eval()
    policy = automtl.Policy.argmax(sm)
    sm.set_mode("fixed", policy=policy)
    loaded.set_mode("fixed", policy=automtl.Policy.argmax(loaded))
    with torch.no_grad():
        a, b = sm(x), loaded(x)
    assert all(torch.equal(a[t], b[t]) for t in ("a", "b"))
    with pytest.raises(CheckpointError, match="was not compiled from prototxt with HeadSpec heads"):
        save_supermodel(automtl.compile(TINY, ["a"]), tmp_path / "no.pt")


def test_wrong_and_tampered_files_are_refused(tiny, tmp_path):
    sm = compile_with_heads(tiny, [HeadSpec("seg", 2)])
    good = tmp_path / "good.pt"
    save_supermodel(sm, good)
    payload = torch.load(good, weights_only=True)

    def write(name, obj):
        path = tmp_path / name
        torch.save(obj, path)
        return path

    cases = {
        "not automtl": ({"state_dict": {}}, "not an automtl supermodel file"),
        "newer": ({**payload, "version": 2}, "supermodel file version 2; this automtl reads version 1"),
        "bad tasks": ({**payload, "tasks": [{"name": "seg", "channels": "2"}]}, "the task list is missing or malformed"),
        "bad options": ({**payload, "options": {"norm": "shared", "input_shape": [1, 3, 8, 8]}}, "compile options are missing"),
        "edited prototxt": ({**payload, "prototxt": TINY.replace("num_output: 6", "num_output: 7")}, "its weights do not fit"),
        "broken prototxt": ({**payload, "prototxt": TINY + "layer {"}, "its stored backbone does not compile"),
        "missing weight": ({**payload, "state_dict": {k: v for k, v in payload["state_dict"].items() if "c2" not in k}}, "its weights do not fit"),
    }
    for name, (obj, message) in cases.items():
        with pytest.raises(CheckpointError, match=message):
            automtl.load_supermodel(write(name.replace(" ", "_") + ".pt", obj))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        automtl.load_supermodel(truncated)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):  # pickled code is never run
        automtl.load_supermodel(write("code.pt", {**payload, "extra": HeadSpec("x", 1)}))


def test_user_errors_exit_2_with_one_line_on_stderr(tiny, tmp_path, capsys):
    custom = tmp_path / "custom.prototxt"
    custom.write_text(TINY + 'layer { name: "up" type: "PriorBox" bottom: "c2" top: "up" }\n')
    cases = [
        (["compile", "nowhere_net", "--task", "a:1"], "'nowhere_net' is neither a prototxt file nor a shipped backbone"),
        (["compile", tiny, "--task", "seg"], "--task 'seg': write NAME:CHANNELS, e.g. --task seg:19"),
        (["compile", tiny, "--task", "seg:x"], "the channel count 'x' is not an integer"),
        (["compile", tiny, "--task", "seg:0"], "the channel count must be at least 1"),
        (["compile", tiny, "--task", "a:1", "--task", "a:2"], "--task names must be unique; a is given twice"),
        (["compile", tiny, "--task", "1a:1"], "task name '1a' is not usable"),
        (["compile", str(custom), "--task", "a:1"], "1 layer(s) of types automtl cannot map to torch ops: PriorBox (1: 'up' (line 9))"),
        (["compile", tiny, "--task", "a:1", "--input-shape", "1,3,x"], "--input-shape '1,3,x': write comma-separated integers"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("automtl compile: error: ") and message in err, err
        assert err.count("\n") == 1 and "Traceback" not in err


def test_input_shape_compiles_a_training_net(tmp_path, capsys):
    net = tmp_path / "train_val.prototxt"
    net.write_text(
        'layer { name: "data" type: "Data" top: "data" top: "label" data_param { source: "db" batch_size: 8 } }\n'
        + TINY.split("\n", 3)[3]
        + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "c2" bottom: "label" top: "loss" }\n'
    )
    assert main(["compile", str(net), "--task", "a:2"]) == 2
    assert "give the input shape" in capsys.readouterr().err
    assert main(["compile", str(net), "--task", "a:2", "--input-shape", "1,3,16,16"]) == 0
    assert "input 1x3x16x16 -> backbone output 1x6x8x8" in capsys.readouterr().out


def test_help_documents_the_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["compile", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for expected in ("NAME:CHANNELS", "--out PATH", "--input-shape N,C,H,W", "--norm {follow,per_task,search}",
                     "deeplab_resnet34, resnet18", "automtl.load_supermodel", "Exit status: 0 on success, 2"):
        assert expected in text, expected


def test_head_specs():
    assert HeadSpec("a", 3).build((1, 8, 5, 5)).__class__ is torch.nn.Conv2d
    assert isinstance(HeadSpec("a", 3).build((1, 8)), torch.nn.Linear)
    with pytest.raises(ConfigError, match="must be a positive integer"):
        HeadSpec("a", 0)


def test_the_console_script(tiny, tmp_path):
    exe = shutil.which("automtl")
    assert exe is not None, "the automtl console script is not installed (pip install -e .)"
    out = tmp_path / "s.pt"
    done = subprocess.run([exe, "compile", tiny, "--task", "seg:3", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "searchable operators: 2 (2 Conv2d)" in done.stdout and out.exists()
    bad = subprocess.run([exe, "compile", tiny, "--task", "seg"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith("automtl compile: error: --task 'seg'") and not bad.stdout


DETECTION = TINY + (
    'layer { name: "prior" type: "PriorBox" bottom: "c2" bottom: "data" top: "prior" prior_box_param { min_size: 30 } }\n'
    'layer { name: "c3" type: "Convolution" bottom: "c2" top: "c3" convolution_param { num_output: 2 kernel_size: 1 } }\n'
)


def test_until_cuts_the_net_and_the_file_rebuilds_the_cut_net(tmp_path, capsys):
    det = tmp_path / "det.prototxt"
    det.write_text(DETECTION)
    assert main(["compile", str(det), "--task", "seg:5"]) == 2  # PriorBox: the error names the cut
    assert "cut it at blob 'c2' (automtl.compile(path, tasks, output=\"c2\"), or `automtl compile FILE --until c2`)" in capsys.readouterr().err
    out = tmp_path / "cut.pt"
    assert main(["compile", str(det), "--task", "seg:5", "--until", "c2", "--out", str(out)]) == 0
    assert "input 1x3x8x8 -> backbone output 1x6x4x4" in capsys.readouterr().out
    assert torch.load(out, weights_only=True)["options"] == {"norm": "follow", "input_shape": [1, 3, 8, 8], "output": ["c2"]}
    sm = automtl.load_supermodel(out)
    assert sm.searchable_nodes == ["c1", "c2"]
    assert main(["compile", str(det), "--task", "seg:5", "--until", "c9"]) == 2
    assert "output 'c9' is not a blob of the net (did you mean" in capsys.readouterr().err


def test_weights_start_the_supermodel_from_a_caffemodel(tiny, tmp_path, capsys):
    from automtl.compiler.prototxt import load_prototxt, write_caffemodel

    trained = load_prototxt(TINY)
    with torch.no_grad():
        for p in trained.parameters():
            p.copy_(torch.randn_like(p))
    weights = tmp_path / "tiny.caffemodel"
    write_caffemodel(trained, weights)
    out = tmp_path / "super.pt"
    assert main(["compile", tiny, "--task", "seg:5", "--weights", str(weights), "--out", str(out)]) == 0
    sm = automtl.load_supermodel(out)  # the weights travel in the file: no .caffemodel needed to rebuild
    assert torch.equal(sm.vcns["c1"].op.weight, trained.c1.weight) and torch.equal(sm.vcns["c2"].op.bias, trained.c2.bias)
    capsys.readouterr()
    assert main(["compile", tiny, "--task", "seg:5", "--weights", str(tmp_path / "missing.caffemodel")]) == 2
    assert "missing.caffemodel: cannot read the weights file" in capsys.readouterr().err


def test_until_names_the_one_blob_the_heads_read(tiny, capsys):
    assert main(["compile", tiny, "--task", "seg:5", "--until", "c1", "--until", "c2"]) == 2
    assert "--until is given 2 times (c1, c2); the task heads read one blob, so name one" in capsys.readouterr().err
