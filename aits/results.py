"""What a run of the simulation core produced: one :class:`SystemRun` per system in
a :class:`SimulationResult` (:func:`aits.simulation.simulate` returns it), the
keys of ``result.json`` and the stop reasons."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from aits.state import SystemState

__all__ = ["FAIL_ABOVE", "RESULT_KEYS", "STOP_REASONS", "SimulationResult", "SystemRun",
           "SystemRuns"]

#: Keys every system's summary (and ``result.json``) holds.
RESULT_KEYS = ("status", "energy_error_final", "energy_error_max", "momentum_error",
               "angular_momentum_error", "steps", "force_evaluations", "wall_time_s",
               "gate_pass_rate", "t_end")

#: Why a system stopped.
STOP_REASONS = ("t_end", "steps", "max_steps", "non-finite", "bad-dt", "diverged")

#: The default whole-run ``|dE/E|`` above which a system has diverged.
FAIL_ABOVE = 0.1


@dataclass
class SystemRun:
    """One system's run. ``S`` accepted steps, ``F`` recorded frames, ``K`` output
    times reached; the arrays are ``None`` when their observer (or ``output_times``)
    was not given.

    Attributes:
        steps, force_evaluations, rejected_steps: counts (force evaluations include the
            start's when it had no cached acceleration, and every retry and trial step).
        energy_error_max, energy_error_final: whole-run ``|E(t) - E(0)| / |E(0)|``.
        step_error_max, gate_passes: worst per-step ``rel_dE`` and steps passing the gate.
        dt_min, dt_max, dt_sum, dt_steps: over the ``dt_steps`` accepted steps that were
            not shortened to land on ``t_end`` or an output time (over every step when
            all were).
        dt_last: the last accepted step (NaN before the first).
        landing_steps: ``(L,)`` indices into ``dt`` of the steps shortened to land.
        momentum_error, angular_momentum_error: residuals at the end, over the scales
            of :func:`conservation_scales`.
        stop_reason: one of :data:`STOP_REASONS`; stop_time: where.
        status: ``"ok"`` or ``"diverged"``; diverged_step (1-based), diverged_time (the
            time after that step) and divergence (why) say where, ``None`` when ok.
        t, dt, step_error, energy_error: ``(S + 1,)``, ``(S,)``, ``(S,)``, ``(S + 1,)``
            (:class:`EnergyRecord`).
        frame_t, frame_pos, frame_vel: ``(F,)``, ``(F, N, D)`` (:class:`Trajectory`).
        output_t, output_pos, output_vel, output_energy_error: ``(K,)``, ``(K, N, D)``,
            ``(K,)``: the state at each requested output time reached.
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
    dt_steps: int
    dt_last: float
    landing_steps: np.ndarray
    momentum_error: float
    angular_momentum_error: float
    stop_reason: str
    stop_time: float
    threshold: float
    status: str = "ok"
    diverged_step: int | None = None
    diverged_time: float | None = None
    divergence: str | None = None
    t: np.ndarray | None = None
    dt: np.ndarray | None = None
    step_error: np.ndarray | None = None
    energy_error: np.ndarray | None = None
    frame_t: np.ndarray | None = None
    frame_pos: np.ndarray | None = None
    frame_vel: np.ndarray | None = None
    output_t: np.ndarray | None = None
    output_pos: np.ndarray | None = None
    output_vel: np.ndarray | None = None
    output_energy_error: np.ndarray | None = None

    @property
    def gate_pass_rate(self) -> float:
        """Fraction of accepted steps whose ``rel_dE`` passed the gate (NaN if none)."""
        return self.gate_passes / self.steps if self.steps else math.nan

    @property
    def diverged(self) -> bool:
        """Whether the system diverged (``status == "diverged"``)."""
        return self.status == "diverged"

    @property
    def divergence_note(self) -> str:
        """``"diverged at t=..., step k: why"`` (``""`` when ok), for tables and messages."""
        if not self.diverged:
            return ""
        return (f"diverged at t={self.diverged_time:.6g}, step {self.diverged_step}: "
                f"{self.divergence}")

    def summary(self) -> dict:
        """JSON-friendly numbers: the :data:`RESULT_KEYS` (``wall_time_s`` is the
        batch's) and a few more (the states at the output times when recorded)."""
        n = self.steps
        out = {
            "status": self.status,
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
            "dt_mean": self.dt_sum / self.dt_steps if self.dt_steps else math.nan,
            "dt_min": self.dt_min if self.dt_steps else math.nan,
            "dt_max": self.dt_max if self.dt_steps else math.nan,
            "dt_last": self.dt_last,
            "landing_steps": len(self.landing_steps),
            "stop_reason": self.stop_reason,
            "diverged_step": self.diverged_step,
            "diverged_time": self.diverged_time,
            "divergence": self.divergence,
        }
        if self.output_t is not None:
            out["outputs"] = {"t": self.output_t.tolist(),
                              "energy_error": self.output_energy_error.tolist(),
                              "pos": self.output_pos.tolist(), "vel": self.output_vel.tolist()}
        return out


class SystemRuns(Sequence):
    """The :class:`SystemRun` of every system of a batch, each built on first access
    (then kept) from per-system columns: a batch of 65,536 systems costs no objects
    until they are read, and :meth:`column` reads one field of every system as an
    array without building any.

    Args:
        columns: field name -> one value per system (``B`` each): a list, or a numpy
            array whose entries become python numbers when a run is built.
        arrays: ``b -> {field: value}`` for the fields built per system (arrays).
    """

    def __init__(self, columns: dict[str, list], arrays: Callable[[int], dict] | None = None):
        self._columns = columns
        self._arrays = arrays
        self._n = len(next(iter(columns.values()))) if columns else 0
        self._runs: list[SystemRun | None] = [None] * self._n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._n))]
        i = operator.index(index)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"system {index} of a batch of {self._n}")
        run = self._runs[i]
        if run is None:
            fields = {k: v[i] for k, v in self._columns.items()}
            for k, v in fields.items():
                if isinstance(v, np.generic):
                    fields[k] = v.item()
            run = self._runs[i] = SystemRun(**fields,
                                            **(self._arrays(i) if self._arrays else {}))
        return run

    def column(self, name: str) -> np.ndarray:
        """Field ``name`` of every system, ``(B,)`` (a column when stored as one)."""
        if name in self._columns:
            return np.asarray(self._columns[name])
        return np.asarray([getattr(r, name) for r in self])

    def __repr__(self) -> str:
        return f"SystemRuns({self._n} systems)"


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
    systems: Sequence[SystemRun]
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
        the worst whole-run error, the stop reasons counted, the systems that diverged
        and the batch's ``status`` (``"diverged"`` when any did)."""
        runs = self.systems
        column = (runs.column if isinstance(runs, SystemRuns)
                  else lambda name: np.asarray([getattr(r, name) for r in runs]))
        reasons: dict[str, int] = {}
        for r in column("stop_reason").tolist():
            reasons[r] = reasons.get(r, 0) + 1
        diverged = int((column("status") == "diverged").sum())
        return {"status": "diverged" if diverged else "ok", "systems": len(runs),
                "diverged": diverged, "steps": int(column("steps").sum()),
                "force_evaluations": int(column("force_evaluations").sum()),
                "rejected_steps": int(column("rejected_steps").sum()),
                "energy_error_max": max(column("energy_error_max").tolist()),
                "wall_time_s": self.wall_time_s, "stop_reasons": reasons}
