"""Observers of the simulation core: what :func:`aits.simulation.simulate` records per step.

The core keeps only per-system totals; an observer sees every step and keeps what
it needs: :class:`EnergyRecord` (time, ``dt`` and energy errors of every step),
:class:`Trajectory` (bounded frames of positions and velocities), :class:`Progress`
(a tqdm bar). Pass ``observers=[...]`` to ``simulate`` (``[]`` records nothing).
"""

from __future__ import annotations

import numpy as np

from aits.state import SystemState

__all__ = ["EnergyRecord", "Observer", "Progress", "Trajectory"]


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
    """Positions and velocities of every system every ``stride`` steps (start and end
    included); halves itself, doubling the stride, past ``2 * max_frames`` frames."""

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
        """Frames of system ``b`` (consecutive frames at one time merged)."""
        t = np.array([f[b] for f in self.t])
        keep = np.concatenate([[True], np.diff(t) != 0])
        return {"frame_t": t[keep], "frame_pos": np.stack([f[b] for f in self.pos])[keep],
                "frame_vel": np.stack([f[b] for f in self.vel])[keep]}


class Progress(Observer):
    """A tqdm bar over the simulated time of all systems (appears after one second)."""

    def __init__(self, t_total: float | None, steps_total: int | None) -> None:
        self.total = t_total if t_total is not None else steps_total
        self.by_time = t_total is not None

    def start(self, state, t0):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, delay=1.0, unit="time" if self.by_time else "step",
                        bar_format="{l_bar}{bar}| {n:.4g}/{total:.4g} [{elapsed}<{remaining}]")

    def update(self, state, active, t, dt, step_error, energy_error):
        self.bar.update(float(dt.sum()) if self.by_time else len(active))

    def finish(self, state):
        self.bar.close()
