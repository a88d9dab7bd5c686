"""Figures of simulation runs (matplotlib, drawn off-screen with the Agg canvas).

* :func:`plot_orbits` — the bodies' paths (first two coordinates).
* :func:`plot_energy_dt` — whole-run ``|dE/E|``, per-step ``rel_dE`` and ``dt``
  against time, log y axes.
* :func:`animate` — a 2-D animation: MP4 when ``ffmpeg`` is on the PATH, GIF otherwise.
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

from aits.simulation import SimulationResult
from aits.units import UnitSystem, axis_label

__all__ = ["animate", "plot_comparison", "plot_cost_accuracy", "plot_energy_dt", "plot_orbits"]


def _figure(**kw) -> Figure:
    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


def _positive(x: np.ndarray) -> np.ndarray:
    """Zeros and non-finite values masked out for a log axis."""
    return np.where(np.isfinite(x) & (x > 0), x, np.nan)


def plot_orbits(result: SimulationResult, path: str | Path, title: str = "",
                units: str | UnitSystem | None = None) -> Path:
    """Paths of every body in the x-y plane; returns ``path``."""
    fig = _figure(figsize=(5, 5))
    ax = fig.add_subplot()
    pos = result.frame_pos  # (F, N, D)
    for i in range(pos.shape[1]):
        ax.plot(pos[:, i, 0], pos[:, i, 1], lw=0.8)
    ax.plot(pos[-1, :, 0], pos[-1, :, 1], "k.", ms=4)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel(axis_label("x", "length", units))
    ax.set_ylabel(axis_label("y", "length", units))
    ax.set_title(title or f"orbits ({result.policy}, {result.steps} steps)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_energy_dt(result: SimulationResult, path: str | Path, title: str = "",
                   units: str | UnitSystem | None = None) -> Path:
    """Two panels against time: whole-run ``|dE/E|`` and per-step ``rel_dE`` (with
    the gate threshold), and the accepted ``dt``; log y axes. Returns ``path``."""
    fig = _figure(figsize=(7, 6))
    ax_e, ax_dt = fig.subplots(2, 1, sharex=True)
    ax_e.plot(result.t, _positive(result.energy_error), lw=0.9, label="|E(t) - E(0)| / |E(0)| (whole run)")
    ax_e.plot(result.t[1:], _positive(result.step_error), lw=0.6, alpha=0.7, label="rel_dE of each step")
    ax_e.axhline(result.threshold, color="k", ls="--", lw=0.8, label="gate threshold")
    ax_e.set_yscale("log")
    ax_e.set_ylabel("relative energy error")
    ax_e.legend(fontsize=8)
    ax_dt.plot(result.t[1:], _positive(result.dt), lw=0.9)
    ax_dt.set_yscale("log")
    ax_dt.set_ylabel(axis_label("dt", "time", units))
    ax_dt.set_xlabel(axis_label("t", "time", units))
    ax_e.set_title(title or f"{result.policy}: {result.steps} steps, "
                            f"{result.force_evaluations} force evaluations")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def animate(result: SimulationResult, stem: str | Path, max_frames: int = 120, fps: int = 20) -> Path:
    """Animate a 2-D run: writes ``stem.mp4`` when ffmpeg exists, else ``stem.gif``;
    returns the file written.

    Raises:
        ValueError: the run is not 2-D.
    """
    pos = result.frame_pos
    if pos.shape[-1] != 2:
        raise ValueError(f"animate needs a 2-D run, this one is {pos.shape[-1]}-D")
    idx = np.unique(np.linspace(0, len(pos) - 1, min(max_frames, len(pos))).astype(int))
    fig = _figure(figsize=(4, 4))
    ax = fig.add_subplot()
    lo, hi = pos[..., :2].min((0, 1)), pos[..., :2].max((0, 1))
    pad = 0.05 * float(max(hi - lo)) + 1e-12
    ax.set_xlim(lo[0] - pad, hi[0] + pad)
    ax.set_ylim(lo[1] - pad, hi[1] + pad)
    ax.set_aspect("equal")
    trails = [ax.plot([], [], lw=0.7)[0] for _ in range(pos.shape[1])]
    dots = ax.plot([], [], "k.", ms=6)[0]
    label = ax.set_title("")

    def draw(k: int):
        f = idx[k]
        for i, line in enumerate(trails):
            line.set_data(pos[: f + 1, i, 0], pos[: f + 1, i, 1])
        dots.set_data(pos[f, :, 0], pos[f, :, 1])
        label.set_text(f"t = {result.frame_t[f]:.3f}")
        return [*trails, dots, label]

    anim = FuncAnimation(fig, draw, frames=len(idx), blit=False)
    if shutil.which("ffmpeg"):
        out, writer = Path(stem).with_suffix(".mp4"), FFMpegWriter(fps=fps)
    else:
        out, writer = Path(stem).with_suffix(".gif"), PillowWriter(fps=fps)
    anim.save(out, writer=writer, dpi=64)
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
        ax.legend(fontsize=7)
    axes[-1].set_xlabel(axis_label("t", "time", units))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
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
        ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    axes[-1].set_xlabel("force evaluations")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return Path(path)
