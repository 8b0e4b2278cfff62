"""The run directory: everything a search writes, and everything needed to continue it.

::

    RUN_DIR/
      config.yaml          the resolved config (every default filled in)
      run.json             what was run: method, backbone and task specs, stages done, world size
      metrics.jsonl        one JSON line per log step and per evaluation
      policy.json          per task, per node: the three probabilities and the chosen option
      checkpoints/         init.pt (weights before pre-train), pretrain.pt, policy_train.pt, post_train.pt
      model/model.json     how to rebuild the final model: backbone spec, task specs, compile
                           options, input shape, policy
      model/weights.pt     the final derived model's state_dict (loads with weights_only=True)
      results.json         the final evaluation (val and test metrics, parameters)
      baselines/<name>/    the baseline runs (same layout), when trained

Only rank 0 writes; the other ranks' :class:`RunDir` methods do nothing.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Mapping, Optional

from automtl.errors import CheckpointError
from automtl.io import TEMPORARY_PREFIX, atomic_write_bytes, atomic_write_text


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None, tuples -> lists, tensors -> numbers: strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return _json_safe(value.item())
    return value


def dumps(value: Any, indent: Optional[int] = None) -> str:
    return json.dumps(_json_safe(value), indent=indent, allow_nan=False)


class RunDir:
    """Paths and writers of one run directory."""

    def __init__(self, path: str, writer: bool = True):
        self.path = os.path.abspath(os.fspath(path))
        self.writer = writer
        self.metrics_lines = 0

    # -- paths ----------------------------------------------------------------------------
    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    @property
    def checkpoints(self) -> str:
        return self.file("checkpoints")

    def checkpoint(self, stage: str) -> str:
        return self.file("checkpoints", f"{stage}.pt")

    @property
    def config_path(self) -> str:
        return self.file("config.yaml")

    @property
    def metrics_path(self) -> str:
        return self.file("metrics.jsonl")

    @property
    def policy_path(self) -> str:
        return self.file("policy.json")

    @property
    def model_dir(self) -> str:
        return self.file("model")

    def sub(self, name: str) -> "RunDir":
        return RunDir(self.file("baselines", name), self.writer)

    def exists(self) -> bool:
        return os.path.exists(self.config_path)

    # -- writing --------------------------------------------------------------------------
    def prepare(self) -> None:
        if self.writer:
            os.makedirs(self.checkpoints, exist_ok=True)
            self.remove_partial_writes()

    def remove_partial_writes(self) -> None:
        """Delete the temporary files of writes a killed run left unfinished (never read: a
        write becomes visible only by its final rename)."""
        for folder in (self.path, self.checkpoints, self.model_dir):
            if os.path.isdir(folder):
                for name in os.listdir(folder):
                    if name.startswith(TEMPORARY_PREFIX):
                        os.unlink(os.path.join(folder, name))

    def write_text(self, name: str, text: str) -> None:
        if self.writer:
            atomic_write_text(self.file(name), text)

    def write_json(self, name: str, value: Any) -> None:
        self.write_text(name, dumps(value, indent=1) + "\n")

    def write_table(self, table: Any) -> None:
        """A results table (``text``, ``markdown``, ``csv``, ``to_dict``) as table.txt, .md, .csv, .json."""
        if self.writer:
            os.makedirs(self.path, exist_ok=True)
        self.write_text("table.txt", table.text() + "\n")
        self.write_text("table.md", table.markdown())
        self.write_text("table.csv", table.csv())
        self.write_json("table.json", table.to_dict())

    def read_json(self, name: str) -> Any:
        path = self.file(name)
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            raise CheckpointError(f"{path}: no such file; is {self.path} an automtl run directory?") from None
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path} cannot be read: {exc}") from exc

    # -- metrics.jsonl --------------------------------------------------------------------
    def log(self, record: Mapping[str, Any]) -> None:
        """Append one line to metrics.jsonl (flushed, so a killed run keeps what it logged)."""
        self.metrics_lines += 1
        if not self.writer:
            return
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(dumps(record) + "\n")
            f.flush()

    def truncate_metrics(self, lines: int) -> None:
        """Keep the first ``lines`` lines of metrics.jsonl (those a checkpoint accounts for)."""
        self.metrics_lines = int(lines)
        if not self.writer:
            return
        kept: List[bytes] = []
        if os.path.exists(self.metrics_path):
            with open(self.metrics_path, "rb") as f:
                kept = f.read().split(b"\n")[: self.metrics_lines]
        if len(kept) < self.metrics_lines:
            raise CheckpointError(
                f"{self.metrics_path} has {len(kept)} lines but the checkpoint accounts for {self.metrics_lines}; "
                "the run directory was changed by hand"
            )
        atomic_write_bytes(self.metrics_path, b"".join(line + b"\n" for line in kept))

    def read_metrics(self) -> List[Dict[str, Any]]:
        if not os.path.exists(self.metrics_path):
            return []
        with open(self.metrics_path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
