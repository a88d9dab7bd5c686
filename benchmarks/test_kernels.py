"""pytest-benchmark entry points for the gravity kernels.

Run: pytest benchmarks/test_kernels.py --benchmark-only (or python benchmarks/run.py
for one table with pair interactions per second and peak memory).
"""

from __future__ import annotations

import pytest
import torch
from kernels import (
    OPS,
    PAIR_KERNELS,
    REFERENCE_MEMORY_LIMIT,
    Case,
    check_agreement,
    make_call,
    reference_memory,
)

SIZES = [256, 1024, 4096]
DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("kernel", PAIR_KERNELS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_agreement_before_timing(op, dtype, kernel):
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    assert check_agreement(op, 200, dtype, kernel=kernel) < tol


# aits with each CPU pair kernel, and the pure-torch reference.
IMPLS = [("aits", k) for k in PAIR_KERNELS] + [("reference", None)]


@pytest.mark.parametrize("impl,kernel", IMPLS, ids=["aits-rsqrt", "aits-divide", "reference"])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("op", OPS)
def test_kernel(benchmark, op, dtype, n, impl, kernel):
    if impl == "reference" and reference_memory(n, dtype) > REFERENCE_MEMORY_LIMIT:
        pytest.skip("reference would need more than a few GB")
    case = Case(op, n, dtype, impl, kernel=kernel)
    benchmark.extra_info["pair_interactions"] = n * n
    benchmark(make_call(case))
