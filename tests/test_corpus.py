"""Every real prototxt file of the corpus (tests/corpus, see SOURCES there; ../shared/corpus/prototxt
and $AUTOMTL_CORPUS add more when they exist: see prototxt_corpus.py) either compiles and runs a
forward pass at its declared input size, or is rejected with the error that names its
unsupported layers. The table below holds the expected outcome of every
file, so a regression in either direction fails.

The shapes under ``blobs`` are Caffe's own for these well-known nets (e.g. GoogLeNet's
pool1/3x3_s2 is 56x56 because Caffe rounds pooling up; DenseNet's pool1 is 56x56 because it
says ``ceil_mode: false``); they are checked on the net built at the declared input size.
"""

import dataclasses
import os
from typing import Dict, Optional, Tuple

import pytest
import torch
from torch import nn

import automtl
from automtl.compiler.fx_frontend import STATIC_SHAPE_KEY
from automtl.compiler.prototxt import load_prototxt
from automtl.compiler.prototxt.modules import Scale
from automtl.errors import MissingInputShapeError, UnsupportedLayerError
from prototxt_corpus import BUNDLED, SHARED, corpus_dirs, corpus_files

FILES = corpus_files()


@dataclasses.dataclass
class Compiles:
    output: Tuple[int, ...]  # the net's output at batch 1
    blobs: Dict[str, Tuple[int, ...]] = dataclasses.field(default_factory=dict)  # node -> Caffe's shape
    input_shape: Optional[Tuple[int, ...]] = None  # for files that declare none (training nets)
    run_at: Optional[Tuple[int, ...]] = None  # forward at this size: the declared one is too heavy here
    slow: bool = False


@dataclasses.dataclass
class Rejected:
    layers: Dict[str, int]  # unsupported type -> how many layers


EXPECTED = {
    "automtl_deeplab_resnet34.prototxt": Compiles((1, 512, 29, 29), {"max_pool1": (1, 64, 57, 57), "add8": (1, 256, 29, 29)}),
    "automtl_mnasnet.prototxt": Compiles((1, 1280, 7, 7)),
    "automtl_mobilenetv2.prototxt": Compiles((1, 1280, 7, 7)),
    "bvlc_alexnet_deploy.prototxt": Compiles(
        (1, 1000), {"conv1": (1, 96, 55, 55), "pool1": (1, 96, 27, 27), "pool2": (1, 256, 13, 13), "pool5": (1, 256, 6, 6)}
    ),
    # a training net: TEST phase, Data layers declare no channel count, losses dropped
    "bvlc_alexnet_train_val.prototxt": Compiles((1, 1000), {"fc8": (1, 1000)}, input_shape=(1, 3, 227, 227)),
    "bvlc_cifar10_quick.prototxt": Compiles((1, 10), {"pool1": (1, 32, 16, 16), "pool3": (1, 64, 4, 4)}),
    "bvlc_googlenet_deploy.prototxt": Compiles(
        (1, 1000),
        {
            "pool1_3x3_s2": (1, 64, 56, 56),
            "pool2_3x3_s2": (1, 192, 28, 28),
            "inception_3a_output": (1, 256, 28, 28),
            "inception_4e_output": (1, 832, 14, 14),
            "pool4_3x3_s2": (1, 832, 7, 7),
            "pool5_7x7_s1": (1, 1024, 1, 1),
        },
        slow=True,
    ),
    "bvlc_lenet.prototxt": Compiles((1, 10), {"pool2": (1, 50, 4, 4), "ip1": (1, 500)}),
    "bvlc_mnist_siamese.prototxt": Compiles((1, 2)),
    "bvlc_reference_caffenet_deploy.prototxt": Compiles((1, 1000), {"pool1": (1, 96, 27, 27), "pool5": (1, 256, 6, 6)}),
    "bvlc_reference_caffenet_deploy_v1.prototxt": Compiles((1, 1000), {"pool1": (1, 96, 27, 27), "pool5": (1, 256, 6, 6)}),
    # VGG-16 at 500x500 behind a pad of 100: built at that size, run at 1x3x96x96
    "fcn8s_voc_deploy.prototxt": Compiles(
        (1, 21, 500, 500),
        {"conv1_1": (1, 64, 698, 698), "pool5": (1, 512, 22, 22), "upscore2": (1, 21, 34, 34), "upscore8": (1, 21, 568, 568)},
        run_at=(1, 3, 96, 96),
        slow=True,
    ),
    "kaiminghe_resnet152_deploy.prototxt": Compiles((1, 1000), {"res5c": (1, 2048, 7, 7)}, slow=True),
    "kaiminghe_resnet50_deploy.prototxt": Compiles(
        (1, 1000), {"pool1": (1, 64, 56, 56), "res3d": (1, 512, 28, 28), "res5c": (1, 2048, 7, 7)}
    ),
    # SegNet's own Caffe fork: its BN (INFERENCE mode), Upsample (max-unpooling with the pooling masks)
    # and DenseImageData layers; the Upsample sizes are fixed in the file, so it runs at 360x480 only
    "segnet_inference.prototxt": Compiles(
        (1, 11, 360, 480),
        {"pool4_values": (1, 512, 23, 30), "pool5_values": (1, 512, 12, 15), "upsample5": (1, 512, 23, 30), "upsample1": (1, 64, 360, 480)},
        input_shape=(1, 3, 360, 480),
        slow=True,
    ),
    "shicai_densenet121.prototxt": Compiles(
        (1, 1000, 1, 1), {"pool1": (1, 64, 56, 56), "concat_2_6": (1, 256, 56, 56), "concat_5_16": (1, 1024, 7, 7)}, slow=True
    ),
    "shicai_mobilenet_v2_deploy.prototxt": Compiles((1, 1000, 1, 1), {"conv6_4": (1, 1280, 7, 7)}),
    "squeezenet_v1.1_deploy.prototxt": Compiles(
        (1, 1000, 1, 1), {"conv1": (1, 64, 113, 113), "pool1": (1, 64, 56, 56), "fire9_concat": (1, 512, 14, 14)}
    ),
}


#: files the repository may not carry (see tests/corpus/SOURCES): checked where a corpus adds them
NOT_BUNDLED = {
    "shicai_densenet121.prototxt": "no licence stated",
    "segnet_inference.prototxt": "CC BY-NC 4.0",
}


def _path(name):
    return FILES[name]


def test_the_table_covers_the_whole_corpus():
    bundled = sorted(f for f in os.listdir(BUNDLED) if f.endswith(".prototxt"))
    assert bundled == sorted(set(EXPECTED) - set(NOT_BUNDLED))  # the repository carries all the others
    assert set(NOT_BUNDLED) <= set(EXPECTED)
    unknown = sorted(set(FILES) - set(EXPECTED))
    assert not unknown, f"no expected outcome for {unknown} (from {corpus_dirs()}): add them to EXPECTED"


def test_the_bundled_files_are_the_ones_sources_lists():
    with open(os.path.join(BUNDLED, "SOURCES"), encoding="utf-8") as f:
        listed = {line.split(" | ")[0] for line in f if " | " in line}
    on_disk = {f for f in os.listdir(BUNDLED) if f != "SOURCES"}
    assert on_disk <= listed  # every file carried says where it comes from and under which licence
    assert set(NOT_BUNDLED) <= listed and not set(NOT_BUNDLED) & on_disk
    shared = os.path.join(SHARED, "prototxt")
    for name in sorted(on_disk):  # unchanged copies of the shared corpus, where a checkout has it beside it
        theirs = os.path.join(shared if name.endswith(".prototxt") else os.path.join(SHARED, "reference"), name)
        if os.path.exists(theirs):
            with open(os.path.join(BUNDLED, name), "rb") as mine, open(theirs, "rb") as original:
                assert mine.read() == original.read(), name


def _run_and_check_shapes(gm, x):
    """One forward pass; every node's real output shape equals the one computed while building."""
    seen = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            seen[n.name] = out.shape if isinstance(out, torch.Tensor) else None
            return out

    gm.eval()
    with torch.no_grad():
        out = Recorder(gm).run(x)
    assert {n.name: n.meta[STATIC_SHAPE_KEY] for n in gm.graph.nodes} == seen
    assert torch.isfinite(out).all()
    return out


def _params(name):
    expected = EXPECTED[name]
    marks = [pytest.mark.slow] if isinstance(expected, Compiles) and expected.slow else []
    return pytest.param(name, marks=marks, id=name)


# every file the corpus holds: the repository's (all of EXPECTED but NOT_BUNDLED: checked below),
# and the NOT_BUNDLED ones where ../shared/corpus or $AUTOMTL_CORPUS supplies them
@pytest.mark.parametrize("name", [_params(n) for n in sorted(set(EXPECTED) & set(FILES))])
def test_corpus_file(name):
    expected = EXPECTED[name]
    if isinstance(expected, Rejected):
        with pytest.raises(UnsupportedLayerError) as err:
            load_prototxt(_path(name))
        found: Dict[str, int] = {}
        for layer_name, layer_type in err.value.layers:
            found[layer_type] = found.get(layer_type, 0) + 1
            assert f"'{layer_name}'" in str(err.value)
        assert found == expected.layers
        return
    torch.manual_seed(0)
    gm = load_prototxt(_path(name), input_shape=expected.input_shape, batch_size=None if expected.input_shape else 1)
    assert gm.output_shapes == (expected.output,)
    shapes = {n.name: tuple(n.meta[STATIC_SHAPE_KEY]) for n in gm.graph.nodes if n.name in expected.blobs}
    assert shapes == expected.blobs
    if expected.run_at is not None:
        gm = load_prototxt(_path(name), input_shape=expected.run_at)
    out = _run_and_check_shapes(gm, torch.randn(gm.input_shape))
    assert out.shape == gm.output_shapes[0]


def test_a_training_net_needs_its_input_shape_and_then_equals_its_deploy_net():
    with pytest.raises(MissingInputShapeError, match=r"crops to 227x227: e\.g\. shape 1,3,227,227"):
        load_prototxt(_path("bvlc_alexnet_train_val.prototxt"))
    train = load_prototxt(_path("bvlc_alexnet_train_val.prototxt"), input_shape=(1, 3, 227, 227))
    deploy = load_prototxt(_path("bvlc_alexnet_deploy.prototxt"), batch_size=1)
    train.load_state_dict(deploy.state_dict())  # same layers, same names
    x = torch.randn(1, 3, 227, 227)
    train.eval(), deploy.eval()
    with torch.no_grad():
        assert torch.allclose(torch.softmax(train(x), 1), deploy(x), atol=1e-6)  # deploy ends with Softmax


def test_the_v1_caffenet_computes_what_the_current_one_does():
    v1 = load_prototxt(_path("bvlc_reference_caffenet_deploy_v1.prototxt"), batch_size=1)
    v2 = load_prototxt(_path("bvlc_reference_caffenet_deploy.prototxt"), batch_size=1)
    assert [n for n, _ in v1.named_children()] == [n for n, _ in v2.named_children()]
    v1.load_state_dict(v2.state_dict())
    x = torch.randn(1, 3, 227, 227)
    v1.eval(), v2.eval()
    with torch.no_grad():
        assert torch.equal(v1(x), v2(x))


def test_kaiming_he_resnet_batchnorms_absorb_their_scales():
    gm = load_prototxt(_path("kaiminghe_resnet50_deploy.prototxt"), batch_size=1)
    norms = [m for m in gm.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 53 and all(m.affine for m in norms)
    assert not any(isinstance(m, Scale) for m in gm.modules())
    assert "scale_conv1" not in dict(gm.named_children()) and "bn_conv1" in dict(gm.named_children())


@pytest.mark.parametrize("name,searchable", [
    ("automtl_deeplab_resnet34.prototxt", 36), ("automtl_mobilenetv2.prototxt", 52), ("automtl_mnasnet.prototxt", 52)
])
def test_automtl_model_files_compile_unchanged(name, searchable):
    sm = automtl.compile(_path(name), ["seg", "depth"])
    assert len(sm.searchable_nodes) == searchable
    assert sm.graph.inputs == ("data",)  # declared as "blob1", read as "data"
    norms = [m for m in sm.vcns.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.affine for m in norms)  # the dialect's BatchNorm is PyTorch's
