"""Experiments that run the search pipeline several times: the drivers above the pipeline.

:func:`compare` runs several sharing methods on one benchmark and tabulates them;
:func:`group_tasks` is task grouping (which tasks to train together under an inference
budget), with its exact network selection in :mod:`automtl.experiments.selection`;
:mod:`automtl.experiments.sweep` and :mod:`automtl.experiments.seeds` repeat comparisons over
settings and seeds.
"""

from automtl.experiments.compare import DEFAULT_METHODS, ComparisonResult, compare, resolve_methods
from automtl.experiments.grouping import GroupingResult, Network, group_tasks
from automtl.experiments.seeds import SeedTable, parse_seeds, seed_table
from automtl.experiments.selection import Selection, brute_force_selection, select_networks
from automtl.experiments.sweep import SeedComparison, SweepResult, compare_seeds, sweep

__all__ = [
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
    "compare_seeds",
    "SeedComparison",
    "sweep",
    "SweepResult",
    "seed_table",
    "SeedTable",
    "parse_seeds",
]
