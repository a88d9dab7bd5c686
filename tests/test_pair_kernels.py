"""The two CPU pair kernels ("rsqrt": estimate + Newton, "divide": sqrt + division),
their run-time selection, and the representable ranges of the pair terms."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import DTYPES, RTOL, assert_close_rel, make_system

import aits
from aits import reference as ref
from aits.ics import random_system

KERNELS = aits.ops.PAIR_KERNELS
# Sizes around the vector widths (8 float64 / 16 float32 lanes): partial tails.
SIZES = [2, 3, 9, 17, 40]


@pytest.fixture(params=KERNELS)
def kernel(request):
    with aits.ops.using_pair_kernel(request.param):
        yield request.param


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("softening", [0.0, 0.2])
def test_forward_matches_reference(kernel, dtype, dim, n, softening):
    s = make_system(n, dim, 2, dtype, seed=n)
    got = aits.accelerations(s["pos"], s["mass"], softening, G=1.3)
    want = ref.accelerations(s["pos"], s["mass"], softening, G=1.3)
    assert_close_rel(got, want, RTOL[dtype])
    pot = aits.potential_energy(s["pos"], s["mass"], softening)
    assert_close_rel(pot, ref.potential_energy(s["pos"], s["mass"], softening), RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("n", SIZES)
def test_backward_matches_reference(kernel, dtype, dim, n):
    s = make_system(n, dim, 2, dtype, seed=n, requires_grad=True)
    grad = torch.randn(s["pos"].shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    got = torch.autograd.grad(aits.accelerations(s["pos"], s["mass"], 0.1), [s["pos"], s["mass"]], grad)
    want = torch.autograd.grad(ref.accelerations(s["pos"], s["mass"], 0.1), [s["pos"], s["mass"]], grad)
    for g, w in zip(got, want):
        assert_close_rel(g, w, 4 * RTOL[dtype])


def test_gradcheck_with_each_kernel(kernel):
    s = make_system(11, 3, 2, torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, m: aits.accelerations(p, m, 0.05), (s["pos"], s["mass"]))


def test_kernels_agree_with_each_other_at_float64_precision():
    s = make_system(300, 3, 1, torch.float64)
    with aits.ops.using_pair_kernel("divide"):
        old = aits.accelerations(s["pos"], s["mass"])
    with aits.ops.using_pair_kernel("rsqrt"):
        new = aits.accelerations(s["pos"], s["mass"])
    assert_close_rel(new, old, 1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rsqrt_kernel_is_deterministic_across_thread_counts(dtype):
    s = make_system(301, 3, 2, dtype, requires_grad=True)
    threads = torch.get_num_threads()

    def run():
        acc = aits.accelerations(s["pos"], s["mass"])
        return (acc, *torch.autograd.grad(acc, [s["pos"], s["mass"]], torch.ones_like(acc)))

    try:
        with aits.ops.using_pair_kernel("rsqrt"):
            torch.set_num_threads(1)
            one = run()
            torch.set_num_threads(max(2, threads))
            many = run()
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one, many))


DEFAULT = "divide" if aits.ops.simd_instruction_set() == "none" else "rsqrt"


def test_selection_by_name_and_context_manager_restores():
    assert aits.ops.simd_instruction_set() in ("avx512f", "avx2", "none")
    assert aits.ops.pair_kernel() == DEFAULT
    other = "divide" if DEFAULT == "rsqrt" else "rsqrt"
    with aits.ops.using_pair_kernel(other):
        assert aits.ops.pair_kernel() == other
    assert aits.ops.pair_kernel() == DEFAULT


def test_unknown_kernel_name_is_a_value_error_listing_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown pair kernel 'fast'.*'rsqrt'.*'divide'"):
        aits.ops.set_pair_kernel("fast")
    assert aits.ops.pair_kernel() == DEFAULT


def _two_bodies(r: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([[0.0, 0.0, 0.0], [r, 0.0, 0.0]], dtype=dtype), torch.ones(2, dtype=dtype)


# float32 separations where the old kernels gave inf/NaN (1e-15), 40 % off
# (1e15) and 0 (1e19); float64 ones past the old 1/s^3 limits (1e-103, 1e130).
EDGES = [(torch.float32, r) for r in (1e-19, 1e-15, 1e15, 1e19)] + [
    (torch.float64, r) for r in (1e-150, 1e-110, 1e130, 1e150)
]


@pytest.mark.parametrize("dtype,r", EDGES)
def test_pair_terms_at_edge_separations(kernel, dtype, r):
    pos, mass = _two_bodies(r, dtype)
    tol = 1e-6 if dtype == torch.float32 else 1e-14
    acc = aits.accelerations(pos, mass)
    assert acc[0, 0].item() == pytest.approx(1.0 / r / r, rel=tol)
    assert acc[1, 0].item() == pytest.approx(-1.0 / r / r, rel=tol)
    assert aits.potential_energy(pos, mass).item() == pytest.approx(-1.0 / r, rel=tol)
    grads = torch.autograd.grad(
        aits.accelerations(pos.requires_grad_(), mass), [pos], torch.ones_like(pos)
    )[0]
    assert torch.isfinite(grads).all() or abs(math.log10(r)) > 12  # |grad| ~ 1/r^3


# Systems whose squared separations straddle the range where the AVX2 builds take
# rsqrtps (float32 [2^-64, 2^126]; float64, rounded to float, [2^-125, 2^125]) and
# where they fall back to the integer-bit estimate: vectors of partners on both sides.
STRADDLES = [(torch.float32, 2.0**-31), (torch.float32, 2.0**63),
             (torch.float64, 2.0**-62), (torch.float64, 2.0**63)]


@pytest.mark.parametrize("dtype,scale", STRADDLES)
def test_forward_where_separations_straddle_the_fast_estimate_range(kernel, dtype, scale):
    gen = torch.Generator().manual_seed(5)
    unit = 1 + torch.rand(37, 3, generator=gen, dtype=torch.float64)
    mass = torch.rand(37, generator=gen, dtype=torch.float64) + 0.5
    s2 = torch.cdist(unit, unit).pow(2)[~torch.eye(37, dtype=torch.bool)] * scale**2
    lo, hi = (2.0**-64, 2.0**126) if dtype == torch.float32 else (2.0**-125, 2.0**125)
    assert bool((s2 < lo).any() | (s2 > hi).any()) and bool(((s2 > lo) & (s2 < hi)).any())
    pos = (unit * scale).to(dtype)
    want = ref.accelerations(pos.double(), mass)
    got = aits.accelerations(pos, mass.to(dtype)).double()
    tol = 1e-5 if dtype == torch.float32 else 1e-13
    assert ((got - want).norm(dim=-1) / want.norm(dim=-1)).max().item() < tol


@pytest.mark.parametrize("dtype,r", [(torch.float32, 1e-15), (torch.float32, 1e15),
                                     (torch.float64, 1e-60), (torch.float64, 1e60)])
def test_free_fall_time_at_edge_separations(dtype, r):
    pos, mass = _two_bodies(r, dtype)
    want = math.sqrt(r) ** 3 / math.sqrt(2.0)
    tol = 1e-6 if dtype == torch.float32 else 1e-14
    assert aits.ops.pair_statistics(pos, mass)[3].item() == pytest.approx(want, rel=tol)
    dt = 1e-8 * want  # the bodies move by ~1e-16 r
    fused = aits.ops.leapfrog_step_with_statistics(pos, torch.zeros_like(pos), mass, dt)[3]
    assert fused[3].item() == pytest.approx(want, rel=tol)


@pytest.mark.parametrize("dtype,r", [(torch.float32, 1e-25), (torch.float32, 1e-40),
                                     (torch.float64, 1e-120), (torch.float64, 1e-200)])
def test_free_fall_time_is_never_zero_for_distinct_bodies(dtype, r):
    pos, mass = _two_bodies(r, dtype)
    assert pos[1, 0].item() > 0  # distinct in this dtype
    assert aits.ops.pair_statistics(pos, mass)[3].item() > 0
    assert aits.ops.pair_statistics(torch.zeros_like(pos), mass)[3].item() == 0  # coincident


@pytest.mark.parametrize("n", [9, 40, 300])
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("kernel", aits.ops.PAIR_KERNELS)
def test_large_fused_step_statistics_are_the_separate_ops(n, dim, kernel):
    """Above the few-body kernels the fused float64 step's force pass also gives the
    pair statistics: its end state is the plain step's, its statistics
    pair_statistics' of the end positions."""
    s = random_system(n, dim, batch=2, seed=n, softening=0.02)
    dt = torch.tensor([1e-3, 2e-3], dtype=torch.float64)
    with aits.ops.using_pair_kernel(kernel):
        fused = aits.ops.leapfrog_step_with_statistics(s.pos, s.vel, s.mass, dt, 0.02, 1.3)
        plain = aits.ops.leapfrog_step(s.pos, s.vel, s.mass, dt, 0.02, 1.3)
        expect = aits.ops.pair_statistics(fused[0], s.mass, 0.02, 1.3)
    if kernel == "rsqrt":  # the same kernel, bit for bit
        assert all(torch.equal(f, p) for f, p in zip(fused[:3], plain))
    else:
        for f, p in zip(fused[:3], plain):
            assert_close_rel(f, p, 1e-13)
    torch.testing.assert_close(fused[3], expect, rtol=1e-14, atol=0)


@pytest.mark.parametrize("n", [3, 20])
@pytest.mark.parametrize("kernel", aits.ops.PAIR_KERNELS)
def test_fused_step_statistics_of_coincident_and_underflowing_pairs(n, kernel):
    """Softening 0, float64, few-body and large kernels: a coincident pair gives a
    zero minimum distance and free-fall time (and a finite mean distance), a pair
    1e-200 apart (whose s^2 underflows) positive ones, each as pair_statistics
    gives them."""
    s = random_system(n, 3, batch=2, seed=4, softening=0.0)
    pos = s.pos.clone()
    pos[0, 0] = pos[0, 1]
    pos[1, 0] = 0.0
    pos[1, 1] = torch.tensor([1e-200, 0.0, 0.0], dtype=torch.float64)
    still = torch.zeros_like(pos)  # no velocity or start acceleration: pos1 = pos
    with aits.ops.using_pair_kernel(kernel):
        stats = aits.ops.leapfrog_step_with_statistics(pos, still, s.mass, 1e-3, acc=still)[3]
    expect = aits.ops.pair_statistics(pos, s.mass)
    assert stats[0, 0] == 0 and stats[0, 3] == 0
    assert stats[1, 0] > 0 and stats[1, 3] > 0
    torch.testing.assert_close(stats, expect, rtol=1e-14, atol=0)
