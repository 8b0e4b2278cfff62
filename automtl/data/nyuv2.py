"""NYUv2 (3 tasks: ``seg``, ``normal``, ``depth``) in the AdaShare/AutoMTL layout.

::

    root/
      nyu_v2_3task.json        {"train": [[img, seg, normal, depth], ...], "test": [...]}
      img/0001.png             RGB image
      seg/0001.png             8-bit class labels; 255 = ignore
      normal_mask/0001.png     RGB-encoded normals, n = value / 255 * 2 - 1; pixels (0,0,0) or
                               with a channel at 255 have no normal
      depth/0001.npy           float depth in metres, [H,W] (or [H,W,1]); 0 = no measurement

Paths in the JSON are relative to ``root``; the folder names above are those of the published
data, any others work. Targets: ``seg`` int64 [H,W] (255 ignored), ``normal`` float [3,H,W]
(zero vectors where there is no normal), ``depth`` float [1,H,W] (0 where missing). With
``size=(H, W)`` every sample is resized (image bilinear, maps nearest).
"""

from __future__ import annotations

import torch

from automtl.data._files import ListedDataset, check_shape, normalise_image, read_array, read_image, resize, to_chw


def decode_normals(encoded: torch.Tensor) -> torch.Tensor:
    """[3,H,W] 8-bit normals -> unit-range vectors, zero where the pixel holds no normal."""
    missing = (encoded == 0).all(0) | (encoded == 255).any(0)
    normal = encoded / 255.0 * 2.0 - 1.0
    return normal.masked_fill(missing.unsqueeze(0), 0.0)


class NYUv2(ListedDataset):
    dataset = "NYUv2"
    list_name = "nyu_v2_3task.json"
    columns = ("img", "seg", "normal", "depth")

    def __getitem__(self, index: int):
        img_path, seg_path, normal_path, depth_path = (self.path(p) for p in self.samples[index])
        image = to_chw(read_image(img_path, self.dataset)) / 255.0
        if image.shape[0] != 3:
            image = image[:1].expand(3, -1, -1) if image.shape[0] == 1 else image[:3]
        seg = check_shape(to_chw(read_image(seg_path, self.dataset)), 1, image, seg_path, "segmentation map", self.dataset)
        encoded = check_shape(to_chw(read_image(normal_path, self.dataset)), 3, image, normal_path, "normal map", self.dataset)
        depth = to_chw(read_array(depth_path, self.dataset))
        depth = check_shape(depth, 1, image, depth_path, "depth map", self.dataset)
        normal = decode_normals(encoded)
        size = self.size
        return self.transformed(normalise_image(resize(image, size, nearest=False)), {
            "seg": resize(seg, size, nearest=True)[0].long(),
            "normal": resize(normal, size, nearest=True),
            "depth": resize(depth, size, nearest=True),
        })
