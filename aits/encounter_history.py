"""The ``encounter-history`` feature kind: encounter features at O(N) a step.

The encounter kinds (:mod:`aits.encounter`) take Aarseth's ingredients from two
passes over the body pairs, 2.7-2.9x a force evaluation at N = 1024. This kind takes
them from what the simulation has anyway: the acceleration of the current state
(the step's own force pass) and of the last ``K`` states (the
:class:`~aits.history.HistoryBuffer`). The jerk, snap and crackle of every body are
the first three derivatives, at the current time, of the polynomial of degree ``K``
through those ``K + 1`` accelerations (Newton's divided differences; any spacing of
the times). ``K >= 3`` (crackle is a third derivative); ``K = 4`` or 5 is the useful
range (``README``: Aarseth's criterion from such derivatives needs 1.02x (K = 4) the
force evaluations of the exact one on the wide development set, 1.17x with K = 3).
Until ``K`` past states exist (the first ``K`` steps of a run) and for a system whose
stored times are not increasing, the exact derivatives are taken
(:func:`aits.features.gravity_derivatives`): the features then cost what the
encounter kinds' do, only on those steps. A body whose own Aarseth time from the
differences is shorter than the window's span over :data:`MAX_SPAN` (one: steps of
more than a quarter of it with ``K = 4``, as on softened clusters at loose
tolerances, where Aarseth's criterion from differences alone needed 1.4-2.1x the
force evaluations of the exact one) takes its exact derivatives instead: its pair
sums over every partner, O(N) for each such body (the snap and crackle from the
partners' jerks, exact for such bodies, the differences' for the others). With the
shipped model's steps that is a few bodies in a thousand, where the whole system's
exact derivatives would cost 2.7x a force evaluation.

The potential energy is the virial ``W = sum_i m_i (x_i - x_com) . a_i``, also O(N)
from the accelerations: it *is* the potential energy of unsoftened mutual gravity
(for any positions); with softening it weights each pair by ``r^2 / (r^2 + eps^2)``,
and with an external field it includes the field's virial.

The columns, :data:`HISTORY_ENCOUNTER_NAMES`, are those of ``encounter-smooth``
without the three pairwise free-fall and collision times (each an O(N^2) pass):
``log N``, ``log(tau_min / T_E)``, ``log(tau_gmean / tau_min)``, the six sums of
:func:`aits.encounter.smooth_columns`, ``log(2 K / |W|)`` and ``log(m_min / m_max)``,
with ``T_E = G M^{5/2} / (2 |K + W|)^{3/2}``; dimensionless, scale-free and
permutation-invariant like theirs. Finite differences in float32 lose the crackle
once the step is below ~1e-2 of Aarseth's time: use float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from aits import ops, reference
from aits.encounter import (CLIP, PerBody, aarseth_gmean, log_ratio, massive, per_body,
                            smooth_columns)
from aits.features import HISTORY_ENCOUNTER_NAMES, HISTORY_WINDOW, gravity_derivatives
from aits.state import SystemState

__all__ = ["MAX_SPAN", "MIN_WINDOW", "history_derivatives", "history_encounter_features",
           "history_model_dt"]

#: the fewest past states a window needs: a polynomial of degree 3 has a crackle
MIN_WINDOW = HISTORY_WINDOW[0]
#: the longest a window may span, in a body's Aarseth times; beyond it (steps of more
#: than a quarter of that time with K = 4) the interpolating polynomial's derivatives
#: are no estimate any more and the body's exact ones are taken
MAX_SPAN = 1.0


def _window_ready(window: Sequence[SystemState | None], state: SystemState) -> Tensor | None:
    """``batch_shape`` bool: the systems whose times strictly decrease from ``state``
    back through ``window``; ``None`` when a slot is still padding."""
    if any(w is None for w in window):
        return None
    times = [state.time] + [w.time for w in reversed(window)]
    ok = torch.ones(state.batch_shape, dtype=torch.bool, device=state.device)
    for newer, older in zip(times, times[1:]):
        ok &= newer > older
    return ok


def _difference_derivatives(window: Sequence[SystemState], state: SystemState
                            ) -> tuple[Tensor, Tensor, Tensor]:
    """Jerk, snap and crackle (each shaped like ``pos``) at ``state.time`` from the
    polynomial through the accelerations of ``state`` and ``window`` (Newton form,
    nodes from the newest back; time offsets in float64, then the state's dtype)."""
    nodes = [state] + list(reversed(window))
    t0 = state.time
    offset = [(s.time - t0).to(state.dtype)[..., None, None] for s in nodes]
    column = [s.acceleration().detach() for s in nodes]
    zero = torch.zeros_like(column[0])
    # Taylor coefficients (tau^1..tau^3, tau = t - t0) of sum_k d_k omega_k(tau), with
    # d_k = [a_0 .. a_k] and omega_k(tau) = prod_{i<k} (tau - offset_i)
    coef = [zero, zero, zero]
    omega = [torch.ones_like(offset[0]), 0.0, 0.0, 0.0]  # omega_0 = 1
    for k in range(1, len(nodes)):
        column = [(column[i] - column[i + 1]) / (offset[i] - offset[i + k])
                  for i in range(len(column) - 1)]
        r = offset[k - 1]
        omega = [-r * omega[0], omega[0] - r * omega[1], omega[1] - r * omega[2],
                 omega[2] - r * omega[3]]
        coef = [c + column[0] * w for c, w in zip(coef, omega[1:])]
    return coef[0], 2 * coef[1], 6 * coef[2]


def _check_window(window: Sequence[SystemState | None], name: str) -> None:
    if len(window) < MIN_WINDOW:
        raise ValueError(f"{name}: a window of at least {MIN_WINDOW} past states is needed (a "
                         f"crackle is a third derivative), got {len(window)}")


def _resolve_bodies(state: SystemState, a: Tensor, diff: tuple[Tensor, Tensor, Tensor],
                    unresolved: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Jerk, snap and crackle with the ``unresolved`` bodies' (``batch_shape + (N,)``
    bool) replaced by their exact ones: the pair sums of
    :func:`aits.reference.aarseth_derivatives` over every partner, the snap and
    crackle from the state's acceleration ``a`` and the partners' jerks (the exact
    ones of the unresolved bodies, the differences' ``diff[0]`` of the others)."""
    keep = unresolved[..., None]
    j_diff = diff[0]
    _, jerk, snap, crackle = reference.aarseth_derivatives(
        state.pos.detach(), state.vel.detach(), state.mass.detach(), state.softening, state.G,
        sources=lambda acc, j: (a, torch.where(keep, j, j_diff)))
    return tuple(torch.where(keep, x, y) for x, y in zip((jerk, snap, crackle), diff))


def _derivatives_and_body(window: Sequence[SystemState | None], state: SystemState
                          ) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], PerBody]:
    """:func:`history_derivatives` and the :class:`~aits.encounter.PerBody` of them
    (the span check needs it already; it is recomputed only where bodies were
    replaced)."""
    ready = _window_ready(window, state)
    if ready is None:
        derivatives = gravity_derivatives(state)
        return derivatives, per_body(state, derivatives)
    a = state.acceleration().detach()
    diff = _difference_derivatives(window, state)
    body = per_body(state, (a, *diff))
    span = (state.time - window[0].time)[..., None]
    unresolved = ~(span <= MAX_SPAN * body.tau.double()) & ready[..., None]
    if bool(unresolved.any()):
        diff = _resolve_bodies(state, a, diff, unresolved)
    if not bool(ready.all()):
        exact = gravity_derivatives(state)[1:]
        keep = ready[..., None, None]
        diff = tuple(torch.where(keep, x, y) for x, y in zip(diff, exact))
    if bool(unresolved.any()) or not bool(ready.all()):
        body = per_body(state, (a, *diff))
    return (a, *diff), body


@torch.no_grad()
def history_derivatives(window: Sequence[SystemState | None], state: SystemState
                        ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Acceleration, jerk, snap and crackle of every body (each shaped like ``pos``)
    from ``state``'s acceleration and those of ``window`` (oldest first, ``None`` for
    padding; the module docstring); the exact ones where the window is not usable
    (still padded, its times not strictly decreasing) and of the bodies whose
    Aarseth time from the differences is shorter than the window's span over
    :data:`MAX_SPAN`."""
    _check_window(window, "history_derivatives")
    return _derivatives_and_body(window, state)[0]


@torch.no_grad()
def history_encounter_features(state: SystemState, window: Sequence[SystemState | None], *,
                               native: bool = True) -> tuple[Tensor, Tensor]:
    """:data:`HISTORY_ENCOUNTER_NAMES` of ``state`` with the past states ``window``
    (oldest first, ``None`` for padding), ``batch_shape + (11,)``, and Aarseth's time
    ``tau_min`` (``batch_shape``) from the same derivatives.

    ``native``: on the CPU, once the window is full, one native op
    (:func:`aits.ops.history_encounter_features`; ``False``: the torch path, which
    every other device and the warm-up take; the two agree to rounding).
    """
    _check_window(window, "history_encounter_features")
    inputs = _native_inputs(state, window) if native else None
    if inputs is not None:
        feats, tau, ready = ops.history_encounter_features(*inputs, state.softening, state.G,
                                                           CLIP)
        if bool(ready.all()):
            shape = state.batch_shape
            return feats.reshape(shape + (len(HISTORY_ENCOUNTER_NAMES),)), tau.reshape(shape)
    return _torch_path(state, window)


def _native_inputs(state: SystemState, window: Sequence[SystemState | None]
                   ) -> tuple[Tensor, Tensor, Tensor, list[Tensor], list[Tensor]] | None:
    """``pos``, ``vel``, ``mass``, the accelerations and the times of ``state`` and
    ``window`` (newest first) as the native ops take them (``(B, N, D)``, ``(B, N)``,
    ``(B,)``, detached), or ``None`` where they do not apply (not the CPU, not 2-D or
    3-D, a padded window). A batch ``(B, N, D)`` goes as it is: this runs every step."""
    if (state.device.type != "cpu" or state.dim not in (2, 3)
            or any(w is None for w in window)):
        return None
    nodes = [state, *reversed(window)]
    accs = [s.acc if s.acc is not None else s.acceleration() for s in nodes]
    tensors = [state.pos, state.vel, state.mass, *accs]
    tensors = [t.detach() if t.requires_grad else t for t in tensors]
    times = [s.time for s in nodes]
    if state.pos.dim() != 3:
        n, d = state.n_bodies, state.dim
        tensors = [t.reshape(-1, n) if k == 2 else t.reshape(-1, n, d)
                   for k, t in enumerate(tensors)]
        times = [t.reshape(-1) for t in times]
    return tensors[0], tensors[1], tensors[2], tensors[3:], times


@torch.no_grad()
def history_model_dt(layers: Sequence[Tensor], activation: str, net_scale: float,
                     state: SystemState, window: Sequence[SystemState | None]) -> Tensor | None:
    """The ``dt`` (``batch_shape``) of an encounter-history network given natively
    (``layers``, ``activation`` and ``net_scale``: :func:`aits.native_run.native_net`,
    its activation and ``dt_scale``) for ``state`` and ``window``, features and
    network in one native call (:func:`aits.ops.history_model_dt`), or ``None`` where
    that does not apply (not the CPU, the window padded or its times not strictly
    decreasing: :meth:`aits.model.TimeStepNet.predict_dt` then computes it)."""
    _check_window(window, "history_model_dt")
    inputs = _native_inputs(state, window)
    if inputs is None:
        return None
    dt, ready = torch.ops.aits.history_model_dt(*inputs, state.softening, state.G, CLIP, layers,
                                                activation, net_scale)
    if not bool(ready.all()):
        return None
    return dt if dt.shape == state.batch_shape else dt.reshape(state.batch_shape)


def _torch_path(state: SystemState, window: Sequence[SystemState | None]
                ) -> tuple[Tensor, Tensor]:
    """:func:`history_encounter_features` by torch ops (any device)."""
    body = _derivatives_and_body(window, state)[1]
    tau = body.tau.amin(-1)
    m = state.mass.detach()
    centered = state.centered()
    kin = centered.kinetic_energy().detach()
    virial = (m * (centered.pos.detach() * state.acceleration().detach()).sum(-1)).sum(-1)
    E, M = kin + virial, m.sum(-1)
    t_energy = torch.where(E != 0, state.G * M.pow(2.5) / (2 * E.abs()).pow(1.5), math.inf)
    cols = [
        torch.full_like(tau, math.log(max(state.n_bodies, 1))),
        log_ratio(tau, t_energy),
        log_ratio(aarseth_gmean(body.tau), tau),
        *smooth_columns(body, tau),
        log_ratio(2 * kin, virial.abs()),
        log_ratio(m.amin(-1), m.amax(-1)),
    ]
    ok = massive(state)
    feats = torch.where(ok.unsqueeze(-1), torch.stack(cols, -1), 0.0)
    return feats, torch.where(ok, tau, math.inf)
