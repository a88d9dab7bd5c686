"""Kernel benchmark cases shared by the pytest-benchmark file and the table.

Each case is one call of a gravity op on a random system of N bodies in 3-D:
``forward`` (accelerations), ``forward+backward`` (accelerations and the
vector-Jacobian product for positions and masses) and ``leapfrog`` (one
``leapfrog_step`` with the acceleration passed in, i.e. one force evaluation).
Throughput is counted in pair interactions per second: N^2 per call.
"""

from __future__ import annotations

import ctypes
import decimal
import math
import functools
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable

import torch

import aits
from aits import reference

OPS = ("forward", "forward+backward", "leapfrog")
# aits CPU pair kernels compared in one run (aits.ops.set_pair_kernel).
PAIR_KERNELS = ("rsqrt", "divide")
# Floating-point operations counted per pair interaction, for the fraction of
# the FMA peak: the usual 20 for the softened forward pair (reciprocal square
# root counted as 4), 64 for forward+backward (the backward's 44: separation 3,
# r^2 5, rsqrt 4, powers 3, unit vector 3, u 9, e.u and e.g 10, K u 6, sums 1).
FLOPS_PER_PAIR = {"forward": 20, "forward+backward": 64, "leapfrog": 20}
# The reference materialises several (N, N, D) tensors: skip it above this.
REFERENCE_MEMORY_LIMIT = 3 * 2**30


@dataclass(frozen=True)
class Case:
    op: str
    n: int
    dtype: torch.dtype
    impl: str  # "aits" or "reference"
    device: str = "cpu"
    kernel: str | None = None  # aits CPU pair kernel; None: the current one

    @property
    def label(self) -> str:
        impl = self.impl if self.kernel is None else f"{self.impl}[{self.kernel}]"
        return f"{self.op}-{impl}-{str(self.dtype).removeprefix('torch.')}-N{self.n}"


def reference_memory(n: int, dtype: torch.dtype) -> int:
    """Rough peak bytes of the broadcasting reference (about 6 live N x N x 3 arrays)."""
    return 6 * n * n * 3 * torch.empty((), dtype=dtype).element_size()


def make_call(case: Case, seed: int = 0) -> Callable[[], object]:
    """Inputs for the case, and a function running it once (with the case's
    pair kernel selected for the duration of each call)."""
    call = _make_call(case, seed)
    if case.kernel is None:
        return call

    def with_kernel():
        with aits.ops.using_pair_kernel(case.kernel):
            return call()

    return with_kernel


def _make_call(case: Case, seed: int) -> Callable[[], object]:
    gen = torch.Generator().manual_seed(seed)
    pos = torch.randn(case.n, 3, generator=gen, dtype=case.dtype).to(case.device)
    vel = torch.randn(case.n, 3, generator=gen, dtype=case.dtype).to(case.device) * 0.1
    mass = (torch.rand(case.n, generator=gen, dtype=case.dtype) + 0.5).to(case.device) / case.n
    dt = torch.tensor(1e-3, dtype=case.dtype, device=case.device)
    mod = aits if case.impl == "aits" else reference
    soft = 0.01
    if case.op == "forward":
        return lambda: mod.accelerations(pos, mass, soft)
    if case.op == "forward+backward":
        p = pos.clone().requires_grad_()
        m = mass.clone().requires_grad_()
        grad = torch.randn(pos.shape, generator=gen, dtype=case.dtype).to(case.device)

        def fwd_bwd():
            return torch.autograd.grad(mod.accelerations(p, m, soft), [p, m], grad)

        return fwd_bwd
    if case.op == "leapfrog":
        acc = aits.accelerations(pos, mass, soft)
        return lambda: mod.leapfrog_step(pos, vel, mass, dt, soft, 1.0, acc)
    raise ValueError(f"unknown op {case.op!r}; expected one of {OPS}")


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_call(call: Callable[[], object], device: str = "cpu", min_time: float = 0.3) -> float:
    """Best seconds per call over repeats lasting at least ``min_time`` in total."""
    call()
    synchronize(device)
    best, total, reps = float("inf"), 0.0, 0
    while total < min_time or reps < 3:
        start = time.perf_counter()
        call()
        synchronize(device)
        elapsed = time.perf_counter() - start
        best, total, reps = min(best, elapsed), total + elapsed, reps + 1
    return best


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    raise KeyError(key)


@functools.cache
def _return_freed_memory_to_the_os() -> None:
    """Pins glibc's mmap threshold at 128 KiB: large blocks are then always mapped
    and unmapped, instead of staying resident for reuse after the first call,
    which would hide them from the resident-set measurement below."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def peak_extra_memory(call: Callable[[], object], device: str = "cpu") -> float:
    """Peak memory (bytes) a call needs beyond what is resident before it.

    CPU: resets the kernel's peak-RSS counter (/proc/self/clear_refs) and reads
    VmHWM - VmRSS. CUDA: torch.cuda.max_memory_allocated. NaN where unsupported.
    """
    _return_freed_memory_to_the_os()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        call()
        torch.cuda.synchronize()
        return float(torch.cuda.max_memory_allocated() - before)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _status_kib("VmRSS")
        call()
        return float(_status_kib("VmHWM") - before) * 1024
    except OSError:
        return float("nan")


def fma_peak(threads: int, dtype: torch.dtype) -> tuple[float, str]:
    """Estimated FMA peak in flop/s of ``threads`` cores, and how it was estimated:
    cores x GHz x FMA units x lanes x 2. GHz is /proc/cpuinfo's "cpu MHz" (the
    nominal clock; turbo is not counted), 2 FMA units per core (Intel Xeon
    Scalable, AMD Zen), lanes from the instruction set the kernels were built for."""
    isa = aits.ops.simd_instruction_set()
    mhz = 0.0
    try:
        with open("/proc/cpuinfo") as f:
            mhz = next(float(line.split(":")[1]) for line in f if line.startswith("cpu MHz"))
    except (OSError, StopIteration, ValueError):
        pass
    width = {"avx512f": 64, "avx2": 32}.get(isa, 16)
    lanes = width // torch.empty((), dtype=dtype).element_size()
    peak = threads * mhz * 1e6 * 2 * lanes * 2
    return peak, f"{threads} cores x {mhz / 1e3:.2f} GHz x 2 FMA units x {lanes} lanes ({isa}) x 2"


def check_agreement(op: str, n: int, dtype: torch.dtype, device: str = "cpu",
                    kernel: str | None = None) -> float:
    """Max relative difference of aits against the reference for one case (small N)."""
    got = make_call(Case(op, n, dtype, "aits", device, kernel))()
    want = make_call(Case(op, n, dtype, "reference", device))()
    got = got if isinstance(got, (tuple, list)) else (got,)
    want = want if isinstance(want, (tuple, list)) else (want,)
    return max(((g - w).abs().max() / w.abs().max()).item() for g, w in zip(got, want))


def separation_errors(r: float, dtype: torch.dtype) -> dict[str, float]:
    """Two unit masses at 0 and (r, 0, 0): relative errors of the acceleration
    (exact 1/r^2, in 50-digit decimal arithmetic), the potential energy (-1/r) and the free-fall time of
    pair_statistics (sqrt(r^3 / 2)) in ``dtype``, for the current pair kernel.
    inf where the result is non-finite or zero."""
    pos = torch.tensor([[0.0, 0.0, 0.0], [r, 0.0, 0.0]], dtype=dtype)
    mass = torch.ones(2, dtype=dtype)
    got = {
        "acc": aits.accelerations(pos, mass)[0, 0].item(),
        "potential": -aits.potential_energy(pos, mass).item(),
        "freefall": aits.ops.pair_statistics(pos, mass)[3].item(),
    }
    decimal.getcontext().prec = 50
    exact_r = Decimal(r)
    exact = {"acc": float(exact_r**-2), "potential": float(1 / exact_r),
             "freefall": float((exact_r**3 / 2).sqrt())}
    return {k: abs(got[k] - exact[k]) / exact[k] if math.isfinite(got[k]) and got[k] != 0
            else math.inf for k in got}


def representable_range(dtype: torch.dtype, tol: float, quantity: str) -> tuple[float, float]:
    """The decades 10^k, k integer, around r = 1 over which ``quantity``
    (a key of separation_errors) stays within ``tol`` of the exact value: (r_min, r_max)."""
    lo = hi = 0
    while lo > -400 and separation_errors(10.0 ** (lo - 1), dtype)[quantity] <= tol:
        lo -= 1
    while hi < 400 and separation_errors(10.0 ** (hi + 1), dtype)[quantity] <= tol:
        hi += 1
    return 10.0**lo, 10.0**hi
