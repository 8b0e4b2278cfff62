"""The task-batched executor: the SuperModel's VCN graph run with the task axis in the tensor.

It computes what :meth:`SuperModel.run_backbone` (the reference) computes, node by node, but
holds every value once for all tasks (:mod:`automtl.fastpath.values`), so that per node:

* the shared operator runs once over every distinct input (once at all where the tasks' inputs
  are the same, e.g. at the first searchable node);
* the tasks' own copies run as one grouped operator (:mod:`automtl.fastpath.operators`);
* the skips run as one call;
* the options are mixed with the policy weights by broadcasting (``warmup``/``gumbel``), or each
  task's chosen option is picked (``fixed``).

A node the executor does not cover runs the reference way on per-task values, which are
stacked again afterwards; :func:`plan` and the last run's record say which nodes did. So does,
on the CPU, a node whose stacked tensors would exceed :func:`~automtl.fastpath.cpu_stack_limit`:
the CPU is compute-bound, so stacking gains it little, while glibc maps every large block
afresh and each of its pages faults in again (see :mod:`automtl.fastpath.cpu_memory`).
"""

from __future__ import annotations

import dataclasses
import operator
import weakref
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from automtl.compiler.ir import FOLLOW, OPTIONS, OWN, PER_TASK, PLAIN, SHARED, SKIP, IRNode, Ref, map_refs
from automtl.errors import ConfigError

from . import operators as ops
from .cpu_memory import cpu_stack_limit, format_bytes
from .plain import Call, ConstResult, NotPerSample, rule_for
from .values import Const, PerTask, Stacked, StackedTuple, Value, align, gather, join, per_task_columns, pick, renumber, split, stack_columns, stack_fresh, try_stack

if TYPE_CHECKING:  # pragma: no cover
    from automtl.supermodel import SuperModel

EXECUTIONS = ("auto", "fast", "reference")


@dataclasses.dataclass
class NodePlan:
    """How one node runs on the fast path: ``rule`` (parameter-free nodes) or ``operator`` and
    ``skip`` (VCNs); ``reason`` says why a node runs the reference way (empty when it doesn't)."""

    reason: str = ""
    rule: Any = None
    operator: Any = None
    skip: Optional[str] = None

    @property
    def fast(self) -> bool:
        return not self.reason


@dataclasses.dataclass
class ExecutionReport:
    """Which path the SuperModel takes: ``execution`` is its setting, ``path`` what that means on
    ``device`` (``"fast"`` or ``"reference"``); ``fast`` lists the nodes the task-batched executor
    covers, ``fallback`` the others with the reason (nodes that fell back in the last forward pass
    on the fast path included)."""

    execution: str
    device: str
    path: str
    fast: List[str]
    fallback: Dict[str, str]

    def __str__(self) -> str:
        total = len(self.fast) + len(self.fallback)
        if self.path == "reference":
            why = (
                "on the CPU the arithmetic sets the pace, and the fast path only matches per-task calls "
                "(bench/supermodel_step.py); sm.set_execution('fast') runs it"
                if self.execution == "auto"
                else "sm.set_execution('auto') for the fast path on accelerators"
            )
            return (
                f"execution: {self.execution} -> reference path (per task) on {self.device}: {why}; "
                f"the fast path covers {len(self.fast)}/{total} nodes"
            )
        line = f"execution: {self.execution} -> task-batched fast path on {self.device} for {len(self.fast)}/{total} nodes"
        if not self.fallback:
            return line
        shown = [f"  {name}: {why}" for name, why in list(self.fallback.items())[:20]]
        more = len(self.fallback) - len(shown)
        return "\n".join([line + f"; {len(self.fallback)} run the reference way:"] + shown + ([f"  ... and {more} more"] if more else []))


def _single_input(node: IRNode) -> bool:
    return node.op == "call_module" and len(node.args) == 1 and isinstance(node.args[0], Ref) and not node.kwargs


def _plan_vcn(sm: "SuperModel", node: IRNode) -> NodePlan:
    vcn = sm.vcns[node.name]
    if node.op != "call_module":
        return NodePlan(reason="a bare parameter (get_attr) has no task-batched form")
    if not _single_input(node):
        return NodePlan(reason="the operator takes more than one input")
    kind = ops.operator_for(vcn.op)
    if kind is None:
        return NodePlan(reason=f"no task-batched form for {type(vcn.op).__name__}")
    fits = getattr(kind, "fits", None)
    reason = fits(vcn.op, node.in_shapes[0] if node.in_shapes else None) if fits else ""
    if reason:
        return NodePlan(reason=f"{type(vcn.op).__name__}: {reason}")
    copies = [vcn.copies[t] for t in sm.task_names]
    if not ops.copies_alike(kind, [vcn.op] + copies):
        return NodePlan(reason="the task copies are configured differently from each other")
    skip = None
    if node.role != PER_TASK and len(vcn.skips):
        if len(vcn.skips) != sm.num_tasks:
            return NodePlan(reason="only some tasks have a skip")
        skip = ops.skip_kind([vcn.skips[t] for t in sm.task_names])
        if skip is None:
            return NodePlan(reason=f"no task-batched form for the skip {type(vcn.skips[sm.task_names[0]]).__name__}")
    return NodePlan(operator=kind, skip=skip)


# per SuperModel, without keeping it alive or putting closures into what torch.save pickles
_PLANS: "weakref.WeakKeyDictionary[SuperModel, Dict[str, NodePlan]]" = weakref.WeakKeyDictionary()
_FALLBACKS: "weakref.WeakKeyDictionary[SuperModel, Dict[str, str]]" = weakref.WeakKeyDictionary()


def forget_plan(sm: "SuperModel") -> None:
    """Drop the cached plan and record (after replacing operators or skips of ``sm``)."""
    _PLANS.pop(sm, None)
    _FALLBACKS.pop(sm, None)


def plan(sm: "SuperModel") -> Dict[str, NodePlan]:
    """The static part of the decision, per node (cached per SuperModel)."""
    cached = _PLANS.get(sm)
    if cached is not None:
        return cached
    found: Dict[str, NodePlan] = {}
    for node in sm.graph:
        if node.op in ("placeholder", "output"):
            continue
        if node.role == PLAIN:
            if node.op == "get_attr":
                found[node.name] = NodePlan()  # a constant: read once
                continue
            module = sm.plain[node.name] if node.op == "call_module" else None
            if module is not None and ops.BatchNormOperator.covers(module) and _single_input(node):
                # no parameters, but batch statistics: run as a shared batch norm
                found[node.name] = NodePlan(operator=ops.BatchNormOperator)
                continue
            rule, reason = rule_for(node.op, node.target, module)
            found[node.name] = NodePlan(rule=rule, reason=reason)
        else:
            found[node.name] = _plan_vcn(sm, node)
    _PLANS[sm] = found
    return found


def path_for(execution: str, device: torch.device) -> str:
    """``"fast"`` or ``"reference"``: what an execution setting runs on ``device``. ``auto`` runs
    the task-batched path on accelerators, where the number of kernel launches dominates, and the
    per-task reference path on the CPU, where convolutions cost the same arithmetic either way
    and the fast path only draws level (measured: bench/supermodel_step.py)."""
    if execution == "auto":
        return "reference" if device.type == "cpu" else "fast"
    return execution


def report(sm: "SuperModel") -> ExecutionReport:
    """The :class:`ExecutionReport` of ``sm`` (static plan plus the last fast run's fallbacks)."""
    nodes = plan(sm)
    last = _FALLBACKS.get(sm, {})
    fallback = {n: (last.get(n) or p.reason) for n, p in nodes.items() if not p.fast or n in last}
    fast = [n for n in nodes if n not in fallback]
    execution = getattr(sm, "execution", "auto")
    device = next(iter(sm.parameters())).device
    return ExecutionReport(execution, str(device), path_for(execution, device), fast, fallback)


def _hooked(modules: Sequence[nn.Module]) -> bool:
    for m in modules:
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
            return True
    return False


def _global_hooks() -> bool:
    from torch.nn.modules import module as module_module

    return bool(module_module._global_forward_hooks or module_module._global_forward_pre_hooks or module_module._global_backward_hooks)


def _plain_value(value: Any) -> bool:
    """Numbers, strings, shapes, dtypes and tuples of them: values ``==`` compares safely."""
    if isinstance(value, (tuple, list)):
        return all(_plain_value(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str, torch.dtype, torch.device))


Weight = Union[float, torch.Tensor]


class _Run:
    """One pass of the executor over the graph."""

    def __init__(self, sm: "SuperModel", x: torch.Tensor, soft: Optional[Dict[str, Any]], hard: Optional[Dict[str, List[int]]], strict: bool):
        self.sm = sm
        self.tasks = sm.num_tasks
        self.batch = x.shape[0]
        self.x = x
        self.soft = soft
        self.hard = hard
        self.strict = strict
        self.plan = plan(sm)
        self.fallbacks: Dict[str, str] = {}
        self.hooks = _global_hooks()
        self._coefficients: Dict[str, List[Optional[Weight]]] = {}
        # strict asks whether every node *can* run task-batched: no per-task runs by size then
        self.limit = cpu_stack_limit() if x.device.type == "cpu" and not strict else None

    # -- the walk ---------------------------------------------------------------------------
    def run(self) -> List[Any]:
        env: Dict[str, Value] = {}
        result: List[Any] = []
        for node in self.sm.graph:
            if node.op == "placeholder":
                env[node.name] = Stacked(self.x, (0,) * self.tasks, self.batch)
            elif node.op == "output":
                per_task = {name: split(value, self.tasks) for name, value in env.items() if name in node.refs()}
                result = [map_refs(node.args[0], lambda r, t=t: per_task[r.name][t]) for t in range(self.tasks)]
            elif reason := self._too_large(node, env):
                env[node.name] = self._fallback(node, env, reason)
            elif node.role == PLAIN:
                env[node.name] = self._plain(node, env)
            else:
                env[node.name] = self._vcn(node, env)
            for name in self.sm._free_after.get(node.name, ()):
                del env[name]
        return result

    def _too_large(self, node: IRNode, env: Dict[str, Value]) -> str:
        """Why the node runs per task for its size ("" where it does not)."""
        if self.limit is None:
            return ""
        size = self._stack_bytes(node, env)
        if size <= self.limit:
            return ""
        return f"on the CPU its stacked tensors ({format_bytes(size)}) would exceed the stack limit ({format_bytes(self.limit)})"

    def _stack_bytes(self, node: IRNode, env: Dict[str, Value]) -> int:
        """About the largest tensor the node holds on the fast path: its inputs stacked, or its
        output (sized from the shapes recorded at compile time) for every distinct value."""
        stacked, per_task, distinct = 0, 0, 1
        for p in node.parents:
            value = env[p]
            if isinstance(value, Stacked):
                size, count = value.data.numel() * value.data.element_size(), value.count
            elif isinstance(value, PerTask) and isinstance(value.values[0], torch.Tensor):
                first = value.values[0]
                count = len({id(v) for v in value.values})
                size = first.numel() * first.element_size() * count
            else:
                continue
            stacked, per_task, distinct = max(stacked, size), max(per_task, size // count), max(distinct, count)
        growth = 1.0
        if node.out_shape is not None and node.in_shapes and node.in_shapes[0] is not None and node.in_shapes[0].numel():
            growth = node.out_shape.numel() / node.in_shapes[0].numel()
        outputs = self.tasks if node.role != PLAIN else distinct  # a VCN mixes a value per task
        return max(stacked, int(per_task * growth * outputs))

    def _fallback(self, node: IRNode, env: Dict[str, Value], reason: str) -> Value:
        if self.strict:
            raise ConfigError(
                f"node '{node.name}' ({node.description}) cannot run on the fast path: {reason}. "
                "Without strict=True such nodes run the reference way."
            )
        self.fallbacks[node.name] = reason
        lists = {p: split(env[p], self.tasks) for p in node.parents}
        if node.role == PLAIN:
            out = self.sm._run_plain(node, lists)
        else:
            out = self.sm._run_vcn(node, lists, self.soft, self.hard)
        from_input = any(not isinstance(env[p], Const) for p in node.parents)
        return join(out, from_input)

    def _resolve(self, value: Value) -> Optional[Union[Stacked, Const]]:
        """A per-task list as a stacked or constant value, where it is one (a tuple of stacked
        tensors is none: only ``getitem`` reads it as it is)."""
        if isinstance(value, StackedTuple):
            return None
        if not isinstance(value, PerTask):
            return value
        stacked = try_stack(value.values, self.batch)
        if stacked is not None:
            return stacked
        first = value.values[0]
        if _plain_value(first) and all(_plain_value(v) and v == first for v in value.values[1:]):
            return Const(first)
        return None

    # -- parameter-free nodes -------------------------------------------------------------
    def _plain(self, node: IRNode, env: Dict[str, Value]) -> Value:
        if node.op == "get_attr":
            return Const(getattr(self.sm.constants, node.name))
        if node.target is operator.getitem and isinstance(env.get(node.parents[0]), StackedTuple):
            index = node.args[1]
            if isinstance(index, int) and not isinstance(index, bool):
                return env[node.parents[0]].items[index]  # type: ignore[union-attr]
        inputs: Dict[str, Union[Stacked, Const]] = {}
        for p in node.parents:
            resolved = self._resolve(env[p])
            if resolved is None:
                return self._fallback(node, env, f"its input '{p}' is not one tensor per task")
            inputs[p] = env[p] = resolved  # stacked once, for every reader
        if all(isinstance(v, Const) for v in inputs.values()):
            args = map_refs(node.args, lambda r: inputs[r.name].value)  # type: ignore[union-attr]
            kwargs = map_refs(node.kwargs, lambda r: inputs[r.name].value)  # type: ignore[union-attr]
            return Const(self.sm._call_plain(node, args, kwargs))
        node_plan = self.plan[node.name]
        if not node_plan.fast:
            return self._fallback(node, env, node_plan.reason)
        if node.op == "call_module" and (self.hooks or _hooked([self.sm.plain[node.name]])):
            return self._fallback(node, env, "the module has hooks, which must see each task's batch")
        if node_plan.operator is not None:  # a parameter-free batch norm
            x = inputs[node.parents[0]]
            if not isinstance(x, Stacked):
                return self._fallback(node, env, "its input is not one tensor per task")
            columns, where = pick(x, list(range(self.tasks)))
            out = node_plan.operator.shared(self.sm.plain[node.name], columns)
            return stack_fresh(out, where, self.batch)
        names = [p for p in node.parents if isinstance(inputs[p], Stacked)]
        datas, slots = align([inputs[p] for p in names])  # type: ignore[misc]
        physical = dict(zip(names, datas))
        read = lambda r: physical[r.name] if r.name in physical else inputs[r.name].value  # type: ignore[union-attr]  # noqa: E731
        args, kwargs = map_refs(node.args, read), map_refs(node.kwargs, read)
        module = self.sm.plain[node.name] if node.op == "call_module" else None
        call = Call({id(d) for d in datas}, self.batch, module)
        try:
            answer = node_plan.rule(call, args, kwargs)
        except NotPerSample as exc:
            return self._fallback(node, env, str(exc))
        if isinstance(answer, ConstResult):
            return Const(answer.value)
        args, kwargs = answer
        out = self.sm._call_plain(node, args, kwargs)
        rows = self.batch * (max(slots) + 1)
        if isinstance(out, (tuple, list)) and out and all(isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape[0] == rows for t in out):
            return StackedTuple([Stacked(t, slots, self.batch) for t in out])
        if not (isinstance(out, torch.Tensor) and out.dim() > 0 and out.shape[0] == rows):
            raise ConfigError(
                f"internal: node '{node.name}' ({node.description}) gave {type(out).__name__} "
                f"{list(out.shape) if isinstance(out, torch.Tensor) else ''} on the fast path; "
                "please report this backbone, and use sm.set_execution('reference') meanwhile"
            )
        return Stacked(out, slots, self.batch)

    # -- VCNs -----------------------------------------------------------------------------
    def _vcn(self, node: IRNode, env: Dict[str, Value]) -> Value:
        node_plan = self.plan[node.name]
        if not node_plan.fast:
            return self._fallback(node, env, node_plan.reason)
        vcn = self.sm.vcns[node.name]
        if self.hooks or _hooked([vcn.op, *vcn.copies.values(), *vcn.skips.values()]):
            return self._fallback(node, env, "the operator or its copies have hooks, which must see each task's batch")
        x = self._resolve(env[node.parents[0]])
        if not isinstance(x, Stacked):
            return self._fallback(node, env, "its input is not one tensor per task")
        env[node.parents[0]] = x
        kind = node_plan.operator
        everyone = list(range(self.tasks))
        source = node.follows if node.role == FOLLOW else node.name
        if node.role == PER_TASK and (self.hard is None or source not in self.hard):  # shared only by a hard-sharing policy
            columns, _ = self._option(OWN, vcn, kind, node_plan.skip, x, everyone)
            return stack_fresh(columns, tuple(everyone), self.batch)
        if self.hard is not None:
            return self._select(vcn, kind, node_plan.skip, x, list(self.hard[source]))  # type: ignore[index]
        return self._mix(vcn, kind, node_plan.skip, x, self._weights(source))  # type: ignore[arg-type]

    def _option(self, k: int, vcn, kind, skip: Optional[str], x: Stacked, tasks: List[int]) -> Tuple[torch.Tensor, Tuple[int, ...]]:
        """Option ``k`` for ``tasks``: ``[B, n, ...]`` columns and, per task, its column."""
        names = self.sm.task_names
        if k == SKIP and skip is None:
            k = SHARED  # nothing to skip to: the reference path runs the operator
        if k == SHARED:
            columns, where = pick(x, tasks)
            return kind.shared(vcn.op, columns), where
        if k == OWN:
            out = kind.own([vcn.copies[names[t]] for t in tasks], per_task_columns(x, tasks))
            return out, tuple(range(len(tasks)))
        if skip == ops.IDENTITY:
            return pick(x, tasks)
        skips = [vcn.skips[names[t]] for t in tasks]
        if skip == ops.LINEAR_PROJECTION:
            out = ops.project(skip, skips, per_task_columns(x, tasks))
            return out, tuple(range(len(tasks)))
        columns, where = pick(x, tasks)
        taps = ops.unflat(skips[0].taps(ops.flat(columns)) if skip == ops.CONV_PROJECTION else skips[0](ops.flat(columns)), self.batch)
        if skip == ops.CONV_TAPS:
            return taps, where
        picked = gather(taps, where[:1]) if len(set(where)) == 1 else gather(taps, where)
        return ops.project(skip, skips, picked), tuple(range(len(tasks)))

    # -- warmup / gumbel: mix every option --------------------------------------------------
    def _weights(self, source: str) -> List[Optional[Weight]]:
        """Per option: None (off for every task), one float for every task, or a ``[T]`` tensor."""
        if source in self._coefficients:
            return self._coefficients[source]
        weights = self.soft[source]  # type: ignore[index]
        found: List[Optional[Weight]]
        if isinstance(weights, torch.Tensor):
            found = [weights[:, k] for k in range(len(OPTIONS))]
        else:
            rows = [list(row) for row in weights]
            numbers = all(isinstance(w, (int, float)) for row in rows for w in row)
            if numbers and all(row == rows[0] for row in rows):
                found = [None if float(w) == 0.0 else float(w) for w in rows[0]]
            else:
                dtype = self.x.dtype if self.x.is_floating_point() else torch.get_default_dtype()
                table = torch.stack([torch.stack([torch.as_tensor(w, dtype=dtype, device=self.x.device) for w in row]) for row in rows])
                off = [numbers and all(float(row[k]) == 0.0 for row in rows) for k in range(len(OPTIONS))]
                found = [None if off[k] else table[:, k] for k in range(len(OPTIONS))]
        self._coefficients[source] = found
        return found

    def _mix(self, vcn, kind, skip: Optional[str], x: Stacked, weights: List[Optional[Weight]]) -> Stacked:
        everyone = list(range(self.tasks))
        out: Optional[torch.Tensor] = None
        shared: Optional[Tuple[torch.Tensor, Tuple[int, ...]]] = None
        for k, w in enumerate(weights):
            if w is None:
                continue
            if k == SHARED or (k == SKIP and skip is None):
                if shared is None:
                    shared = self._option(SHARED, vcn, kind, skip, x, everyone)
                columns, where = shared
            else:
                columns, where = self._option(k, vcn, kind, skip, x, everyone)
            # [B, 1, ...] where every task sees the same value, else [B, T, ...] in task order
            columns = gather(columns, where[:1]) if len(set(where)) == 1 else gather(columns, where)
            out = _accumulate(out, columns, w)
        if out is None:
            raise ConfigError(f"node '{vcn.node_name}': every option has weight 0")
        slots = (0,) * self.tasks if out.shape[1] == 1 else tuple(everyone)
        return stack_fresh(out, slots, self.batch)

    # -- fixed: each task's chosen option ---------------------------------------------------
    def _select(self, vcn, kind, skip: Optional[str], x: Stacked, choices: List[int]) -> Stacked:
        if skip is None:
            choices = [SHARED if c == SKIP else c for c in choices]
        results: Dict[int, Tuple[torch.Tensor, Dict[int, int]]] = {}
        for k in sorted(set(choices)):
            tasks = [t for t, c in enumerate(choices) if c == k]
            columns, where = self._option(k, vcn, kind, skip, x, tasks)
            results[k] = (columns, dict(zip(tasks, where)))
        slots, keys = renumber([(c, results[c][1][t]) for t, c in enumerate(choices)])
        pieces: List[torch.Tensor] = []
        run: List[Tuple[int, int]] = []
        for key in keys + [(-1, -1)]:  # gather runs of the same option, then join them
            if run and key[0] != run[0][0]:
                pieces.append(gather(results[run[0][0]][0], [col for _, col in run]))
                run = []
            run.append(key)
        columns = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)
        return stack_columns(columns, slots, self.batch)


def _accumulate(out: Optional[torch.Tensor], columns: torch.Tensor, w: Weight) -> torch.Tensor:
    """``out + w * columns`` (``w`` per task on axis 1), in place where shapes allow."""
    if isinstance(w, torch.Tensor):
        # the reference multiplies by 0-d weights, which do not promote a half-precision option
        w = w.to(columns.dtype).reshape((1, -1) + (1,) * (columns.dim() - 2))
    if out is None:
        return columns * w
    if isinstance(w, torch.Tensor):
        return out.addcmul_(columns, w) if _broadcasts_to(out.shape, columns.shape, w.shape) else out + columns * w
    return out.add_(columns, alpha=w) if _broadcasts_to(out.shape, columns.shape) else out + columns * w


def _broadcasts_to(target: torch.Size, *shapes: torch.Size) -> bool:
    """Whether ``shapes`` broadcast to ``target`` itself, so an in-place update of a ``target``
    tensor can take them (``torch.broadcast_shapes`` costs ~0.1 ms a call: ~5% of a fast
    forward of a small MobileNetV2)."""
    for shape in shapes:
        if len(shape) > len(target):
            return False
        if any(n != 1 and n != m for n, m in zip(reversed(shape), reversed(target))):
            return False
    return True


def run_fast(
    sm: "SuperModel",
    x: torch.Tensor,
    soft: Optional[Dict[str, Any]] = None,
    hard: Optional[Dict[str, List[int]]] = None,
    strict: bool = False,
) -> List[Any]:
    """What ``sm.run_backbone(x, soft=..., hard=...)`` returns, computed task-batched. With
    ``strict`` a node the executor does not cover raises :class:`ConfigError` instead of running
    the reference way."""
    if (soft is None) == (hard is None):
        raise ConfigError("run_fast needs exactly one of soft= (option weights) and hard= (option indices)")
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        raise ConfigError(f"the SuperModel's input must be a batched tensor, got {type(x).__name__}")
    run = _Run(sm, x, soft, hard, strict)
    try:
        return run.run()
    finally:
        _FALLBACKS[sm] = run.fallbacks
