"""Network selection for task grouping (Standley et al., 2020, section 5.2), solved exactly.

Given candidate networks n with an inference cost cₙ and a loss L(n, t) for every task t it
solves (∞ for the others), find the set S of networks that solves every task with
cost(S) = Σ_{n∈S} cₙ ≤ budget and the lowest total loss L(S) = Σₜ min_{n∈S} L(n, t). Ties go
to the cheaper set, then to the smaller list of candidate indices.

:func:`select_networks` is a depth-first branch and bound over the tasks, deciding for
each task which network serves it. It rests on two facts: an optimal set has no network
that serves no task (dropping it keeps the loss and lowers the cost), and its loss is reached
by serving each task with its best network in the set. So, taking the tasks in order, a task
is served either by the best network already opened, or by opening an affordable network
that beats it (tried in order of loss); every optimal set is reached by opening each of its
networks at the first task it serves best. A branch is cut when it cannot cover a task, or
when the loss so far plus, for every task left, the best of the open networks and of the
networks the remaining budget can still open does not beat the incumbent's. At every leaf
the set is scored exactly (each task at its best network in the set).

:func:`brute_force_selection` tries every subset; it is the reference the tests check the
branch and bound against.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import List, Optional, Sequence, Tuple

_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class Selection:
    """The chosen candidates (sorted indices), the total loss and cost, per task the index of
    the network that serves it (lowest loss), and how many search nodes were visited."""

    networks: Tuple[int, ...]
    loss: float
    cost: float
    serving: Tuple[int, ...]
    nodes: int = 0


def _check(costs: Sequence[float], losses: Sequence[Sequence[float]]) -> int:
    if len(costs) != len(losses):
        raise ValueError(f"{len(costs)} costs for {len(losses)} candidates")
    tasks = len(losses[0]) if losses else 0
    for i, row in enumerate(losses):
        if len(row) != tasks:
            raise ValueError(f"candidate {i} has {len(row)} task losses, the others {tasks}")
        if any(v != v for v in row):
            raise ValueError(f"candidate {i} has a NaN loss")
    return tasks


def score(networks: Sequence[int], costs: Sequence[float], losses: Sequence[Sequence[float]], tasks: int) -> Tuple[float, float, Tuple[int, ...]]:
    """(total loss, cost, serving network per task) of a set of candidates; the loss is
    ∞ when a task is not covered."""
    chosen = sorted(networks)
    total = 0.0
    serving = []
    for t in range(tasks):
        best, who = math.inf, -1
        for n in chosen:
            if losses[n][t] < best:
                best, who = losses[n][t], n
        total += best
        serving.append(who)
    return total, sum(costs[n] for n in chosen), tuple(serving)


def _key(loss: float, cost: float, networks: Tuple[int, ...]) -> Tuple[float, float, Tuple[int, ...]]:
    return (loss, cost, networks)


def brute_force_selection(costs: Sequence[float], losses: Sequence[Sequence[float]], budget: float) -> Optional[Selection]:
    """The optimal selection by trying every subset of candidates (2^m of them)."""
    tasks = _check(costs, losses)
    best = None
    count = 0
    for size in range(1, len(costs) + 1):
        for subset in itertools.combinations(range(len(costs)), size):
            count += 1
            loss, cost, serving = score(subset, costs, losses, tasks)
            if math.isinf(loss) or cost > budget + _EPS:
                continue
            if best is None or _key(loss, cost, subset) < _key(best.loss, best.cost, best.networks):
                best = Selection(subset, loss, cost, serving)
    return None if best is None else dataclasses.replace(best, nodes=count)


def select_networks(costs: Sequence[float], losses: Sequence[Sequence[float]], budget: float) -> Optional[Selection]:
    """The optimal selection (see the module's docstring), or None when no set of candidates
    within ``budget`` solves every task."""
    tasks = _check(costs, losses)
    if tasks == 0:
        return None
    affordable = [n for n in range(len(costs)) if costs[n] <= budget + _EPS]
    # per task, the networks that solve it, best first
    solvers = [sorted((n for n in affordable if not math.isinf(losses[n][t])), key=lambda n: (losses[n][t], costs[n], n))
               for t in range(tasks)]
    if any(not s for s in solvers):
        return None
    # harder tasks (fewer solvers) first: their choices cut the most
    task_order = sorted(range(tasks), key=lambda t: (len(solvers[t]), t))
    incumbent: List[Optional[Tuple[float, float, Tuple[int, ...]]]] = [None]
    visited = [0]

    def optimistic(t: int, opened: List[int], room: float) -> float:
        best = min((losses[n][t] for n in opened), default=math.inf)
        for n in solvers[t]:  # sorted by loss: the first affordable unopened one is the best
            if losses[n][t] >= best:
                break
            if costs[n] <= room + _EPS and n not in opened:
                return losses[n][t]
        return best

    def search(k: int, opened: List[int], cost: float, loss: float) -> None:
        visited[0] += 1
        if k == tasks:
            networks = tuple(sorted(opened))
            total, spent, _ = score(networks, costs, losses, tasks)
            key = _key(total, spent, networks)
            if incumbent[0] is None or key < incumbent[0]:
                incumbent[0] = key
            return
        room = budget - cost
        bound = loss
        for j in range(k, tasks):
            bound += optimistic(task_order[j], opened, room)
        if math.isinf(bound):
            return
        if incumbent[0] is not None and bound > incumbent[0][0] + _EPS * (1.0 + abs(incumbent[0][0])):
            return
        t = task_order[k]
        served = min((losses[n][t] for n in opened), default=math.inf)
        for n in solvers[t]:
            if losses[n][t] > served:
                break
            if n in opened or costs[n] > room + _EPS:
                continue
            opened.append(n)
            search(k + 1, opened, cost + costs[n], loss + losses[n][t])
            opened.pop()
        if not math.isinf(served):
            search(k + 1, opened, cost, loss + served)

    search(0, [], 0.0, 0.0)
    if incumbent[0] is None:
        return None
    loss, cost, networks = incumbent[0]
    _, _, serving = score(networks, costs, losses, tasks)
    return Selection(networks, loss, cost, serving, visited[0])
