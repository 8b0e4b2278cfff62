"""The SuperModel: the VCN graph run for all tasks at once.

For every VCN and task, the output is a mix of three options - the backbone operator
(shared), the task's own copy, and the task's skip - weighted by the mode:

* ``warmup``: the plain average of the options (pre-train);
* ``gumbel``: Gumbel-softmax weights drawn from the policy logits at temperature τ;
* ``fixed``: one option per task and node, from a :class:`~automtl.policy.Policy`.

Work that several tasks share is done once: where tasks feed the same tensor into the same
operator (the shared operator, a parameter-free node), it runs once for all of them.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from automtl.block_skip import BlockSkip, BlockSkipPlan
from automtl.compiler.ir import FOLLOW, OPTIONS, PER_TASK, PLAIN, SEARCHABLE, IRGraph, IRNode, map_refs
from automtl.compiler.fx_frontend import fetch_attr
from automtl.compiler.skip import build_skip
from automtl.errors import CompileError, ConfigError, PolicyError
from automtl.policy import Policy
from automtl.task import Task

MODES = ("warmup", "gumbel", "fixed")


class ParamHolder(nn.Module):
    """A parameter the backbone reads directly (``get_attr``), wrapped so that it can be
    shared or copied per task like any operator."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = nn.Parameter(value.detach().clone(), requires_grad=value.requires_grad)

    def forward(self) -> torch.Tensor:
        return self.value


class VCN(nn.Module):
    """A Virtual Computation Node: the backbone operator (``op``), one copy per task
    (``copies``), one skip per task (``skips``) and, when searchable, policy ``logits`` of
    shape ``[tasks, 3]`` over (shared, own, skip).

    A task missing from ``skips`` falls back to the shared operator when it would skip (a
    parameter or a shape-changing follower has nothing to skip to).
    """

    def __init__(
        self,
        node: IRNode,
        op: nn.Module,
        copies: Dict[str, nn.Module],
        skips: Dict[str, nn.Module],
        num_tasks: int,
    ):
        super().__init__()
        self.node_name = node.name
        self.parents: Tuple[str, ...] = node.parents
        self.role = node.role
        self.follows = node.follows
        self.op = op
        self.copies = nn.ModuleDict(copies)
        self.skips = nn.ModuleDict(skips)
        self.logits: Optional[nn.Parameter] = None
        if node.role == SEARCHABLE:
            self.logits = nn.Parameter(torch.zeros(num_tasks, len(OPTIONS)))

    def extra_repr(self) -> str:
        return f"{self.node_name}, role={self.role}" + (f", follows={self.follows}" if self.follows else "")


def _tensor_arg(args: tuple) -> Any:
    for a in args:
        if isinstance(a, torch.Tensor):
            return a
    raise CompileError("internal: a skip was asked for an operator call without a tensor input")


class SuperModel(nn.Module):
    """The multi-task supermodel compiled from a backbone. Build it with :func:`automtl.compile`.

    ``forward(x)`` returns ``{task name: prediction}``.
    """

    def __init__(self, graph: IRGraph, root: nn.Module, tasks: Sequence[Task], name: str = "backbone"):
        super().__init__()
        self.graph = graph
        self.backbone_name = name
        # guesses the front end made (e.g. which blob of a prototxt file is the input), for summary()
        self.compile_notes: Tuple[str, ...] = tuple(getattr(root, "notes", ()))
        self.tasks: Tuple[Task, ...] = tuple(tasks)
        self.task_names: Tuple[str, ...] = tuple(t.name for t in tasks)
        self.vcns = nn.ModuleDict()
        self.plain = nn.ModuleDict()
        self.constants = nn.Module()
        self.heads = nn.ModuleDict({t.name: t.head if t.head is not None else nn.Identity() for t in tasks})
        self._build(root)
        self.searchable_nodes: List[str] = [n.name for n in graph.searchable()]
        if not self.searchable_nodes:
            raise CompileError(
                f"the backbone '{name}' has no searchable operators (convolutions or linear layers by "
                "default); there is no sharing policy to search. Pass searchable=(...) with the "
                "operator types to search over."
            )
        self.block_skips = BlockSkipPlan(())  # whole-block skips (AdaShare); see set_block_skips
        self._free_after = self._plan_frees()
        self.mode = "warmup"
        self.tau = 1.0
        self.hard_gumbel = False
        self.policy: Optional[Policy] = None
        self._hard: Optional[Dict[str, List[int]]] = None
        # which options may be chosen (AdaShare turns "own" off); a buffer so it moves with .to()
        self.register_buffer("allowed_options", torch.ones(len(OPTIONS), dtype=torch.bool), persistent=False)
        # the same flags on the host: reading them needs no device synchronisation, and
        # torch.compile traces forward without a graph break (no Tensor.item)
        self._allowed: Tuple[bool, ...] = (True,) * len(OPTIONS)
        self.last_weights: Optional[Dict[str, Any]] = None
        self.execution = "auto"  # see set_execution (automtl.fastpath)

    # -- construction ---------------------------------------------------------------------
    def _build(self, root: nn.Module) -> None:
        copies_of: Dict[int, Dict[str, nn.Module]] = {}  # an op called at several sites keeps one set
        for node in self.graph:
            if node.op == "call_module" and node.role == PLAIN:
                self.plain[node.name] = root.get_submodule(node.target)
            elif node.op == "get_attr" and node.role == PLAIN:
                value = fetch_attr(root, node.target)
                if isinstance(value, torch.Tensor):
                    self.constants.register_buffer(node.name, value.detach().clone())
                else:
                    setattr(self.constants, node.name, value)
            elif node.role != PLAIN:
                if node.op == "call_module":
                    op = root.get_submodule(node.target)
                else:
                    op = ParamHolder(fetch_attr(root, node.target))
                if id(op) not in copies_of:
                    copies_of[id(op)] = {t: copy.deepcopy(op) for t in self.task_names}
                self.vcns[node.name] = VCN(node, op, copies_of[id(op)], self._skips(node, op), len(self.task_names))

    def _skips(self, node: IRNode, op: nn.Module) -> Dict[str, nn.Module]:
        in_shape = node.in_shapes[0] if node.in_shapes else None
        if node.role == SEARCHABLE:
            skip = build_skip(op, in_shape, node.out_shape, node.name)
            return {t: copy.deepcopy(skip) if i else skip for i, t in enumerate(self.task_names)}
        if node.role == FOLLOW and node.op == "call_module" and in_shape is not None and in_shape == node.out_shape:
            return {t: nn.Identity() for t in self.task_names}
        return {}

    def _plan_frees(self) -> Dict[str, List[str]]:
        """After which node each value is last read, so that eval passes hold little memory."""
        last: Dict[str, str] = {}
        extra = self.block_skips.extra_reads()
        for node in self.graph:
            for parent in node.parents + ((extra[node.name],) if node.name in extra else ()):
                last[parent] = node.name
        frees: Dict[str, List[str]] = {}
        for value, reader in last.items():
            frees.setdefault(reader, []).append(value)
        return frees

    # -- properties -----------------------------------------------------------------------
    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    @property
    def search_space_size(self) -> int:
        return len(OPTIONS) ** (self.num_tasks * len(self.searchable_nodes))

    def depth(self, node: str) -> int:
        return int(self.graph[node].depth)  # type: ignore[arg-type]

    def arch_parameters(self) -> List[nn.Parameter]:
        """The policy logits, one ``[tasks, 3]`` tensor per searchable node, in depth order; a
        tensor that several nodes share (AdaShare ties the logits of a residual block) is
        listed once, so that an optimiser steps it once."""
        found: Dict[int, nn.Parameter] = {}
        for n in self.searchable_nodes:
            logits = self.vcns[n].logits
            found.setdefault(id(logits), logits)  # type: ignore[arg-type]
        return list(found.values())

    def weight_parameters(self) -> List[nn.Parameter]:
        """Every parameter that is not a policy logit (backbone, copies, skips, heads)."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.weight_parameters())

    def backbone_parameters(self) -> int:
        """Parameters of the backbone's operators, each counted once."""
        seen = {id(vcn.op): vcn.op for vcn in self.vcns.values()}
        return sum(p.numel() for op in seen.values() for p in op.parameters())

    # -- policy ---------------------------------------------------------------------------
    def set_mode(self, mode: str, tau: Optional[float] = None, policy: Optional[Policy] = None, hard: Optional[bool] = None) -> "SuperModel":
        """Switch between ``warmup``, ``gumbel`` (temperature ``tau``; ``hard=True`` for
        straight-through one-hot samples) and ``fixed`` (needs ``policy``)."""
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
        if tau is not None:
            if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
                raise ConfigError(f"tau must be a positive number, got {tau!r}")
            self.tau = float(tau)
        if hard is not None:
            self.hard_gumbel = bool(hard)
        if mode == "fixed":
            policy = policy if policy is not None else self.policy
            if policy is None:
                raise PolicyError("fixed mode needs a policy: sm.set_mode('fixed', policy=Policy.argmax(sm))")
            self._check_policy(policy)
            self.policy = policy
            self._hard = self.fixed_choices(policy)
        self.mode = mode
        return self

    def fixed_choices(self, policy: Policy) -> Dict[str, List[int]]:
        """``{node: option per task}`` under ``policy``: every searchable node, and - where the
        policy shares them (:meth:`Policy.hard_sharing`) - the per-task nodes, as shared. A
        per-task node missing from it runs each task's own copy."""
        hard = {n: [policy.choice(t, n) for t in self.task_names] for n in self.searchable_nodes}
        if policy.share_per_task:
            for name, vcn in self.vcns.items():
                if vcn.role == PER_TASK:
                    hard[name] = [0] * self.num_tasks
        return hard

    def set_allowed_options(self, options: Sequence[Union[int, str]]) -> None:
        """Restrict the options the policy can take (e.g. ``("shared", "skip")`` for AdaShare)."""
        flags = [False] * len(OPTIONS)
        for option in options:
            flags[OPTIONS.index(option) if isinstance(option, str) else int(option)] = True
        if not any(flags):
            raise ConfigError("at least one option must stay allowed")
        self.allowed_options = torch.tensor(flags, dtype=torch.bool, device=self.allowed_options.device)
        self._allowed = tuple(flags)

    @property
    def all_options_allowed(self) -> bool:
        """Whether no option is turned off (read on the host, without a device sync)."""
        return all(self._allowed)

    def set_block_skips(self, blocks: Sequence[BlockSkip]) -> None:
        """Let tasks skip whole residual blocks (:mod:`automtl.block_skip`; AdaShare finds them
        with :func:`automtl.methods.blocks.find_block_skips`); ``()`` turns it off. The
        reference path runs them (the fast path does not cover them yet)."""
        for block in blocks:
            missing = [n for n in (block.end, block.shortcut, *block.branch, *block.members) if n not in self.graph]
            if missing or not set(block.members) <= set(self.searchable_nodes):
                raise ConfigError(f"block skip {block.name} does not fit this SuperModel (unknown or unsearchable nodes: {missing or list(block.members)})")
        from automtl.fastpath import forget_plan

        self.block_skips = BlockSkipPlan(blocks)
        self._free_after = self._plan_frees()
        forget_plan(self)

    def _check_policy(self, policy: Policy) -> None:
        if tuple(policy.tasks) != self.task_names:
            raise PolicyError(f"the policy is for tasks {list(policy.tasks)}, the SuperModel has {list(self.task_names)}")
        if tuple(policy.nodes) != tuple(self.searchable_nodes):
            missing = sorted(set(self.searchable_nodes) - set(policy.nodes))
            extra = sorted(set(policy.nodes) - set(self.searchable_nodes))
            raise PolicyError(
                "the policy does not fit this SuperModel's searchable nodes"
                + (f"; missing: {', '.join(missing[:5])}" if missing else "")
                + (f"; unknown: {', '.join(extra[:5])}" if extra else "")
            )

    def _masked_logits(self, logits: torch.Tensor) -> torch.Tensor:
        if self.all_options_allowed:
            return logits
        return logits.masked_fill(~self.allowed_options, float("-inf"))

    def policy_probs(self, grad: bool = False) -> Dict[str, torch.Tensor]:
        """``{node: [tasks, 3]}`` probabilities of the options under the current logits (the
        soft policy p'); with ``grad=True`` they stay on the logits' device and in the autograd
        graph (for a regulariser), else they are detached CPU tensors."""
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            probs = {n: F.softmax(self._masked_logits(self.vcns[n].logits), dim=-1) for n in self.searchable_nodes}
        return probs if grad else {n: p.detach().cpu() for n, p in probs.items()}

    def mixing_weights(self) -> Dict[str, Any]:
        """The option weights the next forward pass uses: ``{node: rows of 3 per task}``."""
        if self.mode == "warmup":
            allowed = self._allowed
            share = 1.0 / sum(allowed)
            row = [share if a else 0.0 for a in allowed]
            return {n: [row] * self.num_tasks for n in self.searchable_nodes}
        if self.mode == "gumbel":
            drawn: Dict[int, torch.Tensor] = {}  # logits several nodes share (AdaShare's blocks): one draw
            for n in self.searchable_nodes:
                logits = self.vcns[n].logits
                if id(logits) not in drawn:
                    drawn[id(logits)] = F.gumbel_softmax(self._masked_logits(logits), tau=self.tau, hard=self.hard_gumbel, dim=-1)
            return {n: drawn[id(self.vcns[n].logits)] for n in self.searchable_nodes}
        raise ConfigError("mixing weights exist only in warmup and gumbel modes")

    # -- execution ------------------------------------------------------------------------
    def set_execution(self, execution: str) -> "SuperModel":
        """``"fast"``: the task-batched fast path (:mod:`automtl.fastpath`; a node it does not
        cover runs the reference way, see :meth:`execution_report`); ``"reference"``:
        :meth:`run_backbone`, every task on its own; ``"auto"`` (default): fast on accelerators,
        reference on the CPU, where the fast path only draws level (``bench/supermodel_step.py``)."""
        from automtl.fastpath import EXECUTIONS, forget_plan

        if execution not in EXECUTIONS:
            raise ConfigError(f"execution must be one of {EXECUTIONS}, got {execution!r}")
        forget_plan(self)
        self.execution = execution
        return self

    def execution_report(self):
        """Which nodes run on the fast path and which fall back, with why (an
        :class:`automtl.fastpath.ExecutionReport`; ``print`` it)."""
        from automtl.fastpath import report

        return report(self)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if self.mode == "fixed":
            if self._hard is None:
                raise PolicyError("fixed mode needs a policy: call sm.set_mode('fixed', policy=...)")
            outputs = self._execute(x, hard=self._hard)
        else:
            weights = self.mixing_weights()
            # kept for inspection, detached: a graph-holding attribute would pin memory and block deepcopy
            self.last_weights = {n: w.detach() if isinstance(w, torch.Tensor) else w for n, w in weights.items()}
            outputs = self._execute(x, soft=weights)
        return {name: self.heads[name](outputs[i]) for i, name in enumerate(self.task_names)}

    def _execute(self, x: torch.Tensor, soft: Optional[Dict[str, Any]] = None, hard: Optional[Dict[str, List[int]]] = None) -> List[Any]:
        from automtl.fastpath import path_for, run_fast

        if isinstance(x, torch.Tensor) and torch.compiler.is_compiling():
            # traced, a view of its own: both paths key shared work on id() of values, and
            # torch.compile would guard on the identity of the caller's tensor (a recompile per
            # batch); eager calls keep it (a task that skips everything returns the input itself)
            x = x.view_as(x)
        if isinstance(x, torch.Tensor) and not self.block_skips and path_for(self.execution, x.device) == "fast":
            return run_fast(self, x, soft=soft, hard=hard)
        return self.run_backbone(x, soft=soft, hard=hard)

    def run_backbone(
        self,
        x: torch.Tensor,
        soft: Optional[Dict[str, Any]] = None,
        hard: Optional[Dict[str, List[int]]] = None,
    ) -> List[Any]:
        """Run the VCN graph for every task; returns the backbone's output per task. Exactly
        one of ``soft`` (option weights per node and task) and ``hard`` (option indices) is given."""
        count = self.num_tasks
        env: Dict[str, List[Any]] = {}
        result: List[Any] = []
        blocks, drawn, skipped, idle = self.block_skips, soft, None, {}
        if blocks:  # a task that skips a block runs none of its branch (see automtl.block_skip)
            skipped = blocks.skipped(hard, self.task_names) if hard is not None else None
            idle = blocks.idle(skipped) if skipped is not None else {}
            soft = blocks.soften(soft, count) if soft is not None else None
        for node in self.graph:
            if node.op == "placeholder":
                env[node.name] = [x] * count
            elif node.op == "output":
                result = [map_refs(node.args[0], lambda r, t=t: env[r.name][t]) for t in range(count)]
            elif node.role == PLAIN:
                env[node.name] = self._run_plain(node, env, idle.get(node.name))
            else:
                env[node.name] = self._run_vcn(node, env, soft, hard, idle.get(node.name))
            if blocks and node.name in blocks.by_end:
                shortcut = env[blocks.by_end[node.name].shortcut]
                env[node.name] = blocks.output(node.name, env[node.name], shortcut, skipped, drawn)
            for name in self._free_after.get(node.name, ()):
                del env[name]
        return result

    def _task_inputs(self, node: IRNode, env: Dict[str, List[Any]], t: int) -> Tuple[tuple, dict, tuple]:
        read = lambda r: env[r.name][t]  # noqa: E731
        key = tuple(id(env[p][t]) for p in node.parents)
        return map_refs(node.args, read), map_refs(node.kwargs, read), key

    def _run_plain(self, node: IRNode, env: Dict[str, List[Any]], idle: Optional[List[bool]] = None) -> List[Any]:
        done: Dict[tuple, Any] = {}
        out: List[Any] = []
        for t in range(self.num_tasks):
            if idle is not None and idle[t]:  # in a block the task skips: not run
                out.append(None)
                continue
            args, kwargs, key = self._task_inputs(node, env, t)
            if key not in done:
                done[key] = self._call_plain(node, args, kwargs)
            out.append(done[key])
        return out

    def _call_plain(self, node: IRNode, args: tuple, kwargs: dict) -> Any:
        if node.op == "call_module":
            return self.plain[node.name](*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        if node.op == "get_attr":
            return getattr(self.constants, node.name)
        raise CompileError(f"internal: cannot run node '{node.name}' ({node.op})")

    def _run_vcn(
        self,
        node: IRNode,
        env: Dict[str, List[Any]],
        soft: Optional[Dict[str, Any]],
        hard: Optional[Dict[str, List[int]]],
        idle: Optional[List[bool]] = None,
    ) -> List[Any]:
        vcn = self.vcns[node.name]
        source = node.follows if node.role == FOLLOW else node.name
        # a per-task node runs each task's copy unless a fixed policy shares it (hard sharing)
        per_task = node.role == PER_TASK and (hard is None or source not in hard)
        shared_done: Dict[tuple, Any] = {}
        out: List[Any] = []
        for t, task in enumerate(self.task_names):
            if idle is not None and idle[t]:  # in a block the task skips: not run
                out.append(None)
                continue
            args, kwargs, key = self._task_inputs(node, env, t)
            if per_task:
                out.append(vcn.copies[task](*args, **kwargs))
                continue

            def option(k: int) -> Any:
                if k == 0 or (k == 2 and task not in vcn.skips):
                    if key not in shared_done:
                        shared_done[key] = vcn.op(*args, **kwargs)
                    return shared_done[key]
                if k == 1:
                    return vcn.copies[task](*args, **kwargs)
                return vcn.skips[task](_tensor_arg(args))

            if hard is not None:
                out.append(option(hard[source][t]))  # type: ignore[index]
                continue
            weights = soft[source][t]  # type: ignore[index]
            mixed = None
            for k in range(len(OPTIONS)):
                w = weights[k]
                if isinstance(w, float) and w == 0.0:
                    continue  # an option turned off (warm-up of a restricted space)
                term = w * option(k)
                mixed = term if mixed is None else mixed + term
            out.append(mixed)
        return out

    # -- derivation -----------------------------------------------------------------------
    def derive(self, policy: Policy):
        """The fixed multi-task model of ``policy`` (a :class:`~automtl.export.MultiTaskModel`)."""
        from automtl.export.derive import derive

        return derive(self, policy)

    # -- display --------------------------------------------------------------------------
    def summary(self) -> str:
        """A table of the nodes: name, operator, input and output shape, parameters, role."""
        rows = [("node", "op", "in", "out", "params", "role")]
        for node in self.graph:
            if node.op in ("placeholder", "output"):
                continue
            role = {
                SEARCHABLE: f"searchable (depth {node.depth})",
                PER_TASK: "per-task copy",
                FOLLOW: f"follows {node.follows}",
                PLAIN: "",
            }[node.role]
            rows.append(
                (
                    node.name,
                    node.description,
                    _fmt_shape(node.in_shapes[0] if node.in_shapes else None),
                    _fmt_shape(node.out_shape),
                    f"{node.num_params:,}" if node.num_params else "",
                    role,
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append("")
        lines.append(
            f"{self.num_tasks} tasks ({', '.join(self.task_names)}), {len(self.searchable_nodes)} searchable "
            f"nodes, search space 3^{self.num_tasks * len(self.searchable_nodes)}"
        )
        lines.append(
            f"parameters: backbone {self.backbone_parameters():,}, supermodel {self.num_parameters():,} "
            f"(+ {sum(p.numel() for p in self.arch_parameters()):,} policy logits)"
        )
        lines.append(str(self.execution_report()))
        lines.extend(f"note: {note}" for note in self.compile_notes)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"SuperModel of {self.backbone_name}\n" + self.summary()


def _fmt_shape(shape: Optional[torch.Size]) -> str:
    return "" if shape is None else "x".join(str(int(s)) for s in shape)
