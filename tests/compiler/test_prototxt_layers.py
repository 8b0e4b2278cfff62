"""Caffe layer semantics, checked against hand computations and direct torch calls."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from automtl.compiler.fx_frontend import STATIC_SHAPE_KEY
from automtl.compiler.prototxt.modules import Bias, Scale
from automtl.errors import InvalidLayerError, ShapeMismatchError

from prototxt_snippets import assert_scripts_and_exports, blob, layer, net


def check_static_shapes(gm, x):
    """The shapes computed while building equal the shapes of a real run."""
    seen = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            seen[n.name] = out.shape if isinstance(out, torch.Tensor) else None
            return out

    with torch.no_grad():
        Recorder(gm).run(x)
    assert {n.name: n.meta[STATIC_SHAPE_KEY] for n in gm.graph.nodes} == seen


# -- pooling -------------------------------------------------------------------------------


def caffe_pool(x, k, s, p, ceil, mode):
    """Caffe's pooling, loop by loop (PoolingLayer::Reshape and Forward_cpu)."""
    n, c, h, w = x.shape

    def out_size(size):
        span = (size + 2 * p - k) / s
        o = (math.ceil(span) if ceil else math.floor(span)) + 1
        if p and (o - 1) * s >= size + p:
            o -= 1
        return o

    oh, ow = out_size(h), out_size(w)
    y = torch.empty(n, c, oh, ow)
    for i, j in itertools.product(range(oh), range(ow)):
        hs, ws = i * s - p, j * s - p
        he, we = min(hs + k, h + p), min(ws + k, w + p)
        pool_size = (he - hs) * (we - ws)
        hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
        window = x[:, :, hs:he, ws:we]
        y[:, :, i, j] = window.amax(dim=(2, 3)) if mode == "MAX" else window.sum(dim=(2, 3)) / pool_size
    return y


@pytest.mark.parametrize(
    "size,k,s,p,ceil,mode",
    [
        (6, 3, 2, 0, True, "MAX"),  # ceil adds a clipped last window
        (6, 3, 2, 0, False, "MAX"),
        (7, 3, 2, 1, True, "MAX"),  # ResNet's stem pooling at an odd size
        (6, 3, 2, 1, True, "AVE"),  # padding counted, clipped to the padded border
        (5, 2, 2, 0, True, "AVE"),
        (9, 3, 3, 1, True, "AVE"),
        (8, 3, 2, 1, False, "AVE"),
    ],
)
def test_pooling_matches_caffe(size, k, s, p, ceil, mode):
    body = layer("pool", "Pooling", ["data"], ["pool"],
                 f"pooling_param {{ pool: {mode} kernel_size: {k} stride: {s} pad: {p} round_mode: {'CEIL' if ceil else 'FLOOR'} }}")
    gm = net(body, (2, 3, size, size))
    x = torch.randn(2, 3, size, size)
    expected = caffe_pool(x, k, s, p, ceil, mode)
    assert gm.output_shapes[0] == tuple(expected.shape)
    assert torch.allclose(gm(x), expected, atol=1e-6)


def test_caffe_rounds_pooling_up_by_default_and_ceil_mode_false_rounds_down():
    default = net(layer("p", "Pooling", ["data"], ["p"], "pooling_param { pool: MAX kernel_size: 3 stride: 2 }"), (1, 1, 6, 6))
    floor = net(layer("p", "Pooling", ["data"], ["p"], "pooling_param { pool: MAX kernel_size: 3 stride: 2 ceil_mode: false }"), (1, 1, 6, 6))
    assert default.output_shapes == ((1, 1, 3, 3),) and floor.output_shapes == ((1, 1, 2, 2),)
    with pytest.raises(InvalidLayerError, match="round_mode and ceil_mode disagree"):
        net(layer("p", "Pooling", ["data"], ["p"], "pooling_param { kernel_size: 3 round_mode: CEIL ceil_mode: false }"))


def test_global_pooling_and_the_argmax_mask():
    x = torch.randn(2, 3, 5, 7)
    gm = net(layer("g", "Pooling", ["data"], ["g"], "pooling_param { pool: AVE global_pooling: true }"), (2, 3, 5, 7))
    assert torch.allclose(gm(x), x.mean(dim=(2, 3), keepdim=True), atol=1e-6)
    gm = net(layer("m", "Pooling", ["data"], ["v", "mask"], "pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
             + layer("c", "Concat", ["v", "mask"], ["both"]), (1, 1, 4, 4))
    values, indices = F.max_pool2d(x[:1, :1, :4, :4], 2, 2, return_indices=True)
    assert torch.equal(gm(x[:1, :1, :4, :4]), torch.cat([values, indices.float()], 1))


def test_pooling_settings_caffe_rejects():
    with pytest.raises(InvalidLayerError, match="STOCHASTIC pooling has no torch equivalent"):
        net(layer("p", "Pooling", ["data"], ["p"], "pooling_param { pool: STOCHASTIC kernel_size: 2 }"))
    with pytest.raises(InvalidLayerError, match="pad 3 must be smaller than the kernel 3"):
        net(layer("p", "Pooling", ["data"], ["p"], "pooling_param { kernel_size: 3 pad: 3 }"))
    with pytest.raises(InvalidLayerError, match="use round_mode: FLOOR"):
        net(layer("p", "Pooling", ["data"], ["p"], "pooling_param { kernel_size: 1 stride: 3 }"), (1, 1, 5, 5))


# -- combining -----------------------------------------------------------------------------


def test_eltwise_sum_coefficients_product_and_max():
    body = (
        layer("a", "Power", ["data"], ["a"], "power_param { scale: 2 }")
        + layer("b", "AbsVal", ["data"], ["b"])
        + layer("sum", "Eltwise", ["data", "a", "b"], ["sum"], "eltwise_param { operation: SUM coeff: 0.5 coeff: -1 coeff: 3 }")
        + layer("prod", "Eltwise", ["data", "a"], ["prod"], "eltwise_param { operation: PROD }")
        + layer("max", "Eltwise", ["data", "b", "a"], ["max"], "eltwise_param { operation: MAX }")
    )
    gm = net(body)
    x = torch.randn(1, 3, 8, 8)
    s, p, m = gm(x)
    assert torch.allclose(s, 0.5 * x - 2 * x + 3 * x.abs(), atol=1e-6)
    assert torch.allclose(p, x * 2 * x)
    assert torch.equal(m, torch.maximum(torch.maximum(x, x.abs()), 2 * x))
    check_static_shapes(gm, x)


def test_eltwise_needs_equal_shapes_and_one_coeff_per_bottom():
    pool = layer("p", "Pooling", ["data"], ["p"], "pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
    with pytest.raises(ShapeMismatchError, match=r"'data' is \[1, 3, 8, 8\] and 'p' is \[1, 3, 4, 4\]"):
        net(pool + layer("s", "Eltwise", ["data", "p"], ["s"]))
    with pytest.raises(InvalidLayerError, match="has 1 coeff values for 2 bottoms"):
        net(layer("s", "Eltwise", ["data", "data"], ["s"], "eltwise_param { coeff: 2 }"))


def test_concat_slice_and_split():
    body = (
        layer("sl", "Slice", ["data"], ["a", "b", "c"], "slice_param { axis: 1 slice_point: 1 slice_point: 2 }")
        + layer("sp", "Split", ["b"], ["b1", "b2"])
        + layer("cat", "Concat", ["c", "b1", "a", "b2"], ["cat"])
        + layer("halves", "Slice", ["cat"], ["h1", "h2"], "slice_param { axis: 2 }")
    )
    gm = net(body)
    x = torch.randn(1, 3, 8, 8)
    h1, h2 = gm(x)
    cat = torch.cat([x[:, 2:3], x[:, 1:2], x[:, 0:1], x[:, 1:2]], 1)
    assert torch.equal(h1, cat[:, :, :4]) and torch.equal(h2, cat[:, :, 4:])
    check_static_shapes(gm, x)
    with pytest.raises(ShapeMismatchError, match="cannot split axis 1 of size 3 into 2 equal parts"):
        net(layer("sl", "Slice", ["data"], ["a", "b"]))
    with pytest.raises(ShapeMismatchError, match="concatenates along axis 1, so every other axis must match"):
        net(layer("p", "Pooling", ["data"], ["p"], "pooling_param { kernel_size: 2 stride: 2 }") + layer("c", "Concat", ["data", "p"], ["c"]))


def test_crop_to_the_reference_blob():
    body = (
        layer("p", "Pooling", ["data"], ["p"], "pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
        + layer("one", "Crop", ["data", "p"], ["one"], "crop_param { axis: 2 offset: 3 }")
        + layer("each", "Crop", ["data", "p"], ["each"], "crop_param { axis: 2 offset: 1 offset: 4 }")
    )
    gm = net(body, (1, 3, 8, 9))
    x = torch.randn(1, 3, 8, 9)
    one, each = gm(x)
    # the reference is 4 x 5 (Caffe's pooling rounds 9 -> 5 up)
    assert torch.equal(one, x[:, :, 3:7, 3:8]) and torch.equal(each, x[:, :, 1:5, 4:9])
    with pytest.raises(ShapeMismatchError, match="cannot crop axis 2 of 'data' \\[1, 3, 8, 9\\] at offset 5"):
        net(layer("p", "Pooling", ["data"], ["p"], "pooling_param { kernel_size: 2 stride: 2 }")
            + layer("c", "Crop", ["data", "p"], ["c"], "crop_param { offset: 5 }"), (1, 3, 8, 9))


def test_flatten_reshape_and_softmax():
    body = (
        layer("f", "Flatten", ["data"], ["f"], "flatten_param { axis: 2 }")
        + layer("r", "Reshape", ["data"], ["r"], "reshape_param { shape { dim: 0 dim: -1 dim: 4 } }")
        + layer("sm", "Softmax", ["data"], ["sm"], "softmax_param { axis: 2 }")
    )
    gm = net(body, (2, 3, 4, 4))
    x = torch.randn(2, 3, 4, 4)
    f, r, sm = gm(x)
    assert torch.equal(f, x.flatten(2)) and torch.equal(r, x.reshape(2, 12, 4))
    assert torch.allclose(sm, torch.softmax(x, 2))
    f5, r5, _ = gm(torch.randn(5, 3, 4, 4))  # built at batch 2, runs at batch 5
    assert f5.shape == (5, 3, 16) and r5.shape == (5, 12, 4)
    with pytest.raises(ShapeMismatchError, match="cannot reshape axes 0..3"):
        net(layer("r", "Reshape", ["data"], ["r"], "reshape_param { shape { dim: 5 dim: -1 } }"), (2, 3, 4, 4))


# -- operators with weights ----------------------------------------------------------------


def test_convolution_settings_map_to_conv2d():
    body = layer("c", "Convolution", ["data"], ["c"], "convolution_param { num_output: 6 kernel_h: 3 kernel_w: 1 "
                 "pad_h: 2 pad_w: 0 stride_h: 2 stride_w: 1 dilation: 2 group: 3 bias_term: false }")
    gm = net(body, (1, 3, 9, 7))
    c = gm.c
    assert isinstance(c, nn.Conv2d) and c.bias is None and c.groups == 3
    assert (c.kernel_size, c.padding, c.stride, c.dilation) == ((3, 1), (2, 0), (2, 1), (2, 2))
    x = torch.randn(1, 3, 9, 7)
    assert torch.equal(gm(x), F.conv2d(x, c.weight, None, (2, 1), (2, 0), 2, 3))
    assert gm.output_shapes == (tuple(gm(x).shape),)
    with pytest.raises(ShapeMismatchError, match="group 2 must divide both the input channels \\(3\\)"):
        net(layer("c", "Convolution", ["data"], ["c"], "convolution_param { num_output: 4 kernel_size: 1 group: 2 }"))
    with pytest.raises(InvalidLayerError, match="convolution_param needs num_output"):
        net(layer("c", "Convolution", ["data"], ["c"], "convolution_param { kernel_size: 1 }"))


def test_deconvolution_output_size_and_bilinear_filler():
    body = layer("up", "Deconvolution", ["data"], ["up"], "convolution_param { num_output: 3 kernel_size: 4 stride: 2 "
                 'group: 3 bias_term: false weight_filler { type: "bilinear" } }')
    gm = net(body, (1, 3, 5, 5))
    assert isinstance(gm.up, nn.ConvTranspose2d) and gm.output_shapes == ((1, 3, 12, 12),)  # 2*(5-1)+4
    kernel = torch.tensor([0.25, 0.75, 0.75, 0.25])
    assert torch.allclose(gm.up.weight[0, 0], kernel[:, None] * kernel[None, :])
    x = torch.randn(1, 3, 5, 5)
    assert torch.allclose(gm(x), F.conv_transpose2d(x, gm.up.weight, None, 2, groups=3))


def test_inner_product_flattens_and_reads_stored_weights():
    w = torch.arange(10.0).reshape(2, 5) / 10
    body = layer("ip", "InnerProduct", ["data"], ["ip"], "inner_product_param { num_output: 2 } " + blob(w, (2, 5)) + " " + blob([1, -1], (2,)))
    gm = net(body, (3, 5, 1, 1))
    x = torch.randn(3, 5, 1, 1)
    assert torch.allclose(gm(x), x.flatten(1) @ w.t() + torch.tensor([1.0, -1.0]))
    transposed = layer("ip", "InnerProduct", ["data"], ["ip"], "inner_product_param { num_output: 2 transpose: true } " + blob(w.t(), (5, 2)))
    assert torch.allclose(net(transposed, (3, 5, 1, 1)).ip.weight, w)
    axis2 = net(layer("ip", "InnerProduct", ["data"], ["ip"], "inner_product_param { num_output: 4 axis: 2 }"), (2, 3, 5, 6))
    assert axis2.output_shapes == ((2, 3, 4),) and axis2.ip.in_features == 30


def test_batchnorm_and_scale_fuse_with_caffes_stored_statistics():
    mean, var, factor = torch.tensor([1.0, -2.0]), torch.tensor([4.0, 0.25]), 8.0
    gamma, beta = torch.tensor([2.0, 0.5]), torch.tensor([0.1, -0.3])
    body = (
        layer("bn", "BatchNorm", ["data"], ["data"], "batch_norm_param { eps: 0.001 } "
              + blob(mean * factor, (2,)) + " " + blob(var * factor, (2,)) + " " + blob([factor], (1,)))
        + layer("sc", "Scale", ["data"], ["data"], "scale_param { bias_term: true } " + blob(gamma, (2,)) + " " + blob(beta, (2,)))
    )
    gm = net(body, (2, 2, 3, 3))
    assert [n for n, _ in gm.named_children()] == ["bn"]
    assert isinstance(gm.bn, nn.BatchNorm2d) and gm.bn.affine and gm.bn.eps == 0.001
    x = torch.randn(2, 2, 3, 3)
    expected = (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + 0.001) * gamma[:, None, None] + beta[:, None, None]
    assert torch.allclose(gm(x), expected, atol=1e-6)


def test_batchnorm_stays_apart_from_a_scale_it_cannot_absorb():
    # no bias on the Scale: Caffe BatchNorm without affine, then a Scale module
    gm = net(layer("bn", "BatchNorm", ["data"], ["b"]) + layer("sc", "Scale", ["b"], ["s"]), (1, 3, 4, 4))
    assert not gm.bn.affine and isinstance(gm.sc, Scale) and gm.sc.bias is None
    # the normalised value is read by another layer too
    gm = net(layer("bn", "BatchNorm", ["data"], ["b"]) + layer("sc", "Scale", ["b"], ["s"], "scale_param { bias_term: true }")
             + layer("sum", "Eltwise", ["b", "s"], ["out"]), (1, 3, 4, 4))
    assert not gm.bn.affine and isinstance(gm.sc, Scale)
    x = torch.randn(1, 3, 4, 4)
    with torch.no_grad():
        gm.sc.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        gm.sc.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    b = F.batch_norm(x, torch.zeros(3), torch.ones(3), eps=1e-5)
    assert torch.allclose(gm(x), b + b * gm.sc.weight[:, None, None] + gm.sc.bias[:, None, None], atol=1e-6)


def test_pytorch_style_batchnorm_of_the_automtl_dialect():
    gm = net(layer("bn", "BatchNorm", ["data"], ["b"], "batch_norm_param { track_running_stats: true eps: 1e-05 }"))
    assert gm.bn.affine and gm.bn.track_running_stats and gm.bn.momentum == 0.1 and gm.bn.eps == 1e-5
    gm = net(layer("bn", "BatchNorm", ["data"], ["b"], "batch_norm_param { affine: false momentum: 0.2 }"))
    assert not gm.bn.affine and gm.bn.momentum == 0.2
    gm = net(layer("bn", "BatchNorm", ["data"], ["b"], "batch_norm_param { moving_average_fraction: 0.9997 }"))
    assert gm.bn.momentum == pytest.approx(0.0003)


def test_scale_and_bias_layers():
    body = (
        layer("sc", "Scale", ["data"], ["sc"], 'scale_param { axis: 1 num_axes: 2 filler { type: "constant" value: 3 } }')
        + layer("bi", "Bias", ["sc"], ["bi"], 'bias_param { filler { type: "constant" value: 0.5 } }')
        + layer("p", "Pooling", ["data"], ["p"], "pooling_param { pool: AVE global_pooling: true }")
        + layer("r", "Reshape", ["p"], ["r"], "reshape_param { shape { dim: 0 dim: -1 } }")
        + layer("by", "Scale", ["data", "r"], ["by"], "scale_param { axis: 0 }")
    )
    gm = net(body, (2, 3, 4, 4))
    assert isinstance(gm.sc, Scale) and gm.sc.weight.shape == (3, 4) and isinstance(gm.bi, Bias)
    x = torch.randn(2, 3, 4, 4)
    bi, by = gm(x)
    assert torch.allclose(bi, 3 * x + 0.5)
    assert torch.allclose(by, x * x.mean(dim=(2, 3))[:, :, None, None], atol=1e-6)
    with pytest.raises(ShapeMismatchError, match="its second bottom"):
        net(layer("by", "Scale", ["data", "data"], ["by"], "scale_param { axis: 1 }"), (2, 3, 4, 4))


def test_activations_match_their_formulas():
    body = "".join(
        layer(name, type_, ["data"], [name], params)
        for name, type_, params in [
            ("leaky", "ReLU", "relu_param { negative_slope: 0.1 }"),
            ("elu", "ELU", "elu_param { alpha: 0.5 }"),
            ("sig", "Sigmoid", ""),
            ("tanh", "TanH", ""),
            ("bnll", "BNLL", ""),
            ("pow", "Power", "power_param { power: 2 scale: 0.5 shift: 1 }"),
            ("exp", "Exp", "exp_param { base: 2 scale: 0.5 shift: 1 }"),
            ("thr", "Threshold", "threshold_param { threshold: 0.2 }"),
            ("clip", "Clip", "clip_param { min: -0.5 max: 0.5 }"),
            ("swish", "Swish", "swish_param { beta: 2 }"),
            ("prelu", "PReLU", 'prelu_param { filler { type: "constant" value: 0.3 } }'),
        ]
    ) + layer("log", "Log", ["sig"], ["log"], "log_param { base: 10 }")
    gm = net(body)
    x = torch.randn(1, 3, 8, 8)
    outs = dict(zip(gm.output_names, gm(x)))
    assert torch.allclose(outs["leaky"], torch.where(x > 0, x, 0.1 * x))
    assert torch.allclose(outs["elu"], torch.where(x > 0, x, 0.5 * (torch.exp(x) - 1)))
    assert torch.allclose(outs["tanh"], torch.tanh(x))
    assert torch.allclose(outs["bnll"], torch.log1p(torch.exp(x)), atol=1e-6)
    assert torch.allclose(outs["pow"], (1 + 0.5 * x) ** 2)
    assert torch.allclose(outs["exp"], 2 ** (1 + 0.5 * x))
    assert torch.equal(outs["thr"], (x > 0.2).float())
    assert torch.equal(outs["clip"], x.clamp(-0.5, 0.5))
    assert torch.allclose(outs["swish"], x * torch.sigmoid(2 * x))
    assert torch.allclose(outs["prelu"], torch.where(x > 0, x, 0.3 * x)) and gm.prelu.weight.shape == (3,)
    assert torch.allclose(outs["log"], torch.log10(torch.sigmoid(x)), atol=1e-6)


def test_lrn_across_and_within_channels():
    x = torch.randn(1, 7, 5, 5)
    gm = net(layer("lrn", "LRN", ["data"], ["lrn"], "lrn_param { local_size: 3 alpha: 0.3 beta: 0.75 k: 2 }"), (1, 7, 5, 5))
    sq = F.pad(x * x, (0, 0, 0, 0, 1, 1))
    window = sum(sq[:, i : i + 7] for i in range(3))
    assert torch.allclose(gm(x), x / (2 + 0.3 / 3 * window) ** 0.75, atol=1e-6)
    gm = net(layer("lrn", "LRN", ["data"], ["lrn"], "lrn_param { local_size: 3 alpha: 0.3 beta: 0.75 norm_region: WITHIN_CHANNEL }"), (1, 7, 5, 5))
    sq = F.pad(x * x, (1, 1, 1, 1))
    window = sum(sq[:, :, i : i + 5, j : j + 5] for i in range(3) for j in range(3))
    assert torch.allclose(gm(x), x * (1 + 0.3 * window / 9) ** -0.75, atol=1e-6)


def test_interp_dropout_and_tile():
    body = (
        layer("zoom", "Interp", ["data"], ["zoom"], "interp_param { zoom_factor: 2 }")
        + layer("fixed", "Interp", ["data"], ["fixed"], "interp_param { height: 3 width: 5 }")
        + layer("drop", "Dropout", ["data"], ["drop"], "dropout_param { dropout_ratio: 0.3 }")
        + layer("tile", "Tile", ["data"], ["tile"], "tile_param { axis: 1 tiles: 2 }")
    )
    gm = net(body, (1, 2, 4, 4))
    x = torch.randn(1, 2, 4, 4)
    zoom, fixed, drop, tile = gm(x)
    assert torch.allclose(zoom, F.interpolate(x, size=(7, 7), mode="bilinear", align_corners=True))
    assert torch.allclose(fixed, F.interpolate(x, size=(3, 5), mode="bilinear", align_corners=True))
    assert torch.equal(drop, x) and gm.drop.p == pytest.approx(0.3)  # eval mode
    assert torch.equal(tile, torch.cat([x, x], 1))
    check_static_shapes(gm, x)


def test_fillers_initialise_as_caffe_does():
    torch.manual_seed(0)
    body = (
        layer("const", "Convolution", ["data"], ["a"], 'convolution_param { num_output: 64 kernel_size: 3 '
              'weight_filler { type: "constant" value: 0.25 } bias_filler { type: "constant" value: -1 } }')
        + layer("xavier", "Convolution", ["data"], ["b"], 'convolution_param { num_output: 64 kernel_size: 3 weight_filler { type: "xavier" } }')
        + layer("msra", "Convolution", ["data"], ["c"], 'convolution_param { num_output: 64 kernel_size: 3 '
                'weight_filler { type: "msra" variance_norm: FAN_OUT } }')
    )
    gm = net(body, (1, 16, 8, 8))
    assert torch.all(gm.const.weight == 0.25) and torch.all(gm.const.bias == -1)
    fan_in, fan_out = 16 * 9, 64 * 9
    assert gm.xavier.weight.abs().max() <= math.sqrt(3 / fan_in)
    assert gm.xavier.weight.std().item() == pytest.approx(math.sqrt(1 / fan_in), rel=0.05)
    assert gm.msra.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
    assert gm.xavier.bias.abs().max() <= 1 / math.sqrt(fan_in)  # no bias filler: torch's default
    with pytest.raises(InvalidLayerError, match="unknown filler type 'golden'"):
        net(layer("c", "Convolution", ["data"], ["c"], 'convolution_param { num_output: 2 kernel_size: 1 weight_filler { type: "golden" } }'))


def test_layers_naming_the_same_parameters_share_one_module():
    shared = 'param { name: "w" } param { name: "b" }'
    body = (
        layer("c1", "Convolution", ["data"], ["c1"], shared + " convolution_param { num_output: 3 kernel_size: 1 }")
        + layer("c2", "Convolution", ["c1"], ["c2"], shared + " convolution_param { num_output: 3 kernel_size: 1 }")
    )
    gm = net(body)
    assert [n for n, _ in gm.named_children()] == ["c1"]
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(gm(x), gm.c1(gm.c1(x)))
    other_kernel = layer("c2", "Convolution", ["c1"], ["c2"], shared + " convolution_param { num_output: 3 kernel_size: 3 pad: 1 }")
    with pytest.raises(ShapeMismatchError, match="shares its parameters with layer 'c1' \\(Convolution, line 4\\), but the layers differ"):
        net(body.split("\n")[0] + "\n" + other_kernel)
    half = layer("c2", "Convolution", ["c1"], ["c2"], 'param { name: "w" } convolution_param { num_output: 3 kernel_size: 1 }')
    with pytest.raises(InvalidLayerError, match="shares only some of layer 'c1'"):
        net(body.split("\n")[0] + "\n" + half)


def test_caffe_helpers_script_and_export_to_onnx():
    body = (
        layer("p", "Pooling", ["data"], ["p"], "pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
        + layer("crop", "Crop", ["data", "p"], ["crop"], "crop_param { offset: 1 }")
        + layer("r", "Reshape", ["crop"], ["r"], "reshape_param { shape { dim: 0 dim: -1 dim: 4 } }")
        + layer("r2", "Reshape", ["r"], ["r2"], "reshape_param { shape { dim: 0 dim: 3 dim: 4 dim: 4 } }")
        + layer("pow", "Power", ["r2"], ["pow"], "power_param { power: 2 shift: 1 }")
        + layer("exp", "Exp", ["pow"], ["exp"], "exp_param { base: 2 scale: 0.01 }")
        + layer("log", "Log", ["exp"], ["log"], "log_param { base: 10 }")
        + layer("thr", "Threshold", ["log"], ["thr"], "")
        + layer("sw", "Swish", ["log"], ["sw"], "swish_param { beta: 2 }")
        + layer("lrn", "LRN", ["sw"], ["lrn"], "lrn_param { local_size: 3 norm_region: WITHIN_CHANNEL }")
        + layer("i", "Interp", ["lrn"], ["i"], "interp_param { zoom_factor: 2 }")
        + layer("sc", "Scale", ["i", "i"], ["sc"], "scale_param { axis: 0 }")
        + layer("bi", "Bias", ["sc", "sc"], ["bi"], "bias_param { axis: 0 }")
    )
    assert_scripts_and_exports(net(body, (1, 3, 8, 8)), torch.randn(1, 3, 8, 8))
