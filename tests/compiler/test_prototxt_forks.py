"""Layers of widespread Caffe forks, each checked against a hand computation of the fork's own
definition: ConvolutionDepthwise, ShuffleChannel, BN (SegNet and PSPNet), Upsample (SegNet's
max-unpooling and nearest), DeepLab-v1's hole, SSD's Permute and Normalize, SegNet's
DenseImageData."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from automtl.compiler.prototxt import load_prototxt
from automtl.compiler.prototxt.modules import FrozenBatchNorm2d, Normalize, Scale
from automtl.errors import InvalidLayerError, MissingInputShapeError, PrototxtError, ShapeMismatchError

from prototxt_snippets import assert_scripts_and_exports, blob, layer, net


def run(gm, x):
    with torch.no_grad():
        return gm(x)


# -- ConvolutionDepthwise ------------------------------------------------------------------


def test_depthwise_convolution_is_one_filter_per_channel():
    w, b = torch.randn(2, 1, 3, 3), torch.tensor([0.5, -1.0])
    body = layer("dw", "ConvolutionDepthwise", ["data"], ["dw"],
                 "convolution_param { num_output: 2 kernel_size: 3 pad: 1 stride: 2 } " + blob(w, (2, 1, 3, 3)) + " " + blob(b, (2,)))
    gm = net(body, (1, 2, 5, 5))
    x = torch.randn(1, 2, 5, 5)
    padded = F.pad(x, (1, 1, 1, 1))
    expected = torch.empty(1, 2, 3, 3)
    for c, i, j in itertools.product(range(2), range(3), range(3)):  # out[c] = w[c] * window of in[c], stride 2
        expected[0, c, i, j] = (padded[0, c, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3] * w[c, 0]).sum() + b[c]
    assert gm.output_shapes == ((1, 2, 3, 3),)
    assert torch.allclose(run(gm, x), expected, atol=1e-6)


def test_depthwise_convolution_keeps_the_channel_count():
    body = layer("dw", "ConvolutionDepthwise", ["data"], ["dw"], "convolution_param { num_output: 6 kernel_size: 3 }")
    with pytest.raises(ShapeMismatchError, match="keeps the channel count \\(3 in, 3 out\\), but num_output is 6"):
        net(body)
    no_count = net(layer("dw", "ConvolutionDepthwise", ["data"], ["dw"], "convolution_param { kernel_size: 3 }"))
    assert no_count.output_shapes == ((1, 3, 6, 6),)


# -- ShuffleChannel ------------------------------------------------------------------------


def test_shuffle_channel_transposes_groups():
    gm = net(layer("s", "ShuffleChannel", ["data"], ["s"], "shuffle_channel_param { group: 2 }"), (1, 6, 2, 2))
    x = torch.arange(6.0).reshape(1, 6, 1, 1).expand(1, 6, 2, 2)
    # output channel j * group + i is input channel i * (C / group) + j
    assert run(gm, x)[0, :, 0, 0].tolist() == [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    with pytest.raises(ShapeMismatchError, match="group 4 must divide the channels"):
        net(layer("s", "ShuffleChannel", ["data"], ["s"], "shuffle_channel_param { group: 4 }"), (1, 6, 2, 2))


# -- BN (SegNet and PSPNet forks) -----------------------------------------------------------


def test_segnet_bn_in_inference_mode_is_scale_and_shift():
    scale, shift = torch.tensor([2.0, -0.5]), torch.tensor([0.1, 3.0])
    body = layer("bn", "BN", ["data"], ["bn"], "bn_param { bn_mode: INFERENCE } " + blob(scale, (1, 2, 1, 1)) + " " + blob(shift, (1, 2, 1, 1)))
    gm = net(body, (2, 2, 3, 3))
    assert isinstance(gm.bn, Scale)
    x = torch.randn(2, 2, 3, 3)
    assert torch.allclose(run(gm, x), x * scale.view(1, 2, 1, 1) + shift.view(1, 2, 1, 1))


def test_segnet_bn_in_learn_mode_uses_the_batch_statistics_in_every_phase():
    scale, shift = torch.tensor([1.5, 0.5]), torch.tensor([0.0, 1.0])
    body = layer("bn", "BN", ["data"], ["bn"], "bn_param { scale_filler { type: 'constant' value: 1 } } "
                 + blob(scale, (1, 2, 1, 1)) + " " + blob(shift, (1, 2, 1, 1)))
    gm = net(body, (2, 2, 3, 3))
    x = torch.randn(2, 2, 3, 3) * 3 + 1
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = (x * x).mean(dim=(0, 2, 3), keepdim=True) - mean**2  # E(X^2) - (EX)^2, as caffe-segnet
    expected = (x - mean) / torch.sqrt(var + 1e-9) * scale.view(1, 2, 1, 1) + shift.view(1, 2, 1, 1)
    assert torch.allclose(run(gm, x), expected, atol=1e-5)  # eval mode: still the batch's statistics


def test_pspnet_bn_uses_its_stored_statistics_at_test_time_and_learns_them_with_its_momentum():
    slope, bias, mean, var = torch.tensor([2.0, 1.0]), torch.tensor([0.5, -0.5]), torch.tensor([1.0, -1.0]), torch.tensor([4.0, 0.25])
    blobs = " ".join(blob(t, (1, 2, 1, 1)) for t in (slope, bias, mean, var))
    body = layer("bn", "BN", ["data"], ["bn"], "bn_param { slope_filler { type: 'constant' value: 1 } eps: 0.001 momentum: 0.8 } " + blobs)
    gm = net(body, (2, 2, 3, 3))
    x = torch.randn(2, 2, 3, 3)
    expected = (x - mean.view(1, 2, 1, 1)) / torch.sqrt(var.view(1, 2, 1, 1) + 1e-3) * slope.view(1, 2, 1, 1) + bias.view(1, 2, 1, 1)
    assert torch.allclose(run(gm, x), expected, atol=1e-6)
    gm.train()
    run(gm, x)  # moving average: 0.8 * stored + 0.2 * batch mean
    assert torch.allclose(gm.bn.running_mean, 0.8 * mean + 0.2 * x.mean(dim=(0, 2, 3)), atol=1e-6)


def test_pspnet_bn_frozen_keeps_its_statistics_and_parameters_in_training():
    slope, bias, mean, var = torch.tensor([2.0, 1.0]), torch.tensor([0.5, -0.5]), torch.tensor([1.0, -1.0]), torch.tensor([4.0, 0.25])
    blobs = " ".join(blob(t, (1, 2)) for t in (slope, bias, mean, var))
    gm = net(layer("bn", "BN", ["data"], ["bn"], "bn_param { frozen: true } " + blobs), (2, 2, 3, 3))
    assert isinstance(gm.bn, FrozenBatchNorm2d) and not gm.bn.weight.requires_grad and not gm.bn.bias.requires_grad
    gm.train()
    x = torch.randn(2, 2, 3, 3)
    expected = (x - mean.view(1, 2, 1, 1)) / torch.sqrt(var.view(1, 2, 1, 1) + 1e-5) * slope.view(1, 2, 1, 1) + bias.view(1, 2, 1, 1)
    assert torch.allclose(run(gm, x), expected, atol=1e-6)
    assert torch.equal(gm.bn.running_mean, mean) and torch.equal(gm.bn.running_var, var)


def test_bn_settings_the_forks_reject():
    with pytest.raises(InvalidLayerError, match="mixes SegNet's fields .* and PSPNet's"):
        net(layer("bn", "BN", ["data"], ["bn"], "bn_param { bn_mode: INFERENCE frozen: true }"))
    with pytest.raises(ShapeMismatchError, match="stores 3 blobs; PSPNet's BN stores 4 \\(slope, bias, mean, variance\\)"):
        net(layer("bn", "BN", ["data"], ["bn"], "bn_param { frozen: true } " + " ".join([blob([1.0, 1, 1], (3,))] * 3)))


# -- Upsample ------------------------------------------------------------------------------


def unpool_by_hand(values, mask, height, width):
    """caffe-segnet's UpsampleLayer::Forward_cpu: zeros, then top[mask[i]] = bottom[i], i in order."""
    n, c = values.shape[:2]
    out = torch.zeros(n, c, height * width)
    for b, ch in itertools.product(range(n), range(c)):
        for i, (v, m) in enumerate(zip(values[b, ch].flatten().tolist(), mask[b, ch].flatten().tolist())):
            out[b, ch, int(m)] = v
    return out.reshape(n, c, height, width)


def test_upsample_with_the_pooling_mask_is_max_unpooling():
    body = (
        layer("pool", "Pooling", ["data"], ["pool", "mask"], "pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
        + layer("up", "Upsample", ["pool", "mask"], ["up"], "upsample_param { scale: 2 }")
    )
    gm = net(body, (2, 3, 4, 6))
    x = torch.randn(2, 3, 4, 6)
    pooled, mask = F.max_pool2d(x, 2, 2, return_indices=True)
    out = run(gm, x)
    assert out.shape == (2, 3, 4, 6) and torch.equal(out, unpool_by_hand(pooled, mask, 4, 6))
    assert torch.equal(out != 0, x == F.max_unpool2d(pooled, mask, 2, 2))  # each window's maximum, in place


def test_upsample_to_a_given_size_and_where_two_windows_chose_one_position_the_later_wins():
    # overlapping windows (kernel 3, stride 2) pick some positions twice; a 3x3 convolution between
    # pooling and unpooling gives those two picks different values
    w = torch.randn(3, 3, 3, 3)
    body = (
        layer("pool", "Pooling", ["data"], ["pool", "mask"], "pooling_param { pool: MAX kernel_size: 3 stride: 2 }")
        + layer("conv", "Convolution", ["pool"], ["conv"], "convolution_param { num_output: 3 kernel_size: 3 pad: 1 bias_term: false } " + blob(w, (3, 3, 3, 3)))
        + layer("up", "Upsample", ["conv", "mask"], ["up"], "upsample_param { scale: 2 upsample_h: 7 upsample_w: 7 }")
    )
    gm = net(body, (1, 3, 7, 7))
    x = torch.zeros(1, 3, 7, 7)
    x[:, :, 2, 2] = 5.0  # the maximum of all four windows around it
    x += torch.rand(1, 3, 7, 7) * 0.1
    pooled, mask = F.max_pool2d(x, 3, 2, ceil_mode=True, return_indices=True)
    assert mask.flatten(2).unique(dim=2).shape[2] < mask.flatten(2).shape[2]  # the case is there
    values = F.conv2d(pooled, w, padding=1)
    assert gm.output_shapes == ((1, 3, 7, 7),)
    assert torch.allclose(run(gm, x), unpool_by_hand(values, mask, 7, 7), atol=1e-6)


def test_upsample_with_one_bottom_repeats_each_value():
    gm = net(layer("up", "Upsample", ["data"], ["up"], "upsample_param { scale: 3 }"), (1, 2, 2, 3))
    x = torch.randn(1, 2, 2, 3)
    assert torch.equal(run(gm, x), x.repeat_interleave(3, dim=2).repeat_interleave(3, dim=3))
    segnet_pad = net(layer("up", "Upsample", ["data"], ["up"], "upsample_param { scale: 2 pad_out_h: true }"), (1, 2, 3, 3))
    assert segnet_pad.output_shapes == ((1, 2, 5, 6),)  # H * 2 - 1


def test_upsample_settings_and_a_mask_of_another_shape_are_refused():
    with pytest.raises(ShapeMismatchError, match="its mask 'mask' \\[1, 3, 2, 2\\] must have the shape of 'data' \\[1, 3, 8, 8\\]"):
        net(layer("p", "Pooling", ["data"], ["small", "mask"], "pooling_param { pool: MAX kernel_size: 4 stride: 4 }")
            + layer("up", "Upsample", ["data", "mask"], ["up"]))
    with pytest.raises(InvalidLayerError, match="pad_out_h/pad_out_w need a scale of 2"):
        net(layer("up", "Upsample", ["data"], ["up"], "upsample_param { scale: 3 pad_out_w: true }"))
    with pytest.raises(InvalidLayerError, match="give both upsample_h and upsample_w"):
        net(layer("up", "Upsample", ["data"], ["up"], "upsample_param { upsample_h: 4 }"))


# -- DeepLab-v1's hole -----------------------------------------------------------------------


def test_hole_is_the_dilation():
    w = torch.randn(4, 3, 3, 3)
    gm = net(layer("c", "Convolution", ["data"], ["c"], "convolution_param { num_output: 4 kernel_size: 3 pad: 2 hole: 2 bias_term: false } " + blob(w, (4, 3, 3, 3))))
    x = torch.randn(1, 3, 8, 8)
    assert gm.c.dilation == (2, 2) and gm.output_shapes == ((1, 4, 8, 8),)
    assert torch.allclose(run(gm, x), F.conv2d(x, w, padding=2, dilation=2), atol=1e-5)
    hw = net(layer("c", "Convolution", ["data"], ["c"], "convolution_param { num_output: 4 kernel_size: 3 hole_h: 2 hole_w: 3 }"))
    assert hw.c.dilation == (2, 3) and hw.output_shapes == ((1, 4, 4, 2),)
    with pytest.raises(InvalidLayerError, match="dilation \\[3, 3\\] and hole \\[2, 2\\] disagree"):
        net(layer("c", "Convolution", ["data"], ["c"], "convolution_param { num_output: 4 kernel_size: 3 hole: 2 dilation: 3 }"))


# -- SSD's Permute and Normalize -----------------------------------------------------------


def test_permute_orders_the_axes_and_appends_the_rest():
    gm = net(layer("p", "Permute", ["data"], ["p"], "permute_param { order: 0 order: 2 order: 3 order: 1 }"), (2, 3, 4, 5))
    x = torch.randn(2, 3, 4, 5)
    assert gm.output_shapes == ((2, 4, 5, 3),) and torch.equal(run(gm, x), x.permute(0, 2, 3, 1))
    partial = net(layer("p", "Permute", ["data"], ["p"], "permute_param { order: 0 order: 2 }"), (2, 3, 4, 5))
    assert partial.output_shapes == ((2, 4, 3, 5),) and torch.equal(run(partial, x), x.permute(0, 2, 1, 3))
    with pytest.raises(InvalidLayerError, match="order \\[0, 4\\] must name distinct axes of a 4-D input"):
        net(layer("p", "Permute", ["data"], ["p"], "permute_param { order: 0 order: 4 }"), (2, 3, 4, 5))


def test_normalize_per_position_with_a_scale_per_channel():
    scale = torch.tensor([20.0, 10.0, 5.0])
    gm = net(layer("n", "Normalize", ["data"], ["n"], "norm_param { across_spatial: false channel_shared: false } " + blob(scale, (3,))), (2, 3, 4, 4))
    assert isinstance(gm.n, Normalize)
    x = torch.randn(2, 3, 4, 4)
    expected = torch.empty_like(x)
    for b, i, j in itertools.product(range(2), range(4), range(4)):
        norm = (x[b, :, i, j].pow(2).sum() + 1e-10).sqrt()
        expected[b, :, i, j] = x[b, :, i, j] / norm * scale
    assert torch.allclose(run(gm, x), expected, atol=1e-5)


def test_normalize_across_the_sample_with_one_scale():
    gm = net(layer("n", "Normalize", ["data"], ["n"], "norm_param { scale_filler { type: 'constant' value: 3 } eps: 0.5 }"), (2, 3, 4, 4))
    x = torch.randn(2, 3, 4, 4)
    norm = (x.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 0.5).sqrt()  # eps inside the square root
    assert gm.n.weight.tolist() == [3.0]
    assert torch.allclose(run(gm, x), 3.0 * x / norm, atol=1e-6)


# -- SegNet's DenseImageData ---------------------------------------------------------------


def test_dense_image_data_is_read_as_the_input_like_image_data():
    text = (
        'name: "segnet"\n'
        'layer { name: "data" type: "DenseImageData" top: "data" top: "label"\n'
        '  dense_image_data_param { source: "train.txt" batch_size: 4 crop_height: 224 crop_width: 320 shuffle: true } }\n'
        'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 4 kernel_size: 3 } }\n'
    )
    with pytest.raises(MissingInputShapeError, match=r"comes from layer 'data' \(DenseImageData, line 2\).*crops to 224x320: e\.g\. shape 1,3,224,320"):
        load_prototxt(text)
    gm = load_prototxt(text, input_shape=(1, 3, 16, 16))
    assert gm.input_shape == (1, 3, 16, 16) and gm.output_shapes == ((1, 4, 14, 14),)
    with pytest.raises(PrototxtError, match="reads 'label', the labels of layer 'data' \\(DenseImageData"):
        load_prototxt(text + 'layer { name: "loss" type: "Eltwise" bottom: "c" bottom: "label" top: "l" }\n', input_shape=(1, 3, 16, 16))


def test_fork_layers_script_and_export_to_onnx():
    body = (
        layer("pool", "Pooling", ["data"], ["pool", "mask"], "pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
        + layer("shuffle", "ShuffleChannel", ["pool"], ["shuffle"], "shuffle_channel_param { group: 2 }")
        + layer("unpool", "Upsample", ["shuffle", "mask"], ["unpool"], "upsample_param { scale: 2 }")
        + layer("near", "Upsample", ["unpool"], ["near"], "upsample_param { scale: 2 }")
        + layer("dw", "ConvolutionDepthwise", ["near"], ["dw"], "convolution_param { kernel_size: 3 pad: 1 stride: 2 }")
        + layer("norm", "Normalize", ["dw"], ["norm"], "norm_param { across_spatial: false }")
        + layer("bn", "BN", ["norm"], ["norm"], "bn_param { bn_mode: INFERENCE }")
        + layer("perm", "Permute", ["norm"], ["perm"], "permute_param { order: 0 order: 2 order: 3 order: 1 }")
    )
    assert_scripts_and_exports(net(body, (1, 4, 8, 8)), torch.randn(1, 4, 8, 8), opset_version=18)


@pytest.mark.parametrize("type_, params, verb", [
    ("Interp", "interp_param { zoom_factor: 2 }", "resizes"),
    ("ConvolutionDepthwise", "convolution_param { kernel_size: 1 }", "convolves"),
    ("BN", "bn_param { bn_mode: INFERENCE }", "normalises"),
])
def test_image_layers_refuse_a_flat_input_naming_the_layer(type_, params, verb):
    with pytest.raises(InvalidLayerError, match=rf"layer 'flat' \({type_}, line 4\): {verb} \(N, C, H, W\) inputs, got \[1, 8\]"):
        net(layer("flat", type_, ["data"], ["out"], params), (1, 8))
