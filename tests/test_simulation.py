"""The simulation loop and the guard rails."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aits.gate import EnergyGate
from aits.guards import GuardRails
from aits.ics import kepler_orbit, kepler_period
from aits.policies import FixedPolicy, FreeFallPolicy
from aits.jsonio import json_safe
from aits.simulation import RESULT_KEYS, simulate


class _Scripted:
    """A policy that proposes the given steps in turn (then repeats the last)."""

    name = "scripted"
    history_len = 0

    def __init__(self, steps):
        self.steps = list(steps)
        self.calls = 0

    def __call__(self, state, history=None):
        dt = self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        return torch.tensor(dt, dtype=state.dtype)


def test_guard_limits():
    g = GuardRails(dt_min=0.1, dt_max=1.0, max_growth=2.0)
    def t(x):
        return torch.tensor(x, dtype=torch.float64)

    assert float(g.limit(t(5.0))) == 1.0
    assert float(g.limit(t(0.01))) == 0.1
    assert float(g.limit(t(0.9), previous=t(0.2))) == pytest.approx(0.4)
    assert float(g.limit(t(math.nan))) == 1.0
    assert float(g.retry(t(0.15))) == 0.1
    off = GuardRails()
    assert not off.active and g.active
    assert float(off.limit(t(123.0), previous=t(1.0))) == 123.0
    batch = g.limit(t([5.0, 0.3, 0.01]), previous=t([10.0, 0.1, 1.0]))
    torch.testing.assert_close(batch, t([1.0, 0.2, 0.1]))


@pytest.mark.parametrize("kw, msg", [
    (dict(dt_min=-1.0), "dt_min must be finite and >= 0"),
    (dict(dt_max=0.0), "dt_max must be > 0"),
    (dict(dt_min=2.0, dt_max=1.0), "must not exceed dt_max"),
    (dict(max_growth=1.0), "max_growth must be > 1"),
    (dict(shrink=1.0), r"shrink must be in \(0, 1\)"),
    (dict(max_retries=0), "max_retries must be an int >= 1"),
])
def test_guard_validation(kw, msg):
    with pytest.raises(ValueError, match=msg):
        GuardRails(**kw)


def test_guards_apply_in_the_loop():
    s = kepler_orbit(0.5)
    r = simulate(s, _Scripted([0.001, 1.0, 1e-9]), steps=4,
                 guards=GuardRails(dt_min=1e-4, max_growth=3.0))
    np.testing.assert_allclose(r.dt, [0.001, 0.003, 1e-4, 1e-4])


def test_gated_retry_counts_extra_force_evaluations():
    s = kepler_orbit(0.9)
    period = kepler_period(1.0)
    gate = EnergyGate(threshold=1e-4)
    plain = simulate(s, FixedPolicy(0.05), t_end=period / 2, gate=gate)
    assert plain.gate_pass_rate < 1 and plain.rejected_steps == 0
    assert plain.force_evaluations == plain.steps + 1
    gated = simulate(s, FixedPolicy(0.05), t_end=period / 2, gate=gate,
                     guards=GuardRails(gated=True, shrink=0.5))
    assert gated.rejected_steps > 0
    assert gated.gate_pass_rate == 1.0
    assert gated.force_evaluations == gated.steps + gated.rejected_steps + 1
    assert gated.summary()["energy_error_max"] < plain.summary()["energy_error_max"]


def test_gated_retry_gives_up_at_the_cap_and_at_dt_min():
    s = kepler_orbit(0.9, at="pericentre")
    gate = EnergyGate(threshold=1e-12)  # unreachable: every step fails
    gated = GuardRails(gated=True, shrink=0.9, max_retries=2)
    r = simulate(s, FixedPolicy(0.01), steps=3, gate=gate, guards=gated)
    # the retries run out on the first step: the run diverged there, and stops
    assert r.steps == 1 and r.rejected_steps == 2 and r.stop_reason == "diverged"
    assert r.status == "diverged" and r.diverged_step == 1
    assert r.diverged_time == pytest.approx(0.01 * 0.9**2)
    assert "after 2 retries" in r.divergence and r.summary()["status"] == "diverged"
    r = simulate(s, FixedPolicy(0.01), steps=3, gate=gate, guards=gated, stop_diverged=False)
    assert r.steps == 3 and r.rejected_steps == 6 and r.gate_pass_rate == 0.0
    assert r.force_evaluations == 1 + 3 * 3 and r.stop_reason == "steps"
    assert r.status == "diverged" and r.diverged_step == 1  # the first divergence
    r = simulate(s, FixedPolicy(0.01), steps=2, gate=gate,
                 guards=GuardRails(gated=True, shrink=0.5, dt_min=0.004))
    np.testing.assert_allclose(r.dt, [0.004, 0.004])  # 0.01 -> 0.005 -> 0.004, then stop
    assert r.rejected_steps == 4


def test_t_end_is_hit_exactly_and_energy_is_recorded():
    s = kepler_orbit(0.5)
    r = simulate(s, FixedPolicy(0.3), t_end=1.0)
    assert r.t[-1] == pytest.approx(1.0, abs=1e-15) and r.stop_reason == "t_end"
    np.testing.assert_allclose(r.dt, [0.3, 0.3, 0.3, 0.1], rtol=1e-12)
    assert r.energy_error[0] == 0 and len(r.energy_error) == r.steps + 1
    assert len(r.step_error) == r.steps and np.isfinite(r.step_error).all()
    assert r.frame_pos.shape == (5, 2, 2) and r.frame_t[-1] == r.t[-1]
    summary = r.summary()
    assert set(RESULT_KEYS) <= set(summary)


def test_energy_error_shrinks_fourfold_when_dt_halves():
    s = kepler_orbit(0.5)
    period = kepler_period(1.0)
    errs = [simulate(s, FixedPolicy(period / n), t_end=period).summary()["energy_error_max"]
            for n in (400, 800)]
    assert 3.6 < errs[0] / errs[1] < 4.4


def test_max_steps_returns_the_last_state(caplog):
    r = simulate(kepler_orbit(0.5), FixedPolicy(0.01), t_end=10.0, max_steps=5)
    assert r.steps == 5 and r.stop_reason == "max_steps"
    assert float(r.state.time) == pytest.approx(0.05)
    assert "max_steps" in caplog.text


@pytest.mark.parametrize("steps", [19, 20, 300, 1001])
def test_a_trajectory_holds_exactly_the_frames_asked_for(steps):
    r = simulate(kepler_orbit(0.5), FixedPolicy(0.01), steps=steps, max_frames=20)
    assert len(r.frame_t) == 20 and r.frame_pos.shape == (20, 2, 2)
    assert r.frame_t[0] == 0 and r.frame_t[-1] == r.t[-1] and np.all(np.diff(r.frame_t) > 0)
    assert set(r.frame_t) <= set(r.t)  # frames are states the run passed through
    short = simulate(kepler_orbit(0.5), FixedPolicy(0.01), steps=5, max_frames=20)
    assert len(short.frame_t) == 6  # a run of fewer steps: every state


def test_bad_policy_output_and_arguments():
    s = kepler_orbit(0.5)
    r = simulate(s, _Scripted([-1.0]), steps=2)  # the system stops, keeping its start state
    assert r.stop_reason == "bad-dt" and r.steps == 0 and torch.equal(r.state.pos, s.pos)
    with pytest.raises(ValueError, match="exactly one of t_end and steps"):
        simulate(s, FixedPolicy(0.1))
    with pytest.raises(ValueError, match="t_end must be finite and > 0"):
        simulate(s, FixedPolicy(0.1), t_end=-1.0)
    with pytest.raises(ValueError, match="gated guard rail needs diagnostics"):
        simulate(s, FixedPolicy(0.1), steps=1, diagnostics=False, guards=GuardRails(gated=True))


def test_simulate_does_not_modify_the_start_state():
    s = kepler_orbit(0.5)
    pos, vel = s.pos.clone(), s.vel.clone()
    simulate(s, FreeFallPolicy(0.05), steps=10)
    assert torch.equal(s.pos, pos) and torch.equal(s.vel, vel) and s.acc is None


def test_json_safe():
    assert json_safe({"a": [1.0, math.inf], "b": math.nan, "c": "x"}) == {
        "a": [1.0, None], "b": None, "c": "x"}


def test_progress_bar_runs(capsys):
    r = simulate(kepler_orbit(0.5), FixedPolicy(0.01), t_end=0.5, progress=True)
    assert r.stop_reason == "t_end"


def test_dt_statistics_are_the_policys_own_steps():
    s = kepler_orbit(0.5)
    r = simulate(s, FixedPolicy(0.3), t_end=1.0)  # 0.3, 0.3, 0.3, then 0.1 lands on 1.0
    assert r.dt_min == r.dt_max == 0.3 and r.dt_steps == 3 and r.dt_last == pytest.approx(0.1)
    assert r.landing_steps.tolist() == [3] and r.summary()["dt_mean"] == pytest.approx(0.3)
    r = simulate(s, FixedPolicy(0.3), t_end=1.0, output_times=[0.5])
    np.testing.assert_allclose(r.dt, [0.3, 0.2, 0.3, 0.2], rtol=1e-12)
    assert r.landing_steps.tolist() == [1, 3] and r.dt_min == r.dt_max == 0.3
    # every step shortened: the statistics describe those steps
    r = simulate(s, FixedPolicy(0.5), t_end=1.0, output_times=np.arange(0.0, 1.0, 0.1))
    assert r.steps == r.dt_steps == 10 and r.dt_min == pytest.approx(0.1)
    # steps runs have nothing to land on
    r = simulate(s, FixedPolicy(0.3), steps=4)
    assert len(r.landing_steps) == 0 and r.dt_min == 0.3 and r.dt_last == 0.3


def test_output_times_record_the_state_there_per_system():
    from aits.state import stack

    batch = stack([kepler_orbit(0.5), kepler_orbit(0.9)])
    times = [0.0, 0.25, 1.0, 1.7]
    r = simulate(batch, FreeFallPolicy(0.05), t_end=[2.0, 1.5], output_times=times)
    long, short = r.systems
    np.testing.assert_allclose(long.output_t, times, rtol=1e-12, atol=0)
    np.testing.assert_allclose(short.output_t, times[:3], rtol=1e-12, atol=0)  # ends at 1.5
    assert long.output_pos.shape == (4, 2, 2) and short.output_vel.shape == (3, 2, 2)
    assert long.output_energy_error[0] == 0 and np.all(long.output_energy_error[1:] > 0)
    # the state recorded at 1.0 is the one a run ending at 1.0 ends in
    alone = simulate(kepler_orbit(0.9), FreeFallPolicy(0.05), t_end=1.0, output_times=[0.25])
    np.testing.assert_allclose(short.output_pos[2], alone.state.pos.numpy(), rtol=0, atol=1e-13)
    # with steps runs too; times not reached are left out
    r = simulate(kepler_orbit(0.5), FixedPolicy(0.3), steps=3, output_times=[0.5, 5.0])
    assert r.output_t.tolist() == [0.5] and r.steps == 3
    with pytest.raises(ValueError, match="output_times must be finite and >= 0"):
        simulate(kepler_orbit(0.5), FixedPolicy(0.3), steps=3, output_times=[-1.0])


def test_fail_above_stops_a_system_that_diverges():
    s = kepler_orbit(0.9, at="pericentre")
    r = simulate(s, FixedPolicy(0.02), t_end=3.0, fail_above=1e-2)
    assert r.status == "diverged" and r.stop_reason == "diverged"
    assert r.energy_error_final > 1e-2 and r.diverged_step == r.steps
    assert r.energy_error[-2] <= 1e-2  # the step before was within the level
    assert "> fail_above 0.01" in r.divergence and r.divergence_note.startswith("diverged at t=")
    on = simulate(s, FixedPolicy(0.02), t_end=3.0, fail_above=1e-2, stop_diverged=False)
    assert on.status == "diverged" and on.stop_reason == "t_end" and on.steps > r.steps
    assert simulate(s, FixedPolicy(0.02), t_end=3.0, fail_above=math.inf).status == "ok"
    with pytest.raises(ValueError, match="fail_above must be > 0"):
        simulate(s, FixedPolicy(0.02), t_end=3.0, fail_above=0.0)


# ----------------------------------------------------------------- pair statistics cache


class _Recording:
    """A fixed step that records whether each state it sees has cached pair statistics."""

    name, history_len = "recording", 0

    def __init__(self, uses: bool | None):
        self.seen: list[bool] = []
        if uses is not None:
            self.uses_pair_statistics = uses

    def __call__(self, state, history=None):
        self.seen.append(state.pair_stats is not None)
        return torch.full(state.batch_shape, 0.01, dtype=state.dtype, device=state.device)


@pytest.mark.parametrize("integrator", ("kdk", "symmetric"))  # ttl asks the policy once
def test_steps_cache_pair_statistics_only_for_a_policy_that_reads_them(integrator):
    """The step's force pass caches the pair statistics unless the policy says it never
    reads them (uses_pair_statistics = False: fixed, Aarseth, collisional, encounter
    models); the trajectory is the same bits either way (float64)."""
    from aits.ics import plummer

    state = plummer(20, seed=3)
    runs = {}
    for uses in (None, True, False):
        policy = _Recording(uses)
        runs[uses] = simulate(state, policy, integrator=integrator, steps=5, observers=[],
                              native=False)
        assert policy.seen[-1] is (uses is not False), (integrator, uses)
    for uses in (True, False):
        assert torch.equal(runs[uses].state.pos, runs[None].state.pos)
        assert torch.equal(runs[uses].state.vel, runs[None].state.vel)


def test_which_policies_read_the_pair_statistics():
    from aits.policies import AarsethPolicy, CollisionalPolicy, FixedPolicy, FreeFallPolicy
    from aits.pretrained_model import pretrained
    from aits.state import SystemState, step

    assert not FixedPolicy(0.1).uses_pair_statistics
    assert not AarsethPolicy(0.01).uses_pair_statistics
    assert not CollisionalPolicy(0.01).uses_pair_statistics
    assert getattr(FreeFallPolicy(0.01), "uses_pair_statistics", True)
    assert pretrained("default").uses_pair_statistics  # basic features: min/mean distance
    assert not pretrained("generalist").uses_pair_statistics  # encounter features, one op
    s = SystemState(torch.randn(12, 3, dtype=torch.float64), torch.randn(12, 3, dtype=torch.float64),
                    torch.ones(12, dtype=torch.float64), softening=0.01)
    with_stats, without = step(s, 0.01), step(s, 0.01, statistics=False)
    assert with_stats.pair_stats is not None and without.pair_stats is None
    assert torch.equal(with_stats.pos, without.pos) and torch.equal(with_stats.acc, without.acc)
