"""Initial conditions, scenario registry and file loaders."""

import math

import numpy as np
import pytest
import torch

from aits.ics import (
    FIGURE_EIGHT_PERIOD,
    InitialConditionsError,
    figure_eight,
    kepler_batch,
    kepler_orbit,
    kepler_period,
    load_npy,
    load_state,
    load_text,
    plummer,
    random_system,
)
from aits.scenarios import list_scenarios, make_scenario, register_scenario
from aits.state import rollout

f64 = torch.float64


@pytest.mark.parametrize("at", ["apocentre", "pericentre"])
@pytest.mark.parametrize("dim", [2, 3])
def test_kepler_energy_separation_and_angular_momentum(at, dim):
    e, a, m1, m2, G = 0.6, 2.0, 0.3, 1.2, 1.7
    s = kepler_orbit(e, a, m1, m2, at=at, dim=dim, G=G)
    assert s.total_energy().item() == pytest.approx(-G * m1 * m2 / (2 * a), rel=1e-12)
    sep = (s.pos[1] - s.pos[0]).norm().item()
    assert sep == pytest.approx(a * (1 + e) if at == "apocentre" else a * (1 - e), rel=1e-12)
    torch.testing.assert_close(s.center_of_mass(), torch.zeros(dim, dtype=f64))
    torch.testing.assert_close(s.momentum(), torch.zeros(dim, dtype=f64))
    mu = m1 * m2 / (m1 + m2)
    L = s.angular_momentum() if dim == 2 else s.angular_momentum()[2]
    assert L.item() == pytest.approx(mu * math.sqrt(G * (m1 + m2) * a * (1 - e * e)), rel=1e-12)


def test_kepler_period_closes_the_orbit():
    T = kepler_period(1.0, 0.5, 0.5)
    assert T == pytest.approx(2 * math.pi)
    s = kepler_orbit(0.5, 1.0, 0.5, 0.5)
    # half a period: apocentre -> pericentre (separation a(1-e)); a full one: back home
    half = rollout(s, T / 1000, 500)
    assert (half.pos[1] - half.pos[0]).norm().item() == pytest.approx(0.5, abs=1e-3)
    full = rollout(half, T / 1000, 500)
    assert (full.pos - s.pos).norm().item() < 1e-3
    assert kepler_period(torch.tensor([1.0, 4.0], dtype=f64)).tolist() == pytest.approx(
        [2 * math.pi, 16 * math.pi]
    )


def test_kepler_batch_draws_within_ranges_deterministically():
    s = kepler_batch(16, (0.1, 0.8), (0.5, 2.0), seed=7)
    assert s.pos.shape == (16, 2, 2)
    a = -0.25 / (2 * s.total_energy())  # E = -m1 m2 / (2 a)
    e = (s.pos[:, 1] - s.pos[:, 0]).norm(dim=-1) / a - 1
    assert a.min() >= 0.5 - 1e-12 and a.max() <= 2.0 + 1e-12
    assert e.min() >= 0.1 - 1e-12 and e.max() <= 0.8 + 1e-12
    assert e.std() > 0.05  # really drawn, not constant
    torch.testing.assert_close(kepler_batch(16, (0.1, 0.8), (0.5, 2.0), seed=7).pos, s.pos)
    assert not torch.equal(kepler_batch(16, (0.1, 0.8), (0.5, 2.0), seed=8).pos, s.pos)


def test_figure_eight():
    s = figure_eight()
    assert s.pos.shape == (3, 2)
    torch.testing.assert_close(s.momentum(), torch.zeros(2, dtype=f64), atol=1e-8, rtol=0)
    assert s.total_energy().item() == pytest.approx(-1.2871, abs=1e-3)
    n = 3000
    end = rollout(s, FIGURE_EIGHT_PERIOD / n, n)
    assert (end.pos - s.pos).norm().item() < 1e-2
    assert figure_eight(dim=3).pos[:, 2].abs().max().item() == 0.0


def test_random_system():
    s = random_system(10, 3, batch=4, mass=2.0, seed=5)
    assert s.pos.shape == (4, 10, 3) and s.mass.shape == (4, 10)
    torch.testing.assert_close(s.total_mass(), torch.full((4,), 2.0, dtype=f64))
    torch.testing.assert_close(s.center_of_mass(), torch.zeros(4, 3, dtype=f64))
    torch.testing.assert_close(s.momentum(), torch.zeros(4, 3, dtype=f64))
    assert (s.mass > 0).all()
    torch.testing.assert_close(random_system(10, 3, batch=4, mass=2.0, seed=5).pos, s.pos)
    one = random_system(10, 2, dtype=torch.float32)
    assert one.pos.shape == (10, 2) and one.dtype == torch.float32


def test_plummer_is_in_virial_units():
    s = plummer(100, seed=3)
    assert s.pos.shape == (100, 3)
    assert s.kinetic_energy().item() == pytest.approx(0.25, rel=1e-12)
    assert s.potential_energy().item() == pytest.approx(-0.5, rel=1e-12)
    torch.testing.assert_close(s.center_of_mass(), torch.zeros(3, dtype=f64))
    b = plummer(32, batch=2, seed=1, softening=0.05)
    assert b.pos.shape == (2, 32, 3) and b.softening == 0.05
    assert not torch.equal(b.pos[0], b.pos[1])
    torch.testing.assert_close(plummer(100, seed=3).pos, s.pos)


def test_scenarios_registry():
    names = list_scenarios()
    for required in ("binary-e0.5", "binary-e0.9", "binary-e0.99", "figure8", "plummer64",
                     "random"):
        assert required in names and names[required]
        s = make_scenario(required, dtype=torch.float32)
        assert s.dtype == torch.float32 and torch.isfinite(s.total_energy())
    b = make_scenario("binary-e0.99")
    assert (b.pos[1] - b.pos[0]).norm().item() == pytest.approx(1.99)
    assert make_scenario("plummer64").n_bodies == 64
    with pytest.raises(ValueError, match="unknown scenario 'nope'; valid names: binary-e0.5"):
        make_scenario("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_scenario("figure8", "dup")(lambda **kw: None)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: kepler_orbit(1.0), "0 <= e < 1"),
        (lambda: kepler_orbit(-0.1), "0 <= e < 1"),
        (lambda: kepler_orbit(0.5, 0.0), "semi-major axis a must be a finite number > 0"),
        (lambda: kepler_orbit(0.5, 1.0, -1.0), "m1 must be"),
        (lambda: kepler_orbit(0.5, at="middle"), "apocentre' or 'pericentre"),
        (lambda: kepler_orbit(0.5, dim=4), "dim must be 2 or 3"),
        (lambda: kepler_batch(0), "batch must be an int >= 1"),
        (lambda: kepler_batch(2, (0.5, 0.1)), "e_range must have low <= high"),
        (lambda: kepler_batch(2, (0.1, 1.5)), "0 <= e < 1"),
        (lambda: kepler_batch(2, a_range=(0.0, 1.0)), "a_range low"),
        (lambda: kepler_batch(2, a_range=(1.0, math.inf)), "a_range high"),
        (lambda: kepler_orbit(0.5, 1.0, G=-1.0), "G must be a finite number > 0"),
        (lambda: kepler_batch(2, e_range=3), "pair"),
        (lambda: random_system(1), "n must be an int >= 2"),
        (lambda: random_system(4, mass_spread=1.0), "mass_spread"),
        (lambda: random_system(4, pos_scale=0), "pos_scale"),
        (lambda: random_system(4, vel_scale=-1), "vel_scale"),
        (lambda: random_system(4, batch=0), "batch must be None or an int"),
        (lambda: plummer(1), "n must be an int >= 2"),
        (lambda: plummer(8, r_max=-1), "r_max"),
    ],
)
def test_invalid_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_seed_must_be_int():
    with pytest.raises(TypeError, match="seed must be an int"):
        random_system(4, seed=1.5)


# ------------------------------------------------------------------------------- files


def test_text_roundtrip_with_comments_header_and_commas(tmp_path):
    p = tmp_path / "ics.csv"
    p.write_text("# two bodies\nm,x,y,vx,vy\n1.0, 0, 0, 0, 1  # first\n\n2.0,1,0,0,-0.5\n")
    s = load_state(p)
    assert s.pos.shape == (2, 2)
    torch.testing.assert_close(s.mass, torch.tensor([1.0, 2.0], dtype=f64))
    torch.testing.assert_close(s.vel[:, 1], torch.tensor([1.0, -0.5], dtype=f64))
    q = tmp_path / "ics3.txt"
    q.write_text("1 0 0 0 0 0 0\n1 1 2 3 4 5 6\n3 0 0 1 0 0 0\n")
    s3 = load_text(q, softening=0.1, dtype=torch.float32)
    assert s3.pos.shape == (3, 3) and s3.softening == pytest.approx(0.1)
    torch.testing.assert_close(s3.vel[1], torch.tensor([4.0, 5.0, 6.0]))


def test_npy_roundtrip_single_and_batch(tmp_path):
    table = np.array([[1.0, 0, 0, 0, 1], [2.0, 1, 0, 0, -0.5]])
    np.save(tmp_path / "a.npy", table)
    s = load_state(tmp_path / "a.npy")
    torch.testing.assert_close(s.pos, torch.tensor([[0.0, 0], [1, 0]], dtype=f64))
    np.save(tmp_path / "b.npy", np.stack([table, table * 2]).astype(np.float32))
    b = load_npy(tmp_path / "b.npy")
    assert b.pos.shape == (2, 2, 2)
    torch.testing.assert_close(b.mass[1], torch.tensor([2.0, 4.0], dtype=f64))


@pytest.mark.parametrize(
    "text, match",
    [
        ("1 0 0 0 1\n1 0 0 1\n", r"bad\.txt:2: expected 5 or 7 columns"),
        ("1 0 0 0 1\n1 0 0 0 0 0 1\n", r"bad\.txt:2: 7 columns, but line 1 has 5"),
        ("1 0 0 0 1\n1 0 zero 0 1\n", r"bad\.txt:2: column 3 is not a number: 'zero'"),
        ("# c\n1 0 0 0 1\n-1 1 0 0 1\n", r"bad\.txt:3: negative mass"),
        ("1 0 0 0 1\n1 nan 0 0 1\n", r"bad\.txt:2: non-finite value"),
        ("1 0 0 0 1\n", r"bad\.txt: need at least 2 bodies, got 1"),
        ("# nothing\n", r"bad\.txt: need at least 2 bodies, got 0"),
        ("x,y,m,vx,vy\n1 0 0 0 1\n1 1 0 0 1\n", r"bad\.txt:1: column 1 is not a number: 'x'"),
        ("0 1 0 0 0.1\n0 -1 0 0 -0.1\n", r"bad\.txt: the masses of a system must not all be zero"),
    ],
)
def test_malformed_text_files_name_file_and_line(tmp_path, text, match):
    p = tmp_path / "bad.txt"
    p.write_text(text)
    with pytest.raises(InitialConditionsError, match=match):
        load_state(p)


@pytest.mark.parametrize(
    "array, match",
    [
        (np.zeros((3, 4)), r"bad\.npy: expected 5 or 7 columns"),
        (np.zeros(5), r"bad\.npy: expected shape \(N, 5\|7\) or \(B, N, 5\|7\)"),
        (np.ones((1, 5)), r"bad\.npy: need at least 2 bodies"),
        (np.array([[1.0, 0, 0, 0, 0], [-2.0, 1, 0, 0, 0]]), r"bad\.npy:row 1: negative mass"),
        (np.array([[[1.0, 0, 0, 0, 0], [1, 1, 0, 0, 0]], [[1, 0, 0, 0, 0], [1, 1, np.inf, 0, 0]]]),
         r"bad\.npy:system 1 row 1: non-finite"),
        (np.array([["a"] * 5] * 2), r"bad\.npy: expected a real numeric array"),
        (np.array([[[1.0, 0, 0, 0, 0], [1, 1, 0, 0, 0]], [[0, 0, 0, 0, 0], [0, 1, 0, 0, 0]]]),
         r"bad\.npy: the masses of a system must not all be zero \(system 1\)"),
    ],
)
def test_malformed_npy_files_name_file_and_row(tmp_path, array, match):
    p = tmp_path / "bad.npy"
    np.save(p, array)
    with pytest.raises(InitialConditionsError, match=match):
        load_state(p)


def test_unreadable_files(tmp_path):
    with pytest.raises(InitialConditionsError, match=r"missing\.txt: cannot read"):
        load_state(tmp_path / "missing.txt")
    p = tmp_path / "junk.npy"
    p.write_bytes(b"not numpy")
    with pytest.raises(InitialConditionsError, match=r"junk\.npy: cannot read as \.npy"):
        load_state(p)


# ------------------------------------------------------------- unrepresentable values


def _write(tmp_path, rows, name="ic.txt"):
    p = tmp_path / name
    p.write_text("".join(" ".join(map(str, r)) + "\n" for r in rows))
    return p


@pytest.mark.parametrize("rows,line,match", [
    ([[1, 1e300, 0, 0, 0.1], [1, -1e300, 0, 0, -0.1]], 1, "position too large"),
    ([[1, 0, 0, 0, 0.1], [1, 1, 0, 1e200, -0.1]], 2, "velocity too large"),
    ([[1e200, 0, 0, 0, 0.1], [1e200, 1e-100, 0, 0, -0.1]], 1, "the potential energy overflows"),
])
def test_unrepresentable_energies_are_refused_with_the_line(tmp_path, rows, line, match):
    p = _write(tmp_path, [["m", "x", "y", "vx", "vy"], *rows])
    with pytest.raises(InitialConditionsError, match=rf"ic.txt:{line + 1}: {match}"):
        load_state(p)


def test_range_follows_the_dtype(tmp_path):
    p = _write(tmp_path, [[1, 1e20, 0, 0, 0.1], [1, -1e20, 0, 0, -0.1]])
    assert load_state(p).pos.dtype == torch.float64  # fine in float64 ...
    with pytest.raises(InitialConditionsError, match="position too large for torch.float32"):
        load_state(p, dtype=torch.float32)  # ... r^2 = 4e40 overflows float32


def test_coincident_bodies_need_softening(tmp_path):
    p = _write(tmp_path, [[1, 0.5, 0, 0, 0.1], [1, -0.5, 0, 0, 0.2], [1, 0.5, 0, 0, -0.3]])
    with pytest.raises(InitialConditionsError,
                       match=r"ic.txt:3: body at the position of the one at line 1 .* set a "
                             r"softening > 0"):
        load_state(p)
    assert load_state(p, softening=0.1).pos.shape == (3, 2)


def test_coincident_bodies_in_a_batch_name_system_and_row(tmp_path):
    table = np.zeros((2, 2, 5))
    table[..., 0] = 1.0
    table[0, 1, 1] = 1.0  # system 0 fine; system 1 has both bodies at the origin
    np.save(tmp_path / "b.npy", table)
    with pytest.raises(InitialConditionsError, match="b.npy:system 1 row 1: body at the position "
                                                      "of the one at system 1 row 0"):
        load_state(tmp_path / "b.npy")
