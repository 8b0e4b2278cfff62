"""Devices, mixed precision and multi-process (``torchrun``) runs.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the process group is initialised
here - NCCL on CUDA, gloo on the CPU - unless the caller did it already. Weight steps run
through ``DistributedDataParallel``; the policy logits are kept out of DDP and their
gradients averaged explicitly, so that every rank takes the same policy step and the ranks
agree on the policy. Only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Iterable, Iterator, List, Sequence

import torch
import torch.distributed as dist
from torch import nn

from automtl.errors import ConfigError


@dataclasses.dataclass
class Runtime:
    """Where and how a run computes."""

    device: torch.device
    rank: int = 0
    world: int = 1
    amp: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def amp_dtype(self) -> torch.dtype:
        return torch.float16 if self.device.type == "cuda" else torch.bfloat16

    def autocast(self) -> Any:
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> "torch.amp.GradScaler":
        """Loss scaling for float16 on CUDA; a disabled scaler (pass-through) otherwise."""
        enabled = self.amp and self.device.type == "cuda"
        return torch.amp.GradScaler(self.device.type if enabled else "cpu", enabled=enabled)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA (this process's GPU under torchrun) when present, else the CPU."""
    text = (name or "auto").strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cuda":
        text = f"cuda:{local_rank}"
    try:
        device = torch.device(text)
    except RuntimeError as exc:
        raise ConfigError(f"device '{name}' is not a torch device (use auto, cpu, cuda or cuda:N)") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{name}' asks for CUDA, but torch sees no CUDA device here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device '{name}': this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type not in ("cpu", "mps", "xpu"):
        raise ConfigError(f"device '{name}' is not supported (use auto, cpu, cuda or cuda:N)")
    return device


def setup_runtime(device: str = "auto", amp: bool = False) -> Runtime:
    """The runtime of this process; joins the torchrun process group when there is one."""
    world_env = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_env > 1 and not dist.is_initialized():
        wants_cuda = device in ("auto", "cuda") and torch.cuda.is_available() or str(device).startswith("cuda")
        dist.init_process_group("nccl" if wants_cuda else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    resolved = resolve_device(device, local_rank)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    return Runtime(device=resolved, rank=rank, world=world, amp=bool(amp))


def wrap_ddp(model: nn.Module, runtime: Runtime, ignore: Sequence[str] = (), find_unused: bool = False) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel (or itself in a single process).
    ``ignore`` names parameters DDP leaves alone (the policy logits)."""
    if not runtime.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if ignore:
        DDP._set_params_and_buffers_to_ignore_for_model(model, list(ignore))
    device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    return DDP(model, device_ids=device_ids, find_unused_parameters=find_unused)


def average_gradients(params: Iterable[torch.Tensor], runtime: Runtime) -> None:
    """Average the gradients of ``params`` over the ranks (those without one count as 0)."""
    if not runtime.distributed:
        return
    for p in params:
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        grad.div_(runtime.world)
        p.grad = grad


def broadcast_(tensors: Iterable[torch.Tensor], runtime: Runtime, src: int = 0) -> None:
    """Overwrite ``tensors`` on every rank with rank ``src``'s values."""
    if not runtime.distributed:
        return
    for t in tensors:
        dist.broadcast(t.data, src)


def broadcast_object(obj: Any, runtime: Runtime, src: int = 0) -> Any:
    if not runtime.distributed:
        return obj
    box: List[Any] = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


def gather_objects(obj: Any, runtime: Runtime) -> List[Any]:
    """``obj`` of every rank, in rank order (all ranks get the list)."""
    if not runtime.distributed:
        return [obj]
    out: List[Any] = [None] * runtime.world
    dist.all_gather_object(out, obj)
    return out


def any_rank(flags: Sequence[bool], runtime: Runtime) -> List[bool]:
    """Each flag OR-ed over the ranks, so that every rank takes the same branch (one rank
    stopping while the others wait in a collective call would hang the run)."""
    if not runtime.distributed:
        return [bool(f) for f in flags]
    values = torch.tensor([1.0 if f else 0.0 for f in flags], device=runtime.device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(v) for v in values.tolist()]


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()


@contextlib.contextmanager
def frozen(params: Sequence[torch.nn.Parameter]) -> Iterator[None]:
    """``requires_grad=False`` on ``params`` inside the block: no gradient is computed for them."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
