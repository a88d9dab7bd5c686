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

Systems come from ``--scenarios`` and/or ``--ic FILE ...``; every policy runs
under every integrator of ``--integrator`` (rows labelled ``policy/integrator``;
the model is tuned by ``--dt-scale`` like the criteria by ``eta`` when
``--tolerance`` is given). Beside the energy error each row reports the *final
position error*: ``max_i |x_i - x_i^ref| / r_rms`` at the end against a
high-accuracy reference run (REBOUND IAS15 when installed, else aits' own
``symmetric`` run with the Aarseth criterion at eta = 1e-6, a step about 100x
smaller than at the usual 0.01), so that integrators exact in energy (``ttl`` on
two-body orbits) are judged too; ``--target position`` tunes to it instead of
the energy error.

Writes ``DIR/evaluation.md``, ``DIR/evaluation.json`` and ``DIR/evaluation.png``
(each scenario's table is written as soon as it is done). The tuning runs go through
:func:`aits.simulate`'s native loop wherever it applies (``kdk`` on few-body systems
with a fixed step, Aarseth's criterion or a model it computes natively, such as the
shipped ``generalist``); the tuned run is then repeated with its per-step record for
the figure.

Example::

    python -m aits.evaluate --checkpoint runs/demo --scenarios binary-e0.5 binary-e0.9 --orbits 1 --out eval/
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aits import native_run
from aits.gate import EnergyGate
from aits.guards import GuardRails
from aits.integrators import Integrator, make_integrator
from aits.ics import InitialConditionsError
from aits.jsonio import write_json
from aits.checkpoint import CheckpointError
from aits.config import EvaluateConfig
from aits.policies import AarsethPolicy, FixedPolicy, ModelPolicy, Policy, make_policy
from aits.scenarios import make_scenario
from aits.simulate import (
    build_integrator,
    cli_length,
    load_ic_file,
    parse_settings,
    run_failed,
    run_length,
)
from aits.suites import SUITES
from aits.observers import PROGRESS_DELAY
from aits.simulation import FAIL_ABOVE, EnergyRecord, SimulationResult, simulate
from aits.state import SystemState

__all__ = ["Baseline", "ScenarioTable", "baseline", "build_parser", "count_rows",
           "evaluate_scenario", "main", "markdown_table", "position_error", "summary_rows", "tune"]

log = logging.getLogger("aits.evaluate")

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
    #: every run of the search: (parameter, force evaluations, error), in order
    trials: list[tuple[float, int, float]] = field(default_factory=list)


#: Aarseth eta of aits' own reference run (dt ~ sqrt(eta): 100x below eta = 0.01)
REFERENCE_ETA = 1e-6


def _max_error(r: SimulationResult) -> float:
    e = float(r.energy_error_max)
    return e if math.isfinite(e) else math.inf


def position_error(state: SystemState, reference: np.ndarray, start: SystemState) -> float:
    """``max_i |x_i - x_i^ref| / r_rms`` (``r_rms`` the start's mass-weighted rms distance
    from the centre of mass); ``inf`` for a non-finite state."""
    pos = state.pos.detach().cpu().double().numpy()
    x0 = start.centered().pos.detach().cpu().double().numpy()
    m = start.mass.detach().cpu().double().numpy()
    r_rms = math.sqrt(float((m * (x0 * x0).sum(-1)).sum() / m.sum()))
    err = float(np.linalg.norm(pos - reference, axis=-1).max()) / max(r_rms, 1e-300)
    return err if math.isfinite(err) else math.inf


def reference_positions(state: SystemState, t_end: float, ias: dict | None) -> np.ndarray:
    """Final positions ``(N, D)`` of a high-accuracy run: the IAS15 run ``ias``
    (:func:`run_ias15`) when given, else aits' own symmetric Aarseth run at
    :data:`REFERENCE_ETA`."""
    if ias is not None:
        return ias["final_pos"]
    r = simulate(state, AarsethPolicy(REFERENCE_ETA), integrator="symmetric", t_end=t_end,
                 observers=[], diagnostics=False)
    return r.state.pos.detach().cpu().double().numpy()


def tune(
    run: Callable[[float], SimulationResult],
    target: float,
    first: float,
    *,
    rtol: float = 0.1,
    max_runs: int = 30,
    metric: Callable[[SimulationResult], float] = _max_error,
) -> Tuned:
    """The largest parameter ``p`` (error growing with ``p``) with
    ``target / (1 + rtol) <= max |dE/E| <= target``, by geometric bisection.

    The bracket is found by multiplying/dividing ``first`` by 4; then the bracket
    is halved in log space. A run that did not reach its end (``max_steps``) or
    blew up counts as too small / too large a parameter respectively; a run that
    diverged (its error is counted as ``inf``) as too large.

    Args:
        run: ``p -> SimulationResult``.
        target: the error to match (> 0).
        metric: the error of a run (default: its whole-run max ``|dE/E|``).
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
    trials: list[tuple[float, int, float]] = []
    while runs < max_runs:
        r = run(p)
        runs += 1
        err = math.inf if r.diverged else metric(r)
        trials.append((p, int(r.force_evaluations), err))
        finished = r.stop_reason in ("t_end", "steps")
        if smallest is None or p < smallest[0]:
            smallest = (p, r)
        if err <= target:
            lo = p
            if finished and (best is None or p > best[0]):
                best = (p, r)
            if finished and err >= target / (1 + rtol):
                return Tuned(p, r, runs, True, trials)
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
    return Tuned(chosen[0], chosen[1], runs, False, trials)


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
    final = np.array([[p.x, p.y, p.z][:state.dim] for p in sim.particles])
    return {"final_pos": final, "steps": int(sim.steps_done), "force_evaluations": evaluations[0],
            "wall_time_s": wall, "energy_error_final": errors[-1],
            "energy_error_max": max(errors)}


def _row(label: str, param: str, r: SimulationResult, pos_err: float, note: str = "",
         matched: bool | None = None) -> dict:
    s = r.summary()
    note = "; ".join(n for n in (note, r.divergence_note) if n)
    return {"policy": label, "parameter": param, "matched": matched, "steps": s["steps"],
            "force_evaluations": s["force_evaluations"], "wall_time_s": s["wall_time_s"],
            "energy_error_final": s["energy_error_final"], "energy_error_max": s["energy_error_max"],
            "position_error": pos_err, "gate_pass_rate": s["gate_pass_rate"],
            "step_error_max": s["step_error_max"], "status": s["status"], "note": note}


def _cell(c: object) -> str:
    """A Markdown table cell: pipes escaped so the table renders."""
    return str(c).replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table (floats in ``%.3g``/``%.3e`` style chosen by the caller;
    ``|`` inside a cell is escaped)."""
    lines = ["| " + " | ".join(map(_cell, header)) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in rows]
    return "\n".join(lines)


_COLUMNS = ("policy", "parameter", "steps", "force evals", "wall s", "|dE/E| final",
            "|dE/E| max (whole run)", "position error", "gate pass rate", "max step rel_dE",
            "note")


def _fmt(x: object, spec: str) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return format(x, spec)


def scenario_markdown(name: str, target: float, target_kind: str, rows: Sequence[dict]) -> str:
    body = [[r["policy"], r["parameter"], r["steps"], r["force_evaluations"],
             _fmt(r["wall_time_s"], ".3f"), _fmt(r["energy_error_final"], ".2e"),
             _fmt(r["energy_error_max"], ".2e"), _fmt(r.get("position_error"), ".2e"),
             _fmt(r.get("gate_pass_rate"), ".3f"), _fmt(r.get("step_error_max"), ".2e"),
             r["note"]] for r in rows]
    what = "max |dE/E|" if target_kind == "energy" else "final position error"
    return f"### {name} (target {what} = {target:.3e})\n\n" + markdown_table(_COLUMNS, body)


@dataclass
class Baseline:
    """What every table of one system shares: the IAS15 run (``None`` without
    REBOUND) and the reference final positions ``(N, D)`` (``None`` when not asked
    for or without a run length in time)."""

    ias: dict | None
    ref: np.ndarray | None


def baseline(state: SystemState, length: dict, *, with_rebound: bool,
             position: bool = True) -> Baseline:
    """The IAS15 run and the high-accuracy reference of ``state`` over ``length``."""
    t_end = length.get("t_end")
    ias = run_ias15(state, float(t_end)) if with_rebound and t_end is not None else None
    ref = (reference_positions(state, float(t_end), ias)
           if position and t_end is not None else None)
    return Baseline(ias, ref)


@dataclass
class ScenarioTable:
    """One system at one target: the target, the table rows, the tuned runs by label
    (``policy/integrator``) and every run of each search as ``(force evaluations,
    error)`` points by label (the cost-accuracy curves)."""

    target: float
    rows: list[dict]
    runs: dict[str, SimulationResult]
    curves: dict[str, list[tuple[int, float]]]


def evaluate_scenario(
    state: SystemState,
    length: dict,
    model: ModelPolicy | None,
    policies: Sequence[str],
    *,
    integrators: Sequence[str | Integrator] = ("kdk",),
    references: Sequence[str | Integrator] = (),
    tolerance: float | None,
    target_kind: str = "energy",
    gate: EnergyGate,
    rtol: float,
    max_runs: int,
    max_steps: int,
    base: Baseline,
    fail_above: float = FAIL_ABOVE,
    bar: Any = None,
) -> ScenarioTable:
    """Run the model, tune each classical policy (and the model's ``dt_scale`` when a
    ``tolerance`` is given) under each of ``integrators``, the classical policies
    alone under each of ``references`` (rows noted as references), add IAS15.

    A run whose whole-run ``|dE/E|`` passes ``fail_above`` has diverged and stops;
    a row whose run diverged says so in its ``status`` and note. ``bar``: an open
    tqdm bar advanced by one per row (:func:`count_rows` of them), its postfix the
    row being tuned and its run."""
    t_end = length.get("t_end")
    ias, ref = base.ias, base.ref

    def pos_err(r: SimulationResult) -> float:
        return math.nan if ref is None else position_error(r.state, ref, state)

    if target_kind == "position" and ref is None:
        raise ValueError("--target position needs a run length in time (--t-end or --orbits)")
    metric = _max_error if target_kind == "energy" else pos_err

    rows, runs, curves = [], {}, {}
    target = tolerance
    first_integ = integrators[0]

    label, tries = "model", 0
    batch = state.detach().as_batch()

    def run(policy: Policy, integrator: str | Integrator, record: bool = True
            ) -> SimulationResult:
        """One run; ``record=False``: no per-step record where that lets the native loop
        run it (:mod:`aits.native_run`, which keeps no per-step energies)."""
        nonlocal tries
        tries += 1
        if bar is not None:
            bar.set_postfix_str(f"{label}, run {tries}")
        native = not record and native_run.applies(batch, policy, make_integrator(integrator),
                                                   GuardRails(), [], False, 0)
        return simulate(state, policy, integrator=integrator, gate=gate, max_steps=max_steps,
                        observers=[] if native else [EnergyRecord()], fail_above=fail_above,
                        **length)

    target_run = None  # the model's run that sets the target (no tolerance given)
    if model is not None and target is None:
        target_run = run(model, first_integ)
        if target_run.diverged:
            raise ValueError(f"the model's run, which sets the target, "
                             f"{target_run.divergence_note}; give --tolerance")
        target = metric(target_run)
    if not (target is not None and 0 < target < math.inf):
        raise ValueError(f"cannot tune to a whole-run error of {target!r} (the model's run "
                         "blew up?); give --tolerance")
    horizon = t_end or 1.0
    for integ, is_reference in [(i, False) for i in integrators] + [(i, True) for i in references]:
        candidates: list[tuple[str, Callable[[float], Policy], float, str]] = []
        if model is not None and not is_reference:
            candidates.append(("model", lambda p: ModelPolicy(model.net, dt_scale=p), 1.0,
                               "dt_scale"))
        for name in policies:
            if name == "fixed":
                candidates.append((name, FixedPolicy, horizon / 1000 if t_end else 1e-3, "dt"))
            else:
                candidates.append((name, lambda p, n=name: make_policy(n, eta=p),
                                   _FIRST_GUESS[name], "eta"))
        for name, build, first, pname in candidates:
            label, tries = f"{name}/{make_integrator(integ).name}", 0
            if name == "model" and target_run is not None and integ == first_integ:
                r = target_run
                rows.append(_row(label, "dt_scale=1 (sets the target)", r, pos_err(r),
                                 matched=True))
                runs[label] = r
                curves[label] = [(int(r.force_evaluations), metric(r))]
            else:
                tuned = tune(lambda p, b=build, i=integ: run(b(p), i, record=False), target,
                             first, rtol=rtol, max_runs=max_runs, metric=metric)
                note = f"tuned in {tuned.runs} runs" + ("" if tuned.matched else
                                                        " (tolerance not reached)")
                if is_reference:
                    note = "reference; " + note
                rows.append(_row(label, f"{pname}={tuned.param:.4g}", tuned.result,
                                 pos_err(tuned.result), note, matched=tuned.matched))
                # the figure's energy record: the tuned run again, recorded, where the
                # native loop ran it (the same run to rounding)
                runs[label] = (tuned.result if tuned.result.systems[0].t is not None
                               else run(build(tuned.param), integ))
                curves[label] = [(evals, err) for _, evals, err in tuned.trials]
            if bar is not None:
                bar.update()
    if ias is not None:
        ias = dict(ias)
        final = ias.pop("final_pos")
        rows.append({"policy": "REBOUND IAS15", "parameter": "default epsilon", "matched": None,
                     **ias, "position_error": position_error(state.replace(pos=torch.as_tensor(
                         final, dtype=state.dtype)), ref, state) if ref is not None else math.nan,
                     "gate_pass_rate": None, "step_error_max": None, "status": None,
                     "note": "reference, not tuned"})
    return ScenarioTable(target, rows, runs, curves)


def count_rows(policies: Sequence[str], integrators: Sequence[object],
               references: Sequence[object], with_model: bool) -> int:
    """The tuned (or target) rows :func:`evaluate_scenario` makes for one table."""
    return len(integrators) * (len(policies) + with_model) + len(references) * len(policies)


#: rows that compete with the model for "best classical"
_CLASSICAL_NAMES = ("fixed",) + tuple(n for n in _FIRST_GUESS)


def summary_rows(tables: Mapping[str, Mapping[float, ScenarioTable]],
                 integrators: Sequence[str]) -> list[dict]:
    """Per system, target and integrator: the model's force evaluations against the
    best classical policy's (the fewest among those tuned to the target), and their
    ratio (``None`` where either did not reach the target)."""
    out = []
    for system, by_target in tables.items():
        for target, table in by_target.items():
            for integ in integrators:
                rows = {r["policy"]: r for r in table.rows}
                model = rows.get(f"model/{integ}")
                classical = [r for name in _CLASSICAL_NAMES
                             if (r := rows.get(f"{name}/{integ}")) is not None and r["matched"]]
                best = min(classical, key=lambda r: r["force_evaluations"], default=None)
                ok = model is not None and model["matched"] and best is not None
                out.append({
                    "system": system, "target": target, "integrator": integ,
                    "model_force_evaluations": None if model is None else
                    model["force_evaluations"],
                    "best_classical": None if best is None else best["policy"],
                    "best_force_evaluations": None if best is None else best["force_evaluations"],
                    "ratio": model["force_evaluations"] / best["force_evaluations"] if ok
                    else None,
                })
    return out


def summary_markdown(rows: Sequence[dict]) -> str:
    """The summary table: force evaluations, model / best classical."""
    body = [[r["system"], f"{r['target']:.0e}", r["integrator"],
             r["model_force_evaluations"] if r["model_force_evaluations"] is not None else "–",
             r["best_classical"] or "–",
             r["best_force_evaluations"] if r["best_force_evaluations"] is not None else "–",
             _fmt(r["ratio"], ".2f")] for r in rows]
    header = ("system", "target", "integrator", "model force evals", "best classical",
              "its force evals", "model / best")
    return "### Summary (force evaluations at equal whole-run error)\n\n" + \
        markdown_table(header, body)


def build_parser() -> argparse.ArgumentParser:
    return EvaluateConfig.build_parser(prog="python -m aits.evaluate", description=__doc__,
                                       formatter_class=argparse.RawDescriptionHelpFormatter)


def _systems(parser: argparse.ArgumentParser, cfg: EvaluateConfig, device: torch.device,
             dtype: torch.dtype) -> dict[str, tuple[SystemState, dict]]:
    """Name -> (start state, run length) of every system to evaluate."""
    systems: dict[str, tuple[SystemState, dict]] = {}
    try:
        named = ([(s.scenario, s.length) for s in SUITES[cfg.suite].systems] if cfg.suite
                 else [(name, cli_length(cfg)) for name in cfg.systems()])
        for name, length in named:
            state = make_scenario(name, dtype=dtype, device=device, seed=cfg.seed,
                                  softening=cfg.softening, G=cfg.gravitational_constant)
            systems[name] = (state, run_length(parser, length, state, name))
        for path in cfg.ic or []:
            state = load_ic_file(parser, cfg, Path(path), device, dtype)
            if state.is_batched:
                parser.error(f"--ic: {path!r} holds a batch of {state.batch_size} systems; "
                             "evaluate takes one system per file")
            systems[path] = (state, run_length(parser, cli_length(cfg), state, None))
    except (InitialConditionsError, ValueError) as e:
        parser.error(str(e))
    return systems


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    cfg = parse_settings(EvaluateConfig, parser, argv)
    if cfg.suite is None and cfg.t_end is None and cfg.orbits is None and cfg.steps is None:
        cfg.orbits = 1.0
    device, dtype = torch.device(cfg.device), getattr(torch, cfg.dtype)
    model = None
    if cfg.checkpoint is not None or cfg.pretrained:
        try:
            model = make_policy("model", checkpoint=cfg.checkpoint, device=device, dtype=dtype)
        except (ValueError, FileNotFoundError, CheckpointError) as e:
            parser.error(str(e))
    with_rebound = cfg.rebound and rebound_available()
    gate_cfg = cfg.gate_over(getattr(model, "train_config", None))
    gate = gate_cfg.gate()
    out = Path(cfg.out)
    names = cfg.integrators()
    integrators = [build_integrator(cfg, name) for name in names]
    references = [build_integrator(cfg, name) for name in cfg.references()]
    tolerances = cfg.tolerances()

    report: dict = {"checkpoint": cfg.checkpoint, "pretrained": cfg.pretrained,
                    "suite": cfg.suite,
                    "tolerances": tolerances, "target": cfg.target,
                    "integrators": names, "references": cfg.references(),
                    "units": cfg.units, "energy_threshold": gate_cfg.energy_threshold,
                    "device": str(device), "dtype": cfg.dtype, "scenarios": {}}
    sections, all_runs, targets = [], {}, {}
    tables: dict[str, dict[float, ScenarioTable]] = {}
    systems = _systems(parser, cfg, device, dtype)
    notes = [
        "Whole-run view: |dE/E| = |E(t) - E(0)| / |E(0)| over the run (final and max); position "
        "error: max_i |x_i - x_i^ref| / r_rms at the end against the reference run. Per-step "
        "gate view: the fraction of steps with rel_dE < "
        f"{gate_cfg.energy_threshold:g} and the worst step. Passing every step's gate does not "
        "bound the whole-run error.",
        "Reference run: " + ("none (--no-position-error)" if not cfg.position_error else
                             "REBOUND IAS15" if with_rebound else
                             f"aits symmetric Aarseth eta={REFERENCE_ETA:g}") + ".",
    ]
    if not with_rebound:
        notes.append(REBOUND_NOTE if cfg.rebound else "REBOUND column left out (--no-rebound).")
    report["notes"] = notes

    def write_report() -> None:
        summary = summary_rows(tables, [i.name for i in integrators])
        report["summary"] = summary
        parts = sections + ([summary_markdown(summary)] if summary else [])
        md = "# aits evaluation\n\n" + "\n\n".join(parts) + "\n\n" + "\n\n".join(notes) + "\n"
        (out / "evaluation.md").write_text(md)
        write_json(out / "evaluation.json", report)

    from tqdm.auto import tqdm

    say = (lambda text: None) if cfg.quiet else tqdm.write
    rows_total = len(systems) * len(tolerances) * count_rows(
        cfg.policies, integrators, references, model is not None)
    bar = tqdm(total=rows_total, desc="evaluate", unit="row", delay=PROGRESS_DELAY,
               disable=cfg.quiet, dynamic_ncols=True)
    for name, (state, length) in systems.items():
        bar.set_postfix_str(f"{name}: reference runs")
        base = baseline(state, length, with_rebound=with_rebound,
                        position=cfg.position_error)
        for tolerance in tolerances:
            key = name if len(tolerances) == 1 else f"{name} @ {tolerance:g}"
            try:
                table = evaluate_scenario(
                    state, length, model, cfg.policies, integrators=integrators,
                    references=references, tolerance=tolerance, target_kind=cfg.target,
                    gate=gate, rtol=cfg.rtol, max_runs=cfg.max_runs, max_steps=cfg.max_steps,
                    base=base, fail_above=cfg.fail_above, bar=bar)
            except ValueError as e:
                bar.close()
                write_report()
                return run_failed(parser.prog, f"system {name}: {e}")
            if tolerance is not None:
                tables.setdefault(name, {})[tolerance] = table
            report["scenarios"][key] = {"target": table.target, **length, "rows": table.rows}
            sections.append(scenario_markdown(key, table.target, cfg.target, table.rows))
            all_runs[key], targets[key] = table.runs, table.target
            say(sections[-1] + "\n")
            write_report()  # every finished table is on disk before the next can fail
    bar.close()
    from aits.plots import plot_comparison, plot_cost_accuracy

    plot_comparison(all_runs, out / "evaluation.png",
                    targets if cfg.target == "energy" else None, units=cfg.units)
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for name, by_target in tables.items():
        for table in by_target.values():
            for label, points in table.curves.items():
                curves.setdefault(name, {}).setdefault(label, []).extend(points)
    written = ["evaluation.json", "evaluation.png"]
    if curves:
        plot_cost_accuracy(curves, out / "cost_accuracy.png", tolerances,
                           "max |dE/E| (whole run)" if cfg.target == "energy"
                           else "final position error")
        written.append("cost_accuracy.png")
    if report.get("summary"):
        say(summary_markdown(report["summary"]) + "\n")
    for note in notes:
        say(note)
    say(f"wrote {out / 'evaluation.md'}, {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
