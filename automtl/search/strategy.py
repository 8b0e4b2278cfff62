"""Sharing methods as strategies over the same SuperModel.

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
  methods that pick among candidates;
* ``retrain_candidates(sm)``: policies to choose among by training each with the post-train
  settings and keeping the best on validation (AdaShare: k samples, re-trained); an empty
  list (the default) means ``draw_policy`` gives the policy post-train trains;
* ``adapt_model(model, sm)``: the model post-train trains, made from the derived one
  (default: the derived model itself; Maximum Roaming adds per-task channel masks, which
  the run's ``model/model.json`` records so that :func:`automtl.load_run` rebuilds them).

AutoMTL is the first strategy; the single-task and multi-task baselines are
:class:`FixedPolicy` strategies (all-own, all-shared) that run post-train only.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple, Union

import torch

from automtl.compiler.ir import OPTIONS
from automtl.errors import ConfigError
from automtl.export.derive import MultiTaskModel
from automtl.policy import Policy
from automtl.registry import Registry
from automtl.search.config import STAGES, SearchConfig
from automtl.search.regularizer import policy_regularizer
from automtl.supermodel import SuperModel

Score = Callable[[Policy], float]


class SharingMethod:
    """Base class of sharing methods; the defaults are AutoMTL's choices where one is needed."""

    name = "method"
    stages: Tuple[str, ...] = STAGES

    def prepare(self, sm: SuperModel) -> None:
        sm.set_allowed_options(OPTIONS)

    def pretrain_mode(self, sm: SuperModel) -> None:
        sm.set_mode("warmup")

    def policy_loss(self, sm: SuperModel) -> Optional[torch.Tensor]:
        return None

    def on_policy_epoch(self, sm: SuperModel, epoch: int) -> None:
        pass

    def before_step(self, model: torch.nn.Module, stage: str, step: int) -> None:
        pass

    def draw_policy(self, sm: SuperModel, score: Score) -> Policy:
        return Policy.argmax(sm)

    def retrain_candidates(self, sm: SuperModel) -> List[Policy]:
        return []

    def adapt_model(self, model: MultiTaskModel, sm: SuperModel) -> MultiTaskModel:
        return model


class AutoMTL(SharingMethod):
    """Three options per task and node; policy loss λ_reg · L_reg; the final policy sampled
    from the learned distribution (``draw="sample"``, seeded), its arg-max (``"argmax"``), or
    the best of ``k`` samples by validation loss (``"best_of_k"``)."""

    name = "automtl"

    def __init__(self, lambda_reg: float = 5e-4, draw: str = "sample", k: int = 8, seed: int = 0):
        self.lambda_reg = float(lambda_reg)
        self.draw = draw
        self.k = int(k)
        self.seed = int(seed)

    def policy_loss(self, sm: SuperModel) -> Optional[torch.Tensor]:
        if self.lambda_reg == 0.0:
            return None
        return self.lambda_reg * policy_regularizer(sm)

    def draw_policy(self, sm: SuperModel, score: Score) -> Policy:
        if self.draw == "argmax":
            return Policy.argmax(sm)
        if self.draw == "sample":
            return Policy.sample(sm, seed=self.seed)
        candidates = []
        for j in range(self.k):
            policy = Policy.sample(sm, seed=self.seed + j)
            if policy not in candidates:
                candidates.append(policy)
        scored = [(score(p), i) for i, p in enumerate(candidates)]
        return candidates[min(scored)[1]]


class FixedPolicy(SharingMethod):
    """A fixed policy trained with the post-train loop: ``"own"`` everywhere is the
    single-task baseline (one independent model per task), ``"shared"`` the multi-task
    (hard-sharing) baseline: one backbone, normalisation layers included whatever the
    ``norm`` mode, under the task heads (:meth:`Policy.hard_sharing`)."""

    stages = ("post_train",)

    def __init__(self, option: str):
        if option not in OPTIONS:
            raise ConfigError(f"a fixed policy takes one of {OPTIONS}, got {option!r}")
        self.option = option
        self.name = {"own": "single_task", "shared": "multi_task"}.get(option, f"all_{option}")

    def draw_policy(self, sm: SuperModel, score: Score) -> Policy:
        if self.option == "shared":
            return Policy.hard_sharing(sm)
        return Policy.constant(sm, self.option)


def _automtl(config: SearchConfig) -> SharingMethod:
    post = config.post_train
    seed = config.seed if post.draw_seed is None else post.draw_seed
    return AutoMTL(config.policy_train.lambda_reg, post.draw, post.k, seed)


def _adashare(config: SearchConfig) -> SharingMethod:
    from automtl.methods.adashare import AdaShare  # the methods package builds on this module

    return AdaShare.from_config(config)


def _roaming(config: SearchConfig) -> SharingMethod:
    from automtl.methods.roaming import MaximumRoaming

    return MaximumRoaming.from_config(config)


#: Sharing methods by name, built from a config; short names (``automtl compare --methods
#: single,multi``) and old config keys are aliases. New methods register one entry here.
METHODS: Registry[Callable[[SearchConfig], SharingMethod]] = Registry("sharing method")
METHODS.register("automtl", _automtl)
METHODS.register("single_task", lambda config: FixedPolicy("own"), aliases=("single",))
METHODS.register("multi_task", lambda config: FixedPolicy("shared"), aliases=("multi",))
METHODS.register("adashare", _adashare)
METHODS.register("roaming", _roaming, aliases=("maximum_roaming",))

#: alias -> method name (read-only view of ``METHODS.aliases``).
ALIASES: Dict[str, str] = METHODS.aliases


def make_method(method: Union[str, SharingMethod], config: SearchConfig) -> SharingMethod:
    if isinstance(method, SharingMethod):
        return method
    return METHODS.get(method)(config)
