"""Two-phase training: Part 1 gating, warm-up, retrain cap; Part 2 replay; multi-orbit rounds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aits.config import ConfigError, from_mapping
from aits.training import (
    RetrainLimitError,
    Trainer,
    replay_errors,
    replay_errors_per_sample,
    resolve_device,
    rollout_check,
)

TINY = dict(hidden=[16, 16], steps_per_epoch=20, epochs=2, rollout_steps=0, replay_steps=5,
            replay_batch_size=8, min_replay_size=4, lr=3e-3, quiet=True, plot=False)


def make_trainer(**changes) -> Trainer:
    return Trainer(from_mapping({**TINY, **changes}))


def test_part1_rejects_retrains_and_accepts_only_passing_steps():
    tr = make_trainer(dt_init=1.0)  # far too large: the first attempts must fail
    t0 = tr.live.time.clone()
    traj, m, steps = tr.collect()
    assert m["p1_retrains"] > 0 and m["p1_rejected"] == m["p1_retrains"]
    assert m["p1_accepted"] == 20 and m["p1_acceptance"] < 1
    assert (steps["rel_dE"] < tr.cfg.energy_threshold).all()
    assert m["p1_rel_dE_max"] < tr.cfg.energy_threshold
    # the live system advanced by exactly the accepted steps
    torch.testing.assert_close(tr.live.time - t0, steps["dt"].sum(0), rtol=1e-12, atol=0)
    assert torch.equal(traj.dt, steps["dt"].flatten())
    assert not tr.live.requires_grad


def test_n_steps_per_attempt():
    tr = make_trainer(n_steps=3, steps_per_epoch=4)
    t0 = tr.live.time.clone()
    _, _, steps = tr.collect()
    torch.testing.assert_close(tr.live.time - t0, 3 * steps["dt"].sum(0), rtol=1e-12, atol=0)


def test_warm_up_steps_advance_but_are_not_recorded():
    tr = make_trainer(history_type="delta_mag", history_len=3, steps_per_epoch=5)
    traj, m, _ = tr.collect()
    assert m["p1_accepted"] == 5 and m["p1_recorded"] == 2 == len(traj)
    assert len(traj.window) == 3 and tr.history.is_full
    # recorded states are the start states of rounds 3 and 4: their windows hold 3 real states
    assert all(w is not None for w in traj.window)
    traj2, m2, _ = tr.collect()  # warm-up is per run, not per epoch
    assert m2["p1_recorded"] == 5


def test_retrain_cap_error_names_epoch_step_error_and_threshold():
    tr = make_trainer(dt_init=1.0, lr=1e-12, max_retrain_steps=3)
    with pytest.raises(RetrainLimitError) as err:
        tr.collect()
    e = err.value
    assert (e.epoch, e.step, e.system, e.retrains) == (1, 0, 0, 3)
    msg = str(e)
    assert "epoch 1, step 0" in msg and "energy_threshold 2.000e-04" in msg
    assert f"rel_dE {e.rel_dE:.3e}" in msg and e.rel_dE >= 2e-4


def test_part2_converges_when_every_sample_passes():
    tr = make_trainer()
    traj, _, _ = tr.collect()
    m = tr.replay(traj)  # Part 1 just accepted these with this model
    assert m["p2_converged"] and not m["p2_skipped"]
    assert m["p2_iterations"] >= 1 and m["p2_pass_rate_last"] == 1.0


def test_part2_skips_small_trajectories():
    tr = make_trainer(steps_per_epoch=3, min_replay_size=4)
    traj, _, _ = tr.collect()
    m = tr.replay(traj)
    assert m["p2_skipped"] and m["p2_iterations"] == 0 and not m["p2_converged"]


def test_part2_stops_after_replay_steps_and_never_modifies_recorded_states():
    tr = make_trainer(replay_steps=4)
    traj, _, _ = tr.collect()
    before = [t.clone() for t in (traj.states.pos, traj.states.vel, traj.states.acc,
                                  traj.states.time, traj.dt)]
    with torch.no_grad():  # now every step is far too large, and the optimiser cannot fix it
        tr.model.head.bias += 8.0
    for g in tr.optimizer.param_groups:
        g["lr"] = 0.0
    m = tr.replay(traj)
    assert not m["p2_converged"] and m["p2_iterations"] == 4 and m["p2_pass_rate_last"] < 1
    after = (traj.states.pos, traj.states.vel, traj.states.acc, traj.states.time, traj.dt)
    assert all(torch.equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("history", [dict(), dict(history_type="delta_mag", history_len=2),
                                     dict(history_type="basic", history_len=1)])
def test_batched_part2_equals_per_sample_loop(history):
    tr = make_trainer(num_orbits=3, e_range=[0.3, 0.9], steps_per_epoch=6, **history)
    traj, _, _ = tr.collect()
    tr.model.eval()
    idx = torch.tensor([5, 0, 3, 7])
    from aits.training import _take_window

    states, window = traj.states.index(idx), _take_window(traj.window, idx)
    dt_b, rel_b = replay_errors(tr.model, states, window, tr.gate, n_steps=2)
    dt_s, rel_s = replay_errors_per_sample(tr.model, states, window, tr.gate, n_steps=2)
    dt_c, rel_c = traj.errors(tr.model, idx, tr.gate, n_steps=2)  # Part 2's cached path
    for dt, rel in ((dt_s, rel_s), (dt_c, rel_c)):
        torch.testing.assert_close(dt_b, dt, rtol=1e-12, atol=0)
        torch.testing.assert_close(rel_b, rel, rtol=1e-9, atol=1e-18)
    # the gradient of the mean loss agrees too
    g = []
    for dt, rel in ((dt_b, rel_b), (dt_s, rel_s), (dt_c, rel_c)):
        tr.model.zero_grad()
        tr.gate.loss(rel, dt).mean().backward()
        g.append(torch.cat([p.grad.flatten() for p in tr.model.parameters()]))
    torch.testing.assert_close(g[0], g[1], rtol=1e-8, atol=1e-14)
    torch.testing.assert_close(g[0], g[2], rtol=1e-8, atol=1e-14)


class NoFeatures:
    history_dim = 0

    def __call__(self, states, window=None):
        return states.pos.new_zeros(states.batch_shape + (1,))


class FixedRatioDt(nn.Module):
    """dt = exp(s) * base (one base dt per system, one learnable scalar s)."""

    output = "direct"

    def __init__(self, base: torch.Tensor) -> None:
        super().__init__()
        self.base = base
        self.s = nn.Parameter(torch.zeros((), dtype=base.dtype))
        self.spec = NoFeatures()
        self.calls = 0

    def inputs(self, state, history=None):
        return self.spec(state, history), None

    def predict_dt(self, state, history=None):
        self.calls += 1
        return self.s.exp() * self.base


def test_multi_orbit_each_system_gated_on_its_own_error():
    tr = make_trainer(num_orbits=2, e_range=[0.5, 0.5], a_range=[1.0, 1.0], steps_per_epoch=1,
                      optimizer="sgd", lr=0.05)
    # system 0 passes with its first dt; system 1's first dt is far too large
    model = FixedRatioDt(torch.tensor([1e-3, 0.8], dtype=torch.float64))
    tr.model, tr.optimizer = model, torch.optim.SGD(model.parameters(), lr=0.05)
    start = tr.live
    traj, m, steps = tr.collect()
    assert m["p1_retrains"] > 0 and model.calls == m["p1_retrains"] + 1
    # system 0 kept its first-attempt step (it passed and was not retried) ...
    assert steps["dt"][0, 0].item() == 1e-3
    # ... system 1 was retrained until its own step passed, with a smaller dt
    assert steps["dt"][0, 1].item() < 0.8
    assert (steps["rel_dE"][0] < tr.cfg.energy_threshold).all()
    # both advanced once, each by its own accepted dt; both start states recorded
    torch.testing.assert_close(tr.live.time - start.time, steps["dt"][0], rtol=1e-12, atol=0)
    assert m["p1_accepted"] == 2 and len(traj) == 2
    # only the failing system is in the loss: rejected counts system-attempts
    assert m["p1_rejected"] == m["p1_retrains"]


def test_multi_orbit_epoch_advances_every_system_in_rounds():
    tr = make_trainer(num_orbits=3, steps_per_epoch=5)
    metrics, steps = tr.run_epoch()
    assert steps["dt"].shape == (5, 3) and metrics["p1_accepted"] == 15
    assert metrics["p1_recorded"] == 15 and tr.rounds == 5 and tr.epoch == 1


def test_device_cuda_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError, match="'device' is 'cuda' but CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_float32_training_and_rollout_check():
    tr = make_trainer(dtype="float32", steps_per_epoch=8)
    tr.run_epoch()
    assert tr.live.dtype == torch.float32 and next(tr.model.parameters()).dtype == torch.float32
    c = rollout_check(tr.model, tr.initial, tr.gate, steps=10)
    assert 0 <= c["pass_fraction"] <= 1 and c["mean_dt"] > 0 and c["steps"] == 10
    assert tr.model.training  # the check restores the mode
