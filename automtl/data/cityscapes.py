"""CityScapes (2 tasks: ``seg``, ``depth``) in the AdaShare/AutoMTL layout.

::

    root/
      cityscape.json           {"train": [[image, depth, label_2, label_7, label_19], ...], "test": [...]}
      train/image/0.npy        float RGB in [0, 1], [H,W,3]
      train/depth/0.npy        float disparity-derived depth, [H,W,1] (or [H,W]); 0 = missing
      train/label_2/0.npy      int class labels (2 / 7 / 19 classes), [H,W]; -1 = ignore
      train/label_7/0.npy
      train/label_19/0.npy
      test/...                 the same for the test split

Paths in the JSON are relative to ``root``. ``classes`` (19 by default, as in the published
experiments; or 7 or 2) picks the label set. Targets: ``seg`` int64 [H,W] with the ignore
label -1 mapped to 255 (the task library's default ignore label), ``depth`` float [1,H,W].
"""

from __future__ import annotations

from typing import Any, Optional

from automtl.data._files import ListedDataset, check_shape, normalise_image, read_array, resize, to_chw
from automtl.data.transforms import JointTransform
from automtl.errors import ConfigError, DataError

LABEL_SETS = {2: 2, 7: 3, 19: 4}  # classes -> column of the split list


class CityScapes(ListedDataset):
    dataset = "CityScapes"
    list_name = "cityscape.json"
    columns = ("image", "depth", "label_2", "label_7", "label_19")

    def __init__(self, root: Any, split: str = "train", classes: int = 19, size: Any = None, seed: int = 0, val_fraction: float = 0.1,
                 transforms: Optional[JointTransform] = None):
        if classes not in LABEL_SETS:
            raise ConfigError(f"CityScapes: classes must be 2, 7 or 19 (the label sets of the layout), got {classes!r}")
        self.classes = classes
        super().__init__(root, split, size=size, seed=seed, val_fraction=val_fraction, transforms=transforms)

    def __getitem__(self, index: int):
        entry = self.samples[index]
        img_path, depth_path, label_path = self.path(entry[0]), self.path(entry[1]), self.path(entry[LABEL_SETS[self.classes]])
        image = to_chw(read_array(img_path, self.dataset))
        if image.shape[0] != 3:
            raise DataError(f"CityScapes: {img_path} is {list(image.shape)} (channels first); expected an [H,W,3] RGB array")
        depth = check_shape(to_chw(read_array(depth_path, self.dataset)), 1, image, depth_path, "depth map", self.dataset)
        label = check_shape(to_chw(read_array(label_path, self.dataset)), 1, image, label_path, "label map", self.dataset)
        seg = label[0].long()
        seg = seg.masked_fill(seg < 0, 255)
        size = self.size
        return self.transformed(normalise_image(resize(image, size, nearest=False)), {
            "seg": resize(seg.unsqueeze(0), size, nearest=True)[0],
            "depth": resize(depth, size, nearest=True),
        })
