"""The CPU few-body kernels (csrc/cpu/fewbody_kernels.h): batches of small systems
(N <= 8 in float64, <= 16 in float32) go through kernels vectorised across systems
(one system per SIMD lane) instead of the SIMD all-pairs kernels. Agreement with
aits.reference at B > 1 (softening, massless bodies, float32, both dimensions, both
pair kernels, batches that fill the lanes and batches with a partial last group),
the fused step's statistics against pair_statistics, independence from the thread
count, from the batch and from a system's lane, and the autograd path through the
same ops."""

from __future__ import annotations

import pytest
import torch
from helpers import DTYPES, RTOL, assert_close_rel, make_system

import aits
from aits import reference as ref
from aits.ops import aarseth_derivatives, leapfrog_step_with_statistics, pair_statistics

F64 = torch.float64
# 1 and 2 bodies, the three-body case, and the largest sizes each dtype takes
# (8 float64, 16 float32); 9 float64 runs the generic kernels, as a control
SIZES = [1, 2, 3, 5, 8, 9, 16]
AARSETH_TOL = {F64: 1e-12, torch.float32: 1e-4}


def _system(n: int, dim: int, dtype: torch.dtype, massless: bool, batch: int = 7) -> dict:
    s = make_system(n, dim, batch, dtype, seed=10 * n + dim)
    if massless and n > 1:
        s["mass"][:, 0] = 0.0
        s["mass"][1::2, -1] = 0.0
    return s


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("softening", [0.0, 0.3])
@pytest.mark.parametrize("massless", [False, True])
@pytest.mark.parametrize("kernel", aits.ops.PAIR_KERNELS)
def test_forces_and_potential_match_reference(dtype, dim, n, softening, massless, kernel):
    s = _system(n, dim, dtype, massless)
    with aits.ops.using_pair_kernel(kernel):
        acc = aits.accelerations(s["pos"], s["mass"], softening, G=1.3)
    assert_close_rel(acc, ref.accelerations(s["pos"], s["mass"], softening, G=1.3), RTOL[dtype])
    pot = aits.potential_energy(s["pos"], s["mass"], softening, G=0.7)
    assert pot.shape == (7,)
    assert_close_rel(pot, ref.potential_energy(s["pos"], s["mass"], softening, G=0.7),
                     RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("softening", [0.0, 0.3])
@pytest.mark.parametrize("massless", [False, True])
def test_fused_step_matches_reference(dtype, dim, n, softening, massless):
    s = _system(n, dim, dtype, massless)
    args = (s["pos"], s["vel"], s["mass"], s["dt"], softening, 1.1)
    pos1, vel1, acc1, stats = leapfrog_step_with_statistics(*args)
    want = ref.leapfrog_step(*args)
    for got, w in zip((pos1, vel1, acc1), want):
        assert_close_rel(got, w, RTOL[dtype])
    # the start acceleration given (as simulate passes it) or computed: one result
    a0 = aits.accelerations(s["pos"], s["mass"], softening, 1.1)
    given = leapfrog_step_with_statistics(*args, acc=a0)
    for got, g in zip((pos1, vel1, acc1), given):
        assert_close_rel(g, got, RTOL[dtype])
    torch.testing.assert_close(given[3], stats, rtol=RTOL[dtype], atol=0)  # inf where no pull
    # the statistics of the end positions, as the separate op computes them
    expect = pair_statistics(pos1, s["mass"], softening, 1.1)
    assert stats.shape == (7, 4)
    if n > 1:
        assert_close_rel(stats[:, :3], expect[:, :3], 4 * RTOL[dtype])
        # free-fall times: infinite where both bodies of every pair are massless
        torch.testing.assert_close(stats[:, 3], expect[:, 3], rtol=4 * RTOL[dtype], atol=0)
    else:  # one body: no pairs, zero distances and an infinite free-fall time
        assert torch.equal(stats[:, :3], torch.zeros_like(stats[:, :3]))
        assert torch.isinf(stats[:, 3]).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("softening", [0.0, 0.3])
@pytest.mark.parametrize("massless", [False, True])
def test_aarseth_derivatives_match_reference(dtype, dim, n, softening, massless):
    s = _system(n, dim, dtype, massless)
    got = aarseth_derivatives(s["pos"], s["vel"], s["mass"], softening, 1.2)
    want = ref.aarseth_derivatives(*(s[k].double() for k in ("pos", "vel", "mass")),
                                   softening, 1.2)
    for g, w in zip(got, want):
        assert g.shape == s["pos"].shape and g.dtype == dtype
        assert_close_rel(g, w.to(dtype), AARSETH_TOL[dtype])


# batch sizes around the lane counts (2, 4, 8 systems a group): a partial group
# alone, full groups, and full groups with a partial tail
BATCHES = [1, 3, 8, 13, 33]


def _max_bodies(dtype: torch.dtype) -> int:
    return 8 if dtype == F64 else 16


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("kernel", aits.ops.PAIR_KERNELS)
def test_every_few_body_size_and_batch_matches_reference(dtype, batch, kernel):
    """N = 2 .. the largest N the few-body kernels take, batches that are not a
    multiple of the lane count: every op against aits.reference."""
    for n in range(2, _max_bodies(dtype) + 1):
        for dim in (2, 3):
            s = make_system(n, dim, batch, dtype, seed=100 * n + batch + dim)
            p, v, m, h = s["pos"], s["vel"], s["mass"], s["dt"]
            with aits.ops.using_pair_kernel(kernel):
                acc = aits.accelerations(p, m, 0.05, G=1.3)
                pot = aits.potential_energy(p, m, 0.05, G=1.3)
                step = leapfrog_step_with_statistics(p, v, m, h, 0.05, 1.3)
                der = aarseth_derivatives(p, v, m, 0.05, 1.3)
            assert_close_rel(acc, ref.accelerations(p, m, 0.05, G=1.3), RTOL[dtype])
            assert_close_rel(pot, ref.potential_energy(p, m, 0.05, G=1.3), RTOL[dtype])
            for got, want in zip(step[:3], ref.leapfrog_step(p, v, m, h, 0.05, 1.3)):
                assert_close_rel(got, want, RTOL[dtype])
            expect = pair_statistics(step[0], m, 0.05, 1.3)
            assert_close_rel(step[3], expect, 4 * RTOL[dtype])
            want = ref.aarseth_derivatives(p.double(), v.double(), m.double(), 0.05, 1.3)
            for got, w in zip(der, want):
                assert_close_rel(got, w.to(dtype), AARSETH_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", aits.ops.PAIR_KERNELS)
def test_a_system_gets_the_same_bits_in_every_lane(dtype, kernel):
    """Each system of a batch of 19 (two full AVX-512 groups and a partial one) run
    alone, and the batch shifted by one system (every system in another lane)."""
    s = make_system(3, 2, 19, dtype, seed=7)
    with aits.ops.using_pair_kernel(kernel):
        whole = _all_outputs(s)
        shifted = _all_outputs({k: v[1:] for k, v in s.items()})
        for b in (0, 7, 8, 15, 16, 18):
            alone = _all_outputs({k: v[b:b + 1] for k, v in s.items()})
            for w, a in zip(whole, alone):
                assert torch.equal(w[b:b + 1], a)
    for w, sh in zip(whole, shifted):
        assert torch.equal(w[1:], sh)


def _all_outputs(s: dict) -> list[torch.Tensor]:
    with aits.ops.using_pair_kernel("divide"):
        acc = aits.accelerations(s["pos"], s["mass"], 0.1)
    return [acc, aits.potential_energy(s["pos"], s["mass"], 0.1),
            *leapfrog_step_with_statistics(s["pos"], s["vel"], s["mass"], s["dt"], 0.1),
            *aarseth_derivatives(s["pos"], s["vel"], s["mass"], 0.1)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_same_bits_for_any_thread_count_and_batch(dtype):
    s = make_system(3, 2, 3000, dtype, seed=4)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _all_outputs(s)
        torch.set_num_threads(2)
        two = _all_outputs(s)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two):
        assert torch.equal(a, b)
    # system 1234 alone gives the numbers it gets inside the batch
    alone = _all_outputs({k: v[1234:1235] for k, v in s.items()})
    for a, b in zip(one, alone):
        assert torch.equal(a[1234:1235], b)


def test_coincident_bodies_stay_visible():
    """Two bodies at one place without softening: non-finite forces, never a silent 0."""
    s = make_system(3, 3, 4, F64, seed=1)
    s["pos"][2, 1] = s["pos"][2, 0]
    acc = aits.accelerations(s["pos"], s["mass"])
    assert not torch.isfinite(acc[2]).all()
    assert torch.isfinite(acc[[0, 1, 3]]).all()
    U = aits.potential_energy(s["pos"], s["mass"])
    assert not torch.isfinite(U[2]) and torch.isfinite(U[[0, 1, 3]]).all()
    # the derivatives too (the fused step's start needs a finite acc, so it is not run)
    assert not torch.isfinite(aarseth_derivatives(s["pos"], s["vel"], s["mass"])[0][2]).all()


def test_gradients_through_fewbody_ops():
    s = make_system(3, 2, 5, F64, seed=2, requires_grad=True)
    pos, vel, mass, dt = s["pos"], s["vel"], s["mass"], s["dt"]
    assert torch.autograd.gradcheck(
        lambda p, v, m, h: aits.ops.leapfrog_step(p, v, m, h, 0.1), (pos, vel, mass, dt))
    assert torch.autograd.gradcheck(lambda p, m: aits.potential_energy(p, m, 0.1), (pos, mass))
