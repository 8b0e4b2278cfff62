"""Checkpoints: the full state of a stage, written atomically and loaded safely.

A checkpoint is a plain dict of tensors and plain values (so it loads with
``torch.load(weights_only=True)``): the model's ``state_dict`` (weights, BN statistics and
policy logits), every optimiser, scheduler and the loss scaler, the loss weighting's state,
τ, the step, the data streams' positions, the RNG states of torch (CPU and CUDA), numpy and
Python's ``random`` (one set per rank), the number of ``metrics.jsonl`` lines written and the
running log window, and stage extras (e.g. the policy post-train trains).
"""

from __future__ import annotations

import os
import random
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import torch

from automtl.errors import CheckpointError
from automtl.io import atomic_torch_save, safe_torch_load

FORMAT = "automtl.checkpoint"
VERSION = 1


# -- random number generators ------------------------------------------------------------

def capture_rng() -> Dict[str, Any]:
    """This process's RNG states, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, words, gauss = random.getstate()
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": int(version), "words": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.clone() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(w) for w in p["words"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and ``random``."""
    torch.manual_seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    random.seed(int(seed))


# -- files -------------------------------------------------------------------------------

def save_checkpoint(path: str, state: Dict[str, Any]) -> None:
    """Write ``state`` atomically (write, fsync, rename)."""
    document = {"format": FORMAT, "version": VERSION, **state}
    atomic_torch_save(document, path)


def load_checkpoint(path: str, stage: Optional[str] = None) -> Dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only`` loading) and
    check that it is one, of this version, and of ``stage``."""
    state = safe_torch_load(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an automtl checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{path} is a version {state.get('version')!r} checkpoint; this automtl reads version {VERSION}"
        )
    for key in ("stage", "step", "done", "model"):
        if key not in state:
            raise CheckpointError(f"{path} is incomplete: it has no '{key}'")
    if stage is not None and state["stage"] != stage:
        raise CheckpointError(f"{path} is a checkpoint of stage '{state['stage']}', not '{stage}'")
    return state


def pick_rng(states: List[Dict[str, Any]], rank: int, world: int, path: str) -> Dict[str, Any]:
    if len(states) != world:
        raise CheckpointError(
            f"{path} was written by a run with {len(states)} process(es); resume it with the same number "
            f"(this run has {world})"
        )
    return states[rank]


def checkpoint_path(folder: str, stage: str) -> str:
    return os.path.join(folder, f"{stage}.pt")
