"""Time-step policies: classical criteria against hand values, derivatives against
forward-mode autodiff, the model policy from a checkpoint, and read-only states."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import jvp

from aits import reference
from aits.checkpoint import save_checkpoint
from aits.features import FeatureSpec
from aits.history import HistoryBuffer
from aits.ics import kepler_orbit, plummer
from aits.model import TimeStepNet
from aits.policies import (
    AarsethPolicy,
    CollisionalPolicy,
    FixedPolicy,
    FreeFallPolicy,
    ModelPolicy,
    make_policy,
    resolve_checkpoint,
)
from aits.state import SystemState, stack, step

F64 = torch.float64


def _three_bodies(G: float = 1.0, softening: float = 0.0) -> SystemState:
    pos = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], dtype=F64)
    vel = torch.tensor([[0.0, 0.0], [0.0, 0.5], [0.25, 0.0]], dtype=F64)
    mass = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    return SystemState(pos, vel, mass, softening=softening, G=G)


def _circular(a: float = 2.0) -> tuple[SystemState, float]:
    """Equal-mass circular binary (M = 1) and its angular frequency."""
    return kepler_orbit(0.0, a), math.sqrt(1.0 / a**3)


def test_fixed_policy_shape_and_value():
    s = _three_bodies()
    assert float(FixedPolicy(0.125)(s)) == 0.125
    batch = stack([s, s, s])
    dt = FixedPolicy(0.125)(batch)
    assert dt.shape == (3,) and dt.dtype == F64


def test_freefall_hand_values():
    # pairs: (0,1) r=1, m=3 -> sqrt(1/3); (0,2) r=2, m=4 -> sqrt(2); (1,2) r=sqrt5, m=5 -> 5^(1/4)
    s = _three_bodies(G=2.0)
    assert float(FreeFallPolicy(0.1)(s)) == pytest.approx(0.1 * math.sqrt(1 / 6), rel=1e-12)
    c, w = _circular(2.0)  # sqrt(a^3 / (G M)) = 1 / omega
    assert float(FreeFallPolicy(0.3)(c)) == pytest.approx(0.3 / w, rel=1e-12)


def test_collisional_hand_values():
    # circular orbit: r / |v_rel| = 1 / omega and sqrt(r / |a_rel|) = 1 / omega
    c, w = _circular(2.0)
    assert float(CollisionalPolicy(0.05)(c)) == pytest.approx(0.05 / w, rel=1e-12)
    # three bodies by hand: a0 = 2 (1,0) + 3 (0,2)/8 = (2, 0.75); a1 = -(1,0) + 3 (-1,2)/5^1.5;
    s = _three_bodies()
    k = 3 / 5**1.5
    a = [(2.0, 0.75), (-1 - k, 2 * k), (2 / 5**1.5, -0.25 - 4 / 5**1.5)]
    x = [(0.0, 0.0), (1.0, 0.0), (0.0, 2.0)]
    v = [(0.0, 0.0), (0.0, 0.5), (0.25, 0.0)]
    best = math.inf
    for i in range(3):
        for j in range(i + 1, 3):
            r = math.dist(x[i], x[j])
            best = min(best, r / math.dist(v[i], v[j]), math.sqrt(r / math.dist(a[i], a[j])))
    assert float(CollisionalPolicy(0.2)(s)) == pytest.approx(0.2 * best, rel=1e-12)


def test_aarseth_hand_value_on_circular_orbit():
    # |a| = w^2 r, |j| = w^3 r, |s| = w^4 r, |c| = w^5 r -> dt = sqrt(eta) / w
    c, w = _circular(2.0)
    assert float(AarsethPolicy(0.02)(c)) == pytest.approx(math.sqrt(0.02) / w, rel=1e-10)


@pytest.mark.parametrize("softening", [0.0, 0.1])
def test_aarseth_derivatives_match_forward_mode_autodiff(softening):
    """jerk, snap, crackle = 1st..3rd time derivatives of a(x(t)) with dx/dt = v, dv/dt = a."""
    s = plummer(6, seed=3, softening=softening, dtype=F64)
    G, eps = s.G, s.softening

    def acc(x):
        return reference.accelerations(x, s.mass, eps, G)

    def jerk(x, v):
        return jvp(acc, (x,), (v,))[1]

    def snap(x, v):
        return jvp(jerk, (x, v), (v, acc(x)))[1]

    def crackle(x, v):
        return jvp(snap, (x, v), (v, acc(x)))[1]

    got = AarsethPolicy(0.01).derivatives(s)
    want = (acc(s.pos), jerk(s.pos, s.vel), snap(s.pos, s.vel), crackle(s.pos, s.vel))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9 * float(w.abs().max()))


# dt of AarsethPolicy(eta) as the pure-torch implementation gave it before the
# native op (aits 0.1.0 at 02ff3e6): the op must not change the criterion.
AARSETH_DT_BEFORE = [
    (lambda: plummer(64, seed=5, softening=0.05, dtype=F64), 0.01, [0.0023458858837221]),
    (lambda: plummer(50, seed=7, softening=0.0, dtype=F64), 0.01, [0.003132415440749221]),
    (lambda: kepler_orbit(0.9, dtype=F64), 0.01, [0.18518909255137034]),
    (lambda: stack([plummer(40, seed=i, softening=0.01, dtype=F64) for i in range(3)]), 0.02,
     [0.004995973901871084, 0.004269721008984543, 0.0007696227558968023]),
]


@pytest.mark.parametrize("case", range(len(AARSETH_DT_BEFORE)))
def test_aarseth_dt_is_unchanged_by_the_native_derivatives(case):
    make, eta, before = AARSETH_DT_BEFORE[case]
    s = make()
    dt = AarsethPolicy(eta)(s)
    torch.testing.assert_close(dt.reshape(-1), torch.tensor(before, dtype=F64), rtol=1e-12, atol=0)
    # and the same criterion on the pure-torch reference derivatives
    a, j, sn, c = (t.norm(dim=-1) for t in reference.aarseth_derivatives(
        s.pos, s.vel, s.mass, s.softening, s.G))
    want = (eta * (a * sn + j * j) / (j * c + sn * sn)).amin(-1).sqrt()
    torch.testing.assert_close(dt, want, rtol=1e-12, atol=0)


def test_criteria_are_batched_and_chunk_independent():
    s = plummer(20, seed=1, softening=0.01, dtype=F64).with_acceleration()
    t = plummer(20, seed=2, softening=0.01, dtype=F64).with_acceleration()
    batch = stack([s, t])
    whole, chunked = CollisionalPolicy(0.1), CollisionalPolicy(0.1, chunk_elements=50)
    torch.testing.assert_close(chunked(batch), whole(batch), rtol=1e-12, atol=0)
    for policy in (whole, AarsethPolicy(0.1)):
        dt = policy(batch)
        assert dt.shape == (2,)
        torch.testing.assert_close(dt[0], policy(s), rtol=1e-12, atol=0)
        torch.testing.assert_close(dt[1], policy(t), rtol=1e-12, atol=0)
    assert FreeFallPolicy(0.1)(batch).shape == (2,)


@pytest.mark.parametrize("name", ["fixed", "freefall", "collisional", "aarseth"])
def test_eta_and_dt_must_be_positive(name):
    kw = {"dt": 0.0} if name == "fixed" else {"eta": -1.0}
    with pytest.raises(ValueError, match="must be finite and > 0"):
        make_policy(name, **kw)


def test_make_policy_errors():
    with pytest.raises(ValueError, match="unknown policy 'rk4'; valid: model, fixed"):
        make_policy("rk4")
    with pytest.raises(ValueError, match="needs eta"):
        make_policy("aarseth")
    with pytest.raises(ValueError, match=r"needs a step \(--dt\)"):
        make_policy("fixed")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_policy("model", checkpoint="/nonexistent/x.pt")


def _small_net(history: str | None = None, history_len: int = 0) -> TimeStepNet:
    spec = FeatureSpec(kind="basic", history=history, history_len=history_len, normalize="state")
    return TimeStepNet(spec, hidden=[8], dropout=0.0, output="dynamical", dt_init=0.05).double()


def _save(net: TimeStepNet, path) -> None:
    save_checkpoint(path, {"model_config": net.config(), "model": net.state_dict()})


def test_model_policy_from_checkpoint_file_and_run_dir(tmp_path):
    net = _small_net()
    run = tmp_path / "run"
    _save(net, run / "checkpoints" / "epoch_0001.pt")
    _save(net, run / "checkpoints" / "epoch_0002.pt")
    assert resolve_checkpoint(run).name == "epoch_0002.pt"
    s = kepler_orbit(0.7)
    want = net.predict_dt(s)
    for path in (run, run / "checkpoints" / "epoch_0001.pt"):
        pol = make_policy("model", checkpoint=path)
        assert isinstance(pol, ModelPolicy) and pol.history_len == 0
        torch.testing.assert_close(pol(s), want)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resolve_checkpoint(tmp_path)


def test_model_policy_refuses_a_foreign_file(tmp_path):
    bad = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="not an aits checkpoint"):
        make_policy("model", checkpoint=bad)


def test_history_model_needs_its_buffer(tmp_path):
    pol = ModelPolicy(_small_net("delta_mag", 2))
    assert pol.history_len == 2
    s = kepler_orbit(0.5).with_acceleration()
    with pytest.raises(ValueError, match="uses 2 past states"):
        pol(s)
    h = HistoryBuffer(2)
    h.push(s)
    dt = pol(step(s, 0.01), h)
    assert dt.shape == () and float(dt) > 0


def _snapshot(s: SystemState) -> list[torch.Tensor]:
    return [t.clone() for t in (s.pos, s.vel, s.mass, s.time)]


@pytest.mark.parametrize("cached_acc", [False, True])
def test_policies_never_modify_the_state(cached_acc):
    s = plummer(12, seed=0, softening=0.05, dtype=F64)
    if cached_acc:
        s = s.with_acceleration()
    acc_before = None if s.acc is None else s.acc.clone()
    before = _snapshot(s)
    h = HistoryBuffer(2)
    h.push(s)
    policies = [FixedPolicy(0.1), FreeFallPolicy(0.1), CollisionalPolicy(0.1), AarsethPolicy(0.01),
                ModelPolicy(_small_net()), ModelPolicy(_small_net("delta_mag", 2))]
    for pol in policies:
        dt = pol(s, h)
        assert dt.shape == () and float(dt) > 0, pol
        for a, b in zip(_snapshot(s), before):
            assert torch.equal(a, b), pol
        assert (s.acc is None) == (acc_before is None)
        if acc_before is not None:
            assert torch.equal(s.acc, acc_before)
