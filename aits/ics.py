"""Initial conditions: each function returns a :class:`~aits.state.SystemState`.

All random generators take a ``seed`` and draw from their own
``torch.Generator`` (in float64 on the CPU, then cast and moved), so the same
seed gives the same system on every device and dtype. Systems are returned in
their centre-of-mass frame unless said otherwise.

Files: :func:`load_state` reads ``.npy`` arrays and text/CSV tables whose columns
are ``m x y vx vy`` (2-D) or ``m x y z vx vy vz`` (3-D), one body per row.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from aits.state import SystemState

#: Period of the figure-eight choreography with unit masses and G = 1.
FIGURE_EIGHT_PERIOD = 6.32591398

_FIGURE_EIGHT_X1 = (0.97000436, -0.24308753)
_FIGURE_EIGHT_V3 = (-0.93240737, -0.86473146)

_Device = torch.device | str | None


class InitialConditionsError(ValueError):
    """A malformed initial-conditions file; the message names the file and line/row."""


def _check_dim(dim: int) -> None:
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim!r}")


def _check_positive(name: str, value: float) -> float:
    v = float(value)
    if not (v > 0.0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def _check_eccentricity(e: float) -> float:
    e = float(e)
    if not (0.0 <= e < 1.0):
        raise ValueError(f"eccentricity e must satisfy 0 <= e < 1 (a bound orbit), got {e!r}")
    return e


def _generator(seed: int) -> torch.Generator:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def _make(pos, vel, mass, *, softening, G, dtype, device, center=True) -> SystemState:
    state = SystemState(
        pos=pos.to(dtype=dtype, device=device),
        vel=vel.to(dtype=dtype, device=device),
        mass=mass.to(dtype=dtype, device=device),
        softening=softening,
        G=G,
    )
    return state.centered() if center else state


# ------------------------------------------------------------------------------- Kepler


def kepler_period(a, m1: float = 0.5, m2: float = 0.5, G: float = 1.0):
    """Orbital period ``2 pi sqrt(a^3 / (G (m1 + m2)))``; ``a`` a number or tensor."""
    if isinstance(a, torch.Tensor):
        return 2.0 * math.pi * torch.sqrt(a**3 / (G * (m1 + m2)))
    return 2.0 * math.pi * math.sqrt(float(a) ** 3 / (G * (m1 + m2)))


def _kepler_relative(e, a, M: float, G: float, at: str):
    """Separation and relative speed at apocentre/pericentre (tensors or floats)."""
    if at in ("apocentre", "apocenter", "apo"):
        r = a * (1 + e)
        v2 = G * M * (1 - e) / r
    elif at in ("pericentre", "pericenter", "peri"):
        r = a * (1 - e)
        v2 = G * M * (1 + e) / r
    else:
        raise ValueError(f"at must be 'apocentre' or 'pericentre', got {at!r}")
    return r, (v2**0.5)


def _kepler_bodies(r, v, m1: float, m2: float, dim: int):
    """Bodies on the x axis moving along y, centre of mass at rest at the origin.
    ``r, v`` are ``(B,)`` tensors; returns pos, vel ``(B, 2, dim)``, mass ``(B, 2)``."""
    M = m1 + m2
    B = r.shape[0]
    pos = torch.zeros(B, 2, dim, dtype=torch.float64)
    vel = torch.zeros(B, 2, dim, dtype=torch.float64)
    pos[:, 0, 0] = -(m2 / M) * r
    pos[:, 1, 0] = (m1 / M) * r
    vel[:, 0, 1] = -(m2 / M) * v
    vel[:, 1, 1] = (m1 / M) * v
    mass = torch.tensor([m1, m2], dtype=torch.float64).expand(B, 2)
    return pos, vel, mass


def kepler_orbit(
    e: float = 0.0,
    a: float = 1.0,
    m1: float = 0.5,
    m2: float = 0.5,
    *,
    at: str = "apocentre",
    dim: int = 2,
    G: float = 1.0,
    softening: float = 0.0,
    dtype: torch.dtype = torch.float64,
    device: _Device = None,
) -> SystemState:
    """A two-body Kepler orbit, single system: ``pos (2, dim)``.

    The bodies start on the x axis at apocentre (separation ``a (1 + e)``) or
    pericentre (``a (1 - e)``), moving along y, with the centre of mass at rest at
    the origin. Energy ``-G m1 m2 / (2 a)``; period :func:`kepler_period`.
    """
    _check_dim(dim)
    e = _check_eccentricity(e)
    a = _check_positive("semi-major axis a", a)
    m1, m2 = _check_positive("m1", m1), _check_positive("m2", m2)
    r, v = _kepler_relative(e, a, m1 + m2, _check_positive("G", G), at)
    pos, vel, mass = _kepler_bodies(
        torch.tensor([r], dtype=torch.float64), torch.tensor([v], dtype=torch.float64), m1, m2, dim
    )
    return _make(pos[0], vel[0], mass[0], softening=softening, G=G, dtype=dtype, device=device,
                 center=False)


def _check_range(name: str, rng: Sequence[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in rng)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high), got {rng!r}") from None
    if not lo <= hi:
        raise ValueError(f"{name} must have low <= high, got {rng!r}")
    return lo, hi


def kepler_batch(
    batch: int,
    e_range: Sequence[float] = (0.0, 0.9),
    a_range: Sequence[float] = (0.5, 2.0),
    m1: float = 0.5,
    m2: float = 0.5,
    *,
    at: str = "apocentre",
    dim: int = 2,
    seed: int = 0,
    G: float = 1.0,
    softening: float = 0.0,
    dtype: torch.dtype = torch.float64,
    device: _Device = None,
) -> SystemState:
    """A batch of ``batch`` Kepler orbits, ``pos (batch, 2, dim)``, with eccentricity
    and semi-major axis drawn uniformly from ``e_range`` and ``a_range``.

    The drawn values are recoverable: ``e`` and ``a`` from the energy and the
    starting separation; periods from ``kepler_period(a, m1, m2, G)``.
    """
    _check_dim(dim)
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an int >= 1, got {batch!r}")
    e_lo, e_hi = _check_range("e_range", e_range)
    a_lo, a_hi = _check_range("a_range", a_range)
    _check_eccentricity(e_lo), _check_eccentricity(e_hi)
    _check_positive("a_range low", a_lo), _check_positive("a_range high", a_hi)
    m1, m2 = _check_positive("m1", m1), _check_positive("m2", m2)
    gen = _generator(seed)
    e = e_lo + (e_hi - e_lo) * torch.rand(batch, generator=gen, dtype=torch.float64)
    a = a_lo + (a_hi - a_lo) * torch.rand(batch, generator=gen, dtype=torch.float64)
    r, v = _kepler_relative(e, a, m1 + m2, _check_positive("G", G), at)
    pos, vel, mass = _kepler_bodies(r, v, m1, m2, dim)
    return _make(pos, vel, mass, softening=softening, G=G, dtype=dtype, device=device,
                 center=False)


# --------------------------------------------------------------------------- figure eight


def hierarchical_triple(
    a_in: float = 1.0,
    e_in: float = 0.3,
    a_out: float = 8.0,
    e_out: float = 0.2,
    masses: Sequence[float] = (0.5, 0.5, 0.25),
    inclination: float = 0.5,
    *,
    G: float = 1.0,
    softening: float = 0.0,
    dtype: torch.dtype = torch.float64,
    device: _Device = None,
) -> SystemState:
    """A hierarchical triple, 3-D: an inner binary (``masses[0]``, ``masses[1]``; ``a_in``,
    ``e_in``, at apocentre in the x-y plane) orbited by ``masses[2]`` on an outer Kepler
    orbit about the binary's centre of mass (``a_out``, ``e_out``, at apocentre, its
    plane tilted by ``inclination`` radians about the x axis). ``pos (3, 3)``, centre of
    mass at rest at the origin. The default (period ratio about 15, Mardling-Aarseth
    stable) is the suite's triple.
    """
    if len(masses) != 3:
        raise ValueError(f"hierarchical_triple: masses must be three numbers, got {masses!r}")
    m1, m2, m3 = (_check_positive(f"m{i + 1}", m) for i, m in enumerate(masses))
    e_in, e_out = _check_eccentricity(e_in), _check_eccentricity(e_out)
    a_in, a_out = _check_positive("a_in", a_in), _check_positive("a_out", a_out)
    G = _check_positive("G", G)
    r, v = _kepler_relative(e_in, a_in, m1 + m2, G, "apocentre")
    pos_in, vel_in, _ = _kepler_bodies(torch.tensor([r], dtype=torch.float64),
                                       torch.tensor([v], dtype=torch.float64), m1, m2, 3)
    R, V = _kepler_relative(e_out, a_out, m1 + m2 + m3, G, "apocentre")
    c, s = math.cos(inclination), math.sin(inclination)
    pos = torch.zeros(3, 3, dtype=torch.float64)
    vel = torch.zeros(3, 3, dtype=torch.float64)
    pos[:2], vel[:2] = pos_in[0], vel_in[0]
    pos[2] = torch.tensor([R, 0.0, 0.0], dtype=torch.float64)
    vel[2] = torch.tensor([0.0, V * c, V * s], dtype=torch.float64)
    mass = torch.tensor([m1, m2, m3], dtype=torch.float64)
    return _make(pos, vel, mass, softening=softening, G=G, dtype=dtype, device=device)


def figure_eight(
    *, dim: int = 2, dtype: torch.dtype = torch.float64, device: _Device = None
) -> SystemState:
    """The Chenciner–Montgomery figure-eight choreography: three unit masses, G = 1,
    period :data:`FIGURE_EIGHT_PERIOD`; ``pos (3, dim)`` (z = 0 in 3-D)."""
    _check_dim(dim)
    x1 = torch.tensor(_FIGURE_EIGHT_X1, dtype=torch.float64)
    v3 = torch.tensor(_FIGURE_EIGHT_V3, dtype=torch.float64)
    pos = torch.zeros(3, dim, dtype=torch.float64)
    vel = torch.zeros(3, dim, dtype=torch.float64)
    pos[0, :2], pos[1, :2] = x1, -x1
    vel[0, :2], vel[1, :2], vel[2, :2] = -v3 / 2, -v3 / 2, v3
    return _make(pos, vel, torch.ones(3, dtype=torch.float64), softening=0.0, G=1.0,
                 dtype=dtype, device=device, center=False)


# --------------------------------------------------------------------------------- random


def random_system(
    n: int,
    dim: int = 3,
    *,
    batch: int | None = None,
    mass: float = 1.0,
    mass_spread: float = 0.5,
    pos_scale: float = 1.0,
    vel_scale: float = 0.5,
    seed: int = 0,
    softening: float = 0.0,
    G: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device: _Device = None,
) -> SystemState:
    """Random bodies: ``pos (n, dim)``, or ``(batch, n, dim)`` when ``batch`` is given.

    Masses are uniform in ``[1 - mass_spread, 1 + mass_spread]`` then scaled so that
    each system's total mass is ``mass``; positions and velocities are Gaussian
    with standard deviations ``pos_scale`` and ``vel_scale``; the result is moved
    to the centre-of-mass frame.
    """
    _check_dim(dim)
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise ValueError(f"batch must be None or an int >= 1, got {batch!r}")
    mass = _check_positive("mass", mass)
    if not 0.0 <= float(mass_spread) < 1.0:
        raise ValueError(f"mass_spread must be in [0, 1), got {mass_spread!r}")
    pos_scale = _check_positive("pos_scale", pos_scale)
    if not (float(vel_scale) >= 0.0 and math.isfinite(float(vel_scale))):
        raise ValueError(f"vel_scale must be a finite number >= 0, got {vel_scale!r}")
    gen = _generator(seed)
    shape = (batch or 1, n)
    m = 1.0 + mass_spread * (2 * torch.rand(shape, generator=gen, dtype=torch.float64) - 1)
    m = m * (mass / m.sum(-1, keepdim=True))
    x = pos_scale * torch.randn(shape + (dim,), generator=gen, dtype=torch.float64)
    v = float(vel_scale) * torch.randn(shape + (dim,), generator=gen, dtype=torch.float64)
    if batch is None:
        x, v, m = x[0], v[0], m[0]
    return _make(x, v, m, softening=softening, G=G, dtype=dtype, device=device)


# -------------------------------------------------------------------------------- Plummer


def _plummer_one(n: int, gen: torch.Generator, r_max: float):
    """One Plummer sphere (scale radius 1, M = G = 1) by the Aarseth–Hénon–Wielen method."""
    # radii from the inverse cumulative mass, truncated at r_max
    x_max = (1.0 + r_max**-2) ** -1.5
    X = x_max * torch.rand(n, generator=gen, dtype=torch.float64).clamp_min(1e-12)
    r = (X ** (-2.0 / 3.0) - 1.0).rsqrt()
    # speeds: q = v / v_esc from g(q) = q^2 (1 - q^2)^(7/2) by rejection (max < 0.1)
    q = torch.empty(0, dtype=torch.float64)
    while q.numel() < n:
        cand = torch.rand(4 * n, generator=gen, dtype=torch.float64)
        y = 0.1 * torch.rand(4 * n, generator=gen, dtype=torch.float64)
        q = torch.cat([q, cand[y < cand**2 * (1 - cand**2) ** 3.5]])
    v = q[:n] * math.sqrt(2.0) * (1.0 + r * r) ** -0.25

    def isotropic(length):
        u = torch.randn(n, 3, generator=gen, dtype=torch.float64)
        return length.unsqueeze(-1) * u / u.norm(dim=-1, keepdim=True)

    return isotropic(r), isotropic(v)


def plummer(
    n: int,
    *,
    batch: int | None = None,
    seed: int = 0,
    softening: float = 0.0,
    r_max: float = 10.0,
    dtype: torch.dtype = torch.float64,
    device: _Device = None,
) -> SystemState:
    """A 3-D Plummer sphere of ``n`` equal masses in Hénon (virial) units:
    G = 1, total mass 1, and, for the sampled bodies, kinetic energy exactly 1/4 and
    (unsoftened) potential energy exactly -1/2, i.e. E = -1/4 in virial equilibrium.

    Shape ``(n, 3)``, or ``(batch, n, 3)``; radii are truncated at ``r_max`` Plummer
    scale radii before rescaling. ``softening`` is attached to the state only.
    """
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise ValueError(f"batch must be None or an int >= 1, got {batch!r}")
    r_max = _check_positive("r_max", r_max)
    gen = _generator(seed)
    parts = [_plummer_one(n, gen, r_max) for _ in range(batch or 1)]
    x = torch.stack([p[0] for p in parts])
    v = torch.stack([p[1] for p in parts])
    m = torch.full((batch or 1, n), 1.0 / n, dtype=torch.float64)
    state = SystemState(x, v, m).centered()
    # exact virial units for this sample: U = -1/2 (scale lengths), T = 1/4 (scale speeds)
    lam = -2.0 * state.gravity_potential_energy()
    mu = (0.25 / state.kinetic_energy()).sqrt()
    x = state.pos * lam[:, None, None]
    v = state.vel * mu[:, None, None]
    if batch is None:
        x, v, m = x[0], v[0], m[0]
    return _make(x, v, m, softening=softening, G=1.0, dtype=dtype, device=device, center=False)


# ---------------------------------------------------------------------------------- files

_HEADERS = (["m", "x", "y", "vx", "vy"], ["m", "x", "y", "z", "vx", "vy", "vz"])
_COLUMNS = "m x y vx vy (2-D) or m x y z vx vy vz (3-D)"


def _table_to_state(table: np.ndarray, where, path, *, softening, G, dtype, device):
    """``table (..., N, C)`` with C in {5, 7} -> state; ``where(index)`` names a row."""
    C = table.shape[-1]
    if C not in (5, 7):
        raise InitialConditionsError(f"{path}: expected 5 or 7 columns ({_COLUMNS}), got {C}")
    if table.shape[-2] < 2:
        raise InitialConditionsError(
            f"{path}: need at least 2 bodies, got {table.shape[-2]}"
        )
    flat = table.reshape(-1, C)
    bad = ~np.isfinite(flat).all(axis=1)
    if bad.any():
        raise InitialConditionsError(f"{path}:{where(int(np.argmax(bad)))}: non-finite value")
    neg = flat[:, 0] < 0
    if neg.any():
        i = int(np.argmax(neg))
        raise InitialConditionsError(f"{path}:{where(i)}: negative mass {flat[i, 0]:g}")
    totals = table[..., 0].reshape(-1, table.shape[-2]).sum(axis=1)
    if not (totals > 0).all():
        which = "" if table.ndim == 2 else f" (system {int(np.argmax(~(totals > 0)))})"
        raise InitialConditionsError(
            f"{path}: the masses of a system must not all be zero{which}; gravity needs mass"
        )
    dim = (C - 1) // 2
    _check_representable(table.reshape(-1, table.shape[-2], C), dim, where, path,
                         softening=float(softening), G=float(G), dtype=dtype)
    t = torch.from_numpy(np.ascontiguousarray(table, dtype=np.float64))
    return _make(t[..., 1 : 1 + dim], t[..., 1 + dim :], t[..., 0], softening=softening, G=G,
                 dtype=dtype, device=device, center=False)


_CHUNK = 256  # rows of the pair loop at a time: O(_CHUNK * N) memory


def _check_representable(systems: np.ndarray, dim: int, where, path, *, softening: float,
                         G: float, dtype: torch.dtype) -> None:
    """Refuse bodies whose energies ``dtype`` cannot hold, and coincident bodies
    without softening. ``systems (S, N, C)``; ``where(flat_row)`` names a row.

    Limits, with ``F`` the largest ``dtype`` number: ``|x|^2 <= F / 4`` (so every
    pairwise ``r^2`` is finite), ``m |v|^2 <= F`` and ``|v|^2 <= F``, and the
    potential energy ``sum G m_i m_j / s_ij`` (summed in float64) ``<= F``.
    """
    F = float(torch.finfo(dtype).max)
    S, N, _ = systems.shape
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        flat = systems.reshape(S * N, -1)
        m, x, v = flat[:, 0], flat[:, 1 : 1 + dim], flat[:, 1 + dim :]
        r2, v2 = (x * x).sum(1), (v * v).sum(1)
        checks = (
            (~(r2 <= F / 4), f"position too large for {dtype}: |x|^2 = {{:.3g}} > {F / 4:.3g} "
                             "would overflow r^2; rescale the length unit", r2),
            (~(v2 <= F) | ~(m * v2 <= F), f"velocity too large for {dtype}: m |v|^2 = {{:.3g}} "
                                          f"> {F:.3g}; rescale the velocity unit", m * v2),
        )
        for bad, message, value in checks:
            if bad.any():
                i = int(np.argmax(bad))
                raise InitialConditionsError(f"{path}:{where(i)}: {message.format(value[i])}")
        cast = torch.from_numpy(np.ascontiguousarray(flat[:, 1 : 1 + dim])).to(dtype).double()
        pos = cast.numpy().reshape(S, N, dim)
        for b in range(S):
            _check_pairs(pos[b], systems[b, :, 0], b * N, where, path, softening, G, F, dtype)


def _row(where: str) -> str:
    """``where`` of a row as words: text files give bare line numbers."""
    return f"line {where}" if where.isdigit() else where


def _check_pairs(pos: np.ndarray, m: np.ndarray, offset: int, where, path, softening: float,
                 G: float, F: float, dtype: torch.dtype) -> None:
    """Coincident bodies (``softening == 0``) and the potential energy of one system:
    ``pos (N, D)`` as ``dtype`` holds it, ``m (N,)``; rows ``offset + i``."""
    N = pos.shape[0]
    U = 0.0
    eps2 = softening * softening
    for i0 in range(0, N, _CHUNK):
        i1 = min(i0 + _CHUNK, N)
        d = pos[i0:i1, None, :] - pos[None, :, :]
        s2 = (d * d).sum(-1) + eps2
        upper = np.arange(N)[None, :] > np.arange(i0, i1)[:, None]
        same = upper & (s2 == 0)
        if same.any():
            i, j = np.unravel_index(int(np.argmax(same)), same.shape)
            raise InitialConditionsError(
                f"{path}:{where(offset + int(j))}: body at the position of the one at "
                f"{_row(where(offset + i0 + int(i)))} (their squared distance is 0 in {dtype}); "
                "without softening their force and potential are infinite: set a softening "
                "> 0 (--softening) or move one of them"
            )
        terms = np.where(upper, G * m[i0:i1, None] * m[None, :] / np.sqrt(np.where(upper, s2, 1)),
                         0.0)
        U += float(terms.sum())
        if not U <= F:
            i, j = np.unravel_index(int(np.argmax(terms)), terms.shape)
            raise InitialConditionsError(
                f"{path}:{where(offset + i0 + int(i))}: the potential energy overflows {dtype} "
                f"(the bodies at {_row(where(offset + i0 + int(i)))} and "
                f"{_row(where(offset + int(j)))} are too close for their masses); rescale the "
                "units or add softening"
            )


def load_npy(
    path: str | os.PathLike,
    *,
    softening: float = 0.0,
    G: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device: _Device = None,
) -> SystemState:
    """Load a ``.npy`` array ``(N, C)`` (one system) or ``(B, N, C)`` (a batch), with
    ``C`` = 5 (``m x y vx vy``) or 7 (``m x y z vx vy vz``). Not moved to the COM frame.

    Raises:
        InitialConditionsError: unreadable file, wrong shape/dtype, non-finite
            values, negative masses (naming the row), fewer than 2 bodies, values whose
            energies ``dtype`` cannot represent, coincident bodies with
            ``softening == 0``.
    """
    try:
        table = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any numpy failure is a malformed file
        raise InitialConditionsError(f"{path}: cannot read as .npy: {exc}") from exc
    if not np.issubdtype(table.dtype, np.number) or np.issubdtype(table.dtype, np.complexfloating):
        raise InitialConditionsError(f"{path}: expected a real numeric array, got {table.dtype}")
    if table.ndim not in (2, 3):
        raise InitialConditionsError(
            f"{path}: expected shape (N, 5|7) or (B, N, 5|7), got {table.shape}"
        )
    n = table.shape[-2]

    def where(i: int) -> str:
        return f"row {i}" if table.ndim == 2 else f"system {i // n} row {i % n}"

    return _table_to_state(table.astype(np.float64), where, path, softening=softening, G=G,
                           dtype=dtype, device=device)


def load_text(
    path: str | os.PathLike,
    *,
    softening: float = 0.0,
    G: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device: _Device = None,
) -> SystemState:
    """Load one system from a text/CSV table, one body per line: ``m x y vx vy`` or
    ``m x y z vx vy vz``, separated by commas and/or whitespace. ``#`` starts a
    comment; blank lines are skipped; a first line naming exactly those columns in
    that order (e.g. ``m,x,y,vx,vy``) is taken as a header.

    Raises:
        InitialConditionsError: naming the file and line for a wrong or inconsistent
            column count, a non-numeric or non-finite value, a negative mass, a value
            whose energies ``dtype`` cannot represent, a body at the position of another
            with ``softening == 0``; naming the file for an unreadable file or fewer
            than 2 bodies.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InitialConditionsError(f"{path}: cannot read: {exc}") from exc
    rows: list[list[float]] = []
    line_of: list[int] = []
    for lineno, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        tokens = [t for t in re.split(r"[,\s]+", text) if t]
        if not rows and [t.lower() for t in tokens] in _HEADERS:
            continue
        if len(tokens) not in (5, 7):
            raise InitialConditionsError(
                f"{path}:{lineno}: expected 5 or 7 columns ({_COLUMNS}), got {len(tokens)}"
            )
        if rows and len(tokens) != len(rows[0]):
            raise InitialConditionsError(
                f"{path}:{lineno}: {len(tokens)} columns, but line {line_of[0]} has "
                f"{len(rows[0])}"
            )
        values = []
        for col, tok in enumerate(tokens, start=1):
            try:
                values.append(float(tok))
            except ValueError:
                raise InitialConditionsError(
                    f"{path}:{lineno}: column {col} is not a number: {tok!r}"
                ) from None
        rows.append(values)
        line_of.append(lineno)
    if len(rows) < 2:
        raise InitialConditionsError(f"{path}: need at least 2 bodies, got {len(rows)}")
    table = np.asarray(rows, dtype=np.float64)
    return _table_to_state(table, lambda i: str(line_of[i]), path, softening=softening, G=G,
                           dtype=dtype, device=device)


def save_state(state: SystemState, path: str | os.PathLike) -> Path:
    """Write ``state`` in the initial-condition format :func:`load_state` reads: a
    ``.npy`` array ``(N, 2D+1)`` (``(B, N, 2D+1)`` for a batch) with columns
    ``m x y [z] vx vy [vz]``, or, for any other suffix, a text table with a header
    line (one system only). Softening, ``G`` and time are not part of the format:
    pass them again when loading. Written atomically; returns the path.

    Raises:
        ValueError: a batch written as text.
        OSError: the file cannot be written.
    """
    path = Path(path)
    table = torch.cat([state.mass.unsqueeze(-1), state.pos, state.vel], -1)
    table = table.detach().cpu().double().numpy()
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix.lower() == ".npy":
        with open(tmp, "wb") as fh:
            np.save(fh, table)
    else:
        if state.is_batched:
            raise ValueError(f"{path}: a batch of {state.batch_size} systems needs a .npy file")
        axes = "xyz"[:state.dim]
        header = ",".join(["m", *axes, *(f"v{a}" for a in axes)])
        np.savetxt(tmp, table, delimiter=",", header=header, comments="", fmt="%.17g")
    os.replace(tmp, path)
    return path


def load_state(
    path: str | os.PathLike,
    *,
    softening: float = 0.0,
    G: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device: _Device = None,
) -> SystemState:
    """Load a state from ``path``: ``.npy`` via :func:`load_npy`, anything else as text
    via :func:`load_text`. ``softening`` must be the one the state will be used with:
    coincident bodies are refused when it is 0."""
    loader = load_npy if str(path).lower().endswith(".npy") else load_text
    return loader(path, softening=softening, G=G, dtype=dtype, device=device)
