"""Initial values of layer parameters: Caffe's fillers, and values stored in the file.

* A filler written in the file (``weight_filler { type: "xavier" }``) initialises the
  parameter as Caffe would. Where the file gives none, the torch module keeps PyTorch's
  default initialisation (Caffe's own default, all zeros, would leave weights untrained).
* Values stored in a layer's ``blobs`` are loaded, with Caffe's layout:

  ============== =====================================================================
  Convolution,   ``blobs[0]`` weight (out, in/group, kh, kw) - for Deconvolution
  Deconvolution  (in, out/group, kh, kw), torch's layout too; ``blobs[1]`` bias
  InnerProduct   ``blobs[0]`` weight (out, in), or (in, out) with ``transpose: true``;
                 ``blobs[1]`` bias
  BatchNorm      ``blobs[0]`` = mean * s, ``blobs[1]`` = variance * s, ``blobs[2]`` = s
                 (Caffe's moving-average normaliser): running_mean = blobs[0] / s,
                 running_var = blobs[1] / s (both 0 when s = 0); a PyTorch-style
                 (AutoMTL dialect) BatchNorm may add ``blobs[3]`` weight, ``blobs[4]`` bias
  Scale          ``blobs[0]`` scale, ``blobs[1]`` bias - into the BatchNorm's weight and
                 bias when the Scale is fused into the BatchNorm before it
  Bias           ``blobs[0]`` bias
  PReLU          ``blobs[0]`` slopes
  ============== =====================================================================

Since the schema keeps Caffe's field numbers, the same mapping applies to the blobs of a
binary ``.caffemodel`` (a serialised ``NetParameter``; see :mod:`.caffemodel`). A stored blob
must have the layer's shape, up to axes of size 1.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch

from automtl.errors import InvalidLayerError, ShapeMismatchError

FILLER_TYPES = ("constant", "uniform", "gaussian", "positive_unitball", "xavier", "msra", "bilinear")


def _fans(shape: Sequence[int]):
    count = 1
    for d in shape:
        count *= int(d)
    fan_in = count // shape[0] if len(shape) else count
    fan_out = count // shape[1] if len(shape) > 1 else count
    return fan_in, fan_out


def _variance_scale(filler, shape: Sequence[int]) -> float:
    fan_in, fan_out = _fans(shape)
    norm = filler.DESCRIPTOR.fields_by_name["variance_norm"].enum_type.values_by_number[filler.variance_norm].name
    return {"FAN_IN": fan_in, "FAN_OUT": fan_out, "AVERAGE": (fan_in + fan_out) / 2.0}[norm]


def _bilinear(shape: Sequence[int]) -> torch.Tensor:
    """Caffe's bilinear up-sampling kernel, the same for every (out, in) pair."""
    kh, kw = int(shape[-2]), int(shape[-1])
    f = math.ceil(kw / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    ys = torch.arange(kh, dtype=torch.float64)
    xs = torch.arange(kw, dtype=torch.float64)
    kernel = (1 - (ys / f - c).abs())[:, None] * (1 - (xs / f - c).abs())[None, :]
    return kernel.expand(*shape).clone().float()


def fill(param: torch.Tensor, filler, where: str) -> None:
    """Initialise ``param`` in place as Caffe's filler ``filler`` would."""
    kind = filler.type
    if filler.sparse >= 0 and kind == "gaussian":
        raise InvalidLayerError(f"{where}: sparse gaussian fillers are not supported; remove `sparse`")
    _check_filler_values(filler, kind, where)
    with torch.no_grad():
        if kind == "constant":
            param.fill_(filler.value)
        elif kind == "uniform":
            param.uniform_(filler.min, filler.max)
        elif kind == "gaussian":
            param.normal_(filler.mean, filler.std)
        elif kind == "positive_unitball":
            param.uniform_(0.0, 1.0)
            flat = param.view(param.shape[0], -1) if param.dim() > 1 else param.view(1, -1)
            flat.div_(flat.sum(dim=1, keepdim=True))
        elif kind == "xavier":
            bound = math.sqrt(3.0 / _variance_scale(filler, param.shape))
            param.uniform_(-bound, bound)
        elif kind == "msra":
            param.normal_(0.0, math.sqrt(2.0 / _variance_scale(filler, param.shape)))
        elif kind == "bilinear":
            if param.dim() != 4 or param.shape[-1] != param.shape[-2]:
                raise InvalidLayerError(
                    f"{where}: the bilinear filler needs a square 2-D kernel, the parameter is {list(param.shape)}"
                )
            param.copy_(_bilinear(param.shape))
        else:
            raise InvalidLayerError(
                f"{where}: unknown filler type '{kind}'; use one of {', '.join(FILLER_TYPES)}"
            )


def _check_filler_values(filler, kind: str, where: str) -> None:
    """The settings torch's in-place fillers would reject with a bare error (or turn into
    NaN weights), refused with one that names the layer."""
    fields = {"constant": ("value",), "uniform": ("min", "max"), "gaussian": ("mean", "std")}.get(kind, ())
    for field in fields:
        value = getattr(filler, field)
        if not math.isfinite(value):
            raise InvalidLayerError(f"{where}: the {kind} filler's {field} must be a finite number, got {value}")
    if kind == "uniform" and filler.min > filler.max:
        raise InvalidLayerError(f"{where}: the uniform filler's min {filler.min:.7g} is above its max {filler.max:.7g}")
    if kind == "gaussian" and filler.std < 0:
        raise InvalidLayerError(f"{where}: the gaussian filler's std must be 0 or more, got {filler.std:.7g}")


def blob_tensor(blob, where: str = "a stored blob") -> torch.Tensor:
    """The values of a stored blob as a float tensor of the blob's shape (legacy num/channels/
    height/width shapes are read too). A shape that does not hold exactly the stored values
    is a :class:`ShapeMismatchError` (Caffe refuses such a blob too)."""
    values = list(blob.double_data) or list(blob.data)
    if blob.HasField("shape"):
        shape = [int(d) for d in blob.shape.dim]
    else:
        shape = [blob.num, blob.channels, blob.height, blob.width]
    if not values and not shape:
        return torch.zeros(0)
    if any(d < 0 for d in shape):
        raise ShapeMismatchError(f"{where}: a stored blob has the shape {shape}, with a negative dimension; fix its shape")
    if math.prod(shape) != len(values):
        raise ShapeMismatchError(
            f"{where}: a stored blob of shape {shape} should hold {math.prod(shape):,} values, it holds "
            f"{len(values):,}; fix its shape or its data"
        )
    return torch.tensor(values, dtype=torch.float32).reshape(shape)


def _without_unit_axes(shape: Sequence[int]) -> Sequence[int]:
    return [int(d) for d in shape if d != 1]


def load_blob(
    target: torch.Tensor,
    blob,
    where: str,
    what: str,
    transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    stored_shape: Optional[Sequence[int]] = None,
) -> None:
    """Copy a stored blob into ``target``. The blob has Caffe's layout ``stored_shape``
    (default: ``target``'s shape) up to axes of size 1 (Caffe's legacy 4-D shapes such as
    1x1xOUTxIN for a weight matrix, or 1xCx1x1 for a per-channel vector, are accepted)."""
    value = blob_tensor(blob, where)
    if value.numel() != target.numel():  # checked before the transform, which keeps the count
        raise ShapeMismatchError(
            f"{where}: the stored {what} has {value.numel()} values {list(value.shape)}, the layer "
            f"needs {target.numel()} {list(target.shape)}; fix the layer's settings or the blob"
        )
    expected = list(target.shape) if stored_shape is None else [int(d) for d in stored_shape]
    if _without_unit_axes(value.shape) != _without_unit_axes(expected):
        raise ShapeMismatchError(
            f"{where}: the stored {what} has the shape {list(value.shape)}, the layer needs {expected} (as many "
            "values, another layout); fix the layer's settings or the blob"
        )
    if transform is not None:
        value = transform(value)
    with torch.no_grad():
        target.copy_(value.reshape(target.shape))
