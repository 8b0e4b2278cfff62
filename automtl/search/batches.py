"""Deterministic, resumable batching.

Training data come as endless :class:`BatchStream` s: each epoch is a fresh permutation drawn
from a generator seeded by (seed, epoch), so the data order depends only on the seed and the
position (epoch, batch) - which is all a checkpoint needs to store to continue exactly where
it stopped. Under ``torchrun`` each rank takes every ``world``-th sample of the permutation.
Each sample is read with torch's RNG seeded from (seed, epoch, sample), so random transforms
(crops, flips) are part of that position too: the same with or without workers, after a resume.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from automtl.errors import DataError

Batch = Tuple[torch.Tensor, Dict[str, torch.Tensor]]


def check_dataset(dataset: Any, tasks: Sequence[str], name: str) -> None:
    """Fail early, with a message, on a dataset that is empty or whose samples do not have
    the ``(image, {task: target})`` form with a target for every task."""
    try:
        size = len(dataset)
    except TypeError as exc:
        raise DataError(f"the {name} dataset has no len(); automtl needs a map-style Dataset") from exc
    if size == 0:
        raise DataError(f"the {name} dataset is empty")
    sample = dataset[0]
    if not (isinstance(sample, (tuple, list)) and len(sample) == 2 and isinstance(sample[1], Mapping)):
        raise DataError(
            f"the {name} dataset's samples must be (image, {{task: target}}) pairs; sample 0 is a "
            f"{type(sample).__name__}" + (f" of length {len(sample)}" if isinstance(sample, (tuple, list)) else "")
        )
    missing = [t for t in tasks if t not in sample[1]]
    if missing:
        raise DataError(
            f"the {name} dataset's targets have no entry for task(s) {', '.join(missing)} (sample 0 has "
            f"{', '.join(map(str, sample[1])) or 'none'}); every task needs a target in every sample"
        )


def split_indices(size: int, fraction: float, seed: int) -> Tuple[List[int], List[int]]:
    """Two disjoint index lists covering ``range(size)``: ``1 - fraction`` of the samples and
    ``fraction`` of them, drawn by a permutation seeded with ``seed``."""
    generator = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(size, generator=generator).tolist()
    second = int(round(size * fraction))
    if second == 0 or second == size:
        raise DataError(
            f"cannot split {size} training samples into two non-empty parts with fraction {fraction}; "
            "use a larger training set or another policy_train.policy_fraction"
        )
    return sorted(order[second:]), sorted(order[:second])


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + 17) % (2**63 - 1)


def _sample_seed(epoch_seed: int, index: int) -> int:
    return (epoch_seed * 6_364_136_223_846_793_005 + int(index) * 1_442_695_040_888_963_407 + 1) % (2**63 - 1)


class _Plan:
    """Which dataset indices make up each batch of each epoch for one rank. Held by the
    sampler apart from the stream, so the DataLoader does not keep the stream alive."""

    def __init__(self, indices: List[int], batch_size: int, seed: int, rank: int, world: int):
        self.indices, self.batch_size, self.seed, self.rank, self.world = indices, batch_size, seed, rank, world
        self.per_rank = len(indices) // world
        self.batches_per_epoch = self.per_rank // batch_size

    def epoch_batches(self, epoch: int) -> List[List[int]]:
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        order = torch.randperm(len(self.indices), generator=generator).tolist()
        mine = order[self.rank :: self.world][: self.per_rank]
        return [
            [self.indices[i] for i in mine[b * self.batch_size : (b + 1) * self.batch_size]]
            for b in range(self.batches_per_epoch)
        ]


class _StreamSampler:
    """The DataLoader's batch sampler: from ``start`` (epoch, position) on, endlessly, batches of
    ``(dataset index, sample seed)``. The stream sets ``start`` before each ``iter(loader)``,
    so a loaded state restarts the one loader (and its persistent workers) where it says."""

    def __init__(self, plan: _Plan):
        self.plan = plan
        self.start = (0, 0)

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        epoch, position = self.start
        while True:
            seed = _epoch_seed(self.plan.seed, epoch)
            for batch in self.plan.epoch_batches(epoch)[position:]:
                yield [(i, _sample_seed(seed, i)) for i in batch]
            epoch, position = epoch + 1, 0


class _SeededSamples(Dataset):
    """``dataset[index]`` with torch's RNG seeded per (stream, epoch, sample): random
    transforms draw the same numbers with or without workers and after a resume. In the
    main process the training RNG (dropout, Gumbel noise) is left as it was."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __getitem__(self, key: Tuple[int, int]) -> Any:
        index, seed = key
        if get_worker_info() is not None:  # a worker's RNG serves only its samples
            torch.manual_seed(seed)
            return self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]


class BatchStream:
    """Endless training batches of ``batch_size`` over ``indices`` of ``dataset`` (incomplete
    last batches are dropped). ``state_dict()`` is the position; loading it continues there.

    One DataLoader serves the whole stream: its workers (``num_workers`` > 0) persist across
    epochs, its batch sampler follows the stream's position, and ``pin_memory`` pins the
    batches for an asynchronous copy to the GPU. ``close()`` stops the workers."""

    def __init__(
        self,
        dataset: Dataset,
        indices: Optional[Sequence[int]],
        batch_size: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        num_workers: int = 0,
        name: str = "train",
        pin_memory: bool = False,
    ):
        self.dataset = dataset
        self.indices = list(range(len(dataset))) if indices is None else list(indices)  # type: ignore[arg-type]
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank, self.world = int(rank), int(world)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.name = name
        self._plan = _Plan(self.indices, self.batch_size, self.seed, self.rank, self.world)
        self.per_rank = self._plan.per_rank
        self.batches_per_epoch = self._plan.batches_per_epoch
        if self.batches_per_epoch == 0:
            raise DataError(
                f"the {name} split has {len(self.indices)} samples, fewer than one batch of {self.batch_size}"
                + (f" per rank ({self.world} ranks)" if self.world > 1 else "")
                + "; lower data.batch_size or use more data"
            )
        self.epoch = 0
        self.position = 0  # batches of this epoch already handed out
        self._sampler: Optional[_StreamSampler] = None
        self._loader: Optional[DataLoader] = None
        self._iter: Optional[Iterator[Any]] = None

    # -- position -------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "size": len(self.indices)}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        if int(state.get("size", len(self.indices))) != len(self.indices):
            raise DataError(
                f"the {self.name} split has {len(self.indices)} samples but the checkpoint was made with "
                f"{state['size']}; resume with the same data"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._iter = None  # the next batch restarts the loader here

    def epoch_batches(self, epoch: int) -> List[List[int]]:
        """This rank's batches (lists of dataset indices) of ``epoch``, in order."""
        return self._plan.epoch_batches(epoch)

    # -- iteration ------------------------------------------------------------------------
    def _start(self) -> None:
        if self._loader is None:
            self._sampler = _StreamSampler(self._plan)
            self._loader = DataLoader(
                _SeededSamples(self.dataset),
                batch_sampler=self._sampler,
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
                pin_memory=self.pin_memory,
                # the loader's own seed source: iterating it draws nothing from the global RNG
                generator=torch.Generator().manual_seed(_epoch_seed(self.seed, -1)),
            )
        assert self._sampler is not None
        epoch, position = self.epoch, self.position
        if position >= self.batches_per_epoch:
            epoch, position = epoch + 1, 0
        self._sampler.start = (epoch, position)
        self._iter = iter(self._loader)  # persistent workers are reused, their queued batches dropped

    def next(self) -> Batch:
        if self._iter is None:
            self._start()
        if self.position >= self.batches_per_epoch:
            self.epoch += 1
            self.position = 0
        batch = next(self._iter)  # type: ignore[arg-type]
        self.position += 1
        return batch

    def close(self) -> None:
        """Stop the loader's workers (a later ``next`` starts them again)."""
        self._iter = None
        self._loader = None  # the loader holds the only reference to its iterator and workers
        self._sampler = None


def eval_batches(
    dataset: Dataset, batch_size: int, max_batches: Optional[int] = None, num_workers: int = 0, pin_memory: bool = False
) -> Iterator[Batch]:
    """The dataset in order, in batches (the last one may be smaller). The loader draws its
    worker seed from a generator of its own, not from the global RNG: an evaluation must not
    change the random numbers training draws next (dropout, Gumbel noise)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=pin_memory, generator=torch.Generator().manual_seed(0))
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        yield batch


def to_device(batch: Batch, device: torch.device) -> Batch:
    images, targets = batch
    non_blocking = device.type == "cuda"
    return images.to(device, non_blocking=non_blocking), {
        k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v for k, v in targets.items()
    }
