"""The prototxt front end: Caffe-style ``.prototxt`` model files -> ``torch.fx.GraphModule``.

``load_prototxt(source)`` takes a path, prototxt text, or the name of a backbone shipped with
automtl (see :func:`shipped_backbones`) and returns a ``GraphModule`` whose ``net_name``,
``input_shape`` (batch included), ``output_shapes`` and ``output_names`` describe it.
:func:`automtl.compile` passes it on to the same IR as the torch.fx front end.

Modules: :mod:`.source` (where the text comes from), :mod:`.parse` (text -> layers),
:mod:`.layers` (Caffe layer -> torch ops), :mod:`.build` (layers -> GraphModule),
:mod:`.weights` (fillers and stored blobs), :mod:`.caffemodel` (Caffe's binary weights
files), :mod:`.cut` (``output=``: the part of the
net that computes some blobs), :mod:`.modules` / :mod:`.functional` (the Caffe
ops torch lacks), :mod:`.schema` (the generated protobuf classes), :mod:`.limits` (the sizes a
file may ask for, checked before anything is allocated).
"""

from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import torch.fx

from .build import build_graph_module
from .caffemodel import merge_caffemodel, read_caffemodel, write_caffemodel
from .cut import Outputs
from .layers import is_supported, supported_types
from .parse import NetSpec, parse_net
from .source import resolve_source, shipped_backbones

__all__ = [
    "load_prototxt", "parse_prototxt", "shipped_backbones", "supported_types", "NetSpec", "read_caffemodel",
    "write_caffemodel",
]


def parse_prototxt(source: Union[str, "os.PathLike[str]"], output: Optional[Outputs] = None) -> NetSpec:
    """Parse ``source`` (path, text or shipped name) into its layers, without building;
    ``output`` keeps only the layers those blobs need (see :mod:`.cut`)."""
    return parse_net(resolve_source(source), is_supported, output)


def load_prototxt(
    source: Union[str, "os.PathLike[str]"],
    input_shape: Optional[Sequence[int]] = None,
    *,
    batch_size: Optional[int] = None,
    output: Optional[Outputs] = None,
    weights: Optional[Union[str, "os.PathLike[str]"]] = None,
) -> torch.fx.GraphModule:
    """Build the ``GraphModule`` of a prototxt net.

    ``source`` is a path to a ``.prototxt`` file, prototxt text, or the name of a shipped
    backbone (``"deeplab_resnet34"``, ``"resnet18"``, ``"mobilenetv2"``, ``"mnasnet"``).
    ``input_shape`` (batch included) replaces the input shape the file declares; it is
    required when the file declares none (e.g. a training net reading a Data layer).
    ``batch_size`` replaces just the declared batch size. Every node's output shape for that
    input is in ``node.meta["automtl_shape"]``.
    ``output`` (a blob name or a list of them) cuts the net there: it returns those blobs, and
    the layers they do not need are dropped before any check (so unsupported heads, losses or
    proposal layers after the cut do not matter).
    ``weights`` is a Caffe ``.caffemodel`` whose blobs initialise the layers of the same names
    (shapes checked; :func:`write_caffemodel` writes one from a built net).
    Raises a :class:`automtl.errors.PrototxtError` subclass saying what is wrong and where.
    """
    net = parse_prototxt(source, output)
    if weights is not None:
        merge_caffemodel(net, weights)
    return build_graph_module(net, input_shape, batch_size=batch_size)
