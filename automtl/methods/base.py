"""The sharing-method interface, its registry, and the one way of drawing a final policy.

The pipeline (:mod:`automtl.search.stages`) has no method-specific branches: it asks the
method object, through this small interface, everything that differs between methods.

* ``stages``: which of ``pretrain``, ``policy_train``, ``post_train`` the method runs;
* ``prepare(sm)``: set the supermodel up once (e.g. restrict the options with
  ``sm.set_allowed_options``);
* ``pretrain_mode(sm)``: the mode weights are warmed up in (AutoMTL: ``warmup``, every
  option averaged);
* ``policy_loss(sm)``: the term a policy step adds to Σ λᵢ Lᵢ (AutoMTL: λ_reg · L_reg), or None;
* ``on_policy_epoch(sm, epoch)``: called before the first policy step of every policy-train
  epoch, and again after a resume (curricula: set the state from ``epoch``, idempotently);
* ``before_step(model, stage, step)``: called before every training step with the model the
  stage trains (the SuperModel, or the derived model in post-train), e.g. to update
  per-task channel masks on a schedule;
* ``draw_policy(sm, score)``: the hard policy post-train trains; ``score(policy)`` gives the
  validation loss of the policy-trained supermodel in fixed mode (lower is better), for
  methods that pick among candidates. The base class draws by ``draw``: ``argmax``,
  ``sample`` (seeded by ``seed``) or ``best_of_k`` (the best of ``k`` distinct samples by
  ``score``), through :meth:`argmax` and :meth:`sample`, which a method with its own
  decisions (AdaShare) overrides;
* ``retrain_candidates(sm)``: policies to choose among by training each with the post-train
  settings and keeping the best on validation (AdaShare: k samples, re-trained); an empty
  list (the default) means ``draw_policy`` gives the policy post-train trains;
* ``adapt_model(model, sm)``: the model post-train trains, made from the derived one
  (default: the derived model itself; Maximum Roaming adds per-task channel masks, which
  the run's ``model/model.json`` records so that :func:`automtl.load_run` rebuilds them).

A method registers a factory ``config -> method`` (usually its ``from_config``) in
:data:`METHODS`; the search pipeline builds methods with :func:`make_method`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Tuple, Union

import torch

from automtl.compiler.ir import OPTIONS
from automtl.errors import ConfigError
from automtl.policy import Policy
from automtl.registry import Registry
from automtl.search.config import DRAWS, STAGES

if TYPE_CHECKING:  # pragma: no cover
    from automtl.export.derive import MultiTaskModel
    from automtl.search.config import SearchConfig
    from automtl.supermodel import SuperModel

Score = Callable[[Policy], float]


class SharingMethod:
    """Base class of sharing methods; the defaults are AutoMTL's choices where one is needed."""

    name = "method"
    stages: Tuple[str, ...] = STAGES
    #: the ``draw`` values this method accepts
    draws: Tuple[str, ...] = DRAWS
    draw = "argmax"
    k = 1
    seed = 0

    @classmethod
    def from_config(cls, config: "SearchConfig") -> "SharingMethod":
        """The method with the settings of a :class:`~automtl.search.config.SearchConfig`."""
        return cls()

    def set_draw(self, draw: str, k: int = 1, seed: int = 0) -> None:
        """Check and set how :meth:`draw_policy` draws the final policy."""
        if draw not in self.draws:
            raise ConfigError(f"{self.label} draw must be one of {', '.join(self.draws)}, got {draw!r}")
        if isinstance(k, bool) or int(k) < 1:
            raise ConfigError(f"{self.label} k must be 1 or more, got {k}")
        self.draw, self.k, self.seed = draw, int(k), int(seed)

    @property
    def label(self) -> str:
        """The method's name in messages."""
        return {"automtl": "AutoMTL", "adashare": "AdaShare"}.get(self.name, self.name)

    # -- the pipeline's hooks -----------------------------------------------------------------
    def prepare(self, sm: "SuperModel") -> None:
        sm.set_allowed_options(OPTIONS)

    def pretrain_mode(self, sm: "SuperModel") -> None:
        sm.set_mode("warmup")

    def policy_loss(self, sm: "SuperModel") -> Optional[torch.Tensor]:
        return None

    def on_policy_epoch(self, sm: "SuperModel", epoch: int) -> None:
        pass

    def before_step(self, model: torch.nn.Module, stage: str, step: int) -> None:
        pass

    def retrain_candidates(self, sm: "SuperModel") -> List[Policy]:
        return []

    def adapt_model(self, model: "MultiTaskModel", sm: "SuperModel") -> "MultiTaskModel":
        return model

    # -- drawing the final policy (once, for every method) ------------------------------------
    def argmax(self, sm: "SuperModel") -> Policy:
        """The most probable option per task and node."""
        return Policy.argmax(sm)

    def sample(self, sm: "SuperModel", seed: int) -> Policy:
        """One policy drawn from the learned distribution (seeded)."""
        return Policy.sample(sm, seed=seed)

    def samples(self, sm: "SuperModel") -> List[Policy]:
        """The distinct policies among ``k`` seeded samples (seeds ``seed`` .. ``seed + k - 1``)."""
        found: List[Policy] = []
        for j in range(self.k):
            policy = self.sample(sm, self.seed + j)
            if policy not in found:
                found.append(policy)
        return found

    def draw_policy(self, sm: "SuperModel", score: Score) -> Policy:
        if self.draw == "argmax":
            return self.argmax(sm)
        if self.draw == "best_of_k":
            return best_of(self.samples(sm), score)
        return self.sample(sm, self.seed)  # "sample" (and a method's own draws outside the pipeline)


def best_of(candidates: Sequence[Policy], score: Score) -> Policy:
    """The candidate with the lowest score (the first one on ties)."""
    scored = [(score(p), i) for i, p in enumerate(candidates)]
    return candidates[min(scored)[1]]


#: Sharing methods by name, as factories ``config -> method``; short names (``automtl compare
#: --methods single,multi``) and old config keys are aliases. Each method's module registers it.
METHODS: Registry[Callable[["SearchConfig"], SharingMethod]] = Registry("sharing method")


def make_method(method: Union[str, SharingMethod], config: "SearchConfig") -> SharingMethod:
    """``method`` itself, or the registered method of that name built from ``config``."""
    if isinstance(method, SharingMethod):
        return method
    return METHODS.get(method)(config)
