"""Loss weightings: how the per-task losses become gradients. A plug-in, apart from the
sharing method, so that any method combines with any weighting.

The interface is one call that replaces ``loss.backward()`` in the training loop::

    total = weighting.backward(losses, extra=reg, scale=scaler.scale, params=trained)

``losses`` maps task names to scalar losses; ``extra`` is a term added as it is (e.g. the
policy regulariser); ``scale`` is applied to what is back-propagated (mixed-precision loss
scaling); ``params`` are the parameters the step trains (what a weighting that aggregates
per-task gradients - e.g. torchjd's Jacobian descent - differentiates with respect to). It
returns the combined loss, detached, for logging. A weighting is an ``nn.Module``: its
learnable parameters (e.g. uncertainty weighting's) are its ``parameters()`` - the loop trains
them with the model's weights - and its ``state_dict`` goes into the checkpoints. A weighting
that needs more than the losses (torchjd's ``mtl_backward`` needs the features the task heads
read) gets the trained model once per stage through ``with weighting.watch(model): ...``.

The weightings: ``equal`` (Σ λᵢ Lᵢ, the default), ``uncertainty`` (Kendall et al.: learned
log-variances) and, with the ``torchjd`` package installed (``pip install automtl[jd]``),
Jacobian descent with one of its aggregators (:data:`JD_AGGREGATORS`: ``upgrad``, ``mgda``,
``cagrad``, ``pcgrad``, ``nash_mtl``, ...).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Dict, Iterator, Mapping, Optional, Sequence

import torch
from torch import nn

from automtl.errors import ConfigError
from automtl.registry import Registry

Scale = Callable[[torch.Tensor], torch.Tensor]


class LossWeighting(nn.Module):
    """Base class; subclasses implement :meth:`combine` (or override :meth:`backward`).
    Parameters, ``state_dict`` and ``.to()`` are ``nn.Module``'s (``.to()`` keeps the same
    ``Parameter`` objects, so an optimiser built before it still trains them)."""

    name = "weighting"

    def __init__(self, task_weights: Mapping[str, float]):
        super().__init__()
        self.task_weights: Dict[str, float] = {k: float(v) for k, v in task_weights.items()}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        try:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        except RuntimeError as exc:  # a checkpoint of other tasks (or another weighting)
            raise ConfigError(
                f"the saved {self.name} weighting does not fit these {len(self.task_weights)} tasks: {str(exc).splitlines()[0]}"
            ) from None

    def watch(self, model: nn.Module) -> ContextManager[None]:
        """Observe ``model`` while a stage trains it (nothing by default)."""
        return contextlib.nullcontext()

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


class UncertaintyWeighting(LossWeighting):
    """Uncertainty weighting (Kendall, Gal and Cipolla, 2018): each task has a learned
    log-variance sᵢ = log σᵢ² and the combined loss is Σᵢ λᵢ (½ e^(−sᵢ) Lᵢ + ½ sᵢ) - the
    paper's Gaussian form, applied to every task as is common; sᵢ start at ``init`` (0: σ = 1)
    and are trained with the weights."""

    name = "uncertainty"

    def __init__(self, task_weights: Mapping[str, float], init: float = 0.0):
        super().__init__(task_weights)
        self.order = list(self.task_weights)
        self.log_vars = nn.Parameter(torch.full((len(self.order),), float(init)))  # state_dict key: log_vars

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        total = None
        for task, loss in losses.items():
            if task not in self.order:
                raise ConfigError(f"uncertainty weighting: no log-variance for task '{task}' (tasks: {', '.join(self.order)})")
            s = self.log_vars[self.order.index(task)]
            term = self.task_weights[task] * (0.5 * torch.exp(-s) * loss + 0.5 * s)
            total = term if total is None else total + term
        if total is None:
            raise ConfigError("no task losses to combine")
        return total

    def variances(self) -> Dict[str, float]:
        """σᵢ² per task."""
        return {t: float(torch.exp(self.log_vars[i].detach())) for i, t in enumerate(self.order)}


#: torchjd aggregators usable as loss weightings (by their names here, lower case): each entry
#: makes the aggregator from ``torchjd.aggregation`` and the number of tasks.
JD_AGGREGATORS: Registry[Callable[[Any, int], Any]] = Registry("torchjd aggregator")
JD_AGGREGATORS.register("upgrad", lambda A, n: A.UPGrad())
JD_AGGREGATORS.register("dualproj", lambda A, n: A.DualProj())
JD_AGGREGATORS.register("mgda", lambda A, n: A.MGDA())
JD_AGGREGATORS.register("cagrad", lambda A, n: A.CAGrad(c=0.5))
JD_AGGREGATORS.register("pcgrad", lambda A, n: A.PCGrad())
JD_AGGREGATORS.register("nash_mtl", lambda A, n: A.NashMTL(n_tasks=n))
JD_AGGREGATORS.register("imtl_g", lambda A, n: A.IMTLG())
JD_AGGREGATORS.register("aligned_mtl", lambda A, n: A.AlignedMTL())
JD_AGGREGATORS.register("graddrop", lambda A, n: A.GradDrop())
JD_AGGREGATORS.register("rlw", lambda A, n: A.Random())


class JacobianDescent(LossWeighting):
    """Jacobian descent with a torchjd aggregator, through ``torchjd.autojac.mtl_backward``:
    the gradient of every task's loss (times λᵢ) reaches its head's parameters as it is; the
    parameters below the heads get the Jacobian - one row per task - through the features the
    heads read, and the aggregator (UPGrad, MGDA, ...) turns it into one gradient
    (``jac_to_grad``). The features are taken, while a stage runs, from the inputs of the
    model's ``heads.<task>`` modules (:meth:`watch`); where a task has no head module the
    Jacobian is taken with respect to every trained parameter (``torchjd.autojac.backward``).
    One process only (not under torchrun)."""

    def __init__(self, task_weights: Mapping[str, float], aggregator: str):
        super().__init__(task_weights)
        try:
            import torchjd  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"loss weighting '{aggregator}' is torchjd's aggregator; install torchjd: pip install 'automtl[jd]'"
            ) from None
        factory = JD_AGGREGATORS.get(aggregator)
        from torchjd import aggregation

        try:
            # not a registered submodule: the checkpoints of a Jacobian-descent run hold no
            # weighting state, as before the weightings were modules
            self.__dict__["aggregator"] = factory(aggregation, len(self.task_weights))
        except ImportError as exc:
            raise ConfigError(f"loss weighting '{aggregator}': {exc}") from None
        self.name = aggregator
        self._features: Dict[str, torch.Tensor] = {}
        self._heads: Dict[str, nn.Module] = {}

    @contextlib.contextmanager
    def watch(self, model: nn.Module) -> Iterator[None]:
        model = getattr(model, "module", model)  # under DistributedDataParallel
        heads = getattr(model, "heads", None)
        handles = []
        self._heads = {}
        for task in self.task_weights:
            head = getattr(heads, task, None) if heads is not None else None
            if isinstance(head, nn.Module) and not isinstance(head, nn.Identity):
                self._heads[task] = head
                handles.append(head.register_forward_pre_hook(self._recorder(task)))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            self._heads, self._features = {}, {}

    def _recorder(self, task: str) -> Callable[..., None]:
        def record(module: nn.Module, args: tuple) -> None:
            if torch.is_grad_enabled() and args and isinstance(args[0], torch.Tensor):
                self._features[task] = args[0]

        return record

    def backward(
        self,
        losses: Mapping[str, torch.Tensor],
        *,
        extra: Optional[torch.Tensor] = None,
        scale: Optional[Scale] = None,
        params: Sequence[torch.Tensor] = (),
    ) -> torch.Tensor:
        from torchjd.autojac import backward as jd_backward, jac_to_grad, mtl_backward

        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            raise ConfigError(f"loss weighting '{self.name}' (torchjd) runs in one process only; use 'equal' or 'uncertainty' under torchrun")
        tasks = list(losses)
        weighted = [self.task_weights.get(t, 1.0) * losses[t] for t in tasks]
        total = sum(w.detach() for w in weighted)
        if extra is not None:
            (scale(extra) if scale is not None else extra).backward()
            total = total + extra.detach()
        tensors = [scale(w) if scale is not None else w for w in weighted]
        trained = [p for p in params if p.requires_grad]
        features = [self._features.get(t) for t in tasks]
        self._features = {}
        if trained and all(f is not None and f.requires_grad for f in features):
            head_params = [[p for p in self._heads[t].parameters() if p.requires_grad] for t in tasks]
            in_heads = {id(p) for group in head_params for p in group}
            trained_ids = {id(p) for p in trained}
            head_params = [[p for p in group if id(p) in trained_ids] for group in head_params]
            shared = [p for p in trained if id(p) not in in_heads]
            if shared:
                unique = list({id(f): f for f in features}.values())  # all-shared: one tensor feeds every head
                mtl_backward(tensors, features=unique, tasks_params=head_params, shared_params=shared)
                jac_to_grad(shared, self.aggregator)
                return total
        if trained:
            jd_backward(tensors, inputs=trained)
            jac_to_grad(trained, self.aggregator)
        return total


def _jacobian_descent(aggregator: str) -> Callable[[Mapping[str, float]], LossWeighting]:
    return lambda task_weights: JacobianDescent(task_weights, aggregator)


#: Weightings by name. New weightings register one entry here.
WEIGHTINGS: Registry[Callable[[Mapping[str, float]], LossWeighting]] = Registry("loss weighting")
WEIGHTINGS.register("equal", EqualWeighting)
WEIGHTINGS.register("uncertainty", UncertaintyWeighting)
for _name in JD_AGGREGATORS:
    WEIGHTINGS.register(_name, _jacobian_descent(_name))


def make_weighting(name: str, task_weights: Mapping[str, float]) -> LossWeighting:
    return WEIGHTINGS.get(name)(task_weights)
