"""Deterministic, resumable batching.

Training data come as endless :class:`BatchStream` s: each epoch is a fresh permutation drawn
from a generator seeded by (seed, epoch), so the data order depends only on the seed and the
position (epoch, batch) - which is all a checkpoint needs to store to continue exactly where
it stopped. Under ``torchrun`` each rank takes every ``world``-th sample of the permutation.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

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


class BatchStream:
    """Endless training batches of ``batch_size`` over ``indices`` of ``dataset`` (incomplete
    last batches are dropped). ``state_dict()`` is the position; loading it continues there."""

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
    ):
        self.dataset = dataset
        self.indices = list(range(len(dataset))) if indices is None else list(indices)  # type: ignore[arg-type]
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank, self.world = int(rank), int(world)
        self.num_workers = int(num_workers)
        self.name = name
        self.per_rank = len(self.indices) // self.world
        self.batches_per_epoch = self.per_rank // self.batch_size
        if self.batches_per_epoch == 0:
            raise DataError(
                f"the {name} split has {len(self.indices)} samples, fewer than one batch of {self.batch_size}"
                + (f" per rank ({self.world} ranks)" if self.world > 1 else "")
                + "; lower data.batch_size or use more data"
            )
        self.epoch = 0
        self.position = 0  # batches of this epoch already handed out
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
        self._iter = None

    def epoch_batches(self, epoch: int) -> List[List[int]]:
        """This rank's batches (lists of dataset indices) of ``epoch``, in order."""
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        order = torch.randperm(len(self.indices), generator=generator).tolist()
        mine = order[self.rank :: self.world][: self.per_rank]
        return [
            [self.indices[i] for i in mine[b * self.batch_size : (b + 1) * self.batch_size]]
            for b in range(self.batches_per_epoch)
        ]

    # -- iteration ------------------------------------------------------------------------
    def _start(self) -> None:
        remaining = self.epoch_batches(self.epoch)[self.position :]
        if self.num_workers > 0:
            loader = DataLoader(self.dataset, batch_sampler=remaining, num_workers=self.num_workers)
            self._iter = iter(loader)
        else:
            self._iter = (default_collate([self.dataset[i] for i in batch]) for batch in remaining)

    def next(self) -> Batch:
        if self.position >= self.batches_per_epoch:
            self.epoch += 1
            self.position = 0
            self._iter = None
        if self._iter is None:
            self._start()
        batch = next(self._iter)  # type: ignore[arg-type]
        self.position += 1
        return batch


def eval_batches(
    dataset: Dataset, batch_size: int, max_batches: Optional[int] = None, num_workers: int = 0
) -> Iterator[Batch]:
    """The dataset in order, in batches (the last one may be smaller). The loader draws its
    worker seed from a generator of its own, not from the global RNG: an evaluation must not
    change the random numbers training draws next (dropout, Gumbel noise)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(0))
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
