"""AutoMTL (Zhang et al., 2022): three options per task and node (shared, own copy, skip),
the policy loss λ_reg · L_reg, and the final policy drawn by the base class."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from automtl.methods.base import METHODS, SharingMethod
from automtl.search.regularizer import policy_regularizer

if TYPE_CHECKING:  # pragma: no cover
    from automtl.search.config import SearchConfig
    from automtl.supermodel import SuperModel


class AutoMTL(SharingMethod):
    """Three options per task and node; policy loss λ_reg · L_reg; the final policy sampled
    from the learned distribution (``draw="sample"``, seeded), its arg-max (``"argmax"``), or
    the best of ``k`` samples by validation loss (``"best_of_k"``). Its settings are
    ``policy_train.lambda_reg``/``reg_weights`` and ``post_train.draw``/``k``/``draw_seed``
    (:class:`~automtl.search.config.PolicyTrainConfig`, :class:`~automtl.search.config.PostTrainConfig`)."""

    name = "automtl"

    def __init__(self, lambda_reg: float = 5e-4, draw: str = "sample", k: int = 8, seed: int = 0,
                 reg_weights: str = "depth"):
        self.lambda_reg = float(lambda_reg)
        self.reg_weights = reg_weights
        self.set_draw(draw, k, seed)

    @classmethod
    def from_config(cls, config: "SearchConfig") -> "AutoMTL":
        post = config.post_train
        seed = config.seed if post.draw_seed is None else post.draw_seed
        return cls(config.policy_train.lambda_reg, post.draw, post.k, seed, config.policy_train.reg_weights)

    def policy_loss(self, sm: "SuperModel") -> Optional[torch.Tensor]:
        if self.lambda_reg == 0.0:
            return None
        return self.lambda_reg * policy_regularizer(sm, self.reg_weights)


METHODS.register("automtl", AutoMTL.from_config)
