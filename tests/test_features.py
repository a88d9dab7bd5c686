"""Analytic and history features: dimensions, values, invariance, finiteness, chunking."""

import functools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import aits.features as features
from aits import ops
from aits.features import (
    BASIC_NAMES,
    RICH_NAMES,
    FeatureScales,
    FeatureSpec,
    analytic_features,
    feature_names,
    history_features,
    min_freefall_time,
    pairwise_stats,
    pairwise_stats_chunked,
)
from aits.ics import random_system
from aits.state import SystemState, step

f64 = torch.float64


def test_dimensions_and_names():
    assert len(BASIC_NAMES) == 11 and len(RICH_NAMES) == 23 and len(set(RICH_NAMES)) == 23
    s = random_system(5, 3, batch=4)
    assert analytic_features(s, "basic").shape == (4, 11)
    assert analytic_features(s, "rich").shape == (4, 23)
    assert analytic_features(random_system(5, 2), "rich").shape == (23,)
    assert analytic_features(s, "encounter").shape == (4, 14)
    assert FeatureSpec("encounter", "delta_mag", 1).dim == 14 + 10
    assert len(feature_names("delta_mag")) == 10
    spec = FeatureSpec("rich", "delta_mag", 3)
    assert spec.dim == 23 + 30
    assert FeatureSpec("basic", "rich", 2).dim == 11 + 46
    with pytest.raises(ValueError, match="unknown feature kind 'x'"):
        feature_names("x")
    with pytest.raises(ValueError, match="unknown analytic feature kind 'delta_mag'"):
        analytic_features(s, "delta_mag")


def test_basic_features_of_a_hand_computed_system():
    pos = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]], dtype=f64)
    vel = torch.tensor([[1.0, 0.0], [0.0, 0.0], [-1.0, 0.0]], dtype=f64)
    s = SystemState(pos, vel, torch.ones(3, dtype=f64))
    f = dict(zip(RICH_NAMES, analytic_features(s, "rich").tolist()))
    com = torch.tensor([1.0, 4 / 3], dtype=f64)
    r = (pos - com).norm(dim=-1)
    acc = ops.accelerations(pos, s.mass).norm(dim=-1)
    want = {
        "n_bodies": 3, "dim": 2, "total_mass": 3, "mean_r_com": r.mean(), "max_r_com": r.max(),
        "mean_speed": 2 / 3, "max_speed": 1.0, "mean_acc": acc.mean(), "max_acc": acc.max(),
        "min_pair_dist": 3.0, "mean_pair_dist": 4.0, "max_pair_dist": 5.0, "min_speed": 0.0,
        "rms_speed": math.sqrt(2 / 3), "std_mass": 0.0, "softening": 0.0,
    }
    for k, v in want.items():
        assert f[k] == pytest.approx(float(v), rel=1e-12, abs=1e-12), k


@pytest.mark.parametrize(
    "impl",
    [pairwise_stats]
    + [functools.partial(pairwise_stats_chunked, chunk_elements=c) for c in (1, 7, 1 << 20)],
    ids=["native", "chunk1", "chunk7", "chunk1M"],
)
def test_pairwise_stats_match_brute_force(impl):
    s = random_system(9, 3, batch=2, seed=4, softening=0.1, G=2.0)
    p = impl(s.pos, s.mass, 0.1, 2.0, freefall=True)
    d = (torch.cdist(s.pos, s.pos) ** 2 + 0.1**2).sqrt()  # softened distances
    off = ~torch.eye(9, dtype=torch.bool)
    torch.testing.assert_close(p.min_dist, d[:, off].amin(-1))
    torch.testing.assert_close(p.mean_dist, d[:, off].mean(-1))
    torch.testing.assert_close(p.max_dist, d[:, off].amax(-1))
    msum = s.mass[:, :, None] + s.mass[:, None, :]
    tff = (d**3 / (2.0 * msum)).sqrt()
    torch.testing.assert_close(p.min_freefall, tff[:, off].amin(-1))
    torch.testing.assert_close(min_freefall_time(s), p.min_freefall)


def test_pairwise_loop_never_builds_an_n_by_n_tensor(monkeypatch):
    shapes = []
    real = torch.cdist

    def spy(a, b, *args, **kwargs):
        shapes.append((a.shape, b.shape))
        return real(a, b, *args, **kwargs)

    monkeypatch.setattr(features.torch, "cdist", spy)
    n = 256
    s = random_system(n, 3, seed=0, dtype=torch.float32)
    monkeypatch.setattr(features, "PAIR_CHUNK_ELEMENTS", 4096)
    pairwise_stats_chunked(s.pos, s.mass, chunk_elements=4096)
    assert len(shapes) == n * n // 4096
    assert all(a[-2] * b[-2] <= 4096 for a, b in shapes)


def test_features_reuse_the_cached_acceleration(monkeypatch):
    s = step(random_system(6, 3, seed=1), 0.01)

    def boom(*args, **kwargs):
        raise AssertionError("force evaluation despite a cached acceleration")

    monkeypatch.setattr(ops, "accelerations", boom)
    f = analytic_features(s, "rich")
    assert f[RICH_NAMES.index("max_acc")].item() == pytest.approx(s.acc.norm(dim=-1).max().item())


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(2, 9),
    dim=st.sampled_from([2, 3]),
    batch=st.sampled_from([None, 1, 3]),
    kind=st.sampled_from(["basic", "rich", "encounter"]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_permutation_invariance_and_finiteness(n, dim, batch, kind, dtype, seed):
    s = random_system(n, dim, batch=batch, seed=seed, dtype=dtype, softening=0.01)
    f = analytic_features(s, kind)
    assert f.shape == s.batch_shape + (len(feature_names(kind)),)
    assert torch.isfinite(f).all()
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    sp = SystemState(s.pos[..., perm, :], s.vel[..., perm, :], s.mass[..., perm],
                     softening=s.softening)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(analytic_features(sp, kind), f, rtol=tol, atol=tol)
    spec = FeatureSpec(kind, "delta_mag", 2, normalize="state")
    s1 = step(s, 0.01)
    torch.testing.assert_close(
        spec(step(sp, 0.01), [None, sp]), spec(s1, [None, s]), rtol=tol, atol=tol
    )


def test_zero_mass_state_gives_finite_features():
    z = SystemState(torch.zeros(4, 3), torch.zeros(4, 3), torch.zeros(4))
    for kind in ("basic", "rich", "encounter"):
        assert torch.isfinite(analytic_features(z, kind)).all()


def test_state_normalisation_makes_features_unit_free():
    s = random_system(6, 3, batch=2, seed=3)
    lam, mu = 7.0, 3.0  # lengths x lam, masses x mu, speeds x sqrt(mu / lam)
    s2 = SystemState(s.pos * lam, s.vel * math.sqrt(mu / lam), s.mass * mu)
    spec = FeatureSpec("rich", "delta_mag", 1, normalize="state")
    dt, dt2 = 0.01, 0.01 * lam**1.5 / math.sqrt(mu)
    f1 = spec(step(s, dt), [s])
    f2 = spec(step(s2, dt2), [s2])
    torch.testing.assert_close(f1, f2)
    raw = FeatureSpec("rich")
    assert not torch.allclose(raw(s), raw(s2))


def test_fixed_scales_divide_by_unit():
    s = random_system(5, 2, seed=0)
    sc = FeatureScales(L0=2.0, V0=3.0, A0=5.0, T0=7.0, M0=11.0)
    raw, scaled = analytic_features(s, "rich"), analytic_features(s, "rich", sc)
    expect = {"n_bodies": 1, "total_mass": 11, "max_r_com": 2, "max_speed": 3, "max_acc": 5,
              "min_pair_dist": 2, "softening": 2, "std_mass": 11}
    for name, unit in expect.items():
        i = RICH_NAMES.index(name)
        assert scaled[i].item() == pytest.approx(raw[i].item() / unit)
    spec = FeatureSpec("basic", normalize="fixed", scales=sc)
    torch.testing.assert_close(spec(s), analytic_features(s, "basic", sc))
    assert FeatureSpec.from_dict(spec.to_dict()) == spec


def test_scales_from_state():
    s = random_system(8, 3, batch=3, seed=2, mass=2.0)
    sc = FeatureScales.from_state(s, per_system=True)
    assert sc.M0.shape == (3,)
    torch.testing.assert_close(sc.M0, torch.full((3,), 2.0, dtype=f64))
    torch.testing.assert_close(sc.T0, (sc.L0**3 / sc.M0).sqrt())
    torch.testing.assert_close(sc.V0 * sc.T0, sc.L0)
    flat = FeatureScales.from_state(s)
    assert isinstance(flat.L0, float) and flat.L0 == pytest.approx(sc.L0.mean().item())
    assert analytic_features(s, "basic", sc).shape == (3, 11)
    with pytest.raises(ValueError, match="total mass > 0"):
        FeatureScales.from_state(SystemState(torch.zeros(2, 2), torch.zeros(2, 2), torch.ones(2)))
    with pytest.raises(ValueError, match="L0 must be finite and > 0"):
        FeatureScales(L0=0.0)
    with pytest.raises(ValueError, match="per-system"):
        sc.to_dict()


def test_delta_mag_values():
    s0 = random_system(4, 2, seed=1).with_acceleration()
    s1 = step(s0, 0.05)
    f = history_features("delta_mag", [s0], s1)
    dx = (s1.pos - s0.pos).norm(dim=-1)
    da = (s1.acc - s0.acc).norm(dim=-1)
    assert f.shape == (10,)
    assert f[0].item() == pytest.approx(dx.mean().item())
    assert f[1].item() == pytest.approx(dx.max().item())
    assert f[2].item() == pytest.approx(dx.pow(2).mean().sqrt().item())
    assert f[8].item() == pytest.approx(da.pow(2).mean().sqrt().item())
    assert f[9].item() == pytest.approx(0.05)
    b = history_features("basic", [s0, None], s1)
    torch.testing.assert_close(b[:11], analytic_features(s0, "basic"))
    assert (b[11:] == 0).all()


def test_spec_errors():
    s = random_system(4, 2)
    with pytest.raises(ValueError, match="FeatureSpec.kind must be one of"):
        FeatureSpec("delta_mag")
    with pytest.raises(ValueError, match="FeatureSpec.history must be None or one of"):
        FeatureSpec("basic", "velocity", 2)
    with pytest.raises(ValueError, match="history_len must be an int >= 0"):
        FeatureSpec("basic", "delta_mag", -1)
    with pytest.raises(ValueError, match="normalize='fixed' needs scales"):
        FeatureSpec(normalize="fixed")
    with pytest.raises(ValueError, match="FeatureSpec.normalize must be one of"):
        FeatureSpec(normalize="auto")
    spec = FeatureSpec("basic", "delta_mag", 2)
    with pytest.raises(ValueError, match="needs a HistoryBuffer or window"):
        spec(s)
    with pytest.raises(ValueError, match="window has 1 states, history_len is 2"):
        spec(s, [None])
    with pytest.raises(ValueError, match="history state 0 has shape"):
        history_features("delta_mag", [random_system(5, 2)], s)
    with pytest.raises(ValueError, match="unknown history feature kind"):
        history_features("speed", [], s)
