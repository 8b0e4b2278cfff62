"""One DataLoader per training stream: workers that persist across epochs, a sampler that
follows the stream's position (so a resumed run with workers ends bit-equal to an unbroken
one), and random joint transforms seeded per sample."""

import os

import pytest
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from automtl.data import Transformed
from automtl.search import search
from automtl.search.batches import BatchStream
from automtl.search.config import load_config, merge

from search_toy import Interrupt, StopAfter, TINY, ToyData, toy_data, toy_supermodel


def _take(stream, n):
    return [stream.next() for _ in range(n)]


def _same(a, b):
    return len(a) == len(b) and all(
        torch.equal(x[0], y[0]) and all(torch.equal(x[1][k], y[1][k]) for k in x[1]) for x, y in zip(a, b)
    )


def test_workers_give_the_batches_of_the_main_process_across_epochs():
    data = ToyData(24, 0)  # 3 batches of 8 per epoch: 7 batches cross two epoch ends
    plain = _take(BatchStream(data, None, 8, seed=4), 7)
    stream = BatchStream(data, None, 8, seed=4, num_workers=2)
    try:
        assert _same(_take(stream, 7), plain)
        assert stream.state_dict() == {"epoch": 2, "position": 1, "seed": 4, "size": 24}
    finally:
        stream.close()


def test_one_loader_and_the_same_workers_for_the_whole_stream():
    stream = BatchStream(ToyData(16, 0), None, 8, seed=1, num_workers=2)
    _take(stream, 1)
    loader = stream._loader
    workers = list(loader._iterator._workers)
    _take(stream, 5)  # two more epochs
    stream.load_state_dict({"epoch": 0, "position": 1, "seed": 1, "size": 16})
    _take(stream, 2)
    assert stream._loader is loader and list(loader._iterator._workers) == workers
    assert all(w.is_alive() for w in workers)
    del loader  # the stream held the only other reference
    stream.close()
    for w in workers:
        w.join(timeout=10)
    assert not any(w.is_alive() for w in workers)


def test_a_loaded_position_restarts_the_loader_there():
    data = ToyData(32, 0)
    reference = _take(BatchStream(data, None, 8, seed=2), 10)
    first = BatchStream(data, None, 8, seed=2, num_workers=2)
    _take(first, 6)  # the workers have prefetched beyond this
    state = first.state_dict()
    first.close()
    second = BatchStream(data, None, 8, seed=2, num_workers=2)
    second.load_state_dict(state)
    try:
        assert _same(_take(second, 4), reference[6:])
        second.load_state_dict({"epoch": 0, "position": 2, "seed": 2, "size": 32})  # back, same loader
        assert _same(_take(second, 3), reference[2:5])
    finally:
        second.close()


class Flipped(Dataset):
    """Images 0..n-1 as constant-free ramps, each flipped at random (torch's RNG)."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        image = torch.arange(4.0).view(1, 1, 4).expand(1, 4, 4) + 10 * i
        return image, {"mask": (image[0] > 10 * i + 1).long(), "label": torch.tensor(i)}


def test_random_transforms_draw_the_same_with_workers_after_a_resume_and_leave_the_training_rng():
    data = Transformed(Flipped(12), v2.RandomHorizontalFlip(p=0.5))
    torch.manual_seed(0)
    rng = torch.get_rng_state()
    plain = _take(BatchStream(data, None, 4, seed=7), 6)
    assert torch.equal(torch.get_rng_state(), rng)  # reading batches drew nothing from the training RNG
    flipped = [bool(image[0, 0, 0] > image[0, 0, -1]) for images, _ in plain for image in images]
    assert 0 < sum(flipped) < len(flipped)
    for images, targets in plain:  # the mask moved with its image
        assert torch.equal(targets["mask"], (images[:, 0] - 10 * targets["label"].view(-1, 1, 1) > 1).long())
    stream = BatchStream(data, None, 4, seed=7, num_workers=2)
    try:
        assert _same(_take(stream, 3), plain[:3])
    finally:
        stream.close()
    resumed = BatchStream(data, None, 4, seed=7, num_workers=2)
    resumed.load_state_dict({"epoch": 1, "position": 0, "seed": 7, "size": 12})
    try:
        assert _same(_take(resumed, 3), plain[3:])
    finally:
        resumed.close()




def _lines(path):
    with open(os.path.join(path, "metrics.jsonl")) as f:
        return f.read().splitlines()


def test_resume_with_two_workers_ends_bit_equal_to_an_unbroken_run(tmp_path):
    """The unbroken run reads in the main process; the broken one uses two workers on both
    sides of the interruption (in the middle of policy training, mid-epoch)."""
    train, val, test = toy_data()
    unbroken = search(toy_supermodel(), train, val, test, config=TINY, out=tmp_path / "unbroken")
    workers = merge(TINY, {"data": {"num_workers": 2}})
    out = tmp_path / "broken"
    with pytest.raises(Interrupt):
        search(toy_supermodel(), train, val, test, config=workers, out=out, callbacks=[StopAfter("policy_train", 3)])
    resumed = search(toy_supermodel(), train, val, test, out=out, resume=True)
    assert load_config(str(out / "config.yaml")).data.num_workers == 2  # the resume read with workers too
    assert _lines(out) == _lines(tmp_path / "unbroken")
    assert resumed.policy == unbroken.policy and resumed.val == unbroken.val
    a, b = unbroken.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
