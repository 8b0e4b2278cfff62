"""How the task-batched executor holds the values flowing through the graph.

A tensor computed from the input is held once for all tasks, as a :class:`Stacked` value:
``data`` has shape ``[B*G, ...]`` for ``G`` distinct per-task values laid out *sample-major*
(row ``b*G + g`` is sample ``b`` of value ``g``), and ``slots[t]`` says which of the ``G``
values task ``t`` sees. Tasks that see the same value share a slot, so work done on it is done
once (``G == 1`` before the first searchable node). Sample-major order makes two layouts free
views of each other:

* ``[B*G, C, ...]``: the batch axis, for an operator every task shares;
* ``[B, G*C, ...]``: the channel axis, for one grouped operator over the tasks' own copies
  (and one normalisation over ``G*C`` channels with per-task statistics).

Everything else is a :class:`Const` (the same for every task and not computed from the input:
constants, shapes) or, where neither fits, a :class:`PerTask` list as the reference path holds it.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch


class Stacked:
    """A tensor for every task, stored once per distinct value (see the module docstring)."""

    __slots__ = ("data", "slots", "count", "batch")

    def __init__(self, data: torch.Tensor, slots: Sequence[int], batch: int):
        self.data = data
        self.slots: Tuple[int, ...] = tuple(slots)
        self.count = max(self.slots) + 1  # G: the number of distinct values
        self.batch = batch

    @property
    def sample_shape(self) -> torch.Size:
        return self.data.shape[1:]

    def logical_shape(self) -> torch.Size:
        """The shape one task sees: ``[B, ...]``."""
        return torch.Size((self.batch,) + tuple(self.data.shape[1:]))

    def columns(self) -> torch.Tensor:
        """``[B, G, ...]``: the distinct values side by side (a view)."""
        return self.data.reshape((self.batch, self.count) + tuple(self.data.shape[1:]))

    def __repr__(self) -> str:
        return f"Stacked({list(self.data.shape)}, slots={self.slots})"


class StackedTuple:
    """A tuple of stacked tensors (``torch.chunk``/``split``/``unbind`` of a stacked tensor
    along a non-batch dimension): item ``i`` is a :class:`Stacked` value."""

    __slots__ = ("items",)

    def __init__(self, items: Sequence[Stacked]):
        self.items = tuple(items)


class Const:
    """A value that is the same for every task and not computed from the input."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


class PerTask:
    """One value per task, as the reference path holds it (``values[t]`` for task ``t``)."""

    __slots__ = ("values",)

    def __init__(self, values: List[Any]):
        self.values = values


Value = Union[Stacked, StackedTuple, Const, PerTask]


def first_appearance(slots: Sequence[int]) -> List[int]:
    """The distinct entries of ``slots`` in the order tasks first use them."""
    return list(dict.fromkeys(slots))


def renumber(keys: Sequence[Any]) -> Tuple[Tuple[int, ...], List[Any]]:
    """Slots for per-task ``keys`` (equal keys share a slot, numbered by first use) and the
    distinct keys in slot order."""
    order: Dict[Any, int] = {}
    slots = tuple(order.setdefault(k, len(order)) for k in keys)
    return slots, list(order)


def gather(columns: torch.Tensor, picks: Sequence[int]) -> torch.Tensor:
    """``columns[:, picks]`` for a ``[B, G, ...]`` tensor, without a copy where ``picks`` is a
    contiguous run."""
    picks = list(picks)
    if picks == list(range(picks[0], picks[0] + len(picks))):
        if len(picks) == columns.shape[1]:
            return columns
        return columns.narrow(1, picks[0], len(picks))
    index = torch.tensor(picks, dtype=torch.long, device=columns.device)
    return columns.index_select(1, index)


def pick(value: Stacked, tasks: Sequence[int]) -> Tuple[torch.Tensor, Tuple[int, ...]]:
    """The inputs of ``tasks`` as ``[B, n, ...]`` columns (each distinct value once, in order of
    first use) and, per task in ``tasks``, its column."""
    wanted = [value.slots[t] for t in tasks]
    distinct = first_appearance(wanted)
    where = {s: i for i, s in enumerate(distinct)}
    return gather(value.columns(), distinct), tuple(where[s] for s in wanted)


def per_task_columns(value: Stacked, tasks: Sequence[int]) -> torch.Tensor:
    """``[B, 1, ...]`` when every task in ``tasks`` sees the same value, else ``[B, len(tasks), ...]``
    with column ``i`` the input of ``tasks[i]``."""
    wanted = [value.slots[t] for t in tasks]
    if len(set(wanted)) == 1:
        return gather(value.columns(), wanted[:1])
    return gather(value.columns(), wanted)


def align(values: Sequence[Stacked]) -> Tuple[List[torch.Tensor], Tuple[int, ...]]:
    """Re-lay several stacked values on common slots, so that an operator combining them can
    run on their ``data`` directly. Returns the re-laid data (``[B*G', ...]``) and the slots."""
    first = values[0]
    if all(v.slots == first.slots for v in values):
        return [v.data for v in values], first.slots
    tasks = len(first.slots)
    slots, keys = renumber([tuple(v.slots[t] for v in values) for t in range(tasks)])
    out = []
    for i, v in enumerate(values):
        picked = gather(v.columns(), [key[i] for key in keys])
        out.append(picked.reshape((-1,) + tuple(v.data.shape[1:])))
    return out, slots


def stack_columns(columns: torch.Tensor, slots: Sequence[int], batch: int) -> Stacked:
    """A :class:`Stacked` value from ``[B, G, ...]`` columns."""
    return Stacked(columns.reshape((-1,) + tuple(columns.shape[2:])), slots, batch)


def stack_fresh(columns: torch.Tensor, slots: Sequence[int], batch: int) -> Stacked:
    """:func:`stack_columns` for the fresh result of an operator that does not keep its output
    for the backward pass (convolution, normalisation, linear, the mixing): the stacked tensor
    is made a new tensor for autograd rather than a view of ``columns``. A view would make an
    in-place activation that follows (``ReLU(inplace=True)``) cost two copies of the whole
    activation in the backward pass (autograd's ``CopySlices``); ``columns`` itself must not be
    used afterwards."""
    shape = (-1,) + tuple(columns.shape[2:])
    if not columns.is_contiguous():
        return stack_columns(columns, slots, batch)
    return Stacked(torch.ops.aten._unsafe_view(columns, (columns.shape[0] * columns.shape[1],) + shape[1:]), slots, batch)


def split(value: Value, tasks: int) -> List[Any]:
    """The per-task list the reference path uses. Tasks that share a slot get the same tensor
    object (the reference path runs shared work once per distinct object); each is contiguous
    and may be modified in place like any fresh tensor."""
    if isinstance(value, PerTask):
        return value.values
    if isinstance(value, Const):
        return [value.value] * tasks
    if isinstance(value, StackedTuple):
        per_item = [split(item, tasks) for item in value.items]
        return [tuple(item[t] for item in per_item) for t in range(tasks)]
    if value.count == 1:
        return [value.data] * tasks
    # one copy puts each value's samples together; select() views may be written in place
    by_value = value.columns().transpose(0, 1).contiguous()
    chunks = [by_value[g] for g in range(value.count)]
    return [chunks[s] for s in value.slots]


def join(values: List[Any], from_input: bool) -> Value:
    """The executor's value for a per-task list (the output of a node run the reference way).
    ``from_input`` says whether the node read any value computed from the input. Stacking is
    left to the first task-batched reader, so a run of per-task nodes stays per task."""
    if not from_input and all(v is values[0] for v in values):
        return Const(values[0])
    return PerTask(values)  # stacked when a task-batched node reads it


def try_stack(values: List[Any], batch: int) -> Optional[Stacked]:
    """Stack per-task tensors of shape ``[B, ...]`` (same shape, dtype, device); None if they
    are not such tensors."""
    first = values[0]
    if not isinstance(first, torch.Tensor) or first.dim() == 0 or first.shape[0] != batch:
        return None
    for v in values[1:]:
        if not (isinstance(v, torch.Tensor) and v.shape == first.shape and v.dtype == first.dtype and v.device == first.device):
            return None
    slots, distinct_ids = renumber([id(v) for v in values])
    if len(distinct_ids) == 1:
        return Stacked(first, slots, batch)
    by_id = {id(v): v for v in values}
    columns = torch.stack([by_id[i] for i in distinct_ids], dim=1)
    return stack_columns(columns, slots, batch)
