"""Observers of the simulation core: what :func:`aits.simulation.simulate` records per step.

The core keeps only per-system totals; an observer sees every step and keeps what
it needs: :class:`EnergyRecord` (time, ``dt`` and energy errors of every step),
:class:`Trajectory` (a fixed number of frames of positions and velocities),
:class:`Progress` (a tqdm bar). Pass ``observers=[...]`` to ``simulate`` (``[]``
records nothing).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from aits.state import SystemState

__all__ = ["EnergyRecord", "Observer", "PROGRESS_DELAY", "Progress", "Trajectory"]

#: Seconds before any aits progress bar appears: shorter stretches show nothing.
PROGRESS_DELAY = 2.0


class Observer:
    """Sees every step of a run. ``active`` is the ``(b,)`` numpy index of the systems
    that took this step; the arrays are theirs (``dt``, ``step_error``,
    ``energy_error`` ``(b,)``, NaN errors without diagnostics); ``state`` is the whole
    batch after the step."""

    def start(self, state: SystemState, t0: np.ndarray) -> None:
        """Before the first step; ``t0 (B,)`` the start times."""

    def update(self, state: SystemState, active: np.ndarray, t: np.ndarray, dt: np.ndarray,
               step_error: np.ndarray, energy_error: np.ndarray) -> None:
        """After each step."""

    def finish(self, state: SystemState) -> None:
        """After the last step."""


class EnergyRecord(Observer):
    """Per system, the time, ``dt``, per-step and whole-run energy error of every step."""

    def start(self, state, t0):
        B = len(t0)
        self.t = [[float(x)] for x in t0]
        self.dt: list[list[float]] = [[] for _ in range(B)]
        self.step_error: list[list[float]] = [[] for _ in range(B)]
        self.energy_error = [[0.0] for _ in range(B)]

    def update(self, state, active, t, dt, step_error, energy_error):
        for k, b in enumerate(active.tolist()):
            self.t[b].append(t[k])
            self.dt[b].append(dt[k])
            self.step_error[b].append(step_error[k])
            self.energy_error[b].append(energy_error[k])

    def arrays(self, b: int) -> dict[str, np.ndarray]:
        return {"t": np.array(self.t[b]), "dt": np.array(self.dt[b]),
                "step_error": np.array(self.step_error[b]),
                "energy_error": np.array(self.energy_error[b])}


class Trajectory(Observer):
    """Positions and velocities of every system: exactly ``max_frames`` frames per
    system, evenly spaced in steps with the start and the end included (every step's
    of a run with fewer steps).

    Frames are kept every ``stride`` steps; past ``2 * max_frames`` kept frames every
    other one is dropped and the stride doubles, so memory stays bounded, and
    :meth:`arrays` picks the ``max_frames`` of them."""

    def __init__(self, max_frames: int = 500) -> None:
        self.max_frames = max(2, int(max_frames))

    def start(self, state, t0):
        self.stride, self.count, self.last = 1, 0, 0
        self.t: list[np.ndarray] = []
        self.pos: list[np.ndarray] = []
        self.vel: list[np.ndarray] = []
        self._add(state)

    def _add(self, state: SystemState) -> None:
        self.t.append(state.time.detach().cpu().numpy().reshape(-1).copy())
        self.pos.append(state.pos.detach().cpu().numpy().reshape((-1,) + state.pos.shape[-2:]))
        self.vel.append(state.vel.detach().cpu().numpy().reshape((-1,) + state.pos.shape[-2:]))
        if len(self.t) > 2 * self.max_frames:
            self.t, self.pos, self.vel = self.t[::2], self.pos[::2], self.vel[::2]
            self.stride *= 2

    def update(self, state, active, t, dt, step_error, energy_error):
        self.count += 1
        if self.count % self.stride == 0:
            self._add(state)
            self.last = self.count

    def finish(self, state):
        if self.last != self.count:
            self._add(state)

    def arrays(self, b: int) -> dict[str, np.ndarray]:
        """Frames of system ``b``: ``frame_t (F,)``, ``frame_pos``, ``frame_vel``
        ``(F, N, D)`` with ``F = max_frames`` (fewer when the system took fewer steps);
        frames at one time (after the system stopped) count once."""
        t = np.array([f[b] for f in self.t])
        keep = np.flatnonzero(np.concatenate([[True], np.diff(t) != 0]))
        if len(keep) > self.max_frames:  # evenly spaced, first and last included
            keep = keep[np.round(np.linspace(0, len(keep) - 1, self.max_frames)).astype(int)]
        return {"frame_t": t[keep], "frame_pos": np.stack([self.pos[i][b] for i in keep]),
                "frame_vel": np.stack([self.vel[i][b] for i in keep])}


class Progress(Observer):
    """A tqdm bar over the simulated time of all systems, or over their steps; it
    appears only after :data:`PROGRESS_DELAY` seconds.

    Args:
        t_total, steps_total: what the bar counts (give one).
        bar: an open tqdm bar to advance (by steps) instead of a new one; it is
            left open, for a bar over several runs.
    """

    def __init__(self, t_total: float | None = None, steps_total: int | None = None, *,
                 bar: Any = None) -> None:
        self.total = t_total if t_total is not None else steps_total
        self.by_time = t_total is not None and bar is None
        self.shared = bar

    def start(self, state, t0):
        if self.shared is not None:
            self.bar = self.shared
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, delay=PROGRESS_DELAY,
                        unit="time" if self.by_time else "step",
                        bar_format="{l_bar}{bar}| {n:.4g}/{total:.4g} [{elapsed}<{remaining}]")

    def update(self, state, active, t, dt, step_error, energy_error):
        self.bar.update(float(dt.sum()) if self.by_time else len(active))

    def finish(self, state):
        if self.shared is None:
            self.bar.close()
