"""The batched simulation core and the integrator seam (aits.simulation, aits.integrators)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import aits
from aits.guards import GuardRails
from aits.ics import figure_eight, kepler_orbit
from aits.integrators import INTEGRATORS, SymmetricKDK, TimeTransformedLeapfrog, make_integrator
from aits.policies import AarsethPolicy, FixedPolicy, FreeFallPolicy
from aits.simulation import EnergyRecord, conservation_scales, simulate
from aits.state import SystemState, stack

F64 = torch.float64
PERIOD = 2 * math.pi  # a = 1, M = 1


class _Scripted:
    """A policy whose dt per system is ``values[b]`` (``inf`` to lose a system)."""

    name, history_len = "scripted", 0

    def __init__(self, values):
        self.values = values

    def __call__(self, state, history=None):
        return torch.tensor(self.values, dtype=state.dtype)[:state.batch_size] \
            .reshape(state.batch_shape) if state.is_batched else \
            torch.tensor(self.values[0], dtype=state.dtype)


def test_a_batch_equals_its_systems_run_alone():
    """Each system keeps its own dt, end time and counts; the batch changes nothing."""
    states = [kepler_orbit(0.5), kepler_orbit(0.9), kepler_orbit(0.3, a=2.0)]
    t_end = [PERIOD, 0.5 * PERIOD, 3.0]
    policy = AarsethPolicy(0.02)
    batch = simulate(stack(states), policy, t_end=t_end, integrator="symmetric")
    for s, t, run in zip(states, t_end, batch.systems):
        alone = simulate(s, policy, t_end=t, integrator="symmetric")
        assert run.steps == alone.steps and run.force_evaluations == alone.force_evaluations
        assert run.stop_time == pytest.approx(t, rel=1e-12) and run.stop_reason == "t_end"
        np.testing.assert_allclose(run.dt, alone.dt, rtol=1e-12)
        assert run.energy_error_max == pytest.approx(alone.energy_error_max, rel=1e-9)
    assert batch.state.is_batched and batch.totals()["systems"] == 3
    with pytest.raises(AttributeError, match="batch of 3 systems"):
        batch.t  # noqa: B018


def test_a_lost_system_stops_while_the_others_go_on(caplog):
    s = stack([kepler_orbit(0.5), kepler_orbit(0.5)])
    r = simulate(s, _Scripted([0.01, math.inf]), steps=20)
    ok, lost = r.systems
    assert ok.steps == 20 and ok.stop_reason == "steps"
    assert lost.steps == 0 and lost.stop_reason == "bad-dt" and "system 1" in caplog.text
    torch.testing.assert_close(r.state.pos[1], s.pos[1])  # the last finite state is kept


def test_steps_land_exactly_on_each_t_end():
    s = stack([kepler_orbit(0.5), kepler_orbit(0.5)])
    for name in INTEGRATORS:
        r = simulate(s, FixedPolicy(0.07), t_end=torch.tensor([1.0, 0.33], dtype=F64),
                     integrator=name)
        assert [x.stop_time for x in r.systems] == pytest.approx([1.0, 0.33], rel=1e-14)


@pytest.mark.parametrize("name", ["symmetric", "ttl"])
def test_forward_then_backward_returns_to_the_start(name):
    """One period of e = 0.5 forward, then back with the velocities reversed."""
    s = kepler_orbit(0.5, dtype=F64)
    policy = AarsethPolicy(0.01)
    integ = (lambda: TimeTransformedLeapfrog(ds=0.01)) if name == "ttl" else (lambda: name)
    n = 400 if name == "symmetric" else 630
    fwd = simulate(s, policy, integrator=integ(), steps=n)
    assert fwd.t[-1] > 0.9 * PERIOD
    back_start = fwd.state.replace(vel=-fwd.state.vel)
    first = float(fwd.dt[-1]) if name == "symmetric" else None
    back = simulate(back_start, policy, integrator=integ(), steps=n, first_dt=first)
    assert (back.state.pos - s.pos).abs().max() < 1e-10
    assert (back.state.vel + s.vel).abs().max() < 1e-10


@pytest.mark.parametrize("name", ["kdk", "symmetric"])
def test_each_integrator_is_second_order(name):
    """Halving the step divides the final position error by about 4."""
    s = kepler_orbit(0.5, dtype=F64)
    exact = simulate(s, FixedPolicy(PERIOD / 8000), t_end=PERIOD, observers=[]).state.pos
    errs = [float((simulate(s, FixedPolicy(PERIOD / n), integrator=name, t_end=PERIOD,
                            observers=[]).state.pos - exact).norm()) for n in (400, 800)]
    assert 3.5 < errs[0] / errs[1] < 4.5


def test_ttl_is_second_order_in_phase_and_exact_in_kepler_energy():
    s = kepler_orbit(0.9, dtype=F64)
    runs = [simulate(s, FixedPolicy(1.0), integrator=TimeTransformedLeapfrog(ds=ds),
                     steps=int(round(ds0 / ds * 200))) for ds0 in (0.05,) for ds in (0.05, 0.025)]
    for r in runs:
        assert r.energy_error_max < 1e-11  # only the phase errs on a two-body orbit
    ref = simulate(s, FixedPolicy(1.0), integrator=TimeTransformedLeapfrog(ds=0.05 / 16),
                   steps=200 * 16)
    # same fictitious time, errors against a much finer run fall by ~4 per halving
    e1 = float((runs[0].state.pos - ref.state.pos).norm())
    e2 = float((runs[1].state.pos - ref.state.pos).norm())
    assert 3.3 < e1 / e2 < 4.7


def test_symmetric_energy_error_stays_bounded_over_ten_periods():
    s = kepler_orbit(0.9, dtype=F64)
    r = simulate(s, AarsethPolicy(0.01), integrator="symmetric", t_end=10 * PERIOD)
    first = r.energy_error[r.t <= PERIOD].max()
    assert r.energy_error_max <= 2 * first


def test_iterated_symmetric_counts_every_trial_step():
    s = kepler_orbit(0.5)
    r = simulate(s, FreeFallPolicy(0.05), integrator=SymmetricKDK(iterations=2), steps=10)
    assert r.force_evaluations == 1 + 3 * 10
    with pytest.raises(ValueError, match="iterations must be an int >= 0"):
        SymmetricKDK(-1)
    with pytest.raises(ValueError, match="unknown integrator 'rk4'; valid: kdk, symmetric, ttl"):
        make_integrator("rk4")


def test_gated_retries_are_per_system():
    """Only the failing system retries (and pays its force evaluations)."""
    s = stack([kepler_orbit(0.0), kepler_orbit(0.99)])
    guards = GuardRails(gated=True, max_retries=40)
    r = simulate(s, FixedPolicy(0.02), steps=400, guards=guards)  # through a pericentre
    circ, ecc = r.systems
    assert circ.rejected_steps == 0 and circ.force_evaluations == 401
    assert ecc.rejected_steps > 0 and ecc.force_evaluations == 401 + ecc.rejected_steps
    assert ecc.gate_pass_rate == 1.0


def test_observers_are_optional():
    s = figure_eight()
    bare = simulate(s, FixedPolicy(0.01), steps=30, observers=[])
    assert bare.t is None and bare.steps == 30 and math.isfinite(bare.energy_error_max)
    rec = EnergyRecord()
    full = simulate(s, FixedPolicy(0.01), steps=30, observers=[rec])
    assert len(full.t) == 31 and full.energy_error[-1] == pytest.approx(bare.energy_error_final)


def test_pythagorean_start_at_rest_has_finite_residuals():
    """Bodies at rest (the 3-4-5 problem): Sum m|v| = 0, the scales must not be."""
    m = torch.tensor([3.0, 4.0, 5.0], dtype=F64)
    x = torch.tensor([[1.0, 3.0], [-2.0, -1.0], [1.0, -1.0]], dtype=F64)
    s = SystemState(x, torch.zeros_like(x), m)
    P, L = conservation_scales(s.as_batch())
    assert float(P) > 1 and float(L) > 1
    r = simulate(s, AarsethPolicy(0.01), t_end=1.0)
    assert r.momentum_error < 1e-10 and r.angular_momentum_error < 1e-10


def test_dt_scale_multiplies_the_model_dt():
    from aits.features import FeatureSpec
    from aits.model import TimeStepNet
    from aits.policies import ModelPolicy

    net = TimeStepNet(FeatureSpec(kind="basic")).double()
    s = kepler_orbit(0.5)
    assert float(ModelPolicy(net, dt_scale=0.25)(s)) == pytest.approx(0.25 * float(ModelPolicy(net)(s)))
    with pytest.raises(ValueError, match="dt_scale must be finite and > 0"):
        ModelPolicy(net, dt_scale=0.0)
    with pytest.raises(ValueError, match="dt_scale applies to the model policy only"):
        aits.policies.make_policy("aarseth", eta=0.01, dt_scale=2.0)


def test_named_scenarios_honour_softening_and_G():
    base = aits.make_scenario("binary-e0.5")
    assert aits.make_scenario("plummer64", softening=0.05).softening == 0.05
    s = aits.make_scenario("binary-e0.5", G=4.0)
    assert s.G == 4.0 and s.softening == 0.0
    torch.testing.assert_close(s.vel, 2 * base.vel)  # the same orbit, twice as fast
    r = simulate(s, FixedPolicy(1e-3), t_end=PERIOD / 2)  # one period at G = 4
    torch.testing.assert_close(r.state.pos, base.pos, atol=2e-3, rtol=0)
