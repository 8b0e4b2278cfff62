"""Sharing methods over the same compiled SuperModel, and the tools that compare them.

Every method is a :class:`~automtl.search.strategy.SharingMethod` run by the one search
pipeline, named in :data:`automtl.search.strategy.METHODS`:

* ``single_task`` / ``multi_task``: the fixed all-own and all-shared baselines
  (:class:`~automtl.search.strategy.FixedPolicy`);
* ``automtl``: the three-option search (:class:`~automtl.search.strategy.AutoMTL`);
* ``adashare``: select-or-skip per task and residual block (:mod:`automtl.methods.adashare`);
* ``roaming``: Maximum Roaming's per-task channel masks (:mod:`automtl.methods.roaming`).

:func:`compare` runs several of them on one benchmark and tabulates them;
:func:`group_tasks` is task grouping (which tasks to train together under an inference
budget), with its exact network selection in :mod:`automtl.methods.selection`.
"""

from automtl.methods.adashare import AdaShare, sharing_loss, sparsity_loss
from automtl.methods.blocks import DecisionUnit, decision_units, residual_blocks
from automtl.methods.compare import DEFAULT_METHODS, ComparisonResult, compare, resolve_methods
from automtl.methods.grouping import GroupingResult, Network, group_tasks
from automtl.methods.masking import ChannelMaskedModel, mask_channels, maskable_layers
from automtl.methods.roaming import MaximumRoaming, RoamingPlan
from automtl.methods.selection import Selection, brute_force_selection, select_networks
from automtl.search.strategy import METHODS, AutoMTL, FixedPolicy

__all__ = [
    "METHODS",
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
    "compare",
    "resolve_methods",
    "DEFAULT_METHODS",
    "ComparisonResult",
    "group_tasks",
    "GroupingResult",
    "Network",
    "select_networks",
    "brute_force_selection",
    "Selection",
]
