"""CUDA back end: agreement with the CPU kernels and aits.reference, gradients, opcheck.

Skipped (with the reason) unless aits was built with its CUDA back end and a
GPU is visible. The CPU op is the comparison partner wherever the reference
would need too much memory.
"""

from __future__ import annotations

import pytest
import torch

import aits
from aits import _extension, reference
from aits.ics import plummer
from aits.policies import AarsethPolicy

if not _extension.cuda_built():
    pytestmark = pytest.mark.skip(
        reason="aits was built without its CUDA back end (needs a CUDA torch and nvcc; "
        "build with AITS_CUDA=ON pip install --no-build-isolation .)"
    )
elif not torch.cuda.is_available():
    pytestmark = pytest.mark.skip(reason="no CUDA device visible to torch")

CUDA = "cuda"
SOFTENING = 0.01
G = 1.3
# N not a multiple of the 256-body tile, and the tile edges themselves.
SIZES = (1, 2, 33, 256, 257, 1000)
BATCHES = (None, 3)  # None: unbatched (N, D)


def make_system(n, d, batch, dtype=torch.float64, seed=0):
    """pos, vel, mass on the CPU (float64 draws, then cast)."""
    gen = torch.Generator().manual_seed(seed)
    lead = () if batch is None else (batch,)
    pos = torch.randn(lead + (n, d), generator=gen, dtype=torch.float64)
    vel = 0.3 * torch.randn(lead + (n, d), generator=gen, dtype=torch.float64)
    mass = 0.5 + torch.rand(lead + (n,), generator=gen, dtype=torch.float64)
    return pos.to(dtype), vel.to(dtype), mass.to(dtype)


def cuda(*tensors):
    return tuple(t.to(CUDA) for t in tensors)


def assert_rel(actual, expected, rtol):
    """max |actual - expected| <= rtol * max |expected| (normwise relative), on the CPU."""
    actual, expected = actual.detach().cpu(), expected.detach().cpu().to(actual.dtype)
    assert actual.shape == expected.shape
    scale = expected.abs().max().item() if expected.numel() else 0.0
    err = (actual - expected).abs().max().item() if expected.numel() else 0.0
    assert err <= rtol * max(scale, 1e-300), f"max abs error {err:.3e} vs scale {scale:.3e}"


# ----------------------------------------------------------------- forward agreement


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("d", (2, 3))
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("op", ("accelerations", "potential_energy"))
def test_forward_ops_match_cpu_and_reference(op, n, d, batch):
    pos, _, mass = make_system(n, d, batch)
    got = getattr(aits, op)(*cuda(pos, mass), SOFTENING, G)
    assert got.device.type == CUDA
    assert_rel(got, getattr(aits, op)(pos, mass, SOFTENING, G), 1e-12)
    assert_rel(got, getattr(reference, op)(pos, mass, SOFTENING, G), 1e-12)


def test_potential_energy_is_deterministic():
    pos, _, mass = make_system(3000, 3, 2, dtype=torch.float32)
    pos, mass = cuda(pos, mass)
    first = aits.potential_energy(pos, mass, SOFTENING, G)
    for _ in range(3):
        assert torch.equal(aits.potential_energy(pos, mass, SOFTENING, G), first)


@pytest.mark.parametrize("given_acc", (False, True))
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("n", (2, 33, 1000))
def test_leapfrog_step_matches_cpu_and_reference(n, batch, given_acc):
    pos, vel, mass = make_system(n, 3, batch)
    dt = torch.full(() if batch is None else (batch,), 1e-3, dtype=torch.float64)
    acc = aits.accelerations(pos, mass, SOFTENING, G) if given_acc else None
    acc_cuda = acc.to(CUDA) if given_acc else None
    got = aits.leapfrog_step(*cuda(pos, vel, mass, dt), SOFTENING, G, acc=acc_cuda)
    cpu = aits.leapfrog_step(pos, vel, mass, dt, SOFTENING, G, acc=acc)
    ref = reference.leapfrog_step(pos, vel, mass, dt, SOFTENING, G, acc=acc)
    for g, c, r in zip(got, cpu, ref):
        assert_rel(g, c, 1e-12)
        assert_rel(g, r, 1e-12)


@pytest.mark.parametrize("d", (2, 3))
def test_float32_close_to_float64(d):
    pos, _, mass = make_system(1000, d, 2)
    acc32 = aits.accelerations(*cuda(pos.float(), mass.float()), SOFTENING, G)
    assert acc32.dtype == torch.float32
    assert_rel(acc32, aits.accelerations(pos, mass, SOFTENING, G), 1e-4)
    u32 = aits.potential_energy(*cuda(pos.float(), mass.float()), SOFTENING, G)
    assert_rel(u32, aits.potential_energy(pos, mass, SOFTENING, G), 1e-5)


def test_more_systems_than_one_launch_holds():
    # grid.y is capped at 65535 systems per launch; the launchers split the batch.
    pos, _, mass = make_system(3, 2, 70_000)
    assert_rel(aits.accelerations(*cuda(pos, mass)), aits.accelerations(pos, mass), 1e-12)
    assert_rel(aits.potential_energy(*cuda(pos, mass)), aits.potential_energy(pos, mass), 1e-12)


def test_non_contiguous_inputs():
    pos, _, mass = make_system(40, 3, 2)
    pos_t = pos.transpose(0, 1).contiguous().to(CUDA).transpose(0, 1)
    assert not pos_t.is_contiguous()
    assert_rel(aits.accelerations(pos_t, mass.to(CUDA)), aits.accelerations(pos, mass), 1e-12)


def test_empty_systems():
    for shape in ((0, 3), (2, 0, 3), (0, 5, 2)):
        pos = torch.zeros(shape, dtype=torch.float64, device=CUDA)
        mass = torch.ones(shape[:-1], dtype=torch.float64, device=CUDA)
        assert aits.accelerations(pos, mass).shape == shape
        assert aits.potential_energy(pos, mass).shape == shape[:-2]


def test_coincident_bodies_without_softening_are_not_finite():
    # The self pair is skipped by index, not by distance: two distinct bodies at
    # one point with softening 0 stay visible, as on the CPU.
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    mass = torch.ones(3, dtype=torch.float64)
    got = aits.accelerations(*cuda(pos, mass))
    cpu = aits.accelerations(pos, mass)
    assert torch.equal(torch.isfinite(got).cpu(), torch.isfinite(cpu))
    assert not torch.isfinite(got[:2]).any()
    assert torch.isfinite(got[2]).all()
    assert aits.potential_energy(*cuda(pos, mass)).item() == float("-inf")


# ----------------------------------------------------------------- pair statistics


@pytest.mark.parametrize("softening", (0.0, SOFTENING))
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("d", (2, 3))
@pytest.mark.parametrize("n", SIZES)
def test_pair_statistics_match_cpu(n, d, batch, softening):
    pos, _, mass = make_system(n, d, batch, seed=n + 1)
    for freefall in (True, False):
        got = aits.ops.pair_statistics(*cuda(pos, mass), softening, G, freefall)
        want = aits.ops.pair_statistics(pos, mass, softening, G, freefall)
        assert got.device.type == CUDA and got.shape == want.shape
        assert torch.equal(torch.isnan(got).cpu(), torch.isnan(want))  # free-fall NaN unless asked
        torch.testing.assert_close(got.cpu(), want, rtol=1e-12, atol=0, equal_nan=True)
        for dtype in (torch.float32,):
            got32 = aits.ops.pair_statistics(*cuda(pos.to(dtype), mass.to(dtype)), softening, G,
                                             freefall)
            assert got32.dtype == dtype
            torch.testing.assert_close(got32.cpu().double(), want, rtol=2e-5, atol=0,
                                       equal_nan=True)


def test_pair_statistics_edge_cases_match_cpu():
    """Coincident bodies (min 0, free-fall 0, a finite mean), a massless pair, one body,
    a pair too close for float32's s^2 and a batch past one launch's 65535 systems."""
    coincident = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]],
                              dtype=torch.float64)
    cases = [
        (coincident, torch.ones(3, dtype=torch.float64)),
        (coincident, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)),
        (torch.tensor([[0.5, 0.0]], dtype=torch.float64), torch.ones(1, dtype=torch.float64)),
        (torch.tensor([[0.0, 0.0], [1e-30, 0.0]], dtype=torch.float64),
         torch.ones(2, dtype=torch.float64)),
    ]
    for pos, mass in cases:
        for dtype in (torch.float32, torch.float64):
            x, m = pos.to(dtype), mass.to(dtype)
            got = aits.ops.pair_statistics(*cuda(x, m), 0.0, G, True)
            want = aits.ops.pair_statistics(x, m, 0.0, G, True)
            torch.testing.assert_close(got.cpu(), want, rtol=1e-6, atol=0, equal_nan=True)
    got = aits.ops.pair_statistics(*cuda(coincident, torch.ones(3, dtype=torch.float64)))
    assert got[0].item() == 0.0 and got[3].item() == 0.0 and torch.isfinite(got[1])
    pos, _, mass = make_system(3, 2, 70_000)
    assert_rel(aits.ops.pair_statistics(*cuda(pos, mass)), aits.ops.pair_statistics(pos, mass),
               1e-12)


def test_pair_statistics_are_deterministic():
    pos, _, mass = cuda(*make_system(3000, 3, 2, dtype=torch.float32))
    first = aits.ops.pair_statistics(pos, mass, SOFTENING, G)
    for _ in range(3):
        assert torch.equal(aits.ops.pair_statistics(pos, mass, SOFTENING, G), first)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("n", (2, 33, 1000))
def test_leapfrog_step_with_statistics_matches_cpu(n, batch):
    pos, vel, mass = make_system(n, 3, batch)
    dt = torch.full(() if batch is None else (batch,), 1e-3, dtype=torch.float64)
    got = aits.ops.leapfrog_step_with_statistics(*cuda(pos, vel, mass, dt), SOFTENING, G)
    cpu = aits.ops.leapfrog_step_with_statistics(pos, vel, mass, dt, SOFTENING, G)
    plain = aits.leapfrog_step(*cuda(pos, vel, mass, dt), SOFTENING, G)
    for g, c in zip(got, cpu):
        assert_rel(g, c, 1e-12)
    for g, p in zip(got[:3], plain):  # the fused pass's accelerations are the force kernel's
        assert_rel(g, p, 1e-14)
    assert_rel(got[3], aits.ops.pair_statistics(got[0], mass.to(CUDA), SOFTENING, G), 1e-14)


def test_pair_statistics_match_the_torch_path():
    """The kernel against aits.features.pairwise_stats_chunked, the torch path that CUDA
    states take in the features until these tests have passed on a GPU."""
    from aits.features import pairwise_stats_chunked

    pos, _, mass = cuda(*make_system(300, 3, 2))
    got = aits.ops.pair_statistics(pos, mass, SOFTENING, G, True)
    chunked = pairwise_stats_chunked(pos, mass, SOFTENING, G, freefall=True)
    for k, name in enumerate(("min_dist", "mean_dist", "max_dist", "min_freefall")):
        assert_rel(got[..., k], getattr(chunked, name), 1e-12)


# ----------------------------------------------------------------- Aarseth derivatives


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("d", (2, 3))
@pytest.mark.parametrize("n", SIZES)
def test_aarseth_derivatives_match_cpu_and_reference(n, d, batch):
    pos, vel, mass = make_system(n, d, batch, seed=n)
    got = aits.ops.aarseth_derivatives(*cuda(pos, vel, mass), SOFTENING, G)
    on_cpu = aits.ops.aarseth_derivatives(pos, vel, mass, SOFTENING, G)
    want = reference.aarseth_derivatives(pos, vel, mass, SOFTENING, G) if n <= 257 else on_cpu
    for g, c, w in zip(got, on_cpu, want):
        assert g.device.type == CUDA
        assert_rel(g, c, 1e-12)
        assert_rel(g, w, 1e-12)


def test_aarseth_derivatives_float32_and_coincident_bodies():
    pos, vel, mass = make_system(300, 3, 2)
    for g, w in zip(aits.ops.aarseth_derivatives(*cuda(pos.float(), vel.float(), mass.float()),
                                                 SOFTENING, G),
                    aits.ops.aarseth_derivatives(pos, vel, mass, SOFTENING, G)):
        assert g.dtype == torch.float32
        assert_rel(g, w, 1e-4)
    pos[0, 7] = pos[0, 3]
    out = aits.ops.aarseth_derivatives(*cuda(pos, vel, mass))  # no softening: NaN, as on the CPU
    assert all(not torch.isfinite(t[0, 7]).all() for t in out)
    out = aits.ops.aarseth_derivatives(*cuda(pos, vel, mass), 0.1)
    assert all(torch.isfinite(t).all() for t in out)


def test_aarseth_derivatives_are_deterministic():
    pos, vel, mass = cuda(*make_system(1000, 3, 2))
    first = aits.ops.aarseth_derivatives(pos, vel, mass, SOFTENING, G)
    for _ in range(2):
        again = aits.ops.aarseth_derivatives(pos, vel, mass, SOFTENING, G)
        assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_aarseth_policy_on_cuda_matches_cpu():
    s = plummer(200, seed=2, softening=SOFTENING, dtype=torch.float64)
    dt = AarsethPolicy(0.01)(s.to(CUDA))
    assert dt.device.type == CUDA
    torch.testing.assert_close(dt.cpu(), AarsethPolicy(0.01)(s), rtol=1e-12, atol=0)


# ----------------------------------------------------------------- gradients


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("n", (1, 2, 33, 1000))
def test_gradients_match_cpu(n, batch):
    pos, vel, mass = make_system(n, 3, batch)
    dt = torch.tensor(1e-3, dtype=torch.float64)
    upstream = torch.randn(
        pos.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )

    def grads(device):
        x, v, m, h = (t.to(device).requires_grad_() for t in (pos, vel, mass, dt))
        w = upstream.to(device)
        # One loss through every op: accelerations, potential energy, leapfrog step.
        loss = (aits.accelerations(x, m, SOFTENING, G) * w).sum()
        loss = loss + aits.potential_energy(x, m, SOFTENING, G).sum()
        x1, v1, a1 = aits.leapfrog_step(x, v, m, h, SOFTENING, G)
        loss = loss + (x1 * w).sum() + (v1 * w).sum() + (a1 * w).sum()
        return torch.autograd.grad(loss, (x, v, m, h))

    for g_cuda, g_cpu in zip(grads(CUDA), grads("cpu")):
        assert_rel(g_cuda, g_cpu, 1e-12)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("d", (2, 3))
def test_gradcheck(d, batch):
    pos, vel, mass = cuda(*make_system(7, d, batch, seed=3))
    dt = torch.full(() if batch is None else (batch,), 0.05, dtype=torch.float64, device=CUDA)
    acc = aits.accelerations(pos, mass, SOFTENING, G)
    x, v, m, h, a = (t.clone().requires_grad_() for t in (pos, vel, mass, dt, acc))
    check = torch.autograd.gradcheck
    assert check(lambda x, m: aits.accelerations(x, m, SOFTENING, G), (x, m))
    assert check(lambda x, m: aits.potential_energy(x, m, SOFTENING, G), (x, m))
    assert check(lambda x, v, m, h: aits.leapfrog_step(x, v, m, h, SOFTENING, G), (x, v, m, h))
    assert check(
        lambda x, v, m, h, a: aits.leapfrog_step(x, v, m, h, SOFTENING, G, acc=a), (x, v, m, h, a)
    )


# ----------------------------------------------------------------- op registration


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_opcheck(dtype, batch):
    pos, vel, mass = cuda(*make_system(33, 3, batch, dtype=dtype))
    dt = torch.full(() if batch is None else (batch,), 1e-2, dtype=dtype, device=CUDA)
    ops = torch.ops.aits
    x, v, m, h = (t.clone().requires_grad_() for t in (pos, vel, mass, dt))
    torch.library.opcheck(ops.accelerations.default, (x, m, SOFTENING, G))
    torch.library.opcheck(ops.potential_energy.default, (x, m, SOFTENING, G))
    torch.library.opcheck(ops.leapfrog_step.default, (x, v, m, h, SOFTENING, G, None))
    acc = aits.accelerations(pos, mass, SOFTENING, G)
    torch.library.opcheck(ops.leapfrog_step.default, (x, v, m, h, SOFTENING, G, acc))
    torch.library.opcheck(ops.aarseth_derivatives.default, (pos, vel, mass, SOFTENING, G))
    torch.library.opcheck(ops.pair_statistics.default, (pos, mass, SOFTENING, G, True))
    torch.library.opcheck(ops.leapfrog_step.default, (pos, vel, mass, dt, SOFTENING, G, None, True))


# ----------------------------------------------------------------- device errors


def test_mixed_devices_are_refused():
    pos, vel, mass = make_system(5, 3, None)
    dt = torch.tensor(1e-2, dtype=torch.float64)
    with pytest.raises(
        ValueError, match=r"mass is on cpu but pos is on cuda:0; move it with \.to\(pos\.device\)"
    ):
        aits.accelerations(pos.to(CUDA), mass)
    with pytest.raises(ValueError, match=r"mass is on cuda:0 but pos is on cpu"):
        aits.potential_energy(pos, mass.to(CUDA))
    with pytest.raises(ValueError, match=r"dt is on cpu but pos is on cuda:0"):
        aits.leapfrog_step(*cuda(pos, vel, mass), dt)
    with pytest.raises(ValueError, match=r"vel is on cpu but pos is on cuda:0"):
        aits.leapfrog_step(pos.to(CUDA), vel, mass.to(CUDA), dt.to(CUDA))
    with pytest.raises(ValueError, match=r"^aits\.aarseth_derivatives: vel is on cpu but pos is on cuda:0"):
        aits.ops.aarseth_derivatives(pos.to(CUDA), vel, mass.to(CUDA))


def test_native_loop_is_cpu_only_and_simulate_falls_back():
    """aits.ops.kdk_run has no CUDA kernel: a clear error; simulate runs CUDA batches
    in its Python loop, with the CPU run's results."""
    from aits.policies import FixedPolicy
    from aits.simulation import simulate
    from aits.state import SystemState

    pos, vel, mass = make_system(3, 2, 4)
    acc = aits.accelerations(pos, mass)
    t0 = torch.zeros(4, dtype=torch.float64)
    t1 = torch.full((4,), 0.5, dtype=torch.float64)
    args = [t.to(CUDA) for t in (pos, vel, mass, acc, t0, t1)]
    with pytest.raises(RuntimeError, match="CPU kernel only"):
        aits.ops.kdk_run(*args, 100, dt=0.01)
    cpu = simulate(SystemState(pos, vel, mass), FixedPolicy(0.01), t_end=0.5, observers=[])
    gpu = simulate(SystemState(pos, vel, mass).to(device=CUDA), FixedPolicy(0.01), t_end=0.5,
                   observers=[])
    assert [r.steps for r in gpu.systems] == [r.steps for r in cpu.systems]
    torch.testing.assert_close(gpu.state.pos.cpu(), cpu.state.pos, rtol=1e-10, atol=1e-12)
