"""AdaShare (Sun et al., 2020) as a sharing method over the SuperModel.

Each task decides, per decision unit (a residual block, or one operator; see
:mod:`automtl.methods.blocks`), whether to *select* the unit - run the shared operators - or
*skip* it: the SuperModel's options are restricted to (shared, skip), there are no own copies.
α_{l,k} is the probability that task k selects unit l (the softmax of the unit's policy
logits over the two allowed options); the logits of the nodes of one block are tied (one
tensor), so the block has one distribution per task.

* pre-train: every unit shared by every task (hard parameter sharing), weights only;
* policy-train: weights and logits alternately on separate splits (the pipeline's loop), in
  Gumbel-softmax mode; the policy loss adds
  λ_sp · L_sparsity + λ_sh · L_sharing, with
  L_sparsity = Σ_{l,k} log α_{l,k} and
  L_sharing = Σ_{k1,k2} Σ_l (L − l)/L · |α_{l,k1} − α_{l,k2}| over ordered pairs of tasks,
  l = 0 for the lowest unit (the depth convention of :func:`automtl.search.regularizer.depth_weights`);
* curriculum: in policy epoch e (0-based) only the last e + 1 units learn their policy; the
  others are held at "select" (their logits are pinned far towards shared and get no
  gradient) and are released, back at their initial logits, one per epoch;
* post-train: decisions sampled per unit and task from the learned distribution - the best of
  ``k`` samples by validation loss - and the network they form re-trained from scratch.

Gumbel noise is drawn per operator, so during policy-train the operators of a block see
independent samples of the block's (shared) distribution; the final decision is per block.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from automtl.compiler.ir import OPTIONS, SHARED, SKIP
from automtl.errors import ConfigError
from automtl.methods.blocks import DecisionUnit, decision_units
from automtl.policy import Policy
from automtl.search.strategy import Score, SharingMethod
from automtl.supermodel import SuperModel

#: logits of a unit held at "select" by the curriculum: shared this far above skip means
#: P(skip) ~ e^-100, and at τ = 5 the soft decision is within e^-20 of select
PINNED = 100.0
_PINNED_IF_ABOVE = 50.0
DRAWS = ("best_of_k", "sample", "argmax")


def tie_unit_logits(sm: SuperModel, units: Sequence[DecisionUnit]) -> None:
    """Make every node of a unit use its first node's logits tensor (one decision per unit)."""
    for unit in units:
        leader = sm.vcns[unit.nodes[0]].logits
        for node in unit.nodes[1:]:
            sm.vcns[node].logits = leader


def unit_logits(sm: SuperModel, units: Sequence[DecisionUnit]) -> List[torch.nn.Parameter]:
    return [sm.vcns[u.nodes[0]].logits for u in units]  # type: ignore[misc]


def select_log_probs(sm: SuperModel, units: Sequence[DecisionUnit]) -> torch.Tensor:
    """log α: ``[units, tasks]`` log-probabilities of *select* (shared) under the allowed
    options, differentiable with respect to the logits."""
    rows = []
    for logits in unit_logits(sm, units):
        masked = logits.masked_fill(~sm.allowed_options, float("-inf"))
        rows.append(F.log_softmax(masked, dim=-1)[:, SHARED])
    return torch.stack(rows)


def sparsity_loss(log_alpha: torch.Tensor) -> torch.Tensor:
    """L_sparsity = Σ_{l,k} log α_{l,k} (``log_alpha``: ``[units, tasks]``)."""
    return log_alpha.sum()


def sharing_loss(alpha: torch.Tensor) -> torch.Tensor:
    """L_sharing = Σ_{k1,k2} Σ_l (L − l)/L |α_{l,k1} − α_{l,k2}| over ordered task pairs,
    ``alpha`` ``[units, tasks]`` bottom-up (l = 0 first)."""
    count = alpha.shape[0]
    weights = (count - torch.arange(count, dtype=alpha.dtype, device=alpha.device)) / count
    gaps = (alpha[:, :, None] - alpha[:, None, :]).abs().sum(dim=(1, 2))
    return (weights * gaps).sum()


def open_units(count: int, epoch: int) -> range:
    """Indices (bottom-up) of the units whose policy learns in policy epoch ``epoch``: the
    last ``epoch + 1`` of ``count``."""
    return range(max(0, count - (int(epoch) + 1)), count)


class AdaShare(SharingMethod):
    """Select-or-skip per task and decision unit, with AdaShare's losses and curriculum."""

    name = "adashare"

    def __init__(
        self,
        lambda_sparsity: float = 1e-3,
        lambda_sharing: float = 0.05,
        granularity: str = "block",
        curriculum: bool = True,
        draw: str = "best_of_k",
        k: int = 4,
        seed: int = 0,
    ):
        if draw not in DRAWS:
            raise ConfigError(f"AdaShare draw must be one of {', '.join(DRAWS)}, got {draw!r}")
        if int(k) < 1:
            raise ConfigError(f"AdaShare k must be 1 or more, got {k}")
        self.lambda_sparsity = float(lambda_sparsity)
        self.lambda_sharing = float(lambda_sharing)
        self.granularity = granularity
        self.curriculum = bool(curriculum)
        self.draw = draw
        self.k = int(k)
        self.seed = int(seed)
        self.units: List[DecisionUnit] = []
        self._initial: List[torch.Tensor] = []

    @classmethod
    def from_config(cls, config) -> "AdaShare":  # type: ignore[no-untyped-def]
        a = config.adashare
        seed = config.seed if a.draw_seed is None else a.draw_seed
        return cls(a.lambda_sparsity, a.lambda_sharing, a.granularity, a.curriculum, a.draw, a.k, seed)

    # -- set-up -----------------------------------------------------------------------------
    def prepare(self, sm: SuperModel) -> None:
        sm.set_allowed_options(("shared", "skip"))
        self.units = decision_units(sm, self.granularity)
        tie_unit_logits(sm, self.units)
        self._initial = [p.detach().clone() for p in unit_logits(sm, self.units)]
        if self.curriculum:
            self._apply_curriculum(sm, 0)

    def pretrain_mode(self, sm: SuperModel) -> None:
        sm.set_mode("fixed", policy=Policy.all_shared(sm))

    # -- curriculum -------------------------------------------------------------------------
    def on_policy_epoch(self, sm: SuperModel, epoch: int) -> None:
        if self.curriculum:
            self._apply_curriculum(sm, epoch)

    def _apply_curriculum(self, sm: SuperModel, epoch: int) -> None:
        """Idempotent: pin the closed units, release the open ones (a unit still pinned is
        set back to its initial logits when it opens; one that learned already keeps them)."""
        opened = set(open_units(len(self.units), epoch))
        with torch.no_grad():
            for i, logits in enumerate(unit_logits(sm, self.units)):
                if i in opened:
                    if is_pinned(logits):
                        logits.copy_(self._initial[i].to(logits.device))
                    logits.requires_grad_(True)
                else:
                    logits.zero_()
                    logits[:, SHARED] = PINNED
                    logits.requires_grad_(False)

    # -- policy loss ------------------------------------------------------------------------
    def policy_loss(self, sm: SuperModel) -> Optional[torch.Tensor]:
        if self.lambda_sparsity == 0.0 and self.lambda_sharing == 0.0:
            return None
        log_alpha = select_log_probs(sm, self.units)
        return self.lambda_sparsity * sparsity_loss(log_alpha) + self.lambda_sharing * sharing_loss(log_alpha.exp())

    # -- the final architecture -------------------------------------------------------------
    def select_probs(self, sm: SuperModel) -> torch.Tensor:
        """α, ``[units, tasks]``, detached."""
        with torch.no_grad():
            return select_log_probs(sm, self.units).exp().cpu()

    def sample(self, sm: SuperModel, seed: int) -> Policy:
        """One select-or-skip decision per unit and task, drawn from α (seeded)."""
        generator = torch.Generator().manual_seed(int(seed))
        alpha = self.select_probs(sm)
        chosen = torch.rand(alpha.shape, generator=generator) < alpha
        return self._policy(sm, chosen)

    def argmax(self, sm: SuperModel) -> Policy:
        return self._policy(sm, self.select_probs(sm) >= 0.5)

    def _policy(self, sm: SuperModel, selected: torch.Tensor) -> Policy:
        probs = sm.policy_probs()
        choices: Dict[str, Dict[str, int]] = {t: {} for t in sm.task_names}
        for u, unit in enumerate(self.units):
            for node in unit.nodes:
                for k, task in enumerate(sm.task_names):
                    choices[task][node] = SHARED if bool(selected[u, k]) else SKIP
        table = {t: {n: p[k].tolist() for n, p in probs.items()} for k, t in enumerate(sm.task_names)}
        return Policy(sm.task_names, sm.searchable_nodes, choices, table)

    def draw_policy(self, sm: SuperModel, score: Score) -> Policy:
        if not self.units:  # the pipeline calls prepare(); a bare call may not have
            self.units = decision_units(sm, self.granularity)
        if self.draw == "argmax":
            return self.argmax(sm)
        if self.draw == "sample":
            return self.sample(sm, self.seed)
        candidates: List[Policy] = []
        for j in range(self.k):
            policy = self.sample(sm, self.seed + j)
            if policy not in candidates:
                candidates.append(policy)
        scored = [(score(p), i) for i, p in enumerate(candidates)]
        return candidates[min(scored)[1]]


def is_pinned(logits: torch.Tensor) -> bool:
    """Whether a unit's logits are held at "select" by the curriculum."""
    return bool(((logits[:, SHARED] - logits[:, OPTIONS.index("skip")]) > _PINNED_IF_ABOVE).all())
