"""``textured-mnist``: a real digit in dark ink on stripes whose orientation is the texture label,
the digit's ink as the mask; deterministic per seed; a dense and two global tasks."""

import numpy as np
import pytest
import torch

import automtl
from automtl.data import get_benchmark
from automtl.data.multi_mnist import load_digits, mnist_5k_path, split_indices
from automtl.data.textured_mnist import ORIENTATIONS, TexturedMNIST
from automtl.errors import ConfigError


@pytest.fixture(scope="module")
def data():
    return TexturedMNIST("train", count=40, seed=4)


def test_digits_come_from_the_split_pool_with_their_labels(data):
    digits, labels = load_digits(mnist_5k_path())
    assert set(data.chosen) <= set(split_indices(labels, "train"))
    assert torch.equal(data.digits, torch.from_numpy(labels[data.chosen]))
    assert set(TexturedMNIST("test", count=40, seed=4).chosen) <= set(split_indices(labels, "test"))


def test_mask_is_the_digits_ink_and_the_ink_is_dark(data):
    digits, _ = load_digits(mnist_5k_path())
    for i in range(len(data)):
        image, targets = data[i]
        y, x = data.corners[i]
        expected = np.zeros((32, 32), np.uint8)
        expected[y : y + 28, x : x + 28] = digits[data.chosen[i]] > 127.5
        assert np.array_equal(targets["mask"].numpy(), expected)
        ink = targets["mask"].bool()
        # image = stripes * tint * (1 - ink): under ink above one half, at most half the background's 0.95
        assert float(((image[:, ink] + 1) / 2).max()) <= 0.5 * 0.95 + 1e-6
        assert image.shape == (3, 32, 32) and -1.0 <= float(image.min()) and float(image.max()) <= 1.0


def test_texture_label_is_the_stripes_orientation(data):
    """Away from the digit's box the image is pure stripes: constant along the stripes' direction."""
    steps = {0: (1, 0), 45: (1, -1), 90: (0, 1), 135: (1, 1)}  # (dy, dx) along which the value stays the same
    seen = set()
    for i in range(len(data)):
        image, targets = data[i]
        degrees = ORIENTATIONS[int(targets["texture"])]
        seen.add(degrees)
        y0, x0 = data.corners[i]
        free = np.ones((32, 32), bool)
        free[y0 : y0 + 28, x0 : x0 + 28] = False
        dy, dx = steps[degrees]
        ys, xs = np.nonzero(free)
        pairs = [(y, x) for y, x in zip(ys, xs) if 0 <= y + dy < 32 and 0 <= x + dx < 32 and free[y + dy, x + dx]]
        assert pairs
        a = image[:, [p[0] for p in pairs], [p[1] for p in pairs]]
        b = image[:, [p[0] + dy for p in pairs], [p[1] + dx for p in pairs]]
        assert torch.allclose(a, b, atol=1e-5), degrees
    assert seen == set(ORIENTATIONS)


def test_same_seed_same_images_other_seed_other_images():
    a, b, c = (TexturedMNIST("val", count=10, seed=s) for s in (1, 1, 2))
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks) and torch.equal(a.textures, b.textures)
    assert not torch.equal(a.images, c.images)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="split must be one of"):
        TexturedMNIST("dev")
    with pytest.raises(ConfigError, match="size must be an integer >= 28"):
        TexturedMNIST("train", count=2, size=20)


def test_benchmark_tasks_run_on_the_preset_backbone():
    from automtl.search.presets import default_backbone
    from automtl.backbones import build_backbone

    bench = get_benchmark("textured-mnist", seed=0, n_train=4, n_val=2, n_test=2)
    assert bench.task_names == ["digit", "texture", "mask"] and bench.input_shape == (3, 32, 32)
    backbone = build_backbone(default_backbone("textured-mnist"))
    sm = automtl.compile(backbone, bench.make_tasks(in_channels=backbone.out_channels), example_input=torch.zeros(2, 3, 32, 32))
    images = torch.stack([bench.train[i][0] for i in range(2)])
    out = sm.eval()(images)
    assert out["digit"].shape == (2, 10) and out["texture"].shape == (2, 4) and out["mask"].shape == (2, 2, 32, 32)
    losses = {t.name: t.loss(out[t.name], torch.stack([bench.train[i][1][t.name] for i in range(2)])) for t in sm.tasks}
    assert all(torch.isfinite(v) for v in losses.values())
