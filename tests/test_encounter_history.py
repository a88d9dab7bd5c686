"""The encounter-history feature kind (aits.encounter_history): derivatives from the
accelerations of the last states, its features, the native op, and the models,
policies and whole-run training that read it."""

from __future__ import annotations

import math

import pytest
import torch

from aits import ops, reference
from aits.config import ConfigError, from_mapping
from aits.encounter import CLIP, encounter_features
from aits.encounter_history import history_derivatives, history_encounter_features
from aits.features import HISTORY_ENCOUNTER_NAMES, FeatureSpec, gravity_derivatives
from aits.guards import GuardRails
from aits.history import HistoryBuffer
from aits.ics import figure_eight, hierarchical_triple, kepler_orbit, plummer, random_system
from aits.integrators import KDK, SymmetricKDK
from aits.model import TimeStepNet
from aits.native_run import applies, native_net
from aits.policies import ModelPolicy
from aits.simulation import simulate
from aits.state import SystemState, step
from helpers import whole_run_resume_matches


def _run(state: SystemState, steps: int, dt: float, K: int) -> tuple[SystemState, HistoryBuffer]:
    """``steps`` KDK steps of ``dt`` from ``state``, the last ``K`` start states kept."""
    s = state.as_batch().with_acceleration() if not state.is_batched else state.with_acceleration()
    h = HistoryBuffer(K)
    for _ in range(steps):
        h.push(s)
        s = step(s, torch.full(s.batch_shape, dt, dtype=s.dtype))
    return s, h


@pytest.mark.parametrize("K", [4, 5])
def test_derivatives_converge_to_the_exact_ones(K):
    """Along a KDK run of a Kepler orbit the finite-difference jerk, snap and crackle
    agree with the exact ones of the current state to the integrator's own O(dt^2)
    (the accelerations are sampled on the leapfrog trajectory): halving the step
    quarters the jerk's error."""
    errors = []
    for dt in (4e-3, 2e-3):
        s, h = _run(kepler_orbit(0.5, 1.0), K + 2, dt, K)
        got, want = history_derivatives(h.window(), s), gravity_derivatives(s)
        torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=0)
        errors.append([float((g - w).norm() / w.norm()) for g, w in zip(got[1:], want[1:])])
    assert max(errors[1]) < 2e-5
    assert 3.5 < errors[0][0] / errors[1][0] < 4.5


def test_derivatives_are_exact_for_a_polynomial_at_any_spacing():
    """A cubic acceleration a(t) is reproduced exactly by K = 4 nodes at uneven times."""
    times = [0.0, 0.13, 0.21, 0.5, 0.57]
    coef = torch.tensor([[0.3, -1.0], [2.0, 0.5], [-0.7, 1.5], [0.25, -0.4]], dtype=torch.float64)

    def state(t: float) -> SystemState:
        a = sum(coef[k] * t ** k for k in range(4)).expand(2, 2).clone()
        return SystemState(pos=torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64),
                           vel=torch.zeros(2, 2, dtype=torch.float64),
                           mass=torch.ones(2, dtype=torch.float64),
                           time=torch.tensor(t, dtype=torch.float64), acc=a)

    nodes = [state(t) for t in times]
    _, j, s, c = history_derivatives(nodes[:-1], nodes[-1])
    t = times[-1]
    torch.testing.assert_close(j[0], coef[1] + 2 * coef[2] * t + 3 * coef[3] * t * t,
                               rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(s[0], 2 * coef[2] + 6 * coef[3] * t, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(c[0], 6 * coef[3], rtol=1e-10, atol=1e-12)


def test_warm_up_and_unordered_times_take_the_exact_derivatives():
    s, h = _run(random_system(5, 3, batch=2, seed=1), 2, 1e-3, 4)
    assert h.n_padded == 2
    for got, want in zip(history_derivatives(h.window(), s), gravity_derivatives(s)):
        assert torch.equal(got, want)
    s, h = _run(random_system(5, 3, batch=2, seed=1), 6, 1e-3, 4)
    window = h.window()
    stale = window[-1].replace(time=window[-1].time.clone())
    stale.time[1] = s.time[1]  # system 1: two nodes at one time
    window[-1] = stale.with_acceleration()
    got = history_derivatives(window, s)
    exact = gravity_derivatives(s)
    for g, w in zip(got[1:], exact[1:]):
        assert torch.equal(g[1], w[1]) and not torch.equal(g[0], w[0])
    with pytest.raises(ValueError, match="at least 3 past states"):
        history_derivatives(window[:2], s)


def test_feature_names_and_the_virial_energy():
    assert len(HISTORY_ENCOUNTER_NAMES) == 11
    assert "log_freefall_over_aarseth" not in HISTORY_ENCOUNTER_NAMES
    s, h = _run(hierarchical_triple(e_in=0.4, a_out=8.0), 6, 1e-3, 4)
    feats, tau = history_encounter_features(s, h.window())
    ref, times = encounter_features(s, smooth=True)
    # unsoftened: the virial is the potential energy, so the energy time and the virial
    # ratio agree with the exact kind's; the derivatives (and so tau) nearly
    torch.testing.assert_close(tau, times.aarseth_min, rtol=1e-4, atol=0)
    torch.testing.assert_close(feats[..., -2:], ref[..., -2:], rtol=0, atol=1e-10)
    torch.testing.assert_close(feats[..., :3], ref[..., :3], rtol=0, atol=1e-3)
    torch.testing.assert_close(feats[..., 3:9], ref[..., 6:12], rtol=0, atol=1e-3)


def test_features_are_scale_free_and_permutation_invariant():
    base = plummer(6, seed=3)
    s, h = _run(base, 6, 2e-3, 4)
    feats, tau = history_encounter_features(s, h.window())
    L, M = 3.0, 7.0
    T = math.sqrt(L ** 3 / M)
    scaled = SystemState(pos=base.pos * L, vel=base.vel * L / T, mass=base.mass * M)
    s2, h2 = _run(scaled, 6, 2e-3 * T, 4)
    feats2, tau2 = history_encounter_features(s2, h2.window())
    torch.testing.assert_close(feats2, feats, rtol=0, atol=1e-8)
    torch.testing.assert_close(tau2, tau * T, rtol=1e-8, atol=0)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])

    def permuted(w: SystemState) -> SystemState:
        return SystemState(pos=w.pos[:, perm], vel=w.vel[:, perm], mass=w.mass[:, perm],
                           time=w.time, acc=w.acc[:, perm])

    feats3, tau3 = history_encounter_features(permuted(s), [permuted(w) for w in h.window()])
    torch.testing.assert_close(feats3, feats, rtol=0, atol=1e-12)
    torch.testing.assert_close(tau3, tau, rtol=1e-12, atol=0)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("K", [3, 5])
def test_native_op_equals_the_torch_path(dim, K):
    batch = random_system(7, dim, batch=4, seed=dim + K, softening=0.02)
    s, h = _run(batch, K + 1, 1e-3, K)
    native = history_encounter_features(s, h.window())
    torch_path = history_encounter_features(s, h.window(), native=False)
    torch.testing.assert_close(native[0], torch_path[0], rtol=0, atol=1e-9)
    torch.testing.assert_close(native[1], torch_path[1], rtol=1e-9, atol=0)
    one = history_encounter_features(s.index(torch.tensor([2])), [w.index(torch.tensor([2]))
                                                                   for w in h.window()])
    torch.testing.assert_close(one[0], native[0][2:3], rtol=0, atol=1e-12)


def test_native_op_float32_padded_and_large_systems():
    s, h = _run(plummer(100, seed=2, softening=0.01), 5, 1e-3, 4)
    native = history_encounter_features(s, h.window())
    torch_path = history_encounter_features(s, h.window(), native=False)
    torch.testing.assert_close(native[0], torch_path[0], rtol=0, atol=1e-7)
    s32 = s.to(dtype=torch.float32)
    f32 = history_encounter_features(s32, [w.to(dtype=torch.float32) for w in h.window()])
    assert f32[0].dtype == torch.float32 and torch.isfinite(f32[0]).all()
    zero = s.replace(mass=torch.zeros_like(s.mass)).with_acceleration()
    window = [w.replace(mass=torch.zeros_like(w.mass)).with_acceleration() for w in h.window()]
    feats, tau = history_encounter_features(zero, window)
    assert torch.equal(feats, torch.zeros_like(feats)) and torch.isinf(tau).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_model_dt_op_is_the_policys_torch_path(dtype):
    """One native call (features and network) gives ModelPolicy's dt of the torch
    path (features, then TimeStepNet.forward), for a batch wider than one lane group,
    with bodies the window does not resolve (the span rule) and an ensemble."""
    from aits.encounter_history import history_model_dt

    torch.manual_seed(1)
    net = TimeStepNet(FeatureSpec(kind="encounter-history", history_len=4), hidden=[16, 8],
                      output="aarseth", dt_init=0.1, members=3, dt_scale=0.7).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    batch = random_system(7, 3, batch=11, seed=4, softening=0.02).to(dtype=dtype)
    s, h = _run(batch, 6, 0.05, 4)
    from aits.encounter import per_body
    from aits.encounter_history import _difference_derivatives

    body = per_body(s, (s.acc, *_difference_derivatives(h.window(), s)))
    span = (s.time - h.window()[0].time)[:, None]
    assert 0 < int((span > body.tau).any(-1).sum()) < 11  # some systems replace bodies
    layers = native_net(net)
    dt = history_model_dt(layers, "tanh", net.dt_scale, s, h.window())
    want = net.predict_dt(s, h.window())
    assert dt.dtype == dtype and dt.shape == (11,)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(dt, want, rtol=tol, atol=0)
    policy = ModelPolicy(net, dt_scale=2.0)
    torch.testing.assert_close(policy(s, h), 2.0 * want, rtol=tol, atol=0)
    # a padded window: the torch path (the exact derivatives)
    assert history_model_dt(layers, "tanh", net.dt_scale, s, [None] + h.window()[1:]) is None
    nodes = [s] + list(reversed(h.window()))
    args = (s.pos, s.vel, s.mass, [n.acc for n in nodes], [n.time for n in nodes], 0.02, 1.0,
            CLIP, layers, "tanh", net.dt_scale)
    torch.library.opcheck(torch.ops.aits.history_model_dt.default, args)
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        ops.history_model_dt(*args[:9], "gelu", 1.0)
    with pytest.raises(ValueError, match=r"must have shape \(K, out, 11\)"):
        ops.history_model_dt(*args[:8], [layers[0][:, :, :5]] + layers[1:], "tanh", 1.0)
    with pytest.raises(ValueError, match="net_scale must be > 0"):
        ops.history_model_dt(*args[:10], 0.0)


def test_native_op_opcheck_and_bad_input():
    s, h = _run(random_system(4, 3, batch=3, seed=0), 5, 1e-3, 4)
    nodes = [s] + list(reversed(h.window()))
    accs, times = [n.acc for n in nodes], [n.time for n in nodes]
    torch.library.opcheck(torch.ops.aits.history_encounter_features.default,
                          (s.pos, s.vel, s.mass, accs, times, 0.0, 1.0, CLIP))
    feats, tau, ready = ops.history_encounter_features(s.pos, s.vel, s.mass, accs, times, 0.0,
                                                       1.0, CLIP)
    assert ready.all()
    backwards = ops.history_encounter_features(s.pos, s.vel, s.mass, accs, times[::-1], 0.0, 1.0,
                                               CLIP)
    assert not backwards[2].any()
    with pytest.raises(ValueError, match="at least 4 accelerations"):
        ops.history_encounter_features(s.pos, s.vel, s.mass, accs[:3], times[:3], 0.0, 1.0, CLIP)
    with pytest.raises(ValueError, match="one time per acceleration"):
        ops.history_encounter_features(s.pos, s.vel, s.mass, accs, times[:4], 0.0, 1.0, CLIP)
    with pytest.raises(ValueError, match="must have the same shape as pos"):
        ops.history_encounter_features(s.pos, s.vel, s.mass, [a[:, :2] for a in accs], times,
                                       0.0, 1.0, CLIP)
    with pytest.raises(TypeError, match="float64"):
        ops.history_encounter_features(s.pos, s.vel, s.mass, accs, [t.float() for t in times],
                                       0.0, 1.0, CLIP)
    with pytest.raises(ValueError, match="contains NaN"):
        ops.history_encounter_features(s.pos, s.vel, s.mass, [accs[0] * math.nan] + accs[1:],
                                       times, 0.0, 1.0, CLIP)
    with pytest.raises(ValueError, match="clip must be > 0"):
        ops.history_encounter_features(s.pos, s.vel, s.mass, accs, times, 0.0, 1.0, 0.0)


def test_spec_and_config_validation():
    spec = FeatureSpec(kind="encounter-history", history_len=4)
    assert spec.dim == 11 and spec.window_len == 4 and spec.history_dim == 0
    with pytest.raises(ValueError, match="history_len >= 3"):
        FeatureSpec(kind="encounter-history", history_len=2)
    with pytest.raises(ValueError, match="takes no history features"):
        FeatureSpec(kind="encounter-history", history="basic", history_len=4)
    with pytest.raises(ValueError, match="needs a HistoryBuffer"):
        spec(figure_eight())
    with pytest.raises(ConfigError, match="history_len >= 3"):
        from_mapping({"feature_type": "encounter-history"})
    with pytest.raises(ConfigError, match="takes no history features"):
        from_mapping({"feature_type": "encounter-history", "history_len": 4,
                      "history_type": "basic"})


def test_model_policy_runs_with_its_window():
    net = TimeStepNet(FeatureSpec(kind="encounter-history", history_len=4), hidden=[8],
                      output="aarseth", dt_init=0.1).double()
    policy = ModelPolicy(net)
    assert policy.history_len == 4 and not policy.uses_pair_statistics
    state = kepler_orbit(0.6, 1.0)
    with pytest.raises(ValueError, match="past states"):
        policy(state)
    r = simulate(state, policy, t_end=2 * math.pi, observers=[])
    assert r.stop_reason == "t_end" and float(r.energy_error_max) < 1e-2
    # the first four steps take the exact derivatives: Aarseth's time, as the network
    # starts as Aarseth's criterion (eta = dt_init^2)
    s, h = _run(state, 6, 1e-2, 4)
    dt = policy(s, h.window())
    _, tau = history_encounter_features(s, h.window())
    torch.testing.assert_close(dt, 0.1 * tau, rtol=1e-6, atol=0)


def test_whole_run_training_carries_the_window_and_resumes_bit_exact(tmp_path):
    from aits.checkpoint import load_checkpoint
    from aits.whole_run import WholeRunTrainer

    cfg = dict(objective="whole-run", hidden=[8], window=4, windows_per_epoch=3,
               restart_windows=3, epochs=1, rollout_steps=0, quiet=True, plot=False, lr=1e-2,
               feature_type="encounter-history", history_len=4, output="aarseth", dt_init=0.08)
    tr = WholeRunTrainer(from_mapping(cfg))
    tr.run_window(0)
    assert len(tr.live[0].history) == 4  # one window of four steps
    common = ["--objective", "whole-run", "--hidden", "8", "--window", "4",
              "--windows-per-epoch", "3", "--restart-windows", "4", "--rollout-steps", "10",
              "--feature-type", "encounter-history", "--history-len", "4", "--output", "aarseth",
              "--dt-init", "0.08", "--quiet"]
    whole_run_resume_matches(tmp_path, common, 2)
    half = load_checkpoint(tmp_path / "half" / "checkpoints" / "epoch_0001.pt")
    assert len(half["whole_run"][0]["history"]) == 4


def test_gated_phases_train_on_the_window_kind():
    from aits.training import Trainer

    tr = Trainer(from_mapping(dict(hidden=[8], steps_per_epoch=6, rollout_steps=0, quiet=True,
                                   feature_type="encounter-history", history_len=4,
                                   output="aarseth", dt_init=0.05)))
    assert tr.uses_history
    for _ in range(2):
        tr.run_epoch()
    assert tr.history.is_full
    assert all(torch.isfinite(p).all() for p in tr.model.parameters())


@pytest.mark.parametrize("integrator", ["kdk", "symmetric"])
def test_native_loop_runs_a_window_model_as_the_python_loop(integrator):
    """The native loop keeps each system's window (warm-up on the exact derivatives
    included) and gives the Python loop's run: the same force evaluations, the same
    errors and end states to rounding."""
    torch.manual_seed(0)
    net = TimeStepNet(FeatureSpec(kind="encounter-history", history_len=4), hidden=[16, 16],
                      output="aarseth", dt_init=0.1).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    systems = [kepler_orbit(0.8, 1.0, dim=3), hierarchical_triple(e_in=0.5, a_out=8.0),
               plummer(5, seed=4, softening=0.01)]
    runs = list(zip(systems, (3 * math.pi, 12.0, 2.0)))
    # dt_scale 5: steps of about half Aarseth's time, windows too long, exact derivatives
    for (s, t_end), scale in zip(runs * 2, [1.0] * 3 + [5.0] * 3):
        policy = ModelPolicy(net, scale)
        integ = KDK() if integrator == "kdk" else SymmetricKDK()
        assert applies(s.as_batch().with_acceleration(), policy, integ, GuardRails(), [], False, 0)
        a = simulate(s, policy, integrator=integrator, t_end=t_end, observers=[])
        b = simulate(s, policy, integrator=integrator, t_end=t_end, observers=[], native=False)
        assert a.force_evaluations == b.force_evaluations and a.steps > 20
        assert a.energy_error_max == pytest.approx(b.energy_error_max, rel=1e-6)
        torch.testing.assert_close(a.state.pos, b.state.pos, rtol=0, atol=1e-6)


def test_native_loop_refuses_a_bad_history():
    s = kepler_orbit(0.5, 1.0).as_batch().with_acceleration()
    net = TimeStepNet(FeatureSpec(kind="encounter-history", history_len=4), hidden=[4],
                      output="aarseth", dt_init=0.1).double().eval()
    layers = native_net(net)
    t_stop = torch.full((1,), 1.0, dtype=torch.float64)
    with pytest.raises(ValueError, match="history is the encounter-history kind"):
        ops.kdk_run(s.pos, s.vel, s.mass, s.acc, s.time, t_stop, 10, net=layers, history=2)
    with pytest.raises(ValueError, match="excludes smooth and orbit"):
        ops.kdk_run(s.pos, s.vel, s.mass, s.acc, s.time, t_stop, 10, net=layers, history=4,
                    smooth=True)
    with pytest.raises(ValueError, match=r"must have shape \(K, out, 14\)"):
        ops.kdk_run(s.pos, s.vel, s.mass, s.acc, s.time, t_stop, 10, net=layers, history=0)
    with pytest.raises(ValueError, match="net and history are for policy 'model'"):
        ops.kdk_run(s.pos, s.vel, s.mass, s.acc, s.time, t_stop, 10, dt=0.01, history=4)


def test_a_window_spanning_more_than_an_aarseth_time_takes_the_exact_derivatives():
    """Steps of about half Aarseth's time: four of them span two, the differences are
    no derivatives any more, and both bodies of a binary take their exact ones (op,
    torch path and native loop alike)."""
    from aits.encounter_history import MAX_SPAN

    tau = float(history_encounter_features(kepler_orbit(0.3, 1.0), [None] * 4)[1])
    s, h = _run(kepler_orbit(0.3, 1.0), 5, 0.5 * tau, 4)
    assert float(s.time - h.window()[0].time) > MAX_SPAN * tau
    for got, want in zip(history_derivatives(h.window(), s)[1:], gravity_derivatives(s)[1:]):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    nodes = [s] + list(reversed(h.window()))
    feats, tau_s, ready = ops.history_encounter_features(
        s.pos, s.vel, s.mass, [n.acc for n in nodes], [n.time for n in nodes], 0.0, 1.0, CLIP)
    assert ready.all()
    exact = history_encounter_features(s, [None] * 4)
    torch.testing.assert_close(feats, exact[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(tau_s, exact[1], rtol=1e-12, atol=0)
    small, hs = _run(kepler_orbit(0.3, 1.0), 5, 0.05 * tau, 4)  # a fifth of a tau: used
    assert not torch.equal(history_derivatives(hs.window(), small)[3],
                           gravity_derivatives(small)[3])


@pytest.mark.parametrize("dim", [2, 3])
def test_only_the_bodies_the_window_does_not_resolve_take_exact_derivatives(dim):
    """A softened cluster on steps near its shortest Aarseth time: the few bodies whose
    own time is shorter than the window's span take their pair sums (the snap and
    crackle from the partners' jerks: exact for those bodies, the differences' for the
    others), every other body keeps the differences; native op and torch path agree."""
    from aits.encounter import per_body
    from aits.encounter_history import MAX_SPAN, _difference_derivatives

    base = (plummer(24, seed=5, softening=0.01) if dim == 3
            else random_system(24, 2, seed=5, softening=0.01)).as_batch().with_acceleration()
    tau = float(history_encounter_features(base, [None] * 4)[1])
    s, h = _run(base, 6, 0.7 * tau, 4)
    window = h.window()
    nodes = [s] + list(reversed(window))
    diff = _difference_derivatives(window, s)
    a = s.acc
    body = per_body(s, (a, *diff))
    unresolved = float(s.time - window[0].time) > MAX_SPAN * body.tau
    assert 0 < int(unresolved.sum()) < 24 // 2
    got = history_derivatives(window, s)
    keep = unresolved[..., None]
    exact_j = reference.aarseth_derivatives(s.pos, s.vel, s.mass, s.softening)[1]
    want_j = torch.where(keep, exact_j, diff[0])
    _, _, want_s, want_c = reference.aarseth_derivatives(
        s.pos, s.vel, s.mass, s.softening, sources=lambda acc, j: (a, want_j))
    torch.testing.assert_close(got[1], want_j, rtol=0, atol=0)
    for g, w, d in zip(got[2:], (want_s, want_c), diff[1:]):
        torch.testing.assert_close(g, torch.where(keep, w, d), rtol=0, atol=0)
    native = ops.history_encounter_features(s.pos, s.vel, s.mass, [n.acc for n in nodes],
                                            [n.time for n in nodes], s.softening, 1.0, CLIP)
    torch_path = history_encounter_features(s, window, native=False)
    assert native[2].all()
    torch.testing.assert_close(native[0], torch_path[0], rtol=0, atol=1e-9)
    torch.testing.assert_close(native[1], torch_path[1], rtol=1e-9, atol=0)


def test_a_window_model_under_symmetric_warns(caplog):
    net = TimeStepNet(FeatureSpec(kind="encounter-history", history_len=4), hidden=[4],
                      output="aarseth", dt_init=0.1).double()
    with caplog.at_level("WARNING", logger="aits.simulation"):
        simulate(kepler_orbit(0.5, 1.0), ModelPolicy(net), integrator="symmetric", steps=5,
                 observers=[])
    assert "reversible recurrence" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="aits.simulation"):
        simulate(kepler_orbit(0.5, 1.0), ModelPolicy(net), steps=5, observers=[])
    assert "reversible recurrence" not in caplog.text
