"""Features of a state (and of its recent history) that the time-step network sees.

Analytic features (per system, permutation-invariant):

``basic`` (11): N, D, total mass, mean and max distance from the centre of mass,
mean and max speed relative to the centre-of-mass velocity, mean and max |a|,
min and mean pairwise distance.

``rich`` (23): the 11 above, then mean/min/max/std of the masses, min and rms
distance from the centre of mass, min and rms relative speed, min and rms |a|,
max pairwise distance and the softening.

``encounter`` (14, all dimensionless): the ingredients of Aarseth's criterion and
the pairwise free-fall and collision times as log ratios (:mod:`aits.encounter`,
:data:`ENCOUNTER_NAMES`); unchanged when a system is rescaled in length, mass
and time, so a model seeing them is scale-free whatever ``normalize`` says.

``encounter-smooth`` (14, :data:`SMOOTH_ENCOUNTER_NAMES`): the same, but columns
6-11 are ratios of sums over the bodies instead of per-body logs and the values of
the body with the smallest Aarseth time: continuous along an orbit (the per-body
logs diverge where one body's acceleration passes through zero, as the middle
body's does six times a period on the figure-eight, and the body of the minimum
changes at once).

``encounter-orbit`` (15, :data:`ORBIT_ENCOUNTER_NAMES`): ``encounter-smooth`` and the
shape of the orbits, ``log(1 - e^2)`` of a binary (generalised to N bodies from the
angular momentum, energy and masses; conserved along a run). Aarseth's criterion
is close to the best step shape on binaries at e >= 0.7, while larger steps near
apocentre pay at e ~ 0.5 (README, session 14), so a network that cannot tell the two
apart compromises; this kind lets it tell them apart (the generalist preset trained
on it is no better on the development systems, README).

``encounter-history`` (11, :data:`HISTORY_ENCOUNTER_NAMES`): ``encounter-smooth``
without the pairwise free-fall and collision times, Aarseth's ingredients from the
accelerations of the current and the last ``history_len`` states (finite
differences, :mod:`aits.encounter_history`): O(N) a step instead of two passes over
the pairs. It needs the history window (``history_len`` >= 3, ``history`` none).

History features (see :mod:`aits.history`): ``delta_mag`` gives, for each
consecutive pair of states in the window, mean/max/rms of |dx|, |dv|, |da| over
the bodies and the dt taken between them (10 numbers a pair); the history
versions of ``basic``/``rich`` concatenate the analytic features of each stored
state. Padded (missing) slots give zeros.

Features are observations, not part of the differentiable simulation: they are
computed without gradient (a pairwise loop with autograd would keep O(N^2)
memory alive). Pairwise statistics are computed in chunks of rows, never as one
N x N tensor, and the acceleration cached on a state is reused.

Normalisation (:class:`FeatureScales`): lengths are divided by ``L0``, speeds by
``V0``, accelerations by ``A0``, times by ``T0`` and masses by ``M0``; N, D are
left as they are. Scales are set by hand, derived once from an initial state
(:meth:`FeatureScales.from_state`), or, with ``normalize="state"`` in
:class:`FeatureSpec`, derived from each state itself, which makes the features
invariant under a change of units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from aits.ops import aarseth_derivatives, pair_statistics
from aits.state import SystemState, center_of_mass_weights

if TYPE_CHECKING:  # pragma: no cover
    from aits.history import HistoryBuffer

__all__ = [
    "ANALYTIC_KINDS",
    "BASIC_NAMES",
    "DELTA_MAG_NAMES",
    "ENCOUNTER_KINDS",
    "ENCOUNTER_NAMES",
    "FeatureScales",
    "FeatureSpec",
    "HISTORY_ENCOUNTER_NAMES",
    "HISTORY_KINDS",
    "HISTORY_WINDOW",
    "ORBIT_ENCOUNTER_NAMES",
    "PAIR_CHUNK_ELEMENTS",
    "PairStats",
    "RICH_NAMES",
    "SMOOTH_ENCOUNTER_NAMES",
    "WINDOW_KINDS",
    "analytic_features",
    "feature_names",
    "history_features",
    "min_freefall_time",
    "pairwise_stats",
    "pairwise_stats_chunked",
    "state_pair_stats",
]

BASIC_NAMES: tuple[str, ...] = (
    "n_bodies", "dim", "total_mass",
    "mean_r_com", "max_r_com", "mean_speed", "max_speed",
    "mean_acc", "max_acc", "min_pair_dist", "mean_pair_dist",
)
RICH_NAMES: tuple[str, ...] = BASIC_NAMES + (
    "mean_mass", "min_mass", "max_mass", "std_mass",
    "min_r_com", "rms_r_com", "min_speed", "rms_speed", "min_acc", "rms_acc",
    "max_pair_dist", "softening",
)
#: dimensionless encounter features (:mod:`aits.encounter` computes them)
ENCOUNTER_NAMES: tuple[str, ...] = (
    "log_n_bodies",
    "log_aarseth_min_over_energy_time",  # log(tau_min / T_E)
    "log_aarseth_gmean_over_min",        # log(geometric-mean tau / tau_min), >= 0
    "log_freefall_over_aarseth",         # log(t_ff_min / tau_min)
    "log_collision_over_aarseth",        # log(t_coll_min / tau_min)
    "log_freefall_over_energy_time",     # log(t_ff_min / T_E)
    "log_q1_at_min",                     # log(|j|^2/(|a||s|)) of the body with tau_min
    "log_q2_at_min",                     # log(|s|^2/(|j||c|)) of that body
    "mean_log_q1",
    "mean_log_q2",
    "log_jerk_time_over_aarseth",        # log((|a|/|j|) / tau) of the body with tau_min
    "log_snap_time_over_aarseth",        # log(sqrt(|a|/|s|) / tau) of that body
    "log_virial_ratio",                  # log(2 K_com / |U|)
    "log_mass_ratio",                    # log(m_min / m_max)
)
#: the ``encounter-smooth`` kind: ENCOUNTER_NAMES with columns 6-11 from sums over
#: the bodies (``S_xy = sum_i |x_i||y_i|``, ``S_x = sum_i |x_i|``; a, j, s, c the
#: acceleration and its derivatives, tau_min Aarseth's time)
SMOOTH_ENCOUNTER_NAMES: tuple[str, ...] = ENCOUNTER_NAMES[:6] + (
    "log_sum_jj_over_sum_as",            # log(S_jj / S_as)
    "log_sum_ss_over_sum_jc",            # log(S_ss / S_jc)
    "log_summed_aarseth_over_min",       # log(sqrt((S_as + S_jj) / (S_jc + S_ss)) / tau_min), >= 0
    "log_summed_jerk_time_over_aarseth",     # log((S_a / S_j) / tau_min)
    "log_summed_snap_time_over_aarseth",     # log(sqrt(S_a / S_s) / tau_min)
    "log_summed_crackle_time_over_aarseth",  # log((S_a / S_c)^(1/3) / tau_min)
) + ENCOUNTER_NAMES[12:]
#: the ``encounter-orbit`` kind: SMOOTH_ENCOUNTER_NAMES and the shape of the orbits,
#: ``log(2 L^2 |E| M / (G^2 P^3))`` with ``L`` the angular momentum and ``E`` the energy
#: in the centre-of-mass frame, ``M`` the total mass and ``P = sum_{i<j} m_i m_j``:
#: ``log(1 - e^2)`` of a Kepler binary (0 circular, to -CLIP as e -> 1), conserved
#: along a run, so the network can tell a near-circular from an eccentric system
ORBIT_ENCOUNTER_NAMES: tuple[str, ...] = SMOOTH_ENCOUNTER_NAMES + ("log_orbit_shape",)
#: the ``encounter-history`` kind (:mod:`aits.encounter_history`): SMOOTH_ENCOUNTER_NAMES
#: without the pairwise free-fall and collision times, Aarseth's ingredients from the
#: accelerations of the last states, the energy time and virial ratio from the virial
HISTORY_ENCOUNTER_NAMES: tuple[str, ...] = (SMOOTH_ENCOUNTER_NAMES[:3]
                                            + SMOOTH_ENCOUNTER_NAMES[6:])
DELTA_MAG_NAMES: tuple[str, ...] = (
    "mean_dx", "max_dx", "rms_dx", "mean_dv", "max_dv", "rms_dv",
    "mean_da", "max_da", "rms_da", "dt",
)

# physical unit of each feature: "1" none, "M" mass, "L" length, "V" speed, "A" acc., "T" time
_UNITS = {
    "n_bodies": "1", "dim": "1", "total_mass": "M", "mean_mass": "M", "min_mass": "M",
    "max_mass": "M", "std_mass": "M", "softening": "L", "dt": "T",
    **{n: "1" for n in ENCOUNTER_NAMES + ORBIT_ENCOUNTER_NAMES + HISTORY_ENCOUNTER_NAMES},
}
for _n in RICH_NAMES + DELTA_MAG_NAMES:
    if _n not in _UNITS:
        _UNITS[_n] = ("L" if ("r_com" in _n or "pair" in _n or "dx" in _n)
                      else "V" if ("speed" in _n or "dv" in _n) else "A")

_UNIT_INDEX = {"M": 0, "L": 1, "V": 2, "A": 3, "T": 4, "1": 5}

#: the dimensionless kinds that :mod:`aits.encounter` computes
ENCOUNTER_KINDS = ("encounter", "encounter-smooth", "encounter-orbit")
#: analytic kinds computed from the current state and the past ``history_len`` states
WINDOW_KINDS = ("encounter-history",)
#: the ``history_len`` a window kind takes, inclusive: a crackle needs 3 past states,
#: the native kernels hold at most 15
HISTORY_WINDOW = (3, 15)
ANALYTIC_KINDS = ("basic", "rich") + ENCOUNTER_KINDS + WINDOW_KINDS
HISTORY_KINDS = ("delta_mag", "basic", "rich")
_NAMES = {"basic": BASIC_NAMES, "rich": RICH_NAMES, "encounter": ENCOUNTER_NAMES,
          "encounter-smooth": SMOOTH_ENCOUNTER_NAMES, "encounter-orbit": ORBIT_ENCOUNTER_NAMES,
          "encounter-history": HISTORY_ENCOUNTER_NAMES, "delta_mag": DELTA_MAG_NAMES}

#: Budget (elements) for one chunk of the pairwise loop, per batch.
PAIR_CHUNK_ELEMENTS = 1 << 20


# ------------------------------------------------------------------------------ pairwise


@dataclass(frozen=True)
class PairStats:
    """Pairwise statistics over ``i != j``, each of shape ``batch_shape``
    (``min_freefall`` is ``None`` unless requested)."""

    min_dist: Tensor
    mean_dist: Tensor
    max_dist: Tensor
    min_freefall: Tensor | None = None


@torch.no_grad()
def pairwise_stats(
    pos: Tensor,
    mass: Tensor,
    softening: float = 0.0,
    G: float = 1.0,
    *,
    freefall: bool = False,
) -> PairStats:
    """Min/mean/max pairwise distance and, with ``freefall``, the minimum pairwise
    free-fall time ``sqrt(s^3 / (G (m_i + m_j)))``.

    Args:
        pos: ``(..., N, D)``; mass: ``(..., N)``.
    Returns:
        :class:`PairStats` of ``batch_shape`` tensors. Distances are the softened
        ``s = sqrt(r^2 + eps^2)`` the force sees (the plain ones when ``eps == 0``).
        With ``N < 2`` the distances are 0 and the free-fall time ``inf``.

    On the CPU this is one native pass over the pairs (:func:`aits.ops.pair_statistics`,
    O(N) memory); elsewhere it falls back to :func:`pairwise_stats_chunked`. (The op
    has a CUDA kernel too, which has not yet run on a GPU: until its tests have passed
    there, CUDA states keep the torch path, see docs/gpu_notes.md.)
    """
    if pos.device.type != "cpu":
        return pairwise_stats_chunked(pos, mass, softening, G, freefall=freefall)
    batch_shape = pos.shape[:-2]
    n, dim = pos.shape[-2:]
    stats = pair_statistics(
        pos.reshape(-1, n, dim), mass.reshape(-1, n), softening, G, freefall
    ).reshape(batch_shape + (4,))
    return PairStats(
        stats[..., 0], stats[..., 1], stats[..., 2], stats[..., 3] if freefall else None
    )


@torch.no_grad()
def pairwise_stats_chunked(
    pos: Tensor,
    mass: Tensor,
    softening: float = 0.0,
    G: float = 1.0,
    *,
    freefall: bool = False,
    chunk_elements: int = PAIR_CHUNK_ELEMENTS,
) -> PairStats:
    """:func:`pairwise_stats` in plain torch, for devices without the native kernel.

    Memory is ``O(chunk_elements)``: rows are processed in chunks, never all N x N
    at once (unless that fits the budget).
    """
    batch_shape = pos.shape[:-2]
    n = pos.shape[-2]
    x = pos.reshape(-1, n, pos.shape[-1])
    m = mass.reshape(-1, n)
    B = x.shape[0]
    if n < 2:
        z = pos.new_zeros(batch_shape)
        return PairStats(z, z, z, torch.full_like(z, math.inf) if freefall else None)
    rows = max(1, min(n, chunk_elements // max(1, B * n)))
    dmin = x.new_full((B,), math.inf)
    dmax = x.new_zeros(B)
    dsum = x.new_zeros(B)
    tmin = x.new_full((B,), math.inf)
    eps2 = float(softening) ** 2
    for s in range(0, n, rows):
        e = min(n, s + rows)
        d = torch.cdist(x[:, s:e], x, compute_mode="donot_use_mm_for_euclid_dist")  # (B, c, N)
        d = d.square_().add_(eps2).sqrt_()  # softened distances
        self_pairs = d.diagonal(offset=s, dim1=-2, dim2=-1)
        self_pairs.fill_(0.0)  # self pairs out of the sum and the max
        dsum += d.sum((-1, -2))
        dmax = torch.maximum(dmax, d.amax((-1, -2)))
        self_pairs.fill_(math.inf)  # ... and out of the minima
        dmin = torch.minimum(dmin, d.amin((-1, -2)))
        if freefall:
            msum = m[:, s:e].unsqueeze(-1) + m.unsqueeze(-2)
            tff2 = d.pow_(3).div_(msum * G)
            tmin = torch.minimum(tmin, tff2.amin((-1, -2)))
    mean = dsum / (n * (n - 1))
    return PairStats(
        dmin.reshape(batch_shape), mean.reshape(batch_shape), dmax.reshape(batch_shape),
        tmin.sqrt().reshape(batch_shape) if freefall else None,
    )


def state_pair_stats(state: SystemState, freefall: bool = False) -> PairStats:
    """:func:`pairwise_stats` of ``state``: its cached ``pair_stats`` (filled by
    :func:`aits.state.step`) when present, else one pass over the pairs."""
    s = state.pair_stats
    if s is not None:
        return PairStats(s[..., 0], s[..., 1], s[..., 2], s[..., 3] if freefall else None)
    return pairwise_stats(state.pos, state.mass, state.softening, state.G, freefall=freefall)


def min_freefall_time(state: SystemState) -> Tensor:
    """Minimum pairwise free-fall time of each system (a dynamical time); ``batch_shape``."""
    return state_pair_stats(state, freefall=True).min_freefall


@torch.no_grad()
def gravity_derivatives(state: SystemState) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Acceleration, jerk, snap and crackle of mutual gravity (each shaped like
    ``pos``; two native passes over the pairs, :func:`aits.ops.aarseth_derivatives`)."""
    n, d = state.n_bodies, state.dim
    out = aarseth_derivatives(
        state.pos.detach().reshape(-1, n, d), state.vel.detach().reshape(-1, n, d),
        state.mass.detach().reshape(-1, n), state.softening, state.G,
    )
    return tuple(t.reshape(state.pos.shape) for t in out)


@torch.no_grad()
def aarseth_time(state: SystemState, eta: float = 1.0) -> Tensor:
    """Aarseth's step ``min_i sqrt(eta (|a||s| + |j|^2) / (|j||c| + |s|^2))`` of each
    system, ``batch_shape`` (``eta = 1``: the time scale itself). A body feeling no
    force (0/0) does not limit it."""
    a, j, s, c = (t.norm(dim=-1) for t in gravity_derivatives(state))
    dt2 = eta * (a * s + j * j) / (j * c + s * s)  # (..., N)
    dt2 = torch.where(torch.isnan(dt2), math.inf, dt2)
    return dt2.amin(-1).sqrt()


# --------------------------------------------------------------------------------- scales


def _as_scale(name: str, value) -> Tensor | float:
    if isinstance(value, Tensor):
        if not bool(((value > 0) & torch.isfinite(value)).all()):  # one read-back
            raise ValueError(f"FeatureScales.{name} must be finite and > 0")
        return value.detach()
    v = float(value)
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"FeatureScales.{name} must be finite and > 0, got {value!r}")
    return v


@dataclass(frozen=True)
class FeatureScales:
    """Units the features are divided by: mass ``M0``, length ``L0``, speed ``V0``,
    acceleration ``A0``, time ``T0``. Each a python float or a tensor of shape
    ``batch_shape`` (one scale per system). Defaults are 1 (no normalisation)."""

    L0: Tensor | float = 1.0
    V0: Tensor | float = 1.0
    A0: Tensor | float = 1.0
    T0: Tensor | float = 1.0
    M0: Tensor | float = 1.0

    def __post_init__(self) -> None:
        for name in ("L0", "V0", "A0", "T0", "M0"):
            object.__setattr__(self, name, _as_scale(name, getattr(self, name)))

    @classmethod
    def from_state(cls, state: SystemState, per_system: bool = False) -> FeatureScales:
        """Dynamical units of ``state``: ``M0`` total mass, ``L0`` rms distance from the
        centre of mass, ``V0 = sqrt(G M0 / L0)``, ``A0 = G M0 / L0^2``,
        ``T0 = sqrt(L0^3 / (G M0))``. Per system (tensors of ``batch_shape``) when
        ``per_system``, otherwise python floats averaged over the batch.

        Raises:
            ValueError: a system of zero total mass or zero size.
        """
        with torch.no_grad():
            M0 = state.total_mass()
            r = (state.pos - state.center_of_mass().unsqueeze(-2)).norm(dim=-1)
            return cls.from_mass_and_length(M0, r.pow(2).mean(-1).sqrt(), state.G, per_system)

    @classmethod
    def from_mass_and_length(
        cls, M0: Tensor, L0: Tensor, G: float, per_system: bool = True
    ) -> FeatureScales:
        """:meth:`from_state` from its mass and length units (``batch_shape`` each)."""
        if not bool(((M0 > 0) & (L0 > 0)).all()):
            raise ValueError(
                "FeatureScales.from_state: every system needs a total mass > 0 and "
                "bodies not all at one point"
            )
        if not per_system:
            M0, L0 = M0.mean(), L0.mean()
        GM = G * M0
        scales = dict(M0=M0, L0=L0, V0=(GM / L0).sqrt(), A0=GM / L0**2, T0=(L0**3 / GM).sqrt())
        if not per_system:
            return cls(**{k: float(v) for k, v in scales.items()})
        # M0, L0 > 0 were checked above, so every scale is positive: skip the
        # per-field checks of __post_init__ (ten more reductions per call)
        out = object.__new__(cls)
        for k, v in scales.items():
            object.__setattr__(out, k, v)
        return out

    def divisor(self, names: Sequence[str], like: Tensor) -> Tensor:
        """Per-feature divisors for ``names``: shape ``(F,)`` or ``batch_shape + (F,)``."""
        units = [self.M0, self.L0, self.V0, self.A0, self.T0, 1.0]  # order of _UNIT_INDEX
        index = [_UNIT_INDEX[_UNITS[n]] for n in names]
        shape = next((u.shape for u in units if isinstance(u, Tensor)), None)
        if shape is None:
            return like.new_tensor([units[i] for i in index])
        table = torch.stack(
            [u.to(like) if isinstance(u, Tensor) else like.new_full(shape, u) for u in units], -1
        )
        return table[..., index]

    def to_dict(self) -> dict[str, float]:
        """Plain floats (only for scalar scales), e.g. for a checkpoint or config."""
        out = {}
        for k in ("L0", "V0", "A0", "T0", "M0"):
            v = getattr(self, k)
            if isinstance(v, Tensor):
                raise ValueError("FeatureScales.to_dict: per-system (tensor) scales are not serialisable")
            out[k] = v
        return out


# ------------------------------------------------------------------------------ analytic




def feature_names(kind: str) -> tuple[str, ...]:
    """Names of the features of ``kind`` in ``basic``, ``rich``, ``delta_mag``."""
    if kind not in _NAMES:
        raise ValueError(f"unknown feature kind {kind!r}; valid: {', '.join(_NAMES)}")
    return _NAMES[kind]


@torch.no_grad()
def analytic_features(
    state: SystemState,
    kind: str = "basic",
    scales: FeatureScales | None = None,
    pairs: PairStats | None = None,
    window: Sequence[SystemState | None] | None = None,
) -> Tensor:
    """Analytic features: shape ``batch_shape + (11,)`` for ``basic`` and
    ``encounter-history``, ``(23,)`` for ``rich``, ``(14,)`` for ``encounter`` and
    ``encounter-smooth``, ``(15,)`` for ``encounter-orbit``. ``window``: the past
    states (oldest first, ``None`` for padding) that ``encounter-history`` needs.

    Reuses ``state.acc`` when cached (else one force evaluation) and ``pairs``, the
    state's :func:`pairwise_stats`, when given (else :func:`state_pair_stats`). Finite for any
    finite state, including zero-mass systems (the centre of mass then falls back
    to the plain mean); a step that produced NaN acceleration gives NaN features.
    """
    if kind not in ANALYTIC_KINDS:
        raise ValueError(f"unknown analytic feature kind {kind!r}; valid: {', '.join(ANALYTIC_KINDS)}")
    feats, _, _ = _analytic_raw(state, kind, pairs, window)
    if scales is not None:
        feats = feats / scales.divisor(_NAMES[kind], feats)
    return feats


def _analytic_raw(
    state: SystemState, kind: str, pairs: PairStats | None,
    window: Sequence[SystemState | None] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Unnormalised analytic features ``batch_shape + (F,)``, and the total mass and
    rms distance from the centre of mass (``batch_shape`` each: the units of the
    ``"state"`` normalisation, see :meth:`FeatureScales.from_state`)."""
    x, v, m = state.pos.detach(), state.vel.detach(), state.mass.detach()
    total = m.sum(-1)
    w = center_of_mass_weights(m).unsqueeze(-1)
    if kind in ENCOUNTER_KINDS + WINDOW_KINDS:
        r = (x - (w * x).sum(-2, keepdim=True)).norm(dim=-1)
        if kind in WINDOW_KINDS:
            if window is None:
                raise ValueError(f"feature kind {kind!r} needs the window of past states "
                                 "(a HistoryBuffer's window())")
            from aits.encounter_history import history_encounter_features

            feats = history_encounter_features(state, window)[0]
        else:
            from aits.encounter import kind_features  # encounter imports this module

            feats = kind_features(state, kind)[0]
        return feats, total, r.square().mean(-1).sqrt()
    acc = torch.where((total > 0)[..., None, None], state.acceleration().detach(), 0.0)
    # |x - x_com|, |v - v_com|, |a| of every body at once: (..., 3, N)
    mags = torch.stack([x - (w * x).sum(-2, keepdim=True), v - (w * v).sum(-2, keepdim=True),
                        acc], -3).norm(dim=-1)
    if pairs is None:
        pairs = state_pair_stats(state)
    rms = mags.square().mean(-1).sqrt()
    lead = x.new_tensor([float(state.n_bodies), float(state.dim)]).expand(state.batch_shape + (2,))
    cols = [lead, total.unsqueeze(-1),
            torch.stack([mags.mean(-1), mags.amax(-1)], -1).flatten(-2),  # r, s, a: mean, max
            torch.stack([pairs.min_dist, pairs.mean_dist], -1)]
    if kind == "rich":
        m_mean = m.mean(-1)
        cols += [torch.stack([m_mean, m.amin(-1), m.amax(-1),
                              (m - m_mean.unsqueeze(-1)).pow(2).mean(-1).sqrt()], -1),
                 torch.stack([mags.amin(-1), rms], -1).flatten(-2),  # r, s, a: min, rms
                 torch.stack([pairs.max_dist, torch.full_like(total, state.softening)], -1)]
    return torch.cat(cols, -1), total, rms[..., 0]


# ------------------------------------------------------------------------------- history


def _delta_mag_pair(s0: SystemState, s1: SystemState) -> Tensor:
    """10 delta features between consecutive states; ``batch_shape + (10,)``."""
    cols = []
    for t0, t1 in ((s0.pos, s1.pos), (s0.vel, s1.vel), (s0.acceleration(), s1.acceleration())):
        d = (t1.detach() - t0.detach()).norm(dim=-1)
        cols += [d.mean(-1), d.amax(-1), d.square().mean(-1).sqrt()]
    cols.append((s1.time - s0.time).to(s1.dtype))
    return torch.stack(cols, -1)


@torch.no_grad()
def history_features(
    kind: str,
    window: Sequence[SystemState | None],
    current: SystemState,
    scales: FeatureScales | None = None,
) -> Tensor:
    """History features over a window of ``K`` past states (oldest first, ``None`` =
    padded slot) and the current state.

    * ``delta_mag``: one block of 10 per consecutive pair of
      ``window + [current]`` (``K`` pairs), shape ``batch_shape + (10 K,)``.
    * ``basic``/``rich``: analytic features of each window state, shape
      ``batch_shape + (F K,)`` (the current state is not repeated).

    A block involving a padded slot is all zeros (finite by construction).
    """
    if kind not in HISTORY_KINDS:
        raise ValueError(f"unknown history feature kind {kind!r}; valid: {', '.join(HISTORY_KINDS)}")
    per = len(_NAMES[kind])
    zeros = current.pos.new_zeros(current.batch_shape + (per,))
    blocks = []
    for k, past in enumerate(window):
        if past is not None and (past.pos.shape != current.pos.shape):
            raise ValueError(
                f"history state {k} has shape {tuple(past.pos.shape)}, "
                f"the current state {tuple(current.pos.shape)}"
            )
        if kind == "delta_mag":
            nxt = window[k + 1] if k + 1 < len(window) else current
            blocks.append(zeros if past is None or nxt is None else _delta_mag_pair(past, nxt))
        else:
            blocks.append(zeros if past is None else analytic_features(past, kind))
    if not blocks:
        return current.pos.new_zeros(current.batch_shape + (0,))
    feats = torch.cat(blocks, -1)
    if scales is not None:
        feats = feats / scales.divisor(_NAMES[kind] * len(window), feats)
    return feats


# ---------------------------------------------------------------------------------- spec


_NORMALIZE = ("none", "fixed", "state")


@dataclass(frozen=True)
class FeatureSpec:
    """Which features the network sees; ``spec(state, history)`` computes them.

    Attributes:
        kind: analytic features of the current state, a name of
            :data:`ANALYTIC_KINDS` (module docstring).
        history: ``None``, ``delta_mag`` (10 per pair), ``basic`` or ``rich`` (per state).
        history_len: ``K``, the window length (0 = no history features); for the
            ``encounter-history`` kind (``history`` ``None``) the past states its
            derivatives come from, >= 3.
        normalize: ``none``; ``fixed`` (divide by ``scales``); ``state`` (divide by
            :meth:`FeatureScales.from_state` of each current state, per system: the
            features become invariant under a change of units).
        scales: the :class:`FeatureScales` for ``fixed``.
    """

    kind: str = "basic"
    history: str | None = None
    history_len: int = 0
    normalize: str = "none"
    scales: FeatureScales | None = field(default=None)

    def __post_init__(self) -> None:
        if self.kind not in ANALYTIC_KINDS:
            raise ValueError(f"FeatureSpec.kind must be one of {ANALYTIC_KINDS}, got {self.kind!r}")
        if self.history is not None and self.history not in HISTORY_KINDS:
            raise ValueError(
                f"FeatureSpec.history must be None or one of {HISTORY_KINDS}, got {self.history!r}"
            )
        if not isinstance(self.history_len, int) or self.history_len < 0:
            raise ValueError(f"FeatureSpec.history_len must be an int >= 0, got {self.history_len!r}")
        if self.kind in WINDOW_KINDS:
            if self.history is not None:
                raise ValueError(f"FeatureSpec: kind {self.kind!r} takes no history features "
                                 f"(history must be None, got {self.history!r})")
            low, high = HISTORY_WINDOW
            if not low <= self.history_len <= high:
                raise ValueError(f"FeatureSpec: kind {self.kind!r} needs history_len >= {low} "
                                 "past states (its crackle is a third derivative) and at most "
                                 f"{high}, got {self.history_len}")
        if self.normalize not in _NORMALIZE:
            raise ValueError(f"FeatureSpec.normalize must be one of {_NORMALIZE}, got {self.normalize!r}")
        if self.normalize == "fixed" and self.scales is None:
            raise ValueError("FeatureSpec.normalize='fixed' needs scales")

    @property
    def analytic_dim(self) -> int:
        return len(_NAMES[self.kind])

    @property
    def window_len(self) -> int:
        """Past states the features read (the :class:`~aits.history.HistoryBuffer`
        length a simulation keeps): ``history_len`` with history features or a
        window kind, else 0."""
        return self.history_len if self.history is not None or self.kind in WINDOW_KINDS else 0

    @property
    def history_dim(self) -> int:
        if self.history is None:
            return 0
        return len(_NAMES[self.history]) * self.history_len

    @property
    def dim(self) -> int:
        """Number of input features for the network."""
        return self.analytic_dim + self.history_dim

    def __call__(
        self,
        state: SystemState,
        history: HistoryBuffer | Sequence[SystemState | None] | None = None,
        pairs: PairStats | None = None,
    ) -> Tensor:
        """Features of ``state`` (and ``history``): shape ``batch_shape + (dim,)``.

        ``history`` is a :class:`~aits.history.HistoryBuffer` or its window (a list
        of ``history_len`` states, ``None`` for padding); required when
        :attr:`history_dim` > 0. ``pairs``: the state's :func:`pairwise_stats`, when
        the caller already has them.
        """
        window = self.window(history)
        feats, M0, L0 = _analytic_raw(state, self.kind, pairs, window)
        scales = self.scales if self.normalize == "fixed" else None
        if self.normalize == "state":  # the units come with the features: no second pass
            scales = FeatureScales.from_mass_and_length(M0, L0, state.G)
        if scales is not None:
            feats = feats / scales.divisor(_NAMES[self.kind], feats)
        if self.history_dim == 0:
            return feats
        return torch.cat([feats, history_features(self.history, window, state, scales)], -1)

    def window(self, history: HistoryBuffer | Sequence[SystemState | None] | None
               ) -> list[SystemState | None] | None:
        """The ``window_len`` past states of ``history`` (a buffer or its window),
        oldest first; ``None`` when the features read none.

        Raises:
            ValueError: the features need a window and ``history`` is missing or of
                another length.
        """
        if not self.window_len:
            return None
        if history is None:
            what = (f"history features ({self.history}, K={self.history_len})"
                    if self.history is not None else f"kind {self.kind!r}")
            raise ValueError(f"FeatureSpec: {what} needs a HistoryBuffer or window of "
                             f"{self.history_len} past states")
        window = history.window() if hasattr(history, "window") else list(history)
        if len(window) != self.history_len:
            raise ValueError(
                f"FeatureSpec: window has {len(window)} states, history_len is {self.history_len}"
            )
        return window

    def to_dict(self) -> dict:
        """JSON-friendly description (for configs and checkpoints)."""
        return {"kind": self.kind, "history": self.history, "history_len": self.history_len,
                "normalize": self.normalize,
                "scales": None if self.scales is None else self.scales.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        d = dict(d)
        if d.get("scales") is not None:
            d["scales"] = FeatureScales(**d["scales"])
        return cls(**d)
