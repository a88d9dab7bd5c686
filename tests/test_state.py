"""SystemState: energies, momenta, stepping, batching and detach semantics."""

import math

import pytest
import torch

from aits import reference
from aits.ics import kepler_orbit, kepler_period, random_system
from aits.state import SystemState, rollout, split, stack, step

f64 = torch.float64


def two_body(dim=2):
    pos = torch.zeros(2, dim, dtype=f64)
    pos[1, 0] = 1.0
    vel = torch.zeros(2, dim, dtype=f64)
    vel[0, 1], vel[1, 1] = 1.0, -0.5
    return SystemState(pos, vel, torch.tensor([1.0, 2.0], dtype=f64))


@pytest.mark.parametrize("dim", [2, 3])
def test_hand_computed_quantities(dim):
    s = two_body(dim)
    assert s.kinetic_energy().item() == pytest.approx(0.75)
    assert s.potential_energy().item() == pytest.approx(-2.0)
    assert s.total_energy().item() == pytest.approx(-1.25)
    torch.testing.assert_close(s.momentum(), torch.zeros(dim, dtype=f64))
    com = torch.zeros(dim, dtype=f64)
    com[0] = 2 / 3
    torch.testing.assert_close(s.center_of_mass(), com)
    L = s.angular_momentum()
    if dim == 2:
        assert L.shape == () and L.item() == pytest.approx(-1.0)
    else:
        torch.testing.assert_close(L, torch.tensor([0.0, 0.0, -1.0], dtype=f64))
    # G and softening enter the potential as documented
    s2 = SystemState(s.pos, s.vel, s.mass, G=3.0, softening=1.0)
    assert s2.potential_energy().item() == pytest.approx(-3.0 * 2.0 / math.sqrt(2.0))


@pytest.mark.parametrize("dim", [2, 3])
def test_quantities_match_independent_computation(dim):
    s = random_system(7, dim, batch=3, seed=1)
    s = s.replace(pos=s.pos + 0.3)  # off the COM frame so P and L are generic
    torch.testing.assert_close(s.kinetic_energy(), reference.kinetic_energy(s.vel, s.mass))
    torch.testing.assert_close(s.potential_energy(), reference.potential_energy(s.pos, s.mass))
    for b, one in enumerate(split(s)):
        P = sum(one.mass[i] * one.vel[i] for i in range(7))
        torch.testing.assert_close(s.momentum()[b], P)
        x3 = torch.nn.functional.pad(one.pos, (0, 3 - dim))
        v3 = torch.nn.functional.pad(one.vel, (0, 3 - dim))
        L = sum(one.mass[i] * torch.linalg.cross(x3[i], v3[i]) for i in range(7))
        torch.testing.assert_close(s.angular_momentum()[b], L[2] if dim == 2 else L)
        torch.testing.assert_close(
            s.center_of_mass()[b], (one.mass[:, None] * one.pos).sum(0) / one.mass.sum()
        )
    c = s.centered()
    torch.testing.assert_close(c.center_of_mass(), torch.zeros(3, dim, dtype=f64))
    torch.testing.assert_close(c.momentum(), torch.zeros(3, dim, dtype=f64))


def test_step_matches_reference_and_reuses_cached_acceleration():
    s = random_system(6, 3, batch=2, seed=2, softening=0.1)
    dt = torch.tensor([0.01, 0.02], dtype=f64)
    s1 = step(s, dt)
    p, v, a = reference.leapfrog_step(s.pos, s.vel, s.mass, dt, 0.1)
    torch.testing.assert_close(s1.pos, p)
    torch.testing.assert_close(s1.vel, v)
    torch.testing.assert_close(s1.acc, a)
    torch.testing.assert_close(s1.time, dt)
    # the cached acc is what the step uses: a fake cache changes the result accordingly
    fake = torch.ones_like(s.pos)
    s_fake = step(s.replace(acc=fake), dt)
    p, v, _ = reference.leapfrog_step(s.pos, s.vel, s.mass, dt, 0.1, acc=fake)
    torch.testing.assert_close(s_fake.pos, p)
    torch.testing.assert_close(s_fake.vel, v)


def test_replace_drops_stale_cache():
    s = step(random_system(4, 2, seed=0), 0.01)
    assert s.replace(vel=s.vel * 2).acc is not None
    assert s.replace(pos=s.pos * 2).acc is None
    assert s.replace(mass=s.mass * 2).acc is None


def test_step_is_second_order():
    s = kepler_orbit(0.5, 1.0)
    T = kepler_period(1.0)
    fine = rollout(s, T / 4 / 512, 512).pos
    errs = [(rollout(s, T / 4 / n, n).pos - fine).norm().item() for n in (32, 64)]
    assert 3.6 < errs[0] / errs[1] < 4.4


def test_rollout_returns_after_one_period_and_conserves_energy():
    s = kepler_orbit(0.5, 1.0, at="pericentre")
    n = 2000
    end = rollout(s, kepler_period(1.0) / n, n)
    assert (end.pos - s.pos).norm().item() < 1e-2
    assert abs((end.total_energy() - s.total_energy()).item()) < 1e-4
    assert end.time.item() == pytest.approx(kepler_period(1.0))
    torch.testing.assert_close(end.angular_momentum(), s.angular_momentum())


def test_stack_and_split_roundtrip():
    a, b = random_system(5, 3, seed=1), random_system(5, 3, seed=2)
    batch = stack([a, step(b, 0.1)])
    assert batch.pos.shape == (2, 5, 3) and batch.acc is None and batch.is_batched
    torch.testing.assert_close(batch.time, torch.tensor([0.0, 0.1], dtype=f64))
    back = split(batch)
    assert len(back) == 2 and not back[0].is_batched
    torch.testing.assert_close(back[0].pos, a.pos)
    big = stack([batch, a])
    assert big.batch_size == 3
    torch.testing.assert_close(big.total_energy()[2], a.total_energy())
    assert stack([step(a, 0.1), step(b, 0.1)]).acc is not None
    assert split(a) == [a]


def test_stack_refuses_mismatches():
    a = random_system(5, 3, seed=1)
    with pytest.raises(ValueError, match="n_bodies"):
        stack([a, random_system(4, 3)])
    with pytest.raises(ValueError, match="softening"):
        stack([a, a.replace(softening=0.1)])
    with pytest.raises(ValueError, match="at least one"):
        stack([])
    with pytest.raises(TypeError, match="not a SystemState"):
        stack([a, "x"])


def test_detach_and_clone_cut_the_graph():
    s = kepler_orbit(0.5)
    dt = torch.tensor(0.01, dtype=f64, requires_grad=True)
    s1 = step(s, dt)
    assert s1.requires_grad and s1.pos.grad_fn is not None
    d = s1.detach()
    assert not d.requires_grad and all(
        t.grad_fn is None for t in (d.pos, d.vel, d.acc, d.time, d.mass)
    )
    assert d.pos.data_ptr() == s1.pos.data_ptr()
    c = s1.clone()
    assert not c.requires_grad and c.pos.data_ptr() != s1.pos.data_ptr()
    torch.testing.assert_close(c.pos, s1.pos.detach())
    # gradient reaches dt through the energy
    s1.total_energy().backward()
    assert dt.grad is not None and torch.isfinite(dt.grad)


def test_time_is_float64_and_to_casts():
    s = random_system(3, 2, dtype=torch.float32)
    s1 = step(s, 0.1)
    assert s1.time.dtype == f64 and s1.pos.dtype == torch.float32
    s2 = s1.to(dtype=f64)
    assert s2.pos.dtype == f64 and s2.acc.dtype == f64 and s2.time.dtype == f64


def test_invalid_state_and_dt_raise():
    p, m = torch.zeros(3, 2, dtype=f64), torch.ones(3, dtype=f64)
    with pytest.raises(ValueError, match="pos must have shape"):
        SystemState(torch.zeros(3, 4, dtype=f64), torch.zeros(3, 4, dtype=f64), m)
    with pytest.raises(ValueError, match="vel has shape"):
        SystemState(p, torch.zeros(2, 2, dtype=f64), m)
    with pytest.raises(ValueError, match="mass has shape"):
        SystemState(p, p, torch.ones(4, dtype=f64))
    with pytest.raises(TypeError, match="mass is torch.float32"):
        SystemState(p, p, m.float())
    with pytest.raises(TypeError, match="float32 or float64"):
        SystemState(p.half(), p.half(), m.half())
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        SystemState([[0.0, 0.0]], p, m)
    with pytest.raises(ValueError, match="softening must be finite and >= 0"):
        SystemState(p, p, m, softening=-1.0)
    with pytest.raises(ValueError, match="G must be finite and > 0"):
        SystemState(p, p, m, G=0.0)
    with pytest.raises(ValueError, match="time has shape"):
        SystemState(p, p, m, time=torch.zeros(2))
    s = random_system(3, 2, batch=2)
    with pytest.raises(ValueError, match="dt must be a number"):
        step(s, torch.ones(3, dtype=f64))
    with pytest.raises(ValueError, match="dt contains zeros"):
        step(s, 0.0)
    with pytest.raises(ValueError, match="n_steps"):
        rollout(s, 0.1, -1)


def test_step_caches_the_pair_statistics_of_the_end_state():
    from aits import ops
    from aits.features import analytic_features, state_pair_stats
    from aits.ics import random_system

    s = random_system(12, 3, batch=2, seed=3)
    nxt = step(s, 1e-3)
    want = ops.pair_statistics(nxt.pos, nxt.mass, 0.0, nxt.G)
    assert nxt.pair_stats is not None
    torch.testing.assert_close(nxt.pair_stats, want, rtol=1e-13, atol=0)
    # the features use the cache: same values as recomputing from scratch
    fresh = nxt.replace(pos=nxt.pos.clone())
    assert fresh.pair_stats is None
    torch.testing.assert_close(analytic_features(nxt), analytic_features(fresh), rtol=1e-13, atol=0)
    assert state_pair_stats(nxt, freefall=True).min_freefall is not None
    # moving the bodies, or changing the masses, invalidates it; velocities do not
    assert nxt.replace(vel=nxt.vel * 2).pair_stats is not None
    assert nxt.replace(mass=nxt.mass * 2).pair_stats is None
    # split, stack, detach and clone carry it along
    parts = split(nxt)
    assert all(p.pair_stats is not None for p in parts)
    assert torch.equal(stack(parts).pair_stats, nxt.pair_stats)
    assert nxt.detach().pair_stats is not None and nxt.clone().pair_stats is not None
    # with softening too (distances are then the softened ones)
    soft = step(s.replace(softening=0.1), 1e-3)
    want = ops.pair_statistics(soft.pos, soft.mass, 0.1, soft.G)
    torch.testing.assert_close(soft.pair_stats, want, rtol=1e-13, atol=0)
