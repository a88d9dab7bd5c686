"""Encounter features (the three kinds): values on a circular orbit, agreement with the
classical criteria, scale-freedom, permutation invariance, finiteness, the smooth
kind's continuity along the figure-eight and the orbit kind's log(1 - e^2)."""

import math

import pytest
import torch

from aits.encounter import (CLIP, ENCOUNTER_NAMES, ORBIT_ENCOUNTER_NAMES, SMOOTH_ENCOUNTER_NAMES,
                            encounter_features, encounter_times, kind_features)
from aits.features import FeatureSpec, feature_names, gravity_derivatives
from aits.ics import FIGURE_EIGHT_PERIOD, figure_eight, kepler_orbit, random_system
from aits.policies import AarsethPolicy, CollisionalPolicy, FreeFallPolicy
from aits.state import SystemState, step

f64 = torch.float64


KINDS = ["encounter", "encounter-smooth", "encounter-orbit"]


def _named(state: SystemState, smooth: bool = False) -> dict[str, float]:
    names = SMOOTH_ENCOUNTER_NAMES if smooth else ENCOUNTER_NAMES
    return dict(zip(names, encounter_features(state, smooth=smooth)[0].tolist()))


def test_circular_binary_has_the_hand_computed_values():
    # uniform circular motion: |a| = w^2 r, |j| = w^3 r, |s| = w^4 r, |c| = w^5 r
    m1, m2, a = 0.3, 0.7, 2.0
    s = kepler_orbit(0.0, a, m1, m2, dim=3)
    w = math.sqrt(1.0 / a**3)  # G (m1 + m2) = 1
    t = encounter_times(s)
    assert t.aarseth_min.item() == pytest.approx(1 / w, rel=1e-12)
    assert t.aarseth_gmean.item() == pytest.approx(1 / w, rel=1e-12)
    assert t.freefall_min.item() == pytest.approx(math.sqrt(a**3), rel=1e-12)
    assert t.collision_min.item() == pytest.approx(math.sqrt(a**3), rel=1e-12)  # r/v = sqrt(r/a)
    E = -m1 * m2 / (2 * a)
    assert t.energy_time.item() == pytest.approx(1.0 / (2 * abs(E)) ** 1.5, rel=1e-12)
    f = _named(s)
    for name in ("log_q1_at_min", "log_q2_at_min", "mean_log_q1", "mean_log_q2",
                 "log_jerk_time_over_aarseth", "log_snap_time_over_aarseth",
                 "log_virial_ratio", "log_aarseth_gmean_over_min"):
        assert f[name] == pytest.approx(0.0, abs=1e-12), name
    assert f["log_mass_ratio"] == pytest.approx(math.log(m1 / m2), rel=1e-12)
    assert f["log_n_bodies"] == pytest.approx(math.log(2))
    smooth = _named(s, smooth=True)  # every ratio of sums is 1 there too
    for name in SMOOTH_ENCOUNTER_NAMES[6:12]:
        assert smooth[name] == pytest.approx(0.0, abs=1e-12), name
    for name in SMOOTH_ENCOUNTER_NAMES[:6] + SMOOTH_ENCOUNTER_NAMES[12:]:
        assert smooth[name] == f[name], name


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("dim", [2, 3])
def test_orbit_shape_is_log_one_minus_e_squared_of_a_binary(dim, native):
    """The encounter-orbit kind's last column on Kepler binaries of any eccentricity,
    mass ratio, size and phase (moved and boosted, so the centre-of-mass frame is
    needed): log(1 - e^2), the same at every point of the orbit."""
    for e in (0.0, 0.3, 0.9, 0.999):
        for m1, m2, a in ((0.5, 0.5, 1.0), (1.0, 1e-3, 2.5), (0.2, 0.7, 0.4)):
            for at in ("apocentre", "pericentre"):
                s = kepler_orbit(e, a, m1, m2, dim=dim, at=at)
                shift = torch.arange(1.0, dim + 1, dtype=f64)
                s = s.replace(pos=s.pos + 3 * shift, vel=s.vel - 0.2 * shift)
                f = kind_features(s, "encounter-orbit", native=native)[0]
                assert f.shape == (15,)
                assert float(f[-1]) == pytest.approx(math.log(1 - e * e), rel=1e-9, abs=1e-9)
                torch.testing.assert_close(f[:14], kind_features(s, "encounter-smooth")[0],
                                           rtol=0, atol=1e-12)


def test_orbit_shape_is_conserved_along_a_run_and_rotation_invariant():
    """On a hierarchical triple and a small cluster the orbit column is conserved (it is
    built from the energy and angular momentum) to the run's own error, and a rotated
    system gives the same features."""
    from aits.ics import hierarchical_triple

    s = hierarchical_triple(e_in=0.6, a_out=8.0, masses=(0.7, 0.4, 0.3), inclination=0.8)
    shape0 = float(kind_features(s, "encounter-orbit")[0][-1])
    for _ in range(400):
        s = step(s, 2e-3)
    assert float(kind_features(s, "encounter-orbit")[0][-1]) == pytest.approx(shape0, abs=1e-6)
    c = random_system(7, 3, seed=3, softening=0.01)
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=f64, generator=torch.Generator().manual_seed(2)))
    rotated = c.replace(pos=c.pos @ q.T, vel=c.vel @ q.T)
    torch.testing.assert_close(kind_features(rotated, "encounter-orbit")[0],
                               kind_features(c, "encounter-orbit")[0], rtol=0, atol=1e-11)
    with pytest.raises(ValueError, match="encounter-orbit kind, which is smooth"):
        encounter_features(c, orbit=True)
    with pytest.raises(ValueError, match="not an encounter feature kind"):
        kind_features(c, "basic")


def test_times_agree_with_the_classical_criteria():
    s = random_system(7, 3, batch=3, seed=4, softening=0.05)
    s = step(s, 1e-3)  # with the cached pair statistics and acceleration
    t = encounter_times(s)
    torch.testing.assert_close(t.aarseth_min, AarsethPolicy(1.0)(s), rtol=1e-12, atol=0)
    torch.testing.assert_close(t.freefall_min, FreeFallPolicy(1.0)(s), rtol=1e-12, atol=0)
    torch.testing.assert_close(t.collision_min, CollisionalPolicy(1.0)(s), rtol=1e-12, atol=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dim", [2, 3])
def test_rescaled_system_gives_the_same_features_and_rescaled_times(dim, kind):
    s = random_system(6, dim, batch=2, seed=1, softening=0.02)
    s = s.replace(mass=s.mass * torch.tensor([[1.0], [0.2]], dtype=f64))  # unequal masses
    L, M, G = 3.7, 0.4, 2.5
    T = math.sqrt(L**3 / (G * M))  # G' (M m) T^2 / L^3 = G m with the original G = 1
    s2 = SystemState(s.pos * L, s.vel * L / T, s.mass * M, softening=s.softening * L, G=G)
    f1, t1 = kind_features(s, kind)
    f2, t2 = kind_features(s2, kind)
    torch.testing.assert_close(f2, f1, rtol=1e-12, atol=1e-12)
    for name in ("aarseth_min", "aarseth_gmean", "freefall_min", "collision_min", "energy_time"):
        torch.testing.assert_close(getattr(t2, name), getattr(t1, name) * T, rtol=1e-12, atol=0)
    assert not torch.allclose(t2.aarseth_min, t1.aarseth_min)
    # through the spec, with or without normalisation
    for norm in ("none", "state"):
        spec = FeatureSpec(kind, normalize=norm)
        torch.testing.assert_close(spec(s2), spec(s), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_permutation_invariance(kind):
    s = random_system(9, 3, batch=2, seed=7, softening=0.01)
    s = s.replace(mass=torch.rand(2, 9, dtype=f64, generator=torch.Generator().manual_seed(0)) + 0.1)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(1))
    sp = SystemState(s.pos[:, perm], s.vel[:, perm], s.mass[:, perm], softening=s.softening)
    torch.testing.assert_close(kind_features(sp, kind)[0],
                               kind_features(s, kind)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_padded_zero_one_and_two_body_states_are_finite(kind):
    width = len(feature_names(kind))

    def encounter_features(state):
        return kind_features(state, kind)

    zero = SystemState(torch.zeros(2, 5, 3, dtype=f64), torch.zeros(2, 5, 3, dtype=f64),
                       torch.zeros(2, 5, dtype=f64))
    f, t = encounter_features(zero)
    assert torch.equal(f, torch.zeros(2, width, dtype=f64))
    assert torch.isinf(t.aarseth_min).all() and torch.isinf(t.freefall_min).all()
    one = SystemState(torch.zeros(1, 2, dtype=f64), torch.ones(1, 2, dtype=f64),
                      torch.ones(1, dtype=f64))
    assert torch.isfinite(encounter_features(one)[0]).all()
    assert torch.isinf(encounter_times(one).aarseth_min)
    for e in (0.0, 0.99):
        for at in ("apocentre", "pericentre"):
            f = encounter_features(kepler_orbit(e, 1.0, 1e-3, 1.0, at=at))[0]
            assert torch.isfinite(f).all() and (f.abs() <= CLIP).all()
    # a body at rest (jerk 0) and a batch mixing a real system with a padded one
    rest = SystemState(torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]], dtype=f64),
                       torch.zeros(3, 2, dtype=f64), torch.tensor([3.0, 4.0, 5.0], dtype=f64))
    assert torch.isfinite(encounter_features(rest)[0]).all()
    mixed = SystemState(torch.stack([rest.pos, torch.zeros(3, 2, dtype=f64)]),
                        torch.zeros(2, 3, 2, dtype=f64),
                        torch.stack([rest.mass, torch.zeros(3, dtype=f64)]))
    fm = encounter_features(mixed)[0]
    torch.testing.assert_close(fm[0], encounter_features(rest)[0], rtol=1e-12, atol=0)
    assert torch.equal(fm[1], torch.zeros(width, dtype=f64))


def test_a_body_at_zero_acceleration_keeps_its_aarseth_time():
    # three unit masses on a line, the middle one midway between the others (the
    # figure-eight family's collinear phase): |a| = |s| = 0 there, |j| > 0, so its
    # Aarseth time sqrt(|j| / |c|) is finite, the smallest, and the criterion's step
    v = torch.tensor([0.35, 0.5], dtype=f64)
    s = SystemState(torch.tensor([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]], dtype=f64),
                    torch.stack([v, -2 * v, v]), torch.ones(3, dtype=f64))
    a, j, sn, c = (x.norm(dim=-1) for x in gravity_derivatives(s))
    assert a[1] == 0 and sn[1] == 0 and j[1] > 0
    tau_middle = (j[1] / c[1]).sqrt()
    assert tau_middle < ((a * sn + j * j) / (j * c + sn * sn))[[0, 2]].sqrt().min()
    for native in (True, False):
        t = encounter_features(s, native=native)[1]
        torch.testing.assert_close(t.aarseth_min, tau_middle, rtol=1e-12, atol=0)
        torch.testing.assert_close(t.aarseth_min, AarsethPolicy(1.0)(s), rtol=1e-12, atol=0)
        assert torch.isfinite(t.aarseth_gmean)


@pytest.mark.parametrize("kind", KINDS)
def test_names_and_float32(kind):
    assert feature_names("encounter") == ENCOUNTER_NAMES and len(set(ENCOUNTER_NAMES)) == 14
    assert feature_names("encounter-smooth") == SMOOTH_ENCOUNTER_NAMES
    assert len(set(SMOOTH_ENCOUNTER_NAMES)) == 14
    assert len(set(SMOOTH_ENCOUNTER_NAMES) & set(ENCOUNTER_NAMES)) == 8
    assert feature_names("encounter-orbit") == ORBIT_ENCOUNTER_NAMES
    assert ORBIT_ENCOUNTER_NAMES[:14] == SMOOTH_ENCOUNTER_NAMES
    assert len(set(ORBIT_ENCOUNTER_NAMES)) == 15
    s = random_system(5, 3, seed=2, dtype=torch.float32)
    f = kind_features(s, kind)[0]
    assert f.dtype == torch.float32 and torch.isfinite(f).all()
    torch.testing.assert_close(
        f.double(), kind_features(s.to(dtype=f64), kind)[0], rtol=1e-4, atol=1e-4)


def _edge_states() -> list[SystemState]:
    """States that exercise every special case of the log ratios and times."""
    rest = SystemState(torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]], dtype=f64),
                       torch.zeros(3, 2, dtype=f64), torch.tensor([3.0, 4.0, 5.0], dtype=f64))
    comoving = SystemState(torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [5.0, 1.0, 0.0]]),
                           torch.tensor([[0.0, 0.3, 0.0], [0.0, 0.3, 0.0], [0.1, 0.0, 0.2]]),
                           torch.tensor([1.0, 1.0, 1e-3]), softening=0.01)
    padded = SystemState(torch.zeros(2, 4, 3, dtype=f64), torch.zeros(2, 4, 3, dtype=f64),
                         torch.zeros(2, 4, dtype=f64))
    one = SystemState(torch.zeros(1, 2, dtype=f64), torch.ones(1, 2, dtype=f64),
                      torch.ones(1, dtype=f64))
    states = [rest, comoving, padded, one]
    states += [kepler_orbit(e, 1.0, 1e-3, 1.0, at=at) for e in (0.0, 0.99)
               for at in ("apocentre", "pericentre")]
    states += [random_system(n, d, batch=6, seed=n + d, softening=0.02)
               for n in (2, 3, 5, 8, 17) for d in (2, 3)]
    return states


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [f64, torch.float32])
def test_native_features_are_the_torch_paths(dtype, kind):
    """The native op (aits.ops.encounter_features) and the torch path agree to rounding:
    features (log ratios) to 1e-12 absolute in float64, times to 1e-12 relative, infinite
    where the torch path's are."""
    tol = 1e-12 if dtype == f64 else 1e-4
    for s in _edge_states():
        s = s.to(dtype=dtype)
        f_native, t_native = kind_features(s, kind)
        f_torch, t_torch = kind_features(s, kind, native=False)
        assert f_native.shape == f_torch.shape and f_native.dtype == dtype
        torch.testing.assert_close(f_native, f_torch, rtol=0, atol=tol)
        for name in ("aarseth_min", "aarseth_gmean", "freefall_min", "collision_min",
                     "energy_time"):
            a, b = getattr(t_native, name), getattr(t_torch, name)
            assert torch.equal(torch.isinf(a), torch.isinf(b)), name
            torch.testing.assert_close(a, b, rtol=tol, atol=0, msg=name)


def test_native_op_opcheck_and_bad_input():
    from aits import ops

    s = random_system(4, 3, batch=3, seed=0, softening=0.01)
    for smooth in (False, True):
        torch.library.opcheck(torch.ops.aits.encounter_features.default,
                              (s.pos, s.vel, s.mass, 0.01, 1.0, CLIP, smooth))
    with pytest.raises(ValueError, match="clip must be > 0"):
        ops.encounter_features(s.pos, s.vel, s.mass, 0.01, 1.0, 0.0)
    with pytest.raises(ValueError, match="vel contains NaN"):
        ops.encounter_features(s.pos, torch.full_like(s.vel, math.nan), s.mass, 0.01, 1.0, CLIP)
    with pytest.raises(ValueError, match="negative"):
        ops.encounter_features(s.pos, s.vel, -s.mass, 0.01, 1.0, CLIP)
    with pytest.raises(ValueError, match="vel"):
        ops.encounter_features(s.pos, s.vel[:, :2], s.mass, 0.01, 1.0, CLIP)


def test_smooth_features_stay_continuous_along_the_figure_eight():
    """Six times a period one body of the figure-eight passes the collinear point where
    its acceleration (and snap) vanish, and the body with the smallest Aarseth time
    changes: the plain kind's per-body logs run to the clip there, while every
    smooth column changes by < 0.1 a step of T/700 and stays within [-3, 3]."""
    s = figure_eight()
    dt = FIGURE_EIGHT_PERIOD / 700
    plain, smooth = [], []
    for _ in range(700):
        plain.append(encounter_features(s)[0])
        smooth.append(encounter_features(s, smooth=True)[0])
        s = step(s, dt)
    plain, smooth = torch.stack(plain), torch.stack(smooth)
    assert plain[:, 6:12].abs().max() >= 10  # log_q1_at_min and the others spike
    assert plain[:, 6:12].diff(dim=0).abs().max() > 5
    assert smooth[:, 6:12].abs().max() < 3
    assert smooth.diff(dim=0).abs().max() < 0.1
    assert (smooth[:, 8] >= 0).all()  # the summed Aarseth time is >= the minimum


@pytest.mark.parametrize("kind", KINDS)
def test_large_systems_pair_blocks_are_the_torch_path_for_any_thread_count(kind):
    """Above 64 bodies the native pass over the pairs runs in row blocks, over the
    threads when the batch has fewer systems than threads: the same bits for 1 and 2
    threads, and the torch path's values (a batch of one and of three, N = 200)."""
    s = random_system(200, 3, batch=3, seed=5, softening=0.01)
    threads = torch.get_num_threads()
    try:
        out = {}
        for n in (1, 2):
            torch.set_num_threads(n)
            out[n] = [kind_features(x, kind) for x in (s.index(0), s)]
    finally:
        torch.set_num_threads(threads)
    for (f1, t1), (f2, t2) in zip(out[1], out[2]):
        assert torch.equal(f1, f2)
        assert all(torch.equal(a, b) for a, b in zip(vars(t1).values(), vars(t2).values()))
    f_torch, t_torch = kind_features(s, kind, native=False)
    torch.testing.assert_close(out[1][1][0], f_torch, rtol=0, atol=1e-12)
    torch.testing.assert_close(out[1][0][0], f_torch[0], rtol=0, atol=1e-12)
    for name in ("freefall_min", "collision_min", "energy_time"):
        torch.testing.assert_close(getattr(out[1][1][1], name), getattr(t_torch, name),
                                   rtol=1e-12, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_large_float32_systems_are_the_torch_path(kind):
    """Float32 above 64 bodies keeps the encounter kernel's own pass over the pairs
    (in float64 arithmetic): the torch path's values to float32 rounding."""
    s = random_system(100, 3, batch=2, seed=4, softening=0.01).to(dtype=torch.float32)
    f_native, t_native = kind_features(s, kind)
    f_torch, t_torch = kind_features(s, kind, native=False)
    assert f_native.dtype == torch.float32
    torch.testing.assert_close(f_native, f_torch, rtol=0, atol=1e-4)
    for name in ("aarseth_min", "freefall_min", "collision_min", "energy_time"):
        torch.testing.assert_close(getattr(t_native, name), getattr(t_torch, name),
                                   rtol=1e-4, atol=0)


@pytest.mark.parametrize("softening", [0.01, 0.0])
@pytest.mark.parametrize("kind", KINDS)
def test_large_systems_pair_pass_with_massless_comoving_and_close_bodies(softening, kind):
    """The pair times above 64 bodies (float64: taken by the derivatives' two passes;
    their minima without division) on the cases that meet their edges: test particles
    (free-fall weights 0), a comoving pair (|v_ij| = 0) and a pair 1e-9 apart, softened
    and not: the torch path's values."""
    s = random_system(100, 3, batch=2, seed=3, softening=softening)
    pos, vel, mass = s.pos.clone(), s.vel.clone(), s.mass.clone()
    vel[:, 10] = vel[:, 11]
    mass[:, 20:30] = 0
    pos[:, 40] = pos[:, 41] + 1e-9
    state = SystemState(pos, vel, mass, softening=softening)
    f_native, t_native = kind_features(state, kind)
    f_torch, t_torch = kind_features(state, kind, native=False)
    torch.testing.assert_close(f_native, f_torch, rtol=0, atol=1e-12)
    for name in ("freefall_min", "collision_min", "energy_time"):
        torch.testing.assert_close(getattr(t_native, name), getattr(t_torch, name),
                                   rtol=1e-12, atol=0)
