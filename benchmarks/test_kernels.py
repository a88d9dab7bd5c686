"""pytest-benchmark entry points for the gravity kernels.

Run: pytest benchmarks/test_kernels.py --benchmark-only (or python benchmarks/run.py
for one table with pair interactions per second and peak memory).
"""

from __future__ import annotations

import pytest
import torch
from kernels import OPS, REFERENCE_MEMORY_LIMIT, Case, check_agreement, make_call, reference_memory

SIZES = [256, 1024, 4096]
DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_agreement_before_timing(op, dtype):
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    assert check_agreement(op, 200, dtype) < tol


@pytest.mark.parametrize("impl", ["aits", "reference"])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("op", OPS)
def test_kernel(benchmark, op, dtype, n, impl):
    if impl == "reference" and reference_memory(n, dtype) > REFERENCE_MEMORY_LIMIT:
        pytest.skip("reference would need more than a few GB")
    case = Case(op, n, dtype, impl)
    benchmark.extra_info["pair_interactions"] = n * n
    benchmark(make_call(case))
