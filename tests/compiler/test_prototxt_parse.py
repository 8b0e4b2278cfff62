"""The prototxt front end reads files, text and shipped names, every input declaration style and
both layer formats, and rejects bad input with errors that say where and what to do."""

import os
import pathlib

import pytest
import torch

import automtl
from automtl.compiler.prototxt import load_prototxt, parse_prototxt, shipped_backbones
from automtl.errors import (
    MissingBottomError,
    MissingInputShapeError,
    PrototxtError,
    PrototxtSyntaxError,
    UnknownFieldError,
    UnsupportedLayerError,
    InvalidLayerError,
)

HEAD = 'name: "t"\ninput: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'


def conv(name, bottom, top, extra=""):
    return (
        f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{top}" '
        f"convolution_param {{ num_output: 4 kernel_size: 3 pad: 1 {extra} }} }}\n"
    )


def relu(name, blob):
    return f'layer {{ name: "{name}" type: "ReLU" bottom: "{blob}" top: "{blob}" }}\n'


# -- sources -------------------------------------------------------------------------------


def test_path_text_pathlike_and_shipped_name_load(tmp_path):
    text = HEAD + conv("c1", "data", "c1") + relu("r1", "c1")
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    for source in (str(path), path, text):
        gm = load_prototxt(source)
        assert gm.net_name == "t" and gm.input_shape == (1, 3, 8, 8) and gm.output_shapes == ((1, 4, 8, 8),)
    for name in ("resnet18", "resnet18.prototxt"):
        assert parse_prototxt(name).name == "resnet18"
    assert set(shipped_backbones()) == {"deeplab_resnet34", "resnet18", "mobilenetv2", "mnasnet"}


def test_an_existing_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
    (tmp_path / "resnet18").write_text(HEAD + conv("only", "data", "only"))
    monkeypatch.chdir(tmp_path)
    assert parse_prototxt("resnet18").name == "t"


def test_unknown_source_names_the_shipped_backbones(tmp_path):
    with pytest.raises(PrototxtError) as err:
        load_prototxt("resnet81")
    assert "'resnet81' is neither a prototxt file nor a shipped backbone (did you mean 'resnet18'?)" in str(err.value)
    assert "deeplab_resnet34, mnasnet, mobilenetv2, resnet18" in str(err.value)
    missing = str(tmp_path / "nowhere" / "net.prototxt")
    with pytest.raises(PrototxtError, match="no such prototxt file"):
        load_prototxt(missing)
    binary = tmp_path / "weights.caffemodel"
    binary.write_bytes(b"\x0a\xff\xfe\x00")
    with pytest.raises(PrototxtError, match="not a text file"):
        load_prototxt(binary)


# -- syntax and schema errors ----------------------------------------------------------------


def test_syntax_error_gives_file_line_and_column(tmp_path):
    path = tmp_path / "broken.prototxt"
    path.write_text(HEAD + 'layer {\n  name: "c"\n  type: "Convolution"\n  bottom: data\n}\n')
    with pytest.raises(PrototxtSyntaxError) as err:
        load_prototxt(path)
    assert str(err.value).startswith(f"{path}:7:11: ")
    assert "Expected string but found: 'data'" in str(err.value)


def test_unknown_field_gives_position_and_suggests_the_field():
    with pytest.raises(UnknownFieldError) as err:
        load_prototxt(HEAD + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c"\n'
                      "  convolution_param { num_output: 4 kernal_size: 3 } }\n")
    assert str(err.value).startswith(
        '<prototxt text>:5:37: ConvolutionParameter has no field "kernal_size" (did you mean "kernel_size"?)'
    )


def test_unknown_enum_value_lists_the_values():
    with pytest.raises(PrototxtSyntaxError) as err:
        load_prototxt(HEAD + 'layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param { pool: MAXX } }')
    assert "has no value named MAXX; the values are MAX, AVE, STOCHASTIC" in str(err.value)
    assert str(err.value).startswith("<prototxt text>:4:")


def test_unsupported_layers_are_all_listed_at_once():
    text = (
        HEAD
        + 'layer { name: "a" type: "Foo" bottom: "data" top: "a" }\n'
        + 'layer { name: "b" type: "Python" bottom: "a" top: "b" python_param { module: "os" layer: "system" '
        + 'param_str: "open(\'pwned\', \'w\')" } }\n'
        + conv("c", "b", "c")
        + 'layer { name: "d" type: "Foo" bottom: "c" top: "d" }\n'
    )
    with pytest.raises(UnsupportedLayerError) as err:
        load_prototxt(text)
    assert err.value.layers == [("a", "Foo"), ("b", "Python"), ("d", "Foo")]
    message = str(err.value)
    assert "3 layer(s) of types automtl cannot map to torch ops: Foo (2: 'a' (line 4), 'd' (line 7)); " in message
    assert "Python (1: 'b' (line 5) [Python code os.system, not run])" in message
    assert "Supported layer types: AbsVal, BN, BNLL, BatchNorm" in message
    assert not os.path.exists("pwned")  # nothing from the file is ever evaluated


def test_custom_layers_with_their_own_fields_are_reported_as_unsupported_layers():
    # SSD's detection layers carry parameter blocks the schema does not know
    text = (
        HEAD
        + 'layer { name: "prior" type: "PriorBox" bottom: "data" top: "prior" prior_box_param { min_size: 30 } }\n'
        + 'layer { name: "det" type: "DetectionOutput" bottom: "prior" top: "det" detection_output_param { num_classes: 2 } }\n'
    )
    with pytest.raises(UnsupportedLayerError) as err:
        load_prototxt(text)
    assert err.value.layers == [("prior", "PriorBox"), ("det", "DetectionOutput")]


def test_a_misspelt_field_in_a_supported_layer_is_still_an_unknown_field():
    text = HEAD + 'layer { name: "up" type: "PriorBox" bottom: "data" top: "up" }\n' + conv("c", "up", "c", "grup: 2")
    with pytest.raises(UnknownFieldError, match='has no field "grup" \\(did you mean "group"\\?\\)'):
        load_prototxt(text)


def test_mixing_layer_formats_is_rejected():
    with pytest.raises(PrototxtSyntaxError, match="mixes `layer {}` and the old `layers {}`"):
        load_prototxt(HEAD + conv("c", "data", "c") + 'layers { name: "r" type: RELU bottom: "c" top: "c" }')


# -- blobs ---------------------------------------------------------------------------------


def test_missing_bottoms_are_all_reported_with_hints():
    text = HEAD + conv("c", "data", "c") + conv("d", "cc", "d") + conv("e", "f", "e") + conv("f", "c", "f")
    with pytest.raises(MissingBottomError) as err:
        load_prototxt(text)
    assert str(err.value) == (
        "<prototxt text>: layer 'd' (Convolution, line 5) reads 'cc', which no layer produces (did you mean 'c'?); "
        "layer 'e' (Convolution, line 6) reads 'f', which only the later layer 'f' (Convolution, line 7) produces "
        "(Caffe runs layers in file order). Every bottom must be the top of an earlier layer or a declared input"
    )


def test_a_top_written_twice_out_of_place_is_rejected():
    with pytest.raises(InvalidLayerError, match="writes top 'c', which is already produced by layer 'c'"):
        load_prototxt(HEAD + conv("c", "data", "c") + conv("d", "data", "c"))


def test_in_place_tops_read_the_latest_value():
    text = HEAD + conv("c", "data", "c") + relu("r", "c") + conv("d", "c", "d") + 'layer { name: "s" type: "Eltwise" bottom: "c" bottom: "d" top: "s" }'
    gm = load_prototxt(text)
    x = torch.randn(1, 3, 8, 8)
    c = torch.relu(gm.c(x))
    assert torch.allclose(gm(x), c + gm.d(c))


def test_net_outputs_are_the_unread_blobs_in_order():
    text = HEAD + conv("a", "data", "a") + conv("b", "data", "b") + conv("c", "a", "c")
    gm = load_prototxt(text)
    assert gm.output_names == ("b", "c")
    out = gm(torch.randn(1, 3, 8, 8))
    assert isinstance(out, tuple) and len(out) == 2
    silenced = text + 'layer { name: "quiet" type: "Silence" bottom: "b" }'
    assert load_prototxt(silenced).output_names == ("c",)


# -- inputs --------------------------------------------------------------------------------

STYLES = {
    "input_dim": 'input: "data"\ninput_dim: 2\ninput_dim: 3\ninput_dim: 8\ninput_dim: 8\n',
    "input_shape": 'input: "data"\ninput_shape { dim: 2 dim: 3 dim: 8 dim: 8 }\n',
    "Input layer": 'layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }\n',
    "MemoryData": 'layer { name: "in" type: "MemoryData" top: "data" top: "label" '
    "memory_data_param { batch_size: 2 channels: 3 height: 8 width: 8 } }\n",
}


@pytest.mark.parametrize("style", list(STYLES))
def test_every_input_declaration_style_builds_the_same_net(style):
    body = conv("c", "data", "c") + relu("r", "c") + 'layer { name: "fc" type: "InnerProduct" bottom: "c" top: "fc" inner_product_param { num_output: 5 } }'
    reference = load_prototxt(STYLES["input_shape"] + body)
    gm = load_prototxt(STYLES[style] + body)
    assert gm.input_shape == (2, 3, 8, 8) and gm.output_shapes == ((2, 5),)
    gm.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(gm(x), reference(x))


def test_the_automtl_dialect_alias_of_the_input():
    # AutoMTL's files declare `input: "blob1"` and their first layer reads "data"
    text = 'input: "blob1"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\ninput_dim: 8\n' + conv("c", "data", "c")
    gm = load_prototxt(text)
    assert [n.name for n in gm.graph.nodes if n.op == "placeholder"] == ["data"]
    assert gm.input_shape == (1, 3, 8, 8)
    # but only when the declared input is unused and exactly one blob is missing
    with pytest.raises(MissingBottomError):
        load_prototxt(text + conv("d", "other", "d"))


def test_missing_input_shapes_say_how_to_give_one():
    with pytest.raises(MissingInputShapeError, match=r"the input 'data' \(`input: \"data\"`\) has no shape"):
        load_prototxt('input: "data"\n' + conv("c", "data", "c"))
    with pytest.raises(MissingInputShapeError, match="the net declares no input, and blob 'data' is read"):
        load_prototxt(conv("c", "data", "c"))
    gm = load_prototxt(conv("c", "data", "c"), input_shape=(1, 3, 5, 5))  # a given shape is enough
    assert gm.output_shapes == ((1, 4, 5, 5),)


def test_input_shape_and_batch_size_override_the_declaration():
    text = HEAD + conv("c", "data", "c")
    assert load_prototxt(text, input_shape=(4, 3, 16, 12)).output_shapes == ((4, 4, 16, 12),)
    assert load_prototxt(text, batch_size=6).input_shape == (6, 3, 8, 8)
    with pytest.raises(MissingInputShapeError, match="must be positive integers"):
        load_prototxt(text, input_shape=(1, 0, 8, 8))


def test_several_inputs_are_rejected():
    text = 'input: "a"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\ninput: "b"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
    with pytest.raises(PrototxtError, match="declares 2 inputs \\('a' \\[1, 3, 8, 8\\], 'b' \\[1, 3, 8, 8\\]\\); automtl compiles"):
        load_prototxt(text + conv("c", "a", "c") + conv("d", "b", "d"))


def test_input_dim_count_must_match():
    with pytest.raises(PrototxtSyntaxError, match="1 input\\(s\\) need 4 input_dim values"):
        load_prototxt('input: "data"\ninput_dim: 1\ninput_dim: 3\n' + conv("c", "data", "c"))


# -- phases, training nets, V1 -------------------------------------------------------------

TRAIN_NET = """
name: "trainer"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { crop_size: 8 } data_param { source: "train_lmdb" batch_size: 64 backend: LMDB } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { crop_size: 8 } data_param { source: "val_lmdb" batch_size: 50 backend: LMDB } }
layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "drop" type: "Dropout" bottom: "c" top: "c" exclude { phase: TEST } }
layer { name: "fc" type: "InnerProduct" bottom: "c" top: "fc" inner_product_param { num_output: 10 } }
layer { name: "accuracy" type: "Accuracy" bottom: "fc" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""


def test_training_nets_are_read_in_the_test_phase_without_losses():
    net = parse_prototxt(TRAIN_NET)
    assert [l.name for l in net.excluded] == ["data", "drop"]
    with pytest.raises(MissingInputShapeError, match=r"crops to 8x8: e\.g\. shape 1,3,8,8"):
        load_prototxt(TRAIN_NET)
    gm = load_prototxt(TRAIN_NET, input_shape=(1, 3, 8, 8))
    assert gm.output_names == ("fc",) and gm.output_shapes == ((1, 10),)
    assert [n for n, _ in gm.named_children()] == ["c", "fc"]


def test_a_layer_reading_labels_is_rejected():
    text = TRAIN_NET.replace('type: "SoftmaxWithLoss"', 'type: "Eltwise"')
    with pytest.raises(PrototxtError, match="reads 'label', the labels of layer 'data' \\(Data, line 5\\)"):
        load_prototxt(text, input_shape=(1, 3, 8, 8))


def test_v1_layers_build_the_same_net_as_the_current_format():
    v1 = (
        'input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\ninput_dim: 8\n'
        'layers { name: "c" type: CONVOLUTION bottom: "data" top: "c" convolution_param { num_output: 4 kernel_size: 3 } }\n'
        'layers { name: "r" type: RELU bottom: "c" top: "c" }\n'
        'layers { name: "p" type: POOLING bottom: "c" top: "p" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n'
        'layers { name: "fc" type: INNER_PRODUCT bottom: "p" top: "fc" inner_product_param { num_output: 3 } }\n'
        'layers { name: "prob" type: SOFTMAX bottom: "fc" top: "prob" }\n'
    )
    v2 = (
        HEAD
        + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 4 kernel_size: 3 } }\n'
        + relu("r", "c")
        + 'layer { name: "p" type: "Pooling" bottom: "c" top: "p" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n'
        + 'layer { name: "fc" type: "InnerProduct" bottom: "p" top: "fc" inner_product_param { num_output: 3 } }\n'
        + 'layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }\n'
    )
    a, b = load_prototxt(v1), load_prototxt(v2)
    assert [l.type for l in parse_prototxt(v1).layers] == ["Convolution", "ReLU", "Pooling", "InnerProduct", "Softmax"]
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(a(x), b(x))


# -- names ---------------------------------------------------------------------------------


def test_module_and_node_names_come_from_layer_names():
    text = (
        HEAD
        + conv("conv1/7x7_s2", "data", "a")
        + conv("1x1", "a", "b")
        + conv("class", "b", "c")
        + conv("conv1_7x7_s2", "c", "d")
        + conv("training", "d", "e")
    )
    gm = load_prototxt(text)
    assert [n for n, _ in gm.named_children()] == ["conv1_7x7_s2", "_1x1", "class_", "conv1_7x7_s2_1", "training_"]
    assert [n.name for n in gm.graph.nodes if n.op == "call_module"] == [
        "conv1_7x7_s2", "_1x1", "class_", "conv1_7x7_s2_1", "training_"
    ]


def test_compile_accepts_prototxt_text_paths_and_names(tmp_path):
    text = HEAD + conv("c1", "data", "c1") + relu("r1", "c1") + conv("c2", "c1", "c2")
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    for source in (text, str(path), pathlib.Path(path)):
        sm = automtl.compile(source, ["a", "b"])
        assert sm.searchable_nodes == ["c1", "c2"] and sm.backbone_name == "t"
        assert sm.graph[sm.graph.inputs[0]].out_shape == torch.Size([1, 3, 8, 8])
    sm = automtl.compile(text, ["a"], torch.randn(2, 3, 6, 6))
    assert {k: v.shape for k, v in sm(torch.randn(2, 3, 6, 6)).items()} == {"a": torch.Size([2, 4, 6, 6])}
    with pytest.raises(automtl.errors.CompileError, match="example_input must be a torch.Tensor"):
        automtl.compile(text, ["a"], [1, 3, 6, 6])
