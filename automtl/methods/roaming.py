"""Maximum Roaming (Pascal et al., 2021) as a sharing method over the SuperModel.

The network is the all-shared one; every shared convolution's S output channels are
partitioned among the T tasks by binary masks, and each task runs its own masked forward pass
(:mod:`automtl.methods.masking`). The masks *roam*:

* **initial partition** - each task uses k = round(p·S) channels (p the sharing ratio; at
  least ⌈S/T⌉ so that the tasks can cover the layer), drawn uniformly without replacement;
  a channel no task drew is swapped in for a uniformly chosen channel of a uniformly chosen
  task among those holding a channel another task also holds (every channel is then used by
  at least one task - the paper's constraint Σₜ mᵢₜ ≥ 1 - and every task keeps k channels);
* **update** - every Δ training steps (updates, not epochs), in every layer, each task t
  that has not yet used every channel swaps one channel i₋ it uses for one channel i₊ it has
  never used, both uniform: i₋ among t's channels that another task also uses, so coverage
  holds; if t has none, t and a uniformly chosen holder u of i₊ exchange: t takes i₊, u takes
  i₋. Each update adds one new channel to every unfinished task's visited set, so the plan
  ends after (1 − p)·S updates - Δ·(1 − p)·S steps - for the widest layer (Lemma 1), with
  the number of channels per task constant throughout.

The plan is a function of its seed and the number of updates done (it is replayed after a
resume), so a checkpoint needs nothing beyond the model's mask buffers.
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional

import torch

from automtl.errors import ConfigError
from automtl.export.derive import MultiTaskModel
from automtl.methods.masking import ChannelMaskedModel, mask_channels, maskable_layers
from automtl.policy import Policy
from automtl.search.strategy import Score, SharingMethod
from automtl.supermodel import SuperModel


class LayerRoaming:
    """The masks of one layer: ``masks`` and ``visited``, ``[tasks, channels]`` bool."""

    def __init__(self, channels: int, tasks: int, sharing_ratio: float, generator: torch.Generator):
        if channels < 1 or tasks < 1:
            raise ConfigError(f"roaming needs at least one channel and one task, got {channels} and {tasks}")
        self.channels, self.tasks = int(channels), int(tasks)
        self.per_task = min(self.channels, max(int(round(sharing_ratio * channels)), math.ceil(channels / tasks)))
        self.generator = generator
        masks = torch.zeros(tasks, channels, dtype=torch.bool)
        for t in range(tasks):
            masks[t, torch.randperm(channels, generator=generator)[: self.per_task]] = True
        uncovered = torch.nonzero(~masks.any(0)).flatten()
        for c in uncovered[torch.randperm(len(uncovered), generator=generator)].tolist():
            crowded = masks & (masks.sum(0) >= 2)  # channels a task could give up
            donors = torch.nonzero(crowded.any(1)).flatten()
            t = int(donors[self._pick(len(donors))])
            options = torch.nonzero(crowded[t]).flatten()
            masks[t, int(options[self._pick(len(options))])] = False
            masks[t, c] = True
        self.masks = masks
        self.visited = masks.clone()

    def _pick(self, count: int) -> int:
        return int(torch.randint(count, (1,), generator=self.generator))

    @property
    def done(self) -> bool:
        return bool(self.visited.all())

    def update(self) -> None:
        """One update step: every unfinished task swaps a used channel for an unvisited one."""
        for t in range(self.tasks):
            fresh = torch.nonzero(~self.visited[t]).flatten()
            if len(fresh) == 0:
                continue
            gained = int(fresh[self._pick(len(fresh))])
            shared = torch.nonzero(self.masks[t] & (self.masks.sum(0) >= 2)).flatten()
            if len(shared):
                dropped = int(shared[self._pick(len(shared))])
            else:  # every channel of t is t's alone: exchange with a task holding the new one
                own = torch.nonzero(self.masks[t]).flatten()
                dropped = int(own[self._pick(len(own))])
                holders = torch.nonzero(self.masks[:, gained]).flatten()
                u = int(holders[self._pick(len(holders))])
                self.masks[u, gained] = False
                self.masks[u, dropped] = True
                self.visited[u, dropped] = True
            self.masks[t, dropped] = False
            self.masks[t, gained] = True
            self.visited[t, gained] = True


class RoamingPlan:
    """The roaming masks of several layers (``{name: channels}``) for ``tasks`` tasks."""

    def __init__(self, layers: Mapping[str, int], tasks: int, sharing_ratio: float = 0.5, seed: int = 0):
        if not 0.0 < sharing_ratio <= 1.0:
            raise ConfigError(f"the sharing ratio p must be in (0, 1], got {sharing_ratio}")
        self.layer_channels = dict(layers)
        self.tasks = int(tasks)
        self.sharing_ratio = float(sharing_ratio)
        self.seed = int(seed)
        self.reset()

    def reset(self) -> None:
        generator = torch.Generator().manual_seed(self.seed)
        self.layers = {name: LayerRoaming(c, self.tasks, self.sharing_ratio, generator) for name, c in self.layer_channels.items()}
        self.updates = 0

    @property
    def length(self) -> int:
        """Updates until every task has visited every channel of every layer."""
        return max((r.channels - r.per_task for r in self.layers.values()), default=0)

    @property
    def done(self) -> bool:
        return all(r.done for r in self.layers.values())

    def update(self) -> None:
        for roaming in self.layers.values():
            roaming.update()
        self.updates += 1

    def advance_to(self, updates: int) -> bool:
        """Bring the plan to ``updates`` update steps (replaying from the seed if it is past
        them); returns whether the masks changed."""
        updates = min(int(updates), self.length)
        if updates == self.updates:
            return False
        if updates < self.updates:
            self.reset()
        while self.updates < updates:
            self.update()
        return True

    def masks(self) -> Dict[str, torch.Tensor]:
        return {name: r.masks.clone() for name, r in self.layers.items()}


def default_delta(steps: int, plan_length: int) -> int:
    """Δ that spreads the visit plan over the first half of ``steps`` training steps."""
    return max(1, steps // (2 * max(plan_length, 1)))


class MaximumRoaming(SharingMethod):
    """All-shared network, per-task roaming channel masks on the shared convolutions, trained
    by the post-train loop (``delta`` in training steps; None: :func:`default_delta`)."""

    name = "roaming"
    stages = ("post_train",)

    def __init__(self, sharing_ratio: float = 0.8, delta: Optional[int] = None, seed: int = 0, steps: int = 0):
        if delta is not None and int(delta) < 1:
            raise ConfigError(f"roaming delta must be 1 or more training steps, got {delta}")
        self.sharing_ratio = float(sharing_ratio)
        self.delta = None if delta is None else int(delta)
        self.seed = int(seed)
        self.steps = int(steps)
        self.plan: Optional[RoamingPlan] = None

    @classmethod
    def from_config(cls, config) -> "MaximumRoaming":  # type: ignore[no-untyped-def]
        r = config.roaming
        return cls(r.sharing_ratio, r.delta, config.seed if r.seed is None else r.seed, config.post_train.steps)

    def draw_policy(self, sm: SuperModel, score: Score) -> Policy:
        return Policy.all_shared(sm)

    def adapt_model(self, model: MultiTaskModel, sm: SuperModel) -> MultiTaskModel:
        layers = maskable_layers(sm)
        if not layers:
            raise ConfigError(
                f"Maximum Roaming masks the output channels of shared convolutions, and the backbone "
                f"'{sm.backbone_name}' has no searchable convolution; use another method"
            )
        self.plan = RoamingPlan(layers, sm.num_tasks, self.sharing_ratio, self.seed)
        if self.delta is None:
            self.delta = default_delta(self.steps, self.plan.length)
        masked = mask_channels(model, list(layers))
        masked.set_masks(self.plan.masks())
        return masked

    def before_step(self, model: torch.nn.Module, stage: str, step: int) -> None:
        if stage != "post_train" or self.plan is None or not isinstance(model, ChannelMaskedModel):
            return
        if self.plan.advance_to(step // self.delta) or step == 0:  # type: ignore[operator]
            model.set_masks(self.plan.masks())

    def describe(self) -> List[str]:
        if self.plan is None:
            return []
        return [f"roaming: p={self.sharing_ratio}, Δ={self.delta} steps, plan of {self.plan.length} updates"]
