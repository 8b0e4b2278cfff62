"""Reading the published datasets' on-disk layouts: split lists, image and array files, resizing.

The AdaShare/AutoMTL layouts list each split's samples in one JSON file at the dataset's root,
``{"train": [[path, path, ...], ...], "test": [...]}``, paths relative to the root.
"""

from __future__ import annotations

import json
import os
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from automtl.data.transforms import JointTransform, JointTransforms, check_transforms
from automtl.errors import ConfigError, DataError

#: ImageNet statistics: images are normalised as torchvision's models expect.
IMAGE_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGE_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
SPLITS = ("train", "val", "test")


def check_root(root: Any, dataset: str) -> str:
    if root is None:
        raise ConfigError(f"{dataset} is read from disk: pass root= (the folder holding its split list); see the README's dataset layouts")
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DataError(f"{dataset}: the root folder {root} does not exist")
    return root


def read_split_list(root: str, list_name: str, columns: Sequence[str], dataset: str) -> dict:
    """Load ``root/list_name`` and check every split's entries have one path per column."""
    path = os.path.join(root, list_name)
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except FileNotFoundError:
        raise DataError(
            f"{dataset}: {path} is missing; the layout lists each split's samples there as "
            f'{{"train": [[{", ".join(columns)}], ...], "test": [...]}} (see the README)'
        ) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})") from None
    if not isinstance(info, dict):
        raise DataError(f"{path}: expected an object mapping split names to lists of samples")
    for split, entries in info.items():
        if not isinstance(entries, list):
            raise DataError(f"{path}: split '{split}' must be a list of samples")
        for i, entry in enumerate(entries):
            if not isinstance(entry, (list, tuple)) or len(entry) != len(columns) or not all(isinstance(p, str) for p in entry):
                raise DataError(
                    f"{path}: split '{split}', sample {i}: expected {len(columns)} relative paths "
                    f"[{', '.join(columns)}], got {entry!r}"
                )
    return info


def select_split(info: dict, split: str, seed: int, val_fraction: float, list_path: str, dataset: str) -> List[Tuple[str, ...]]:
    """The samples of ``split``. Without a ``val`` list, validation is a seeded ``val_fraction``
    of ``train`` (and ``train`` is the rest), so the test split stays untouched."""
    if split not in SPLITS:
        raise ConfigError(f"{dataset}: split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "test" or (split in ("train", "val") and "val" in info):
        if split not in info:
            raise DataError(f"{list_path} has no '{split}' list (it has: {', '.join(info) or 'none'})")
        return [tuple(e) for e in info[split]]
    if "train" not in info:
        raise DataError(f"{list_path} has no 'train' list (it has: {', '.join(info) or 'none'})")
    train = [tuple(e) for e in info["train"]]
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"{dataset}: val_fraction must be between 0 and 1, got {val_fraction!r}")
    held = max(1, int(round(len(train) * val_fraction))) if len(train) > 1 else 0
    order = np.random.default_rng([seed, 7]).permutation(len(train))
    chosen = set(order[:held].tolist())
    return [e for i, e in enumerate(train) if (i in chosen) == (split == "val")]


def _open_error(path: str, exc: Exception, dataset: str) -> DataError:
    if isinstance(exc, FileNotFoundError):
        return DataError(f"{dataset}: {path} is listed in the split list but does not exist")
    return DataError(f"{dataset}: cannot read {path} ({type(exc).__name__}: {exc})")


def read_image(path: str, dataset: str) -> np.ndarray:
    """A PNG/JPEG as a numpy array (RGB images [H,W,3]; grey or 16-bit maps [H,W])."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow comes with the package
        raise DataError(f"{dataset}: reading {path} needs pillow: pip install pillow") from None
    try:
        with Image.open(path) as img:
            if img.mode in ("RGBA", "P", "CMYK", "YCbCr", "LA"):
                img = img.convert("RGB" if img.mode != "LA" else "L")
            return np.array(img)
    except Exception as exc:  # PIL raises many types for broken files
        raise _open_error(path, exc, dataset) from None


def read_array(path: str, dataset: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise _open_error(path, exc, dataset) from None


def check_size(size: Any, dataset: str) -> Optional[Tuple[int, int]]:
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if not isinstance(size, (list, tuple)) or len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
        raise ConfigError(f"{dataset}: size must be (height, width) in pixels, got {size!r}")
    return (int(size[0]), int(size[1]))


def to_chw(array: np.ndarray) -> torch.Tensor:
    """[H,W] -> [1,H,W]; [H,W,C] -> [C,H,W]; as float32."""
    t = torch.from_numpy(np.ascontiguousarray(array)).float()
    return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1).contiguous()


def resize(t: torch.Tensor, size: Optional[Tuple[int, int]], nearest: bool) -> torch.Tensor:
    """Resize a [C,H,W] tensor; labels and maps with invalid pixels use nearest neighbours."""
    if size is None or tuple(t.shape[-2:]) == size:
        return t
    if nearest:
        return F.interpolate(t.unsqueeze(0).float(), size=size, mode="nearest").squeeze(0).to(t.dtype)
    return F.interpolate(t.unsqueeze(0), size=size, mode="bilinear", align_corners=False).squeeze(0)


def normalise_image(rgb01: torch.Tensor) -> torch.Tensor:
    return (rgb01 - IMAGE_MEAN) / IMAGE_STD


def check_shape(t: torch.Tensor, channels: int, like: torch.Tensor, path: str, what: str, dataset: str) -> torch.Tensor:
    if t.shape[0] != channels or t.shape[-2:] != like.shape[-2:]:
        raise DataError(
            f"{dataset}: {path}: the {what} is {list(t.shape)} (channels first) but the image is "
            f"{list(like.shape[-2:])}; expected {channels} channel(s) of the image's size"
        )
    return t


class ListedDataset(JointTransforms, Dataset):
    """A split of a dataset whose samples are rows of paths from a JSON split list;
    ``transforms``: joint image/target transforms (:mod:`automtl.data.transforms`)."""

    dataset = "dataset"
    list_name = ""
    columns: Tuple[str, ...] = ()

    def __init__(self, root: Any, split: str = "train", size: Any = None, seed: int = 0, val_fraction: float = 0.1,
                 transforms: Optional[JointTransform] = None):
        self.root = check_root(root, self.dataset)
        self.transforms = check_transforms(transforms, self.dataset)
        self.split = split
        self.size = check_size(size, self.dataset)
        info = read_split_list(self.root, self.list_name, self.columns, self.dataset)
        self.samples = select_split(info, split, seed, val_fraction, os.path.join(self.root, self.list_name), self.dataset)

    def __len__(self) -> int:
        return len(self.samples)

    def path(self, relative: str) -> str:
        return os.path.join(self.root, relative)
