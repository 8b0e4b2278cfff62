"""A task: a name, a head on top of the backbone, a loss and its weight."""

from __future__ import annotations

import dataclasses
import keyword
import re
from typing import Any, Callable, Dict, Iterable, List, Optional, Protocol, Union

import torch

from torch import nn

from automtl.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Metric(Protocol):
    """Accumulates a task's evaluation over batches.

    ``higher_is_better`` names every value ``compute()`` returns and says which way is better
    (this drives the relative performance Δt against a single-task baseline).
    """

    higher_is_better: Dict[str, bool]

    def reset(self) -> None: ...

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None: ...

    def compute(self) -> Dict[str, float]: ...


@dataclasses.dataclass
class Task:
    """One task of a multi-task model.

    ``head`` maps the backbone's output to the task's prediction (``None`` means identity:
    the task sees the backbone's output as it is). ``loss(prediction, target)`` returns a
    scalar; ``weight`` is its λ in the total loss Σ λᵢ Lᵢ. ``metrics()`` makes a fresh
    :class:`Metric` for an evaluation; ``kind`` names the built-in task kind it came from.

    Data for a multi-task model come as ``(images, targets)`` batches, ``targets`` being a
    ``{task name: tensor}`` dict.
    """

    name: str
    head: Optional[nn.Module] = None
    loss: Optional[Callable[..., Any]] = None
    weight: float = 1.0
    metrics: Optional[Callable[[], Metric]] = None
    kind: Optional[str] = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name) or keyword.iskeyword(self.name):
            raise ConfigError(
                f"task name {self.name!r} is not usable: task names become module and output "
                "names, so use letters, digits and '_' and start with a letter (e.g. 'seg')"
            )
        if self.head is not None and not isinstance(self.head, nn.Module):
            raise ConfigError(f"task '{self.name}': head must be an nn.Module or None, got {type(self.head).__name__}")


def as_tasks(tasks: Iterable[Union[Task, str]]) -> List[Task]:
    """Normalise ``tasks`` (Task objects or bare names) and check the names are unique."""
    if isinstance(tasks, (str, Task)):
        tasks = [tasks]
    found: List[Task] = [t if isinstance(t, Task) else Task(t) for t in tasks]
    if not found:
        raise ConfigError("at least one task is needed")
    seen = set()
    for task in found:
        if task.name in seen:
            raise ConfigError(f"task name '{task.name}' is used twice; every task needs its own name")
        seen.add(task.name)
    return found
