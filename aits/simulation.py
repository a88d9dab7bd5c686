"""The simulation loop shared by ``python -m aits.simulate``, ``aits.evaluate`` and
the benchmarks: run one system forward with a time-step policy.

Each step asks the policy for ``dt`` (from the state with its cached
acceleration, and the history for history models), applies the guard rails,
takes one kick-drift-kick step (one force evaluation: the end-of-step
acceleration is the next step's start), and records

* the per-step relative energy error ``rel_dE`` of the energy gate (the *gate
  view*: does each step pass?), and
* the whole-run error ``|E(t) - E(0)| / |E(0)|`` (the *whole-run view*: an
  adaptive step breaks leapfrog's symplecticity, so passing every gate does not
  bound the drift).

The run stops at ``t_end`` (the last step is shortened to land on it), after
``steps`` steps, at ``max_steps`` (a warning; the last state is returned, not an
exception) or when the state stops being finite (an error is logged, the
result keeps the last finite state).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from aits.gate import EnergyGate, relative_energy_error
from aits.guards import GuardRails
from aits.history import HistoryBuffer
from aits.policies import Policy
from aits.state import SystemState, step

log = logging.getLogger(__name__)

#: Keys every ``result.json`` holds (``SimulationResult.summary()`` has more).
RESULT_KEYS = ("energy_error_final", "energy_error_max", "momentum_error",
               "angular_momentum_error", "steps", "force_evaluations", "wall_time_s",
               "gate_pass_rate", "t_end")


class SimulationError(RuntimeError):
    """The policy proposed a step that is not a finite number > 0."""


@dataclass
class SimulationResult:
    """What one run produced. ``S`` accepted steps, ``F`` recorded frames.

    Attributes:
        state: the final state (detached).
        policy: the policy's name.
        t: ``(S + 1,)`` time after each step (``t[0]`` the start).
        dt: ``(S,)`` accepted steps.
        step_error: ``(S,)`` per-step relative energy error (NaN without diagnostics).
        energy_error: ``(S + 1,)`` whole-run ``|E(t) - E(0)| / |E(0)|`` (NaN without diagnostics).
        frame_t: ``(F,)`` times of the recorded frames (start and end included).
        frame_pos, frame_vel: ``(F, N, D)`` positions and velocities at those times.
        force_evaluations: force evaluations, including the start's (when it had
            no cached acceleration) and every rejected attempt.
        rejected_steps: attempts rejected by the gated guard rail.
        wall_time_s: wall time of the loop (policy, guards, steps, diagnostics).
        momentum_error: ``|P - P0| / sum_i m_i |v_i(0)|`` at the end.
        angular_momentum_error: ``|L - L0| / sum_i m_i |x_i(0)| |v_i(0)|`` at the end.
        threshold: the energy gate threshold the pass rate refers to.
        stop_reason: ``t_end``, ``steps``, ``max_steps`` or ``non-finite``.
    """

    state: SystemState
    policy: str
    t: np.ndarray
    dt: np.ndarray
    step_error: np.ndarray
    energy_error: np.ndarray
    frame_t: np.ndarray
    frame_pos: np.ndarray
    frame_vel: np.ndarray
    force_evaluations: int
    rejected_steps: int
    wall_time_s: float
    momentum_error: float
    angular_momentum_error: float
    threshold: float
    stop_reason: str
    extra: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.dt)

    @property
    def gate_pass_rate(self) -> float:
        """Fraction of accepted steps whose ``rel_dE`` passed the gate (NaN if none)."""
        if not len(self.step_error):
            return math.nan
        return float(np.mean(np.isfinite(self.step_error) & (self.step_error < self.threshold)))

    def summary(self) -> dict:
        """JSON-friendly numbers: the :data:`RESULT_KEYS` and a few more."""
        dt = self.dt if len(self.dt) else np.array([math.nan])
        return {
            "energy_error_final": float(self.energy_error[-1]),
            "energy_error_max": float(np.max(self.energy_error)),
            "momentum_error": self.momentum_error,
            "angular_momentum_error": self.angular_momentum_error,
            "steps": self.steps,
            "force_evaluations": self.force_evaluations,
            "wall_time_s": self.wall_time_s,
            "gate_pass_rate": self.gate_pass_rate,
            "t_end": float(self.t[-1]),
            "policy": self.policy,
            "step_error_max": float(np.max(self.step_error)) if self.steps else math.nan,
            "energy_threshold": self.threshold,
            "rejected_steps": self.rejected_steps,
            "dt_mean": float(np.mean(dt)),
            "dt_min": float(np.min(dt)),
            "dt_max": float(np.max(dt)),
            "stop_reason": self.stop_reason,
            "n_bodies": self.state.n_bodies,
            "dim": self.state.dim,
            **self.extra,
        }


def json_safe(obj):
    """``obj`` with every non-finite float replaced by ``None`` (strict JSON has no
    NaN/Infinity); dicts, lists and tuples are converted recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _energy(state: SystemState) -> tuple[torch.Tensor, torch.Tensor]:
    """Total energy and its scale ``T + |U|`` (0-d tensors, one potential evaluation)."""
    T, U = state.kinetic_energy(), state.potential_energy()
    return T + U, T + U.abs()


def _residual(now: torch.Tensor, start: torch.Tensor, scale: torch.Tensor) -> float:
    return float((now - start).norm() / scale.clamp_min(torch.finfo(scale.dtype).tiny))


class _Frames:
    """Positions/velocities every ``stride`` steps; halves itself (doubling the
    stride) when it holds more than ``2 * max_frames``, so memory stays bounded."""

    def __init__(self, max_frames: int) -> None:
        self.max_frames = max(2, max_frames)
        self.stride = 1
        self.t: list[float] = []
        self.pos: list[np.ndarray] = []
        self.vel: list[np.ndarray] = []

    def add(self, i: int, t: float, state: SystemState, force: bool = False) -> None:
        if not force and i % self.stride:
            return
        if force and self.t and self.t[-1] == t:
            return
        self.t.append(t)
        self.pos.append(state.pos.detach().cpu().numpy().copy())
        self.vel.append(state.vel.detach().cpu().numpy().copy())
        if len(self.t) > 2 * self.max_frames:
            self.t, self.pos, self.vel = self.t[::2], self.pos[::2], self.vel[::2]
            self.stride *= 2


@torch.no_grad()
def simulate(
    state: SystemState,
    policy: Policy,
    *,
    t_end: float | None = None,
    steps: int | None = None,
    guards: GuardRails | None = None,
    gate: EnergyGate | None = None,
    max_steps: int = 1_000_000,
    max_frames: int = 500,
    diagnostics: bool = True,
    progress: bool = False,
) -> SimulationResult:
    """Run ``state`` (one system, unbatched) forward with ``policy``.

    Args:
        state: start state ``pos (N, D)``; never modified.
        policy: a :class:`~aits.policies.Policy`.
        t_end: run until this time (the last step lands on it); or
        steps: run this many steps (exactly one of the two).
        guards: guard rails (default: all off).
        gate: the energy gate whose threshold the pass rate and the gated rail use.
        max_steps: stop here with a warning (the result holds the last state).
        max_frames: bound on the recorded frames (positions for plots/trajectories).
        diagnostics: compute energies every step (one potential-energy evaluation a
            step); off only for timing, and not with a gated rail.
        progress: show a progress bar (tqdm) for runs longer than a second.

    Raises:
        ValueError: a batched state, both or neither of ``t_end``/``steps``, bad values.
        SimulationError: the policy proposed a ``dt`` that is not finite and > 0.
    """
    if state.is_batched:
        raise ValueError("simulate runs one system: pass an unbatched state (pos of shape (N, D))")
    if (t_end is None) == (steps is None):
        raise ValueError("simulate: give exactly one of t_end and steps")
    if t_end is not None and not (t_end > 0 and math.isfinite(t_end)):
        raise ValueError(f"t_end must be finite and > 0, got {t_end!r}")
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
    guards = guards or GuardRails()
    gate = gate or EnergyGate()
    if guards.gated and not diagnostics:
        raise ValueError("the gated guard rail needs diagnostics (energies every step)")

    force_evals = 0 if state.acc is not None else 1
    state = state.detach().with_acceleration()
    t0 = float(state.time)
    t_stop = None if t_end is None else t0 + t_end
    history = HistoryBuffer(policy.history_len) if policy.history_len else None
    E0, scale0 = _energy(state) if diagnostics else (None, None)
    E_prev, scale_prev = E0, scale0
    P0, L0 = state.momentum(), state.angular_momentum()
    speed = state.vel.norm(dim=-1)
    P_scale = (state.mass * speed).sum()
    L_scale = (state.mass * state.pos.norm(dim=-1) * speed).sum()

    times, dts, step_err, run_err = [t0], [], [], [0.0 if diagnostics else math.nan]
    frames = _Frames(max_frames)
    frames.add(0, t0, state)
    rejected, prev_dt, stop = 0, None, "steps"
    tol = 0.0 if t_stop is None else 1e-12 * max(1.0, abs(t_stop))
    bar = _progress_bar(progress, float(t_end) if t_end is not None else steps,
                        "time" if t_end is not None else "step")
    start = time.perf_counter()
    t = t0
    while True:
        n = len(dts)
        if steps is not None and n >= steps:
            break
        if t_stop is not None and t >= t_stop - tol:
            stop = "t_end"
            break
        if n >= max_steps:
            stop = "max_steps"
            log.warning("stopped at max_steps=%d at t=%.6g (t_end %s not reached)",
                        max_steps, t, t_stop)
            break
        dt = guards.limit(policy(state, history), prev_dt)
        dt_f = float(dt)
        if not (dt_f > 0 and math.isfinite(dt_f)):
            raise SimulationError(
                f"policy {policy.name!r} proposed dt={dt_f!r} at t={t:.6g} (step {n}); "
                "a guard rail (--dt-min/--dt-max) can bound it"
            )
        if t_stop is not None:
            dt_f = min(dt_f, t_stop - t)
        for attempt in range(guards.max_retries + 1):
            new = step(state, dt_f)
            force_evals += 1
            err = math.nan
            if diagnostics:
                E1, scale1 = _energy(new)
                err = float(relative_energy_error(E_prev, E1, scale_prev, gate.floor))
            if (not guards.gated or (err < gate.threshold) or attempt == guards.max_retries
                    or dt_f <= guards.dt_min):
                break
            rejected += 1
            dt_f = max(dt_f * guards.shrink, guards.dt_min)
        if not bool(torch.isfinite(new.pos).all() & torch.isfinite(new.vel).all()):
            stop = "non-finite"
            log.error("step %d at t=%.6g with dt=%.3g gave a non-finite state; stopping", n, t, dt_f)
            break
        if history is not None:
            history.push(state)
        state = new
        prev_dt = dt.new_tensor(dt_f)
        t = float(state.time)
        times.append(t)
        dts.append(dt_f)
        step_err.append(err)
        if diagnostics:
            E_prev, scale_prev = E1, scale1
            run_err.append(float(relative_energy_error(E0, E1, scale0, gate.floor)))
        else:
            run_err.append(math.nan)
        frames.add(n + 1, t, state)
        if bar is not None:
            bar.update(dt_f if t_end is not None else 1)
    wall = time.perf_counter() - start
    if bar is not None:
        bar.close()
    frames.add(len(dts), t, state, force=True)
    return SimulationResult(
        state=state, policy=policy.name, t=np.array(times), dt=np.array(dts),
        step_error=np.array(step_err), energy_error=np.array(run_err),
        frame_t=np.array(frames.t), frame_pos=np.stack(frames.pos), frame_vel=np.stack(frames.vel),
        force_evaluations=force_evals, rejected_steps=rejected, wall_time_s=wall,
        momentum_error=_residual(state.momentum(), P0, P_scale),
        angular_momentum_error=_residual(state.angular_momentum(), L0, L_scale),
        threshold=gate.threshold, stop_reason=stop,
    )


def _progress_bar(enabled: bool, total: float, unit: str):
    """A tqdm bar that appears only for runs longer than a second (None when off)."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, delay=1.0, unit=unit,
                bar_format="{l_bar}{bar}| {n:.4g}/{total:.4g} [{elapsed}<{remaining}]")
