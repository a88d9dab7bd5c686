"""Encounter features: the ingredients of Aarseth's criterion and the pairwise
free-fall and collision times, made scale-free.

Per body ``i`` the acceleration ``a``, jerk ``j``, snap ``s`` and crackle ``c`` of
mutual gravity (:func:`aits.features.gravity_derivatives`) give the
Aarseth time ``tau_i = sqrt((|a||s| + |j|^2) / (|j||c| + |s|^2))`` (``eta = 1``).
Two more numbers per body are dimensionless: ``q1 = |j|^2 / (|a||s|)`` and
``q2 = |s|^2 / (|j||c|)``.

:func:`encounter_times` returns the *time-like* quantities (each scales by ``T``
when the system is rescaled by lengths ``L``, masses ``M`` and times
``T = sqrt(L^3 / (G M))``): the minimum and geometric-mean Aarseth time, the
minimum pairwise free-fall time, the minimum pairwise collision time
``min(r/|v_ij|, sqrt(r/|a_ij|))`` and the energy time
``T_E = G M^{5/2} / (2 |E|)^{3/2}`` (conserved along a run, the orbital period
scale of a binary and the crossing time of a cluster).

:func:`encounter_features` returns :data:`ENCOUNTER_NAMES`, all dimensionless
(logarithms of ratios, clipped to ``[-CLIP, CLIP]``): unchanged under such a
rescaling, invariant under a permutation of the bodies, finite for zero-mass
(padded) systems and for ``N`` = 1 or 2. A dt of the form
``tau_min * exp(f(features))`` is then scale-free by construction.

With ``orbit=True`` (the ``encounter-orbit`` kind, always smooth) one column more,
:data:`ORBIT_ENCOUNTER_NAMES`' last: ``log(2 L^2 |E| M / (G^2 P^3))`` (``L`` the
angular momentum and ``E`` the energy in the centre-of-mass frame, ``M`` the total
mass, ``P = sum_{i<j} m_i m_j``), which is ``log(1 - e^2)`` for a bound Kepler binary
(``log(e^2 - 1)`` for an unbound one) and, for N bodies, as scale-free, rotation- and
permutation-invariant and conserved along a run; O(N) from the state and the energy
time.

With ``smooth=True`` it returns :data:`SMOOTH_ENCOUNTER_NAMES` instead (the
``encounter-smooth`` feature kind): columns 6-11 are logs of ratios of sums over
the bodies (``S_x = sum_i |x_i|``, ``S_xy = sum_i |x_i||y_i|``):
``S_jj / S_as``, ``S_ss / S_jc``, ``sqrt((S_as + S_jj) / (S_jc + S_ss)) / tau_min``
and the summed jerk, snap and crackle times ``S_a / S_j``, ``sqrt(S_a / S_s)``,
``(S_a / S_c)^(1/3)`` over ``tau_min``. The per-body logs of the plain kind diverge
wherever one body's acceleration passes through zero (the middle body of a collinear
configuration: six times a period on the figure-eight) and its values "of the body
with tau_min" jump when that body changes; the sums do neither, so a network's
``dt`` stays as smooth along an orbit as Aarseth's criterion is.

Cost: on the CPU one native op (:func:`aits.ops.encounter_features`: the two
derivative passes over the pairs, which in float64 above 64 bodies also take the
free-fall and collision times and the potential; else one more pass for those),
which agrees with the torch path to rounding; elsewhere
the torch path: the derivative passes, one chunked pass for the collision time and
one potential-energy evaluation, the free-fall time from the state's cached pair
statistics when :func:`aits.state.step` filled them. Computed without gradient.
Measured on one core (``docs/benchmarks.md``): native 88x the torch path on one
three-body system, 5x on 4096 of them, 4.5x on a Plummer sphere of 1024.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from aits import ops
from aits.features import (ENCOUNTER_KINDS, ENCOUNTER_NAMES, ORBIT_ENCOUNTER_NAMES,
                           SMOOTH_ENCOUNTER_NAMES, gravity_derivatives, state_pair_stats)
from aits.policies import CollisionalPolicy
from aits.state import SystemState

__all__ = ["CLIP", "ENCOUNTER_NAMES", "ORBIT_ENCOUNTER_NAMES", "SMOOTH_ENCOUNTER_NAMES",
           "EncounterTimes", "PerBody", "aarseth_gmean", "encounter_features", "encounter_times",
           "kind_features", "log_ratio", "massive", "per_body", "smooth_columns"]

#: log ratios are clipped to [-CLIP, CLIP] (a body feeling no force has tau = inf)
CLIP = 30.0



def log_ratio(num: Tensor, den: Tensor) -> Tensor:
    """``log(num / den)`` clipped to ``[-CLIP, CLIP]``; 0 where both are 0 (or NaN
    from 0 * inf), ``+CLIP`` where only ``den`` is 0, ``-CLIP`` where only ``num`` is."""
    tiny = torch.finfo(num.dtype).tiny
    out = torch.log(num.clamp_min(tiny)) - torch.log(den.clamp_min(tiny))
    out = torch.where((num == 0) & (den == 0), 0.0, out)
    out = torch.nan_to_num(out, nan=0.0, posinf=CLIP, neginf=-CLIP)
    return out.clamp(-CLIP, CLIP)


@dataclass(frozen=True)
class EncounterTimes:
    """Time-like quantities of each system, each of shape ``batch_shape`` (> 0, may be ``inf``).

    Attributes:
        aarseth_min: ``min_i tau_i`` (Aarseth's criterion with ``eta = 1``).
        aarseth_gmean: geometric mean of ``tau_i`` over the bodies whose ``tau_i`` is
            finite and > 0.
        freefall_min: minimum pairwise free-fall time ``sqrt(s^3 / (G (m_i + m_j)))``.
        collision_min: minimum pairwise ``min(r/|v_ij|, sqrt(r/|a_ij|))``.
        energy_time: ``G M^{5/2} / (2 |E|)^{3/2}`` (``inf`` where ``E = 0``).
    """

    aarseth_min: Tensor
    aarseth_gmean: Tensor
    freefall_min: Tensor
    collision_min: Tensor
    energy_time: Tensor


@dataclass(frozen=True)
class PerBody:
    """Per-body magnitudes ``batch_shape + (N,)``: |a|, |j|, |s|, |c| and tau."""

    a: Tensor
    j: Tensor
    s: Tensor
    c: Tensor
    tau: Tensor


_COLLISION = CollisionalPolicy(1.0)


def massive(state: SystemState) -> Tensor:
    """``batch_shape`` bool: the system has a total mass > 0 (padded slots do not)."""
    return state.mass.detach().sum(-1) > 0


def per_body(state: SystemState,
             derivatives: tuple[Tensor, Tensor, Tensor, Tensor] | None = None) -> PerBody:
    """:class:`PerBody` of ``state`` from ``derivatives`` (acceleration, jerk, snap and
    crackle, each shaped like ``pos``; default: :func:`gravity_derivatives`)."""
    if derivatives is None:
        derivatives = gravity_derivatives(state)
    a, j, s, c = (t.norm(dim=-1) for t in derivatives)
    ok = massive(state).unsqueeze(-1)
    a, j, s, c = (torch.where(ok, t, 0.0) for t in (a, j, s, c))  # zero-mass: NaN -> 0
    tau = ((a * s + j * j) / (j * c + s * s)).sqrt()  # as aits.features.aarseth_time
    tau = torch.where(torch.isnan(tau), math.inf, tau)  # 0/0, no force: no step limit
    return PerBody(a, j, s, c, tau)


def aarseth_gmean(tau: Tensor) -> Tensor:
    """Geometric mean ``batch_shape`` of the per-body ``tau (batch_shape + (N,))``
    that are finite and > 0 (``inf`` where none is)."""
    felt = torch.isfinite(tau) & (tau > 0)
    n_felt = felt.sum(-1)
    log_tau = torch.where(felt, tau, 1.0).log()
    gmean = torch.exp(log_tau.sum(-1) / n_felt.clamp_min(1))
    return torch.where(n_felt > 0, gmean, math.inf)


@torch.no_grad()
def _times(state: SystemState, body: PerBody) -> tuple[EncounterTimes, Tensor, Tensor]:
    """The times, and the kinetic energy in the centre-of-mass frame and the potential
    energy (``batch_shape`` each) that the energy time came from."""
    gmean = aarseth_gmean(body.tau)
    ok = massive(state)
    tff = state_pair_stats(state, freefall=True).min_freefall
    kin = state.centered().kinetic_energy().detach()
    pot = state.potential_energy().detach()
    E, M = kin + pot, state.mass.detach().sum(-1)
    t_energy = torch.where(E != 0, state.G * M.pow(2.5) / (2 * E.abs()).pow(1.5), math.inf)
    times = EncounterTimes(
        aarseth_min=body.tau.amin(-1),
        aarseth_gmean=gmean,
        freefall_min=torch.where(ok, tff, math.inf),
        collision_min=torch.where(ok, _COLLISION(state), math.inf),
        energy_time=torch.where(ok, t_energy, math.inf),
    )
    return times, kin, pot


def smooth_columns(body: PerBody, tau: Tensor) -> list[Tensor]:
    """Columns 6-11 of :data:`SMOOTH_ENCOUNTER_NAMES` (each ``batch_shape``), from
    sums over the bodies, as ``csrc/cpu/encounter_kernels.h`` computes them."""
    a, j, s, c = body.a, body.j, body.s, body.c
    sa, sj, ss, sc = (x.sum(-1) for x in (a, j, s, c))
    sas, sjj, sjc, sss = ((x * y).sum(-1) for x, y in ((a, s), (j, j), (j, c), (s, s)))
    tau_sum = ((sas + sjj) / (sjc + sss)).sqrt()
    return [
        log_ratio(sjj, sas),
        log_ratio(sss, sjc),
        log_ratio(tau_sum, tau),
        log_ratio(sa, sj * tau),
        0.5 * log_ratio(sa, ss * tau * tau),
        log_ratio(sa, sc * tau * tau * tau) / 3.0,
    ]


@torch.no_grad()
def encounter_times(state: SystemState) -> EncounterTimes:
    """:class:`EncounterTimes` of ``state`` (each ``batch_shape``); they scale by ``T``."""
    if state.device.type == "cpu":
        return _native(state)[1]
    return _times(state, per_body(state))[0]


def _native(state: SystemState, smooth: bool = False) -> tuple[Tensor, EncounterTimes]:
    """:func:`encounter_features` by the native op (CPU)."""
    n, d = state.n_bodies, state.dim
    feats, times = ops.encounter_features(
        state.pos.detach().reshape(-1, n, d), state.vel.detach().reshape(-1, n, d),
        state.mass.detach().reshape(-1, n), state.softening, state.G, CLIP, smooth)
    shape = state.batch_shape
    cols = times.reshape(shape + (5,)).unbind(-1)
    return feats.reshape(shape + (len(ENCOUNTER_NAMES),)), EncounterTimes(*cols)


def _orbit_shape(state: SystemState, energy_time: Tensor) -> Tensor:
    """``log(2 L^2 |E| M / (G^2 P^3))`` (module docstring), ``batch_shape``; ``|E|``
    from the energy time ``T_E = G M^{5/2} / (2 |E|)^{3/2}``."""
    c = state.centered()
    x, v, m = c.pos.detach(), c.vel.detach(), c.mass.detach()
    if state.dim == 3:
        L2 = (m.unsqueeze(-1) * torch.linalg.cross(x, v)).sum(-2).square().sum(-1)
    elif state.dim == 2:
        L2 = (m * (x[..., 0] * v[..., 1] - x[..., 1] * v[..., 0])).sum(-1).square()
    else:  # one dimension: no angular momentum
        L2 = torch.zeros_like(m[..., 0])
    M, G = m.sum(-1), state.G
    E = (G * M.pow(2.5) / energy_time).pow(2.0 / 3.0) / 2  # 0 where T_E = inf
    P = (M * M - m.square().sum(-1)) / 2
    return log_ratio(2 * L2 * E * M, G * G * P.pow(3))


def kind_features(state: SystemState, kind: str, *,
                  native: bool = True) -> tuple[Tensor, EncounterTimes]:
    """:func:`encounter_features` of an encounter feature kind (``encounter``,
    ``encounter-smooth`` or ``encounter-orbit``)."""
    if kind not in ENCOUNTER_KINDS:
        raise ValueError(f"{kind!r} is not an encounter feature kind; valid: "
                         f"{', '.join(ENCOUNTER_KINDS)}")
    return encounter_features(state, native=native, smooth=kind != "encounter",
                              orbit=kind == "encounter-orbit")


@torch.no_grad()
def encounter_features(state: SystemState, *, native: bool = True, smooth: bool = False,
                       orbit: bool = False) -> tuple[Tensor, EncounterTimes]:
    """The dimensionless :data:`ENCOUNTER_NAMES` of ``state`` (``smooth``:
    :data:`SMOOTH_ENCOUNTER_NAMES`), ``batch_shape + (14,)``, and its
    :class:`EncounterTimes` (one set of passes serves both). ``orbit`` (with
    ``smooth``): :data:`ORBIT_ENCOUNTER_NAMES`, ``batch_shape + (15,)``.

    ``native``: on the CPU, compute them with :func:`aits.ops.encounter_features`
    (``False``: the torch path, which every other device takes; the two agree to rounding).
    """
    if orbit and not smooth:
        raise ValueError("encounter_features: orbit=True is the encounter-orbit kind, "
                         "which is smooth: pass smooth=True too")
    if native and state.device.type == "cpu":
        feats, times = _native(state, smooth)
    else:
        feats, times = _torch_path(state, smooth)
    if orbit:
        shape = _orbit_shape(state, times.energy_time)
        feats = torch.cat([feats, torch.where(massive(state), shape, 0.0).unsqueeze(-1)], -1)
    return feats, times


def _torch_path(state: SystemState, smooth: bool) -> tuple[Tensor, EncounterTimes]:
    """:func:`encounter_features` (without ``orbit``) by torch ops (any device)."""
    body = per_body(state)
    t, kin, pot = _times(state, body)
    k = body.tau.argmin(-1, keepdim=True)  # the body that sets Aarseth's step

    def at_min(x: Tensor) -> Tensor:
        return x.gather(-1, k).squeeze(-1)

    q1 = log_ratio(body.j * body.j, body.a * body.s)
    q2 = log_ratio(body.s * body.s, body.j * body.c)
    m = state.mass.detach()
    cols = [
        torch.full_like(t.aarseth_min, math.log(max(state.n_bodies, 1))),
        log_ratio(t.aarseth_min, t.energy_time),
        log_ratio(t.aarseth_gmean, t.aarseth_min),
        log_ratio(t.freefall_min, t.aarseth_min),
        log_ratio(t.collision_min, t.aarseth_min),
        log_ratio(t.freefall_min, t.energy_time),
        at_min(q1), at_min(q2), q1.mean(-1), q2.mean(-1),
        log_ratio(at_min(body.a), at_min(body.j) * t.aarseth_min),
        0.5 * log_ratio(at_min(body.a), at_min(body.s) * t.aarseth_min.square()),
        log_ratio(2 * kin, pot.abs()),
        log_ratio(m.amin(-1), m.amax(-1)),
    ]
    if smooth:
        cols[6:12] = smooth_columns(body, t.aarseth_min)
    feats = torch.stack(cols, -1)
    return torch.where(massive(state).unsqueeze(-1), feats, 0.0), t
