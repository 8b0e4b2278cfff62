"""Maximum Roaming (Pascal et al., 2021) as a sharing method over the SuperModel.

The network is the all-shared one; every shared convolution's S output channels are
partitioned among the T tasks by binary masks, and each task runs its own masked forward pass
(:mod:`automtl.methods.masking`: the mask multiplies the layer's output after its norm, before
the activation - the paper's σ((H_t * K) ⊙ m_t)). The masks *roam*, as the paper's Def. 1:

* **initial partition** - every task uses every channel with probability p, independently
  (m_it ~ Bernoulli(p)); a channel no task drew goes to one task drawn uniformly (the paper's
  constraint Σₜ mᵢₜ ≥ 1, so every channel is used at the start). p is the *sharing ratio*: the
  probability that a task uses a given channel, so each task starts with about p·S channels
  (p + (1 − p)^T / T of them on average, counting the uncovered channels handed out) and a
  channel is used by about T·p tasks; p = 1 is the fully shared network, p = 0 a disjoint
  partition. A task that would use no channel of a layer at all (only possible for small p·S)
  is given one drawn uniformly, so that no task's pass is cut off - a guard the paper does not
  need on its layer sizes;
* **update** - every Δ training steps (updates, not epochs), in every layer, each task t
  that has not yet used every channel drops one channel i₋ drawn uniformly from the channels it
  uses, A_t, and takes one channel i₊ drawn uniformly from those it has never used,
  {1..S} − B_t (B_t: the channels t has used so far). Nothing else changes: another task's
  mask is never touched, and a channel may be left to no task for a while (the paper's
  Lemma 2 - the probability that a task uses a channel stays p - rests on this uniform draw,
  which is why no restriction to channels another task also uses is made). Each task keeps
  its number of channels, and its visited set grows by one per update, so the plan ends after
  max_t (S − |A_t(0)|) ≈ (1 − p)·S updates - Δ·(1 − p)·S steps - for the widest layer (Lemma 1).

The plan is a function of its seed and the number of updates done (it is replayed after a
resume), so a checkpoint needs nothing beyond the model's mask buffers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Mapping, Optional

import torch

from automtl.errors import ConfigError
from automtl.methods.base import METHODS, Score, SharingMethod
from automtl.methods.masking import ChannelMaskedModel, mask_channels, maskable_layers
from automtl.policy import Policy

if TYPE_CHECKING:  # pragma: no cover
    from automtl.export.derive import MultiTaskModel
    from automtl.search.config import SearchConfig
    from automtl.supermodel import SuperModel


def check_sharing_ratio(sharing_ratio: float) -> float:
    if not 0.0 <= float(sharing_ratio) <= 1.0:
        raise ConfigError(f"the sharing ratio p must be in [0, 1] (the probability that a task uses a channel), got {sharing_ratio}")
    return float(sharing_ratio)


class LayerRoaming:
    """The masks of one layer: ``masks`` (A_t) and ``visited`` (B_t), ``[tasks, channels]`` bool."""

    def __init__(self, channels: int, tasks: int, sharing_ratio: float, generator: torch.Generator):
        if channels < 1 or tasks < 1:
            raise ConfigError(f"roaming needs at least one channel and one task, got {channels} and {tasks}")
        p = check_sharing_ratio(sharing_ratio)
        self.channels, self.tasks = int(channels), int(tasks)
        self.generator = generator
        masks = torch.rand(tasks, channels, generator=generator) < p  # m_it ~ Bernoulli(p)
        for c in torch.nonzero(~masks.any(0)).flatten().tolist():  # constraint (3)
            masks[self._pick(tasks), c] = True
        for t in torch.nonzero(~masks.any(1)).flatten().tolist():  # no task left without a channel
            masks[t, self._pick(channels)] = True
        self.masks = masks
        self.visited = masks.clone()
        #: channels per task, constant over the updates
        self.counts: List[int] = masks.sum(1).tolist()

    def _pick(self, count: int) -> int:
        return int(torch.randint(count, (1,), generator=self.generator))

    @property
    def length(self) -> int:
        """Updates until every task has visited every channel (from the initial partition)."""
        return self.channels - min(self.counts)

    @property
    def done(self) -> bool:
        return bool(self.visited.all())

    def update(self) -> None:
        """One update step (Def. 1): every unfinished task t drops a channel drawn uniformly
        from the channels it uses and takes one drawn uniformly from those it never used."""
        for t in range(self.tasks):
            fresh = torch.nonzero(~self.visited[t]).flatten()
            if len(fresh) == 0:
                continue
            active = torch.nonzero(self.masks[t]).flatten()
            dropped = int(active[self._pick(len(active))])
            gained = int(fresh[self._pick(len(fresh))])
            self.masks[t, dropped] = False
            self.masks[t, gained] = True
            self.visited[t, gained] = True


class RoamingPlan:
    """The roaming masks of several layers (``{name: channels}``) for ``tasks`` tasks."""

    def __init__(self, layers: Mapping[str, int], tasks: int, sharing_ratio: float = 0.5, seed: int = 0):
        check_sharing_ratio(sharing_ratio)
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
        return max((r.length for r in self.layers.values()), default=0)

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
    by the post-train loop: ``sharing_ratio`` p (each task uses each channel with probability
    p at the start, see the module's docstring), ``delta`` in training steps (None:
    :func:`default_delta`). Its settings are :class:`~automtl.search.config.RoamingConfig`
    (``roaming:`` in a config)."""

    name = "roaming"
    stages = ("post_train",)

    def __init__(self, sharing_ratio: float = 0.8, delta: Optional[int] = None, seed: int = 0, steps: int = 0):
        if delta is not None and int(delta) < 1:
            raise ConfigError(f"roaming delta must be 1 or more training steps, got {delta}")
        self.sharing_ratio = check_sharing_ratio(sharing_ratio)
        self.delta = None if delta is None else int(delta)
        self.seed = int(seed)
        self.steps = int(steps)
        self.plan: Optional[RoamingPlan] = None

    @classmethod
    def from_config(cls, config: "SearchConfig") -> "MaximumRoaming":
        r = config.roaming
        return cls(r.sharing_ratio, r.delta, config.seed if r.seed is None else r.seed, config.post_train.steps)

    def draw_policy(self, sm: "SuperModel", score: Score) -> Policy:
        return Policy.all_shared(sm)

    def adapt_model(self, model: "MultiTaskModel", sm: "SuperModel") -> "MultiTaskModel":
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


METHODS.register("roaming", MaximumRoaming.from_config, aliases=("maximum_roaming",))
