"""Size limits that keep a hostile or mistyped prototxt from exhausting memory or time.

A file from a stranger can ask for ``num_output: 4294967295`` or an input of
``dim: 100000 dim: 100000``; building it would allocate terabytes, or a later forward pass
would. These limits are checked before anything is allocated, and the error says which limit
a layer exceeds and by how much:

* every blob holds at most ``MAX_BLOB_VALUES`` values (Caffe's own rule: a blob's count must
  fit a 32-bit int), and at most ``MAX_SAMPLE_VALUES`` per sample (the batch axis left out:
  one activation of 1 GiB of float32 per image is far beyond any backbone);
* a layer has at most ``MAX_LAYER_PARAMETERS`` parameters, the net at most
  ``MAX_NET_PARAMETERS`` (VGG-16's largest layer has 103 million, the whole net 138 million).
"""

from __future__ import annotations

import math
from typing import Sequence

from automtl.errors import InvalidLayerError

MAX_BLOB_VALUES = 2**31 - 1
MAX_SAMPLE_VALUES = 2**28
MAX_LAYER_PARAMETERS = 2**28
MAX_NET_PARAMETERS = 2**30


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def check_blob(what: str, shape: Sequence[int], error: type = InvalidLayerError, fix: str = "fix the layer's settings") -> None:
    """Raise ``error`` when a blob of ``shape`` is beyond the limits; ``what`` says whose it is
    (e.g. "label: layer 'conv1' (Convolution, line 9): its output 'conv1'"), ``fix`` what to do."""
    count = math.prod(int(d) for d in shape)
    per_sample = math.prod(int(d) for d in shape[1:]) if len(shape) > 1 else count
    if per_sample > MAX_SAMPLE_VALUES:
        raise error(
            f"{what} {_fmt(shape)} would hold {per_sample:,} values per sample, more than automtl allows "
            f"({MAX_SAMPLE_VALUES:,}: 1 GiB of float32 per image for one activation), so a forward pass "
            f"would exhaust memory; {fix}"
        )
    if count > MAX_BLOB_VALUES:
        raise error(
            f"{what} {_fmt(shape)} would hold {count:,} values, more than a blob may ({MAX_BLOB_VALUES:,}, "
            f"Caffe's limit); {fix}"
        )


def check_parameters(where: str, count: int, net_total: int) -> None:
    """Raise :class:`InvalidLayerError` when a layer with ``count`` parameters, added to the
    ``net_total`` the net has so far, is beyond the limits."""
    if count > MAX_LAYER_PARAMETERS:
        raise InvalidLayerError(
            f"{where}: would have {count:,} parameters, more than a layer may ({MAX_LAYER_PARAMETERS:,}: "
            "1 GiB of float32); check num_output, the kernel size and the input channels"
        )
    if net_total + count > MAX_NET_PARAMETERS:
        raise InvalidLayerError(
            f"{where}: brings the net to {net_total + count:,} parameters, more than a net may "
            f"({MAX_NET_PARAMETERS:,}: 4 GiB of float32); check num_output and the kernel sizes"
        )
