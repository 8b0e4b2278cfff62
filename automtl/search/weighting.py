"""Loss weightings: how the per-task losses become gradients. A plug-in, apart from the
sharing method, so that any method combines with any weighting.

The interface is one call that replaces ``loss.backward()`` in the training loop::

    total = weighting.backward(losses, extra=reg, scale=scaler.scale, params=trained)

``losses`` maps task names to scalar losses; ``extra`` is a term added as it is (e.g. the
policy regulariser); ``scale`` is applied to what is back-propagated (mixed-precision loss
scaling); ``params`` are the parameters the step trains (what a weighting that aggregates
per-task gradients - e.g. torchjd's Jacobian descent - differentiates with respect to). It
returns the combined loss, detached, for logging. A weighting with learnable
parameters (e.g. uncertainty weighting) lists them in :meth:`parameters` - the loop trains
them with the model's weights - and keeps any other state in ``state_dict``.
"""

from __future__ import annotations

import difflib
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import torch

from automtl.errors import ConfigError

Scale = Callable[[torch.Tensor], torch.Tensor]


class LossWeighting:
    """Base class; subclasses implement :meth:`combine` (or override :meth:`backward`)."""

    name = "weighting"

    def __init__(self, task_weights: Mapping[str, float]):
        self.task_weights: Dict[str, float] = {k: float(v) for k, v in task_weights.items()}

    def parameters(self) -> List[torch.nn.Parameter]:
        return []

    def state_dict(self) -> Dict[str, object]:
        return {}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        pass

    def to(self, device: torch.device) -> "LossWeighting":
        return self

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def backward(
        self,
        losses: Mapping[str, torch.Tensor],
        *,
        extra: Optional[torch.Tensor] = None,
        scale: Optional[Scale] = None,
        params: Sequence[torch.Tensor] = (),
    ) -> torch.Tensor:
        total = self.combine(losses)
        if extra is not None:
            total = total + extra
        (scale(total) if scale is not None else total).backward()
        return total.detach()


class EqualWeighting(LossWeighting):
    """Σ λᵢ Lᵢ with each task's fixed weight λᵢ (``Task.weight``, 1 unless set)."""

    name = "equal"

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        total = None
        for task, loss in losses.items():
            term = self.task_weights.get(task, 1.0) * loss
            total = term if total is None else total + term
        if total is None:
            raise ConfigError("no task losses to combine")
        return total


#: Weightings by name. New weightings add one line here.
WEIGHTINGS: Dict[str, Callable[[Mapping[str, float]], LossWeighting]] = {
    "equal": EqualWeighting,
}


def make_weighting(name: str, task_weights: Mapping[str, float]) -> LossWeighting:
    if name not in WEIGHTINGS:
        close = difflib.get_close_matches(name, list(WEIGHTINGS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown loss weighting '{name}'{hint}; available: {', '.join(WEIGHTINGS)}")
    return WEIGHTINGS[name](task_weights)
