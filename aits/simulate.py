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
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from aits.checkpoint import CheckpointError
from aits.config import ConfigError, config_file_arguments
from aits.gate import DEFAULT_THRESHOLD, EnergyGate
from aits.guards import GuardRails
from aits.ics import FIGURE_EIGHT_PERIOD, InitialConditionsError, load_state
from aits.policies import POLICIES, Policy, make_policy
from aits.scenarios import list_scenarios, make_scenario
from aits.simulation import SimulationError, SimulationResult, json_safe, simulate
from aits.state import SystemState

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
    parser.add_argument("--energy-threshold", type=float, default=DEFAULT_THRESHOLD,
                        help="energy gate: a step passes when rel_dE < this (default %(default)g)")
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
    if not (args.energy_threshold > 0 and math.isfinite(args.energy_threshold)):
        parser.error(f"--energy-threshold must be > 0, got {args.energy_threshold!r}")
    if args.max_steps < 1:
        parser.error(f"--max-steps must be >= 1, got {args.max_steps!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this torch has no usable CUDA device; use --device cpu")
    out = getattr(args, "out", None)
    if out is not None and out.exists() and not out.is_dir():
        parser.error(f"--out: {str(out)!r} is a file; give a directory (it is created if missing)")


def run_failed(prog: str, error: Exception | str) -> int:
    """Reports a run that could not go on (exit status 1)."""
    print(f"{prog}: run failed: {error}", file=sys.stderr)
    return 1


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def run_length(
    parser: argparse.ArgumentParser, args: argparse.Namespace, state: SystemState,
    scenario: str | None,
) -> dict[str, float | int]:
    """``{"t_end": ...}`` or ``{"steps": ...}`` for :func:`~aits.simulation.simulate`."""
    if args.steps is not None:
        return {"steps": args.steps}
    if args.orbits is not None:
        try:
            return {"t_end": args.orbits * orbit_period(state, scenario)}
        except ValueError as e:
            parser.error(str(e))
    return {"t_end": args.t_end}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m aits.simulate", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    system = p.add_mutually_exclusive_group(required=True)
    system.add_argument("--scenario", help="named initial conditions: " + ", ".join(list_scenarios()))
    system.add_argument("--ic", type=Path, metavar="FILE",
                        help="initial conditions from .npy/.csv/.txt (columns m x y [z] vx vy [vz])")
    p.add_argument("--softening", type=float, default=0.0, help="Plummer softening for --ic")
    p.add_argument("--G", type=float, default=1.0, help="gravitational constant for --ic")
    p.add_argument("--policy", default="model", choices=POLICIES,
                   help="time-step policy (default: model, which needs --checkpoint)")
    p.add_argument("--checkpoint", type=Path,
                   help="training checkpoint (.pt) or run directory, for --policy model")
    p.add_argument("--dt", type=float, help="step for --policy fixed")
    p.add_argument("--eta", type=float, help="parameter of freefall/collisional/aarseth")
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
    """The start state of ``--scenario`` or ``--ic``; bad names/files end in ``parser.error``."""
    try:
        if args.scenario is not None:
            return make_scenario(args.scenario, dtype=dtype, device=device, seed=args.seed)
        if not args.ic.is_file():
            what = "is a directory, not a file" if args.ic.is_dir() else "does not exist"
            parser.error(f"--ic: {str(args.ic)!r} {what}")
        state = load_state(args.ic, softening=args.softening, G=args.G, dtype=dtype, device=device)
    except (InitialConditionsError, ValueError) as e:
        parser.error(str(e))
    if state.is_batched:
        parser.error(f"--ic: {str(args.ic)!r} holds a batch of {state.batch_size} systems; "
                     "simulate runs one system (save one as an (N, 5|7) array)")
    return state


def build_policy(
    parser: argparse.ArgumentParser, args: argparse.Namespace, device: torch.device,
    dtype: torch.dtype,
) -> Policy:
    """The policy of ``--policy`` with its parameter; bad values end in ``parser.error``."""
    if args.eta is not None and not args.eta > 0:
        parser.error(f"--eta must be > 0, got {args.eta!r}")
    if args.dt is not None and not args.dt > 0:
        parser.error(f"--dt must be > 0, got {args.dt!r}")
    try:
        return make_policy(args.policy, dt=args.dt, eta=args.eta, checkpoint=args.checkpoint,
                           device=device, dtype=dtype)
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
        ("policy", summary["policy"]),
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


def write_outputs(result: SimulationResult, args: argparse.Namespace, summary: dict) -> list[Path]:
    """Write ``result.json`` and the requested files into ``args.out``; returns the paths."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "result.json"]
    written[0].write_text(json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
    if args.trajectory:
        path = out / "trajectory.npz"
        np.savez_compressed(
            path, t=result.t, dt=result.dt, step_error=result.step_error,
            energy_error=result.energy_error, frame_t=result.frame_t, pos=result.frame_pos,
            vel=result.frame_vel, mass=result.state.mass.cpu().numpy(),
        )
        written.append(path)
    if args.plots or args.animate:
        from aits import plots

        if args.plots:
            written.append(plots.plot_orbits(result, out / "orbits.png"))
            written.append(plots.plot_energy_dt(result, out / "energy_dt.png"))
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
    if (args.trajectory or args.plots or args.animate) and args.out is None:
        parser.error("--trajectory/--plots/--animate need --out DIR")
    if args.frames < 2:
        parser.error(f"--frames must be >= 2, got {args.frames!r}")
    device, dtype = resolve_device(args.device), getattr(torch, args.dtype)
    state = load_system(parser, args, device, dtype)
    policy = build_policy(parser, args, device, dtype)
    guards = build_guards(parser, args)
    length = run_length(parser, args, state, args.scenario)
    try:
        result = simulate(state, policy, guards=guards,
                          gate=EnergyGate(threshold=args.energy_threshold),
                          max_steps=args.max_steps, max_frames=args.frames,
                          progress=not args.quiet, **length)
    except SimulationError as e:
        return run_failed(parser.prog, e)
    summary = result.summary()
    summary.update(
        scenario=args.scenario, ic=None if args.ic is None else str(args.ic),
        dt=args.dt, eta=args.eta, checkpoint=None if args.checkpoint is None else str(args.checkpoint),
        device=str(device), dtype=args.dtype,
        guards=dict(dt_min=guards.dt_min, dt_max=guards.dt_max, max_growth=guards.max_growth,
                    gated=guards.gated, shrink=guards.shrink, max_retries=guards.max_retries),
    )
    print(format_summary(summary))
    if args.out is not None:
        for path in write_outputs(result, args, summary):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
