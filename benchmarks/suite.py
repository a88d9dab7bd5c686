"""The benchmark suite: one command, one table (Markdown), the rows also as JSON.

    python benchmarks/suite.py [--quick] [--threads N] [--json FILE] [--checkpoint RUN_OR_PT]

Sections, each measured in this run:

* ``kernels`` — pair interactions per second of the gravity ops (aits, CPU; CUDA
  too when available), from ``benchmarks/run.py``.
* ``part2`` — one Part 2 iteration on a minibatch of 512, the batched call vs the
  original per-sample loop (``benchmarks/replay_batching.py``), N = 2 and 64.
* ``training`` — accepted Part 1 steps per second of the default training
  configuration (first epoch from scratch, then the second).
* ``model cost`` — one model-policy step (features + network + step) vs one force
  evaluation, N = 1024 Plummer, float64 (target <= 1.5x), with its parts.
* ``aarseth cost`` — the Aarseth criterion's derivative pass
  (``aits.ops.aarseth_derivatives``) vs one force evaluation on the same state,
  N = 1024 Plummer, float64 (target <= 3x); N = 1024 under ``--quick`` too.
* ``rollout`` — seconds per step of the simulation loop for the model policy and
  the classical criteria at N = 3 (figure-eight) and N = 1024 (Plummer).
* ``ensemble`` — batched three-body ensembles, aits (fixed dt, Aarseth and the
  shipped model, one batched call each) vs REBOUND's leapfrog and IAS15 one
  system at a time (``benchmarks/ensemble.py``); each aits code / REBOUND
  leapfrog, target >= 5x at B = 4096. REBOUND rows are left out, with a note, when ``rebound`` is missing.
* ``integrators`` — whole-run max |dE/E| of ``kdk``, ``symmetric`` and ``ttl`` on
  the Kepler e = 0.9 binary under the free-fall criterion
  (``benchmarks/integrators.py``); the time-symmetric step's whole-run error
  must stay bounded: at most 1.5x its first-period error.

A row with a target says whether it was ``met`` or ``MISSED`` (a measurement
that failed misses its target); a summary line under the table lists the
missed ones. ``--quick`` shrinks every section (a smoke run, about a minute on
2 cores; the numbers are then noisier). On a machine shared with other jobs,
``--threads 1`` avoids OpenMP threads waiting on a preempted sibling (which can
inflate a 1 ms kernel call to 8 ms).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ensemble  # noqa: E402
import integrators  # noqa: E402
import replay_batching  # noqa: E402
import rollout  # noqa: E402
from kernels import OPS, Case  # noqa: E402
from run import measure  # noqa: E402

from aits.config import from_mapping  # noqa: E402
from aits.evaluate import markdown_table  # noqa: E402
from aits.jsonio import json_safe  # noqa: E402
from aits.pretrained_model import pretrained_path  # noqa: E402
from aits.training import Trainer, Trajectory, replay_errors, replay_errors_per_sample  # noqa: E402


#: a row's target: (comparison, bound), e.g. ("<=", 1.5) for "at most 1.5"
Target = tuple[str, float]
MET, MISSED = "met", "MISSED"


def judge(value: float, target: Target | None) -> str:
    """``met`` or ``MISSED`` for a row with a target, ``""`` without one. A value
    that is not a finite number (a measurement that failed) misses its target."""
    if target is None:
        return ""
    op, bound = target
    if op not in ("<=", ">="):
        raise ValueError(f"target comparison must be '<=' or '>=', got {op!r}")
    if not math.isfinite(value):
        return MISSED
    return MET if (value <= bound if op == "<=" else value >= bound) else MISSED


def target_text(target: Target | None, unit: str) -> str:
    """``"<= 1.5x"`` (a unit of ``x`` is written without a space), or ``""``."""
    if target is None:
        return ""
    op, bound = target
    return f"{op} {bound:g}" + (unit if unit == "x" else f" {unit}")


def row(section: str, case: str, value: float, unit: str, detail: str = "",
        target: Target | None = None) -> dict:
    """One table row; ``target`` (optional) is judged at once into ``verdict``."""
    return {"section": section, "case": case, "value": value, "unit": unit, "detail": detail,
            "target": None if target is None else {"op": target[0], "bound": target[1]},
            "verdict": judge(value, target)}


def summary(rows: list[dict]) -> str:
    """``targets: 2 met, 1 MISSED (model cost: ...)``, or that no row had a target."""
    judged = [r for r in rows if r["verdict"]]
    if not judged:
        return "targets: none in this run"
    bad = [r for r in rows if r["verdict"] == MISSED]
    line = f"targets: {len(judged) - len(bad)} met, {len(bad)} {MISSED}"
    return line + (" (" + "; ".join(f"{r['section']}: {r['case']}" for r in bad) + ")" if bad else "")


def table(rows: list[dict]) -> str:
    """The Markdown table of ``rows``, with target and verdict columns."""
    def target_of(r: dict) -> Target | None:
        t = r["target"]
        return None if t is None else (t["op"], t["bound"])

    return markdown_table(
        ["section", "case", "value", "unit", "target", "verdict", "detail"],
        [[r["section"], r["case"], fmt_value(r["value"]), r["unit"],
          target_text(target_of(r), r["unit"]), r["verdict"], r["detail"]] for r in rows])


#: Kepler periods of the integrators section (full run, --quick)
PERIODS, QUICK_PERIODS = 100.0, 20.0


def kernel_rows(sizes: list[int], devices: list[str]) -> list[dict]:
    rows = []
    for device in devices:
        for op in OPS:
            for dtype in (torch.float32, torch.float64):
                for n in sizes:
                    r = measure(Case(op, n, dtype, "aits", device))
                    case = f"{op} {r['dtype']} N={n} {device}"
                    if r["status"] != "ok":
                        rows.append(row("kernels", case, float("nan"), "pairs/s", r["status"]))
                    else:
                        rows.append(row("kernels", case, r["pairs_per_s"], "pairs/s",
                                        f"{r['seconds'] * 1e3:.3f} ms/call"))
    return rows


def part2_rows(sizes: list[int], batch: int, repeats: int) -> list[dict]:
    """The same minibatch evaluated batched and per sample (checked to agree first)."""
    trainer = Trainer(from_mapping({"device": "cpu"}))
    trainer.model.eval()  # no dropout: both paths must give the same numbers
    model, gate = trainer.model, trainer.gate
    rows = []
    for n in sizes:
        states = replay_batching.minibatch(n, batch, "cpu").with_acceleration()
        traj = Trajectory.build(model, states, None, states.pos.new_zeros(batch))
        everything = torch.arange(batch)
        paths = {"per-sample loop": lambda: replay_errors_per_sample(model, states, None, gate),
                 "batched": lambda: replay_errors(model, states, None, gate),
                 "part2 (prepared)": lambda: traj.errors(model, everything, gate)}
        ref = replay_batching.iteration(paths["batched"], trainer)
        for name in ("per-sample loop", "part2 (prepared)"):
            dt, rel = replay_batching.iteration(paths[name], trainer)
            torch.testing.assert_close(dt, ref[0], rtol=1e-10, atol=0)
            torch.testing.assert_close(rel, ref[1], rtol=1e-8, atol=1e-18)
        t = {k: replay_batching.best_time(lambda f=f: replay_batching.iteration(f, trainer), repeats)
             for k, f in paths.items()}
        for k, v in t.items():
            rows.append(row("part2", f"{k} B={batch} N={n}", v * 1e3, "ms/iteration"))
        rows.append(row("part2", f"speed-up batched vs loop N={n}",
                        t["per-sample loop"] / t["batched"], "x",
                        f"prepared Part 2: {t['per-sample loop'] / t['part2 (prepared)']:.1f}x"))
    return rows


def training_rows(steps: int) -> list[dict]:
    t = rollout.training_throughput(steps)
    return [row("training", f"Part 1, default scenario, epoch {e}", t[f"epoch{e}_steps_per_s"],
                "accepted steps/s", f"{t[f'epoch{e}_retrains']} retrains, {steps} steps/epoch")
            for e in (1, 2)]


def cost_rows(n: int, checkpoint: str | None, label: str = "", bound: float = 1.5) -> list[dict]:
    c = rollout.model_policy_cost(n, checkpoint=checkpoint)
    tag = f" ({label})" if label else ""
    rows = [row("model cost", f"{k.replace('_', ' ')} N={n}{tag}", v * 1e3, "ms")
            for k, v in c.items() if k != "ratio"]
    rows.append(row("model cost", f"model-policy step / force evaluation N={n}{tag}", c["ratio"],
                    "x", target=("<=", bound)))
    return rows


def shipped_cost_rows(n: int) -> list[dict]:
    """:func:`cost_rows` of the shipped whole-run models, against issue 12's 1.2x."""
    rows = []
    for name in ("generalist", "generalist-history"):
        rows += cost_rows(n, str(pretrained_path(name)), name, bound=1.2)
    return rows


def aarseth_rows(n: int, repeats: int) -> list[dict]:
    c = rollout.aarseth_derivative_cost(n, repeats=repeats)
    return [
        row("aarseth cost", f"force evaluation N={n}", c["force_evaluation"] * 1e3, "ms"),
        row("aarseth cost", f"derivative pass (acc, jerk, snap, crackle) N={n}",
            c["aarseth_derivatives"] * 1e3, "ms"),
        row("aarseth cost", f"Aarseth derivative pass / force evaluation N={n}", c["ratio"], "x",
            f"float64, best of {repeats} interleaved", target=("<=", 3.0)),
    ]


def rollout_rows(plan: dict[int, int], checkpoint: str | None) -> list[dict]:
    rows = []
    for n, steps in plan.items():
        for name in rollout.ROLLOUT_POLICIES:
            sec = rollout.rollout_cost(name, n, steps, checkpoint=checkpoint)
            rows.append(row("rollout", f"{name} N={n}", sec * 1e3, "ms/step", f"{steps} steps"))
    return rows


def ensemble_rows(batches: list[int], steps: int, rebound_systems: int) -> list[dict]:
    """System-steps per second of each code (ensemble.bench) and, with REBOUND,
    each aits code / REBOUND leapfrog per batch size (target >= 5x at B = 4096)."""
    have_rebound = importlib.util.find_spec("rebound") is not None
    rows = []
    if have_rebound:
        rows.append(row("ensemble", "|dE/E| aits KDK / REBOUND leapfrog, 50 steps (median of 8)",
                        ensemble.check_agreement(), "x", "both second order: same size, not digits"))
    else:
        rows.append(row("ensemble", "REBOUND rows", math.nan, "",
                        "skipped: the optional `rebound` package is not installed"))
    for B in batches:
        results = ensemble.bench(B, steps, rebound_systems if have_rebound else 0)
        by_code = {r["code"]: r for r in results}
        for r in results:
            rows.append(row("ensemble", f"{r['code']} B={B}", r["system_steps_per_s"],
                            "system-steps/s",
                            f"{r['wall_per_system_ms']:.4f} ms/system, {r['systems_timed']} timed, "
                            f"{steps} steps"))
        if have_rebound:
            for code in ensemble.AITS_CODES:
                ratio = (by_code[code]["system_steps_per_s"]
                         / by_code["REBOUND leapfrog"]["system_steps_per_s"])
                rows.append(row("ensemble", f"{code} / REBOUND leapfrog B={B}", ratio, "x",
                                "system-steps/s",
                                target=(">=", ensemble.TARGET) if B == 4096 else None))
    return rows


def integrator_rows(periods: float) -> list[dict]:
    """Whole-run errors of each integrator (integrators.drift_table, free-fall
    criterion, eta = 0.02), and the bounded-error check of the symmetric step."""
    rows = []
    for r in integrators.drift_table(periods, "freefall", 0.02):
        name = r["integrator"]
        rows.append(row("integrators", f"{name}: max |dE/E| over {periods:g} periods, "
                        f"Kepler e=0.9, {r['criterion']}", r["energy_error_max"], "",
                        f"first period {r['energy_error_first_period']:.2e}, final "
                        f"{r['energy_error_final']:.2e}, {r['force_evaluations']} force evals, "
                        f"{r['wall_time_s']:.1f} s"))
        if name in ("kdk", "symmetric"):
            rows.append(row("integrators", f"{name}: whole-run / first-period max |dE/E|",
                            r["max_over_first"], "x",
                            "adaptive dt breaks kdk's time symmetry: it drifts"
                            if name == "kdk" else "time-symmetric: bounded",
                            target=("<=", 1.5) if name == "symmetric" else None))
    return rows


def fmt_value(v: float) -> str:
    if v != v:
        return "–"
    return f"{v:.3e}" if abs(v) >= 1e5 or (v and abs(v) < 1e-2) else f"{v:.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes and few repeats")
    p.add_argument("--json", type=Path, default=Path("benchmark-suite.json"),
                   help="write the rows here (default: %(default)s)")
    p.add_argument("--checkpoint", help="use this trained model (default: the untrained default net)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    q = args.quick
    header = (f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
              f"{platform.machine()}, devices: {', '.join(devices)}"
              + (f" ({torch.cuda.get_device_name()})" if "cuda" in devices else ""))
    print(header, flush=True)
    rows = kernel_rows([256] if q else [1024, 4096], devices)
    rows += part2_rows([2] if q else [2, 64], 64 if q else 512, 1 if q else 3)
    rows += training_rows(20 if q else 100)
    rows += cost_rows(256 if q else 1024, args.checkpoint)
    rows += shipped_cost_rows(256 if q else 1024)
    rows += aarseth_rows(1024, 40)
    rows += rollout_rows({3: 50, 256: 3} if q else {3: 300, 1024: 10}, args.checkpoint)
    rows += ensemble_rows([256] if q else [256, 4096], 50 if q else 100, 64 if q else 1024)
    rows += integrator_rows(QUICK_PERIODS if q else PERIODS)
    print(table(rows))
    print("\n" + summary(rows))
    args.json.write_text(json.dumps(json_safe({"environment": header, "rows": rows,
                                               "summary": summary(rows)}), indent=2,
                                    allow_nan=False) + "\n")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
