"""Caffe's trained weights: ``.caffemodel`` files.

A ``.caffemodel`` is a ``NetParameter`` in protobuf's binary encoding; its layers carry their
``blobs``. The schema keeps Caffe's field numbers, so it reads with ``NetParameter.ParseFromString``
(fields a fork numbered differently are skipped, only names and blobs are used).

* :func:`merge_caffemodel` puts each layer's blobs, matched by layer name as Caffe's
  ``CopyTrainedLayersFrom`` does, into the parsed net; the layer builders then load them with
  their shape checks (see :mod:`.weights` for the layouts). Blobs of layers the net does not
  have (losses, layers after a cut) are ignored, as Caffe ignores them.
* :func:`write_caffemodel` writes the weights of a net built by ``load_prototxt`` in Caffe's
  layout, so Caffe (and :func:`merge_caffemodel`) read them back.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Sequence, Tuple, Union

import torch
from google.protobuf.message import DecodeError
from torch import nn

from automtl.errors import PrototxtError

from .modules import Bias, Normalize, Scale
from .parse import NetSpec
from .schema import BlobProto, NetParameter

logger = logging.getLogger("automtl.prototxt")

PathLike = Union[str, "os.PathLike[str]"]

#: layer types whose layers hold parameters (a layer of these missing from a weights file is
#: reported)
PARAMETER_TYPES = frozenset(
    {"Convolution", "ConvolutionDepthwise", "Deconvolution", "InnerProduct", "BatchNorm", "BN", "Bias", "PReLU", "Normalize"}
)


def read_caffemodel(path: PathLike) -> Dict[str, List[BlobProto]]:
    """``{layer name: its blobs}`` of the layers of a ``.caffemodel`` that store some."""
    label = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise PrototxtError(f"{label}: cannot read the weights file ({exc.strerror})") from exc
    if data.startswith(b"\x89HDF"):
        raise PrototxtError(
            f"{label}: an HDF5 file (Caffe's .caffemodel.h5 snapshot format); automtl reads the binary-protobuf "
            ".caffemodel. Save the net with Caffe's default snapshot_format: BINARYPROTO"
        )
    net = NetParameter()
    try:
        net.ParseFromString(data)
    except DecodeError as exc:
        raise PrototxtError(
            f"{label}: not a Caffe .caffemodel (a binary NetParameter; protobuf says: {exc}). Pass the weights "
            "file Caffe writes (net.save, solver snapshots), not the .prototxt"
        ) from None
    found: Dict[str, List[BlobProto]] = {}
    for layer in net.layer:
        if len(layer.blobs):
            found[layer.name] = list(layer.blobs)
    for layer in net.layers:  # V1 files; V0 ones keep name and blobs in `layer`
        name, blobs = (layer.layer.name, layer.layer.blobs) if layer.HasField("layer") else (layer.name, layer.blobs)
        if len(blobs):
            found[name] = list(blobs)
    if not found:
        raise PrototxtError(
            f"{label}: holds no layer weights (no layer with blobs); is it a .caffemodel? A net description "
            "(.prototxt) parses as an empty one"
        )
    return found


def merge_caffemodel(net: NetSpec, path: PathLike) -> NetSpec:
    """Give the layers of ``net`` the blobs that the ``.caffemodel`` at ``path`` stores under
    their names (replacing any the prototxt stores). Returns ``net``."""
    stored = read_caffemodel(path)
    label = os.fspath(path)
    missing = []
    for layer in net.layers:
        blobs = stored.get(layer.name)
        if blobs is None:
            if layer.type in PARAMETER_TYPES or (layer.type == "Scale" and (len(layer.bottoms) == 1 or layer.params("scale_param").bias_term)):
                missing.append(layer.name)
            continue
        del layer.message.blobs[:]
        layer.message.blobs.extend(blobs)
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        logger.warning(
            "%s: no weights for %d layer(s) of %s (%s); they keep their initial values", label, len(missing), net.label, shown
        )
    return net


def _blob(tensor: torch.Tensor, shape: Sequence[int]) -> BlobProto:
    blob = BlobProto()
    blob.shape.dim.extend(int(d) for d in shape)
    blob.data.extend(tensor.detach().to("cpu", torch.float32).reshape(-1).tolist())
    return blob


def _per_channel(t: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, ...]]:
    """A per-channel vector in the forks' 1 x C x 1 x 1 layout."""
    return t, (1, t.numel(), 1, 1)


def layer_blobs(layer_type: str, module: nn.Module, part: str) -> List[Tuple[torch.Tensor, Tuple[int, ...]]]:
    """The blobs Caffe stores for a layer of ``layer_type`` built as ``module``: (values,
    Caffe's shape) each. ``part`` is ``"fused"`` for a Scale absorbed by the BatchNorm
    ``module``, ``"transpose"`` for an InnerProduct with ``transpose: true``."""
    if part == "fused":  # a Scale absorbed by a BatchNorm: its scale and bias live there
        return [(module.weight, tuple(module.weight.shape)), (module.bias, tuple(module.bias.shape))]
    if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
        weight = module.weight.t() if part == "transpose" else module.weight
        out = [(weight, tuple(weight.shape))]
        if module.bias is not None:
            out.append((module.bias, tuple(module.bias.shape)))
        return out
    if isinstance(module, nn.modules.batchnorm._NormBase):
        if layer_type == "BN":  # the forks' BN: 1 x C x 1 x 1 blobs
            out = [_per_channel(module.weight), _per_channel(module.bias)]
            if module.track_running_stats:  # PSPNet's: slope, bias, mean, variance
                out += [_per_channel(module.running_mean), _per_channel(module.running_var)]
            return out
        if not module.track_running_stats:
            raise PrototxtError(
                f"a BatchNorm without running statistics (track_running_stats: false) has no form in Caffe's "
                f"BatchNorm blobs (mean, variance, scale factor); it cannot be written to a .caffemodel"
            )
        channels = module.running_mean.shape
        out = [(module.running_mean, tuple(channels)), (module.running_var, tuple(channels)), (torch.ones(1), (1,))]
        if module.affine and part != "has_scale":
            out += [(module.weight, tuple(channels)), (module.bias, tuple(channels))]
        return out
    if isinstance(module, Scale):
        if layer_type == "BN":  # SegNet's BN in INFERENCE mode: scale and shift, 1 x C x 1 x 1
            return [_per_channel(module.weight), _per_channel(module.bias)]
        out = [(module.weight, tuple(module.weight.shape))]
        if module.bias is not None:
            out.append((module.bias, tuple(module.bias.shape)))
        return out
    if isinstance(module, Bias):
        return [(module.bias, tuple(module.bias.shape))]
    if isinstance(module, (nn.PReLU, Normalize)):  # one shared value is a 0-axis blob in Caffe
        shared = module.channel_shared if isinstance(module, Normalize) else module.num_parameters == 1
        return [(module.weight, () if shared else tuple(module.weight.shape))]
    raise PrototxtError(f"internal: no Caffe blob layout for a {layer_type} layer built as {type(module).__name__}")


def write_caffemodel(gm: torch.fx.GraphModule, path: PathLike) -> None:
    """Write the weights of ``gm`` (built by ``load_prototxt``) to ``path`` as a
    ``.caffemodel``, atomically: one layer per layer with parameters, named and laid out as
    Caffe names and lays them out."""
    from automtl.io import atomic_write_bytes

    params = getattr(gm, "caffe_params", None)
    if params is None:
        raise PrototxtError(
            "write_caffemodel writes nets built by automtl.compiler.prototxt.load_prototxt (they record which "
            "module holds which layer's blobs); this module was not"
        )
    net = NetParameter()
    net.name = gm.net_name
    for layer_name, layer_type, target, part in params:
        message = net.layer.add()
        message.name, message.type = layer_name, layer_type
        for tensor, shape in layer_blobs(layer_type, gm.get_submodule(target), part):
            message.blobs.append(_blob(tensor, shape))
    atomic_write_bytes(path, net.SerializeToString())
