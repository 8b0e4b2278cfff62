"""``automtl.compile``: a backbone and a list of tasks -> a :class:`SuperModel`."""

from __future__ import annotations

import copy
import os
from typing import Iterable, Optional, Sequence, Type, Union

import torch
from torch import nn

from automtl.compiler.fx_frontend import LeafSpec, graph_from_module, trace_module
from automtl.compiler.passes import DEFAULT_NORM, DEFAULT_SEARCHABLE, assign_roles, check_batched
from automtl.errors import CompileError
from automtl.supermodel import SuperModel
from automtl.task import Task, as_tasks

Backbone = Union[nn.Module, str, os.PathLike]


def compile(  # noqa: A001 - the public name the design asks for
    backbone: Backbone,
    tasks: Iterable[Union[Task, str]],
    example_input: Optional[torch.Tensor] = None,
    *,
    searchable: Sequence[Type[nn.Module]] = DEFAULT_SEARCHABLE,
    norm: str = DEFAULT_NORM,
    leaf_modules: Iterable[LeafSpec] = (),
    output: Optional[Union[str, Sequence[str]]] = None,
    weights: Optional[Union[str, os.PathLike]] = None,
) -> SuperModel:
    """Compile ``backbone`` into a multi-task :class:`SuperModel` for ``tasks``.

    ``backbone`` is an ``nn.Module`` (traced with torch.fx; the original is left untouched)
    or a prototxt model: a path to a ``.prototxt`` file, its text, or the name of a backbone
    shipped with automtl (``"deeplab_resnet34"``, ``"resnet18"``, ``"mobilenetv2"``,
    ``"mnasnet"``; see :func:`automtl.compiler.prototxt.load_prototxt`).

    * ``example_input``: a tensor the backbone accepts; it fixes the shapes (and so the skip
      down-samples). Required for an ``nn.Module``; a prototxt file declares its input, and
      an example input overrides it.
    * ``searchable``: operator types that get a per-task policy (conv and linear by default).
    * ``norm``: ``"follow"`` (default) makes a normalisation layer take the choice of the
      operator it normalises, so an all-shared policy is the backbone itself and a shared prefix
      runs once; ``"per_task"`` gives every task its own copy of each normalisation layer
      whatever the policy (the original AutoMTL code's default: batch statistics per task);
      ``"search"`` gives each normalisation layer a policy of its own (shared / own / skip,
      where skipping a norm is the identity). A norm with no single feeding operator follows
      the rule of :func:`automtl.compiler.passes.assign_roles`.
    * ``leaf_modules``: module classes or paths kept whole instead of traced through.
    * ``output`` (prototxt only): a blob name, or a list of them, to compile up to; layers
      those blobs do not need are dropped before any check (``automtl compile --until``).
    * ``weights`` (prototxt only): a Caffe ``.caffemodel`` whose blobs initialise the layers
      of the same names (``automtl compile --weights``).
    """
    task_list = as_tasks(tasks)
    if isinstance(backbone, nn.Module):
        if example_input is None:
            raise CompileError(
                "automtl.compile needs example_input= for an nn.Module backbone (e.g. "
                "torch.randn(2, 3, 224, 224)): it fixes every operator's shape"
            )
        if output is not None or weights is not None:
            raise CompileError(
                "output= and weights= apply to prototxt backbones; an nn.Module already has its weights, "
                "and its features are cut with torchvision's create_feature_extractor"
            )
        name = type(backbone).__name__
        gm = trace_module(copy.deepcopy(backbone), leaf_modules)
    elif isinstance(backbone, (str, os.PathLike)):
        from automtl.compiler.prototxt import load_prototxt

        if example_input is not None and not isinstance(example_input, torch.Tensor):
            raise CompileError(f"example_input must be a torch.Tensor, got {type(example_input).__name__}")
        if example_input is None:  # the declared shape at batch 1: shapes are all the compiler needs
            gm = load_prototxt(backbone, batch_size=1, output=output, weights=weights)
            example_input = torch.randn(*gm.input_shape)
        else:  # the example's shape replaces the declared one (channels included)
            gm = load_prototxt(backbone, input_shape=tuple(example_input.shape), output=output, weights=weights)
        name = gm.net_name
    else:
        raise CompileError(
            f"cannot compile a {type(backbone).__name__}: pass an nn.Module, a .prototxt path or prototxt text"
        )
    if not isinstance(example_input, torch.Tensor):
        raise CompileError(f"example_input must be a torch.Tensor, got {type(example_input).__name__}")
    graph = graph_from_module(gm, [example_input], name=name)
    check_batched(graph, gm)
    assign_roles(graph, gm, searchable=searchable, norm=norm)
    return SuperModel(graph, gm, task_list, name=name)
