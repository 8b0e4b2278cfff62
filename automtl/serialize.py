"""Compiled supermodels as files: the prototxt text, the task heads and the compile options it
was built from, plus its ``state_dict``, in a dict that ``torch.load(weights_only=True)`` reads.

    sm = compile_with_heads("deeplab_resnet34", [HeadSpec("seg", 19), HeadSpec("depth", 1)])
    save_supermodel(sm, "super.pt")
    sm = automtl.load_supermodel("super.pt")     # rebuilt, weights and policy logits loaded

Loading compiles the stored prototxt again (nothing in the file is executed as code) and
loads the weights strictly: a file from another program, another version, or with edited
contents is refused with :class:`~automtl.errors.CheckpointError`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional, Sequence, Union

import torch
from torch import nn

from automtl.compiler.passes import DEFAULT_NORM, NORM_POLICIES
from automtl.errors import AutoMTLError, CheckpointError, ConfigError
from automtl.io import atomic_torch_save, load_location, safe_torch_load
from automtl.task import Task

FORMAT = "automtl.supermodel"
VERSION = 1

PathLike = Union[str, "os.PathLike[str]"]


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """A task whose head maps the backbone's output to ``channels`` values per position: a
    1x1 convolution for a feature map, a linear layer for a vector."""

    name: str
    channels: int

    def __post_init__(self) -> None:
        if type(self.channels) is not int or self.channels < 1:
            raise ConfigError(f"task '{self.name}': the output channels must be a positive integer, got {self.channels!r}")

    def build(self, backbone_output: Sequence[int]) -> nn.Module:
        """The head for a backbone output of shape ``backbone_output`` (batch included)."""
        rank = len(backbone_output)
        if rank < 2:
            raise ConfigError(
                f"task '{self.name}': the backbone's output {list(backbone_output)} has no channel axis "
                "to put a head on"
            )
        in_channels = int(backbone_output[1])
        if rank == 2:
            return nn.Linear(in_channels, self.channels)
        convs = {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}
        if rank not in convs:
            raise ConfigError(f"task '{self.name}': no 1x1 head for a {rank}-D backbone output {list(backbone_output)}")
        return convs[rank](in_channels, self.channels, 1)

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "channels": self.channels}


def _source_text(prototxt: PathLike) -> str:
    from automtl.compiler.prototxt.source import resolve_source

    return resolve_source(prototxt).text


def compile_with_heads(
    prototxt: PathLike,
    heads: Sequence[HeadSpec],
    *,
    norm: str = DEFAULT_NORM,
    input_shape: Optional[Sequence[int]] = None,
    output: Optional[Sequence[str]] = None,
    weights: Optional[PathLike] = None,
):
    """Compile a prototxt backbone (path, text or shipped name) with a :class:`HeadSpec` head per
    task. The result remembers what it was built from, so :func:`save_supermodel` can write it.
    ``output`` cuts the net at those blobs and ``weights`` is a ``.caffemodel`` (see
    :func:`automtl.compile`); the weights are saved with the model, so a rebuild needs no file."""
    import automtl

    text = _source_text(prototxt)
    example = None if input_shape is None else torch.zeros(tuple(int(d) for d in input_shape))
    cut = None if output is None else [output] if isinstance(output, str) else list(output)
    sm = automtl.compile(text, [Task(h.name) for h in heads], example, norm=norm, output=cut, weights=weights)
    output = sm.graph[sm.graph.output].out_shape
    if output is None:
        raise ConfigError(
            f"the backbone '{sm.backbone_name}' returns several tensors; a task head needs one. Leave only "
            "one top unread (e.g. with a Silence layer on the others)"
        )
    for task, spec in zip(sm.tasks, heads):
        task.head = spec.build(output)
        sm.heads[spec.name] = task.head
    sm.compile_spec = {
        "prototxt": text,
        "tasks": [h.to_dict() for h in heads],
        "options": {"norm": norm, "input_shape": list(sm.graph[sm.graph.inputs[0]].out_shape)},
    }
    if cut is not None:  # so that the rebuild is the same net
        sm.compile_spec["options"]["output"] = cut
    return sm


def save_supermodel(sm, path: PathLike) -> None:
    """Write ``sm`` (made by :func:`compile_with_heads`) to ``path``, atomically."""
    spec = getattr(sm, "compile_spec", None)
    if spec is None:
        raise CheckpointError(
            "this SuperModel was not compiled from prototxt with HeadSpec heads (compile_with_heads / "
            "`automtl compile`), so it cannot be rebuilt from a file; save its state_dict instead"
        )
    payload = {"format": FORMAT, "version": VERSION, **spec, "state_dict": sm.state_dict()}
    atomic_torch_save(payload, path)


def _fail(path: PathLike, what: str) -> CheckpointError:
    return CheckpointError(f"{os.fspath(path)}: {what}; it was not written by `automtl compile --out` (or it was changed)")


def _check_payload(path: PathLike, payload: Any) -> None:
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise _fail(path, f"not an automtl supermodel file (no format '{FORMAT}')")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{os.fspath(path)}: supermodel file version {payload.get('version')!r}; this automtl reads version "
            f"{VERSION}. Compile the backbone again with this version"
        )
    if not isinstance(payload.get("prototxt"), str):
        raise _fail(path, "the prototxt text is missing")
    tasks = payload.get("tasks")
    if not isinstance(tasks, list) or not tasks or not all(
        isinstance(t, dict) and isinstance(t.get("name"), str) and type(t.get("channels")) is int and t["channels"] > 0
        for t in tasks
    ):
        raise _fail(path, "the task list is missing or malformed")
    options = payload.get("options")
    if not (
        isinstance(options, dict)
        and options.get("norm") in NORM_POLICIES
        and isinstance(options.get("input_shape"), list)
        and all(type(d) is int and d > 0 for d in options["input_shape"])
        and (
            "output" not in options
            or isinstance(options["output"], list) and all(isinstance(n, str) and n for n in options["output"])
        )
    ):
        raise _fail(path, "the compile options are missing or malformed")
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise _fail(path, "the weights are missing or malformed")


def load_supermodel(path: PathLike, map_location: Union[None, str, torch.device] = None):
    """Rebuild the supermodel saved at ``path`` and load its weights and policy logits, on
    the device ``map_location`` (default: the CPU)."""
    device = torch.device(load_location(map_location))
    payload = safe_torch_load(path)  # on the CPU, into the model built there, which then moves
    _check_payload(path, payload)
    heads = [HeadSpec(t["name"], t["channels"]) for t in payload["tasks"]]
    options = payload["options"]
    try:
        sm = compile_with_heads(
            payload["prototxt"], heads, norm=options["norm"], input_shape=options["input_shape"], output=options.get("output")
        )
    except AutoMTLError as exc:
        raise _fail(path, f"its stored backbone does not compile ({exc})") from exc
    try:
        sm.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise _fail(path, f"its weights do not fit the model it describes ({' '.join(first[:3])[:400]})") from exc
    return sm.to(device)
