"""Tiny-Taskonomy (5 tasks: ``seg``, ``normal``, ``depth``, ``keypoint``, ``edge``) in the
AdaShare/AutoMTL layout.

::

    root/
      taskonomy.json               {"train": [[rgb, seg, normal, depth, keypoint, edge], ...], "test": [...]}
      semseg_prior_factor.npy      optional: 17 class weights for the segmentation loss
      <building>/rgb/point_0_view_0_domain_rgb.png
      <building>/segment_semantic/..._segmentsemantic.png    8-bit labels 0-17; 0 = unlabelled
      <building>/normal/..._normal.png                       8-bit RGB normals
      <building>/depth_zbuffer/..._depth_zbuffer.png         16-bit depth; >= 64500 = no depth
      <building>/keypoints2d/..._keypoints2d.png             16-bit
      <building>/edge_texture/..._edge_texture.png           16-bit

Paths in the JSON are relative to ``root``. Every map is resized to ``size`` (256x256 by
default, as published) with nearest neighbours, then converted as in the published
experiments:

* ``seg``: labels 1-17 become classes 0-16; label 0 (unlabelled) becomes 255 (ignored);
* ``depth``: log(1 + d) / log(2^16); pixels with d >= 64500 become 0 (invalid: the depth
  loss counts only targets > 0);
* ``normal``: value / 255 * 2 - 1 per channel; zero vectors (invalid) where depth is missing;
* ``keypoint``: value / 2^16, clipped to [0, 0.005], rescaled to [-1, 1];
* ``edge``: value / 2^16, clipped to [0, 0.08], rescaled to [-1, 1].
"""

from __future__ import annotations

import math
import os
from typing import Any, List, Optional

import numpy as np
import torch

from automtl.data._files import ListedDataset, check_shape, normalise_image, read_array, read_image, resize, to_chw
from automtl.data.transforms import JointTransform
from automtl.errors import DataError

SEG_CLASSES = 17
DEPTH_MISSING = 64500
_DEPTH_SCALE = math.log(2.0**16)


def rescale(values: torch.Tensor, high: float) -> torch.Tensor:
    """Clip ``values`` to [0, high] and map that range onto [-1, 1]."""
    return values.clamp(0.0, high) / high * 2.0 - 1.0


class Taskonomy(ListedDataset):
    dataset = "Tiny-Taskonomy"
    list_name = "taskonomy.json"
    columns = ("rgb", "seg", "normal", "depth", "keypoint", "edge")

    def __init__(self, root: Any, split: str = "train", size: Any = 256, seed: int = 0, val_fraction: float = 0.1,
                 transforms: Optional[JointTransform] = None):
        super().__init__(root, split, size=size, seed=seed, val_fraction=val_fraction, transforms=transforms)

    def class_weights(self) -> Optional[List[float]]:
        """The published segmentation class weights (``semseg_prior_factor.npy``), if present."""
        return prior_factor(self.root)

    def __getitem__(self, index: int):
        paths = [self.path(p) for p in self.samples[index]]
        rgb_path, seg_path, normal_path, depth_path, keypoint_path, edge_path = paths
        image = to_chw(read_image(rgb_path, self.dataset)) / 255.0
        if image.shape[0] != 3:
            raise DataError(f"Tiny-Taskonomy: {rgb_path} is not an RGB image ({image.shape[0]} channel(s))")
        label = check_shape(to_chw(read_image(seg_path, self.dataset)), 1, image, seg_path, "segmentation map", self.dataset)
        raw_normal = check_shape(to_chw(read_image(normal_path, self.dataset)), 3, image, normal_path, "normal map", self.dataset)
        raw_depth = check_shape(to_chw(read_image(depth_path, self.dataset)), 1, image, depth_path, "depth map", self.dataset)
        keypoint = check_shape(to_chw(read_image(keypoint_path, self.dataset)), 1, image, keypoint_path, "keypoint map", self.dataset)
        edge = check_shape(to_chw(read_image(edge_path, self.dataset)), 1, image, edge_path, "edge map", self.dataset)

        size = self.size
        image, label, raw_normal, raw_depth, keypoint, edge = (
            resize(t, size, nearest=True) for t in (image, label, raw_normal, raw_depth, keypoint, edge)
        )
        seg = label[0].long()
        seg = torch.where(seg == 0, torch.full_like(seg, 255), seg - 1)
        valid = raw_depth < DEPTH_MISSING
        depth = torch.where(valid, torch.log1p(raw_depth) / _DEPTH_SCALE, torch.zeros_like(raw_depth))
        normal = (raw_normal / 255.0 * 2.0 - 1.0) * valid
        return self.transformed(normalise_image(image), {
            "seg": seg,
            "normal": normal,
            "depth": depth,
            "keypoint": rescale(keypoint / 2.0**16, 0.005),
            "edge": rescale(edge / 2.0**16, 0.08),
        })


def prior_factor(root: str) -> Optional[List[float]]:
    path = os.path.join(root, "semseg_prior_factor.npy")
    if not os.path.exists(path):
        return None
    weights = np.asarray(read_array(path, "Tiny-Taskonomy"), dtype=np.float64).reshape(-1)
    if weights.size != SEG_CLASSES or not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise DataError(f"Tiny-Taskonomy: {path} must hold {SEG_CLASSES} finite, non-negative class weights; it has {weights.size} values")
    return weights.tolist()
