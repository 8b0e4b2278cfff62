"""A sharing policy: for every task and searchable node, one of shared / own / skip.

A :class:`Policy` is a plain value, kept apart from the model's weights: it can be built from a
SuperModel's logits (:meth:`Policy.argmax`, :meth:`Policy.sample`), written to and read from
JSON, and handed to :meth:`SuperModel.derive`.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch

from automtl.compiler.ir import OPTIONS, PER_TASK
from automtl.errors import PolicyError
from automtl.registry import did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    from automtl.supermodel import SuperModel

FORMAT = "automtl.policy"
VERSION = 1


def _did_you_mean(name: str, choices: Sequence[str]) -> str:
    return did_you_mean(name, choices)


class Policy:
    """Per task, per searchable node: the chosen option (0 shared, 1 own, 2 skip), and
    optionally the distribution it was drawn from.

    ``share_per_task``: whether the SuperModel's per-task nodes (normalisation layers compiled
    with ``norm="per_task"``, and parameters with no operator to follow), which otherwise run a
    copy per task whatever the policy, are shared too. :meth:`hard_sharing` sets it: the
    multi-task baseline, one backbone - normalisation included - under the task heads.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        nodes: Sequence[str],
        choices: Mapping[str, Mapping[str, int]],
        probs: Optional[Mapping[str, Mapping[str, Sequence[float]]]] = None,
        share_per_task: bool = False,
    ):
        if not isinstance(share_per_task, bool):
            raise PolicyError(f"share_per_task must be true or false, got {share_per_task!r}")
        self.share_per_task = share_per_task
        self.tasks: Tuple[str, ...] = tuple(tasks)
        self.nodes: Tuple[str, ...] = tuple(nodes)
        self._choices: Dict[str, Dict[str, int]] = {}
        for task in self.tasks:
            if task not in choices:
                raise PolicyError(f"the policy gives no choices for task '{task}'")
            row = {}
            for node in self.nodes:
                if node not in choices[task]:
                    raise PolicyError(f"the policy gives no choice for task '{task}' at node '{node}'")
                row[node] = _option_index(choices[task][node], f"task '{task}', node '{node}'")
            self._choices[task] = row
        self.probs: Optional[Dict[str, Dict[str, Tuple[float, ...]]]] = None
        if probs is not None:
            self.probs = {t: {n: tuple(float(p) for p in probs[t][n]) for n in self.nodes} for t in self.tasks}

    # -- access ---------------------------------------------------------------------------
    def choice(self, task: str, node: str) -> int:
        return self._choices[task][node]

    def option(self, task: str, node: str) -> str:
        return OPTIONS[self._choices[task][node]]

    def as_table(self) -> Dict[str, Dict[str, int]]:
        return {t: dict(row) for t, row in self._choices.items()}

    def count(self, option: Union[int, str]) -> int:
        """How many (task, node) pairs choose ``option``."""
        index = _option_index(option, "count()")
        return sum(c == index for row in self._choices.values() for c in row.values())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Policy) and (self.tasks, self.nodes, self._choices, self.share_per_task) == (
            other.tasks,
            other.nodes,
            other._choices,
            other.share_per_task,
        )

    def __hash__(self) -> int:
        return hash((self.tasks, self.nodes, tuple(tuple(r.values()) for r in self._choices.values()), self.share_per_task))

    def __repr__(self) -> str:
        counts = ", ".join(f"{name} {self.count(i)}" for i, name in enumerate(OPTIONS))
        extra = "; per-task nodes shared" if self.share_per_task else ""
        return f"Policy({len(self.tasks)} tasks x {len(self.nodes)} nodes: {counts}{extra})"

    # -- constructors ---------------------------------------------------------------------
    @classmethod
    def constant(cls, sm: "SuperModel", option: Union[int, str]) -> "Policy":
        index = _option_index(option, "Policy.constant")
        nodes = sm.searchable_nodes
        return cls(sm.task_names, nodes, {t: {n: index for n in nodes} for t in sm.task_names})

    @classmethod
    def all_shared(cls, sm: "SuperModel") -> "Policy":
        return cls.constant(sm, 0)

    @classmethod
    def hard_sharing(cls, sm: "SuperModel") -> "Policy":
        """Hard parameter sharing: every searchable node shared and the per-task nodes shared
        too (``share_per_task``), so the derived model is the backbone - normalisation layers
        included, whatever the ``norm`` mode - under the task heads. Where the SuperModel has no
        per-task nodes (the default ``norm="follow"``) this is :meth:`all_shared`."""
        nodes = sm.searchable_nodes
        per_task = any(vcn.role == PER_TASK for vcn in sm.vcns.values())
        return cls(sm.task_names, nodes, {t: {n: 0 for n in nodes} for t in sm.task_names}, share_per_task=per_task)

    @classmethod
    def all_own(cls, sm: "SuperModel") -> "Policy":
        return cls.constant(sm, 1)

    @classmethod
    def all_skip(cls, sm: "SuperModel") -> "Policy":
        return cls.constant(sm, 2)

    @classmethod
    def argmax(cls, sm: "SuperModel") -> "Policy":
        """The most probable option everywhere under the SuperModel's current logits."""
        probs = sm.policy_probs()
        choices = {t: {n: int(torch.argmax(p[i])) for n, p in probs.items()} for i, t in enumerate(sm.task_names)}
        return cls(sm.task_names, sm.searchable_nodes, choices, _probs_table(sm, probs))

    @classmethod
    def sample(cls, sm: "SuperModel", seed: int = 0) -> "Policy":
        """One draw from the SuperModel's policy distribution, reproducible from ``seed``."""
        generator = torch.Generator().manual_seed(int(seed))
        probs = sm.policy_probs()
        choices: Dict[str, Dict[str, int]] = {t: {} for t in sm.task_names}
        for node, p in probs.items():
            drawn = torch.multinomial(p, 1, generator=generator).squeeze(1)
            for i, task in enumerate(sm.task_names):
                choices[task][node] = int(drawn[i])
        return cls(sm.task_names, sm.searchable_nodes, choices, _probs_table(sm, probs))

    @classmethod
    def random(cls, sm: "SuperModel", seed: int = 0, options: Sequence[int] = (0, 1, 2)) -> "Policy":
        """Options drawn uniformly from ``options`` (for tests and baselines)."""
        generator = torch.Generator().manual_seed(int(seed))
        allowed = torch.tensor(list(options))
        choices = {
            t: {n: int(allowed[torch.randint(len(allowed), (1,), generator=generator)]) for n in sm.searchable_nodes}
            for t in sm.task_names
        }
        return cls(sm.task_names, sm.searchable_nodes, choices)

    @classmethod
    def from_dict(cls, sm: "SuperModel", data: Mapping[str, Any]) -> "Policy":
        """Read a policy written by :meth:`to_dict`, or a bare ``{task: {node: option}}``
        mapping, and check it against ``sm``."""
        if not isinstance(data, Mapping):
            raise PolicyError(f"a policy must be a mapping, got {type(data).__name__}")
        table: Any = data
        share_per_task = False
        if "format" in data:  # the form to_dict writes; else a bare {task: {node: option}}
            if data["format"] != FORMAT or data.get("version") != VERSION:
                raise PolicyError(
                    f"not a policy this version reads: format {data.get('format')!r} version "
                    f"{data.get('version')!r} (expected {FORMAT!r} version {VERSION})"
                )
            table = data.get("tasks")
            share_per_task = data.get("share_per_task", False)  # absent in files before it existed
            if not isinstance(share_per_task, bool):
                raise PolicyError(f"the policy's 'share_per_task' must be true or false, got {share_per_task!r}")
            if not isinstance(table, Mapping):
                raise PolicyError("the policy has no 'tasks' mapping")
        for task in table:
            if task not in sm.task_names:
                raise PolicyError(
                    f"the policy names task '{task}', which the SuperModel does not have"
                    f"{_did_you_mean(task, sm.task_names)}; its tasks are {', '.join(sm.task_names)}"
                )
        choices: Dict[str, Dict[str, int]] = {}
        probs: Dict[str, Dict[str, Sequence[float]]] = {}
        for task in sm.task_names:
            if task not in table:
                raise PolicyError(f"the policy gives no choices for task '{task}'")
            row = table[task]
            if not isinstance(row, Mapping):
                raise PolicyError(
                    f"the policy's entry for task '{task}' must map nodes to options, got {type(row).__name__}"
                )
            for node in row:
                if node not in sm.searchable_nodes:
                    raise PolicyError(
                        f"the policy names node '{node}' for task '{task}', which is not a searchable "
                        f"node of the SuperModel{_did_you_mean(node, sm.searchable_nodes)}"
                    )
            choices[task] = {}
            for node in sm.searchable_nodes:
                if node not in row:
                    raise PolicyError(f"the policy gives no choice for task '{task}' at node '{node}'")
                entry = row[node]
                if isinstance(entry, Mapping):
                    choices[task][node] = entry.get("choice")  # type: ignore[assignment]
                    if "probs" in entry:
                        probs.setdefault(task, {})[node] = entry["probs"]
                else:
                    choices[task][node] = entry
        full = len(probs) == len(sm.task_names) and all(len(r) == len(sm.searchable_nodes) for r in probs.values())
        return cls(sm.task_names, sm.searchable_nodes, choices, probs if full else None, share_per_task=share_per_task)

    @classmethod
    def load(cls, sm: "SuperModel", path: Union[str, os.PathLike]) -> "Policy":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            raise PolicyError(f"cannot read the policy file {os.fspath(path)}: {exc}") from exc
        return cls.from_dict(sm, data)

    # -- serialisation --------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        tasks: Dict[str, Dict[str, Any]] = {}
        for task in self.tasks:
            row: Dict[str, Any] = {}
            for node in self.nodes:
                entry: Dict[str, Any] = {"choice": OPTIONS[self._choices[task][node]]}
                if self.probs is not None:
                    entry["probs"] = [round(p, 6) for p in self.probs[task][node]]
                row[node] = entry
            tasks[task] = row
        out = {"format": FORMAT, "version": VERSION, "options": list(OPTIONS), "nodes": list(self.nodes), "tasks": tasks}
        if self.share_per_task:  # written only when set: other policies' files stay as they were
            out["share_per_task"] = True
        return out

    def to_json(self, indent: int = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write the policy as JSON (atomically: write, then rename)."""
        from automtl.io import atomic_write_text

        atomic_write_text(path, self.to_json())


def _option_index(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise PolicyError(f"{where}: option must be one of {OPTIONS} or 0/1/2, got {value!r}")
    if isinstance(value, int) and 0 <= value < len(OPTIONS):
        return value
    if isinstance(value, str) and value in OPTIONS:
        return OPTIONS.index(value)
    raise PolicyError(f"{where}: option must be one of {OPTIONS} or 0/1/2, got {value!r}")


def _probs_table(sm: "SuperModel", probs: Mapping[str, torch.Tensor]) -> Dict[str, Dict[str, Sequence[float]]]:
    return {t: {n: p[i].tolist() for n, p in probs.items()} for i, t in enumerate(sm.task_names)}
