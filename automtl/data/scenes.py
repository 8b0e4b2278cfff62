"""``scenes``: a procedurally generated dense-prediction benchmark for the CPU.

Each image is a small ray-cast scene: a camera above a checkered floor, a back wall, and one
to four objects (spheres and boxes turned about the vertical axis) standing on the floor,
lit by one light, with depth fog and pixel noise. Four tasks come with it:

* ``seg``: the semantic class of each pixel (6 classes: floor, wall, ball, crate, lamp,
  block);
* ``depth``: the camera depth z of the surface seen at each pixel;
* ``normal``: its unit surface normal in camera coordinates (x right, y down, z forward);
* ``edge``: edge strength in [0, 1]: 1 on edge pixels - where a 4-neighbour belongs to
  another object or surface, or where the surface bends by more than 30 degrees (box edges,
  floor meets wall) - falling off as exp(-d² / 2σ²) with the distance d to the nearest edge
  pixel (σ = one pixel per 32 of image size), like the soft edge maps of Taskonomy; a hard
  0/1 map would leave an L1 regressor at a low-resolution head nothing but "no edge" to learn.

The tasks help and interfere: depth and normals come from the same geometry; the object
class decides the shape only partly (a ball is usually, not always, a sphere) and its colour
only partly (a quarter of the objects take another class's colour), while each class has its
own surface texture, which the geometric tasks must learn to ignore; edges follow both object
identity and geometry.

Every image is drawn from its own random stream, ``numpy`` seeded with ``(seed, split,
index)``: the same seed gives the same data on any machine, different seeds or splits give
different images, and an image does not depend on how many others are generated. Images are
rendered in vectorised chunks at construction and kept in memory (about 2,000 per second at
32x32 on one CPU core).
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from automtl.data.transforms import JointTransform, JointTransforms, check_transforms
from automtl.errors import ConfigError

CLASSES = ("floor", "wall", "ball", "crate", "lamp", "block")
TASKS = ("seg", "depth", "normal", "edge")
SPLITS = {"train": 0, "val": 1, "test": 2}

_MAX_OBJECTS = 4
_TAN = 0.6  # tan of half the field of view
_LENS_SHIFT = 0.3  # the image centre looks this far below the horizon (off-axis lens): more floor, depth stays z
# per object class (ball, crate, lamp, block): P(sphere) and base colour; each class also has
# its own texture (_texture: smooth, horizontal stripes, checker, slanted stripes)
_OBJECT_CLASSES = (
    (0.85, (0.85, 0.25, 0.20)),
    (0.15, (0.30, 0.70, 0.30)),
    (0.50, (0.25, 0.35, 0.85)),
    (0.30, (0.85, 0.75, 0.25)),
)
_COLOUR_SWAP = 0.25
_CREASE_COS = math.cos(math.radians(30.0))
_MEAN, _STD = 0.33, 0.12  # image normalisation: about zero mean, unit variance


def _scene_parameters(rng: np.random.Generator, size: int) -> Dict[str, np.ndarray]:
    """Draw one scene. Objects are padded to ``_MAX_OBJECTS`` with ``present = 0``."""
    height = rng.uniform(0.8, 1.3)
    wall = rng.uniform(5.5, 8.0)
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-1.0, -0.5), rng.uniform(-0.9, -0.4)])
    light /= np.linalg.norm(light)
    count = rng.integers(1, _MAX_OBJECTS + 1)
    objects = np.zeros((_MAX_OBJECTS, 13))  # present, cls, sphere, cx, cy, cz, ex, ey, ez, angle, r, g, b
    for k in range(count):
        cls = rng.integers(0, len(_OBJECT_CLASSES))
        p_sphere, colour = _OBJECT_CLASSES[cls]
        sphere = rng.random() < p_sphere
        if rng.random() < _COLOUR_SWAP:
            colour = _OBJECT_CLASSES[(cls + rng.integers(1, len(_OBJECT_CLASSES))) % len(_OBJECT_CLASSES)][1]
        colour = np.clip(np.array(colour) + rng.uniform(-0.1, 0.1, 3), 0.05, 1.0)
        z = rng.uniform(2.0, 5.0)
        x = rng.uniform(-0.8, 0.8) * z * _TAN
        if sphere:
            r = rng.uniform(0.3, 0.7)
            ext = (r, r, r)
            y = height - r
        else:
            ext = (rng.uniform(0.25, 0.6), rng.uniform(0.25, 0.9), rng.uniform(0.25, 0.6))
            y = height - ext[1]
        objects[k] = (1.0, cls, float(sphere), x, y, z, *ext, rng.uniform(0, math.pi / 2), *colour)
    return {
        "height": np.float64(height),
        "wall": np.float64(wall),
        "light": light,
        "objects": objects,
        "floor_colour": rng.uniform(0.35, 0.65, 3) * np.array([1.0, 0.9, 0.8]),
        "wall_colour": rng.uniform(0.5, 0.9, 3),
        "noise": rng.normal(0.0, 0.02, (3, size, size)),
    }


def _stack(params: List[Dict[str, np.ndarray]]) -> Dict[str, torch.Tensor]:
    return {key: torch.tensor(np.stack([p[key] for p in params]), dtype=torch.float32) for key in params[0]}


def _texture(cls: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """Albedo factor of each object class's texture at object-local points ``local`` [N,3,H,W]."""
    stripes_h = (torch.sin(local[:, 1] * 18.0) > 0).float()
    checker = ((torch.floor(local[:, 0] * 6.0) + torch.floor(local[:, 1] * 6.0) + torch.floor(local[:, 2] * 6.0)) % 2)
    stripes_v = (torch.sin(local[:, 0] * 18.0 + local[:, 2] * 18.0) > 0).float()
    k = cls.view(-1, 1, 1)
    factor = torch.ones_like(stripes_h)
    factor = torch.where(k == 1, 0.75 + 0.25 * stripes_h, factor)
    factor = torch.where(k == 2, 0.75 + 0.25 * checker, factor)
    factor = torch.where(k == 3, 0.75 + 0.25 * stripes_v, factor)
    return factor


def _render(p: Dict[str, torch.Tensor], size: int) -> Tuple[torch.Tensor, ...]:
    """Ray-cast a chunk of scenes. Returns image [N,3,S,S], seg [N,S,S] uint8, depth [N,1,S,S],
    normal [N,3,S,S], edge [N,1,S,S]."""
    n = p["height"].shape[0]
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2.0 - 1.0
    v, u = torch.meshgrid(coords, coords, indexing="ij")
    d = torch.stack([u * _TAN, v * _TAN + _LENS_SHIFT, torch.ones_like(u)])  # ray directions [3,S,S], d_z = 1
    d = d.unsqueeze(0).expand(n, 3, size, size)
    inf = torch.tensor(float("inf"))

    # background: the floor y = height (seen where the ray points down) and the wall z = D
    h = p["height"].view(n, 1, 1)
    wall = p["wall"].view(n, 1, 1)
    t_floor = torch.where(d[:, 1] > 0, h / d[:, 1].clamp_min(1e-6), inf)
    on_floor = t_floor < wall
    t_best = torch.where(on_floor, t_floor, wall.expand_as(t_floor))
    ident = on_floor.logical_not().long()  # 0 floor, 1 wall; objects 2 + k
    normal = torch.zeros(n, 3, size, size)
    normal[:, 1] = torch.where(on_floor, -1.0, 0.0)
    normal[:, 2] = torch.where(on_floor, 0.0, -1.0)
    point = d * t_best.unsqueeze(1)
    checker = ((torch.floor(point[:, 0] / 0.6) + torch.floor(point[:, 2] / 0.6)) % 2).float()
    floor_albedo = p["floor_colour"].view(n, 3, 1, 1) * (0.8 + 0.2 * checker).unsqueeze(1)
    albedo = torch.where(on_floor.unsqueeze(1), floor_albedo, p["wall_colour"].view(n, 3, 1, 1).expand(n, 3, size, size))
    seg = on_floor.logical_not().long()

    objects = p["objects"]
    for k in range(_MAX_OBJECTS):
        o = objects[:, k]
        present = o[:, 0].view(n, 1, 1) > 0.5
        cls = o[:, 1].long()
        sphere = o[:, 2].view(n, 1, 1) > 0.5
        c = o[:, 3:6].view(n, 3, 1, 1)
        ext = o[:, 6:9].view(n, 3, 1, 1)
        cos_a, sin_a = torch.cos(o[:, 9]).view(n, 1, 1), torch.sin(o[:, 9]).view(n, 1, 1)

        # sphere: |t d - c|^2 = r^2
        r = ext[:, 0]
        dd = (d * d).sum(1)
        dc = (d * c).sum(1)
        disc = dc * dc - dd * ((c * c).sum(1) - r * r)
        t_s = (dc - disc.clamp_min(0).sqrt()) / dd
        t_s = torch.where((disc >= 0) & (t_s > 0), t_s, inf)
        n_s = (d * t_s.clamp(max=1e6).unsqueeze(1) - c) / r.unsqueeze(1)

        # box turned by angle about y: slab test in the box frame (ray origin at the camera)
        dl = torch.stack([cos_a * d[:, 0] - sin_a * d[:, 2], d[:, 1], sin_a * d[:, 0] + cos_a * d[:, 2]], 1)
        cx, cz = c[:, 0, 0, 0].view(n, 1, 1), c[:, 2, 0, 0].view(n, 1, 1)
        ol = torch.stack([-(cos_a * cx - sin_a * cz), -c[:, 1], -(sin_a * cx + cos_a * cz)], 1).expand_as(dl)
        dl_safe = torch.where(dl.abs() < 1e-9, torch.full_like(dl, 1e-9), dl)
        t1 = (-ext - ol) / dl_safe
        t2 = (ext - ol) / dl_safe
        t_near, axis = torch.minimum(t1, t2).max(1)
        t_far = torch.maximum(t1, t2).min(1).values
        t_b = torch.where((t_far >= t_near) & (t_near > 0), t_near, inf)
        n_local = torch.zeros_like(dl)
        n_local.scatter_(1, axis.unsqueeze(1), 1.0)
        n_local = -n_local * torch.sign(dl_safe)
        n_b = torch.stack([cos_a * n_local[:, 0] + sin_a * n_local[:, 2], n_local[:, 1], -sin_a * n_local[:, 0] + cos_a * n_local[:, 2]], 1)

        t_k = torch.where(sphere, t_s, t_b)
        t_k = torch.where(present, t_k, inf)
        hit = t_k < t_best
        n_k = torch.where(sphere.unsqueeze(1), n_s, n_b)
        local = d * t_k.clamp(max=1e6).unsqueeze(1) - c
        texture = _texture(cls, local)
        albedo_k = o[:, 10:13].view(n, 3, 1, 1) * texture.unsqueeze(1)

        t_best = torch.where(hit, t_k, t_best)
        ident = torch.where(hit, 2 + k, ident)
        seg = torch.where(hit, 2 + cls.view(n, 1, 1), seg)
        normal = torch.where(hit.unsqueeze(1), n_k, normal)
        albedo = torch.where(hit.unsqueeze(1), albedo_k, albedo)

    normal = normal / normal.norm(dim=1, keepdim=True).clamp_min(1e-6)
    depth = t_best.unsqueeze(1)  # d_z = 1, so the ray parameter is the camera depth
    shade = 0.35 + 0.65 * (normal * p["light"].view(n, 3, 1, 1)).sum(1, keepdim=True).clamp_min(0)
    fog = torch.exp(-0.08 * (depth - 2.0))
    image = (albedo * shade * fog + p["noise"]).clamp(0, 1)
    return (image - _MEAN) / _STD, seg.to(torch.uint8), depth, normal, _soften(_edges(ident, normal), size / 32.0)


def _edges(ident: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """1 where any 4-neighbour shows another surface or a normal turned by more than 30°."""
    edge = torch.zeros_like(ident, dtype=torch.bool)
    down = (ident[:, 1:] != ident[:, :-1]) | ((normal[:, :, 1:] * normal[:, :, :-1]).sum(1) < _CREASE_COS)
    edge[:, 1:] |= down
    edge[:, :-1] |= down
    right = (ident[:, :, 1:] != ident[:, :, :-1]) | ((normal[..., 1:] * normal[..., :-1]).sum(1) < _CREASE_COS)
    edge[:, :, 1:] |= right
    edge[:, :, :-1] |= right
    return edge


def _soften(edge: torch.Tensor, sigma: float) -> torch.Tensor:
    """[N,H,W] bool -> [N,1,H,W]: exp(-d² / 2σ²), d the distance to the nearest edge pixel
    (within 2σ; 0 beyond)."""
    reach = max(1, math.ceil(2 * sigma))
    height, width = edge.shape[-2:]
    padded = torch.nn.functional.pad(edge.float(), (reach, reach, reach, reach))
    soft = torch.zeros(edge.shape)
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            weight = math.exp(-(dy * dy + dx * dx) / (2 * sigma * sigma))
            window = padded[:, reach + dy : reach + dy + height, reach + dx : reach + dx + width]
            soft = torch.maximum(soft, window * weight)
    return soft.unsqueeze(1)


class ScenesDataset(JointTransforms, Dataset):
    """One split of the ``scenes`` benchmark: ``(image [3,S,S], {"seg", "depth", "normal",
    "edge"})``. ``seg`` is int64 [S,S]; the others float [C,S,S]."""

    def __init__(self, split: str = "train", size: int = 32, count: int = 1000, seed: int = 0, chunk: int = 256,
                 transforms: Optional[JointTransform] = None):
        if split not in SPLITS:
            raise ConfigError(f"scenes: split must be one of {', '.join(SPLITS)}, got {split!r}")
        if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= 256:
            raise ConfigError(f"scenes: image size must be an integer from 8 to 256, got {size!r}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"scenes: the number of images must be a positive integer, got {count!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"scenes: seed must be a non-negative integer, got {seed!r}")
        self.split, self.size, self.seed = split, size, seed
        self.transforms = check_transforms(transforms, "scenes")
        parts: List[Tuple[torch.Tensor, ...]] = []
        for start in range(0, count, chunk):
            params = [
                _scene_parameters(np.random.default_rng([seed, SPLITS[split], i]), size)
                for i in range(start, min(count, start + chunk))
            ]
            parts.append(_render(_stack(params), size))
        self.images, self.seg, self.depth, self.normal, self.edge = (torch.cat(ts) for ts in zip(*parts))

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int):
        return self.transformed(self.images[index], {
            "seg": self.seg[index].long(),
            "depth": self.depth[index],
            "normal": self.normal[index],
            "edge": self.edge[index],
        })
