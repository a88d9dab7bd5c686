"""The leapfrog op as an integrator: energy conservation and convergence order
on a Kepler orbit, built here from first principles."""

from __future__ import annotations

import math

import pytest
import torch

import aits
from aits import reference as ref

F64 = torch.float64


def kepler(e: float, dim: int = 2, G: float = 1.0):
    """Equal masses (1/2 each), semi-major axis 1, at apocentre. Returns pos, vel, mass, period."""
    m = torch.tensor([0.5, 0.5], dtype=F64)
    total = 1.0
    r_apo = 1.0 + e
    v_apo = math.sqrt(G * total * (1 - e) / r_apo)
    pos = torch.zeros(2, dim, dtype=F64)
    vel = torch.zeros(2, dim, dtype=F64)
    pos[0, 0], pos[1, 0] = -r_apo / 2, r_apo / 2
    vel[0, 1], vel[1, 1] = -v_apo / 2, v_apo / 2
    return pos, vel, m, 2 * math.pi * math.sqrt(1.0 / (G * total))


def energy(pos, vel, mass):
    return ref.kinetic_energy(vel, mass) + aits.potential_energy(pos, mass)


def rollout(pos, vel, mass, dt, steps):
    """Max relative energy error over `steps` steps, and the final state."""
    e0 = energy(pos, vel, mass)
    h = torch.tensor(dt, dtype=F64)
    acc = aits.accelerations(pos, mass)
    worst = 0.0
    for _ in range(steps):
        pos, vel, acc = aits.leapfrog_step(pos, vel, mass, h, acc=acc)
        worst = max(worst, abs((energy(pos, vel, mass) - e0) / e0).item())
    return worst, pos, vel


@pytest.mark.parametrize("dim", [2, 3])
def test_energy_error_scales_as_dt_squared(dim):
    pos, vel, mass, period = kepler(0.5, dim)
    errors = []
    for steps in (400, 800, 1600):
        worst, _, _ = rollout(pos, vel, mass, period / steps, steps)
        errors.append(worst)
    assert errors[0] < 1e-3
    for coarse, fine in zip(errors, errors[1:]):
        assert 3.5 < coarse / fine < 4.5, errors


def test_positions_converge_at_second_order():
    pos, vel, mass, period = kepler(0.3)
    t_end = period / 3
    finals = []
    for steps in (100, 200, 400, 3200):
        _, p, _ = rollout(pos, vel, mass, t_end / steps, steps)
        finals.append(p)
    truth = finals[-1]
    err = [(p - truth).norm().item() for p in finals[:-1]]
    order1 = math.log2(err[0] / err[1])
    order2 = math.log2(err[1] / err[2])
    assert 1.8 < order1 < 2.2 and 1.8 < order2 < 2.2, (order1, order2)


def test_orbit_closes_after_one_period():
    pos, vel, mass, period = kepler(0.5)
    _, p, v = rollout(pos, vel, mass, period / 2000, 2000)
    assert (p - pos).norm().item() < 1e-2
    # momentum is conserved to round-off: the pair forces are equal and opposite
    assert (mass[:, None] * v).sum(0).abs().max().item() < 1e-14
