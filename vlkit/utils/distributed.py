"""Process-group set-up and the few collectives the engine needs.

Rank, world size and local rank come from torchrun's variables first, then SLURM's, then MPI's
(the open_clip / timm ``world_info_from_env`` order). The process group uses NCCL on CUDA and gloo
on CPU, always with a finite timeout so a stuck collective fails instead of hanging. Every helper is
a no-op (or the identity) in a single process, so callers never branch on whether DDP is on.
"""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FSDPModule

DEFAULT_TIMEOUT = timedelta(minutes=30)
"""How long a collective may wait for the other ranks before the run fails."""

_RANK_VARS = ("RANK", "PMI_RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK")
_WORLD_VARS = ("WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")
_LOCAL_RANK_VARS = ("LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK")
DEFAULT_MASTER_PORT = 29500


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job and which device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _first_int(names: Sequence[str], default: int) -> int:
    for name in names:
        if os.environ.get(name, "") != "":
            return int(os.environ[name])
    return default


def world_info_from_env() -> tuple[int, int, int]:
    """``(local_rank, rank, world_size)`` from torchrun, SLURM or MPI variables; ``(0, 0, 1)`` if none."""
    return _first_int(_LOCAL_RANK_VARS, 0), _first_int(_RANK_VARS, 0), _first_int(_WORLD_VARS, 1)


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``"gpu[03-05,9],cpu1"`` gives ``"gpu03"``."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        raise ValueError(f"cannot read the SLURM node list {nodelist!r}; set MASTER_ADDR yourself")
    prefix, ranges = match.groups()
    return prefix + (re.split(r"[-,]", ranges)[0] if ranges else "")


def _fill_rendezvous_from_slurm() -> None:
    """Set MASTER_ADDR / MASTER_PORT from SLURM when the job was started by srun, not torchrun."""
    if "MASTER_ADDR" not in os.environ and "SLURM_JOB_NODELIST" in os.environ:
        os.environ["MASTER_ADDR"] = first_slurm_host(os.environ["SLURM_JOB_NODELIST"])
    if "MASTER_PORT" not in os.environ and "SLURM_JOB_ID" in os.environ:
        os.environ["MASTER_PORT"] = str(20000 + int(os.environ["SLURM_JOB_ID"]) % 20000)
    os.environ.setdefault("MASTER_PORT", str(DEFAULT_MASTER_PORT))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when available), ``cpu`` or ``cuda`` → this process's device."""
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device={name!r} is not one of auto, cpu, cuda")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("device=cuda but torch sees no CUDA device; use device=cpu or auto")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def init_distributed(device: str = "auto", timeout: timedelta = DEFAULT_TIMEOUT) -> DistInfo:
    """Join the process group the environment describes (once) and return this process's place.

    A single process (no launcher variables, or a world of 1) starts no process group; a group the
    caller already started is reused.
    """
    local_rank, rank, world_size = world_info_from_env()
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    torch_device = resolve_device(device, local_rank)
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    if world_size > 1 and not dist.is_initialized():
        _fill_rendezvous_from_slurm()
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=timeout,
                                device_id=torch_device if backend == "nccl" else None)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=torch_device)


def destroy_distributed() -> None:
    """Leave the process group, if one was started."""
    if dist.is_initialized():
        dist.destroy_process_group()


def get_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single process)."""
    return get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks, in place, and return it."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average ``tensor`` over ranks, in place, and return it."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= dist.get_world_size()
    return tensor


def all_reduce_min(tensor: torch.Tensor) -> torch.Tensor:
    """Minimum of ``tensor`` over ranks, in place (e.g. "every rank is fine" flags)."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return tensor


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's rows of ``tensor`` concatenated in rank order (no gradient); ranks may hold
    different numbers of rows."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return tensor
    counts = all_gather_object(tensor.shape[0])
    padded = tensor.new_zeros((max(counts), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(gathered, padded.contiguous())
    return torch.cat([rows[:count] for rows, count in zip(gathered, counts)])


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), indexed by rank."""
    if not dist.is_initialized():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


@contextlib.contextmanager
def gathered_params(module: nn.Module | None) -> Iterator[None]:
    """Keep an FSDP unit's parameters whole (``strategy=fsdp`` shards them outside the unit's own
    forward) while code reads them directly; a no-op for any other module."""
    if not isinstance(module, FSDPModule):
        yield
        return
    module.unshard()
    try:
        yield
    finally:
        module.reshard()


def launched_by_launcher() -> bool:
    """Whether this process is one rank of a torchrun / SLURM / MPI job."""
    return world_info_from_env()[2] > 1 or "TORCHELASTIC_RUN_ID" in os.environ


def current_command() -> list[str]:
    """The arguments after the interpreter that started this process (``-m pkg ...`` or a script)."""
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if main_spec is not None:
        module = main_spec.name.removesuffix(".__main__")
        return ["-m", module, *sys.argv[1:]]
    return list(sys.argv)


def launch_local(nproc: int, argv: Sequence[str] | None = None) -> int:
    """Re-run ``argv`` (default: this process's command) as ``nproc`` ranks on this node.

    Goes through ``python -m torch.distributed.run --standalone``, waits, and returns its exit code.
    """
    if nproc < 1:
        raise ValueError(f"launch_local needs nproc >= 1; got {nproc}")
    if launched_by_launcher():
        raise RuntimeError(
            "launch_local called inside a distributed job (torchrun/SLURM variables are set); "
            "call it only from a plain single process"
        )
    command = list(argv) if argv is not None else current_command()
    return subprocess.call([
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={nproc}", *command,
    ])
