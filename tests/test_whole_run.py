"""Whole-run training (aits.whole_run), the generalist population (aits.population) and
the two-sided band of the gated phases."""

from __future__ import annotations

import json
import math

import pytest
import torch

from aits.config import ConfigError, from_mapping
from aits.population import generalist, random_rotations
from aits.training import Trainer
from aits.gate import relative_energy_error
from aits.whole_run import WholeRunTrainer, bounded_error, time_unit
from helpers import whole_run_resume_matches

TINY = dict(objective="whole-run", hidden=[8], window=4, windows_per_epoch=3, restart_windows=2,
            epochs=1, rollout_steps=0, quiet=True, plot=False, lr=1e-2)


def make(**changes) -> WholeRunTrainer:
    return WholeRunTrainer(from_mapping({**TINY, **changes}))


def _mean_dt(tr: WholeRunTrainer) -> float:
    tr.model.eval()
    with torch.no_grad():
        return float(tr.model.predict_dt(tr.live[0].state).mean())


# ----------------------------------------------------------------------------- population


def test_rotations_are_proper_and_orthonormal():
    R = random_rotations(torch.Generator().manual_seed(1), 50)
    eye = torch.eye(3, dtype=R.dtype).expand(50, 3, 3)
    torch.testing.assert_close(R @ R.transpose(-1, -2), eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.det(R), torch.ones(50, dtype=R.dtype), atol=1e-12, rtol=0)


def test_generalist_groups_are_bound_reproducible_and_varied():
    groups = generalist()
    assert [g.name for g in groups] == ["binaries", "triples", "plummer16", "plummer64", "cold32"]
    for g in groups:
        a = g.draw(torch.Generator().manual_seed(3), torch.float64, torch.device("cpu"))
        b = g.draw(torch.Generator().manual_seed(3), torch.float64, torch.device("cpu"))
        c = g.draw(torch.Generator().manual_seed(4), torch.float64, torch.device("cpu"))
        assert a.is_batched and a.dim == 3
        assert torch.equal(a.pos, b.pos) and torch.equal(a.vel, b.vel)  # seeded
        assert not torch.equal(a.pos, c.pos)
        assert (a.total_energy() < 0).all(), g.name  # every drawn system is bound
        com = (a.mass.unsqueeze(-1) * a.pos).sum(-2) / a.mass.sum(-1, keepdim=True)
        assert com.abs().max() < 1e-10 * a.pos.abs().max()


def test_generalist_binaries_cover_the_ranges():
    g = generalist()[0]
    s = g.draw(torch.Generator().manual_seed(0), torch.float64, torch.device("cpu"))
    q = s.mass.amin(-1) / s.mass.amax(-1)
    assert q.min() < 0.05 and q.max() > 0.3  # log-uniform mass ratios in [1e-3, 1]
    # eccentricity from the energy and angular momentum of the relative orbit
    r, v = s.pos[:, 1] - s.pos[:, 0], s.vel[:, 1] - s.vel[:, 0]
    M = s.mass.sum(-1)
    a = 1 / (2 / r.norm(dim=-1) - v.square().sum(-1) / M)
    h = torch.linalg.cross(r, v).norm(dim=-1)
    e = (1 - h.square() / (M * a)).clamp_min(0).sqrt()
    assert e.min() >= 0 and e.max() < 0.995 + 1e-9 and e.max() > 0.8


def test_time_unit_scales_like_a_dynamical_time():
    g = generalist()[0]
    s = g.draw(torch.Generator().manual_seed(0), torch.float64, torch.device("cpu"))
    bigger = s.replace(pos=4 * s.pos, vel=s.vel / 2)  # lengths x4, G M fixed: times x8
    torch.testing.assert_close(time_unit(bigger), 8 * time_unit(s), rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------- the trainer


@pytest.mark.parametrize("integrator", ["kdk", "symmetric"])
def test_window_gradients_are_finite_and_reach_every_layer(integrator):
    tr = make(rollout_integrator=integrator)
    loss, state, carry, out = tr.window_loss(tr.live[0])
    loss.backward()
    assert math.isfinite(float(loss.detach()))
    for name, p in tr.model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert tr.model.head.bias.grad.abs() > 0
    assert out["dt"].shape == (4, tr.live[0].state.batch_size) and (out["dt"] > 0).all()


def test_a_window_ends_where_a_state_turns_non_finite(monkeypatch):
    """A system whose state becomes NaN mid-window would get a NaN dt, which the step
    refuses: the window stops there, the system counts as blown up and is redrawn,
    and the gradients stay finite."""
    tr = make(window=6, population="generalist")
    step, calls = tr.integrator.step, []

    def poisoned(state, carry, *args):
        state, dt, carry, info = step(state, carry, *args)
        calls.append(1)
        if len(calls) == 2:  # system 0 blows up on the window's second step
            bad = torch.zeros(state.batch_shape, dtype=torch.bool)
            bad[0] = True
            nan = torch.full_like(state.pos, math.nan)
            state = state.replace(pos=torch.where(bad[:, None, None], nan, state.pos))
        return state, dt, carry, info

    monkeypatch.setattr(tr.integrator, "step", poisoned)
    loss, _, _, out = tr.window_loss(tr.live[0])
    assert len(calls) == 2 and out["dt"].shape[0] == 2
    assert not out["finite"][0] and out["finite"][1:].all()
    loss.backward()
    assert math.isfinite(float(loss.detach()))
    assert all(torch.isfinite(p.grad).all() for p in tr.model.parameters() if p.grad is not None)
    calls.clear()
    before = tr.live[0]
    assert tr.run_window(0)["blown"] >= 1 and tr.live[0] is not before  # drawn afresh


def test_a_non_finite_dt_of_a_finite_state_ends_the_window(monkeypatch):
    """A finite state whose time scale overflows (a body flung out: the free-fall time
    is inf) gets an infinite dt: mid-window the window stops there and the system counts
    as blown up; at a window's end the group is drawn afresh rather than starting the
    next window on it."""
    tr = make(window=6, restart_windows=10, population="generalist")
    predict, calls = tr.model.predict_dt, []
    overflow = {"call": 3, "in_eval": False}  # which call gives system 1 an infinite dt

    def overflowing(state, history=None, **kw):
        dt = predict(state, history, **kw)
        calls.append(tr.model.training)
        if len(calls) == overflow["call"] or (overflow["in_eval"] and not tr.model.training):
            dt = torch.where(torch.arange(dt.shape[0]) == 1, math.inf, dt)
        return dt

    monkeypatch.setattr(tr.model, "predict_dt", overflowing)
    loss, _, _, out = tr.window_loss(tr.live[0])
    assert out["dt"].shape[0] == 2 and not out["finite"][1]
    assert out["finite"][0] and out["finite"][2:].all()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in tr.model.parameters() if p.grad is not None)
    calls.clear()
    overflow["call"] = 1  # the window's first step
    with pytest.raises(RuntimeError, match=r"non-finite dt for systems \[1\] at the start"):
        tr.window_loss(tr.live[0])
    overflow["call"] = 0
    before = tr.live[0]
    assert tr.run_window(0)["blown"] == 0 and tr.live[0] is before
    assert calls[-1] is False  # the end-of-window check ran the model in eval mode
    overflow["in_eval"] = True  # now that check gives an infinite dt
    out = tr.run_window(0)
    assert out["blown"] == 1 and tr.live[0] is not before


def test_cost_term_grows_dt_under_the_budget_and_the_error_shrinks_it_over():
    loose = make(run_budget=1.0, dt_init=0.05)  # far under budget: only the cost acts
    before = _mean_dt(loose)
    for _ in range(3):
        loose.run_window(0)
    assert _mean_dt(loose) > before
    tight = make(run_budget=1e-12, dt_init=0.3)  # far over budget: the error dominates
    before = _mean_dt(tight)
    for _ in range(3):
        tight.run_window(0)
    assert _mean_dt(tight) < before


def test_error_is_measured_from_the_draw_not_the_window():
    tr = make(restart_windows=10, lr=1e-12)
    first = tr.run_window(0)
    second = tr.run_window(0)
    assert not first["restarted"] and not second["restarted"]
    E_draw = tr.initial.total_energy()
    expected = (tr.live[0].state.total_energy() - E_draw).abs() / E_draw.abs()
    torch.testing.assert_close(second["err"][-1], expected, rtol=1e-12, atol=0)
    # the second window starts at the first's end: its time continues
    torch.testing.assert_close(second["t0"], first["t0"] + first["dt"].to(torch.float64).sum(0))


def test_bound_is_the_inherited_error_plus_the_windows_own():
    f64 = torch.float64
    E0, scale = torch.tensor([-1.0, -2.0], dtype=f64), torch.tensor([3.0, 6.0], dtype=f64)
    E_start = torch.tensor([-1.01, -2.0], dtype=f64)  # 1 % inherited; none
    E = torch.tensor([-1.0, -2.002], dtype=f64)  # back at E0 (measured 0); 0.1 % new
    bound = bounded_error(E0, E_start, E, scale, 1e-3)
    torch.testing.assert_close(bound, torch.tensor([0.02, 1e-3], dtype=f64), rtol=1e-12, atol=0)
    assert (bound >= relative_energy_error(E0, E, scale, 1e-3)).all()


def test_the_bound_loss_does_not_reward_cancelling_inherited_error():
    """Two windows from a state that inherited an energy excess: the measured error can
    fall when the window's own error has the other sign, the bound cannot; in a
    system's first window the two settings give the same loss."""
    common = dict(restart_windows=10, lr=1e-12, run_budget=1e-14, cost_weight=1e-9)
    bound, measured = make(window_error="bound", **common), make(window_error="measured", **common)
    first = [tr.window_loss(tr.live[0])[0] for tr in (bound, measured)]
    torch.testing.assert_close(first[0], first[1], rtol=1e-12, atol=0)
    for tr in (bound, measured):
        tr.run_window(0)
        tr.run_window(0)
    later = [tr.window_loss(tr.live[0])[0] for tr in (bound, measured)]
    assert later[0] >= later[1]


def test_grad_clip_bounds_the_gradient_norm_of_every_step():
    from aits.training import optimiser_step

    for clip in (0.0, 1e-3):
        tr = make(grad_clip=clip, dt_init=0.3, run_budget=1e-12)
        loss = tr.window_loss(tr.live[0])[0]
        optimiser_step(tr.cfg, tr.model, tr.optimizer, loss)
        norm = torch.linalg.vector_norm(torch.stack(
            [p.grad.norm() for p in tr.model.parameters() if p.grad is not None]))
        assert (norm <= 1e-3 * (1 + 1e-5)) if clip else (norm > 1e-3)


def test_groups_restart_after_restart_windows():
    tr = make(restart_windows=2)
    start = tr.live[0].state.time.clone()
    assert not tr.run_window(0)["restarted"]
    assert tr.run_window(0)["restarted"]
    assert torch.equal(tr.live[0].state.time, torch.zeros_like(start))
    assert tr.live[0].windows == 0


def test_generalist_epoch_visits_every_group():
    tr = make(population="generalist", windows_per_epoch=5)
    times = [g.state.time.clone() for g in tr.live]
    metrics, steps = tr.run_epoch()
    assert tr.rounds == 5 and metrics["wr_windows"] == 5
    for g, t in zip(tr.live, times, strict=True):
        assert (g.state.time > t).all()
    assert steps["dt"].shape == (4, 24) and math.isfinite(metrics["wr_loss"])


def test_whole_run_cli_resume_is_bit_exact(tmp_path):
    common = ["--objective", "whole-run", "--hidden", "8", "--window", "4",
              "--windows-per-epoch", "3", "--restart-windows", "2", "--rollout-steps", "10",
              "--quiet"]
    whole_run_resume_matches(tmp_path, common, 3)
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert summary["objective"] == "whole-run" and summary["windows"] == 9
    assert "rollout windows" in (tmp_path / "full" / "summary.txt").read_text()


def test_a_gate_checkpoint_does_not_resume_as_whole_run(tmp_path):
    tr = Trainer(from_mapping(dict(hidden=[8], steps_per_epoch=3, rollout_steps=0, quiet=True)))
    wr = make()
    with pytest.raises(Exception, match="not a whole-run checkpoint"):
        wr.load_state_dict(tr.state_dict())


@pytest.mark.parametrize("settings, message", [
    (dict(window=8), "does not apply without objective = 'whole-run'"),
    (dict(population="generalist"), "does not apply without objective = 'whole-run'"),
    (dict(objective="whole-run", band="two-sided"), "belongs to the two gated phases"),
    (dict(objective="whole-run", replay_steps=3), "belongs to the two gated phases"),
    (dict(objective="whole-run", history_type="delta_mag", history_len=2), "history_type"),
    (dict(objective="whole-run", rollout_integrator="ttl"), "rollout_integrator"),
    (dict(objective="whole-run", run_budget=0.0), "run_budget"),
    (dict(window_error="bound"), "does not apply without objective = 'whole-run'"),
    (dict(objective="whole-run", window_error="inherited"), "window_error"),
    (dict(grad_clip=-1.0), "grad_clip"),
])
def test_settings_that_do_not_fit_are_refused(settings, message):
    with pytest.raises(ConfigError, match=message):
        from_mapping(settings)


# ------------------------------------------------------------------------ two-sided band


def test_two_sided_band_grows_steps_that_are_far_too_small():
    common = dict(hidden=[8], steps_per_epoch=5, rollout_steps=0, quiet=True, dt_init=0.005,
                  lr=1e-2, replay_steps=3, min_replay_size=4, replay_batch_size=4)
    one = Trainer(from_mapping(common))
    two = Trainer(from_mapping({**common, "band": "two-sided"}))
    m_one, _ = one.run_epoch()
    m_two, _ = two.run_epoch()
    assert m_one["p1_rel_dE_max"] < 1e-6  # every step far below E_lower
    assert m_one["p1_retrains"] == 0 and m_one["p1_raised"] == 0
    assert m_two["p1_raised"] == 5
    one.model.eval(), two.model.eval()
    s = one.initial
    with torch.no_grad():
        assert float(two.model.predict_dt(s)) > 1.5 * float(one.model.predict_dt(s))
