"""Figures of simulation runs (matplotlib, drawn off-screen with the Agg canvas).

* :func:`plot_orbits` — the bodies' paths (a 3-D run projected on x-y or x-z).
* :func:`plot_energy_dt` — whole-run ``|dE/E|``, per-step ``rel_dE`` and ``dt``
  against time, log y axes (the steps shortened to land on a time left out of ``dt``).
* :func:`animate` — an animation (a 3-D run projected): MP4 when ``ffmpeg`` is on
  the PATH, GIF otherwise.

Legends sit outside the axes, right of the data, so they never cover it.
* :func:`plot_comparison` — ``|dE/E|`` against time for several policies, one
  panel per scenario (``python -m aits.evaluate``).
* :func:`plot_cost_accuracy` — force evaluations against whole-run error, a line
  per policy and integrator, one log-log panel per system.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.animation import FFMpegWriter, FuncAnimation, PillowWriter
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from aits.observers import PROGRESS_DELAY
from aits.simulation import SimulationResult
from aits.textfmt import number
from aits.units import UnitSystem, axis_label

__all__ = ["PROJECTIONS", "animate", "plot_comparison", "plot_cost_accuracy", "plot_energy_dt",
           "plot_orbits"]

#: The planes a run can be drawn in: name -> the two coordinates.
PROJECTIONS = {"xy": (0, 1), "xz": (0, 2)}


def _figure(**kw) -> Figure:
    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


def _positive(x: np.ndarray) -> np.ndarray:
    """Zeros and non-finite values masked out for a log axis."""
    return np.where(np.isfinite(x) & (x > 0), x, np.nan)


def _outside_legend(ax, **kw) -> None:
    """The axes' legend right of them, clear of the data (save with ``bbox_inches="tight"``)."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kw)


def _plane(pos: np.ndarray, projection: str) -> tuple[int, int]:
    """The coordinates of ``projection`` for positions ``(F, N, D)``.

    Raises:
        ValueError: an unknown projection, or ``xz`` of a 2-D run.
    """
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {', '.join(PROJECTIONS)}, got "
                         f"{projection!r}")
    axes = PROJECTIONS[projection]
    if max(axes) >= pos.shape[-1]:
        raise ValueError(f"projection {projection!r} needs a 3-D run, this one is "
                         f"{pos.shape[-1]}-D")
    return axes


def plot_orbits(result: SimulationResult, path: str | Path, title: str = "",
                units: str | UnitSystem | None = None, projection: str = "xy") -> Path:
    """Paths of every body in the ``projection`` plane (``xy`` or ``xz``); returns ``path``."""
    pos = result.frame_pos  # (F, N, D)
    a, b = _plane(pos, projection)
    fig = _figure(figsize=(5, 5))
    ax = fig.add_subplot()
    for i in range(pos.shape[1]):
        ax.plot(pos[:, i, a], pos[:, i, b], lw=0.8)
    ax.plot(pos[-1, :, a], pos[-1, :, b], "k.", ms=4)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel(axis_label(projection[0], "length", units))
    ax.set_ylabel(axis_label(projection[1], "length", units))
    ax.set_title(title or f"orbits ({result.policy}, {result.steps} steps)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_energy_dt(result: SimulationResult, path: str | Path, title: str = "",
                   units: str | UnitSystem | None = None) -> Path:
    """Two panels against time: whole-run ``|dE/E|`` and per-step ``rel_dE`` (with
    the gate threshold), and the accepted ``dt`` (the policy's own steps: those
    shortened to land on ``t_end`` or an output time are left out); log y axes.
    Returns ``path``."""
    fig = _figure(figsize=(7, 6))
    ax_e, ax_dt = fig.subplots(2, 1, sharex=True)
    ax_e.plot(result.t, _positive(result.energy_error), lw=0.9,
              label="|E(t) - E(0)| / |E(0)|\n(whole run)")
    ax_e.plot(result.t[1:], _positive(result.step_error), lw=0.6, alpha=0.7,
              label="rel_dE of each step")
    ax_e.axhline(result.threshold, color="k", ls="--", lw=0.8, label="gate threshold")
    ax_e.set_yscale("log")
    ax_e.set_ylabel("relative energy error")
    _outside_legend(ax_e, fontsize=8)
    dt = _positive(result.dt)
    dt[result.landing_steps] = np.nan
    ax_dt.plot(result.t[1:], dt, lw=0.9)
    ax_dt.set_yscale("log")
    ax_dt.set_ylabel(axis_label("dt", "time", units))
    ax_dt.set_xlabel(axis_label("t", "time", units))
    ax_e.set_title(title or f"{result.policy}: {result.steps} steps, "
                            f"{result.force_evaluations} force evaluations")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return Path(path)


def animate(result: SimulationResult, stem: str | Path, max_frames: int = 120, fps: int = 20,
            projection: str = "xy", size: int = 600, progress: bool = False) -> Path:
    """Animate a run in the ``projection`` plane (``xy``, or ``xz`` of a 3-D run):
    writes ``stem.mp4`` when ffmpeg exists, else ``stem.gif``; returns the file written.

    Args:
        max_frames: frames of the animation at most (taken evenly from the run's).
        size: width and height of a frame in pixels.
        progress: a progress bar while rendering (after :data:`~aits.observers.PROGRESS_DELAY`).

    Raises:
        ValueError: an unknown projection, or ``xz`` of a 2-D run.
    """
    pos = result.frame_pos
    a, b = _plane(pos, projection)
    idx = np.unique(np.linspace(0, len(pos) - 1, min(max_frames, len(pos))).astype(int))
    dpi = 100
    fig = _figure(figsize=(size / dpi, size / dpi))
    ax = fig.add_subplot()
    plane = pos[..., [a, b]]
    lo, hi = plane.min((0, 1)), plane.max((0, 1))
    # a square view around the data, so the equal-aspect axes fill the square frame
    half = 0.525 * float(max(hi - lo)) + 1e-12
    mid = (lo + hi) / 2
    ax.set_xlim(mid[0] - half, mid[0] + half)
    ax.set_ylim(mid[1] - half, mid[1] + half)
    ax.set_aspect("equal")
    ax.set_xlabel(projection[0], labelpad=1)
    ax.set_ylabel(projection[1], labelpad=1)
    trails = [ax.plot([], [], lw=0.8)[0] for _ in range(pos.shape[1])]
    dots = ax.plot([], [], "k.", ms=6)[0]
    label = ax.set_title("t = 0")
    fig.tight_layout(pad=0.3)  # trimmed margins (the frame size stays fixed)

    def draw(k: int):
        f = idx[k]
        for i, line in enumerate(trails):
            line.set_data(plane[: f + 1, i, 0], plane[: f + 1, i, 1])
        dots.set_data(plane[f, :, 0], plane[f, :, 1])
        label.set_text(f"t = {number(result.frame_t[f], '.4g')}")
        return [*trails, dots, label]

    anim = FuncAnimation(fig, draw, frames=len(idx), blit=False)
    if shutil.which("ffmpeg"):
        out, writer = Path(stem).with_suffix(".mp4"), FFMpegWriter(fps=fps)
    else:
        out, writer = Path(stem).with_suffix(".gif"), PillowWriter(fps=fps)
    from tqdm.auto import tqdm

    with tqdm(total=len(idx), desc=f"rendering {out.name}", unit="frame",
              delay=PROGRESS_DELAY, disable=not progress) as bar:
        anim.save(out, writer=writer, dpi=dpi,
                  progress_callback=lambda i, n: bar.update(1))
    return out


def plot_comparison(
    runs: Mapping[str, Mapping[str, SimulationResult]], path: str | Path,
    targets: Mapping[str, float] | None = None,
    units: str | UnitSystem | None = None,
) -> Path:
    """One panel per scenario: whole-run ``|dE/E|`` against time for each policy
    (legend: policy and force evaluations), the matched target as a dashed line.

    Args:
        runs: ``{scenario: {policy label: result}}``.
        targets: ``{scenario: target max |dE/E|}`` (optional).
        units: the unit system the time axis is labelled in.
    """
    names: Sequence[str] = list(runs)
    fig = _figure(figsize=(6.5, 3.2 * len(names)))
    axes = fig.subplots(len(names), 1, squeeze=False)[:, 0]
    for ax, scenario in zip(axes, names):
        for label, res in runs[scenario].items():
            ax.plot(res.t, _positive(res.energy_error), lw=0.9,
                    label=f"{label} ({res.force_evaluations} force evals)")
        if targets and scenario in targets:
            ax.axhline(targets[scenario], color="k", ls="--", lw=0.8, label="target")
        ax.set_yscale("log")
        ax.set_ylabel("|E(t) - E(0)| / |E(0)|")
        ax.set_title(scenario)
        _outside_legend(ax, fontsize=7)
    axes[-1].set_xlabel(axis_label("t", "time", units))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return Path(path)


def plot_cost_accuracy(
    curves: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]], path: str | Path,
    targets: Sequence[float | None] = (), error_label: str = "max |dE/E| (whole run)",
) -> Path:
    """One log-log panel per system: force evaluations against the run's error for
    every run of every tuning search, a line per ``policy/integrator`` (sorted by
    cost), the targets as dashed lines.

    Args:
        curves: ``{system: {label: [(force evaluations, error), ...]}}``.
        targets: the tolerances tuned to (``None`` entries skipped).
    """
    names = list(curves)
    fig = _figure(figsize=(6.5, 3.4 * len(names)))
    axes = fig.subplots(len(names), 1, squeeze=False)[:, 0]
    for ax, system in zip(axes, names):
        for label, points in curves[system].items():
            pts = sorted((c, e) for c, e in points if c > 0 and math.isfinite(e) and e > 0)
            if pts:
                ax.plot(*zip(*pts), marker=".", lw=0.9, ms=4, label=label,
                        ls="--" if label.endswith("/ttl") else "-")
        for t in targets:
            if t is not None:
                ax.axhline(t, color="k", ls=":", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel(error_label)
        ax.set_title(system)
        if ax.get_legend_handles_labels()[0]:  # runs that all diverged draw nothing
            ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    axes[-1].set_xlabel("force evaluations")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return Path(path)
