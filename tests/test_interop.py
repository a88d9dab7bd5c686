"""REBOUND interop: states to and from rebound.Simulation and Simulationarchive files."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
import torch

import aits
from aits import MissingDependencyError, from_rebound, load_rebound_archive, to_rebound
from aits.state import SystemState

rebound = pytest.importorskip("rebound", reason="the aits[rebound] extra is not installed")


def planets(G: float = 1.0, softening: float = 0.0, t: float = 0.0) -> rebound.Simulation:
    sim = rebound.Simulation()
    sim.G, sim.softening, sim.t = G, softening, t
    sim.add(m=1.0)
    sim.add(m=1e-3, a=1.0, e=0.1, inc=0.2)
    sim.add(m=3e-4, a=1.9, e=0.05, inc=0.1, Omega=0.7)
    sim.move_to_com()
    return sim


def particles(sim: rebound.Simulation) -> np.ndarray:
    """``(N, 7)``: m, x, y, z, vx, vy, vz of each particle."""
    return np.array([[p.m, p.x, p.y, p.z, p.vx, p.vy, p.vz] for p in sim.particles])


def assert_same_state(a: SystemState, b: SystemState) -> None:
    for name in ("pos", "vel", "mass", "time"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert (a.G, a.softening) == (b.G, b.softening)


def test_state_to_rebound_and_back_is_exact():
    state = aits.random_system(7, 3, seed=3, G=2.5, softening=0.05)
    state = dataclasses.replace(state, time=torch.tensor(4.25, dtype=torch.float64))
    sim = to_rebound(state)
    assert (sim.N, sim.G, sim.softening, sim.t) == (7, 2.5, 0.05, 4.25)
    assert_same_state(from_rebound(sim), state)


def test_rebound_to_state_and_back_is_exact():
    sim = planets(G=39.47, softening=1e-3, t=3.5)
    state = from_rebound(sim)
    assert state.pos.shape == (3, 3) and state.dtype == torch.float64
    assert (state.G, state.softening, float(state.time)) == (39.47, 1e-3, 3.5)
    again = to_rebound(state)
    np.testing.assert_array_equal(particles(again), particles(sim))
    assert (again.G, again.softening, again.t) == (sim.G, sim.softening, sim.t)


def test_float32_round_trip_and_dtype_argument():
    state = aits.plummer(16, seed=2, dtype=torch.float32)
    back = from_rebound(to_rebound(state), dtype=torch.float32)
    assert back.dtype == torch.float32
    assert_same_state(back, state)


def test_two_dimensional_states_are_padded_with_z_zero():
    state = aits.kepler_orbit(0.6, 1.3, 0.7, 0.3)
    sim = to_rebound(state)
    assert all(p.z == 0.0 and p.vz == 0.0 for p in sim.particles)
    three = from_rebound(sim)
    assert three.dim == 3 and torch.equal(three.pos[:, :2], state.pos)
    assert_same_state(from_rebound(sim, dim=2), state)
    with pytest.raises(ValueError, match=r"move out of the x-y plane .* use dim=3"):
        from_rebound(planets(), dim=2)


def test_same_physics_energy_and_orbit():
    # Energies agree (REBOUND's energy leaves softening out, so compare unsoftened) ...
    sim = planets(G=2.0)
    state = from_rebound(sim)
    E = float(state.kinetic_energy() + state.potential_energy())
    assert E == pytest.approx(sim.energy(), rel=1e-14)
    # ... and the softened, G != 1 motion matches REBOUND's IAS15 (aits: fine leapfrog steps).
    sim = planets(G=2.0, softening=0.05)
    state = from_rebound(sim)
    sim.integrate(1.0)
    for _ in range(2000):
        state = aits.step(state, 5e-4)
    np.testing.assert_allclose(from_rebound(sim).pos.numpy(), state.pos.numpy(), atol=1e-6)


def test_refusals_name_the_problem():
    with pytest.raises(TypeError, match="needs a rebound.Simulation, got dict"):
        from_rebound({})
    with pytest.raises(ValueError, match="has no particles"):
        from_rebound(rebound.Simulation())
    with pytest.raises(ValueError, match="dim must be 2 or 3"):
        from_rebound(planets(), dim=4)
    with pytest.raises(ValueError, match="batch of 2: convert each of aits.split"):
        to_rebound(aits.kepler_batch(2))
    field = aits.TidalField(mass=10.0, position=torch.tensor([20.0, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="external TidalField"):
        to_rebound(dataclasses.replace(aits.kepler_orbit(0.5), field=field))


def test_test_particles():
    sim = planets()
    sim.add(m=0.0, a=3.0)
    sim.N_active = 3
    state = from_rebound(sim)  # massless test particles: the same dynamics in aits
    assert state.n_bodies == 4 and float(state.mass[3]) == 0.0
    sim.N_active = 2
    with pytest.raises(ValueError, match=r"N_active = 2, .* massive particles 2..3"):
        from_rebound(sim)


def test_missing_rebound_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rebound", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'aits\[rebound\]'") as err:
        to_rebound(aits.kepler_orbit(0.5))
    assert isinstance(err.value, ImportError)
    with pytest.raises(ImportError, match=r"aits\[rebound\]"):
        load_rebound_archive("whatever.bin")


@pytest.fixture
def archive(tmp_path):
    """A Simulationarchive with snapshots every 0.5 time units up to t = 2."""
    path = tmp_path / "archive.bin"
    sim = planets(G=1.5, softening=1e-3)
    sim.save_to_file(str(path), interval=0.5, delete_file=True)
    sim.integrate(2.0, exact_finish_time=1)
    return path


def test_archive_last_and_kth_snapshot(archive):
    snaps = rebound.Simulationarchive(str(archive))
    count = len(snaps)
    assert count >= 4
    last = load_rebound_archive(archive)
    assert float(last.time) == snaps[-1].t and last.G == 1.5 and last.softening == 1e-3
    np.testing.assert_array_equal(last.pos.numpy(), particles(snaps[-1])[:, 1:4])
    first = load_rebound_archive(archive, snapshot=0)
    assert float(first.time) == 0.0
    assert_same_state(first, from_rebound(planets(G=1.5, softening=1e-3)))
    assert_same_state(load_rebound_archive(archive, -count), first)
    assert load_rebound_archive(archive, 1, dtype=torch.float32).dtype == torch.float32


def test_a_single_binary_file(tmp_path):
    path = tmp_path / "one.bin"
    sim = planets(t=7.0)
    sim.save_to_file(str(path))
    assert_same_state(load_rebound_archive(path), from_rebound(sim))


@pytest.mark.filterwarnings("ignore:The binary file seems to be corrupted:RuntimeWarning")
def test_archive_errors(archive, tmp_path):
    count = len(rebound.Simulationarchive(str(archive)))
    with pytest.raises(FileNotFoundError, match="nope.bin' does not exist"):
        load_rebound_archive(tmp_path / "nope.bin")
    with pytest.raises(IndexError, match=f"snapshot {count} is out of range: .* holds {count} "
                                         f"snapshots \\(0..{count - 1}, or -{count}..-1"):
        load_rebound_archive(archive, count)
    with pytest.raises(IndexError, match="out of range"):
        load_rebound_archive(archive, -count - 1)
    with pytest.raises(TypeError, match="snapshot must be an int"):
        load_rebound_archive(archive, "1")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a simulation archive " * 40)
    with pytest.raises(ValueError, match="junk.bin' is not a REBOUND Simulationarchive"):
        load_rebound_archive(junk)
