"""``python -m aits.simulate``: run one system forward with a time-step policy.

Examples::

    python -m aits.simulate --scenario binary-e0.9 --policy fixed --dt 1e-3 --orbits 2
    python -m aits.simulate --scenario figure8 --policy aarseth --eta 0.01 --t-end 10 --out out/ --plots
    python -m aits.simulate --scenario binary-e0.9 --policy model --checkpoint runs/demo --orbits 3 \\
        --out out/model --plots --animate --trajectory

Prints a short summary (``--quiet``: nothing but warnings and errors); with ``--out
DIR`` writes ``DIR/result.json`` (the keys of :data:`aits.simulation.RESULT_KEYS` and
more, the states at ``--output-times`` among them), and on request
``DIR/trajectory.npz``, ``DIR/orbits.png``, ``DIR/energy_dt.png`` and
``DIR/animation.mp4`` (``.gif`` without ffmpeg; a 3-D run as its ``--projection``).

Exit status: 0 done, 1 a system was lost (non-finite state or bad ``dt``), 2 bad
input, 3 the run diverged (a step still failing the gate after ``--max-retries``,
or a whole-run ``|dE/E|`` past ``--fail-above``; ``--allow-divergence`` runs on and
exits 0).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from aits.checkpoint import CheckpointError
from aits.config import ConfigError, RunSettings, SimulateConfig, resolve_device
from aits.guards import GuardRails
from aits.ics import FIGURE_EIGHT_PERIOD, InitialConditionsError, load_state, save_state
from aits.integrators import Integrator, make_integrator
from aits.jsonio import check_writable_dir, write_json
from aits._optional import require
from aits.trajectory_io import trajectory_arrays, write_hdf5
from aits.units import get_units
from aits.policies import Policy, make_policy
from aits.scenarios import make_scenario
from aits.simulation import SimulationResult, simulate
from aits.state import SystemState, split, stack
from aits.textfmt import number

__all__ = ["DIVERGED", "build_parser", "main", "orbit_period", "output_times"]


def orbit_period(state: SystemState, scenario: str | None = None) -> float:
    """The period ``--orbits`` counts in: the Kepler period ``2 pi sqrt(a^3 / (G M))``
    of a bound two-body system (``a = -G m1 m2 / (2 E)``), or the figure-eight's period.

    Raises:
        ValueError: neither a two-body system nor the figure-eight, or an unbound pair.
    """
    if scenario == "figure8":
        return FIGURE_EIGHT_PERIOD
    if state.n_bodies != 2 or state.is_batched:
        raise ValueError(
            "--orbits needs a two-body (Kepler) system or the figure8 scenario; use --t-end"
        )
    m1, m2 = (float(m) for m in state.mass)
    E = float(state.centered().total_energy())
    if not E < 0:
        raise ValueError(f"--orbits needs a bound two-body system, this one has energy {E:.3g} >= 0")
    a = -state.G * m1 * m2 / (2 * E)
    return 2 * math.pi * math.sqrt(a**3 / (state.G * (m1 + m2)))


def setup_logging(quiet: bool) -> None:
    """aits messages at INFO (WARNING when ``quiet``); other libraries at WARNING."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aits").setLevel(logging.WARNING if quiet else logging.INFO)


def parse_settings(cls: type[RunSettings], parser: argparse.ArgumentParser,
                   argv: Sequence[str] | None) -> RunSettings:
    """The validated settings of ``argv`` with logging set up, ``device`` resolved and
    the output directory checked writable, before any work; bad input ends in
    ``parser.error`` (exit 2)."""
    cfg = cls.from_command_line(parser, argv)
    setup_logging(cfg.quiet)
    try:
        cfg.device = str(resolve_device(cfg.device))
    except ConfigError as e:
        parser.error(str(e))
    if cfg.out is not None:
        try:
            check_writable_dir(Path(cfg.out))
        except OSError as e:
            parser.error(f"--out: {e.strerror if isinstance(e.strerror, str) else e}")
    return cfg


def build_integrator(cfg: RunSettings, name: str) -> Integrator:
    """The integrator ``name`` with ``cfg.symmetric_iterations``."""
    return make_integrator(name, symmetric_iterations=cfg.symmetric_iterations)


def run_failed(prog: str, error: Exception | str) -> int:
    """Reports a run that could not go on (exit status 1)."""
    print(f"{prog}: run failed: {error}", file=sys.stderr)
    return 1


def run_length(
    parser: argparse.ArgumentParser, length: Mapping[str, float | int | None],
    state: SystemState, scenario: str | None,
) -> dict[str, float | int]:
    """``{"t_end": ...}`` or ``{"steps": ...}`` for :func:`~aits.simulation.simulate`
    from the one of ``t_end``/``orbits``/``steps`` that ``length`` sets (periods of
    :func:`orbit_period` become a time, one per system of a batch)."""
    if length.get("steps") is not None:
        return {"steps": length["steps"]}
    if length.get("orbits") is not None:
        try:
            periods = [orbit_period(s, scenario) for s in split(state)]
        except ValueError as e:
            parser.error(str(e))
        t = [length["orbits"] * p for p in periods]
        return {"t_end": t[0] if len(t) == 1 else t}
    return {"t_end": length["t_end"]}


def cli_length(cfg: RunSettings) -> dict[str, float | int | None]:
    """The run length the command line gave: ``t_end``, ``orbits`` and ``steps``."""
    return {"t_end": cfg.t_end, "orbits": cfg.orbits, "steps": cfg.steps}


def output_times(cfg: SimulateConfig, length: dict) -> list[float] | None:
    """The times of ``--output-times``, or ``0, DT, 2 DT, ...`` up to the (longest)
    ``t_end`` for ``--output-every DT``; ``None`` when neither is given."""
    if cfg.output_times is not None:
        return list(cfg.output_times)
    if cfg.output_every is None:
        return None
    t_end = length["t_end"]
    longest = max(t_end) if isinstance(t_end, list) else t_end
    count = math.floor(longest / cfg.output_every * (1 + 1e-12))
    return [k * cfg.output_every for k in range(count + 1)]


def build_parser() -> argparse.ArgumentParser:
    return SimulateConfig.build_parser(prog="python -m aits.simulate", description=__doc__,
                                       formatter_class=argparse.RawDescriptionHelpFormatter)


def load_system(
    parser: argparse.ArgumentParser, cfg: SimulateConfig, device: torch.device,
    dtype: torch.dtype,
) -> SystemState:
    """The start state of ``--scenario``, ``--ic`` (several files or a batched ``.npy``
    give a batch) or ``--rebound-bin``; bad names/files end in ``parser.error``."""
    G = cfg.gravitational_constant
    try:
        if cfg.rebound_bin is not None:
            from aits.interop import load_rebound_archive

            state = load_rebound_archive(Path(cfg.rebound_bin), cfg.snapshot, dtype=dtype,
                                         device=device)
            changes = {k: v for k, v in (("softening", cfg.softening), ("G", G)) if v is not None}
            return state.replace(**changes) if changes else state
        if cfg.scenario is not None:
            return make_scenario(cfg.scenario, dtype=dtype, device=device, seed=cfg.seed,
                                 softening=cfg.softening, G=G)
        states = [load_ic_file(parser, cfg, Path(path), device, dtype) for path in cfg.ic]
        return states[0] if len(states) == 1 else stack(states)
    except (InitialConditionsError, ValueError, TypeError, IndexError, FileNotFoundError,
            ImportError) as e:
        parser.error(str(e))


def load_ic_file(parser: argparse.ArgumentParser, cfg: RunSettings, path: Path,
                 device: torch.device, dtype: torch.dtype) -> SystemState:
    """One ``--ic`` file with ``cfg``'s softening (default 0) and G (default 1); a path
    that is not a file ends in ``parser.error``; the loaders raise for bad content."""
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        parser.error(f"--ic: {str(path)!r} {what}")
    return load_state(path, softening=cfg.softening or 0.0, G=cfg.physics.G, dtype=dtype,
                      device=device)


def build_policy(
    parser: argparse.ArgumentParser, cfg: SimulateConfig, device: torch.device,
    dtype: torch.dtype,
) -> Policy:
    """The policy of ``--policy`` with its parameter; a checkpoint that cannot be
    loaded ends in ``parser.error``."""
    try:
        return make_policy(cfg.policy, dt=cfg.dt, eta=cfg.eta, checkpoint=cfg.checkpoint,
                           device=device, dtype=dtype, dt_scale=cfg.dt_scale)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        parser.error(str(e))


def build_guards(parser: argparse.ArgumentParser, cfg: SimulateConfig) -> GuardRails:
    try:
        return GuardRails(dt_min=cfg.dt_min, dt_max=cfg.dt_max, max_growth=cfg.max_growth,
                          gated=cfg.gated, shrink=cfg.shrink, max_retries=cfg.max_retries)
    except ValueError as e:
        parser.error(f"guard rails: {e}")


def format_summary(summary: dict) -> str:
    """A few aligned lines for the terminal."""
    status = summary["status"]
    if status == "diverged":
        status = (f"DIVERGED at t={summary['diverged_time']:.6g}, step "
                  f"{summary['diverged_step']}: {summary['divergence']}")
    rows = [
        ("status", status),
        ("policy / integrator", f"{summary['policy']} / {summary['integrator']}"),
        ("steps", f"{summary['steps']} ({summary['rejected_steps']} rejected attempts)"),
        ("force evaluations", summary["force_evaluations"]),
        ("t_end", f"{number(summary['t_end'], '.6g')} ({summary['stop_reason']})"),
        ("dt mean [min, max]", f"{number(summary['dt_mean'], '.3e')} "
                               f"[{number(summary['dt_min'], '.3e')}, "
                               f"{number(summary['dt_max'], '.3e')}]; last "
                               f"{number(summary['dt_last'], '.3e')}"),
        ("|dE/E| final / max", f"{number(summary['energy_error_final'], '.3e')} / "
                               f"{number(summary['energy_error_max'], '.3e')}  (whole run)"),
        ("gate pass rate", f"{number(summary['gate_pass_rate'], '.4f')} (rel_dE < "
                           f"{summary['energy_threshold']:g}; worst step "
                           f"{number(summary['step_error_max'], '.3e')})"),
        ("momentum / ang. mom.", f"{number(summary['momentum_error'], '.3e')} / "
                                 f"{number(summary['angular_momentum_error'], '.3e')}"),
        ("wall time", f"{summary['wall_time_s']:.3f} s"),
    ]
    if "outputs" in summary:
        rows.append(("output times", f"{len(summary['outputs']['t'])} states recorded"))
    return "\n".join(f"{k:<22} {v}" for k, v in rows)


def format_totals(totals: dict) -> str:
    """The batch totals, a few aligned lines."""
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(totals["stop_reasons"].items()))
    rows = [("systems", f"{totals['systems']} (stopped: {reasons}; diverged: "
                        f"{totals['diverged']})"),
            ("steps / force evals", f"{totals['steps']} / {totals['force_evaluations']}"),
            ("worst |dE/E| max", f"{number(totals['energy_error_max'], '.3e')}  (whole run)"),
            ("wall time", f"{totals['wall_time_s']:.3f} s")]
    return "\n".join(f"{k:<22} {v}" for k, v in rows)


def write_outputs(result: SimulationResult, cfg: SimulateConfig, report: dict) -> list[Path]:
    """Write ``result.json`` and the requested files into ``cfg.out``; returns the paths."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    written = [write_json(out / "result.json", report)]
    if cfg.trajectory or cfg.hdf5:
        arrays = trajectory_arrays(result)
        if cfg.trajectory:
            path = out / "trajectory.npz"
            outputs = {} if result.output_t is None else dict(
                output_t=result.output_t, output_pos=result.output_pos,
                output_vel=result.output_vel, output_energy_error=result.output_energy_error)
            np.savez_compressed(path, **arrays, **outputs, landing_steps=result.landing_steps,
                                G=result.state.G, softening=result.state.softening,
                                units=cfg.units, policy=result.policy,
                                integrator=result.integrator)
            written.append(path)
        if cfg.hdf5:
            written.append(write_hdf5(
                out / "trajectory.h5", **arrays, G=result.state.G,
                softening=result.state.softening, units=cfg.units, policy=result.policy,
                integrator=result.integrator))
    if cfg.plots or cfg.animate:
        from aits import plots

        if cfg.plots:
            written.append(plots.plot_orbits(result, out / "orbits.png", units=cfg.units,
                                             projection=cfg.projection))
            written.append(plots.plot_energy_dt(result, out / "energy_dt.png", units=cfg.units))
        if cfg.animate:
            written.append(plots.animate(result, out / "animation", projection=cfg.projection,
                                         progress=not cfg.quiet))
    return written


def report_divergence(prog: str, result: SimulationResult, allowed: bool) -> None:
    """The warning line of a run in which a system diverged (stderr)."""
    diverged = [(i, r) for i, r in enumerate(result.systems) if r.diverged]
    i, r = diverged[0]
    batch = len(result.systems) > 1
    where = f"system {i} " if batch else ""
    count = f" ({len(diverged)} of {len(result.systems)} systems diverged)" if batch else ""
    then = ("it ran on (--allow-divergence)" if allowed else
            "it stopped there; exit status 3 (--allow-divergence runs on)")
    print(f"{prog}: warning: {where}{r.divergence_note}{count}; {then}; result.json has "
          "status 'diverged'", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    cfg = parse_settings(SimulateConfig, parser, argv)
    if cfg.hdf5:
        try:
            require("h5py", "hdf5", "--hdf5")
        except ImportError as e:
            parser.error(str(e))
    device, dtype = torch.device(cfg.device), getattr(torch, cfg.dtype)
    state = load_system(parser, cfg, device, dtype)
    if cfg.projection != "xy" and state.dim == 2:
        parser.error(f"--projection {cfg.projection} needs a 3-D run; this one is 2-D")
    if state.is_batched and cfg.files_requested:
        parser.error(f"--trajectory/--plots/--animate need one system; this run is a batch of "
                     f"{state.batch_size} (result.json lists every system)")
    policy = build_policy(parser, cfg, device, dtype)
    gate_cfg = cfg.gate_over(getattr(policy, "train_config", None))
    guards = build_guards(parser, cfg)
    length = run_length(parser, cli_length(cfg), state, cfg.scenario)
    times = output_times(cfg, length)
    try:
        result = simulate(state, policy, integrator=build_integrator(cfg, cfg.integrator),
                          guards=guards, gate=gate_cfg.gate(), max_steps=cfg.max_steps,
                          max_frames=cfg.frames, progress=not cfg.quiet,
                          fail_above=cfg.fail_above, stop_diverged=not cfg.allow_divergence,
                          output_times=times, **length)
    except ValueError as e:
        return run_failed(parser.prog, e)
    settings = dict(
        scenario=cfg.scenario, ic=cfg.ic, dt=cfg.dt, eta=cfg.eta, dt_scale=cfg.dt_scale,
        checkpoint=cfg.checkpoint, device=str(device), dtype=cfg.dtype, G=state.G,
        softening=state.softening, units=get_units(cfg.units).to_dict(),
        rebound_bin=cfg.rebound_bin, fail_above=cfg.fail_above,
        allow_divergence=cfg.allow_divergence, output_times=times,
        guards=dict(dt_min=guards.dt_min, dt_max=guards.dt_max, max_growth=guards.max_growth,
                    gated=guards.gated, shrink=guards.shrink, max_retries=guards.max_retries),
    )
    systems = [result.summary(i) for i in range(len(result.systems))]
    totals = result.totals()
    report = {**(systems[0] if len(systems) == 1 else {}), "status": totals["status"],
              **settings, "systems": systems, "totals": totals}
    say = (lambda text: None) if cfg.quiet else print
    say(format_summary(systems[0]) if len(systems) == 1 else format_totals(totals))
    if cfg.out is not None:
        for path in write_outputs(result, cfg, report):
            say(f"wrote {path}")
    if cfg.save_final is not None:
        try:
            say(f"wrote {save_state(result.state, cfg.save_final)}")
        except (OSError, ValueError) as e:
            return run_failed(parser.prog, f"--save-final: cannot write {cfg.save_final!r}: "
                                           f"{e}")
    lost = [(i, r) for i, r in enumerate(result.systems) if r.stop_reason in LOST]
    if lost:
        i, r = lost[0]
        why = ("the policy proposed a dt that is not finite and > 0"
               if r.stop_reason == "bad-dt" else "the state became non-finite")
        return run_failed(parser.prog, f"policy {result.policy!r}, system {i}: {why} at "
                                       f"t={r.stop_time:.6g} (step {r.steps}); "
                                       f"{len(lost)} of {len(result.systems)} systems lost; a "
                                       "guard rail (--dt-min/--dt-max) can bound the step")
    if totals["diverged"]:
        report_divergence(parser.prog, result, cfg.allow_divergence)
        if not cfg.allow_divergence:
            return DIVERGED
    return 0


#: Stop reasons of a system the run lost.
LOST = ("bad-dt", "non-finite")
#: The exit status of a run that diverged.
DIVERGED = 3


if __name__ == "__main__":
    sys.exit(main())
