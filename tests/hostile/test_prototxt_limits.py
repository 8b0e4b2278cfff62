"""Each input the fuzzers found that escaped as a raw exception (or could exhaust memory or
the stack) is now refused with an automtl error saying what and where; these pin the exact
messages. Also: the size limits are exact (a layer at the limit builds, one value more does
not), and nothing is allocated before a limit is checked."""

import pytest
import torch
from torch import nn

import automtl
from automtl.compiler.prototxt import limits, load_prototxt
from automtl.errors import CompileError, InvalidLayerError, PrototxtError, PrototxtSyntaxError, ShapeMismatchError


def net(body: str, shape: str = "1 3 8 8") -> str:
    dims = " ".join(f"dim: {d}" for d in shape.split())
    return f'name: "t"\ninput: "data"\ninput_shape {{ {dims} }}\n' + body


def conv(settings: str = "num_output: 2 kernel_size: 1", extra: str = "") -> str:
    return f'layer {{ name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param {{ {settings} }}{extra} }}\n'


def refused(text, error):
    with pytest.raises(error) as info:
        load_prototxt(text)
    return str(info.value)


def test_a_silence_layer_with_a_top():  # was: KeyError
    text = net(conv() + 'layer { name: "s" type: "Silence" bottom: "c" top: "oops" }\n')
    assert refused(text, InvalidLayerError) == (
        "<prototxt text>: layer 's' (Silence, line 5): a Silence layer only consumes its bottoms, but it declares "
        "top(s) 'oops'; remove them"
    )


def test_a_stored_weight_of_the_wrong_size_in_a_transposed_inner_product():  # was: torch RuntimeError
    text = net('layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 3 '
               "transpose: true }\n  blobs { shape { dim: 1 } data: 2 } }\n")
    assert refused(text, ShapeMismatchError) == (
        "<prototxt text>: layer 'fc' (InnerProduct, line 4): the stored weight has 1 values [1], the layer needs "
        "576 [3, 192]; fix the layer's settings or the blob"
    )


@pytest.mark.parametrize(
    "blob, message",
    [
        ("blobs { shape { dim: 2 dim: 3 dim: 1 dim: 1 } data: 1 data: 2 }",
         "a stored blob of shape [2, 3, 1, 1] should hold 6 values, it holds 2; fix its shape or its data"),
        ("blobs { shape { dim: -2 dim: 3 } }", "a stored blob has the shape [-2, 3], with a negative dimension; fix its shape"),
        ("blobs { data: 5 }", "a stored blob of shape [0, 0, 0, 0] should hold 0 values, it holds 1; fix its shape or its data"),
    ],
)
def test_a_stored_blob_whose_shape_does_not_hold_its_values(blob, message):  # was: torch RuntimeError
    assert refused(net(conv(extra="\n  " + blob)), ShapeMismatchError) == f"<prototxt text>: layer 'c' (Convolution, line 4): {message}"


def test_a_negative_batch_norm_eps():  # was: ValueError from torch at the first forward pass
    text = net('layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" batch_norm_param { eps: -1 } }\n')
    assert refused(text, InvalidLayerError) == "<prototxt text>: layer 'bn' (BatchNorm, line 4): eps must be a finite number, 0 or more; got -1.0"


@pytest.mark.parametrize(
    "filler, message",
    [
        ('type: "gaussian" std: nan', "the gaussian filler's std must be a finite number, got nan"),
        ('type: "gaussian" std: -1', "the gaussian filler's std must be 0 or more, got -1"),
        ('type: "uniform" min: 1 max: 0', "the uniform filler's min 1 is above its max 0"),
        ('type: "uniform" min: -inf', "the uniform filler's min must be a finite number, got -inf"),
        ('type: "constant" value: inf', "the constant filler's value must be a finite number, got inf"),
    ],
)
def test_filler_settings_torch_would_reject(filler, message):  # was: torch RuntimeError
    text = net(conv(f"num_output: 2 kernel_size: 1 weight_filler {{ {filler} }}"))
    assert refused(text, InvalidLayerError) == f"<prototxt text>: layer 'c' (Convolution, line 4): {message}"


@pytest.mark.parametrize("layer_type", ["Foo", "Convolution"])
def test_blocks_nested_thousands_deep(layer_type):  # was: RecursionError inside protobuf's parser
    text = net(f'layer {{ name: "x" type: "{layer_type}"\n  foo_param ' + "{ a " * 3000 + "}" * 3000 + " }\n")
    # the layer's brace is level 1, so the 64th brace of line 5 is level 65: column 12 + 63 * 4 + 1
    assert refused(text, PrototxtSyntaxError) == (
        "<prototxt text>:5:265: blocks are nested more than 64 deep; a Caffe net nests a few levels "
        "(net > layer > settings > filler). Check the braces"
    )


def test_nesting_inside_strings_and_comments_does_not_count():
    text = net(conv()).replace('name: "t"', 'name: "' + "{" * 100 + '"  # ' + "{" * 100)
    assert load_prototxt(text).output_shapes == ((1, 2, 8, 8),)


def test_a_layer_with_billions_of_parameters_is_refused_before_allocating(monkeypatch):
    allocated = []
    monkeypatch.setattr(nn.Conv2d, "__init__", lambda *a, **k: allocated.append(a) or nn.Module.__init__(a[0]))
    text = net(conv("num_output: 4294967295 kernel_size: 3"))
    assert refused(text, InvalidLayerError) == (
        "<prototxt text>: layer 'c' (Convolution, line 4): would have 120,259,084,260 parameters, more than a layer "
        "may (268,435,456: 1 GiB of float32); check num_output, the kernel size and the input channels"
    )
    assert allocated == []


def test_the_parameter_limits_are_exact(monkeypatch):
    text = net(conv("num_output: 4 kernel_size: 3") + conv("num_output: 4 kernel_size: 3").replace('"c"', '"d"').replace('bottom: "data"', 'bottom: "c"'))
    first, second = 4 * 3 * 9 + 4, 4 * 4 * 9 + 4  # weights and biases: 112, 148
    monkeypatch.setattr(limits, "MAX_LAYER_PARAMETERS", second)
    monkeypatch.setattr(limits, "MAX_NET_PARAMETERS", first + second)
    assert sum(p.numel() for p in load_prototxt(text).parameters()) == first + second
    monkeypatch.setattr(limits, "MAX_NET_PARAMETERS", first + second - 1)
    assert refused(text, InvalidLayerError) == (
        "<prototxt text>: layer 'd' (Convolution, line 5): brings the net to 260 parameters, more than a net may "
        "(259: 4 GiB of float32); check num_output and the kernel sizes"
    )
    monkeypatch.setattr(limits, "MAX_LAYER_PARAMETERS", second - 1)
    assert "would have 148 parameters, more than a layer may (147:" in refused(text, InvalidLayerError)


@pytest.mark.parametrize(
    "shape, message",
    [
        ("1 3 100000 100000", "would hold 30,000,000,000 values per sample, more than automtl allows (268,435,456: 1 GiB "
                              "of float32 per image for one activation), so a forward pass would exhaust memory"),
        ("100000 3 100 100", "would hold 3,000,000,000 values, more than a blob may (2,147,483,647, Caffe's limit)"),
    ],
)
def test_an_input_too_large_to_run(shape, message):
    text = net('layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n', shape)
    assert refused(text, PrototxtError) == f"<prototxt text>: the input 'data' [{shape.replace(' ', ', ')}] {message}; use a smaller input shape"


def test_an_input_too_large_for_compile_is_refused_before_allocating_it():
    text = net(conv(), "1 3 30000 30000")
    with pytest.raises(PrototxtError, match="the input 'data' \\[1, 3, 30000, 30000\\] would hold 2,700,000,000 values per sample"):
        automtl.compile(text, ["a", "b"])


def test_a_layer_whose_output_would_be_too_large():
    text = net('layer { name: "t" type: "Tile" bottom: "data" top: "t" tile_param { axis: 2 tiles: 2147483647 } }\n')
    assert refused(text, InvalidLayerError) == (
        "<prototxt text>: layer 't' (Tile, line 4): its output 't' [1, 3, 17179869176, 8] would hold 412,316,860,224 "
        "values per sample, more than automtl allows (268,435,456: 1 GiB of float32 per image for one activation), "
        "so a forward pass would exhaust memory; fix the layer's settings"
    )


def test_the_kernel_hint_names_real_fields():  # said "kernel_size_h and kernel_size_w"
    assert refused(net(conv("num_output: 2")), InvalidLayerError) == (
        "<prototxt text>: layer 'c' (Convolution, line 4): kernel_size is not given (write kernel_size: N, or kernel_h and kernel_w)"
    )


def test_an_operator_with_an_empty_output_is_refused_by_compile():  # was: torch RuntimeError from the skip
    net_ = nn.Sequential(nn.Conv2d(3, 3, 3, stride=3), nn.ConvTranspose2d(3, 2, 2, stride=2, padding=1))
    assert net_(torch.zeros(2, 3, 3, 3)).shape == (2, 2, 0, 0)  # torch runs it, on nothing
    with pytest.raises(CompileError) as info:
        automtl.compile(net_, ["a", "b"], example_input=torch.zeros(2, 3, 3, 3))
    assert str(info.value) == (
        "node '_1' (ConvTranspose2d) has an empty output [2, 2, 0, 0] for the example input, so there is nothing for "
        "a task to share or skip. Use a larger example input, or change the layers before it (a kernel, stride or "
        "padding too large for its input)"
    )
