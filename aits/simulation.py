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

What is recorded per step is up to the *observers* (:class:`EnergyRecord`,
:class:`Trajectory`, :class:`Progress`); the core itself keeps only per-system
totals, so a batch of 65,536 systems costs no per-step memory.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from aits.gate import EnergyGate
from aits.guards import GuardRails
from aits.history import HistoryBuffer
from aits.integrators import Integrator, make_integrator
from aits.observers import EnergyRecord, Observer, Progress, Trajectory
from aits.policies import Policy
from aits.state import SystemState

__all__ = ["EnergyRecord", "Observer", "Progress", "RESULT_KEYS", "STOP_REASONS",
           "SimulationResult", "SystemRun", "Trajectory", "conservation_scales", "simulate"]

log = logging.getLogger(__name__)

#: Keys every system's summary (and ``result.json``) holds.
RESULT_KEYS = ("energy_error_final", "energy_error_max", "momentum_error",
               "angular_momentum_error", "steps", "force_evaluations", "wall_time_s",
               "gate_pass_rate", "t_end")

#: Why a system stopped.
STOP_REASONS = ("t_end", "steps", "max_steps", "non-finite", "bad-dt")


# ---------------------------------------------------------------------------- results


@dataclass
class SystemRun:
    """One system's run. ``S`` accepted steps, ``F`` recorded frames; the arrays are
    ``None`` when their observer was not attached.

    Attributes:
        steps, force_evaluations, rejected_steps: counts (force evaluations include the
            start's when it had no cached acceleration, and every retry and trial step).
        energy_error_max, energy_error_final: whole-run ``|E(t) - E(0)| / |E(0)|``.
        step_error_max, gate_passes: worst per-step ``rel_dE`` and steps passing the gate.
        dt_min, dt_max, dt_sum: over the accepted steps.
        momentum_error, angular_momentum_error: residuals at the end, over the scales
            of :func:`conservation_scales`.
        stop_reason: one of :data:`STOP_REASONS`; stop_time, stop_step: where.
        t, dt, step_error, energy_error: ``(S + 1,)``, ``(S,)``, ``(S,)``, ``(S + 1,)``
            (:class:`EnergyRecord`).
        frame_t, frame_pos, frame_vel: ``(F,)``, ``(F, N, D)`` (:class:`Trajectory`).
    """

    steps: int
    force_evaluations: int
    rejected_steps: int
    energy_error_max: float
    energy_error_final: float
    step_error_max: float
    gate_passes: int
    dt_min: float
    dt_max: float
    dt_sum: float
    momentum_error: float
    angular_momentum_error: float
    stop_reason: str
    stop_time: float
    threshold: float
    t: np.ndarray | None = None
    dt: np.ndarray | None = None
    step_error: np.ndarray | None = None
    energy_error: np.ndarray | None = None
    frame_t: np.ndarray | None = None
    frame_pos: np.ndarray | None = None
    frame_vel: np.ndarray | None = None

    @property
    def gate_pass_rate(self) -> float:
        """Fraction of accepted steps whose ``rel_dE`` passed the gate (NaN if none)."""
        return self.gate_passes / self.steps if self.steps else math.nan

    def summary(self) -> dict:
        """JSON-friendly numbers: the :data:`RESULT_KEYS` (``wall_time_s`` is the
        batch's) and a few more."""
        n = self.steps
        return {
            "energy_error_final": self.energy_error_final,
            "energy_error_max": self.energy_error_max,
            "momentum_error": self.momentum_error,
            "angular_momentum_error": self.angular_momentum_error,
            "steps": n,
            "force_evaluations": self.force_evaluations,
            "gate_pass_rate": self.gate_pass_rate,
            "t_end": self.stop_time,
            "step_error_max": self.step_error_max if n else math.nan,
            "energy_threshold": self.threshold,
            "rejected_steps": self.rejected_steps,
            "dt_mean": self.dt_sum / n if n else math.nan,
            "dt_min": self.dt_min if n else math.nan,
            "dt_max": self.dt_max if n else math.nan,
            "stop_reason": self.stop_reason,
        }


@dataclass
class SimulationResult:
    """What one run produced: the final state, and one :class:`SystemRun` per system.

    For an unbatched start state the attributes of its one :class:`SystemRun`
    (``t``, ``dt``, ``energy_error``, ``steps``, ``stop_reason``, ...) are readable
    on the result itself.
    """

    state: SystemState
    policy: str
    integrator: str
    systems: list[SystemRun]
    wall_time_s: float
    extra: dict = field(default_factory=dict)

    def __getattr__(self, name: str):
        systems = self.__dict__.get("systems")
        if systems is not None and (name in SystemRun.__dataclass_fields__
                                    or isinstance(getattr(SystemRun, name, None), property)):
            if self.state.is_batched:
                raise AttributeError(f"SimulationResult.{name}: this run is a batch of "
                                     f"{len(systems)} systems; use result.systems[i].{name}")
            return getattr(systems[0], name)
        raise AttributeError(name)

    def summary(self, index: int = 0) -> dict:
        """System ``index``'s :meth:`SystemRun.summary` plus the run's settings."""
        s = self.systems[index].summary()
        s.update(wall_time_s=self.wall_time_s, policy=self.policy, integrator=self.integrator,
                 n_bodies=self.state.n_bodies, dim=self.state.dim, **self.extra)
        return s

    def totals(self) -> dict:
        """Batch totals: systems, steps, force evaluations, rejected steps, wall time,
        the worst whole-run error and the stop reasons counted."""
        runs = self.systems
        reasons: dict[str, int] = {}
        for r in runs:
            reasons[r.stop_reason] = reasons.get(r.stop_reason, 0) + 1
        return {"systems": len(runs), "steps": sum(r.steps for r in runs),
                "force_evaluations": sum(r.force_evaluations for r in runs),
                "rejected_steps": sum(r.rejected_steps for r in runs),
                "energy_error_max": max(r.energy_error_max for r in runs),
                "wall_time_s": self.wall_time_s, "stop_reasons": reasons}


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
    speed = state.vel.norm(dim=-1)
    M = state.total_mass()
    p_energy = (2 * M * (state.kinetic_energy() + state.potential_energy().abs())).sqrt()
    r = (state.pos - state.center_of_mass().unsqueeze(-2)).norm(dim=-1)
    r_rms = ((state.mass * r * r).sum(-1) / M.clamp_min(torch.finfo(M.dtype).tiny)).sqrt()
    P = torch.maximum((state.mass * speed).sum(-1), p_energy)
    L = torch.maximum((state.mass * state.pos.norm(dim=-1) * speed).sum(-1), p_energy * r_rms)
    tiny = torch.finfo(P.dtype).tiny
    return P.clamp_min(tiny), L.clamp_min(tiny)


def _finite_systems(state: SystemState) -> np.ndarray:
    """``(B,)``: whether each system's positions and velocities are all finite (a sum of
    finite numbers is finite, short of overflow near the float maximum; numpy on the
    CPU, where it is cheaper than torch for a few bodies)."""
    pos, vel = state.pos, state.vel  # no gradients in the core: numpy() works
    if pos.device.type == "cpu":
        return np.isfinite(pos.numpy().sum((-2, -1)) + vel.numpy().sum((-2, -1)))
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
        progress: show a progress bar for runs longer than a second.
        first_dt: the first step of the ``symmetric`` recurrence (default: the policy's
            proposal); to run a symmetric run back, give its last step.

    Raises:
        ValueError: both or neither of ``t_end``/``steps``, bad values.
    """
    if (t_end is None) == (steps is None):
        raise ValueError("simulate: give exactly one of t_end and steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
    guards = guards or GuardRails()
    gate = gate or EnergyGate()
    if guards.gated and not diagnostics:
        raise ValueError("the gated guard rail needs diagnostics (energies every step)")
    integ = make_integrator(integrator)
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
    dt_min, dt_max, dt_sum = np.full(B, math.inf), np.zeros(B), np.zeros(B)
    prev_dt = torch.zeros(B, dtype=batch.dtype, device=device)
    stop = [""] * B
    running = np.ones(B, bool)
    all_rows = np.arange(B)
    bad_dt = np.zeros(B, bool)
    any_bad_dt = False  # whether bad_dt has an entry: one flag to test per step
    has_end = bool(np.isfinite(t_stop_np).any())
    # every running system takes one step per pass, so the passes count their steps
    passes_done = 0
    for obs in observers:
        obs.start(batch, t_np.copy())

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
    start = time.perf_counter()
    n_running = B
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
        rem = None  # steps runs have no end to land on
        if has_end:
            rem_np = remaining_np if rows is None else remaining_np[rows]
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
        rows_all = slice(None) if rows is None else rows  # basic indexing when all run
        evals[rows_all] += ev
        rejected[rows_all] += retries
        if diagnostics:  # a finite energy means finite positions and velocities
            finite = np.isfinite(E1)
        else:
            finite = _finite_systems(new)
        if any_bad_dt or not finite.all():
            lost = bad_dt[rows_all]
            ok = finite & ~lost
            rows_all = all_rows if rows is None else rows
            for k in np.flatnonzero(~ok):
                b = int(rows_all[k])
                stop[b] = "bad-dt" if lost[k] else "non-finite"
                log.error("system %d, step %d at t=%.6g: %s; this system stops", b,
                          n_steps[b], t_np[b],
                          "the policy proposed a dt that is not finite and > 0"
                          if lost[k] else f"dt={dt_np[k]:.3g} gave a non-finite state")
            running[rows_all[~ok]] = False
            n_running = int(running.sum())
            keep_np = np.flatnonzero(ok)
            if not len(keep_np):
                continue
            keep = torch.from_numpy(keep_np).to(device)
            rows_all, new, dt = rows_all[keep_np], new.index(keep), dt[keep]
            dt_np = dt_np[keep_np]
            err = None if err is None else err[keep_np]
            new_carry = {k: v[keep] for k, v in new_carry.items()}
            if diagnostics:
                E1, scale1 = E1[keep_np], scale1[keep_np]
            rows = rows_all
        if history is not None:
            history.push(batch)
        if rows is None:
            batch, carry, prev_dt = new, new_carry, dt
        else:
            put = torch.from_numpy(rows).to(device)
            batch = batch.put(put, new)
            carry = {k: v.index_copy(0, put, new_carry[k]) for k, v in carry.items()}
            prev_dt = prev_dt.index_copy(0, put, dt)
        passes_done += 1
        if rows is None:  # in place: the common case, kept cheap
            t_np[:] = new.time.cpu().numpy()
            n_steps += 1
            dt_sum += dt_np
            np.minimum(dt_min, dt_np, out=dt_min)
            np.maximum(dt_max, dt_np, out=dt_max)
        else:
            t_np[rows_all] = new.time.cpu().numpy()
            n_steps[rows_all] += 1
            dt_sum[rows_all] += dt_np
            dt_min[rows_all] = np.minimum(dt_min[rows_all], dt_np)
            dt_max[rows_all] = np.maximum(dt_max[rows_all], dt_np)
        if diagnostics:
            E_prev[rows_all], scale_prev[rows_all] = E1, scale1
            run_err = _nan_to_inf(rel(E0[rows_all], E1, scale0[rows_all]))
            err_final[rows_all] = run_err
            err_max[rows_all] = np.maximum(err_max[rows_all], run_err)
            step_max[rows_all] = np.maximum(step_max[rows_all], _nan_to_inf(err))
            passes[rows_all] += err < gate.threshold
        if observers:
            nan = np.full(len(dt_np), math.nan)
            for obs in observers:
                obs.update(batch, all_rows if rows is None else rows, t_np[rows_all], dt_np,
                           nan if err is None else err, nan if run_err is None else run_err)
    wall = time.perf_counter() - start
    for obs in observers:
        obs.finish(batch)
    if not diagnostics:
        err_max[:], err_final[:], step_max[:] = math.nan, math.nan, math.nan
    P_err = _residual(batch.momentum(), P0, P_scale).tolist()
    L_err = _residual(batch.angular_momentum(), L0, L_scale).tolist()
    records = [o for o in observers if isinstance(o, EnergyRecord)]
    frames = [o for o in observers if isinstance(o, Trajectory)]
    runs = []
    for b in range(B):
        arrays = {**(records[0].arrays(b) if records else {}),
                  **(frames[0].arrays(b) if frames else {})}
        runs.append(SystemRun(
            steps=int(n_steps[b]), force_evaluations=int(evals[b]),
            rejected_steps=int(rejected[b]), energy_error_max=float(err_max[b]),
            energy_error_final=float(err_final[b]), step_error_max=float(step_max[b]),
            gate_passes=int(passes[b]), dt_min=float(dt_min[b]), dt_max=float(dt_max[b]),
            dt_sum=float(dt_sum[b]), momentum_error=P_err[b], angular_momentum_error=L_err[b],
            stop_reason=stop[b] or "steps", stop_time=float(t_np[b]), threshold=gate.threshold,
            **arrays))
    final = batch.index(0) if single else batch
    return SimulationResult(state=final, policy=getattr(policy, "name", type(policy).__name__),
                            integrator=integ.name, systems=runs, wall_time_s=wall)
