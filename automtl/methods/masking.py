"""Per-task binary masks over the output channels of a derived model's shared convolutions.

:func:`mask_channels` rewrites a :class:`~automtl.export.MultiTaskModel` (a torch.fx graph)
so that every task runs its own forward pass and multiplies the output of each masked layer by
its own mask, where Maximum Roaming's Eq. 2 puts it: ``σ((H_t * K) ⊙ m_t)``, the layer's
output before its non-linearity. A layer is the convolution together with the normalisation
that directly follows it (the convolution's only consumer in the task's pass), so the mask
multiplies the norm's output: ``norm(conv(h_t)) ⊙ m_t`` - a masked channel emits exactly 0,
not the norm's shift. A convolution not followed by a norm is masked on its own output. The
convolutions are not copied - every task's pass calls the same modules - and the masks are
buffers (``channel_masks.<task>.l<i>``, shaped to broadcast over the convolution's output), so
they move with ``.to()``, are saved in the ``state_dict`` and can be changed between steps
with :meth:`ChannelMaskedModel.set_masks`.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Sequence, Set, Tuple

import torch
import torch.fx
from torch import nn

from automtl.compiler.fx_frontend import ancestors
from automtl.compiler.ir import SEARCHABLE
from automtl.compiler.passes import NORM_TYPES
from automtl.errors import ConfigError
from automtl.export.derive import MultiTaskModel

if TYPE_CHECKING:  # pragma: no cover
    from automtl.supermodel import SuperModel

MASKS = "channel_masks"


class ChannelMaskedModel(MultiTaskModel):
    """A :class:`MultiTaskModel` whose tasks mask the output channels of ``mask_layers``
    (module paths of shared convolutions); ``masks()`` reads and ``set_masks()`` writes them."""

    mask_layers: Tuple[str, ...] = ()

    def __deepcopy__(self, memo: Dict[int, Any]) -> "ChannelMaskedModel":
        result = super().__deepcopy__(memo)
        result.mask_layers = tuple(self.mask_layers)
        return result

    def _buffer(self, task: str, index: int) -> torch.Tensor:
        return self.get_buffer(f"{MASKS}.{task}.l{index}")

    def masks(self) -> Dict[str, torch.Tensor]:
        """``{layer path: [tasks, channels] bool}``."""
        out = {}
        for i, path in enumerate(self.mask_layers):
            out[path] = torch.stack([self._buffer(t, i).flatten() for t in self.task_names]).bool()
        return out

    def set_masks(self, masks: Mapping[str, torch.Tensor]) -> None:
        """Set every layer's ``[tasks, channels]`` masks (0/1 or bool)."""
        with torch.no_grad():
            for i, path in enumerate(self.mask_layers):
                if path not in masks:
                    raise ConfigError(f"no mask given for the masked layer '{path}'")
                value = masks[path]
                for k, task in enumerate(self.task_names):
                    buffer = self._buffer(task, i)
                    row = value[k]
                    if row.numel() != buffer.numel():
                        raise ConfigError(f"the mask of layer '{path}' for task '{task}' has {row.numel()} channels, the layer {buffer.numel()}")
                    buffer.copy_(row.reshape(buffer.shape).to(buffer.dtype))


def maskable_layers(sm: "SuperModel") -> Dict[str, int]:
    """``{module path in a derived model: output channels}`` of the searchable convolutions
    of ``sm`` (as the shared operators of a derived model: ``shared.<path>``)."""
    layers: Dict[str, int] = {}
    for node in sm.graph:
        if node.role == SEARCHABLE and node.op == "call_module":
            op = sm.vcns[node.name].op
            if isinstance(op, nn.modules.conv._ConvNd):
                layers[f"shared.{node.target}"] = int(op.out_channels)
    return layers



def _fetch(root: Any, path: str) -> Any:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def _norm_after(conv: torch.fx.Node, wanted: Set[torch.fx.Node], modules: Mapping[str, nn.Module]) -> Optional[torch.fx.Node]:
    """The normalisation node that takes ``conv``'s output as its input, where it is the
    convolution's only consumer within one task's pass (``wanted``); else None."""
    users = [u for u in conv.users if u in wanted]
    if len(users) != 1:
        return None
    user = users[0]
    if user.op != "call_module" or not isinstance(modules.get(user.target), NORM_TYPES):  # type: ignore[arg-type]
        return None
    if not user.args or user.args[0] is not conv or conv in user.args[1:] or conv in user.kwargs.values():
        return None
    return user


def _ones(conv: nn.Module) -> torch.Tensor:
    shape = (1, conv.out_channels) + (1,) * (conv.weight.dim() - 2)
    return torch.ones(shape, dtype=conv.weight.dtype, device=conv.weight.device)


def mask_channels(model: MultiTaskModel, layers: Sequence[str]) -> ChannelMaskedModel:
    """``model`` with per-task channel masks (all ones) on the output of every call of the
    modules in ``layers`` - after the normalisation that directly follows the call, if one
    does - each task running its own pass. Parameters and buffers are shared with ``model``,
    not copied."""
    graph = model.graph
    outputs = next(n for n in graph.nodes if n.op == "output").args[0]
    if not isinstance(outputs, dict):
        raise ConfigError("mask_channels needs a derived model whose output is {task: prediction}")
    modules = dict(model.named_modules())
    index = {path: i for i, path in enumerate(layers)}
    for path in layers:
        module = modules.get(path)
        if not isinstance(module, nn.modules.conv._ConvNd):
            raise ConfigError(f"'{path}' is not a convolution of the derived model; masks go on shared convolutions")

    root: Dict[str, Any] = {}
    new = torch.fx.Graph()
    source_input = next(n for n in graph.nodes if n.op == "placeholder")
    x = new.placeholder(source_input.name)
    results: Dict[str, Any] = {}
    for task in model.task_names:
        wanted = ancestors(outputs[task]) if isinstance(outputs[task], torch.fx.Node) else set()
        env: Dict[torch.fx.Node, Any] = {source_input: x}
        masked_at: Dict[torch.fx.Node, str] = {}  # node whose output gets the mask -> mask buffer
        for node in graph.nodes:
            if node not in wanted or node.op in ("placeholder", "output"):
                continue
            if node.op == "call_module":
                root[node.target] = modules[node.target]
            elif node.op == "get_attr":
                root[node.target] = _fetch(model, node.target)
            value = new.node_copy(node, lambda n: env[n])
            if node.op == "call_module" and node.target in index:
                name = f"{MASKS}.{task}.l{index[node.target]}"
                if name not in root:
                    root[name] = _ones(modules[node.target])
                masked_at[_norm_after(node, wanted, modules) or node] = name
            if node in masked_at:
                value = new.call_function(operator.mul, (value, new.get_attr(masked_at[node])))
            env[node] = value
        results[task] = torch.fx.map_arg(outputs[task], lambda n: env[n])
    for task in model.task_names:  # a layer no pass of a task reaches still gets its buffer
        for path, i in index.items():
            name = f"{MASKS}.{task}.l{i}"
            if name not in root:
                root[name] = _ones(modules[path])
    new.output(results)
    new.lint()
    masked = ChannelMaskedModel(root, new, model.task_names, model.policy, model.usage)
    masked.mask_layers = tuple(layers)
    masked.train(model.training)
    return masked
