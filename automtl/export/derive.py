"""Derivation: a hard policy -> a fixed :class:`MultiTaskModel` (a ``torch.fx.GraphModule``).

The derived model holds only the operators some task uses. Every operator call is keyed by
(operator, inputs): when several tasks would call the same operator on the same value, the
call is emitted once and its result read by all of them - so a shared prefix of the network
runs once, and tasks part ways where their policies first differ.

Submodules are named after the backbone: ``shared.<path>`` for the backbone's own operators,
``own.<task>.<path>`` for a task's copy, ``skip.<task>.<node>`` for a down-sample skip and
``heads.<task>`` for the heads, so the generated code (``model.code``) reads like the backbone.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Dict, Hashable, List, Mapping, Optional, Sequence, Set, Tuple

import torch
import torch.fx
from torch import nn

from automtl.compiler.ir import PER_TASK, PLAIN, SEARCHABLE, IRNode, map_refs
from automtl.policy import Policy

if TYPE_CHECKING:  # pragma: no cover
    from automtl.supermodel import SuperModel


class MultiTaskModel(torch.fx.GraphModule):
    """A fixed multi-task model: ``model(x)`` returns ``{task: prediction}``.

    ``usage`` maps every submodule path to the tasks that run it; ``policy`` is the policy
    the model was derived from.
    """

    def __init__(
        self,
        root: Mapping[str, Any],
        graph: torch.fx.Graph,
        task_names: Sequence[str],
        policy: Optional[Policy],
        usage: Mapping[str, Sequence[str]],
    ):
        super().__init__(dict(root), graph, class_name="MultiTaskModel")
        self.task_names: Tuple[str, ...] = tuple(task_names)
        self.policy = policy
        self.usage: Dict[str, Tuple[str, ...]] = {k: tuple(v) for k, v in usage.items()}
        #: residual blocks (by addition node) a task may skip as a whole (automtl.block_skip)
        self.block_skips: Tuple[str, ...] = ()

    def __deepcopy__(self, memo: Dict[int, Any]) -> "MultiTaskModel":
        result = super().__deepcopy__(memo)
        for name in ("task_names", "policy", "usage", "block_skips"):
            setattr(result, name, copy.deepcopy(getattr(self, name), memo))
        return result

    def num_parameters(self, task: Optional[str] = None) -> int:
        """Parameters of the model, each counted once; with ``task``, only those the task uses."""
        if task is None:
            return sum(p.numel() for p in self.parameters())
        if task not in self.task_names:
            raise KeyError(f"no task '{task}' in this model (tasks: {', '.join(self.task_names)})")
        seen: Set[int] = set()
        total = 0
        for path, tasks in self.usage.items():
            if task not in tasks:
                continue
            obj = self.get_submodule(path) if _is_module_path(self, path) else _fetch(self, path)
            params = obj.parameters() if isinstance(obj, nn.Module) else [obj] if isinstance(obj, nn.Parameter) else []
            for p in params:
                if id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel()
        return total

    def shared_with(self) -> Dict[str, Tuple[str, ...]]:
        """Paths of the operators run by more than one task, with those tasks."""
        return {path: tasks for path, tasks in self.usage.items() if len(tasks) > 1}


def _is_module_path(root: nn.Module, path: str) -> bool:
    try:
        root.get_submodule(path)
        return True
    except AttributeError:
        return False


def _fetch(root: Any, path: str) -> Any:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def _freeze(value: Any) -> Hashable:
    """A hashable key for an argument pytree (fx Nodes hash by identity)."""
    if isinstance(value, (list, tuple)):
        return (type(value).__name__,) + tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return ("dict",) + tuple((k, _freeze(v)) for k, v in value.items())
    if isinstance(value, slice):
        return ("slice", _freeze(value.start), _freeze(value.stop), _freeze(value.step))
    try:
        hash(value)
        return (type(value).__name__, value)
    except TypeError:
        return ("id", id(value))


def _first_node(args: tuple) -> Any:
    for a in args:
        if isinstance(a, torch.fx.Node):
            return a
    raise ValueError("a skip needs a tensor input")


class _Emitter:
    """Writes the fx graph of a derived model, emitting each (operator, inputs) once."""

    def __init__(self, sm: "SuperModel"):
        self.sm = sm
        self.graph = torch.fx.Graph()
        self.root: Dict[str, Any] = {}
        self.usage: Dict[str, List[str]] = {}
        self._calls: Dict[Hashable, torch.fx.Node] = {}
        self._copy_memo: Dict[int, Any] = {}

    def _register(self, path: str, obj: Any, task: str) -> None:
        if path not in self.root:
            self.root[path] = copy.deepcopy(obj, self._copy_memo)
        users = self.usage.setdefault(path, [])
        if task not in users:
            users.append(task)

    def call(self, kind: str, target: Any, obj: Any, task: str, args: tuple, kwargs: dict) -> Any:
        key = (kind, target, _freeze(args), _freeze(kwargs))
        if kind in ("module", "attr"):
            self._register(target, obj, task)
        if key not in self._calls:
            if kind == "module":
                self._calls[key] = self.graph.call_module(target, args, kwargs)
            elif kind == "attr":
                self._calls[key] = self.graph.get_attr(target)
            elif kind == "function":
                self._calls[key] = self.graph.call_function(target, args, kwargs)
            else:
                self._calls[key] = self.graph.call_method(target, args, kwargs)
        return self._calls[key]


def derive(sm: "SuperModel", policy: Policy) -> MultiTaskModel:
    """Build the fixed multi-task model of ``policy`` from ``sm``. Its weights are copies of
    the SuperModel's, so training one leaves the other alone."""
    sm._check_policy(policy)
    hard = sm.fixed_choices(policy)
    blocks = sm.block_skips  # whole-block skips (AdaShare): a skipping task emits none of the branch
    skipped = blocks.skipped(hard, sm.task_names)
    idle_of = blocks.idle(skipped)
    emit = _Emitter(sm)
    env: Dict[str, List[Any]] = {}
    outputs: List[Any] = []
    x = emit.graph.placeholder("x")
    for node in sm.graph:
        if node.op == "placeholder":
            env[node.name] = [x] * sm.num_tasks
        elif node.op == "output":
            outputs = [map_refs(node.args[0], lambda r, t=t: env[r.name][t]) for t in range(sm.num_tasks)]
        else:
            idle = [bool(idle_of.get(node.name) and idle_of[node.name][t]) for t in range(sm.num_tasks)]
            env[node.name] = [None if idle[t] else _emit_node(emit, sm, node, t, task, env, hard) for t, task in enumerate(sm.task_names)]
            if node.name in blocks.by_end:  # a task that skips the block reads its shortcut
                env[node.name] = blocks.output(node.name, env[node.name], env[blocks.by_end[node.name].shortcut], skipped)

    results: Dict[str, Any] = {}
    for t, task in enumerate(sm.task_names):
        head = sm.heads[task]
        if isinstance(head, nn.Identity):
            results[task] = outputs[t]
        else:
            results[task] = emit.call("module", f"heads.{task}", head, task, (outputs[t],), {})
    emit.graph.output(results)
    emit.graph.lint()
    model = MultiTaskModel(emit.root, emit.graph, sm.task_names, policy, emit.usage)
    model.block_skips = tuple(b.merge for b in blocks.blocks)
    return model


def _emit_node(
    emit: _Emitter,
    sm: "SuperModel",
    node: IRNode,
    t: int,
    task: str,
    env: Dict[str, List[Any]],
    hard: Dict[str, List[int]],
) -> Any:
    args = map_refs(node.args, lambda r: env[r.name][t])
    kwargs = map_refs(node.kwargs, lambda r: env[r.name][t])
    if node.role == PLAIN:
        if node.op == "call_module":
            return emit.call("module", f"shared.{node.target}", sm.plain[node.name], task, args, kwargs)
        if node.op == "get_attr":
            return emit.call("attr", f"shared.{node.target}", getattr(sm.constants, node.name), task, (), {})
        kind = "function" if node.op == "call_function" else "method"
        return emit.call(kind, node.target, None, task, args, kwargs)

    vcn = sm.vcns[node.name]
    if node.role == PER_TASK:
        choice = hard[node.name][t] if node.name in hard else 1  # shared only under hard sharing
    else:
        choice = hard[node.name if node.role == SEARCHABLE else node.follows][t]  # type: ignore[index]
    if choice == 2 and task in vcn.skips:
        skip = vcn.skips[task]
        if isinstance(skip, nn.Identity):
            return _first_node(args)
        return emit.call("module", f"skip.{task}.{node.name}", skip, task, (_first_node(args),), {})
    module = vcn.copies[task] if choice == 1 else vcn.op
    prefix = f"own.{task}" if choice == 1 else "shared"
    if node.op == "get_attr":  # a bare parameter: read it, don't call it
        return emit.call("attr", f"{prefix}.{node.target}", module.value, task, (), {})
    return emit.call("module", f"{prefix}.{node.target}", module, task, args, kwargs)
