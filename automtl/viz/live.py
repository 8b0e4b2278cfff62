"""Plots and TensorBoard scalars written while a search runs (``automtl search --plots``).

:class:`PlotCallback` redraws, at every evaluation, the curves of the stage being trained
and - during policy-train - the heat map of the current policy distribution and the diagram
of its arg-max; in post-train, the diagram of the policy being trained. Files go to
``RUN_DIR/plots/`` (for the baselines, to their own run directories).

:class:`TensorBoardCallback` writes every logged value as a TensorBoard scalar into
``RUN_DIR/tensorboard/``; it needs the optional ``tensorboard`` package
(``pip install "automtl[tensorboard]"``), and :func:`tensorboard_callback` returns None, after
one log line, when it is not installed.

A figure that cannot be drawn is reported in one log line and the search goes on: a plot
must never cost the run.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Callable, Dict, Mapping, Optional

from automtl.search.run import RunDir
from automtl.search.trainer import Callback
from automtl.viz._figure import save_figure
from automtl.viz.curves import training_curves
from automtl.viz.show import PLOTS

logger = logging.getLogger("automtl.viz")

TENSORBOARD = "tensorboard"


class PlotCallback(Callback):
    """Redraw a run's plots at every evaluation (see the module docstring)."""

    def __init__(self, formats: tuple = ("png",)):
        self.formats = tuple(formats)
        self.sm: Any = None
        self.run: Optional[RunDir] = None
        self.drawn_post_train = False
        #: paths written so far by this callback
        self.written: Dict[str, str] = {}

    def on_search_start(self, model: Any, run: Optional[RunDir]) -> None:
        self.sm = model
        self.run = run if run is not None and run.writer else None
        self.drawn_post_train = False

    def on_log(self, record: Mapping[str, Any]) -> None:
        if self.run is None or record.get("kind") != "eval":
            return
        try:
            self._draw(str(record.get("stage")))
        except Exception as exc:  # noqa: BLE001 - see the module docstring
            logger.warning("automtl --plots: could not draw the plots of %s (%s: %s); the search goes on",
                           self.run.path, type(exc).__name__, exc)

    def _save(self, figure: Any, name: str) -> None:
        assert self.run is not None
        for path in save_figure(figure, os.path.join(self.run.file(PLOTS), name), self.formats):
            self.written[os.path.basename(path)] = path

    def _draw(self, stage: str) -> None:
        from automtl.policy import Policy
        from automtl.viz.diagram import sharing_diagram, sharing_layout
        from automtl.viz.heatmap import PolicyDistribution, policy_heatmap

        assert self.run is not None
        name = os.path.basename(self.run.path)
        figure = training_curves(self.run.read_metrics(), stage, title=f"{name}: {stage}")
        if figure is not None:
            self._save(figure, f"curves_{stage}")
        if stage == "policy_train":
            policy = Policy.argmax(self.sm)
            self._save(policy_heatmap(PolicyDistribution.from_supermodel(self.sm), policy, f"Policy distribution of {name} (policy-train)"), "policy_heatmap")
            self._save(sharing_diagram(sharing_layout(policy, self.sm), f"{name}: the arg-max policy now"), "sharing_diagram")
        elif stage == "post_train" and not self.drawn_post_train and os.path.exists(self.run.policy_path):
            policy = Policy.load(self.sm, self.run.policy_path)
            self._save(sharing_diagram(sharing_layout(policy, self.sm), f"Derived model of {name}: what each task runs"), "sharing_diagram")
            self.drawn_post_train = True


def record_scalars(record: Mapping[str, Any]) -> Dict[str, float]:
    """The TensorBoard tags and values of one ``metrics.jsonl`` line: ``<stage>/train/<key>``,
    ``<stage>/val/loss/<task>``, ``<stage>/val/<task>/<metric>``, ``<stage>/policy/...``;
    the final evaluation as ``final/<split>/<task>/<metric>``. Non-finite values are left out."""
    stage, kind = record.get("stage"), record.get("kind")
    out: Dict[str, float] = {}

    def put(tag: str, value: Any) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[tag] = float(value)

    def evaluation(prefix: str, result: Mapping[str, Any]) -> None:
        for task, value in (result.get("loss") or {}).items():
            put(f"{prefix}/loss/{task}", value)
        put(f"{prefix}/weighted_loss", result.get("weighted_loss"))
        for task, values in (result.get("metrics") or {}).items():
            for metric, value in (values or {}).items():
                put(f"{prefix}/{task}/{metric}", value)

    if kind == "train":
        for key, value in record.items():
            if key not in ("stage", "step", "kind"):
                put(f"{stage}/train/{key}", value)
    elif kind == "eval":
        evaluation(f"{stage}/val", record)
        policy = record.get("policy") or {}
        for option, value in (policy.get("argmax_share") or {}).items():
            put(f"{stage}/policy/share_{option}", value)
        put(f"{stage}/policy/entropy", policy.get("entropy"))
    elif kind == "final":
        for split in ("val", "test"):
            if record.get(split):
                evaluation(f"final/{split}", record[split])
    return out


class TensorBoardCallback(Callback):
    """Every logged value as a TensorBoard scalar, in ``RUN_DIR/tensorboard/``."""

    def __init__(self, writer_class: Any):
        self.writer_class = writer_class
        self.writer: Any = None

    def on_search_start(self, model: Any, run: Optional[RunDir]) -> None:
        self.on_search_end()
        if run is not None and run.writer:
            self.writer = self.writer_class(log_dir=run.file(TENSORBOARD))

    def on_log(self, record: Mapping[str, Any]) -> None:
        if self.writer is None:
            return
        step = int(record.get("step") or 0)
        for tag, value in record_scalars(record).items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def on_search_end(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def tensorboard_callback(say: Callable[[str], None] = logger.info) -> Optional[TensorBoardCallback]:
    """A :class:`TensorBoardCallback`, or None (after one line through ``say``) when the
    ``tensorboard`` package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        say('tensorboard is not installed: no TensorBoard scalars (pip install "automtl[tensorboard]" to have them)')
        return None
    return TensorBoardCallback(SummaryWriter)
