"""The procedural ``scenes`` benchmark: determinism, disjoint splits, consistent geometry."""

import math

import pytest
import torch

from automtl.data.scenes import _LENS_SHIFT, _TAN, CLASSES, ScenesDataset
from automtl.errors import ConfigError


@pytest.fixture(scope="module")
def train():
    return ScenesDataset("train", size=16, count=24, seed=0)


def test_items_have_the_documented_shapes(train):
    image, targets = train[3]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert targets["seg"].shape == (16, 16) and targets["seg"].dtype == torch.int64
    assert targets["depth"].shape == (1, 16, 16) and targets["normal"].shape == (3, 16, 16) and targets["edge"].shape == (1, 16, 16)
    assert len(train) == 24


def test_same_seed_same_data_other_seed_other_data(train):
    again = ScenesDataset("train", size=16, count=24, seed=0)
    for name in ("images", "seg", "depth", "normal", "edge"):
        assert torch.equal(getattr(train, name), getattr(again, name))
    other = ScenesDataset("train", size=16, count=24, seed=1)
    assert not torch.equal(train.images, other.images) and not torch.equal(train.depth, other.depth)


def test_an_image_does_not_depend_on_how_many_are_generated(train):
    few = ScenesDataset("train", size=16, count=5, seed=0, chunk=2)
    assert torch.equal(few.images, train.images[:5]) and torch.equal(few.seg, train.seg[:5])


def test_splits_are_disjoint(train):
    val = ScenesDataset("val", size=16, count=24, seed=0)
    test = ScenesDataset("test", size=16, count=24, seed=0)
    flat = lambda ds: {tuple(x.flatten().tolist()) for x in ds.depth}  # noqa: E731
    assert not flat(train) & flat(val) and not flat(train) & flat(test) and not flat(val) & flat(test)


def test_targets_are_valid(train):
    assert set(train.seg.unique().tolist()) <= set(range(len(CLASSES)))
    assert (train.depth > 0).all() and torch.isfinite(train.depth).all()
    assert torch.allclose(train.normal.norm(dim=1), torch.ones(1), atol=1e-5)
    assert train.edge.min() >= 0.0 and train.edge.max() == 1.0
    assert torch.isfinite(train.images).all()


def test_depth_and_normals_describe_the_same_geometry():
    ds = ScenesDataset("train", size=16, count=8, seed=2)
    coords = (torch.arange(16) + 0.5) / 16 * 2 - 1
    ray_y = (coords * _TAN + _LENS_SHIFT).view(16, 1).expand(16, 16)
    for i in range(len(ds)):
        seg, depth, normal = ds.seg[i], ds.depth[i, 0], ds.normal[i]
        floor, wall = seg == 0, seg == 1
        # the floor is one horizontal plane (y = camera height: depth * ray_y is constant) facing up
        heights = (depth * ray_y)[floor]
        assert heights.numel() > 0 and torch.allclose(heights, heights[0].expand_as(heights), atol=1e-4)
        assert torch.allclose(normal[:, floor], torch.tensor([[0.0], [-1.0], [0.0]]).expand(3, int(floor.sum())))
        # the wall is one fronto-parallel plane (constant depth) facing the camera
        if wall.any():
            assert torch.allclose(depth[wall], depth[wall][0].expand(int(wall.sum())))
            assert torch.allclose(normal[2, wall], torch.tensor(-1.0))
        # every visible surface faces the camera: normal . ray < 0
        ray = torch.stack([coords.view(1, 16).expand(16, 16) * _TAN, ray_y, torch.ones(16, 16)])
        assert ((normal * ray).sum(0) < 1e-4).all()


def test_edges_mark_every_change_of_class_and_fall_off_around_it(train):
    seg, edge = train.seg.long(), train.edge[:, 0] == 1.0
    changes = seg[:, :, 1:] != seg[:, :, :-1]
    assert edge[:, :, 1:][changes].all() and edge[:, :, :-1][changes].all()
    changes = seg[:, 1:] != seg[:, :-1]
    assert edge[:, 1:][changes].all() and edge[:, :-1][changes].all()


def test_every_class_occurs_in_a_fair_share():
    ds = ScenesDataset("train", size=16, count=100, seed=0)
    assert set(ds.seg.unique().tolist()) == set(range(len(CLASSES)))
    counts = torch.bincount(ds.seg.flatten().long(), minlength=len(CLASSES))
    assert (counts[2:] > 0.02 * counts.sum()).all()


def test_bad_arguments():
    with pytest.raises(ConfigError, match="split must be one of train, val, test, got 'dev'"):
        ScenesDataset("dev")
    with pytest.raises(ConfigError, match="image size must be an integer from 8 to 256, got 4"):
        ScenesDataset(size=4)
    with pytest.raises(ConfigError, match="seed must be a non-negative integer"):
        ScenesDataset(seed=-1)


def test_edge_strength_falls_off_with_the_distance_to_an_edge():
    from automtl.data.scenes import _soften

    line = torch.zeros(1, 7, 7, dtype=torch.bool)
    line[0, :, 3] = True  # a vertical edge line, sigma = 1 pixel
    soft = _soften(line, 1.0)[0, 0]
    assert torch.allclose(soft[3], torch.tensor([0.0, math.exp(-2), math.exp(-0.5), 1.0, math.exp(-0.5), math.exp(-2), 0.0]))
