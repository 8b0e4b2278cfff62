"""The prototxt schema (``proto/automtl.proto``) as Python: the generated message classes and
the facts about Caffe's layer vocabulary that the front end needs (V1 type names, which
layer types are data sources, sinks or training-only)."""

from __future__ import annotations

from typing import Dict, FrozenSet, Tuple

from automtl.proto import automtl_pb2 as pb

NetParameter = pb.NetParameter
LayerParameter = pb.LayerParameter
V1LayerParameter = pb.V1LayerParameter
BlobProto = pb.BlobProto
FillerParameter = pb.FillerParameter
Phase = pb.Phase

#: The V1 format's enum layer types and the type names of the current format (as Caffe's
#: own upgrade maps them).
V1_TYPE_NAMES: Dict[str, str] = {
    "NONE": "",
    "ABSVAL": "AbsVal",
    "ACCURACY": "Accuracy",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution",
    "DATA": "Data",
    "DECONVOLUTION": "Deconvolution",
    "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise",
    "EXP": "Exp",
    "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN",
    "POOLING": "Pooling",
    "POWER": "Power",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split",
    "SLICE": "Slice",
    "TANH": "TanH",
    "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}

#: Layers whose first top is the network's input. ``Input``, ``MemoryData`` and ``DummyData``
#: declare its shape; the others read files, so the shape must be given.
INPUT_TYPES_WITH_SHAPE: FrozenSet[str] = frozenset({"Input", "MemoryData", "DummyData"})
INPUT_TYPES_READING_FILES: FrozenSet[str] = frozenset({"Data", "ImageData", "HDF5Data", "WindowData", "DenseImageData"})
INPUT_TYPES: FrozenSet[str] = INPUT_TYPES_WITH_SHAPE | INPUT_TYPES_READING_FILES

#: Layers that only exist for training a Caffe net: losses and accuracy read labels, which a
#: backbone never sees. automtl's tasks bring their own heads and losses, so these are dropped.
TRAINING_ONLY_TYPES: FrozenSet[str] = frozenset(
    {
        "Accuracy",
        "ContrastiveLoss",
        "EuclideanLoss",
        "HingeLoss",
        "InfogainLoss",
        "MultinomialLogisticLoss",
        "SigmoidCrossEntropyLoss",
        "SoftmaxWithLoss",
        "HDF5Output",
    }
)

#: Layers that consume blobs and produce nothing (their bottoms stop being net outputs).
SINK_TYPES: FrozenSet[str] = frozenset({"Silence"})

#: The fields that only the AutoMTL project's schema (zhanglijun95/AutoMTL, proto/pytorch.proto)
#: has: PyTorch's arguments. A file that sets any of them is written in that dialect, where a
#: BatchNorm follows PyTorch and a Pooling layer without round_mode rounds down (FLOOR is that
#: schema's default).
AUTOMTL_DIALECT_FIELDS: Dict[str, Tuple[str, ...]] = {
    "batch_norm_param": ("track_running_stats", "affine", "momentum"),
    "relu_param": ("inplace",),
    "elu_param": ("inplace",),
    "dropout_param": ("inplace",),
}


def uses_automtl_dialect(message) -> bool:
    """Whether a layer message sets a field of the AutoMTL dialect."""
    for field, names in AUTOMTL_DIALECT_FIELDS.items():
        if has_field(message, field):
            params = getattr(message, field)
            if any(params.HasField(n) for n in names):
                return True
    return False


_DEFAULT_LAYER = LayerParameter()


def default_params(field: str):
    """The default (empty) message of a ``LayerParameter`` parameter field, e.g.
    ``default_params("convolution_param")``."""
    return getattr(_DEFAULT_LAYER, field)


def has_field(message, field: str) -> bool:
    """``message.HasField(field)`` that is False (not an error) for fields the message's type
    does not have (the V1 layer message lacks the newer parameter fields)."""
    return field in message.DESCRIPTOR.fields_by_name and message.HasField(field)
