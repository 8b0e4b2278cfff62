"""The Gumbel-softmax temperature schedule: τ = τ₀ · decay^epoch, never below τ_min.

τ is a function of how many policy steps have been taken, so a resumed run gets the same τ
as an uninterrupted one without carrying any schedule state.
"""

from __future__ import annotations

import dataclasses

from automtl.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class TauSchedule:
    """``init`` · ``decay`` ^ (policy steps // ``steps_per_epoch``), floored at ``minimum``."""

    init: float = 5.0
    decay: float = 0.965
    steps_per_epoch: int = 1
    minimum: float = 1e-3

    def __post_init__(self) -> None:
        if not self.init > 0 or not 0 < self.decay <= 1 or self.steps_per_epoch < 1 or not self.minimum > 0:
            raise ConfigError(
                f"tau schedule needs init > 0, 0 < decay <= 1, steps_per_epoch >= 1, minimum > 0; got {self}"
            )

    def epoch(self, policy_steps: int) -> int:
        return int(policy_steps) // self.steps_per_epoch

    def at_epoch(self, epoch: int) -> float:
        return max(self.init * self.decay ** int(epoch), self.minimum)

    def __call__(self, policy_steps: int) -> float:
        """τ after ``policy_steps`` policy steps."""
        return self.at_epoch(self.epoch(policy_steps))
