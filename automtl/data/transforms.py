"""Joint image/target transforms: a random crop or flip moves the dense targets with the image.

Every dataset loader takes ``transforms=``: a callable run on each sample as
``transforms(image, targets)`` that returns ``(image, targets)`` - typically a torchvision
``transforms.v2`` pipeline::

    from torchvision.transforms import v2
    aug = v2.Compose([v2.RandomResizedCrop(64, scale=(0.5, 1.0), antialias=True), v2.RandomHorizontalFlip()])
    train = automtl.data.NYUv2(root, "train", transforms=aug)

Before the call the image is wrapped as a ``tv_tensors.Image`` and every target with the image's
height and width as a ``tv_tensors.Mask`` (segmentation labels, depth, normals, edges), so v2
moves them with the image and resizes them with nearest neighbours; colour transforms and
``Normalize`` touch only the image; other targets (class labels) pass through. The result is
unwrapped to plain tensors. v2 transforms draw from torch's RNG, which the training streams
seed per sample (:mod:`automtl.search.batches`), so an augmented run resumes exactly. A
horizontal flip does not negate the x component of surface normals: add a step that does
where that matters.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch
from torch.utils.data import Dataset

from automtl.errors import ConfigError, DataError

JointTransform = Callable[[Any, Dict[str, Any]], Tuple[Any, Dict[str, Any]]]


def check_transforms(transforms: Any, where: str) -> Optional[JointTransform]:
    if transforms is not None and not callable(transforms):
        raise ConfigError(
            f"{where}: transforms must be a callable taking (image, targets), e.g. a torchvision "
            f"transforms.v2.Compose; got {type(transforms).__name__}"
        )
    return transforms


def _plain(value: Any) -> Any:
    return value.as_subclass(torch.Tensor) if isinstance(value, torch.Tensor) else value


def apply_joint(transforms: JointTransform, image: torch.Tensor, targets: Mapping[str, Any]) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """``transforms`` applied to ``image`` and its ``targets`` together (see the module doc)."""
    from torchvision import tv_tensors

    size = tuple(image.shape[-2:])
    wrapped = {
        name: tv_tensors.Mask(t) if isinstance(t, torch.Tensor) and t.dim() >= 2 and tuple(t.shape[-2:]) == size else t
        for name, t in targets.items()
    }
    result = transforms(tv_tensors.Image(image), wrapped)
    if not (isinstance(result, (tuple, list)) and len(result) == 2 and isinstance(result[1], Mapping)):
        raise DataError(
            f"the joint transforms must return (image, targets) as they were given; they returned a "
            f"{type(result).__name__}. Compose torchvision transforms.v2 steps, which keep that structure"
        )
    out_image, out_targets = result
    return _plain(out_image), {name: _plain(t) for name, t in out_targets.items()}


class Transformed(Dataset):
    """``dataset`` (samples ``(image, {task: target})``) with joint ``transforms`` applied to
    every sample: for a dataset of your own that has no ``transforms=`` argument."""

    def __init__(self, dataset: Dataset, transforms: JointTransform):
        self.dataset = dataset
        self.transforms = check_transforms(transforms, "Transformed")

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, Dict[str, Any]]:
        image, targets = self.dataset[index]
        return apply_joint(self.transforms, image, targets)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:  # size, class_weights, ... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


class JointTransforms:
    """Mixin of the dataset loaders: ``self.transforms`` (None: none) applied by
    :meth:`transformed`, which their ``__getitem__`` returns through."""

    transforms: Optional[JointTransform] = None

    def transformed(self, image: torch.Tensor, targets: Dict[str, Any]) -> Tuple[torch.Tensor, Dict[str, Any]]:
        if self.transforms is None:
            return image, targets
        return apply_joint(self.transforms, image, targets)
