"""Cut points: the part of a net that computes some of its blobs.

Detection and training nets end in layers that are not backbone (proposal ``Python`` layers,
``PriorBox``, ``DetectionOutput``, losses). ``output=`` (``automtl compile --until BLOB``) names
the blobs to compile up to: :func:`apply_cut` keeps only the layers those blobs need, before
any other check, so whatever comes after the cut does not matter. A blob name means its last
value in the file, as Caffe's ``net.blobs[name]`` after a forward pass (in-place layers such
as ``ReLU`` on ``conv1`` are part of ``conv1``).

:func:`suggest_cut` names, for an unsupported layer, the last blob before it whose value does
not depend on any unsupported layer: the cut that avoids them.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

from automtl.errors import PrototxtError
from automtl.registry import did_you_mean

from .schema import INPUT_TYPES, TRAINING_ONLY_TYPES

Outputs = Union[str, Sequence[str]]


def output_names(output: Outputs) -> Tuple[str, ...]:
    """``output=`` as a tuple of blob names (one name, or a list of them)."""
    names = (output,) if isinstance(output, str) else tuple(output) if isinstance(output, (list, tuple)) else None
    if not names or not all(isinstance(n, str) and n for n in names):
        raise PrototxtError(
            f"output= names the blobs to compile up to: a blob name or a list of them (e.g. output=\"conv5_3\"), got {output!r}"
        )
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise PrototxtError(f"output= names {', '.join(repr(n) for n in duplicated)} twice; name each blob once")
    return names


def needed_layers(layers: Sequence, outputs: Sequence[str]) -> Tuple[Set[int], Set[str]]:
    """The indices of the ``layers`` (in file order) that the last values of ``outputs`` need,
    and the blobs read before any of them produces it (inputs, or blobs nobody produces)."""
    wanted = set(outputs)
    keep: Set[int] = set()
    for layer in reversed(layers):
        tops = set(layer.tops)
        if wanted & tops:
            keep.add(layer.index)
            wanted -= tops
            wanted |= set(layer.bottoms)
    return keep, wanted


def apply_cut(net, output: Outputs):
    """``net`` (a :class:`~.parse.NetSpec`) with only the layers that ``output`` needs; its
    ``outputs`` are those blobs, in that order, and ``cut`` lists the layers dropped."""
    names = output_names(output)
    writers: Dict[str, object] = {}
    for layer in net.layers:
        for top in layer.tops:
            writers[top] = layer
    declared = [name for name, _ in net.inputs]
    for name in names:
        if name in writers:
            writer = writers[name]
            if writer.type in TRAINING_ONLY_TYPES:
                raise PrototxtError(
                    f"{net.label}: output '{name}' is the top of {writer.where()}, a training-only layer that "
                    "automtl drops; cut at the blob it reads instead"
                )
            if writer.type in INPUT_TYPES:
                raise PrototxtError(
                    f"{net.label}: output '{name}' is produced by the data layer {writer.where()}; cut after at "
                    "least one layer that computes something"
                )
            continue
        if name in declared:
            raise PrototxtError(
                f"{net.label}: output '{name}' is the net's input; cut after at least one layer that computes something"
            )
        raise PrototxtError(f"{net.label}: {_unknown_blob(net, name, list(writers) + declared)}")
    keep, remaining = needed_layers(net.layers, names)
    layers = [l for l in net.layers if l.index in keep]
    # inputs that the kept layers do not read go too (e.g. Faster R-CNN's `im_info`)
    inputs = [(n, s) for n, s in net.inputs if n in remaining] or list(net.inputs)
    dropped = [l for l in net.layers if l.index not in keep]
    return dataclasses.replace(net, layers=layers, inputs=inputs, outputs=names, cut=dropped)


def _unknown_blob(net, name: str, known: List[str]) -> str:
    other_phase = [l for l in net.excluded if name in l.tops]
    if other_phase:
        return (
            f"output '{name}' is produced only by {other_phase[0].where()}, which the TEST phase leaves out "
            "(include/exclude rules); name a blob of the TEST phase"
        )
    hint = did_you_mean(name, sorted(set(known)), cutoff=0.5, n=4)
    layer = next((l for l in net.layers if l.name == name and l.tops), None)
    if layer is not None:
        hint = f": '{name}' is a layer, whose top(s) are {', '.join(repr(t) for t in layer.tops)}"
    return (
        f"output '{name}' is not a blob of the net{hint}. A blob is the top of a layer (or a declared "
        "input); name one of them"
    )


def suggest_cut(layers: Sequence, is_supported: Callable[[str], bool]) -> Optional[str]:
    """For the first layer of an unsupported type: the last blob computed before it (of those
    it reads, directly or not) whose last value needs no unsupported layer, or None."""
    tainted: Dict[str, bool] = {}
    writer_position: Dict[str, int] = {}
    first_bad = None
    for position, layer in enumerate(layers):
        bad = not is_supported(layer.type)
        if bad and first_bad is None:
            first_bad = position
        value = bad or any(tainted.get(b, False) for b in layer.bottoms)
        for top in layer.tops:
            tainted[top] = value
            writer_position[top] = position
    if first_bad is None:
        return None
    before = layers[:first_bad]
    keep, _ = needed_layers(before, layers[first_bad].bottoms)
    candidates = [
        top
        for layer in before
        if layer.index in keep and layer.type not in INPUT_TYPES and layer.type not in TRAINING_ONLY_TYPES
        for top in layer.tops
        if not tainted.get(top, True)
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda blob: writer_position[blob])
