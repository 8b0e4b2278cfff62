"""Sharing methods over the same compiled SuperModel: plug-ins below the search pipeline.

Every method is a :class:`~automtl.methods.base.SharingMethod` run by the one search
pipeline, registered by name in :data:`automtl.methods.base.METHODS` by its own module:

* ``single_task`` / ``multi_task``: the fixed all-own and all-shared baselines
  (:class:`~automtl.methods.fixed.FixedPolicy`);
* ``automtl``: the three-option search (:class:`~automtl.methods.automtl_method.AutoMTL`);
* ``adashare``: select-or-skip per task and residual block (:mod:`automtl.methods.adashare`);
* ``roaming``: Maximum Roaming's per-task channel masks (:mod:`automtl.methods.roaming`).

The drivers that run several searches (comparisons, task grouping, sweeps) sit above the
pipeline, in :mod:`automtl.experiments`.
"""

from automtl.methods.base import METHODS, SharingMethod, make_method
from automtl.methods.automtl_method import AutoMTL
from automtl.methods.fixed import FixedPolicy
from automtl.methods.adashare import AdaShare, sharing_loss, sparsity_loss
from automtl.methods.roaming import MaximumRoaming, RoamingPlan
from automtl.methods.blocks import DecisionUnit, decision_units, residual_blocks
from automtl.methods.masking import ChannelMaskedModel, mask_channels, maskable_layers

__all__ = [
    "METHODS",
    "SharingMethod",
    "make_method",
    "AutoMTL",
    "FixedPolicy",
    "AdaShare",
    "MaximumRoaming",
    "RoamingPlan",
    "sparsity_loss",
    "sharing_loss",
    "DecisionUnit",
    "decision_units",
    "residual_blocks",
    "ChannelMaskedModel",
    "mask_channels",
    "maskable_layers",
]
