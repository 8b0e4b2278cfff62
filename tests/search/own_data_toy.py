"""A user's own dataset for the tests, named in configs as ``own_data_toy:make_dataset``
(``data.dataset``): noise images with one bright square; segment it (``seg``) and tell which
half it is in (``side``)."""

from typing import Any, Dict, Tuple

import torch
from torch.utils.data import Dataset


class Squares(Dataset):
    def __init__(self, count: int, size: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.images = 0.3 * torch.randn(count, 3, size, size, generator=generator)
        self.seg = torch.zeros(count, size, size, dtype=torch.long)
        self.side = torch.zeros(count, dtype=torch.long)
        width = max(2, size // 4)
        for i in range(count):
            top, left = (int(v) for v in torch.randint(0, size - width + 1, (2,), generator=generator))
            self.images[i, :, top : top + width, left : left + width] += 1.0
            self.seg[i, top : top + width, left : left + width] = 1
            self.side[i] = int(2 * left + width >= size)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        return self.images[i], {"seg": self.seg[i], "side": self.side[i]}


def make_dataset(size: int = 16, n_train: int = 32, n_val: int = 16, n_test: int = 16, seed: int = 0) -> Dict[str, Any]:
    return {
        "train": Squares(n_train, size, seed),
        "val": Squares(n_val, size, seed + 1),
        "test": Squares(n_test, size, seed + 2),
        "task_specs": [
            {"name": "seg", "kind": "segmentation", "classes": 2, "output_size": [size, size]},
            "side:classification:2",
        ],
    }
