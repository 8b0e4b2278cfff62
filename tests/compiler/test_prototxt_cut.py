"""Cut points (output= / --until): the layers the named blobs do not need are dropped before any
check, the error for an unsupported layer names the cut that avoids it, and an unknown blob
name is an error listing close names."""

import pytest
import torch

import automtl
from automtl.compiler.prototxt import load_prototxt, parse_prototxt
from automtl.errors import CompileError, PrototxtError, UnknownFieldError, UnsupportedLayerError

# a detection-style net: a backbone, then an SSD PriorBox (with parameters the schema does not
# know) and a Faster R-CNN proposal layer reading a second declared input
HEAD = (
    'name: "det"\ninput: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
    'input: "im_info"\ninput_shape { dim: 1 dim: 3 }\n'
)


def conv(name, bottom, top, extra=""):
    return (
        f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{top}" '
        f"convolution_param {{ num_output: 4 kernel_size: 3 pad: 1 {extra} }} }}\n"
    )


BACKBONE = (
    conv("conv1", "data", "conv1")
    + 'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }\n'
    + conv("conv2", "conv1", "conv2")
    + 'layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n'
)
HEADS = (
    'layer { name: "prior" type: "PriorBox" bottom: "pool2" bottom: "data" top: "prior"\n'
    "  prior_box_param { min_size: 30 aspect_ratio: 2 flip: true } }\n"
    'layer { name: "proposal" type: "Python" bottom: "pool2" bottom: "im_info" top: "rois"\n'
    '  python_param { module: "rpn.proposal_layer" layer: "ProposalLayer" } }\n'
)
NET = HEAD + BACKBONE + HEADS


def test_without_a_cut_the_error_suggests_the_cut_that_avoids_the_unsupported_layers():
    with pytest.raises(UnsupportedLayerError) as err:
        load_prototxt(NET)
    message = str(err.value)
    assert err.value.layers == [("prior", "PriorBox"), ("proposal", "Python")]
    assert (
        "To compile the part of the net before them, cut it at blob 'pool2' (automtl.compile(path, tasks, "
        "output=\"pool2\"), or `automtl compile FILE --until pool2`); or replace them" in message
    )


def test_a_cut_drops_everything_after_it_before_any_check():
    gm = load_prototxt(NET, output="pool2")
    assert [n for n, _ in gm.named_children()] == ["conv1", "conv2", "pool2"]
    assert gm.output_names == ("pool2",) and gm.output_shapes == ((1, 4, 4, 4),)
    assert gm.input_shape == (1, 3, 8, 8)  # im_info, read only by the proposal layer, is gone too
    x = torch.randn(1, 3, 8, 8)
    gm.eval()
    with torch.no_grad():
        expected = torch.max_pool2d(gm.conv2(torch.relu(gm.conv1(x))), 2, 2)
        assert torch.equal(gm(x), expected)
    spec = parse_prototxt(NET, output="pool2")
    assert [l.name for l in spec.cut] == ["prior", "proposal"] and spec.outputs == ("pool2",)


def test_a_blob_means_its_last_value_and_several_outputs_come_in_the_order_named():
    # conv1 is updated in place by relu1: the cut at conv1 includes the ReLU, as Caffe's net.blobs["conv1"]
    gm = load_prototxt(NET, output=["conv2", "conv1"])
    assert gm.output_names == ("conv2", "conv1")
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        conv2, conv1 = gm(x)
        assert torch.equal(conv1, torch.relu(gm.conv1(x))) and (conv1 >= 0).all()
        assert torch.equal(conv2, gm.conv2(conv1))
    assert "pool2" not in dict(gm.named_children())  # not needed for either output


def test_side_branches_the_outputs_do_not_need_are_dropped():
    text = HEAD.split("input: \"im_info\"")[0] + BACKBONE + conv("aux", "conv1", "aux") + conv("conv3", "pool2", "conv3")
    gm = load_prototxt(text, output="conv3")
    assert [n for n, _ in gm.named_children()] == ["conv1", "conv2", "pool2", "conv3"]


def test_an_unknown_blob_is_an_error_listing_close_names():
    with pytest.raises(PrototxtError) as err:
        load_prototxt(NET, output="conv3")
    assert str(err.value) == (
        "<prototxt text>: output 'conv3' is not a blob of the net (did you mean 'conv2' or 'conv1'?). A blob is the "
        "top of a layer (or a declared input); name one of them"
    )
    with pytest.raises(PrototxtError, match="output 'relu1' is not a blob of the net: 'relu1' is a layer, whose top"):
        load_prototxt(NET, output="relu1")
    with pytest.raises(PrototxtError, match="output 'data' is the net's input; cut after at least one layer"):
        load_prototxt(NET, output="data")
    with pytest.raises(PrototxtError, match="names 'conv1' twice"):
        load_prototxt(NET, output=["conv1", "conv1"])
    with pytest.raises(PrototxtError, match="a blob name or a list of them"):
        load_prototxt(NET, output=3)


def test_a_cut_that_keeps_an_unsupported_layer_still_names_it_and_the_cut_before_it():
    with pytest.raises(UnsupportedLayerError) as err:
        load_prototxt(NET, output="prior")
    assert err.value.layers == [("prior", "PriorBox")]
    assert "cut it at blob 'pool2'" in str(err.value)


def test_an_unknown_field_in_a_kept_layer_is_still_reported_where_it_is():
    text = HEAD + conv("conv1", "data", "conv1", "grup: 2") + HEADS.replace("pool2", "conv1")
    with pytest.raises(UnknownFieldError, match=r'^<prototxt text>:6:\d+: ConvolutionParameter has no field "grup"'):
        load_prototxt(text, output="conv1")


def test_no_suggestion_when_nothing_before_the_layer_avoids_it():
    text = HEAD + 'layer { name: "aug" type: "Python" bottom: "data" top: "aug" }\n' + conv("c", "aug", "c")
    with pytest.raises(UnsupportedLayerError) as err:
        load_prototxt(text)
    assert "cut it at" not in str(err.value) and ". Replace them with supported layers" in str(err.value)


def test_a_training_net_cut_before_its_loss_and_the_train_phase_blobs():
    text = (
        'name: "train"\n'
        'layer { name: "d" type: "Data" top: "data" top: "label" include { phase: TRAIN } }\n'
        'layer { name: "d" type: "Data" top: "data" top: "label" include { phase: TEST } }\n'
        + conv("c", "data", "c")
        + 'layer { name: "train_only" type: "ReLU" bottom: "c" top: "t" include { phase: TRAIN } }\n'
        + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "c" bottom: "label" top: "loss" }\n'
    )
    gm = load_prototxt(text, input_shape=(1, 3, 8, 8), output="c")
    assert gm.output_names == ("c",)
    with pytest.raises(PrototxtError, match="output 't' is produced only by layer 'train_only' .*which the TEST phase leaves out"):
        load_prototxt(text, input_shape=(1, 3, 8, 8), output="t")
    with pytest.raises(PrototxtError, match="output 'loss' is the top of layer 'loss' .*a training-only layer"):
        load_prototxt(text, input_shape=(1, 3, 8, 8), output="loss")


def test_compile_takes_output_for_prototxt_only():
    sm = automtl.compile(NET, ["a", "b"], output="pool2")
    assert sm.searchable_nodes == ["conv1", "conv2"]
    with pytest.raises(CompileError, match="output= and weights= apply to prototxt backbones"):
        automtl.compile(torch.nn.Conv2d(3, 4, 3), ["a"], torch.randn(1, 3, 8, 8), output="x")
