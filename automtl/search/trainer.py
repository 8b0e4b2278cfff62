"""The training loop every stage and every method shares.

:class:`StageLoop` runs the steps of one stage and does the bookkeeping around them - the
progress bar, ``metrics.jsonl`` lines, evaluations, checkpoints, callbacks, the check for
non-finite losses. What a step *is* comes from the stage (:mod:`automtl.search.stages`) as a
function; the loop knows nothing about methods or options.

A step returns its losses as tensors, still on the device. The loop reads them back only where
it must - at log, evaluation and checkpoint steps, the end of the stage, or on a stop request -
all the steps since the last read in one transfer, and checks them for non-finite values there
(a checkpoint is never written after a non-finite step). In between, a GPU runs ahead of the
host: no step waits for a ``.item()``, and under ``torchrun`` the ranks agree on stopping at
those steps only.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from tqdm.auto import tqdm

from automtl.errors import RunInterrupted, TrainingError
from automtl.search.config import LoggingConfig
from automtl.search.distributed import Runtime, any_rank
from automtl.search.interrupt import StopRequests
from automtl.search.run import RunDir

#: a step's logged values: tensors (read back at the loop's read points) or plain numbers
StepFn = Callable[[int], Dict[str, Any]]
EvalFn = Callable[[], Dict[str, Any]]
SaveFn = Callable[[int, bool, Dict[str, List[float]]], Optional[str]]

#: Logged values that are a state (last value in the window), not a per-step quantity (mean).
GAUGES = ("tau", "lr", "policy_lr", "epoch")


class Callback:
    """Hooks called by the loop on every rank; override what you need."""

    def on_search_start(self, model: Any, run: Optional[RunDir]) -> None:
        """A search of ``model`` (the SuperModel) begins, writing into ``run`` (None: no run
        directory; ``run.writer`` is False on the ranks that do not write)."""

    def on_search_end(self) -> None:
        """The search ended (finished, or stopped by an error)."""

    def on_log(self, record: Mapping[str, Any]) -> None:
        """A line was added to metrics.jsonl (train averages or an evaluation)."""

    def on_checkpoint(self, stage: str, step: int, path: Optional[str]) -> None:
        """A checkpoint of ``stage`` after ``step`` steps was written to ``path``."""

    def on_stage_end(self, stage: str) -> None:
        """``stage`` finished (its final checkpoint is written)."""


class StageLoop:
    """Runs ``step_fn`` for the steps of one stage, with logging, evaluation and checkpoints."""

    def __init__(
        self,
        run: Optional[RunDir],
        runtime: Runtime,
        logging: LoggingConfig,
        callbacks: Sequence[Callback] = (),
        progress: bool = True,
        label: str = "",
    ):
        self.run = run
        self.runtime = runtime
        self.logging = logging
        self.callbacks = list(callbacks)
        self.progress = progress and logging.progress and runtime.is_main
        self.label = label

    def log(self, record: Dict[str, Any]) -> None:
        if self.run is not None:
            self.run.log(record)
        for cb in self.callbacks:
            cb.on_log(record)

    def loop(
        self,
        stage: str,
        steps: int,
        start: int,
        step_fn: StepFn,
        save: SaveFn,
        evaluate: Optional[EvalFn] = None,
        window: Optional[Dict[str, List[float]]] = None,
    ) -> None:
        """Steps ``start .. steps-1``; ``window`` holds the values logged since the last log
        line (restored from a checkpoint on resume, so averages match an unbroken run)."""
        cfg = self.logging
        window = {k: list(v) for k, v in (window or {}).items()}
        desc = f"{self.label} {stage}".strip()
        bar = tqdm(total=steps, initial=start, desc=desc, disable=not self.progress, dynamic_ncols=True, leave=True)
        saved = start  # the step of the stage's checkpoint on disk (0: none of this stage yet)
        pending: List[Tuple[int, Dict[str, Any]]] = []  # (step, values) not read back yet
        with StopRequests() as stop:
            try:
                for step in range(start, steps):
                    pending.append((step + 1, step_fn(step)))
                    done = step + 1
                    bar.update(1)
                    log_now = done % cfg.log_every == 0 or done == steps
                    evaluating = evaluate is not None and ((cfg.eval_every and done % cfg.eval_every == 0) or done == steps)
                    periodic = bool(cfg.checkpoint_every and done % cfg.checkpoint_every == 0)
                    # one process sees a stop request at once; ranks agree on it at the read points
                    asked = stop.received is not None and not self.runtime.distributed
                    if not (log_now or evaluating or periodic or asked):  # log_now holds the stage's last step
                        continue
                    read = _read_back(pending)
                    pending = []
                    bad = next(((s, v) for s, v in read if _not_finite(v)), None)
                    not_finite, stopping = any_rank([bad is not None, stop.received is not None], self.runtime)
                    if not_finite:
                        self._stop_not_finite(stage, *(bad or (done, {})), saved)
                    for _, values in read:
                        for key, value in values.items():
                            window.setdefault(key, []).append(value)
                    bar.set_postfix_str(_postfix(read[-1][1]), refresh=False)
                    if log_now:
                        self.log({"stage": stage, "step": done, "kind": "train", **_summarise(window)})
                        window = {}
                    if evaluating:
                        self.log({"stage": stage, "step": done, "kind": "eval", **evaluate()})
                    if done < steps and (periodic or stopping):
                        path = save(done, False, window)
                        saved = done
                        for cb in self.callbacks:
                            cb.on_checkpoint(stage, done, path)
                        if stopping:
                            self._stop_interrupted(stage, done, steps, path, stop.name or "a signal on another rank", stop.received)
            finally:
                bar.close()
            path = save(steps, True, {})
            for cb in self.callbacks:
                cb.on_checkpoint(stage, steps, path)
                cb.on_stage_end(stage)
            if stop.received is not None:  # arrived during the last step: the stage is done, stop before the next
                self._stop_interrupted(stage, steps, steps, path, stop.name, stop.received)

    def _stop_interrupted(self, stage: str, step: int, steps: int, path: Optional[str], name: str, signum: Optional[int]) -> None:
        where = self.run.path if self.run is not None else None
        saved = (
            f"its checkpoint is written ({path}); resume with `automtl search --resume {where}` or "
            f"automtl.search(..., out={where!r}, resume=True)"
            if where is not None
            else "there is no run directory (out=None), so nothing was saved"
        )
        raise RunInterrupted(f"{stage}: stopped by {name} after step {step} of {steps}; {saved}", signum or 15)

    def _stop_not_finite(self, stage: str, step: int, values: Mapping[str, float], saved: int) -> None:
        bad = [k for k, v in values.items() if k.startswith("loss") and not math.isfinite(float(v))]
        if not bad:
            what = "a loss on another rank is not finite"
        else:
            per_task = [k for k in bad if k.startswith("loss/")]
            key = per_task[0] if per_task else bad[0]
            what = (f"the loss of task '{key[len('loss/'):]}'" if per_task else key) + f" is {values[key]}"
        if self.run is None:
            kept = "nothing is saved (no run directory)"
        elif saved:
            kept = f"the checkpoint of step {saved} is kept ({self.run.checkpoint(stage)})"
        else:
            kept = "this stage has no checkpoint yet; the earlier stages' are kept"
        raise TrainingError(
            f"{stage}, step {step}: {what}; training stopped and {kept}. Lower the learning rate, check "
            "this task's data and loss, or turn mixed precision off; then resume the run"
        )


def _read_back(pending: Sequence[Tuple[int, Mapping[str, Any]]]) -> List[Tuple[int, Dict[str, float]]]:
    """The values of ``pending`` steps as floats: every tensor among them stacked and copied to
    the host at once (one synchronisation, however many steps and losses)."""
    tensors = [v for _, values in pending for v in values.values() if isinstance(v, torch.Tensor)]
    host: List[float] = []
    if tensors:
        device = tensors[0].device
        # float64 holds every float32/bfloat16/float16 value exactly: float(t) as it was (MPS has no float64)
        dtype = torch.float32 if device.type == "mps" else torch.float64
        host = torch.stack([t.detach().reshape(()).to(device=device, dtype=dtype) for t in tensors]).tolist()
    numbers = iter(host)
    return [(step, {k: next(numbers) if isinstance(v, torch.Tensor) else float(v) for k, v in values.items()}) for step, values in pending]


def _not_finite(values: Mapping[str, float]) -> bool:
    return any(k.startswith("loss") and not math.isfinite(float(v)) for k, v in values.items())


def _summarise(window: Mapping[str, List[float]]) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for key, values in window.items():
        if not values:
            continue
        out[key] = values[-1] if key in GAUGES else sum(values) / len(values)
    return out


def _postfix(values: Mapping[str, float]) -> str:
    parts = []
    for key, value in values.items():
        if key == "tau":
            parts.append(f"τ={value:.3g}")
        elif key.startswith("loss") or key in ("reg",):
            parts.append(f"{key.replace('loss/', '')}={value:.4g}")
    return " ".join(parts)
