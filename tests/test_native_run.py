"""The native loop (aits.ops.kdk_run, csrc/cpu/fewbody_run.h) of the classical policies
and of the model policy (a time-step network evaluated natively, csrc/cpu/lane_net.h),
and simulate's fast path through it (aits/native_run.py): the same runs as the Python
loop (steps, stop reasons, landing steps, force evaluations exactly; states and energy
errors to rounding), the fall-back to the Python loop where the native loop does not
apply, determinism, opcheck and clear errors on bad input."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from helpers import make_system

import aits
from aits import native_run, ops
from aits.guards import GuardRails
from aits.ics import kepler_batch
from aits.integrators import make_integrator
from aits.features import FeatureSpec
from aits.model import TimeStepNet
from aits.policies import AarsethPolicy, FixedPolicy, ModelPolicy
from aits.simulation import simulate
from aits.state import SystemState

F64, F32 = torch.float64, torch.float32
# the whole-run results agree to rounding as the dynamics amplify it: the first step's
# dt agrees to ~2e-16 (float64), a few hundred adaptive steps through close passages
# later the states to ~1e-9; float32 energies differ in their last bits, which
# whole-run errors of ~1e-4 magnify
STATE_TOL = {F64: 1e-6, F32: 2e-4}
ERROR_TOL = {F64: 1e-6, F32: 5e-2}
ERROR_ABS = {F64: 0.0, F32: 4e-6}  # float32: 64 ulp of an energy of order 1
MOMENTUM_ABS = {F64: 1e-12, F32: 1e-5}  # momentum residuals: rounding of order 1 sums


def _systems(n: int, batch: int, dtype: torch.dtype, seed: int = 3, dim: int = 2) -> SystemState:
    """Hierarchical, well-behaved systems: a Kepler binary (e <= 0.5) and n - 2 light
    bodies on circular orbits at radii 5, 8, 11, ... around it, random phases."""
    binary = kepler_batch(batch, (0.0, 0.5), (0.8, 1.2), dim=dim, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    pos, vel, mass = [binary.pos], [binary.vel], [binary.mass]
    for k in range(n - 2):
        r = 5.0 + 3.0 * k
        phase = 2 * math.pi * torch.rand(batch, generator=gen, dtype=F64)
        m = 0.01 + 0.04 * torch.rand(batch, generator=gen, dtype=F64)
        v = torch.sqrt((1.0 + m) / r)
        p = torch.zeros(batch, 1, dim, dtype=F64)
        u = torch.zeros(batch, 1, dim, dtype=F64)
        p[:, 0, 0], p[:, 0, 1] = r * torch.cos(phase), r * torch.sin(phase)
        u[:, 0, 0], u[:, 0, 1] = -v * torch.sin(phase), v * torch.cos(phase)
        pos, vel, mass = pos + [p], vel + [u], mass + [m[:, None]]
    return SystemState(torch.cat(pos, 1).to(dtype), torch.cat(vel, 1).to(dtype),
                       torch.cat(mass, 1).to(dtype))


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit, NaN equal to NaN."""
    return torch.equal(torch.isnan(a), torch.isnan(b)) and torch.equal(
        torch.nan_to_num(a, nan=0.0), torch.nan_to_num(b, nan=0.0))


def _assert_same_runs(a, b, dtype):
    assert len(a.systems) == len(b.systems)
    for x, y in zip(a.systems, b.systems):
        assert (x.steps, x.force_evaluations, x.stop_reason, x.status, x.diverged_step) == \
               (y.steps, y.force_evaluations, y.stop_reason, y.status, y.diverged_step)
        assert x.landing_steps.tolist() == y.landing_steps.tolist()
        assert x.dt_steps == y.dt_steps and x.gate_passes == y.gate_passes
        for name in ("dt_min", "dt_max", "dt_sum", "stop_time"):
            assert getattr(x, name) == pytest.approx(getattr(y, name), rel=STATE_TOL[dtype])
        for name in ("energy_error_final", "energy_error_max", "step_error_max"):
            u, v = getattr(x, name), getattr(y, name)
            assert (math.isnan(u) and math.isnan(v)) or u == pytest.approx(
                v, rel=ERROR_TOL[dtype], abs=ERROR_ABS[dtype])
    # conserved to rounding by both loops: their residuals agree to rounding too
    for name in ("momentum_error", "angular_momentum_error"):
        u, v = a.systems.column(name), b.systems.column(name)
        assert np.all(np.isfinite(v)) and np.allclose(u, v, rtol=0, atol=MOMENTUM_ABS[dtype])
    scale = a.state.pos.abs().max()
    assert float((a.state.pos - b.state.pos).abs().max() / scale) < STATE_TOL[dtype]
    assert float((a.state.vel - b.state.vel).abs().max() / a.state.vel.abs().max()) < \
        STATE_TOL[dtype]
    assert torch.equal(a.state.time, b.state.time) or float(
        (a.state.time - b.state.time).abs().max()) < STATE_TOL[dtype]


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("policy", [FixedPolicy(0.01), AarsethPolicy(0.02)], ids=["fixed", "aarseth"])
@pytest.mark.parametrize("diagnostics", [False, True])
@pytest.mark.parametrize("run", [{"t_end": 1.37}, {"steps": 60}], ids=["t_end", "steps"])
@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("integrator", ["kdk", "symmetric"])
def test_native_run_is_the_python_loop(dtype, policy, diagnostics, run, n, integrator):
    state = _systems(n, 21, dtype, seed=n)
    kw = dict(observers=[], diagnostics=diagnostics, integrator=integrator, **run)
    a = simulate(state, policy, native=False, **kw)
    b = simulate(state, policy, **kw)
    _assert_same_runs(a, b, dtype)
    if "t_end" in run:  # every system landed on its end time
        assert all(r.stop_reason == "t_end" for r in b.systems)
        assert torch.allclose(b.state.time, torch.full((21,), 1.37, dtype=F64), rtol=1e-12)


@pytest.mark.parametrize("stop_diverged", [True, False])
def test_divergence_and_max_steps_as_the_python_loop(stop_diverged, caplog):
    state = _systems(3, 16, F64, seed=11)
    kw = dict(t_end=4.0, observers=[], fail_above=2e-5, stop_diverged=stop_diverged,
              max_steps=150)
    with caplog.at_level(logging.WARNING, logger="aits.simulation"):
        a = simulate(state, FixedPolicy(0.02), native=False, **kw)
        python_log = [r.getMessage() for r in caplog.records]
        caplog.clear()
        b = simulate(state, FixedPolicy(0.02), **kw)
        native_log = [r.getMessage() for r in caplog.records]
    _assert_same_runs(a, b, F64)
    assert python_log == native_log
    reasons = {r.stop_reason for r in b.systems}
    statuses = {r.status for r in b.systems}
    assert "diverged" in statuses and "ok" in statuses  # the test covers both
    assert ("diverged" in reasons) == stop_diverged
    assert "max_steps" in reasons
    for x, y in zip(a.systems, b.systems):
        assert x.divergence == y.divergence


def test_bad_dt_stops_the_system_as_the_python_loop(caplog):
    """Aarseth's dt of a system without any pull (massless bodies) is inf: that system
    stops ("bad-dt") with its start state; the others run on."""
    state = _systems(3, 9, F64, seed=5)
    mass = state.mass.clone()
    mass[4] = 0.0
    state = SystemState(state.pos, state.vel, mass)
    with caplog.at_level(logging.ERROR, logger="aits.simulation"):
        a = simulate(state, AarsethPolicy(0.02), t_end=0.5, observers=[], native=False)
        b = simulate(state, AarsethPolicy(0.02), t_end=0.5, observers=[])
    _assert_same_runs(a, b, F64)
    assert b.systems[4].stop_reason == "bad-dt" and b.systems[4].steps == 0
    # the start's force evaluation (no cached acc) and the failed step's
    assert b.systems[4].force_evaluations == 2
    assert torch.equal(b.state.pos[4], state.pos[4])
    assert sum("not finite and > 0" in r.getMessage() for r in caplog.records) == 2


def test_fast_path_only_where_it_gives_the_loop_results(monkeypatch):
    calls = []
    real = native_run.run
    monkeypatch.setattr(native_run, "run", lambda *a, **k: calls.append(1) or real(*a, **k))
    state = _systems(3, 4, F64)
    simulate(state, FixedPolicy(0.01), steps=5, observers=[])
    assert len(calls) == 1
    # each of these needs the Python loop
    simulate(state, FixedPolicy(0.01), steps=5)  # default observers
    simulate(state, FixedPolicy(0.01), steps=5, observers=[], guards=GuardRails(dt_max=0.005))
    simulate(state, FixedPolicy(0.01), steps=5, observers=[], integrator="symmetric",
             first_dt=0.005)  # the recurrence started from a given step
    simulate(state, FixedPolicy(0.01), steps=5, observers=[],
             integrator=make_integrator("symmetric", symmetric_iterations=1))
    simulate(state, FixedPolicy(0.01), steps=5, observers=[], integrator="ttl")
    simulate(state, FixedPolicy(0.01), t_end=0.05, observers=[], output_times=[0.02])
    simulate(state, FixedPolicy(0.01), steps=5, observers=[], native=False)
    big = SystemState(*(make_system(9, 2, 2, F64, seed=1)[k] for k in ("pos", "vel", "mass")))
    simulate(big, FixedPolicy(0.001), steps=3, observers=[])  # N = 9 > 8 in float64
    assert len(calls) == 1
    one = simulate(state.index(0), AarsethPolicy(0.02), steps=5, observers=[])  # unbatched
    assert len(calls) == 2 and one.steps == 5
    simulate(state, AarsethPolicy(0.02), steps=5, observers=[], integrator="symmetric")
    assert len(calls) == 3


def _run_args(batch: int, dtype=F64):
    s = _systems(3, batch, dtype, seed=2)
    acc = aits.accelerations(s.pos, s.mass)
    return (s.pos, s.vel, s.mass, acc, torch.zeros(batch, dtype=F64),
            torch.full((batch,), 4.0, dtype=F64))


@pytest.mark.parametrize("dtype", [F64, F32])
def test_kdk_run_is_deterministic_and_independent_of_the_batch(dtype):
    args = _run_args(37, dtype)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.kdk_run(*args, 10**5, eta=0.02, diagnostics=True)
        torch.set_num_threads(2)
        two = ops.kdk_run(*args, 10**5, eta=0.02, diagnostics=True)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two):
        assert _same(a, b)
    for b in (0, 8, 36):
        alone = ops.kdk_run(*(t[b:b + 1] for t in args), 10**5, eta=0.02, diagnostics=True)
        for a, x in zip(one, alone):
            assert _same(a[b:b + 1], x)
    counts = one[4]
    assert counts.shape == (37, len(ops.KDK_RUN_COUNTS)) and counts.dtype == torch.int64
    assert one[5].shape == (37, len(ops.KDK_RUN_STATS)) and one[5].dtype == F64
    assert (counts[:, 0] > 10).all() and (counts[:, 1] == 0).all()  # ran, stopped at t_end


def test_kdk_run_opcheck():
    """Every output column defined (opcheck compares outputs with NaN unequal): each
    system lands on t_stop, and diverges at once (fail_above tiny) and runs on."""
    args = _run_args(5)
    for policy, value in (("fixed", 0.03), ("aarseth", 0.02)):
        out = ops.kdk_run(*args, 1000, softening=0.01, diagnostics=True, fail_above=1e-300,
                          stop_diverged=False, **{"dt" if policy == "fixed" else "eta": value})
        assert not torch.isnan(out[5]).any()
        torch.library.opcheck(torch.ops.aits.kdk_run.default,
                              args + (1000, policy, value, 0.01, 1.0, True, 2e-4, 1e-3,
                                      1e-300, False, [], "tanh", 1.0, 30.0))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"dt": 0.0}, ValueError, "dt must be > 0"),
    ({"dt": -1.0}, ValueError, "dt must be > 0"),
    ({"eta": math.nan}, ValueError, "eta must be a finite number"),
    ({"dt": 0.1, "eta": 0.1}, ValueError, "exactly one of dt"),
    ({}, ValueError, "exactly one of dt"),
    ({"dt": 0.1, "max_steps": 0}, ValueError, "max_steps must be >= 1"),
    ({"dt": 0.1, "threshold": 0.0}, ValueError, "threshold must be > 0"),
    ({"dt": 0.1, "fail_above": math.nan}, ValueError, "fail_above must be a finite number"),
])
def test_kdk_run_refuses_bad_settings(kwargs, error, match):
    args = _run_args(3)
    max_steps = kwargs.pop("max_steps", 100)
    with pytest.raises(error, match=match):
        ops.kdk_run(*args, max_steps, **kwargs)


def test_kdk_run_refuses_bad_tensors():
    pos, vel, mass, acc, t0, t1 = _run_args(3)
    with pytest.raises(TypeError, match="time must be float64"):
        ops.kdk_run(pos, vel, mass, acc, t0.float(), t1, 10, dt=0.1)
    with pytest.raises(ValueError, match=r"t_stop must have shape \(B,\) = \(3,\)"):
        ops.kdk_run(pos, vel, mass, acc, t0, t1[:2], 10, dt=0.1)
    with pytest.raises(ValueError, match="t_stop contains NaN"):
        ops.kdk_run(pos, vel, mass, acc, t0, torch.full_like(t1, math.nan), 10, dt=0.1)
    with pytest.raises(ValueError, match="acc contains NaN"):
        ops.kdk_run(pos, vel, mass, torch.full_like(acc, math.nan), t0, t1, 10, dt=0.1)
    with pytest.raises(ValueError, match="must be a batch"):
        ops.kdk_run(pos[0], vel[0], mass[0], acc[0], t0, t1, 10, dt=0.1)
    with pytest.raises(ValueError, match="unknown policy 'collisional'"):
        torch.ops.aits.kdk_run(pos, vel, mass, acc, t0, t1, 10, "collisional", 0.1, 0.0, 1.0,
                               False, 2e-4, 1e-3, math.inf, True, [], "tanh", 1.0, 30.0)
    big = make_system(9, 2, 2, F64)
    a9 = aits.accelerations(big["pos"], big["mass"])
    with pytest.raises(ValueError, match="N = 9 bodies is above the few-body sizes"):
        ops.kdk_run(big["pos"], big["vel"], big["mass"], a9, t0[:2], t1[:2], 10, dt=0.1)


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("dim", [2, 3])
def test_kdk_run_totals_are_the_states_totals(dtype, dim):
    """The conserved totals at the start and the end are those torch computes from the
    start and end states (a zero-mass system's centre being the plain mean)."""
    s = _systems(3, 9, dtype, seed=5, dim=dim)
    s = SystemState(s.pos + 0.3, s.vel + 0.1, s.mass.clone(), softening=0.05)  # P, L != 0
    s.mass[4] = 0.0
    acc = aits.accelerations(s.pos, s.mass, softening=0.05)
    t0, t1 = torch.zeros(9, dtype=F64), torch.full((9,), 0.5, dtype=F64)
    pos1, vel1, *_, totals = ops.kdk_run(s.pos, s.vel, s.mass, acc, t0, t1, 1000, eta=0.02,
                                         softening=0.05)
    assert totals.shape == (9, 2, len(ops.KDK_RUN_TOTALS)) and totals.dtype == F64
    col = {name: k for k, name in enumerate(ops.KDK_RUN_TOTALS)}
    tol = dict(rtol=1e-12, atol=1e-13) if dtype == F64 else dict(rtol=1e-5, atol=1e-6)
    for k, state in enumerate((s, SystemState(pos1, vel1, s.mass, softening=0.05))):
        got = totals[:, k]
        x, v, m = (t.double() for t in (state.pos, state.vel, state.mass))
        P = (m[..., None] * v).sum(1)
        speed = v.norm(dim=-1)
        weights = torch.where(m.sum(1, keepdim=True) > 0, m / m.sum(1, keepdim=True).clamp_min(
            1e-300), torch.full_like(m, 1 / 3))
        com = (weights[..., None] * x).sum(1)
        want = {
            "mass_speed": (m * speed).sum(1), "mass_radius_speed": (m * x.norm(dim=-1) * speed).sum(1),
            "kinetic": 0.5 * (m * speed ** 2).sum(1), "mass": m.sum(1),
            "potential": aits.potential_energy(x, m, softening=0.05),
            "r_rms": ((m * ((x - com[:, None]) ** 2).sum(-1)).sum(1)
                      / m.sum(1).clamp_min(torch.finfo(F64).tiny)).sqrt(),
        }
        for c, axis in enumerate("xyz"):
            want[f"momentum_{axis}"] = P[:, c] if c < dim else torch.zeros(9, dtype=F64)
        if dim == 2:
            L = (m * (x[..., 0] * v[..., 1] - x[..., 1] * v[..., 0])).sum(1)
            want |= {"angular_momentum_x": torch.zeros(9, dtype=F64),
                     "angular_momentum_y": torch.zeros(9, dtype=F64), "angular_momentum_z": L}
        else:
            L = (m[..., None] * torch.linalg.cross(x, v, dim=-1)).sum(1)
            want |= {f"angular_momentum_{a}": L[:, c] for c, a in enumerate("xyz")}
        assert set(want) == set(ops.KDK_RUN_TOTALS)
        for name, value in want.items():
            torch.testing.assert_close(got[:, col[name]], value, **tol, msg=name)


def test_native_momentum_errors_are_the_loops():
    """simulate's momentum and angular-momentum errors from the native totals equal the
    Python loop's (3-D systems with a net momentum), both at rounding level."""
    s = _systems(3, 6, F64, seed=9, dim=3)
    s = SystemState(s.pos, s.vel + 0.2, s.mass)
    a = simulate(s, AarsethPolicy(0.02), t_end=2.0, observers=[], native=False)
    b = simulate(s, AarsethPolicy(0.02), t_end=2.0, observers=[])
    for name in ("momentum_error", "angular_momentum_error"):
        u, v = a.systems.column(name), b.systems.column(name)
        assert np.allclose(u, v, rtol=0, atol=1e-14) and np.all(v < 1e-13)


def test_result_columns_match_the_system_runs():
    r = simulate(_systems(3, 10, F64), AarsethPolicy(0.02), t_end=0.3, observers=[])
    for name in ("steps", "force_evaluations", "dt_min", "stop_reason", "energy_error_max"):
        assert r.systems.column(name).tolist() == [getattr(x, name) for x in r.systems]
    assert r.totals()["steps"] == int(np.sum([x.steps for x in r.systems]))
    assert r.systems[-1] is r.systems[9] and len(r.systems[2:5]) == 3
    with pytest.raises(IndexError):
        r.systems[10]


# ------------------------------------------------------------------ the model policy


def _net(members: int = 1, activation: str = "tanh", seed: int = 0,
         spread: float = 1.0, kind: str = "encounter") -> TimeStepNet:
    """A network of the shipped generalist's kind (encounter features, or ``kind``, and
    Aarseth's time) with random weights: ``dt = 0.1 tau_A`` at initialisation, then the
    head's weights drawn so that ``dt / tau_A`` varies with the state (by a factor of a
    few); ``spread`` scales the hidden weights (pre-activations of order ``spread``)."""
    torch.manual_seed(seed)
    nets = []
    for k in range(members):
        net = TimeStepNet(FeatureSpec(kind=kind), hidden=[24, 16], activation=activation,
                          dropout=0.0, output="aarseth", dt_init=0.1, seed=seed + k).double()
        with torch.no_grad():
            for layer in net.body:
                if isinstance(layer, torch.nn.Linear):
                    layer.weight.mul_(spread)
            net.head.weight.normal_(0.0, 0.3)
        nets.append(net.eval())
    return TimeStepNet.average(nets).eval() if members > 1 else nets[0]


def _generalist() -> ModelPolicy:
    return aits.pretrained("generalist")


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("diagnostics", [False, True])
@pytest.mark.parametrize("n, dim", [(2, 2), (3, 3), (5, 2)])
@pytest.mark.parametrize("model", ["generalist", "one network", "relu ensemble", "smooth",
                                   "orbit"])
@pytest.mark.parametrize("integrator", ["kdk", "symmetric"])
def test_native_model_run_is_the_python_loop(dtype, diagnostics, n, dim, model, integrator):
    policy = {"generalist": _generalist,
              "one network": lambda: ModelPolicy(_net(1), dt_scale=0.7),
              "relu ensemble": lambda: ModelPolicy(_net(3, "relu", seed=4)),
              "smooth": lambda: ModelPolicy(_net(2, seed=5, kind="encounter-smooth")),
              "orbit": lambda: ModelPolicy(_net(2, seed=6, kind="encounter-orbit"))}[model]()
    state = _systems(n, 13, dtype, seed=n + dim, dim=dim)
    kw = dict(t_end=2.1, observers=[], diagnostics=diagnostics, integrator=integrator)
    a = simulate(state, policy, native=False, **kw)
    b = simulate(state, policy, **kw)
    _assert_same_runs(a, b, dtype)
    assert all(r.stop_reason == "t_end" for r in b.systems)
    assert min(r.steps for r in b.systems) >= 5


@pytest.mark.parametrize("members, activation, spread, kind", [
    (1, "tanh", 1.0, "encounter"), (4, "tanh", 6.0, "encounter"), (2, "relu", 3.0, "encounter"),
    (2, "tanh", 3.0, "encounter-smooth"), (2, "tanh", 3.0, "encounter-orbit")])
def test_native_model_dt_is_the_networks(members, activation, spread, kind):
    """The first step is the policy's dt to ~1e-14: the features (of either kind), the
    layers, tanh (its pre-activations spread over +-20 with spread 6), softplus and the
    geometric mean are TimeStepNet's, on random 2-D and 3-D systems of 2-8 bodies."""
    policy = ModelPolicy(_net(members, activation, seed=members, spread=spread, kind=kind),
                         dt_scale=1.3)
    for n, dim in ((2, 3), (4, 2), (8, 3)):
        s = make_system(n, dim, 11, F64, seed=n)
        state = SystemState(s["pos"], s["vel"], s["mass"], softening=0.01).with_acceleration()
        want = policy(state)
        inf = torch.full((11,), math.inf, dtype=F64)
        out = ops.kdk_run(state.pos, state.vel, state.mass, state.acc, state.time.double(), inf,
                          1, net=native_run.native_net(policy.net), activation=activation,
                          dt_scale=1.3, softening=0.01, smooth=kind != "encounter",
                          orbit=kind == "encounter-orbit")
        got = out[5][:, ops.KDK_RUN_STATS.index("dt_last")]
        torch.testing.assert_close(got, want, rtol=1e-13, atol=0.0)
        assert float(want.max() / want.min()) > 1.5  # the states' steps differ


def test_native_model_refuses_a_network_of_the_wrong_kind():
    """An orbit run needs smooth and a network of 15 inputs; a 15-input network is no
    plain run's (the message names the width it expected)."""
    args = _run_args(3)
    plain = native_run.native_net(_net(1))
    orbit = native_run.native_net(_net(1, kind="encounter-orbit"))
    with pytest.raises(ValueError, match="encounter-orbit kind, which is smooth"):
        ops.kdk_run(*args, 10, net=orbit, orbit=True)
    with pytest.raises(ValueError, match=r"shape \(K, out, 15\)"):
        ops.kdk_run(*args, 10, net=plain, smooth=True, orbit=True)
    with pytest.raises(ValueError, match=r"shape \(K, out, 14\)"):
        ops.kdk_run(*args, 10, net=orbit, smooth=True)


def test_native_model_is_deterministic_and_independent_of_the_batch():
    net = native_run.native_net(_generalist().net)
    args = _run_args(21)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.kdk_run(*args, 10**5, net=net, dt_scale=2.0, diagnostics=True)
        torch.set_num_threads(2)
        two = ops.kdk_run(*args, 10**5, net=net, dt_scale=2.0, diagnostics=True)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two):
        assert _same(a, b)
    for b in (0, 8, 20):
        alone = ops.kdk_run(*(t[b:b + 1] for t in args), 10**5, net=net, dt_scale=2.0,
                            diagnostics=True)
        for a, x in zip(one, alone):
            assert _same(a[b:b + 1], x)
    assert (one[4][:, 0] > 10).all() and (one[4][:, 1] == 0).all()


def test_native_model_opcheck():
    args = _run_args(4)
    net = native_run.native_net(_net(2, seed=1))
    out = ops.kdk_run(*args, 500, net=net, softening=0.01, diagnostics=True, fail_above=1e-300,
                      stop_diverged=False)
    assert not torch.isnan(out[5]).any()
    torch.library.opcheck(torch.ops.aits.kdk_run.default,
                          args + (500, "model", 1.0, 0.01, 1.0, True, 2e-4, 1e-3, 1e-300, False,
                                  net, "tanh", 1.0, 30.0))
    torch.library.opcheck(torch.ops.aits.kdk_run.default,
                          args + (500, "model", 1.0, 0.01, 1.0, True, 2e-4, 1e-3, 1e-300, False,
                                  net, "tanh", 1.0, 30.0, True))


def test_native_model_only_where_it_computes_the_networks_dt(monkeypatch):
    """native_net gives the layers of the nets it computes and None for the others, which
    simulate then runs in its Python loop."""
    calls = []
    real = native_run.run
    monkeypatch.setattr(native_run, "run", lambda *a, **k: calls.append(1) or real(*a, **k))
    state = _systems(3, 3, F64)
    layers = native_run.native_net(_generalist().net)
    assert [tuple(t.shape) for t in layers] == [(5, 64, 14), (5, 64), (5, 64, 64), (5, 64),
                                                (5, 1, 64), (5, 1)]
    assert [tuple(t.shape) for t in native_run.native_net(_net(1))] == [
        (1, 24, 14), (1, 24), (1, 16, 24), (1, 16), (1, 1, 16), (1, 1)]
    simulate(state, ModelPolicy(_net(1)), steps=5, observers=[])
    assert len(calls) == 1
    others = {
        "basic features": TimeStepNet("basic", hidden=[8], output="aarseth", dt_init=0.1),
        "history": TimeStepNet(FeatureSpec(kind="encounter", history="delta_mag", history_len=2),
                               hidden=[8], output="aarseth", dt_init=0.1),
        "dynamical output": TimeStepNet(FeatureSpec(kind="encounter"), hidden=[8],
                                        output="dynamical", dt_init=0.1),
        "gelu": TimeStepNet(FeatureSpec(kind="encounter"), hidden=[8], activation="gelu",
                            output="aarseth", dt_init=0.1),
        "fourier": TimeStepNet(FeatureSpec(kind="encounter"), hidden=[8], fourier_features=4,
                               output="aarseth", dt_init=0.1),
        "float32": _net(1).float(),
    }
    for name, net in others.items():
        assert native_run.native_net(net.double() if name != "float32" else net) is None, name
        policy = ModelPolicy(net.double() if name != "float32" else net)
        simulate(state, policy, steps=5, observers=[])
    assert len(calls) == 1
    assert native_run.native_net(_net(1).train()) is None  # dropout would be live


def _model_args(net):
    pos, vel, mass, acc, t0, t1 = _run_args(2)
    return (pos, vel, mass, acc, t0, t1, 10, "model", 1.0, 0.0, 1.0, False, 2e-4, 1e-3, math.inf,
            True, net, "tanh", 1.0, 30.0)


def test_kdk_run_refuses_bad_networks():
    good = native_run.native_net(_net(2))
    run = torch.ops.aits.kdk_run

    def refuses(net, error, match, **change):
        args = list(_model_args(net))
        for k, v in change.items():
            args[{"policy": 7, "activation": 17, "net_scale": 18, "value": 8}[k]] = v
        with pytest.raises(error, match=match):
            run(*args)

    refuses([], ValueError, "policy 'model' needs net")
    refuses(good[:3], ValueError, "an even, non-zero number of tensors")
    refuses([good[0].float()] + good[1:], TypeError, r"net \(layer 0\) must be float64")
    refuses([good[0][:, :, :13]] + good[1:], ValueError,
            r"weight of net layer 0 must have shape \(K, out, 14\)")
    refuses(good[:2] + [good[2][:1]] + good[3:], ValueError, "with the K of layer 0")
    refuses(good[:3] + [good[3][:, :5]] + good[4:], ValueError,
            r"bias of net layer 1 must have shape \(2, 16\)")
    refuses(good[:4], ValueError, "the last net layer must have one output, got 16")
    nan = good[2].clone()
    nan[0, 0, 0] = math.nan
    refuses(good[:2] + [nan] + good[3:], ValueError, "net layer 1 has non-finite weights")
    refuses(good, ValueError, "unknown activation 'gelu'", activation="gelu")
    refuses(good, ValueError, "net_scale must be > 0", net_scale=0.0)
    refuses(good, ValueError, "dt_scale must be > 0", value=-1.0)
    refuses(good, ValueError, "net and history are for policy 'model', not 'fixed'", policy="fixed")
    with pytest.raises(ValueError, match="exactly one of dt"):
        ops.kdk_run(*_run_args(2), 10, dt=0.1, net=good)
