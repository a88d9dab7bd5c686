"""``python -m aits.simulate``: run one system forward with a time-step policy.

Examples::

    python -m aits.simulate --scenario binary-e0.9 --policy fixed --dt 1e-3 --orbits 2
    python -m aits.simulate --scenario figure8 --policy aarseth --eta 0.01 --t-end 10 --out out/ --plots
    python -m aits.simulate --scenario binary-e0.9 --policy model --checkpoint runs/demo --orbits 3 \\
        --out out/model --plots --animate --trajectory

Prints a short summary; with ``--out DIR`` writes ``DIR/result.json`` (the keys of
:data:`aits.simulation.RESULT_KEYS` and more), and on request
``DIR/trajectory.npz``, ``DIR/orbits.png``, ``DIR/energy_dt.png`` and
``DIR/animation.mp4`` (``.gif`` without ffmpeg; 2-D runs only).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from aits.checkpoint import CheckpointError
from aits.config import ConfigError, GateConfig, config_file_arguments, resolve_device
from aits.guards import GuardRails
from aits.ics import FIGURE_EIGHT_PERIOD, InitialConditionsError, load_state, save_state
from aits.integrators import INTEGRATORS, Integrator, make_integrator
from aits.jsonio import check_writable_dir, write_json
from aits._optional import require
from aits.trajectory_io import trajectory_arrays, write_hdf5
from aits.units import UNIT_SYSTEMS, get_units
from aits.policies import CLASSICAL, POLICIES, Policy, make_policy
from aits.scenarios import list_scenarios, make_scenario
from aits.simulation import SimulationResult, simulate
from aits.state import SystemState, split, stack

__all__ = ["build_parser", "main", "orbit_period"]

log = logging.getLogger("aits.simulate")


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


def add_system_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared with :mod:`aits.evaluate`: device, dtype, gate, length of the run."""
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where to run (default: auto = cuda when available)")
    parser.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    parser.add_argument("--seed", type=int, default=0, help="seed of random scenarios (default 0)")
    parser.add_argument("--energy-threshold", type=float, default=None,
                        help="energy gate: a step passes when rel_dE < this (default: the "
                             "checkpoint's training threshold, else 2e-4)")
    parser.add_argument("--softening", type=float, default=None,
                        help="Plummer softening (default: the scenario's own, 0 for --ic)")
    parser.add_argument("--G", type=float, default=None,
                        help="gravitational constant (default 1; a named scenario is built in "
                             "those units, velocities times sqrt(G))")
    parser.add_argument("--units", default="nbody", choices=tuple(UNIT_SYSTEMS),
                        help="unit system: sets G and labels results and plots (default "
                             "nbody, G = 1)")
    parser.add_argument("--integrator", default="kdk", choices=tuple(INTEGRATORS),
                        help="kdk (leapfrog), symmetric (time-symmetric adaptive KDK) or ttl "
                             "(logarithmic-Hamiltonian leapfrog) (default: kdk)")
    parser.add_argument("--symmetric-iterations", type=int, default=0, metavar="K",
                        help="symmetric: 0 = the reversible one-evaluation recurrence, K >= 1 = "
                             "the iterated form with K trial steps a step (default 0)")
    parser.add_argument("--max-steps", type=int, default=1_000_000,
                        help="stop (with a warning, keeping the last state) after this many steps")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    parser.add_argument("--config", metavar="FILE",
                        help="TOML file: its shared top-level keys and its [simulate] "
                             "([evaluate] for python -m aits.evaluate) table set options by "
                             "their names (t_end = 10, policy = \"freefall\"); the command "
                             "line overrides it")


def parse_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                    table: str) -> argparse.Namespace:
    """``parser.parse_args`` with the settings of ``--config FILE`` (its shared keys
    and ``[table]``) placed before the command line, which so overrides them."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = config_file_arguments(parser, argv, table) + argv
    except ConfigError as e:
        parser.error(str(e))
    return parser.parse_args(argv)


def add_length_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--t-end`` | ``--orbits`` | ``--steps`` (mutually exclusive)."""
    length = parser.add_mutually_exclusive_group(required=required)
    length.add_argument("--t-end", type=float, help="simulated time to run (> 0)")
    length.add_argument("--orbits", type=float,
                        help="run this many periods (two-body systems and figure8)")
    length.add_argument("--steps", type=int, help="run exactly this many steps (>= 1)")


def check_common(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse invalid values of the shared options with ``parser.error`` (exit 2)."""
    for name in ("t_end", "orbits"):
        v = getattr(args, name, None)
        if v is not None and not (v > 0 and math.isfinite(v)):
            parser.error(f"--{name.replace('_', '-')} must be > 0, got {v!r}")
    if getattr(args, "steps", None) is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps!r}")
    if args.energy_threshold is not None and not (
            args.energy_threshold > 0 and math.isfinite(args.energy_threshold)):
        parser.error(f"--energy-threshold must be > 0, got {args.energy_threshold!r}")
    if args.softening is not None and not (args.softening >= 0 and math.isfinite(args.softening)):
        parser.error(f"--softening must be finite and >= 0, got {args.softening!r}")
    if args.G is not None and not (args.G > 0 and math.isfinite(args.G)):
        parser.error(f"--G must be finite and > 0, got {args.G!r}")
    if args.symmetric_iterations < 0:
        parser.error(f"--symmetric-iterations must be >= 0, got {args.symmetric_iterations!r}")
    if args.symmetric_iterations and args.integrator != "symmetric":
        parser.error("--symmetric-iterations applies to --integrator symmetric only")
    if not 0 <= args.seed < 2**63:
        parser.error(f"--seed must be an integer in [0, 2**63), got {args.seed!r}")
    if args.max_steps < 1:
        parser.error(f"--max-steps must be >= 1, got {args.max_steps!r}")
    try:
        args.device = str(resolve_device(args.device))
    except ConfigError as e:
        parser.error(str(e))
    out = getattr(args, "out", None)
    if out is not None:
        check_output_dir(parser, out)


def check_output_dir(parser: argparse.ArgumentParser, out: Path) -> None:
    """Create ``--out`` and make sure a file can be written in it, before any work."""
    try:
        check_writable_dir(out)
    except OSError as e:
        parser.error(f"--out: {e.strerror if isinstance(e.strerror, str) else e}")


def gate_settings(args: argparse.Namespace, checkpoint_config: dict | None) -> GateConfig:
    """The gate of a run: the checkpoint's training gate (when a model is loaded),
    with ``--energy-threshold`` overriding its threshold."""
    gate = GateConfig.from_mapping(checkpoint_config or {})
    if args.energy_threshold is not None:
        gate = GateConfig(args.energy_threshold, gate.E_lower, gate.E_upper)
    return gate


def build_integrator(args: argparse.Namespace) -> Integrator:
    """The integrator of ``--integrator`` (and ``--symmetric-iterations``)."""
    return make_integrator(args.integrator, symmetric_iterations=args.symmetric_iterations)


def run_failed(prog: str, error: Exception | str) -> int:
    """Reports a run that could not go on (exit status 1)."""
    print(f"{prog}: run failed: {error}", file=sys.stderr)
    return 1


def run_length(
    parser: argparse.ArgumentParser, args: argparse.Namespace, state: SystemState,
    scenario: str | None,
) -> dict[str, float | int]:
    """``{"t_end": ...}`` or ``{"steps": ...}`` for :func:`~aits.simulation.simulate`."""
    if args.steps is not None:
        return {"steps": args.steps}
    if args.orbits is not None:
        try:
            periods = [orbit_period(s, scenario) for s in split(state)]
        except ValueError as e:
            parser.error(str(e))
        t = [args.orbits * p for p in periods]
        return {"t_end": t[0] if len(t) == 1 else t}
    return {"t_end": args.t_end}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m aits.simulate", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    system = p.add_mutually_exclusive_group(required=True)
    system.add_argument("--scenario", help="named initial conditions: " + ", ".join(list_scenarios()))
    system.add_argument("--ic", type=Path, metavar="FILE", nargs="+",
                        help="initial conditions from .npy/.csv/.txt (columns m x y [z] vx vy "
                             "[vz]); a (B, N, 2D+1) .npy or several files run as one batch")
    system.add_argument("--rebound-bin", type=Path, metavar="FILE",
                        help="a REBOUND Simulationarchive / binary file (its last snapshot, or "
                             "--snapshot K); needs the aits[rebound] extra")
    p.add_argument("--snapshot", type=int, default=-1,
                   help="snapshot of --rebound-bin (default -1, the last)")

    p.add_argument("--policy", default="model", choices=POLICIES,
                   help="time-step policy (default: model, which needs --checkpoint)")
    p.add_argument("--checkpoint", type=Path,
                   help="training checkpoint (.pt) or run directory, for --policy model")
    p.add_argument("--dt", type=float, help="step for --policy fixed")
    p.add_argument("--eta", type=float, help="parameter of freefall/collisional/aarseth")
    p.add_argument("--dt-scale", type=float, default=1.0,
                   help="factor on the model policy's dt, its accuracy knob (default 1)")
    add_length_arguments(p)
    add_system_arguments(p)
    guards = p.add_argument_group("guard rails (all off by default)")
    guards.add_argument("--dt-min", type=float, default=0.0, help="smallest allowed step")
    guards.add_argument("--dt-max", type=float, default=math.inf, help="largest allowed step")
    guards.add_argument("--max-growth", type=float, default=math.inf,
                        help="largest ratio of a step to the previous one (> 1)")
    guards.add_argument("--gated", action="store_true",
                        help="reject steps failing the energy gate and retry them smaller")
    guards.add_argument("--shrink", type=float, default=0.5, help="dt factor of a gated retry")
    guards.add_argument("--max-retries", type=int, default=30, help="gated retries of one step")
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, metavar="DIR", help="write DIR/result.json (and more)")
    out.add_argument("--trajectory", action="store_true", help="write DIR/trajectory.npz")
    out.add_argument("--save-final", type=Path, metavar="FILE",
                     help="write the final state as an IC file aits reads (.npy, or a text "
                          "table for other suffixes; a batch needs .npy)")
    out.add_argument("--hdf5", action="store_true",
                     help="also write DIR/trajectory.h5 (aits.trajectory_io layout; aits[hdf5])")
    out.add_argument("--plots", action="store_true",
                     help="write DIR/orbits.png and DIR/energy_dt.png (log axes)")
    out.add_argument("--animate", action="store_true",
                     help="write DIR/animation.mp4 (GIF without ffmpeg); 2-D runs only")
    out.add_argument("--frames", type=int, default=500,
                     help="positions kept for plots/trajectory/animation, at most (default 500)")
    return p


def load_system(
    parser: argparse.ArgumentParser, args: argparse.Namespace, device: torch.device,
    dtype: torch.dtype,
) -> SystemState:
    """The start state of ``--scenario`` or ``--ic`` (several files or a batched ``.npy``
    give a batch); bad names/files end in ``parser.error``."""
    G = gravitational_constant(parser, args)
    try:
        if args.rebound_bin is not None:
            from aits.interop import load_rebound_archive

            state = load_rebound_archive(args.rebound_bin, args.snapshot, dtype=dtype,
                                         device=device)
            changes = {k: v for k, v in (("softening", args.softening), ("G", G)) if v is not None}
            return state.replace(**changes) if changes else state
        if args.scenario is not None:
            return make_scenario(args.scenario, dtype=dtype, device=device, seed=args.seed,
                                 softening=args.softening, G=G)
        states = [load_ic_file(parser, args, path, G, device, dtype) for path in args.ic]
        return states[0] if len(states) == 1 else stack(states)
    except (InitialConditionsError, ValueError, TypeError, IndexError, FileNotFoundError,
            ImportError) as e:
        parser.error(str(e))


def load_ic_file(parser: argparse.ArgumentParser, args: argparse.Namespace, path: Path,
                 G: float | None, device: torch.device, dtype: torch.dtype) -> SystemState:
    """One ``--ic`` file with ``--softening`` and ``G`` (default 1); a path that is not a
    file ends in ``parser.error``; the loaders raise for bad content."""
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        parser.error(f"--ic: {str(path)!r} {what}")
    return load_state(path, softening=args.softening or 0.0, G=1.0 if G is None else G,
                      dtype=dtype, device=device)


def gravitational_constant(parser: argparse.ArgumentParser,
                           args: argparse.Namespace) -> float | None:
    """``--G``, or the G of ``--units`` (both at once is refused); None when neither is set."""
    if args.units == "nbody":
        return args.G
    if args.G is not None:
        parser.error(f"--G and --units {args.units} both set G; give one of them")
    return get_units(args.units).G


def build_policy(
    parser: argparse.ArgumentParser, args: argparse.Namespace, device: torch.device,
    dtype: torch.dtype,
) -> Policy:
    """The policy of ``--policy`` with its parameter; bad values end in ``parser.error``."""
    if args.eta is not None and not args.eta > 0:
        parser.error(f"--eta must be > 0, got {args.eta!r}")
    if args.dt is not None and not args.dt > 0:
        parser.error(f"--dt must be > 0, got {args.dt!r}")
    dt_scale = getattr(args, "dt_scale", 1.0)
    if not (dt_scale > 0 and math.isfinite(dt_scale)):
        parser.error(f"--dt-scale must be finite and > 0, got {dt_scale!r}")
    applies = {"--dt": (args.dt is not None, ("fixed",)),
               "--eta": (args.eta is not None, CLASSICAL),
               "--dt-scale": (dt_scale != 1.0, ("model",)),
               "--checkpoint": (args.checkpoint is not None, ("model",))}
    for flag, (given, policies) in applies.items():
        if given and args.policy not in policies:
            parser.error(f"{flag} does not apply to --policy {args.policy} (it is for "
                         f"{', '.join(policies)}); leave it out")
    try:
        return make_policy(args.policy, dt=args.dt, eta=args.eta, checkpoint=args.checkpoint,
                           device=device, dtype=dtype, dt_scale=dt_scale)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        parser.error(str(e))


def build_guards(parser: argparse.ArgumentParser, args: argparse.Namespace) -> GuardRails:
    try:
        return GuardRails(dt_min=args.dt_min, dt_max=args.dt_max, max_growth=args.max_growth,
                          gated=args.gated, shrink=args.shrink, max_retries=args.max_retries)
    except ValueError as e:
        parser.error(f"guard rails: {e}")


def format_summary(summary: dict) -> str:
    """A few aligned lines for the terminal."""
    rows = [
        ("policy / integrator", f"{summary['policy']} / {summary['integrator']}"),
        ("steps", f"{summary['steps']} ({summary['rejected_steps']} rejected attempts)"),
        ("force evaluations", summary["force_evaluations"]),
        ("t_end", f"{summary['t_end']:.6g} ({summary['stop_reason']})"),
        ("dt mean [min, max]", f"{summary['dt_mean']:.3e} [{summary['dt_min']:.3e}, "
                               f"{summary['dt_max']:.3e}]"),
        ("|dE/E| final / max", f"{summary['energy_error_final']:.3e} / "
                               f"{summary['energy_error_max']:.3e}  (whole run)"),
        ("gate pass rate", f"{summary['gate_pass_rate']:.4f} (rel_dE < "
                           f"{summary['energy_threshold']:g}; worst step "
                           f"{summary['step_error_max']:.3e})"),
        ("momentum / ang. mom.", f"{summary['momentum_error']:.3e} / "
                                 f"{summary['angular_momentum_error']:.3e}"),
        ("wall time", f"{summary['wall_time_s']:.3f} s"),
    ]
    return "\n".join(f"{k:<22} {v}" for k, v in rows)


def format_totals(totals: dict) -> str:
    """The batch totals, a few aligned lines."""
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(totals["stop_reasons"].items()))
    rows = [("systems", f"{totals['systems']} (stopped: {reasons})"),
            ("steps / force evals", f"{totals['steps']} / {totals['force_evaluations']}"),
            ("worst |dE/E| max", f"{totals['energy_error_max']:.3e}  (whole run)"),
            ("wall time", f"{totals['wall_time_s']:.3f} s")]
    return "\n".join(f"{k:<22} {v}" for k, v in rows)


def write_outputs(result: SimulationResult, args: argparse.Namespace, report: dict) -> list[Path]:
    """Write ``result.json`` and the requested files into ``args.out``; returns the paths."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    written = [write_json(out / "result.json", report)]
    if args.trajectory or args.hdf5:
        arrays = trajectory_arrays(result)
        if args.trajectory:
            path = out / "trajectory.npz"
            np.savez_compressed(path, **arrays, G=result.state.G,
                                softening=result.state.softening, units=args.units,
                                policy=result.policy, integrator=result.integrator)
            written.append(path)
        if args.hdf5:
            written.append(write_hdf5(
                out / "trajectory.h5", **arrays, G=result.state.G,
                softening=result.state.softening, units=args.units, policy=result.policy,
                integrator=result.integrator))
    if args.plots or args.animate:
        from aits import plots

        if args.plots:
            written.append(plots.plot_orbits(result, out / "orbits.png", units=args.units))
            written.append(plots.plot_energy_dt(result, out / "energy_dt.png", units=args.units))
        if args.animate:
            if result.state.dim == 2:
                written.append(plots.animate(result, out / "animation"))
            else:
                log.warning("--animate: only 2-D runs are animated; this one is %d-D",
                            result.state.dim)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_arguments(parser, argv, "simulate")
    setup_logging(args.quiet)
    check_common(parser, args)
    if (args.trajectory or args.hdf5 or args.plots or args.animate) and args.out is None:
        parser.error("--trajectory/--hdf5/--plots/--animate need --out DIR")
    if args.hdf5:
        try:
            require("h5py", "hdf5", "--hdf5")
        except ImportError as e:
            parser.error(str(e))
    if args.frames < 2:
        parser.error(f"--frames must be >= 2, got {args.frames!r}")
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    state = load_system(parser, args, device, dtype)
    if state.is_batched and (args.trajectory or args.hdf5 or args.plots or args.animate):
        parser.error(f"--trajectory/--plots/--animate need one system; this run is a batch of "
                     f"{state.batch_size} (result.json lists every system)")
    policy = build_policy(parser, args, device, dtype)
    gate_cfg = gate_settings(args, getattr(policy, "train_config", None))
    guards = build_guards(parser, args)
    length = run_length(parser, args, state, args.scenario)
    try:
        result = simulate(state, policy, integrator=build_integrator(args), guards=guards,
                          gate=gate_cfg.gate(), max_steps=args.max_steps,
                          max_frames=args.frames, progress=not args.quiet, **length)
    except ValueError as e:
        return run_failed(parser.prog, e)
    settings = dict(
        scenario=args.scenario, ic=None if args.ic is None else [str(p) for p in args.ic],
        dt=args.dt, eta=args.eta, dt_scale=args.dt_scale,
        checkpoint=None if args.checkpoint is None else str(args.checkpoint),
        device=str(device), dtype=args.dtype, G=state.G, softening=state.softening,
        units=get_units(args.units).to_dict(),
        rebound_bin=None if args.rebound_bin is None else str(args.rebound_bin),
        guards=dict(dt_min=guards.dt_min, dt_max=guards.dt_max, max_growth=guards.max_growth,
                    gated=guards.gated, shrink=guards.shrink, max_retries=guards.max_retries),
    )
    systems = [result.summary(i) for i in range(len(result.systems))]
    report = {**(systems[0] if len(systems) == 1 else {}), **settings,
              "systems": systems, "totals": result.totals()}
    print(format_summary(systems[0]) if len(systems) == 1 else format_totals(result.totals()))
    if args.out is not None:
        for path in write_outputs(result, args, report):
            print(f"wrote {path}")
    if args.save_final is not None:
        try:
            print(f"wrote {save_state(result.state, args.save_final)}")
        except (OSError, ValueError) as e:
            return run_failed(parser.prog, f"--save-final: cannot write {str(args.save_final)!r}: "
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
    return 0


#: Stop reasons of a system the run lost.
LOST = ("bad-dt", "non-finite")


if __name__ == "__main__":
    sys.exit(main())
