"""Your own dataset through automtl: a factory named in the config (``data.dataset``).

    python examples/own_dataset.py [--out runs/own] [--steps 6]

``make_dataset`` below is all a dataset needs: it returns the train/val/test datasets of
``(image, {task: target})`` samples and the task specs, as the built-in benchmarks do. A config
names it as ``data.dataset: "own_dataset:make_dataset"`` (any importable
``package.module:factory``), which works for ``automtl search``, ``automtl compare``,
``automtl group``, the baselines and ``--resume`` alike::

    automtl compare --dataset own_dataset:make_dataset --config my_model.yaml

Here the comparison of the single-task, multi-task and AutoMTL models runs from Python, with a
tiny backbone and a few steps so that it finishes in seconds; the same function takes the
data directly too: ``compare(config, methods, data=make_dataset(...))``.
"""

import argparse
from typing import Any, Dict, Tuple

import torch
from torch.utils.data import Dataset


class Squares(Dataset):
    """Noise images with one bright square: segment the square (``mask``, 2 classes) and tell
    whether it sits in the left or the right half (``side``, 2 classes)."""

    def __init__(self, count: int, size: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.images = 0.3 * torch.randn(count, 3, size, size, generator=generator)
        self.masks = torch.zeros(count, size, size, dtype=torch.long)
        self.sides = torch.zeros(count, dtype=torch.long)
        side = max(2, size // 4)
        for i in range(count):
            top, left = (int(v) for v in torch.randint(0, size - side + 1, (2,), generator=generator))
            self.images[i, :, top : top + side, left : left + side] += 1.0
            self.masks[i, top : top + side, left : left + side] = 1
            self.sides[i] = int(left + side / 2 >= size / 2)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        return self.images[i], {"mask": self.masks[i], "side": self.sides[i]}


def make_dataset(size: int = 16, n_train: int = 64, n_val: int = 32, n_test: int = 32, seed: int = 0) -> Dict[str, Any]:
    """The dataset factory: keyword arguments from the config's ``data.options``, ``seed`` from
    ``data.data_seed``."""
    return {
        "train": Squares(n_train, size, seed),
        "val": Squares(n_val, size, seed + 1),
        "test": Squares(n_test, size, seed + 2),
        "task_specs": [
            {"name": "mask", "kind": "segmentation", "classes": 2, "output_size": [size, size]},
            {"name": "side", "kind": "classification", "classes": 2},
        ],
        "description": f"bright squares on noise ({size}x{size}): segment the square, tell its side",
    }


def main() -> None:
    from automtl.experiments import compare

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="run directory (default: none, nothing written)")
    parser.add_argument("--steps", type=int, default=6, help="steps per stage")
    args = parser.parse_args()

    config = {
        "device": "cpu",
        # the script's folder is on sys.path when it runs, so this module imports as own_dataset
        "data": {"dataset": "own_dataset:make_dataset", "options": {"size": 16}, "batch_size": 8, "eval_batch_size": 32},
        "model": {
            "backbone": {"builtin": "dilated_resnet_tiny", "kwargs": {"widths": [8, 8], "dilations": [1, 2], "stem_stride": 2}},
            "task_options": {"head_hidden": 8, "aspp_rates": [1]},
        },
        "pretrain": {"steps": args.steps},
        "policy_train": {"steps": 2 * args.steps, "weight_steps": 1, "policy_steps": 1},
        "post_train": {"steps": args.steps, "draw": "argmax"},
        "logging": {"log_every": args.steps, "eval_every": 0, "checkpoint_every": 0, "progress": False},
    }
    result = compare(config, ["single", "multi", "automtl"], out=args.out, progress=False)
    print(result.table.text())
    searched = result.results["automtl"]
    print(f"policy found: {searched.policy}")
    if result.run_dir is not None:
        print(f"run directory: {result.run_dir}")


if __name__ == "__main__":
    torch.set_num_threads(1)  # tiny tensors: threads cost more than they give
    main()
