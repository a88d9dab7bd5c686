"""``python -m aits.evaluate``: the trained model beside the classical criteria.

For each scenario, the model policy runs first; its whole-run ``max |dE/E|`` is
the *target* (or ``--tolerance`` sets it, and the model is optional). Each
classical policy's parameter (``eta``; ``dt`` for ``fixed``) is then tuned by
bisection in log space to the largest value whose whole-run ``max |dE/E|`` does
not exceed the target, stopping once it is within ``--rtol`` below it. The table
reports, per policy: steps, force evaluations, wall time, final and max
``|dE/E|`` (the *whole-run view*), the gate pass rate and worst per-step
``rel_dE`` (the *per-step gate view*). Passing every step's gate does not bound
the whole-run error: both are measured, neither is assumed from the other.

When the optional ``rebound`` package is installed, REBOUND's IAS15 (its own
adaptive step, default accuracy) is added as a reference column, with its force
evaluations counted through an ``additional_forces`` callback.

Writes ``DIR/evaluation.md``, ``DIR/evaluation.json`` and ``DIR/evaluation.png``.

Example::

    python -m aits.evaluate --checkpoint runs/demo --scenarios binary-e0.5 binary-e0.9 --orbits 1 --out eval/
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aits.gate import EnergyGate
from aits.policies import CLASSICAL, FixedPolicy, Policy, make_policy
from aits.scenarios import list_scenarios, make_scenario
from aits.simulate import (
    add_length_arguments,
    add_system_arguments,
    build_policy,
    check_common,
    parse_arguments,
    resolve_device,
    run_failed,
    run_length,
    setup_logging,
)
from aits.simulation import SimulationError, SimulationResult, json_safe, simulate
from aits.state import SystemState

log = logging.getLogger("aits.evaluate")

TUNABLE = ("fixed",) + CLASSICAL
#: first guesses of the tuned parameter (``fixed``: a fraction of the run length)
_FIRST_GUESS = {"freefall": 0.02, "collisional": 0.01, "aarseth": 0.01}
REBOUND_NOTE = ("REBOUND IAS15 column omitted: the optional `rebound` package is not installed "
                "(pip install rebound).")


@dataclass
class Tuned:
    """Outcome of :func:`tune`: the chosen parameter, its run, and how the search went."""

    param: float
    result: SimulationResult
    runs: int
    matched: bool


def _max_error(r: SimulationResult) -> float:
    e = float(np.max(r.energy_error))
    return e if math.isfinite(e) else math.inf


def tune(
    run: Callable[[float], SimulationResult],
    target: float,
    first: float,
    *,
    rtol: float = 0.1,
    max_runs: int = 30,
) -> Tuned:
    """The largest parameter ``p`` (error growing with ``p``) with
    ``target / (1 + rtol) <= max |dE/E| <= target``, by geometric bisection.

    The bracket is found by multiplying/dividing ``first`` by 4; then the bracket
    is halved in log space. A run that did not reach its end (``max_steps``) or
    blew up counts as too small / too large a parameter respectively.

    Args:
        run: ``p -> SimulationResult``.
        target: the whole-run error to match (> 0).
        first: the first parameter tried (> 0).
        rtol: accepted relative shortfall below the target.
        max_runs: simulations at most.

    Returns:
        :class:`Tuned` with the best run found (``matched`` False when the
        tolerance was not reached within ``max_runs``; then the best parameter
        meeting the target, or the smallest tried if none did).
    """
    if not (target > 0 and math.isfinite(target)):
        raise ValueError(f"tune: target must be finite and > 0, got {target!r}")
    lo = hi = None  # largest p known to be within target / smallest known to exceed it
    best: tuple[float, SimulationResult] | None = None
    smallest: tuple[float, SimulationResult] | None = None
    p, runs = first, 0
    while runs < max_runs:
        r = run(p)
        runs += 1
        err = _max_error(r)
        finished = r.stop_reason in ("t_end", "steps")
        if smallest is None or p < smallest[0]:
            smallest = (p, r)
        if err <= target:
            lo = p
            if finished and (best is None or p > best[0]):
                best = (p, r)
            if finished and err >= target / (1 + rtol):
                return Tuned(p, r, runs, True)
        else:
            hi = p
        if lo is not None and hi is not None:
            if hi / lo < 1 + 1e-6:
                break
            p = math.sqrt(lo * hi)
        else:
            p = p * 4 if hi is None else p / 4
    chosen = best or smallest
    log.warning("tuning stopped after %d runs without reaching target %.3e within rtol %g",
                runs, target, rtol)
    return Tuned(chosen[0], chosen[1], runs, False)


def rebound_available() -> bool:
    return importlib.util.find_spec("rebound") is not None


def run_ias15(state: SystemState, t_end: float) -> dict:
    """Integrate ``state`` to ``t_end`` with REBOUND's IAS15 and report steps, force
    evaluations (``additional_forces`` calls), wall time and energy errors."""
    import rebound

    sim = rebound.Simulation()
    sim.G = state.G
    sim.softening = state.softening
    sim.integrator = "ias15"
    pos = state.pos.detach().cpu().double().numpy()
    vel = state.vel.detach().cpu().double().numpy()
    pad = 3 - state.dim
    for m, x, v in zip(state.mass.detach().cpu().double().numpy(), pos, vel):
        x, v = np.pad(x, (0, pad)), np.pad(v, (0, pad))
        sim.add(m=float(m), x=x[0], y=x[1], z=x[2], vx=v[0], vy=v[1], vz=v[2])
    evaluations = [0]

    def count(_sim) -> None:
        evaluations[0] += 1

    sim.additional_forces = count
    sim.force_is_velocity_dependent = 0
    E0 = sim.energy()
    errors = [0.0]
    start = time.perf_counter()
    while sim.t < t_end * (1 - 1e-14):
        sim.dt = min(sim.dt, t_end - sim.t)
        sim.steps(1)
        errors.append(abs(sim.energy() - E0) / abs(E0))
    wall = time.perf_counter() - start
    return {"steps": int(sim.steps_done), "force_evaluations": evaluations[0],
            "wall_time_s": wall, "energy_error_final": errors[-1],
            "energy_error_max": max(errors)}


def _row(label: str, param: str, r: SimulationResult, note: str = "") -> dict:
    s = r.summary()
    return {"policy": label, "parameter": param, "steps": s["steps"],
            "force_evaluations": s["force_evaluations"], "wall_time_s": s["wall_time_s"],
            "energy_error_final": s["energy_error_final"], "energy_error_max": s["energy_error_max"],
            "gate_pass_rate": s["gate_pass_rate"], "step_error_max": s["step_error_max"],
            "note": note}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table (floats in ``%.3g``/``%.3e`` style chosen by the caller)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


_COLUMNS = ("policy", "parameter", "steps", "force evals", "wall s", "|dE/E| final",
            "|dE/E| max (whole run)", "gate pass rate", "max step rel_dE", "note")


def _fmt(x: object, spec: str) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return format(x, spec)


def scenario_markdown(name: str, target: float, rows: Sequence[dict]) -> str:
    body = [[r["policy"], r["parameter"], r["steps"], r["force_evaluations"],
             _fmt(r["wall_time_s"], ".3f"), _fmt(r["energy_error_final"], ".2e"),
             _fmt(r["energy_error_max"], ".2e"), _fmt(r.get("gate_pass_rate"), ".3f"),
             _fmt(r.get("step_error_max"), ".2e"), r["note"]] for r in rows]
    return f"### {name} (target max |dE/E| = {target:.3e})\n\n" + markdown_table(_COLUMNS, body)


def evaluate_scenario(
    state: SystemState,
    length: dict,
    model: Policy | None,
    policies: Sequence[str],
    *,
    tolerance: float | None,
    gate: EnergyGate,
    rtol: float,
    max_runs: int,
    max_steps: int,
    with_rebound: bool,
) -> tuple[float, list[dict], dict[str, SimulationResult]]:
    """Run the model, tune each classical policy, add IAS15; returns the target,
    the table rows and the runs by label."""
    def run(policy: Policy) -> SimulationResult:
        return simulate(state, policy, gate=gate, max_steps=max_steps, **length)

    rows, runs = [], {}
    target = tolerance
    if model is not None:
        r = run(model)
        runs["model"] = r
        if target is None:
            target = _max_error(r)
        rows.append(_row("model", "checkpoint", r))
    if not (target is not None and 0 < target < math.inf):
        raise ValueError(f"cannot tune to a whole-run error of {target!r} (the model's run "
                         "blew up?); give --tolerance")
    horizon = length.get("t_end") or 1.0
    for name in policies:
        if name == "fixed":
            first = horizon / 1000 if "t_end" in length else 1e-3
            tuned = tune(lambda p: run(FixedPolicy(p)), target, first, rtol=rtol, max_runs=max_runs)
            param = f"dt={tuned.param:.4g}"
        else:
            tuned = tune(lambda p, n=name: run(make_policy(n, eta=p)), target, _FIRST_GUESS[name],
                         rtol=rtol, max_runs=max_runs)
            param = f"eta={tuned.param:.4g}"
        note = f"tuned in {tuned.runs} runs" + ("" if tuned.matched else " (tolerance not reached)")
        rows.append(_row(name, param, tuned.result, note))
        runs[name] = tuned.result
    if with_rebound and "t_end" in length:
        ias = run_ias15(state, float(length["t_end"]))
        rows.append({"policy": "REBOUND IAS15", "parameter": "default epsilon", **ias,
                     "gate_pass_rate": None, "step_error_max": None,
                     "note": "reference, not tuned"})
    return target, rows, runs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m aits.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path,
                   help="training checkpoint (.pt) or run directory of the model to evaluate")
    p.add_argument("--scenarios", nargs="+", default=["binary-e0.5", "binary-e0.9", "figure8"],
                   help="scenarios to run (default: %(default)s); valid: "
                        + ", ".join(list_scenarios()))
    p.add_argument("--policies", nargs="+", default=list(TUNABLE), choices=TUNABLE,
                   help="classical policies to tune and compare (default: all)")
    p.add_argument("--tolerance", type=float,
                   help="target whole-run max |dE/E| (default: the model's own)")
    p.add_argument("--rtol", type=float, default=0.1,
                   help="accept a tuned run within this relative distance below the target")
    p.add_argument("--max-runs", type=int, default=30, help="simulations per tuning at most")
    p.add_argument("--no-rebound", action="store_true", help="leave out the IAS15 column")
    p.add_argument("--out", type=Path, default=Path("evaluation"), metavar="DIR",
                   help="directory for evaluation.md/.json/.png (default: %(default)s)")
    add_length_arguments(p, required=False)
    add_system_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_arguments(parser, argv, "evaluate")
    setup_logging(args.quiet)
    check_common(parser, args)
    if args.t_end is None and args.orbits is None and args.steps is None:
        args.orbits = 1.0
    if args.checkpoint is None and args.tolerance is None:
        parser.error("give --checkpoint (the model sets the target) and/or --tolerance")
    if args.tolerance is not None and not (args.tolerance > 0 and math.isfinite(args.tolerance)):
        parser.error(f"--tolerance must be > 0, got {args.tolerance!r}")
    if not 0 < args.rtol < 1:
        parser.error(f"--rtol must be in (0, 1), got {args.rtol!r}")
    if args.max_runs < 2:
        parser.error(f"--max-runs must be >= 2, got {args.max_runs!r}")
    unknown = [s for s in args.scenarios if s not in list_scenarios()]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; valid names: {', '.join(list_scenarios())}")
    device, dtype = resolve_device(args.device), getattr(torch, args.dtype)
    model = None
    if args.checkpoint is not None:
        args.policy, args.dt, args.eta = "model", None, None
        model = build_policy(parser, args, device, dtype)
    with_rebound = not args.no_rebound and rebound_available()
    gate = EnergyGate(threshold=args.energy_threshold)

    report: dict = {"checkpoint": None if args.checkpoint is None else str(args.checkpoint),
                    "tolerance": args.tolerance, "energy_threshold": args.energy_threshold,
                    "device": str(device), "dtype": args.dtype, "scenarios": {}}
    sections, all_runs, targets = [], {}, {}
    states = {name: make_scenario(name, dtype=dtype, device=device, seed=args.seed)
              for name in args.scenarios}
    lengths = {name: run_length(parser, args, state, name) for name, state in states.items()}
    for name, state in states.items():
        length = lengths[name]
        try:
            target, rows, runs = evaluate_scenario(
                state, length, model, args.policies, tolerance=args.tolerance, gate=gate,
                rtol=args.rtol, max_runs=args.max_runs, max_steps=args.max_steps,
                with_rebound=with_rebound)
        except (SimulationError, ValueError) as e:
            return run_failed(parser.prog, f"scenario {name}: {e}")
        report["scenarios"][name] = {"target": target, **length, "rows": rows}
        sections.append(scenario_markdown(name, target, rows))
        all_runs[name], targets[name] = runs, target
        print(sections[-1] + "\n", flush=True)
    notes = [
        "Whole-run view: |dE/E| = |E(t) - E(0)| / |E(0)| over the run (final and max). "
        "Per-step gate view: the fraction of steps with rel_dE < "
        f"{args.energy_threshold:g} and the worst step. Passing every step's gate does not "
        "bound the whole-run error.",
    ]
    if not with_rebound:
        notes.append(REBOUND_NOTE if not args.no_rebound else "REBOUND column left out (--no-rebound).")
    report["notes"] = notes
    args.out.mkdir(parents=True, exist_ok=True)
    md = "# aits evaluation\n\n" + "\n\n".join(sections) + "\n\n" + "\n\n".join(notes) + "\n"
    (args.out / "evaluation.md").write_text(md)
    (args.out / "evaluation.json").write_text(
        json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")
    from aits.plots import plot_comparison

    plot_comparison(all_runs, args.out / "evaluation.png", targets)
    for note in notes:
        print(note)
    print(f"wrote {args.out / 'evaluation.md'}, evaluation.json, evaluation.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
