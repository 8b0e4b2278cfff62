"""The single-task and multi-task baselines: fixed policies trained by the post-train loop."""

from __future__ import annotations

from typing import TYPE_CHECKING

from automtl.compiler.ir import OPTIONS
from automtl.errors import ConfigError
from automtl.methods.base import METHODS, Score, SharingMethod
from automtl.policy import Policy

if TYPE_CHECKING:  # pragma: no cover
    from automtl.search.config import SearchConfig
    from automtl.supermodel import SuperModel


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

    @classmethod
    def single_task(cls, config: "SearchConfig" = None) -> "FixedPolicy":  # type: ignore[assignment]
        return cls("own")

    @classmethod
    def multi_task(cls, config: "SearchConfig" = None) -> "FixedPolicy":  # type: ignore[assignment]
        return cls("shared")

    def draw_policy(self, sm: "SuperModel", score: Score) -> Policy:
        if self.option == "shared":
            return Policy.hard_sharing(sm)
        return Policy.constant(sm, self.option)


METHODS.register("single_task", FixedPolicy.single_task, aliases=("single",))
METHODS.register("multi_task", FixedPolicy.multi_task, aliases=("multi",))
