"""REBOUND interop: systems in and out of ``rebound.Simulation`` and its archives.

Needs the optional extra ``pip install 'aits[rebound]'``; without it every
function raises :class:`~aits._optional.MissingDependencyError` saying so.

* :func:`from_rebound` — a ``rebound.Simulation`` -> :class:`~aits.state.SystemState`
  (masses, positions, velocities, ``G``, softening, time).
* :func:`to_rebound` — a :class:`~aits.state.SystemState` -> ``rebound.Simulation``
  (2-D states get ``z = vz = 0``).
* :func:`load_rebound_archive` — one snapshot of a REBOUND Simulationarchive or
  binary file (``sim.save_to_file``) as a :class:`~aits.state.SystemState`.

REBOUND's Plummer softening (``r^2 + softening^2``) and ``G`` are aits's. What
aits cannot represent is refused with a message, never dropped silently:
massive test particles (``N_active``), an external tidal field on the way out.
Variational particles are not bodies and are left out.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from aits._optional import require
from aits.state import SystemState

if TYPE_CHECKING:
    import rebound

__all__ = ["from_rebound", "load_rebound_archive", "to_rebound"]

#: REBOUND's ``N_active = -1`` ("all particles active") as its unsigned field reads back
_ALL_ACTIVE = (-1, 2**64 - 1)


def _rebound(purpose: str) -> Any:
    return require("rebound", "rebound", purpose)


def from_rebound(
    sim: rebound.Simulation,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    dim: int = 3,
) -> SystemState:
    """The bodies of a REBOUND simulation as an aits state.

    Args:
        sim: a ``rebound.Simulation`` with at least one (non-variational) particle.
        dtype: float64 (default) or float32.
        device: where the tensors live (default cpu).
        dim: 3 (default), or 2 for a planar simulation (every ``z`` and ``vz``
            must be exactly 0).

    Returns:
        A state with ``pos``/``vel`` ``(N, dim)``, ``mass (N,)``, ``G = sim.G``,
        ``softening = sim.softening`` and ``time = sim.t``.

    Raises:
        TypeError: ``sim`` is not a ``rebound.Simulation``.
        ValueError: no particles, massive test particles, or ``dim=2`` with motion
            out of the plane.
    """
    rebound = _rebound("aits.from_rebound")
    if not isinstance(sim, rebound.Simulation):
        raise TypeError(f"from_rebound needs a rebound.Simulation, got {type(sim).__name__}")
    if dim not in (2, 3):
        raise ValueError(f"from_rebound: dim must be 2 or 3, got {dim!r}")
    n = int(sim.N) - int(sim.N_var)
    if n < 1:
        raise ValueError("from_rebound: the REBOUND simulation has no particles (add some)")
    xyz, v, m = np.zeros((n, 3)), np.zeros((n, 3)), np.zeros(n)
    sim.serialize_particle_data(xyz=xyz, vxvyvz=v, m=m)
    active = int(sim.N_active)
    if active not in _ALL_ACTIVE and active < n and np.any(m[active:] != 0):
        raise ValueError(
            f"from_rebound: sim.N_active = {active}, so REBOUND ignores the gravity of the "
            f"massive particles {active}..{n - 1}; aits treats every mass as gravitating: "
            "set their m to 0 or sim.N_active = -1"
        )
    if dim == 2:
        out_of_plane = max(float(np.abs(xyz[:, 2]).max()), float(np.abs(v[:, 2]).max()))
        if out_of_plane != 0.0:
            raise ValueError(
                f"from_rebound(dim=2): the particles move out of the x-y plane "
                f"(max |z| or |vz| = {out_of_plane:.3g}); use dim=3"
            )
    as_tensor = {"dtype": dtype, "device": device}
    return SystemState(
        pos=torch.as_tensor(xyz[:, :dim], **as_tensor),
        vel=torch.as_tensor(v[:, :dim], **as_tensor),
        mass=torch.as_tensor(m, **as_tensor),
        time=torch.tensor(float(sim.t), dtype=torch.float64, device=device),
        softening=float(sim.softening),
        G=float(sim.G),
    )


def to_rebound(state: SystemState) -> rebound.Simulation:
    """One aits system as a new ``rebound.Simulation`` (REBOUND's default integrator).

    Sets ``G``, ``softening`` and ``t`` from the state and adds one particle per
    body, in order; a 2-D state gets ``z = vz = 0``.

    Raises:
        ValueError: a batched state, or one with an external tidal field (REBOUND
            would integrate the bodies without it).
    """
    rebound = _rebound("aits.to_rebound")
    if state.is_batched:
        raise ValueError(
            f"to_rebound converts one system; this state holds a batch of {state.pos.shape[0]}: "
            "convert each of aits.split(state)"
        )
    if state.field is not None:
        raise ValueError(
            "to_rebound: the state has an external TidalField, which the REBOUND simulation "
            "would not include; convert the bodies alone with "
            "dataclasses.replace(state, field=None)"
        )
    pad = 3 - state.dim
    pos = np.pad(state.pos.detach().cpu().double().numpy(), ((0, 0), (0, pad)))
    vel = np.pad(state.vel.detach().cpu().double().numpy(), ((0, 0), (0, pad)))
    mass = state.mass.detach().cpu().double().numpy()
    sim = rebound.Simulation()
    sim.G = state.G
    sim.softening = state.softening
    sim.t = float(state.time)
    for m, x, v in zip(mass, pos, vel, strict=True):
        sim.add(m=float(m), x=float(x[0]), y=float(x[1]), z=float(x[2]),
                vx=float(v[0]), vy=float(v[1]), vz=float(v[2]))
    return sim


def load_rebound_archive(
    path: str | os.PathLike[str],
    snapshot: int = -1,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    dim: int = 3,
) -> SystemState:
    """Snapshot ``snapshot`` of a REBOUND Simulationarchive or binary file as a state.

    Args:
        path: a file written by ``sim.save_to_file(...)`` (one snapshot, or one
            every ``interval``/``step``).
        snapshot: which snapshot: ``0`` the first, ``-1`` (default) the last.
        dtype, device, dim: as for :func:`from_rebound`.

    Raises:
        FileNotFoundError: no file at ``path``.
        IndexError: ``snapshot`` is outside the file's snapshots (the message says
            how many there are).
        ValueError: the file is not a REBOUND archive.
    """
    rebound = _rebound("aits.load_rebound_archive")
    path = Path(path)
    if isinstance(snapshot, bool) or not isinstance(snapshot, (int, np.integer)):
        raise TypeError(f"snapshot must be an int (0 first, -1 last), got {snapshot!r}")
    if not path.is_file():
        raise FileNotFoundError(f"REBOUND archive {str(path)!r} does not exist (or is not a file)")
    try:
        archive = rebound.Simulationarchive(str(path))
    except (RuntimeError, ValueError) as e:
        raise ValueError(
            f"{str(path)!r} is not a REBOUND Simulationarchive or binary file (rebound: {e})"
        ) from None
    count = len(archive)
    if not -count <= snapshot < count:
        raise IndexError(
            f"snapshot {snapshot} is out of range: {str(path)!r} holds {count} snapshot"
            f"{'s' if count != 1 else ''} (0..{count - 1}, or -{count}..-1 from the end)"
        )
    return from_rebound(archive[int(snapshot)], dtype=dtype, device=device, dim=dim)
