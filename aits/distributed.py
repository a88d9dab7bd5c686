"""Training across processes with ``torchrun`` and DistributedDataParallel.

``torchrun --nproc_per_node=P -m aits.train ...`` starts P copies of the
training command; each is one *rank*. They build the same model from the same
seed, DDP keeps it identical on every rank (it broadcasts rank 0's parameters
once and averages the gradients in every backward), and each rank owns a
contiguous shard of the systems: with ``num_orbits = K`` (or any batched
scenario of K systems) rank ``r`` of ``P`` owns systems ``[r K/P, (r+1) K/P)``.
K must be a multiple of P (at least one system per rank); anything else is a
:class:`~aits.config.ConfigError` before training starts.

**The collective protocol.** Ranks only talk in *collective steps*, and every
rank takes every step, in the same order, whatever its own systems do; the
number of steps is decided by all-reduced numbers only, so no rank can wait on
a collective another rank skips (no deadlock by construction).

Part 1, one round (one accepted step per system):

1. every rank predicts ``dt`` for its systems (one DDP forward), steps and gates
   them; ``F = all_reduce(sum of local systems still failing)``;
2. ``F == 0``: every rank accepts and the round ends on all ranks together;
3. otherwise every rank takes one optimiser step on
   ``P * (sum of the band losses of its failing systems) / F``: a rank whose
   systems all passed contributes zero, but still through the graph, so DDP's
   gradient hooks fire on every rank. DDP averages gradients over the P ranks,
   so the gradient is exactly the single-process one, the mean band loss over
   all failing systems of all ranks;
4. the retrain cap counts these collective steps, so it is reached on every rank
   in the same attempt; every rank then raises the same
   :class:`~aits.training.RetrainLimitError` (the worst system is found with an
   all-gather).

Part 2, one draw: every rank draws the *same* permutation (the sampler is
seeded identically and advances identically) over the *global* trajectory
index ``round * K + global system``; each rank evaluates the drawn samples that
live in its shard (a rank with none evaluates one sample with weight zero, for
the same reason as above); the pass count and the failing count are
all-reduced, the loss is normalised as in Part 1, and "every sample passed"
is decided on the reduced count. Part 2 is skipped when the *global* number of
recorded states is below ``min_replay_size``. So a P-process run over K
systems follows the single-process run over the same K systems, up to
floating-point summation order (the tests check float64 weights to ~1e-10).

Everything else: per-step arrays are all-gathered (so Part 1 metrics are those
of the whole batch), counts are summed, the epoch time is the maximum over
ranks, and the ``--duration`` stop is an all-reduced "any rank ran out of
time". A checkpoint holds the *full* live batch and history (all-gathered) in
the single-process format, so a run resumes with the same or another number of
processes, or without torchrun. Only rank 0 writes the run directory,
checkpoints, plots, logs and the progress bar, and runs the closing rollout
check. Dropout (> 0) draws different masks per rank, so runs with dropout are
not equivalent to the single-process run (they are still valid training).

Outside torchrun (``WORLD_SIZE`` unset or 1) every helper here is a no-op and
training takes exactly the single-process path.
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import Tensor

from aits.config import ConfigError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "Group",
    "TIMEOUT_ENV",
    "env_world_size",
    "exit_now",
    "init_from_env",
    "is_initialized",
    "shard_range",
    "shutdown",
]

#: Seconds a collective may wait for the other ranks before failing (env override).
TIMEOUT_ENV = "AITS_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when absent)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_initialized() -> bool:
    """A process group exists in this process."""
    return dist.is_available() and dist.is_initialized()


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group torchrun describes (env://) when ``WORLD_SIZE > 1``.

    NCCL for a CUDA ``device`` (each rank on GPU ``LOCAL_RANK``), gloo otherwise;
    collectives time out after ``$AITS_DIST_TIMEOUT`` seconds (default 1800)
    instead of hanging. Returns the device this rank trains on.
    """
    if env_world_size() <= 1 or is_initialized():
        return device
    timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=timeout, device_id=device)
    else:
        dist.init_process_group("gloo", timeout=timeout)
    return device


def shutdown() -> None:
    """Leave the process group (no-op when none)."""
    if is_initialized():
        dist.destroy_process_group()


def exit_now(code: int) -> NoReturn:
    """End this process now with ``code``, after flushing stdout/stderr, skipping the
    interpreter's teardown (``os._exit``).

    For a torchrun worker whose work is done and whose process group is destroyed:
    with torch 2.13 (CPU wheel), gloo processes sometimes abort during that
    teardown ("terminate called without an active exception", SIGABRT), which
    torchrun reports as a failed run although every file was written. A plain
    torchrun + gloo script without aits does the same.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """``[lo, hi)`` of the systems rank ``rank`` of ``world`` owns out of ``n``.

    Raises:
        ConfigError: ``n`` not a multiple of ``world`` (which includes ``n < world``).
    """
    if n < world or n % world:
        raise ConfigError(
            f"the training batch has {n} systems (num_orbits or the scenario's batch), which "
            f"cannot be split evenly over {world} processes: use a multiple of {world} systems "
            f"(at least one per process) or another --nproc_per_node"
        )
    k = n // world
    return rank * k, (rank + 1) * k


@dataclass(frozen=True)
class Group:
    """This process's place in the run; with ``world == 1`` every method is a no-op
    returning its input (the single-process path, bit for bit)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Group:
        if is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, t: Tensor) -> Tensor:
        """Sum of ``t`` over ranks (a new tensor; ``t`` itself without a group)."""
        return self._reduce(t, dist.ReduceOp.SUM)

    def max(self, t: Tensor) -> Tensor:
        return self._reduce(t, dist.ReduceOp.MAX)

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when ``flag`` is true on some rank."""
        if not self.active:
            return flag
        return bool(self.max(torch.tensor(int(flag), device=device)))

    def max_float(self, x: float, device: torch.device) -> float:
        """The largest ``x`` over ranks (``device``: where NCCL wants the tensor)."""
        if not self.active:
            return x
        return float(self.max(torch.tensor(x, dtype=torch.float64, device=device)))

    def barrier(self) -> None:
        """Wait until every rank got here."""
        if self.active:
            dist.barrier()

    def _reduce(self, t: Tensor, op) -> Tensor:
        if not self.active:
            return t
        out = t.detach().clone()
        dist.all_reduce(out, op=op)
        return out

    def gather(self, t: Tensor, dim: int = 0) -> Tensor:
        """Every rank's ``t`` (same shape on all) concatenated along ``dim`` in rank order."""
        if not self.active:
            return t
        t = t.detach().contiguous()
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t)
        return torch.cat(parts, dim)
