"""Trajectories out: the arrays of ``trajectory.npz`` as an HDF5 file any tool can read.

Needs the optional extra ``pip install 'aits[hdf5]'`` (h5py); without it
:func:`write_hdf5` and :func:`read_hdf5` raise
:class:`~aits._optional.MissingDependencyError` saying so.

Layout (``S`` accepted steps, ``F`` recorded frames, ``N`` bodies, ``D`` = 2 or 3);
every dataset sits at the root, named as in ``trajectory.npz``:

================  ===========  ==============================================
dataset           shape        content
================  ===========  ==============================================
``t``             ``(S+1,)``   time after each step (``t[0]`` the start)
``dt``            ``(S,)``     the accepted steps
``step_error``    ``(S,)``     per-step relative energy error (gate view)
``energy_error``  ``(S+1,)``   whole-run ``|E(t) - E(0)| / |E(0)|``
``frame_t``       ``(F,)``     times of the recorded frames
``pos``           ``(F,N,D)``  positions at ``frame_t`` (gzip)
``vel``           ``(F,N,D)``  velocities at ``frame_t`` (gzip)
``mass``          ``(N,)``     masses
================  ===========  ==============================================

Each dataset has the attributes ``units`` (its unit label, ``""`` when
dimensionless or in ``nbody`` units) and ``description``. The root attributes:
``format = "aits-trajectory"``, ``format_version`` (1), ``aits_version``, ``G``,
``softening``, ``units`` (the unit system's name, see :mod:`aits.units`),
``unit_length``, ``unit_time``, ``unit_mass``, ``unit_velocity``, ``unit_energy``,
``policy``, ``integrator``, ``n_bodies``, ``dim``, ``steps``, ``frames``, and any
extra attributes the writer passed. With plain h5py::

    with h5py.File("trajectory.h5") as f:
        t, err = f["t"][:], f["energy_error"][:]
        x = f["pos"][:, 0, 0]          # x of body 0 at every frame
        print(f.attrs["units"], f["t"].attrs["units"])
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aits import __version__
from aits._optional import require
from aits.units import UnitSystem, get_units

if TYPE_CHECKING:
    from aits.simulation import SimulationResult

__all__ = ["FORMAT", "FORMAT_VERSION", "TRAJECTORY_KEYS", "read_hdf5", "trajectory_arrays",
           "write_hdf5"]

FORMAT = "aits-trajectory"
FORMAT_VERSION = 1

#: dataset -> (quantity whose unit it carries, or None if dimensionless; description)
_DATASETS: dict[str, tuple[str | None, str]] = {
    "t": ("time", "time after each step, t[0] the start"),
    "dt": ("time", "accepted steps"),
    "step_error": (None, "per-step relative energy error |E1 - E0| / |E0|"),
    "energy_error": (None, "whole-run relative energy error |E(t) - E(0)| / |E(0)|"),
    "frame_t": ("time", "times of the recorded frames"),
    "pos": ("length", "positions at frame_t, (frames, bodies, dim)"),
    "vel": ("velocity", "velocities at frame_t, (frames, bodies, dim)"),
    "mass": ("mass", "masses, (bodies,)"),
}
#: the arrays of trajectory.npz, in the order written
TRAJECTORY_KEYS = tuple(_DATASETS)


def trajectory_arrays(result: SimulationResult) -> dict[str, np.ndarray]:
    """The arrays of one run under the :data:`TRAJECTORY_KEYS` names (what
    ``trajectory.npz`` holds; ``np.savez_compressed(path, **trajectory_arrays(r))``)."""
    return {
        "t": result.t, "dt": result.dt, "step_error": result.step_error,
        "energy_error": result.energy_error, "frame_t": result.frame_t,
        "pos": result.frame_pos, "vel": result.frame_vel,
        "mass": result.state.mass.detach().cpu().numpy(),
    }


def _check_shapes(arrays: Mapping[str, np.ndarray]) -> None:
    """Raise ValueError unless the arrays have the layout's shapes."""
    for name, a in arrays.items():
        want = 3 if name in ("pos", "vel") else 1
        if a.ndim != want:
            raise ValueError(f"write_hdf5: {name} must be {want}-D, got shape {a.shape}")
    steps = arrays["dt"].shape[0]
    frames, n, dim = arrays["pos"].shape
    expected = {
        "t": (steps + 1,), "step_error": (steps,), "energy_error": (steps + 1,),
        "frame_t": (frames,), "vel": (frames, n, dim), "mass": (n,),
    }
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            raise ValueError(
                f"write_hdf5: {name} has shape {arrays[name].shape}, expected {shape} "
                f"for {steps} steps (dt), {frames} frames of {n} bodies in {dim}-D (pos)"
            )
    if dim not in (2, 3):
        raise ValueError(
            f"write_hdf5: pos must be (frames, bodies, 2 or 3), got {arrays['pos'].shape}"
        )


def write_hdf5(
    path: str | os.PathLike[str],
    *,
    t: np.ndarray,
    dt: np.ndarray,
    step_error: np.ndarray,
    energy_error: np.ndarray,
    frame_t: np.ndarray,
    pos: np.ndarray,
    vel: np.ndarray,
    mass: np.ndarray,
    G: float,
    softening: float,
    units: str | UnitSystem = "nbody",
    policy: str = "",
    integrator: str = "leapfrog-kdk",
    attrs: Mapping[str, str | int | float | bool] | None = None,
) -> Path:
    """Write one trajectory in the layout of the module docstring; returns the path.

    The file is written next to ``path`` and renamed into place, so a failed
    write never leaves a half file behind.

    Args:
        t, dt, step_error, energy_error, frame_t, pos, vel, mass: the arrays (see
            the layout; :func:`trajectory_arrays` gives them for a result).
        G, softening: the run's physics.
        units: the unit system the numbers are in (name or :class:`UnitSystem`);
            outside ``nbody``, ``G`` must be that system's.
        policy, integrator: what produced the run.
        attrs: more root attributes (strings, numbers, booleans).

    Raises:
        MissingDependencyError: h5py is not installed.
        ValueError: shapes that do not fit together, a ``G`` that contradicts
            ``units``, a reserved or non-scalar extra attribute.
    """
    h5py = require("h5py", "hdf5", "writing an HDF5 trajectory")

    arrays = {name: np.asarray(a) for name, a in zip(TRAJECTORY_KEYS, (
        t, dt, step_error, energy_error, frame_t, pos, vel, mass), strict=True)}
    _check_shapes(arrays)
    system = get_units(units)
    if system.name != "nbody" and not math.isclose(G, system.G, rel_tol=1e-12):
        raise ValueError(
            f"write_hdf5: G={G!r} does not match units {system.name!r} (G={system.G!r}); "
            "set the state's G from the units (aits.with_units)"
        )
    root: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "aits_version": __version__,
        "G": float(G), "softening": float(softening), "units": system.name,
        **{f"unit_{q}": system.unit(q) for q in ("length", "time", "mass", "velocity", "energy")},
        "policy": str(policy), "integrator": str(integrator),
        "n_bodies": arrays["mass"].shape[0], "dim": arrays["pos"].shape[2],
        "steps": arrays["dt"].shape[0], "frames": arrays["pos"].shape[0],
    }
    for key, value in (attrs or {}).items():
        if key in root:
            raise ValueError(f"write_hdf5: attribute {key!r} is reserved; pick another name")
        if not isinstance(value, (str, int, float, bool, np.number, np.bool_)):
            raise ValueError(
                f"write_hdf5: attribute {key!r} must be a string, number or boolean, "
                f"got {type(value).__name__}"
            )
        root[key] = value
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(root)
            for name, a in arrays.items():
                quantity, description = _DATASETS[name]
                big = name in ("pos", "vel")
                ds = f.create_dataset(name, data=a, compression="gzip" if big else None)
                ds.attrs["units"] = system.unit(quantity) if quantity else ""
                ds.attrs["description"] = description
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_hdf5(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays (by :data:`TRAJECTORY_KEYS` name) and root attributes of a file
    :func:`write_hdf5` wrote.

    Raises:
        MissingDependencyError: h5py is not installed.
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not an aits trajectory (or a newer format version).
    """
    h5py = require("h5py", "hdf5", "reading an HDF5 trajectory")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trajectory file {str(path)!r} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{str(path)!r} is not an HDF5 file ({e})") from None
    with f:
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
        if attrs.get("format") != FORMAT:
            raise ValueError(f"{str(path)!r} is not an aits trajectory (no format={FORMAT!r})")
        if attrs.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(
                f"{str(path)!r} has trajectory format version {attrs['format_version']}; "
                f"this aits reads up to {FORMAT_VERSION}: upgrade aits"
            )
        missing = [k for k in TRAJECTORY_KEYS if k not in f]
        if missing:
            raise ValueError(f"{str(path)!r} lacks the datasets {', '.join(missing)}")
        arrays = {k: f[k][()] for k in TRAJECTORY_KEYS}
    return arrays, attrs
