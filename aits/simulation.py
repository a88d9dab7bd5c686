"""The one simulation core: run one system or a batch forward with a time-step policy.

:func:`simulate` serves ``python -m aits.simulate``, ``aits.evaluate``, training's
rollout check and the benchmarks. Each step, for every system still running:

1. the policy proposes ``h`` (behind the guard rails: ``dt_min``, ``dt_max``,
   growth cap), from the state with its cached acceleration (and the history
   window for history models);
2. the integrator (:mod:`aits.integrators`: ``kdk``, ``symmetric``, ``ttl``)
   turns it into a step, never past the system's ``t_end`` (the last step lands
   on it exactly);
3. with diagnostics, the per-step relative energy error ``rel_dE`` (the *gate
   view*) and the whole-run error ``|E(t) - E(0)| / |E(0)|`` (the *whole-run
   view*: an adaptive step breaks leapfrog's symplecticity, so passing every
   gate does not bound the drift) are measured;
4. with the gated guard rail, systems whose step fails the gate retry it with
   ``dt * shrink`` (each retry's force evaluation counted), the others keep theirs.

Systems stop on their own: at ``t_end``, after ``steps`` steps, at ``max_steps``
(a warning; the last state is kept), or when they blow up (a non-finite state, or
a proposal that is not finite and > 0): that system keeps its last finite state
and its stop reason, and the others go on.

A system *diverges* when a step still fails the gate after the gated rail's
``max_retries`` retries, or when its whole-run ``|dE/E|`` passes ``fail_above``
(default :data:`FAIL_ABOVE`): its :class:`SystemRun` says so (``status``
``"diverged"``, the step, time and reason) and, unless ``stop_diverged=False``, it
stops there (stop reason ``"diverged"``, the state after that step kept). The core
records this and says nothing; the tools report it.

Steps land exactly on each system's ``t_end`` and on the requested
``output_times`` (where the state is recorded): the step before such a time is
shortened to reach it. Those *landing steps* are left out of the ``dt``
statistics (``dt_min``, ``dt_max``, ``dt_mean``), which describe the policy's
own steps; ``dt_last`` is the last step taken.

What is recorded per step is up to the *observers* (:class:`EnergyRecord`,
:class:`Trajectory`, :class:`Progress`); the core itself keeps only per-system
totals, so a batch of 65,536 systems costs no per-step memory.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from aits import native_run
from aits.gate import EnergyGate
from aits.guards import GuardRails
from aits.history import HistoryBuffer
from aits.integrators import Integrator, SymmetricKDK, make_integrator
from aits.observers import EnergyRecord, Observer, Progress, Trajectory
from aits.ops import KDK_RUN_TOTALS
from aits.policies import Policy
from aits.results import (FAIL_ABOVE, RESULT_KEYS, STOP_REASONS, SimulationResult, SystemRun,
                          SystemRuns)
from aits.state import SystemState, center_of_mass_weights

__all__ = ["EnergyRecord", "FAIL_ABOVE", "Observer", "Progress", "RESULT_KEYS", "STOP_REASONS",
           "SimulationResult", "SystemRun", "Trajectory", "conservation_scales", "simulate"]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------ diagnostics


def _energy(state: SystemState) -> tuple[Tensor, Tensor]:
    """Total energy and its scale ``T + |U|``, ``(B,)`` each (one potential evaluation)."""
    T, U = state.kinetic_energy(), state.potential_energy()
    return T + U, T + U.abs()


def conservation_scales(state: SystemState) -> tuple[Tensor, Tensor]:
    """The scales momentum and angular-momentum residuals are divided by, ``(B,)`` each.

    ``P_scale = max(sum_i m_i |v_i|, sqrt(2 M (T + |U|)))`` and
    ``L_scale = max(sum_i m_i |x_i| |v_i|, sqrt(2 M (T + |U|)) r_rms)`` at the start,
    with ``M`` the total mass and ``r_rms`` the mass-weighted rms distance from the
    centre of mass. The second terms are the momentum and angular momentum that the
    system's energy scale allows, so a start at rest (the Pythagorean problem) gets
    a finite, meaningful scale instead of 0.
    """
    # sums over the bodies as einsum contractions: torch's sum over a few-element
    # axis costs 3x as much at B = 4096
    m, x = state.mass, state.pos
    over_bodies = "...n,...n->..."
    speed = torch.linalg.vector_norm(state.vel, dim=-1)
    M = m.sum(-1)
    com = torch.einsum("...n,...nd->...d", center_of_mass_weights(m), x)
    r = torch.linalg.vector_norm(x - com.unsqueeze(-2), dim=-1)
    return _scales(kinetic=0.5 * torch.einsum(over_bodies, m, speed * speed),
                   potential=state.potential_energy(), mass=M,
                   r_rms=(torch.einsum(over_bodies, m, r * r)
                          / M.clamp_min(torch.finfo(M.dtype).tiny)).sqrt(),
                   mass_speed=torch.einsum(over_bodies, m, speed),
                   mass_radius_speed=torch.einsum(
                       over_bodies, m, torch.linalg.vector_norm(x, dim=-1) * speed))


def _scales(kinetic: Tensor, potential: Tensor, mass: Tensor, r_rms: Tensor, mass_speed: Tensor,
            mass_radius_speed: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`conservation_scales` from its totals (each ``(B,)``: the kinetic and
    potential energy, the total mass, the rms radius, ``sum m |v|`` and ``sum m |x| |v|``)."""
    tiny = torch.finfo(mass.dtype).tiny
    p_energy = (2 * mass * (kinetic + potential.abs())).sqrt()
    P = torch.maximum(mass_speed, p_energy)
    L = torch.maximum(mass_radius_speed, p_energy * r_rms)
    return P.clamp_min(tiny), L.clamp_min(tiny)


def _native_conservation_errors(totals: Tensor, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The momentum and angular-momentum errors ``(B,)`` of a native run from its
    ``totals (B, 2, len(KDK_RUN_TOTALS))`` (:func:`aits.ops.kdk_run`), as the loop's."""
    col = {name: k for k, name in enumerate(KDK_RUN_TOTALS)}
    start, end = totals[:, 0], totals[:, 1]
    P_scale, L_scale = _scales(**{name: start[:, col[name]] for name in (
        "kinetic", "potential", "mass", "r_rms", "mass_speed", "mass_radius_speed")})
    p = slice(col["momentum_x"], col["momentum_x"] + dim)
    l = (slice(col["angular_momentum_z"], col["angular_momentum_z"] + 1) if dim == 2
         else slice(col["angular_momentum_x"], col["angular_momentum_z"] + 1))
    P_err = torch.linalg.vector_norm(end[:, p] - start[:, p], dim=-1) / P_scale
    L_err = torch.linalg.vector_norm(end[:, l] - start[:, l], dim=-1) / L_scale
    return P_err.numpy(), L_err.numpy()


def _finite_systems(state: SystemState) -> np.ndarray:
    """``(B,)``: whether each system's positions and velocities are all finite (a sum of
    finite numbers is finite, short of overflow near the float maximum; a sum with a
    NaN or infinite entry never is. Numpy on the CPU, where it is cheaper than torch
    for a few bodies; one sum of every entry settles the common all-finite case)."""
    pos, vel = state.pos, state.vel  # no gradients in the core: numpy() works
    if pos.device.type == "cpu":
        p, v = pos.numpy(), vel.numpy()
        # one sum over everything first (contiguous, fast); the per-system sums
        # (slow over two short axes) only when that one is not finite
        if math.isfinite(float(p.sum()) + float(v.sum())):
            return np.ones(pos.shape[0], bool)
        return np.isfinite(p.sum((-2, -1)) + v.sum((-2, -1)))
    return torch.isfinite(pos.sum((-2, -1)) + vel.sum((-2, -1))).cpu().numpy()


def _nan_to_inf(x: np.ndarray) -> np.ndarray:
    return np.where(x == x, x, math.inf)


def _residual(now: Tensor, start: Tensor, scale: Tensor) -> Tensor:
    diff = now - start
    norm = diff.abs() if diff.dim() == scale.dim() else diff.norm(dim=-1)
    return norm / scale


# ------------------------------------------------------------------------------ core


def _as_batch_tensor(value, name: str, B: int, device) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.float64, device=device)
    if t.dim() == 0:
        t = t.expand(B)
    if t.shape != (B,):
        raise ValueError(f"simulate: {name} must be a number or one value per system ({B},), "
                         f"got shape {tuple(t.shape)}")
    if not bool(((t > 0) & torch.isfinite(t)).all()):
        raise ValueError(f"simulate: {name} must be finite and > 0, got {value!r}")
    return t.clone()


def _output_offsets(output_times: Sequence[float] | np.ndarray | None) -> np.ndarray:
    """The requested output times as sorted, unique offsets from the start, ``(K,)``."""
    if output_times is None:
        return np.zeros(0)
    t = np.unique(np.asarray(output_times, dtype=np.float64).reshape(-1))
    if not (np.isfinite(t).all() and (t >= 0).all()):
        raise ValueError(f"simulate: output_times must be finite and >= 0, got {output_times!r}")
    return t


def _reached(due: np.ndarray | float, t: np.ndarray | float) -> np.ndarray | bool:
    """Whether time ``t`` has reached ``due`` (to 1e-12 relative); elementwise."""
    return due - t <= 1e-12 * np.maximum(np.abs(due), 1.0)


@torch.no_grad()
def simulate(
    state: SystemState,
    policy: Policy,
    *,
    integrator: str | Integrator = "kdk",
    t_end: float | Sequence[float] | Tensor | None = None,
    steps: int | None = None,
    guards: GuardRails | None = None,
    gate: EnergyGate | None = None,
    max_steps: int = 1_000_000,
    observers: Sequence[Observer] | None = None,
    max_frames: int = 500,
    diagnostics: bool = True,
    progress: bool = False,
    first_dt: float | Tensor | None = None,
    fail_above: float = FAIL_ABOVE,
    stop_diverged: bool = True,
    output_times: Sequence[float] | np.ndarray | None = None,
    native: bool = True,
) -> SimulationResult:
    """Run ``state`` (one system ``(N, D)`` or a batch ``(B, N, D)``) forward with ``policy``.

    Args:
        state: the start state; never modified.
        policy: a :class:`~aits.policies.Policy` (one ``dt`` per system).
        integrator: ``"kdk"``, ``"symmetric"``, ``"ttl"`` or an
            :class:`~aits.integrators.Integrator`.
        t_end: run each system for this long (a number, or one per system); its last
            step lands on it. Or
        steps: run this many steps (exactly one of the two).
        guards: guard rails (default: all off).
        gate: the energy gate of the pass rate and the gated rail.
        max_steps: a system stops here with a warning (keeping its last state).
        observers: what to record per step; default ``[EnergyRecord(), Trajectory(max_frames)]``
            (``[]`` records nothing: for timing and large batches).
        max_frames: frames of the default :class:`Trajectory`.
        diagnostics: compute energies every step (one potential evaluation a step);
            off only for timing, and not with a gated rail.
        progress: show a progress bar for runs longer than :data:`~aits.observers.PROGRESS_DELAY`.
        first_dt: the first step of the ``symmetric`` recurrence (default: the policy's
            proposal); to run a symmetric run back, give its last step.
        fail_above: a system whose whole-run ``|dE/E|`` exceeds this has diverged
            (``inf``: never; needs ``diagnostics``). A step that still fails the gate
            after the gated rail's last retry is a divergence too.
        stop_diverged: a diverged system stops after the diverging step (else it runs
            on; its status stays ``"diverged"``).
        output_times: times after the start (the same for every system, >= 0) at
            which each system's state is recorded (:attr:`SystemRun.output_t` and on);
            steps land on them exactly. Times past a system's end are not reached.
        native: run natively where that gives this loop's results (to rounding): a
            fixed dt, Aarseth's criterion or a model whose network the native loop
            computes (:func:`aits.native_run.native_net`) under ``kdk`` or
            ``symmetric`` (its one-evaluation recurrence, no ``first_dt``), no guard
            rail, observer, progress bar or output times, a CPU few-body batch
            without a field (:mod:`aits.native_run`). ``False`` always runs the
            Python loop.

    Raises:
        ValueError: both or neither of ``t_end``/``steps``, bad values.
    """
    if (t_end is None) == (steps is None):
        raise ValueError("simulate: give exactly one of t_end and steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
    if not fail_above > 0:
        raise ValueError(f"simulate: fail_above must be > 0 (inf: never), got {fail_above!r}")
    offsets = _output_offsets(output_times)
    guards = guards or GuardRails()
    gate = gate or EnergyGate()
    if guards.gated and not diagnostics:
        raise ValueError("the gated guard rail needs diagnostics (energies every step)")
    integ = make_integrator(integrator)
    uses = getattr(policy, "uses_pair_statistics", True)
    if getattr(integ, "statistics", uses) != uses:  # cache them only for a policy that reads them
        integ = copy.copy(integ)
        integ.statistics = uses
    if isinstance(integ, SymmetricKDK) and getattr(policy, "history_len", 0):
        log.warning("%r reads its last %d states, and the symmetric integrator's reversible "
                    "recurrence needs a step that depends on the state alone: expect far more "
                    "steps than under kdk (the encounter-history generalist: 1.47x on the "
                    "development systems, README)", policy, policy.history_len)
    single = not state.is_batched
    force_evals0 = 0 if state.acc is not None else 1
    batch = state.detach().as_batch().with_acceleration()
    B, device = batch.batch_size, batch.device
    t0 = batch.time.clone()
    t_stop = (t0 + _as_batch_tensor(t_end, "t_end", B, device) if t_end is not None
              else torch.full((B,), math.inf, dtype=torch.float64, device=device))
    tol = torch.where(torch.isfinite(t_stop), 1e-12 * t_stop.abs().clamp_min(1.0), 0.0)
    if observers is None:
        observers = [EnergyRecord(), Trajectory(max_frames)]
    observers = list(observers)
    if progress:
        total = float((t_stop - t0).sum()) if t_end is not None else steps * B
        observers.append(Progress(total if t_end is not None else None,
                                  None if t_end is not None else int(total)))
    history = HistoryBuffer(policy.history_len) if policy.history_len else None

    use_native = native and native_run.applies(batch, policy, integ, guards, observers, progress,
                                               len(offsets), first_dt)
    fast = None  # the native run's result (it returns the conserved totals too)
    if not use_native:
        P0, L0 = batch.momentum(), batch.angular_momentum()
        P_scale, L_scale = conservation_scales(batch)
    # per-system bookkeeping in numpy (float64): cheap for small batches, one read-back a step
    E0 = scale0 = E_prev = scale_prev = None
    if diagnostics:
        E0, scale0 = (x.double().cpu().numpy() for x in _energy(batch))
        E_prev, scale_prev = E0.copy(), scale0.copy()
    t_np = batch.time.cpu().numpy().copy()
    t_stop_np = t_stop.cpu().numpy()
    tol_np = tol.cpu().numpy()
    n_steps, evals = np.zeros(B, np.int64), np.full(B, force_evals0, np.int64)
    rejected, passes = np.zeros(B, np.int64), np.zeros(B, np.int64)
    err_max, err_final, step_max = np.zeros(B), np.zeros(B), np.zeros(B)
    # dt statistics of the policy's own steps, and of the steps shortened to land
    dt_min, dt_max, dt_sum = np.full(B, math.inf), np.zeros(B), np.zeros(B)
    land_min, land_max, land_sum = np.full(B, math.inf), np.zeros(B), np.zeros(B)
    dt_last = np.full(B, math.nan)
    # per system, the steps that landed (only systems with one hold a list: B lists would
    # cost a garbage-collector pass or more per call)
    landed: dict[int, list[int]] = {}
    rem_dtype = np.float32 if batch.dtype == torch.float32 else np.float64
    prev_dt = torch.zeros(B, dtype=batch.dtype, device=device)
    stop = [""] * B
    running = np.ones(B, bool)
    all_rows = np.arange(B)
    bad_dt = np.zeros(B, bool)
    any_bad_dt = False  # whether bad_dt has an entry: one flag to test per step
    has_end = bool(np.isfinite(t_stop_np).any())
    # divergence: per system, the first step that diverged
    ok = np.ones(B, bool)
    div_step: list[int | None] = [None] * B
    div_time: list[float | None] = [None] * B
    div_why: list[str | None] = [None] * B
    watch_error = diagnostics and math.isfinite(fail_above)
    # output times: each system's next one (inf past the last) and what was recorded
    n_out = len(offsets)
    t0_np = t_np.copy()
    next_out = np.zeros(B, np.int64)
    t_out_np = t0_np + offsets[0] if n_out else np.full(B, math.inf)
    outputs: dict[int, list[tuple[float, np.ndarray, np.ndarray, float]]] = {}
    # every running system takes one step per pass, so the passes count their steps
    passes_done = 0
    for obs in observers:
        obs.start(batch, t_np.copy())

    def record_outputs(moved: np.ndarray) -> None:
        """Record the state of the systems ``moved`` that have reached their next
        output time (each requested time within the tolerance gets its record)."""
        hit = moved[_reached(t_out_np[moved], t_np[moved])]
        if not len(hit):
            return
        index = torch.from_numpy(hit).to(device)
        pos, vel = batch.pos[index].cpu().numpy(), batch.vel[index].cpu().numpy()
        for k, b in enumerate(hit.tolist()):
            j = int(next_out[b])
            while j < n_out and _reached(t0_np[b] + offsets[j], t_np[b]):
                outputs.setdefault(b, []).append((float(t_np[b]), pos[k], vel[k],
                                   float(err_final[b]) if diagnostics else math.nan))
                j += 1
            next_out[b] = j
            t_out_np[b] = t0_np[b] + offsets[j] if j < n_out else math.inf

    def proposer(rows: np.ndarray | None):
        index = None if rows is None else torch.from_numpy(rows).to(device)
        prev = prev_dt if index is None else prev_dt[index]
        window = None
        if history is not None:
            window = history.window()
            if index is not None:
                window = [None if s is None else s.index(index) for s in window]

        def propose(sub: SystemState) -> Tensor:
            h = policy(sub, window)
            if h.dtype != sub.dtype or h.shape != sub.batch_shape:
                h = h.to(sub.dtype).reshape(sub.batch_shape)
            if guards.active:
                h = guards.limit(h, torch.where(prev > 0, prev, h)
                                 if math.isfinite(guards.max_growth) else None)
            h_np = h.cpu().numpy()
            if not (h_np.min() > 0 and h_np.max() < math.inf):  # a NaN fails both
                nonlocal any_bad_dt
                lost = ~((h_np > 0) & (h_np < math.inf))
                bad_dt[np.arange(B)[lost] if rows is None else rows[lost]] = True
                any_bad_dt = True
                h = torch.where(torch.from_numpy(lost).to(h.device), torch.ones_like(h), h)
            return h

        return propose

    def rel(E_a: np.ndarray, E_b: np.ndarray, scale_a: np.ndarray) -> np.ndarray:
        denom = np.maximum(np.maximum(np.abs(E_a), gate.floor * scale_a), np.finfo(float).tiny)
        with np.errstate(invalid="ignore", over="ignore"):
            return np.abs(E_b - E_a) / denom

    def energies(s: SystemState) -> tuple[np.ndarray, np.ndarray]:
        E, sc = _energy(s)
        return E.double().cpu().numpy(), sc.double().cpu().numpy()

    carry = integ.init(batch, proposer(None), None if first_dt is None else
                       torch.as_tensor(first_dt, dtype=batch.dtype, device=device))
    if n_out:
        record_outputs(all_rows)
    start = time.perf_counter()
    n_running = B
    native_landing = None
    if use_native:
        fast = native_run.run(batch, policy, t_stop, steps, max_steps, diagnostics, gate,
                              fail_above, stop_diverged, force_evals0,
                              symmetric=isinstance(integ, SymmetricKDK))
        batch = fast.state
        t_np[:] = batch.time.numpy()
        n_steps[:], evals[:], passes[:] = fast.steps, fast.force_evaluations, fast.gate_passes
        err_max[:], err_final[:] = fast.energy_error_max, fast.energy_error_final
        step_max[:] = fast.step_error_max
        dt_min[:], dt_max[:], dt_sum[:] = fast.dt_min, fast.dt_max, fast.dt_sum
        dt_last[:] = fast.dt_last
        land_min[fast.landed] = land_max[fast.landed] = land_sum[fast.landed] = \
            fast.land_dt[fast.landed]
        # at most one landing a system (on t_end): its step index, -1 for none
        native_landing = np.where(fast.landed, n_steps - 1, -1)
        stop[:], div_step[:], div_time[:], div_why[:] = (fast.stop, fast.diverged_step,
                                                         fast.diverged_time, fast.divergence)
        ok[:] = [d is None for d in div_step]
        running[:] = False  # the loop below ends at once
        n_running = 0
    while True:
        if has_end:
            remaining_np = t_stop_np - t_np
            done = running & (remaining_np <= tol_np)
            if done.any():
                for b in np.flatnonzero(done):
                    stop[b] = "t_end"
                running &= ~done
                n_running = int(running.sum())
        elif passes_done >= steps:
            for b in np.flatnonzero(running):
                stop[b] = "steps"
            running[:] = False
            n_running = 0
        if n_running and passes_done >= max_steps:
            for b in np.flatnonzero(running):
                stop[b] = "max_steps"
                log.warning("system %d stopped at max_steps=%d at t=%.6g (t_end %.6g not "
                            "reached)", b, max_steps, t_np[b], t_stop_np[b])
            running[:] = False
            n_running = 0
        if not n_running:
            break
        rows = None if n_running == B else np.flatnonzero(running)
        idx = None if rows is None else torch.from_numpy(rows).to(device)
        sub = batch if idx is None else batch.index(idx)
        sub_carry = carry if idx is None else {k: v[idx] for k, v in carry.items()}
        rem = rem_np = None  # steps runs without output times have nothing to land on
        if has_end or n_out:
            target_np = np.minimum(t_stop_np, t_out_np) if n_out else t_stop_np
            left = target_np - t_np if n_out else remaining_np
            rem_np = left if rows is None else left[rows]
            rem = torch.from_numpy(rem_np).to(device)
        new, dt, new_carry, ev = integ.step(sub, sub_carry, proposer(rows), rem, 1.0,
                                            guards.dt_min)
        if not isinstance(ev, int):
            ev = np.asarray(ev).copy()
        dt_np = dt.double().cpu().numpy()
        err = run_err = None  # per-step and whole-run errors (with diagnostics)
        if diagnostics:
            Ep = E_prev if rows is None else E_prev[rows]
            sp = scale_prev if rows is None else scale_prev[rows]
            E1, scale1 = energies(new)
            err = rel(Ep, E1, sp)
        retries = 0
        exhausted = None  # systems whose step still fails the gate after the last retry
        if guards.gated:
            scale = 1.0
            for _ in range(guards.max_retries):
                fail = ~(err < gate.threshold) & (dt_np > guards.dt_min)
                if not fail.any():
                    break
                scale *= guards.shrink
                f_np = np.flatnonzero(fail)
                f = torch.from_numpy(f_np).to(device)
                r_new, r_dt, r_carry, r_ev = integ.step(
                    sub.index(f), {k: v[f] for k, v in sub_carry.items()},
                    proposer(f_np if rows is None else rows[f_np]),
                    None if rem is None else rem[f], scale, guards.dt_min)
                new = new.put(f, r_new)
                dt = dt.index_copy(0, f, r_dt)
                dt_np[f_np] = r_dt.double().cpu().numpy()
                new_carry = {k: v.index_copy(0, f, r_carry[k]) for k, v in new_carry.items()}
                extra = np.zeros(len(dt_np), np.int64)
                extra[f_np] = r_ev
                ev, retries = ev + extra, retries + fail.astype(np.int64)
                r_E1, r_s1 = energies(r_new)
                E1[f_np], scale1[f_np] = r_E1, r_s1
                err[f_np] = rel(Ep[f_np], r_E1, sp[f_np])
            else:
                exhausted = ~(err < gate.threshold) & (dt_np > guards.dt_min)
                if not exhausted.any():
                    exhausted = None
        # the steps that were shortened to land on t_end or an output time end exactly
        # there (their dt, in the state's dtype, can miss it by its rounding)
        land = None if rem_np is None else dt_np >= rem_np.astype(rem_dtype, copy=False)
        if land is not None:
            if land.any():
                target = target_np if rows is None else target_np[rows]
                new = new.replace(time=torch.where(
                    torch.from_numpy(land).to(device),
                    torch.from_numpy(target).to(device), new.time))
            else:
                land = None
        rows_all = slice(None) if rows is None else rows  # basic indexing when all run
        evals[rows_all] += ev
        rejected[rows_all] += retries
        if diagnostics:  # a finite energy means finite positions and velocities
            finite = np.isfinite(E1)
        else:
            finite = _finite_systems(new)
        if any_bad_dt or not finite.all():
            lost = bad_dt[rows_all]
            kept = finite & ~lost
            rows_all = all_rows if rows is None else rows
            for k in np.flatnonzero(~kept):
                b = int(rows_all[k])
                stop[b] = "bad-dt" if lost[k] else "non-finite"
                log.error("system %d, step %d at t=%.6g: %s; this system stops", b,
                          n_steps[b], t_np[b],
                          "the policy proposed a dt that is not finite and > 0"
                          if lost[k] else f"dt={dt_np[k]:.3g} gave a non-finite state")
            running[rows_all[~kept]] = False
            n_running = int(running.sum())
            keep_np = np.flatnonzero(kept)
            if not len(keep_np):
                continue
            keep = torch.from_numpy(keep_np).to(device)
            rows_all, new, dt = rows_all[keep_np], new.index(keep), dt[keep]
            dt_np = dt_np[keep_np]
            err = None if err is None else err[keep_np]
            land = None if land is None else land[keep_np]
            exhausted = None if exhausted is None else exhausted[keep_np]
            new_carry = {k: v[keep] for k, v in new_carry.items()}
            if diagnostics:
                E1, scale1 = E1[keep_np], scale1[keep_np]
            rows = rows_all
        if history is not None:  # the loop's states are new tensors each step: no copy
            history.push(batch, copy=False)
        if rows is None:
            batch, carry, prev_dt = new, new_carry, dt
        else:
            put = torch.from_numpy(rows).to(device)
            batch = batch.put(put, new)
            carry = {k: v.index_copy(0, put, new_carry[k]) for k, v in carry.items()}
            prev_dt = prev_dt.index_copy(0, put, dt)
        passes_done += 1
        if rows is None and land is None:  # in place: the common case, kept cheap
            t_np[:] = new.time.cpu().numpy()
            n_steps += 1
            dt_sum += dt_np
            np.minimum(dt_min, dt_np, out=dt_min)
            np.maximum(dt_max, dt_np, out=dt_max)
            dt_last[:] = dt_np
        else:
            t_np[rows_all] = new.time.cpu().numpy()
            n_steps[rows_all] += 1
            dt_last[rows_all] = dt_np
            if land is None:
                dt_sum[rows_all] += dt_np
                dt_min[rows_all] = np.minimum(dt_min[rows_all], dt_np)
                dt_max[rows_all] = np.maximum(dt_max[rows_all], dt_np)
            else:
                own, short = np.where(land, math.nan, dt_np), np.where(land, dt_np, math.nan)
                dt_sum[rows_all] += np.where(land, 0.0, dt_np)
                dt_min[rows_all] = np.fmin(dt_min[rows_all], own)
                dt_max[rows_all] = np.fmax(dt_max[rows_all], own)
                land_sum[rows_all] += np.where(land, dt_np, 0.0)
                land_min[rows_all] = np.fmin(land_min[rows_all], short)
                land_max[rows_all] = np.fmax(land_max[rows_all], short)
                for b in (all_rows if rows is None else rows_all)[land].tolist():
                    landed.setdefault(b, []).append(int(n_steps[b]) - 1)
        if diagnostics:
            E_prev[rows_all], scale_prev[rows_all] = E1, scale1
            run_err = _nan_to_inf(rel(E0[rows_all], E1, scale0[rows_all]))
            err_final[rows_all] = run_err
            err_max[rows_all] = np.maximum(err_max[rows_all], run_err)
            step_max[rows_all] = np.maximum(step_max[rows_all], _nan_to_inf(err))
            passes[rows_all] += err < gate.threshold
        moved = all_rows if rows is None else rows_all
        if n_out:
            record_outputs(moved)
        if observers:
            nan = np.full(len(dt_np), math.nan)
            for obs in observers:
                obs.update(batch, moved, t_np[rows_all], dt_np,
                           nan if err is None else err, nan if run_err is None else run_err)
        if watch_error or exhausted is not None:
            div = run_err > fail_above if watch_error else np.zeros(len(dt_np), bool)
            if exhausted is not None:
                div |= exhausted
            if div.any():
                for k in np.flatnonzero(div & ok[moved]).tolist():
                    b = int(moved[k])
                    ok[b] = False
                    div_step[b], div_time[b] = int(n_steps[b]), float(t_np[b])
                    div_why[b] = (
                        f"the step still fails the energy gate after {guards.max_retries} "
                        f"{'retry' if guards.max_retries == 1 else 'retries'} (rel_dE "
                        f"{err[k]:.3g} >= {gate.threshold:g})"
                        if exhausted is not None and exhausted[k] else
                        f"whole-run |dE/E| {run_err[k]:.3g} > fail_above {fail_above:g}")
                if stop_diverged:
                    for b in moved[div].tolist():
                        stop[b] = "diverged"
                    running[moved[div]] = False
                    n_running = int(running.sum())
    wall = time.perf_counter() - start
    for obs in observers:
        obs.finish(batch)
    if not diagnostics:
        err_max[:], err_final[:], step_max[:] = math.nan, math.nan, math.nan
    if fast is not None:
        P_err, L_err = _native_conservation_errors(fast.totals, batch.dim)
    else:
        P_err = _residual(batch.momentum(), P0, P_scale).double().cpu().numpy()
        L_err = _residual(batch.angular_momentum(), L0, L_scale).double().cpu().numpy()
    records = [o for o in observers if isinstance(o, EnergyRecord)]
    frames = [o for o in observers if isinstance(o, Trajectory)]
    # the per-system totals as columns; each SystemRun is built when first read
    if native_landing is not None:
        n_land = (native_landing >= 0).astype(np.int64)
    else:
        n_land = np.zeros(B, np.int64)
        for b, steps_landed in landed.items():
            n_land[b] = len(steps_landed)
    own = n_steps > n_land  # else every step landed somewhere: describe those
    columns = {
        "steps": n_steps, "force_evaluations": evals, "rejected_steps": rejected,
        "energy_error_max": err_max, "energy_error_final": err_final,
        "step_error_max": step_max, "gate_passes": passes,
        "dt_min": np.where(own, dt_min, land_min), "dt_max": np.where(own, dt_max, land_max),
        "dt_sum": np.where(own, dt_sum, land_sum),
        "dt_steps": np.where(own, n_steps - n_land, n_steps), "dt_last": dt_last,
        "momentum_error": P_err, "angular_momentum_error": L_err,
        "stop_reason": [r or "steps" for r in stop], "stop_time": t_np,
        "threshold": np.full(B, gate.threshold), "status": np.where(ok, "ok", "diverged"),
        "diverged_step": div_step, "diverged_time": div_time, "divergence": div_why,
    }

    def arrays(b: int) -> dict:
        out = {**(records[0].arrays(b) if records else {}),
               **(frames[0].arrays(b) if frames else {}),
               "landing_steps": np.array(
                   landed.get(b, ()) if native_landing is None
                   else native_landing[b:b + 1][native_landing[b:b + 1] >= 0], dtype=np.int64)}
        if output_times is not None:
            rec = outputs.get(b, [])
            shape = (len(rec),) + tuple(batch.pos.shape[-2:])
            out.update(
                output_t=np.array([o[0] for o in rec], dtype=np.float64),
                output_pos=np.array([o[1] for o in rec]).reshape(shape),
                output_vel=np.array([o[2] for o in rec]).reshape(shape),
                output_energy_error=np.array([o[3] for o in rec], dtype=np.float64))
        return out

    runs = SystemRuns(columns, arrays)
    final = batch.index(0) if single else batch
    return SimulationResult(state=final, policy=getattr(policy, "name", type(policy).__name__),
                            integrator=integ.name, systems=runs, wall_time_s=wall)
