"""The NYUv2, CityScapes and Tiny-Taskonomy loaders read tiny fake datasets in the published layouts."""

import json
import math

import numpy as np
import pytest
import torch
from tests.data.fake_layouts import H, W, sample_arrays, taskonomy_arrays

from automtl.data import CityScapes, NYUv2, Taskonomy
from automtl.data._files import IMAGE_MEAN, IMAGE_STD
from automtl.errors import ConfigError, DataError


def normalised(rgb_uint8):
    return (torch.from_numpy(rgb_uint8).permute(2, 0, 1).float() / 255.0 - IMAGE_MEAN) / IMAGE_STD


def test_nyuv2_values_shapes_and_ignore_labels(nyu_root):
    test = NYUv2(nyu_root, "test")
    assert len(test) == 2
    image, targets = test[1]  # sample 6
    rgb, seg, normal, depth = sample_arrays(6)
    assert image.shape == (3, H, W) and torch.allclose(image, normalised(rgb), atol=1e-6)
    assert targets["seg"].dtype == torch.int64 and targets["seg"].shape == (H, W)
    assert torch.equal(targets["seg"], torch.from_numpy(seg.astype(np.int64)))
    assert targets["seg"][0, 0] == 255
    n = targets["normal"]
    assert n.shape == (3, H, W)
    assert torch.allclose(n[:, 0, 0], torch.tensor([128, 128, 255 - 6]) / 255.0 * 2 - 1)
    assert torch.equal(n[:, 1, 1], torch.zeros(3)) and torch.equal(n[:, 2, 2], torch.zeros(3))
    assert targets["depth"].shape == (1, H, W) and torch.equal(targets["depth"][0], torch.from_numpy(depth))
    assert targets["depth"][0, 3, 5] == 0.0


def test_nyuv2_validation_is_a_seeded_disjoint_part_of_train(nyu_root):
    train, val = NYUv2(nyu_root, "train", seed=3), NYUv2(nyu_root, "val", seed=3)
    assert len(train) + len(val) == 5 and len(val) == 1
    assert not set(train.samples) & set(val.samples)
    assert NYUv2(nyu_root, "val", seed=3).samples == val.samples
    assert {NYUv2(nyu_root, "val", seed=s).samples[0] for s in range(8)} != {val.samples[0]}  # the seed matters


def test_an_explicit_val_list_is_used(nyu_root):
    info = json.loads((nyu_root / "nyu_v2_3task.json").read_text())
    info["val"] = info["train"][:2]
    (nyu_root / "nyu_v2_3task.json").write_text(json.dumps(info))
    assert len(NYUv2(nyu_root, "val")) == 2 and len(NYUv2(nyu_root, "train")) == 5


def test_nyuv2_resizes_image_bilinear_and_maps_nearest(nyu_root):
    image, targets = NYUv2(nyu_root, "test", size=(8, 12))[0]  # sample 5
    assert image.shape == (3, 8, 12)
    seg = sample_arrays(5)[1].astype(np.int64)
    assert torch.equal(targets["seg"], torch.from_numpy(seg).repeat_interleave(2, 0).repeat_interleave(2, 1))
    assert targets["normal"].shape == (3, 8, 12) and targets["depth"].shape == (1, 8, 12)


def test_layout_errors(nyu_root, tmp_path):
    with pytest.raises(DataError) as err:
        NYUv2(tmp_path, "train")
    assert str(err.value) == (
        f"NYUv2: {tmp_path / 'nyu_v2_3task.json'} is missing; the layout lists each split's samples there as "
        '{"train": [[img, seg, normal, depth], ...], "test": [...]} (see the README)'
    )
    with pytest.raises(ConfigError, match="split must be one of train, val, test, got 'dev'"):
        NYUv2(nyu_root, "dev")
    (nyu_root / "seg" / "0006.png").unlink()
    with pytest.raises(DataError) as err:
        NYUv2(nyu_root, "test")[1]
    assert str(err.value) == f"NYUv2: {nyu_root / 'seg/0006.png'} is listed in the split list but does not exist"
    (nyu_root / "nyu_v2_3task.json").write_text('{"train": [["a", "b"]]}')
    with pytest.raises(DataError, match=r"split 'train', sample 0: expected 4 relative paths \[img, seg, normal, depth\]"):
        NYUv2(nyu_root, "train")


def test_nyuv2_rejects_maps_of_another_size(nyu_root):
    np.save(nyu_root / "depth" / "0005.npy", np.ones((2, 2), np.float32))
    with pytest.raises(DataError) as err:
        NYUv2(nyu_root, "test")[0]
    assert str(err.value) == (
        f"NYUv2: {nyu_root / 'depth/0005.npy'}: the depth map is [1, 2, 2] (channels first) but the image is [4, 6]; "
        "expected 1 channel(s) of the image's size"
    )


@pytest.mark.parametrize("classes", [19, 7, 2])
def test_cityscapes_values_and_label_sets(cityscapes_root, classes):
    ds = CityScapes(cityscapes_root, "test", classes=classes)
    image, targets = ds[0]  # sample 4
    rgb, seg, _, depth = sample_arrays(4)
    assert torch.allclose(image, (torch.from_numpy(rgb / 255.0).permute(2, 0, 1).float() - IMAGE_MEAN) / IMAGE_STD, atol=1e-6)
    expected = seg.astype(np.int64) % {19: 256, 7: 7, 2: 2}[classes]
    if classes != 2:
        expected[0, 0] = 255  # -1 in the files
    assert torch.equal(targets["seg"], torch.from_numpy(expected))
    assert torch.equal(targets["depth"], torch.from_numpy(depth)[None])


def test_cityscapes_rejects_unknown_label_sets(cityscapes_root):
    with pytest.raises(ConfigError, match="classes must be 2, 7 or 19"):
        CityScapes(cityscapes_root, "train", classes=13)


def test_taskonomy_conversions(taskonomy_root):
    ds = Taskonomy(taskonomy_root, "test", size=None)
    image, t = ds[1]  # sample 4
    rgb, seg, normal, depth, keypoint, edge = taskonomy_arrays(4)
    assert torch.allclose(image, normalised(rgb), atol=1e-6)
    expected_seg = torch.from_numpy(seg.astype(np.int64)) - 1
    expected_seg[torch.from_numpy(seg) == 0] = 255
    assert torch.equal(t["seg"], expected_seg) and (t["seg"] == 255).any()
    valid = torch.from_numpy(depth.astype(np.int64)) < 64500
    expected_depth = torch.log1p(torch.from_numpy(depth.astype(np.float32))) / math.log(2**16)
    assert torch.allclose(t["depth"][0][valid], expected_depth[valid]) and t["depth"][0, 0, 1] == 0.0
    assert torch.equal(t["normal"][:, 0, 1], torch.zeros(3))  # no depth there, so no normal
    assert torch.allclose(t["normal"][:, 1, 0], torch.tensor(normal[1, 0] / 255.0 * 2 - 1, dtype=torch.float32), atol=1e-6)
    kp = torch.from_numpy(keypoint.astype(np.float32)) / 2**16
    assert torch.allclose(t["keypoint"][0], kp.clamp(0, 0.005) / 0.005 * 2 - 1)
    assert t["keypoint"].max() == 1.0 and t["keypoint"].min() == -1.0
    ed = torch.from_numpy(edge.astype(np.float32)) / 2**16
    assert torch.allclose(t["edge"][0], ed.clamp(0, 0.08) / 0.08 * 2 - 1)
    assert ds.class_weights() == pytest.approx(np.linspace(0.5, 2.0, 17).tolist())


def test_taskonomy_default_size_is_256(taskonomy_root):
    image, t = Taskonomy(taskonomy_root, "train")[0]
    assert image.shape == (3, 256, 256)
    assert {k: tuple(v.shape) for k, v in t.items()} == {
        "seg": (256, 256), "normal": (3, 256, 256), "depth": (1, 256, 256), "keypoint": (1, 256, 256), "edge": (1, 256, 256)
    }
