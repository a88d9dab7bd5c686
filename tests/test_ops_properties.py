"""Property tests over random shapes and values (hypothesis)."""

from __future__ import annotations

import torch
from helpers import rel_err
from hypothesis import given, settings
from hypothesis import strategies as st

import aits
from aits import reference as ref

systems = st.fixed_dictionaries(
    {
        "n": st.integers(1, 24),
        "dim": st.sampled_from([2, 3]),
        "batch": st.one_of(st.none(), st.integers(1, 4)),
        "softening": st.sampled_from([0.0, 1e-3, 0.5]),
        "G": st.floats(0.1, 10.0),
        "seed": st.integers(0, 2**31 - 1),
        "scale": st.floats(1e-3, 1e3),
    }
)


def build(p):
    gen = torch.Generator().manual_seed(p["seed"])
    lead = () if p["batch"] is None else (p["batch"],)
    pos = torch.randn(lead + (p["n"], p["dim"]), generator=gen, dtype=torch.float64) * p["scale"]
    vel = torch.randn(lead + (p["n"], p["dim"]), generator=gen, dtype=torch.float64)
    mass = torch.rand(lead + (p["n"],), generator=gen, dtype=torch.float64)
    return pos, vel, mass


@settings(max_examples=60, deadline=None)
@given(systems)
def test_native_matches_reference(p):
    pos, vel, mass = build(p)
    args = (p["softening"], p["G"])
    assert rel_err(aits.accelerations(pos, mass, *args), ref.accelerations(pos, mass, *args)) < 1e-12
    assert rel_err(aits.potential_energy(pos, mass, *args), ref.potential_energy(pos, mass, *args)) < 1e-12


@settings(max_examples=40, deadline=None)
@given(systems)
def test_momentum_is_conserved_and_permutation_commutes(p):
    pos, vel, mass = build(p)
    acc = aits.accelerations(pos, mass, p["softening"], p["G"])
    # Newton's third law: sum_i m_i a_i = 0 up to round-off
    force = (mass.unsqueeze(-1) * acc).sum(-2)
    scale = (mass.unsqueeze(-1) * acc).abs().sum(-2).clamp_min(1e-300)
    assert torch.all(force.abs() <= 1e-12 * scale)
    # relabelling the bodies relabels the accelerations and leaves U unchanged
    perm = torch.randperm(p["n"], generator=torch.Generator().manual_seed(p["seed"]))
    acc_p = aits.accelerations(pos[..., perm, :], mass[..., perm], p["softening"], p["G"])
    assert rel_err(acc_p, acc[..., perm, :]) < 1e-12
    u = aits.potential_energy(pos, mass, p["softening"], p["G"])
    u_p = aits.potential_energy(pos[..., perm, :], mass[..., perm], p["softening"], p["G"])
    assert rel_err(u_p, u) < 1e-12


@settings(max_examples=40, deadline=None)
@given(systems, st.floats(1e-4, 1e-1))
def test_step_is_time_reversible(p, dt):
    """Kick-drift-kick is symmetric: stepping back with -v returns the start state."""
    pos, vel, mass = build(p)
    h = torch.tensor(dt, dtype=torch.float64)
    pos1, vel1, acc1 = aits.leapfrog_step(pos, vel, mass, h, p["softening"], p["G"])
    pos0, vel0, _ = aits.leapfrog_step(pos1, -vel1, mass, h, p["softening"], p["G"], acc1)
    assert rel_err(pos0, pos) < 1e-8 or (pos0 - pos).abs().max() < 1e-10
    assert rel_err(-vel0, vel) < 1e-8 or (vel0 + vel).abs().max() < 1e-10


@settings(max_examples=40, deadline=None)
@given(systems, st.floats(1e-4, 1e-1))
def test_negative_dt_steps_backward(p, dt):
    """A step of -dt is the time-reversed step: the same as a step of +dt with the
    velocities reversed (the ops take a signed, non-zero dt). The test above shows
    that such a step undoes a forward one."""
    pos, vel, mass = build(p)
    h = torch.tensor(dt, dtype=torch.float64)
    acc = aits.accelerations(pos, mass, p["softening"], p["G"])
    back_p, back_v, back_a = aits.leapfrog_step(pos, vel, mass, -h, p["softening"], p["G"], acc)
    flip_p, flip_v, flip_a = aits.leapfrog_step(pos, -vel, mass, h, p["softening"], p["G"], acc)
    torch.testing.assert_close(back_p, flip_p, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(back_v, -flip_v, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(back_a, flip_a, rtol=1e-14, atol=1e-14)
