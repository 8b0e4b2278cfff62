"""Joint transforms: torchvision transforms.v2 steps move the dense targets with the image."""

import pytest
import torch
from torchvision.transforms import v2

from automtl.data import NYUv2, ScenesDataset, Transformed, get_benchmark
from automtl.data.transforms import apply_joint
from automtl.errors import ConfigError, DataError


def test_a_joint_flip_moves_every_dense_target_with_the_image():
    plain = ScenesDataset("train", size=16, count=3, seed=0)
    flipped = ScenesDataset("train", size=16, count=3, seed=0, transforms=v2.RandomHorizontalFlip(p=1.0))
    image, targets = flipped[2]
    want_image, want = plain[2]
    assert type(image) is torch.Tensor and all(type(t) is torch.Tensor for t in targets.values())
    assert torch.equal(image, want_image.flip(-1)) and not torch.equal(image, want_image)
    assert set(targets) == {"seg", "depth", "normal", "edge"}
    for name, target in targets.items():
        assert target.dtype == want[name].dtype and torch.equal(target, want[name].flip(-1)), name


def test_a_random_crop_cuts_the_same_window_from_image_and_mask():
    image = torch.arange(36.0).view(1, 6, 6)
    targets = {"seg": torch.arange(36).view(6, 6), "label": torch.tensor(3)}
    torch.manual_seed(0)
    out, got = apply_joint(v2.RandomCrop(4), image, targets)
    assert out.shape == (1, 4, 4) and got["seg"].shape == (4, 4)
    assert torch.equal(got["seg"].float(), out[0])  # the window is the same: values equal positions
    assert torch.equal(got["label"], torch.tensor(3))  # not a map: passed through


def test_colour_and_normalize_steps_touch_only_the_image():
    image = torch.full((3, 4, 4), 0.5)
    depth = torch.full((1, 4, 4), 2.0)
    out, got = apply_joint(v2.Normalize(mean=[0.5] * 3, std=[0.25] * 3), image, {"depth": depth})
    assert torch.equal(out, torch.zeros(3, 4, 4)) and torch.equal(got["depth"], depth)


def test_listed_datasets_and_benchmarks_take_transforms(nyu_root):
    flip = v2.RandomHorizontalFlip(p=1.0)
    plain, flipped = NYUv2(nyu_root, "test"), NYUv2(nyu_root, "test", transforms=flip)
    (a, ta), (b, tb) = plain[0], flipped[0]
    assert torch.equal(b, a.flip(-1)) and all(torch.equal(tb[k], ta[k].flip(-1)) for k in ta)
    bench = get_benchmark("scenes", seed=0, size=16, n_train=4, n_val=2, n_test=2, transforms=flip)
    reference = get_benchmark("scenes", seed=0, size=16, n_train=4, n_val=2, n_test=2)
    assert isinstance(bench.train, Transformed) and bench.train.size == 16  # attributes of the wrapped split
    assert torch.equal(bench.train[1][0], reference.train[1][0].flip(-1))
    assert torch.equal(bench.val[1][0], reference.val[1][0])  # evaluation splits stay as they are


def test_transform_errors():
    with pytest.raises(ConfigError) as err:
        ScenesDataset("train", size=16, count=1, transforms="flip")
    assert str(err.value) == (
        "scenes: transforms must be a callable taking (image, targets), e.g. a torchvision "
        "transforms.v2.Compose; got str"
    )
    with pytest.raises(DataError, match=r"must return \(image, targets\) as they were given; they returned a Image"):
        apply_joint(lambda image, targets: image, torch.zeros(1, 2, 2), {})
