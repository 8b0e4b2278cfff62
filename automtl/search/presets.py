"""Settings for the built-in benchmarks, sized so that all three stages and both baselines
run in a few minutes on a 2-core CPU. A user's config and command-line overrides go on top."""

from __future__ import annotations

import copy
from typing import Any, Dict, Optional

#: the dense benchmark's preset (a dilated ResNet, ASPP heads), also textured-mnist's model and schedule
_SCENES: Dict[str, Any] = {
    "data": {"benchmark": "scenes", "batch_size": 16, "eval_batch_size": 100},
    "model": {
        "backbone": {
            "builtin": "dilated_resnet_tiny",
            "kwargs": {"widths": [16, 16, 32, 32], "dilations": [1, 1, 2, 4], "stem_stride": 2},
        },
        "task_options": {"head_hidden": 16, "aspp_rates": [1, 2]},
    },
    "pretrain": {"steps": 150},
    "policy_train": {
        "steps": 400,
        "weight_steps": 1,
        "policy_steps": 1,
        # τ = 5 · 0.965^epoch as in the paper, with 2-step epochs: 100 epochs in 200 policy
        # steps, so τ ends near 0.14 and the soft policy is close to one-hot when the search
        # stops (with 10-step epochs τ ended at 2.5: near-uniform mixtures, a flat distribution)
        "tau_decay_every": 2,
        "weight_optimizer": {"name": "adam", "lr": 0.001, "weight_decay": 0.0001},
        # 200 policy steps instead of thousands: a larger step so the distribution settles
        "policy_optimizer": {"name": "adam", "lr": 0.05, "weight_decay": 0.0005},
    },
    # after a few hundred policy steps the distribution has not converged: its arg-max is a
    # steadier summary than one sample from it
    "post_train": {"steps": 300, "scheduler": {"name": "cosine"}, "draw": "argmax"},
    "logging": {"log_every": 25, "eval_every": 0, "checkpoint_every": 100},
}

#: benchmark -> config mapping (merged under the user's config).
BENCHMARK_PRESETS: Dict[str, Dict[str, Any]] = {
    "scenes": _SCENES,
    "multi-mnist": {
        "data": {"benchmark": "multi-mnist", "batch_size": 32, "eval_batch_size": 250},
        "model": {"backbone": {"builtin": "small_convnet", "kwargs": {"in_channels": 3, "strides": [2, 2, 1]}}},
        "pretrain": {"steps": 300},
        "policy_train": {
            "steps": 600,
            "weight_steps": 1,
            "policy_steps": 1,
            "tau_decay_every": 4,  # 75 epochs in 300 policy steps: τ ends near 0.34 (see scenes)
            "weight_optimizer": {"name": "adam", "lr": 0.001, "weight_decay": 0.0001},
            # a few hundred policy steps instead of thousands: a larger step so the distribution settles
            "policy_optimizer": {"name": "adam", "lr": 0.05, "weight_decay": 0.0005},
        },
        "post_train": {"steps": 600, "scheduler": {"name": "cosine"}, "draw": "argmax"},
        "logging": {"log_every": 25, "eval_every": 0, "checkpoint_every": 100},
    },
    # a dense and two conflicting global tasks on the dense benchmark's backbone, with its
    # schedule: the defaults are not fitted to the first two benchmarks only
    "textured-mnist": {
        "data": {"benchmark": "textured-mnist", "batch_size": 32, "eval_batch_size": 250},
        **{key: copy.deepcopy(value) for key, value in _SCENES.items() if key != "data"},
    },
}


def preset(benchmark: str) -> Dict[str, Any]:
    """The preset of a built-in benchmark ({} for others)."""
    return copy.deepcopy(BENCHMARK_PRESETS.get(benchmark, {}))


def default_backbone(benchmark: Optional[str]) -> Any:
    """The backbone a benchmark uses when the config names none."""
    return copy.deepcopy(BENCHMARK_PRESETS.get(benchmark or "", {}).get("model", {}).get("backbone"))
