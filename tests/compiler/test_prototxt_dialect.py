"""The AutoMTL project's dialect (zhanglijun95/AutoMTL, proto/pytorch.proto): every field that schema
adds to Caffe's parses and means what it meant there, and the input-alias convention of its
model files is reported (a logged warning and a line in SuperModel.summary())."""

import logging

import pytest
import torch
import torch.nn.functional as F

import automtl
from automtl.compiler.prototxt import load_prototxt, parse_prototxt
from automtl.compiler.prototxt.schema import AUTOMTL_DIALECT_FIELDS, LayerParameter, V1LayerParameter
from automtl.errors import PrototxtSyntaxError

HEAD = 'name: "d"\ninput: "data"\ninput_shape { dim: 2 dim: 3 dim: 8 dim: 8 }\n'


def layer(name, type_, bottom, top, body=""):
    return f'layer {{ name: "{name}" type: "{type_}" bottom: "{bottom}" top: "{top}" {body} }}\n'


CONV = layer("conv", "Convolution", "data", "conv", "convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 1 dilation: 1 group: 1 bias_term: false }")
POOL = layer("pool", "Pooling", "conv", "pool", "pooling_param { pool: MAX kernel_size: 3 stride: 2 }")


def test_the_schema_has_every_field_the_automtl_dialect_adds_to_caffes():
    # the fields of proto/pytorch.proto that Caffe's caffe.proto lacks, or has with other names
    added = {
        "relu_param": ["inplace"], "elu_param": ["inplace"], "dropout_param": ["inplace"],
        "batch_norm_param": ["track_running_stats", "momentum", "eps", "affine"],
    }
    for field, names in added.items():
        descriptor = getattr(LayerParameter(), field).DESCRIPTOR
        assert set(names) <= set(descriptor.fields_by_name), field
    assert {f: set(n) for f, n in AUTOMTL_DIALECT_FIELDS.items()} == {
        "relu_param": {"inplace"}, "elu_param": {"inplace"}, "dropout_param": {"inplace"},
        "batch_norm_param": {"track_running_stats", "affine", "momentum"},
    }
    assert "layer" in V1LayerParameter.DESCRIPTOR.fields_by_name  # V0 layers, as in both schemas


def test_inplace_fields_parse_and_change_no_value():
    body = (
        CONV
        + layer("relu", "ReLU", "conv", "conv", "relu_param { inplace: true }")
        + layer("elu", "ELU", "conv", "elu", "elu_param { alpha: 0.5 inplace: true }")
        + layer("drop", "Dropout", "elu", "drop", "dropout_param { dropout_ratio: 0.3 inplace: false }")
    )
    gm = load_prototxt(HEAD + body)
    gm.eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(gm(x), F.elu(F.relu(gm.conv(x)), alpha=0.5))
    assert x.min() < 0  # the input itself is untouched
    assert parse_prototxt(HEAD + body).automtl_dialect


def test_a_dialect_file_pools_with_floor_rounding_unless_it_says_otherwise():
    # 8x8, kernel 3, stride 2: Caffe's default CEIL gives 4x4, the dialect's default FLOOR 3x3
    caffe = load_prototxt(HEAD + CONV + POOL)
    assert caffe.output_shapes == ((2, 4, 4, 4),) and not parse_prototxt(HEAD + CONV + POOL).automtl_dialect
    bn = layer("bn", "BatchNorm", "conv", "conv", "batch_norm_param { track_running_stats: true eps: 1e-05 momentum: 0.1 }")
    dialect = load_prototxt(HEAD + CONV + bn + POOL)
    assert dialect.output_shapes == ((2, 4, 3, 3),) and not dialect.pool.ceil_mode
    explicit = load_prototxt(HEAD + CONV + bn + POOL.replace("stride: 2", "stride: 2 round_mode: CEIL"))
    assert explicit.output_shapes == ((2, 4, 4, 4),)


def test_a_dialect_batchnorm_is_pytorchs():
    bn = layer("bn", "BatchNorm", "data", "bn", "batch_norm_param { track_running_stats: false momentum: 0.3 eps: 0.001 }")
    gm = load_prototxt(HEAD + bn)
    gm.eval()
    assert gm.bn.affine and gm.bn.momentum == pytest.approx(0.3) and not gm.bn.track_running_stats
    x = torch.randn(2, 3, 8, 8) * 2 + 1
    with torch.no_grad():  # no running statistics: the batch's, in eval mode too (PyTorch's meaning)
        expected = F.batch_norm(x, None, None, gm.bn.weight, gm.bn.bias, True, 0.0, 1e-3)
        assert torch.allclose(gm(x), expected, atol=1e-6)


def test_v0_layers_parse_and_are_named_as_such():
    text = 'name: "old"\ninput: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\ninput_dim: 8\nlayers {\n  layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 }\n  bottom: "data"\n  top: "conv1"\n}\n'
    with pytest.raises(PrototxtSyntaxError) as err:
        load_prototxt(text)
    assert str(err.value) == (
        "<prototxt text>:7: layer 'conv1' is written in the V0 format (`layers { layer { ... } }`, before 2014), which "
        "automtl does not build; upgrade the file with Caffe's tools/upgrade_net_proto_text"
    )


def test_the_input_alias_is_a_warning_and_a_line_of_the_summary(caplog):
    text = 'input: "blob1"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\ninput_dim: 8\n' + CONV
    note = (
        "<prototxt text>: the declared input 'blob1' is read by no layer, and 'data' is read (first by layer 'conv' "
        "(Convolution, line 6)) but never produced: 'data' is taken as the input (the AutoMTL model files' convention). "
        "If a layer should produce it, fix that layer's top"
    )
    with caplog.at_level(logging.WARNING, logger="automtl.prototxt"):
        sm = automtl.compile(text, ["a", "b"])
    assert note in caplog.text
    assert sm.compile_notes == (note,) and sm.summary().splitlines()[-1] == f"note: {note}"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="automtl.prototxt"):
        plain = automtl.compile(HEAD + CONV, ["a"])  # an input that is read: no guess, no note
    assert "taken as the input" not in caplog.text and not plain.compile_notes
    assert not plain.summary().splitlines()[-1].startswith("note:")
