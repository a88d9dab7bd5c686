"""HDF5 trajectories: written by aits, read back with plain h5py."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import aits
from aits import MissingDependencyError, get_units, with_units
from aits.simulate import main as simulate_main
from aits.trajectory_io import TRAJECTORY_KEYS, read_hdf5, trajectory_arrays, write_hdf5

h5py = pytest.importorskip("h5py", reason="the aits[hdf5] extra is not installed")


def jupiter_run() -> tuple[aits.SystemState, aits.SimulationResult]:
    state = with_units(aits.kepler_orbit(0.05, 5.2, 1.0, 9.5e-4, dim=3), "au-yr-msun")
    return state, aits.simulate(state, aits.FixedPolicy(0.05), t_end=2.0, max_frames=8)


def test_written_file_reads_back_with_plain_h5py(tmp_path):
    state, result = jupiter_run()
    arrays = trajectory_arrays(result)
    path = write_hdf5(tmp_path / "run.h5", **arrays, G=state.G, softening=state.softening,
                      units="au-yr-msun", policy=result.policy, attrs={"scenario": "jupiter"})
    assert [p.name for p in tmp_path.iterdir()] == ["run.h5"]  # no temporary file left
    with h5py.File(path, "r") as f:
        assert sorted(f.keys()) == sorted(TRAJECTORY_KEYS)
        for name in TRAJECTORY_KEYS:
            np.testing.assert_array_equal(f[name][()], arrays[name])
        assert f["pos"].shape == (len(result.frame_t), 2, 3)
        assert f["pos"].compression == "gzip"
        a = f.attrs
        assert a["format"] == "aits-trajectory" and a["format_version"] == 1
        assert a["aits_version"] == aits.__version__
        assert a["G"] == get_units("au-yr-msun").G and a["softening"] == 0.0
        assert (a["units"], a["unit_length"], a["unit_time"]) == ("au-yr-msun", "au", "yr")
        assert (a["policy"], a["integrator"], a["scenario"]) == ("fixed", "leapfrog-kdk", "jupiter")
        assert (a["n_bodies"], a["dim"], a["steps"]) == (2, 3, result.steps)
        assert f["t"].attrs["units"] == "yr" and f["vel"].attrs["units"] == "au/yr"
        assert f["energy_error"].attrs["units"] == "" and f["mass"].attrs["units"] == "Msun"
        assert "whole-run" in f["energy_error"].attrs["description"]
    back, attrs = read_hdf5(path)
    for name in TRAJECTORY_KEYS:
        np.testing.assert_array_equal(back[name], arrays[name])
    assert attrs["units"] == "au-yr-msun" and attrs["steps"] == result.steps


def test_the_arrays_are_those_of_trajectory_npz(tmp_path):
    args = ["--scenario", "figure8", "--policy", "fixed", "--dt", "0.01", "--steps", "7",
            "--quiet", "--trajectory", "--out", str(tmp_path)]
    assert simulate_main(args) == 0
    npz = np.load(tmp_path / "trajectory.npz")
    settings = {"G", "softening", "units", "policy", "integrator", "landing_steps"}
    assert sorted(npz.files) == sorted(set(TRAJECTORY_KEYS) | settings)
    assert float(npz["G"]) == 1.0 and str(npz["policy"]) == "fixed"
    assert str(npz["integrator"]) == "kdk" and str(npz["units"]) == "nbody"
    result = aits.simulate(aits.make_scenario("figure8"), aits.FixedPolicy(0.01), steps=7)
    for name, a in trajectory_arrays(result).items():
        np.testing.assert_array_equal(npz[name], a)


def test_bad_input_is_refused(tmp_path):
    state, result = jupiter_run()
    arrays = trajectory_arrays(result)
    common = {"G": state.G, "softening": 0.0, "units": "au-yr-msun"}
    short = {**arrays, "energy_error": arrays["energy_error"][:-1]}
    with pytest.raises(ValueError, match=r"energy_error has shape \(\d+,\), expected"):
        write_hdf5(tmp_path / "a.h5", **short, **common)
    with pytest.raises(ValueError, match="pos must be 3-D"):
        write_hdf5(tmp_path / "a.h5", **{**arrays, "pos": arrays["pos"][0]}, **common)
    with pytest.raises(ValueError, match=r"G=1.0 does not match units 'au-yr-msun'"):
        write_hdf5(tmp_path / "a.h5", **arrays, **{**common, "G": 1.0})
    with pytest.raises(ValueError, match="attribute 'units' is reserved"):
        write_hdf5(tmp_path / "a.h5", **arrays, **common, attrs={"units": "x"})
    with pytest.raises(ValueError, match="attribute 'bad' must be a string, number or boolean"):
        write_hdf5(tmp_path / "a.h5", **arrays, **common, attrs={"bad": [1, 2]})
    with pytest.raises(ValueError, match="unknown unit system"):
        write_hdf5(tmp_path / "a.h5", **arrays, **{**common, "units": "cubits"})
    assert not list(tmp_path.iterdir())


def test_read_refuses_other_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_hdf5(tmp_path / "none.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(ValueError, match="is not an HDF5 file"):
        read_hdf5(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="is not an aits trajectory"):
        read_hdf5(tmp_path / "other.h5")


def test_missing_h5py_names_the_extra(monkeypatch, tmp_path):
    _, result = jupiter_run()
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'aits\[hdf5\]'"):
        write_hdf5(tmp_path / "a.h5", **trajectory_arrays(result), G=1.0, softening=0.0)
    assert not list(tmp_path.iterdir())


def test_float32_runs_keep_their_dtype(tmp_path):
    state = aits.figure_eight(dtype=torch.float32)
    result = aits.simulate(state, aits.FixedPolicy(0.01), steps=3)
    path = write_hdf5(tmp_path / "f.h5", **trajectory_arrays(result), G=1.0, softening=0.0)
    with h5py.File(path, "r") as f:
        assert f["pos"].dtype == np.float32 and f["t"].dtype == np.float64
        assert f.attrs["units"] == "nbody" and f["t"].attrs["units"] == ""
