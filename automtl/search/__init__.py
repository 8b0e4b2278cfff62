"""The search pipeline: pre-train, policy-train and post-train over a SuperModel.

    result = automtl.search(sm, train, val, config="my.yaml", out="runs/x")
    model, meta = automtl.load_run("runs/x")

See :mod:`automtl.search.config` for every setting, :mod:`automtl.methods` for
sharing methods and :mod:`automtl.search.weighting` for loss weightings. The package itself
is callable: ``automtl.search(...)`` is :func:`automtl.search.pipeline.search`.
"""

import sys as _sys
import types as _types

from automtl.search.config import (
    BaselineConfig,
    DataConfig,
    LoggingConfig,
    ModelConfig,
    OptimizerConfig,
    PolicyTrainConfig,
    PostTrainConfig,
    PretrainConfig,
    SchedulerConfig,
    SearchConfig,
    load_config,
)
from automtl.search.pipeline import Comparison, SearchResult, load_run, search, search_with_baselines
from automtl.search.regularizer import policy_regularizer
from automtl.search.report import Row, Table, comparison_table, results_table
from automtl.search.schedule import TauSchedule
from automtl.methods import METHODS, AutoMTL, FixedPolicy, SharingMethod, make_method
from automtl.search.trainer import Callback
from automtl.search.weighting import WEIGHTINGS, EqualWeighting, LossWeighting, make_weighting

__all__ = [
    "search",
    "search_with_baselines",
    "load_run",
    "SearchResult",
    "Comparison",
    "SearchConfig",
    "OptimizerConfig",
    "SchedulerConfig",
    "PretrainConfig",
    "PolicyTrainConfig",
    "PostTrainConfig",
    "DataConfig",
    "ModelConfig",
    "BaselineConfig",
    "LoggingConfig",
    "load_config",
    "policy_regularizer",
    "TauSchedule",
    "SharingMethod",
    "AutoMTL",
    "FixedPolicy",
    "METHODS",
    "make_method",
    "LossWeighting",
    "EqualWeighting",
    "WEIGHTINGS",
    "make_weighting",
    "Callback",
    "Row",
    "Table",
    "results_table",
    "comparison_table",
]


class _CallableModule(_types.ModuleType):
    """``automtl.search`` is both this package and the function that runs a search:
    ``automtl.search(sm, train, val, ...)`` calls :func:`automtl.search.pipeline.search`."""

    def __call__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return search(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
