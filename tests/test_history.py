"""HistoryBuffer: zero padding, warm-up, detaching, finite padded features, batches."""

import pytest
import torch

from aits.features import FeatureSpec, history_features
from aits.history import HistoryBuffer
from aits.ics import kepler_orbit, random_system
from aits.state import step

f64 = torch.float64


def test_zero_padding_and_warm_up():
    h = HistoryBuffer(3)
    s = kepler_orbit(0.5)
    assert len(h) == 0 and h.n_padded == 3 and not h.is_full and h.window() == [None] * 3
    spec = FeatureSpec("basic", "delta_mag", 3)
    f = spec(s, h)
    assert f.shape == (11 + 30,) and (f[11:] == 0).all()
    states = [s]
    for _ in range(4):
        states.append(step(states[-1], 0.01))
    h.push(states[0])
    w = h.window()
    assert w[:2] == [None, None] and w[2] is not None and len(h) == 1
    f = spec(states[1], h)
    assert (f[11:31] == 0).all() and (f[31:] != 0).all()  # only the newest pair is real
    assert f[-1].item() == pytest.approx(0.01)
    h.push(states[1])
    h.push(states[2])
    assert h.is_full and h.n_padded == 0
    h.push(states[3])  # the oldest drops out
    assert len(h) == 3
    torch.testing.assert_close(h.states()[0].pos, states[1].pos)
    torch.testing.assert_close(h.states()[-1].time, states[3].time)
    f = spec(states[4], h)
    assert (f[11:] != 0).all()
    h.reset()
    assert len(h) == 0


@pytest.mark.parametrize("kind", ["delta_mag", "basic", "rich"])
@pytest.mark.parametrize("batch", [None, 3])
def test_padded_slots_give_finite_features(kind, batch):
    s = random_system(5, 3, batch=batch, seed=1)
    h = HistoryBuffer(6)  # K larger than the number of pushed states
    h.push(s)
    s1 = step(s, 0.02)
    h.push(s1)
    f = history_features(kind, h.window(), step(s1, 0.02))
    per = 10 if kind == "delta_mag" else (11 if kind == "basic" else 23)
    assert f.shape == s.batch_shape + (6 * per,)
    assert torch.isfinite(f).all()
    n_real_blocks = 2  # two pushed states: 2 stored analytic blocks, or 2 real pairs
    assert (f[..., : (6 - n_real_blocks) * per] == 0).all()
    assert (f[..., (6 - n_real_blocks) * per :].abs().sum(-1) > 0).all()


def test_zero_length_history():
    h = HistoryBuffer(0)
    s = random_system(4, 2, batch=2)
    h.push(s)
    assert len(h) == 0 and h.is_full and h.window() == []
    spec = FeatureSpec("rich", "delta_mag", 0)
    f = spec(s, h)
    assert f.shape == (2, 23) and torch.isfinite(f).all()
    assert history_features("basic", [], s).shape == (2, 0)


def test_stored_states_are_detached_copies():
    s = kepler_orbit(0.3)
    dt = torch.tensor(0.01, dtype=f64, requires_grad=True)
    s1 = step(s, dt)
    h = HistoryBuffer(2)
    h.push(s1)
    h.push(s)  # no cached acc: the buffer fills it in
    stored = h.states()
    assert not any(t.requires_grad for t in (stored[0].pos, stored[0].vel, stored[0].acc))
    assert stored[0].pos.grad_fn is None and stored[1].acc is not None
    assert stored[0].pos.data_ptr() != s1.pos.data_ptr()
    s1.total_energy().backward()  # the live graph still works and is independent
    assert dt.grad is not None


def test_push_without_copy_keeps_the_state_itself_detached():
    s = kepler_orbit(0.3)
    dt = torch.tensor(0.01, dtype=f64, requires_grad=True)
    s1 = step(s, dt)
    h = HistoryBuffer(2)
    h.push(s1, copy=False)
    h.push(s, copy=False)  # no cached acc: the buffer fills it in
    stored = h.states()
    assert stored[0].pos.data_ptr() == s1.pos.data_ptr() and stored[0].pos.grad_fn is None
    assert stored[1].pos.data_ptr() == s.pos.data_ptr() and stored[1].acc is not None


def test_invalid_use_raises():
    with pytest.raises(ValueError, match="length must be an int >= 0"):
        HistoryBuffer(-1)
    h = HistoryBuffer(2)
    h.push(random_system(4, 3))
    with pytest.raises(ValueError, match="call reset\\(\\) first"):
        h.push(random_system(5, 3))
    with pytest.raises(TypeError, match="expects a SystemState"):
        h.push("state")
