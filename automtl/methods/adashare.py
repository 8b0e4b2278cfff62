"""AdaShare (Sun et al., 2020) as a sharing method over the SuperModel.

Each task decides, per residual block, whether to *select* the block - run it, with the
block's weights shared by every task that selects it - or *skip* it: the block's output is
then its input (the shortcut), or, where the block changes the shape, its own down-sample
path's output (ResNet's strided 1x1 convolution and norm, run by every task, shared); nothing
of the skipped block runs for the task and no parameters are added (:mod:`automtl.block_skip`,
found by :func:`automtl.methods.blocks.find_block_skips`). The stem, the down-sample paths and
any other searchable node outside the residual blocks always run, shared: they are no units
(their logits are held at "shared"). The SuperModel's options are restricted to
(shared, skip): there are no own copies. α_{l,k} is the probability that task k selects block
l (the softmax of the block's logits over the two options); the logits of a block's operators
are one tensor, so the block has one distribution per task and, in Gumbel-softmax mode, one
sample per block and task (``SuperModel.mixing_weights`` draws once per tensor).

* pre-train: every block shared by every task (hard parameter sharing), weights only;
* policy-train: weights and logits alternately on separate splits (the pipeline's loop), in
  Gumbel-softmax mode; the policy loss adds
  λ_sp · L_sparsity + λ_sh · L_sharing, with
  L_sparsity = Σ_{l,k} log α_{l,k} and
  L_sharing = Σ_{k1,k2} Σ_l (L − l)/L · |α_{l,k1} − α_{l,k2}| over ordered pairs of tasks,
  l = 0 for the lowest block, L the number of blocks;
* curriculum: in policy epoch e (0-based) only the last e + 1 blocks learn their policy; the
  others are held at "select" exactly (skip logit −∞, no gradient) and are released, back at
  their initial logits, one per epoch;
* the final policy (``draw``): ``retrain``, the paper's - ``k`` policies sampled per block and
  task from α, each trained from scratch with the post-train settings
  (:meth:`retrain_candidates`; the pipeline trains them), the best on validation kept;
  ``best_of_k``, the cheap ranking - the best of ``k`` samples by the policy-trained
  supermodel's validation loss, then one post-train; ``sample``; ``argmax``.

``granularity="operator"`` is automtl's per-operator variant (not the paper's): every
searchable node is a unit of its own and skips with its own skip (identity, or a down-sample
with a 1x1 projection where the operator changes the shape). A backbone without skippable
residual blocks gets it, with a warning, when ``"block"`` is asked for.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from automtl.compiler.ir import SHARED, SKIP
from automtl.methods.base import METHODS, SharingMethod
from automtl.methods.blocks import DecisionUnit, decision_units, find_block_skips
from automtl.policy import Policy
from automtl.search.config import ADASHARE_DRAWS

if TYPE_CHECKING:  # pragma: no cover
    from automtl.search.config import SearchConfig
    from automtl.supermodel import SuperModel

#: the logit of "skip" for a unit held at "select" (curriculum) and for nodes that are no unit:
#: the soft decision is exactly "select", P(skip) = 0
PINNED = float("-inf")


def tie_unit_logits(sm: "SuperModel", units: Sequence[DecisionUnit]) -> None:
    """Make every node of a unit use its first node's logits tensor (one decision per unit)."""
    for unit in units:
        leader = sm.vcns[unit.nodes[0]].logits
        for node in unit.nodes[1:]:
            sm.vcns[node].logits = leader


def unit_logits(sm: "SuperModel", units: Sequence[DecisionUnit]) -> List[torch.nn.Parameter]:
    return [sm.vcns[u.nodes[0]].logits for u in units]  # type: ignore[misc]


def pin_select(logits: torch.Tensor) -> None:
    """Hold ``logits`` at "select" exactly (in place, no gradient)."""
    with torch.no_grad():
        logits.zero_()
        logits[:, SKIP] = PINNED
    logits.requires_grad_(False)


def is_pinned(logits: torch.Tensor) -> bool:
    """Whether a unit's logits are held at "select" (curriculum, or no unit)."""
    return bool(torch.isneginf(logits[:, SKIP]).all())


def select_log_probs(sm: "SuperModel", units: Sequence[DecisionUnit]) -> torch.Tensor:
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
    """Select-or-skip per task and residual block, with AdaShare's losses, curriculum and
    final choice (see the module docstring); its settings are
    :class:`~automtl.search.config.AdaShareConfig` (``adashare:`` in a config)."""

    name = "adashare"
    draws = ADASHARE_DRAWS

    def __init__(
        self,
        lambda_sparsity: float = 1e-3,
        lambda_sharing: float = 0.05,
        granularity: str = "block",
        curriculum: bool = True,
        draw: str = "retrain",
        k: int = 8,
        seed: int = 0,
    ):
        self.set_draw(draw, k, seed)
        self.lambda_sparsity = float(lambda_sparsity)
        self.lambda_sharing = float(lambda_sharing)
        self.granularity = granularity
        self.curriculum = bool(curriculum)
        self.units: List[DecisionUnit] = []
        self._initial: List[torch.Tensor] = []

    @classmethod
    def from_config(cls, config: "SearchConfig") -> "AdaShare":
        a = config.adashare
        seed = config.seed if a.draw_seed is None else a.draw_seed
        return cls(a.lambda_sparsity, a.lambda_sharing, a.granularity, a.curriculum, a.draw, a.k, seed)

    # -- set-up -----------------------------------------------------------------------------
    def prepare(self, sm: "SuperModel") -> None:
        sm.set_allowed_options(("shared", "skip"))
        self.units = decision_units(sm, self.granularity)
        if not self.units and self.granularity == "block":
            warnings.warn(
                f"AdaShare decides per residual block, and the backbone '{sm.backbone_name}' has none it can "
                "skip (an addition of a residual branch and a shortcut, see automtl.methods.blocks); it decides "
                "per operator instead (adashare.granularity: operator), which is not the paper's method",
                stacklevel=2,
            )
            self.granularity = "operator"
            self.units = decision_units(sm, self.granularity)
        sm.set_block_skips(find_block_skips(sm) if self.granularity == "block" else ())
        tie_unit_logits(sm, self.units)
        in_units = {n for u in self.units for n in u.nodes}
        for node in sm.searchable_nodes:
            if node not in in_units:  # the stem, down-sample paths, classifier: always run, shared
                pin_select(sm.vcns[node].logits)  # type: ignore[arg-type]
        self._initial = [p.detach().clone() for p in unit_logits(sm, self.units)]
        if self.curriculum:
            self._apply_curriculum(sm, 0)

    def _ensure_units(self, sm: "SuperModel") -> None:
        if not self.units:  # the pipeline calls prepare(); a bare call may not have
            self.units = decision_units(sm, self.granularity)

    def pretrain_mode(self, sm: "SuperModel") -> None:
        sm.set_mode("fixed", policy=Policy.all_shared(sm))

    # -- curriculum -------------------------------------------------------------------------
    def on_policy_epoch(self, sm: "SuperModel", epoch: int) -> None:
        if self.curriculum:
            self._apply_curriculum(sm, epoch)

    def _apply_curriculum(self, sm: "SuperModel", epoch: int) -> None:
        """Idempotent: pin the closed units, release the open ones (a unit still pinned is
        set back to its initial logits when it opens; one that learned already keeps them)."""
        opened = set(open_units(len(self.units), epoch))
        for i, logits in enumerate(unit_logits(sm, self.units)):
            if i in opened:
                if is_pinned(logits):
                    with torch.no_grad():
                        logits.copy_(self._initial[i].to(logits.device))
                logits.requires_grad_(True)
            else:
                pin_select(logits)

    # -- policy loss ------------------------------------------------------------------------
    def policy_loss(self, sm: "SuperModel") -> Optional[torch.Tensor]:
        if self.lambda_sparsity == 0.0 and self.lambda_sharing == 0.0:
            return None
        log_alpha = select_log_probs(sm, self.units)
        return self.lambda_sparsity * sparsity_loss(log_alpha) + self.lambda_sharing * sharing_loss(log_alpha.exp())

    # -- the final architecture -------------------------------------------------------------
    def select_probs(self, sm: "SuperModel") -> torch.Tensor:
        """α, ``[units, tasks]``, detached."""
        with torch.no_grad():
            return select_log_probs(sm, self.units).exp().cpu()

    def sample(self, sm: "SuperModel", seed: int) -> Policy:
        """One select-or-skip decision per unit and task, drawn from α (seeded)."""
        self._ensure_units(sm)
        generator = torch.Generator().manual_seed(int(seed))
        alpha = self.select_probs(sm)
        chosen = torch.rand(alpha.shape, generator=generator) < alpha
        return self._policy(sm, chosen)

    def argmax(self, sm: "SuperModel") -> Policy:
        self._ensure_units(sm)
        return self._policy(sm, self.select_probs(sm) >= 0.5)

    def _policy(self, sm: "SuperModel", selected: torch.Tensor) -> Policy:
        """Every node of a unit takes the unit's decision; every other node is shared."""
        probs = sm.policy_probs()
        choices: Dict[str, Dict[str, int]] = {t: {n: SHARED for n in sm.searchable_nodes} for t in sm.task_names}
        for u, unit in enumerate(self.units):
            for node in unit.nodes:
                for k, task in enumerate(sm.task_names):
                    choices[task][node] = SHARED if bool(selected[u, k]) else SKIP
        table = {t: {n: p[k].tolist() for n, p in probs.items()} for k, t in enumerate(sm.task_names)}
        return Policy(sm.task_names, sm.searchable_nodes, choices, table)

    def retrain_candidates(self, sm: "SuperModel") -> List[Policy]:
        """``draw="retrain"``: the sampled policies, for the pipeline to train with the
        post-train settings and keep the best on validation (duplicates are trained once)."""
        return self.samples(sm) if self.draw == "retrain" else []


METHODS.register("adashare", AdaShare.from_config)
