"""Caffe's .caffemodel weights: read by layer name (V1 and V2 blob shapes, Caffe's BatchNorm scale
factor), shapes checked with errors naming the layer, and written by write_caffemodel so that a
net compiled from a file computes what the net it was written from computes."""

import logging

import pytest
import torch

import automtl
from automtl.compiler.prototxt import load_prototxt, read_caffemodel, write_caffemodel
from automtl.compiler.prototxt.schema import NetParameter
from automtl.errors import PrototxtError, ShapeMismatchError
from automtl.policy import Policy

HEAD = 'name: "w"\ninput: "data"\ninput_shape { dim: 2 dim: 3 dim: 8 dim: 8 }\n'


def layer(name, type_, bottoms, tops, body=""):
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{type_}" {b} {t} {body} }}\n'


# one of every layer with parameters, in each of their forms
NET = HEAD + "".join(
    [
        layer("conv1", "Convolution", ["data"], ["conv1"], "convolution_param { num_output: 6 kernel_size: 3 pad: 1 }"),
        layer("bn1", "BatchNorm", ["conv1"], ["conv1"]),
        layer("scale1", "Scale", ["conv1"], ["conv1"], "scale_param { bias_term: true }"),  # fused into bn1
        layer("prelu1", "PReLU", ["conv1"], ["conv1"]),
        layer("dw", "ConvolutionDepthwise", ["conv1"], ["dw"], "convolution_param { num_output: 6 kernel_size: 3 pad: 1 stride: 2 }"),
        layer("bn_psp", "BN", ["dw"], ["dw"], "bn_param { slope_filler { type: 'constant' value: 1 } }"),
        layer("bn_segnet", "BN", ["dw"], ["dw"], "bn_param { bn_mode: INFERENCE }"),
        layer("norm", "Normalize", ["dw"], ["norm"], "norm_param { across_spatial: false channel_shared: false }"),
        layer("scale2", "Scale", ["norm"], ["norm"]),  # no bias: stays a Scale module
        layer("bias2", "Bias", ["norm"], ["norm"]),
        layer("up", "Deconvolution", ["norm"], ["up"], "convolution_param { num_output: 4 kernel_size: 2 stride: 2 }"),
        layer("dialect_bn", "BatchNorm", ["up"], ["up"], "batch_norm_param { track_running_stats: true }"),
        layer("prelu2", "PReLU", ["up"], ["up"], "prelu_param { channel_shared: true }"),
        layer("fc1", "InnerProduct", ["up"], ["fc1"], "inner_product_param { num_output: 5 }"),
        layer("fc2", "InnerProduct", ["fc1"], ["fc2"], "inner_product_param { num_output: 3 transpose: true }"),
    ]
)


def perturbed(gm, seed=0):
    """The net with every parameter and statistic set to random values (variances positive)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(gm.named_parameters()) + list(gm.named_buffers()):
            if t.dtype.is_floating_point:
                values = torch.rand(t.shape, generator=g) + 0.5 if "running_var" in name else torch.randn(t.shape, generator=g)
                t.copy_(values)
    return gm


def test_a_written_caffemodel_loads_into_a_fresh_compile_output_for_output(tmp_path):
    written = perturbed(load_prototxt(NET))
    path = tmp_path / "w.caffemodel"
    write_caffemodel(written, path)
    fresh = load_prototxt(NET, weights=path)
    assert fresh.state_dict().keys() == written.state_dict().keys()
    for key, value in written.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    x = torch.randn(2, 3, 8, 8)
    written.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), written(x))
    untouched = load_prototxt(NET)
    with torch.no_grad():
        assert not torch.allclose(untouched.eval()(x), written(x))  # the weights did change something


def test_the_file_is_in_caffes_layout(tmp_path):
    gm = perturbed(load_prototxt(NET))
    path = tmp_path / "w.caffemodel"
    write_caffemodel(gm, path)
    net = NetParameter()
    net.ParseFromString(path.read_bytes())
    shapes = {l.name: [tuple(b.shape.dim) for b in l.blobs] for l in net.layer}
    assert shapes == {
        "conv1": [(6, 3, 3, 3), (6,)],
        "bn1": [(6,), (6,), (1,)],  # mean, variance, and the scale factor (1: the stored values are the statistics)
        "scale1": [(6,), (6,)],  # the fused Scale keeps its own layer and blobs
        "prelu1": [(6,)],
        "dw": [(6, 1, 3, 3), (6,)],
        "bn_psp": [(1, 6, 1, 1)] * 4,  # slope, bias, mean, variance
        "bn_segnet": [(1, 6, 1, 1)] * 2,  # scale, shift
        "norm": [(6,)],
        "scale2": [(6,)],
        "bias2": [(6,)],
        "up": [(6, 4, 2, 2), (4,)],  # Caffe's Deconvolution layout: in, out, kh, kw
        "dialect_bn": [(4,), (4,), (1,), (4,), (4,)],  # + PyTorch's weight and bias
        "prelu2": [()],  # Caffe stores a shared slope as a 0-axis blob
        "fc1": [(5, 256), (5,)],
        "fc2": [(5, 3), (3,)],  # transpose: true stores in x out
    }
    assert [b for b in net.layer if b.name == "bn1"][0].blobs[2].data == [1.0]
    assert torch.equal(torch.tensor(net.layer[0].blobs[0].data).reshape(6, 3, 3, 3), gm.conv1.weight.detach())


def _blob(message, values, shape=None, legacy=None):
    blob = message.blobs.add()
    if shape is not None:
        blob.shape.dim.extend(shape)
    if legacy is not None:
        blob.num, blob.channels, blob.height, blob.width = legacy
    blob.data.extend(torch.as_tensor(values, dtype=torch.float32).flatten().tolist())
    return blob


def test_v1_layers_and_legacy_4d_shapes_and_the_batchnorm_scale_factor(tmp_path):
    text = HEAD + "".join(
        [
            layer("conv", "Convolution", ["data"], ["conv"], "convolution_param { num_output: 2 kernel_size: 1 }"),
            layer("bn", "BatchNorm", ["conv"], ["conv"]),
            layer("fc", "InnerProduct", ["conv"], ["fc"], "inner_product_param { num_output: 2 }"),
        ]
    )
    w, b = torch.randn(2, 3, 1, 1), torch.randn(2)
    mean, var, fc_w = torch.tensor([1.0, -2.0]), torch.tensor([4.0, 0.5]), torch.randn(2, 128)
    net = NetParameter()
    conv = net.layers.add()  # the V1 format, blobs with num/channels/height/width
    conv.name = "conv"
    _blob(conv, w, legacy=(2, 3, 1, 1))
    _blob(conv, b, legacy=(1, 1, 1, 2))
    bn = net.layers.add()
    bn.name = "bn"
    _blob(bn, mean * 8, legacy=(1, 1, 1, 2))
    _blob(bn, var * 8, legacy=(1, 1, 1, 2))
    _blob(bn, [8.0], legacy=(1, 1, 1, 1))  # Caffe's moving-average normaliser
    fc = net.layers.add()
    fc.name = "fc"
    _blob(fc, fc_w, legacy=(1, 1, 2, 128))  # a V1 weight matrix: 1 x 1 x out x in
    _blob(fc, torch.zeros(2), legacy=(1, 1, 1, 2))
    path = tmp_path / "v1.caffemodel"
    path.write_bytes(net.SerializeToString())
    assert sorted(read_caffemodel(path)) == ["bn", "conv", "fc"]
    gm = load_prototxt(text, weights=str(path))
    assert torch.equal(gm.conv.weight.detach(), w) and torch.equal(gm.conv.bias.detach(), b)
    assert torch.equal(gm.bn.running_mean, mean) and torch.equal(gm.bn.running_var, var)
    assert torch.equal(gm.fc.weight.detach(), fc_w)


def _conv_net(weight_shape, out=4):
    net = NetParameter()
    conv = net.layer.add()
    conv.name, conv.type = "conv", "Convolution"
    _blob(conv, torch.zeros(weight_shape), shape=weight_shape)
    _blob(conv, torch.zeros(out), shape=(out,))
    return net


def test_a_shape_mismatch_names_the_layer_and_both_shapes(tmp_path):
    text = HEAD + layer("conv", "Convolution", ["data"], ["conv"], "convolution_param { num_output: 4 kernel_size: 3 }")
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(_conv_net((4, 3, 1, 9)).SerializeToString())  # as many values, another layout
    with pytest.raises(ShapeMismatchError) as err:
        load_prototxt(text, weights=path)
    assert str(err.value) == (
        "<prototxt text>: layer 'conv' (Convolution, line 4): the stored weight has the shape [4, 3, 1, 9], the layer "
        "needs [4, 3, 3, 3] (as many values, another layout); fix the layer's settings or the blob"
    )
    path.write_bytes(_conv_net((8, 3, 3, 3), out=8).SerializeToString())
    with pytest.raises(ShapeMismatchError, match=r"layer 'conv' \(Convolution, line 4\): the stored weight has 216 values "
                       r"\[8, 3, 3, 3\], the layer needs 108 \[4, 3, 3, 3\]"):
        load_prototxt(text, weights=path)


def test_layers_are_matched_by_name_and_the_ones_without_weights_are_reported(tmp_path, caplog):
    text = HEAD + "".join(
        [
            layer("conv", "Convolution", ["data"], ["conv"], "convolution_param { num_output: 4 kernel_size: 3 }"),
            layer("other", "Convolution", ["conv"], ["other"], "convolution_param { num_output: 2 kernel_size: 1 }"),
        ]
    )
    net = _conv_net((4, 3, 3, 3))
    extra = net.layer.add()  # a layer the prototxt does not have (e.g. a loss's): ignored, as Caffe ignores it
    extra.name = "fc_old"
    _blob(extra, [1.0, 2.0], shape=(2,))
    path = tmp_path / "w.caffemodel"
    path.write_bytes(net.SerializeToString())
    with caplog.at_level(logging.WARNING, logger="automtl.prototxt"):
        gm = load_prototxt(text, weights=path)
    assert torch.count_nonzero(gm.conv.weight) == 0  # from the file
    assert "no weights for 1 layer(s) of <prototxt text> (other); they keep their initial values" in caplog.text


def test_files_that_are_not_caffemodels_are_refused(tmp_path):
    text = HEAD + layer("conv", "Convolution", ["data"], ["conv"], "convolution_param { num_output: 4 kernel_size: 3 }")
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(text)
    with pytest.raises(PrototxtError, match=r"net.prototxt: (not a Caffe .caffemodel|holds no layer weights)"):
        load_prototxt(text, weights=prototxt)
    garbage = tmp_path / "garbage.caffemodel"
    garbage.write_bytes(b"\xff\xff\xff\xff\x0f")
    with pytest.raises(PrototxtError, match="garbage.caffemodel: not a Caffe .caffemodel"):
        load_prototxt(text, weights=garbage)
    h5 = tmp_path / "net.caffemodel.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(16))
    with pytest.raises(PrototxtError, match="an HDF5 file"):
        load_prototxt(text, weights=h5)
    with pytest.raises(PrototxtError, match="nowhere.caffemodel: cannot read the weights file"):
        load_prototxt(text, weights=tmp_path / "nowhere.caffemodel")


def test_compile_with_weights_starts_from_the_trained_backbone(tmp_path):
    trained = perturbed(load_prototxt(NET), seed=3)
    path = tmp_path / "w.caffemodel"
    write_caffemodel(trained, path)
    sm = automtl.compile(NET, ["a", "b"], weights=path)
    sm.set_mode("fixed", policy=Policy.all_shared(sm))  # all shared: the backbone itself
    sm.eval(), trained.eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        out = sm(x)
        assert torch.allclose(out["a"], trained(x), atol=1e-6) and torch.allclose(out["b"], trained(x), atol=1e-6)


def test_write_caffemodel_needs_a_net_built_from_prototxt(tmp_path):
    gm = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1)))
    with pytest.raises(PrototxtError, match="writes nets built by automtl.compiler.prototxt.load_prototxt"):
        write_caffemodel(gm, tmp_path / "x.caffemodel")
    assert not (tmp_path / "x.caffemodel").exists()
