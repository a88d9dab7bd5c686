"""Ensembles of few-body systems: the batched core against REBOUND, one system at a time.

``python benchmarks/ensemble.py [--batch 256 4096] [--large] [--steps 200] [--threads 1]
[--device cuda]``
integrates ``B`` random bound three-body systems (a hierarchical-ish triple:
a binary with a third body, random phases and mass ratios, seeded) to the same end
time and prints system-steps per second and wall time per system for

* aits ``simulate`` with a fixed ``dt`` under ``kdk``, the whole batch in one call
  (diagnostics off, no observers: timing), which runs natively (``aits.native_run``:
  the core's loop in C++, the few-body kernels vectorised across systems);
* aits with per-system adaptive ``dt``: the Aarseth criterion (eta = 0.01) and the
  shipped ``generalist`` ensemble (encounter features, five networks), natively too
  (its features and networks computed in the loop, ``csrc/cpu/lane_net.h``), and the
  ``default`` model (``aits.pretrained()``: basic features, which need the Python
  loop, one batched op call a step);
* the fixed-dt, Aarseth and generalist runs again through the Python loop
  (``simulate(..., native=False)``), for the cost of the loop itself;
* REBOUND's leapfrog with that fixed ``dt`` and REBOUND's IAS15, looped over the
  systems on this process (skipped, with a note, when ``rebound`` is missing).

``--large`` adds B = 65536 (minutes). ``--device cuda`` runs the aits codes on the GPU
(``simulate``'s Python loop: the native loop is CPU-only; REBOUND and the loop rows
are left out there). Before timing, the whole-run energy errors
of 64 systems run by every code to the same end time are printed (medians): aits'
KDK and REBOUND's leapfrog (drift-kick-drift) at the same ``dt`` are both second
order, so their errors agree in order of magnitude, not digit for digit (the two
splittings' error constants differ by a factor of a few on these triples: 0.42 after
100 steps, 0.29 after 200); the ratio is checked to lie within [1/10, 10]. Timed: the ``simulate`` call and reading its step counts
(``result.systems.column("steps")``); the per-system ``SystemRun`` objects are built
when first read, not in the timing. The ratios that count are aits / REBOUND leapfrog in
system-steps per second, measured in one run (target >= 5x at B = 4096, printed
met/MISSED). On a machine shared with other jobs use ``--threads 1``:
oversubscribed OpenMP threads slow the batched op by 10x.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aits.ops import simd_instruction_set  # noqa: E402
from aits.policies import AarsethPolicy, FixedPolicy, Policy  # noqa: E402
from aits.pretrained_model import pretrained  # noqa: E402
from aits.simulation import simulate  # noqa: E402
from aits.state import SystemState  # noqa: E402


def triples(B: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> SystemState:
    """``B`` bound planar triples: an inner binary (a = 1, e in [0, 0.5]) and a third
    body on a wide orbit (a = 5) around it; masses in [0.3, 1]. ``(B, 3, 2)``."""
    g = torch.Generator().manual_seed(seed)
    m = 0.3 + 0.7 * torch.rand(B, 3, generator=g, dtype=dtype)
    e = 0.5 * torch.rand(B, generator=g, dtype=dtype)
    phase = 2 * math.pi * torch.rand(B, generator=g, dtype=dtype)
    m12 = m[:, 0] + m[:, 1]
    r_in = 1 + e  # inner binary at apocentre, relative velocity sqrt(G M (1 - e) / (1 + e))
    v_in = torch.sqrt(m12 * (1 - e) / (1 + e))
    pos = torch.zeros(B, 3, 2, dtype=dtype)
    vel = torch.zeros(B, 3, 2, dtype=dtype)
    pos[:, 0, 0] = -r_in * m[:, 1] / m12
    pos[:, 1, 0] = r_in * m[:, 0] / m12
    vel[:, 0, 1] = -v_in * m[:, 1] / m12
    vel[:, 1, 1] = v_in * m[:, 0] / m12
    M = m12 + m[:, 2]
    R, V = 5.0, torch.sqrt(M / 5.0)  # circular outer orbit
    out_pos = torch.stack([R * torch.cos(phase), R * torch.sin(phase)], -1)
    out_vel = torch.stack([-V * torch.sin(phase), V * torch.cos(phase)], -1)
    pos[:, 2] = out_pos * m12[:, None] / M[:, None]
    vel[:, 2] = out_vel * m12[:, None] / M[:, None]
    pos[:, :2] -= (out_pos * m[:, 2:3] / M[:, None])[:, None]
    vel[:, :2] -= (out_vel * m[:, 2:3] / M[:, None])[:, None]
    return SystemState(pos, vel, m)


def _rebound_sim(state: SystemState, b: int, integrator: str, dt: float):
    import rebound

    sim = rebound.Simulation()
    sim.integrator = integrator
    sim.dt = dt
    for m, x, v in zip(state.mass[b].tolist(), state.pos[b].tolist(), state.vel[b].tolist()):
        sim.add(m=m, x=x[0], y=x[1], vx=v[0], vy=v[1])
    return sim


def run_rebound(state: SystemState, integrator: str, dt: float, t_end: float,
                count: int) -> tuple[float, int, list[float]]:
    """Seconds and steps for the first ``count`` systems, and their energy errors."""
    wall, steps, errors = 0.0, 0, []
    for b in range(count):
        sim = _rebound_sim(state, b, integrator, dt)
        E0 = sim.energy()
        start = time.perf_counter()
        sim.integrate(t_end, exact_finish_time=0)
        wall += time.perf_counter() - start
        steps += sim.steps_done
        errors.append(abs(sim.energy() - E0) / abs(E0))
    return wall, steps, errors


#: dt of the fixed-step codes: 100 steps per inner period
DT = 2 * math.pi / 100
#: aits / REBOUND leapfrog in system-steps per second, at B = 4096
TARGET = 5.0
FIXED, AARSETH, MODEL = "aits fixed dt (kdk)", "aits Aarseth eta=0.01 (kdk)", "aits model (kdk)"
GENERALIST = "aits generalist model (kdk)"
AITS_CODES = (FIXED, AARSETH, MODEL, GENERALIST)
#: the same fixed-dt, Aarseth and generalist runs through simulate's Python loop
FIXED_LOOP, AARSETH_LOOP = f"{FIXED}, Python loop", f"{AARSETH}, Python loop"
GENERALIST_LOOP = f"{GENERALIST}, Python loop"
LOOP_CODES = (FIXED_LOOP, AARSETH_LOOP, GENERALIST_LOOP)
REBOUND_CODES = {"REBOUND leapfrog": "leapfrog", "REBOUND IAS15": "ias15"}


def aits_policy(code: str, device: str = "cpu") -> Policy:
    """The policy of one of the aits codes."""
    if code in (FIXED, FIXED_LOOP):
        return FixedPolicy(DT)
    if code in (AARSETH, AARSETH_LOOP):
        return AarsethPolicy(0.01)
    name = "generalist" if code in (GENERALIST, GENERALIST_LOOP) else "default"
    return pretrained(name, device=device)


def bench(B: int, steps: int, rebound_systems: int,
          codes: tuple[str, ...] = AITS_CODES + LOOP_CODES, device: str = "cpu") -> list[dict]:
    """One row per code: system-steps/s and wall ms per system of ``B`` triples run
    to ``t_end = steps * DT`` on ``device``; REBOUND on the first ``rebound_systems``
    (0: none)."""
    state = triples(B).to(device)
    t_end = steps * DT
    rows = []
    for label in codes:
        policy = aits_policy(label, device)
        if device != "cpu":  # warm-up: CUDA context, kernels' first launch
            simulate(state, policy, steps=2, observers=[], diagnostics=False)
            torch.cuda.synchronize()
        start = time.perf_counter()
        r = simulate(state, policy, t_end=t_end, observers=[], diagnostics=False,
                     native=label not in LOOP_CODES)
        n = int(r.systems.column("steps").sum())
        wall = time.perf_counter() - start
        rows.append({"B": B, "code": label, "system_steps_per_s": n / wall,
                     "wall_per_system_ms": 1e3 * wall / B, "systems_timed": B})
    if rebound_systems and importlib.util.find_spec("rebound") is not None:
        count = min(B, rebound_systems)
        for label, integ in REBOUND_CODES.items():
            wall, n, _ = run_rebound(state, integ, DT, t_end, count)
            rows.append({"B": B, "code": label, "system_steps_per_s": n / wall,
                         "wall_per_system_ms": 1e3 * wall / count, "systems_timed": count})
    return rows


def energy_errors(steps: int = 200, count: int = 64, device: str = "cpu") -> dict[str, float]:
    """Median whole-run |dE/E| of ``count`` triples run by every code to ``steps * DT``
    on ``device`` (REBOUND codes only when it is installed)."""
    state = triples(count, seed=1).to(device)
    t_end = steps * DT
    out = {}
    for label in AITS_CODES:
        r = simulate(state, aits_policy(label, device), t_end=t_end, observers=[])
        out[label] = float(np.median([x.energy_error_final for x in r.systems]))
    if importlib.util.find_spec("rebound") is not None:
        for label, integ in REBOUND_CODES.items():
            _, _, errors = run_rebound(state, integ, DT, t_end, count)
            out[label] = float(np.median(errors))
    return out


def check_agreement(steps: int = 50) -> float:
    """Median ratio of the whole-run |dE/E| of aits (KDK) to REBOUND leapfrog (DKD),
    same systems and dt."""
    state = triples(8)
    r = simulate(state, FixedPolicy(DT), steps=steps, observers=[])
    if importlib.util.find_spec("rebound") is None:
        return math.nan
    _, _, errors = run_rebound(state, "leapfrog", DT, steps * DT, 8)
    ours = np.array([x.energy_error_final for x in r.systems])
    return float(np.median(ours / np.maximum(np.array(errors), 1e-300)))


def cpu_name() -> str:
    """The CPU's model name (and family/model numbers) from /proc/cpuinfo, else platform's."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    if "model name" in fields:
        return (f"{fields['model name']}, family {fields.get('cpu family', '?')} model "
                f"{fields.get('model', '?')}")
    return platform.processor() or platform.machine()


def verdict(ratio: float, target: float = TARGET) -> str:
    return "met" if ratio >= target else "MISSED"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, nargs="+", default=[256, 4096])
    p.add_argument("--large", action="store_true", help="add B = 65536 (minutes)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rebound-systems", type=int, default=4096,
                   help="REBOUND is timed on at most this many systems (per-system cost)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (aits codes only)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    on_gpu = args.device != "cpu"
    batches = args.batch + ([65536] if args.large and 65536 not in args.batch else [])
    have_rebound = importlib.util.find_spec("rebound") is not None and not on_gpu
    if on_gpu:
        print(f"on {args.device}: REBOUND and the Python-loop rows left out")
    elif not have_rebound:
        print("REBOUND rows skipped: the optional `rebound` package is not installed")
    errors = energy_errors(args.steps, device=args.device)
    print(f"median whole-run |dE/E| of 64 triples after {args.steps} steps of dt = 2 pi / 100 "
          "(adaptive codes: to the same end time)")
    for label, e in errors.items():
        print(f"  {label}: {e:.3e}")
    if have_rebound:
        ratio = errors[FIXED] / errors["REBOUND leapfrog"]
        print(f"  aits fixed dt / REBOUND leapfrog: {ratio:.2f} "
              f"({'same order' if 0.1 <= ratio <= 10 else 'DIFFERENT'}: both second order)")
    where = (f"GPU ({torch.cuda.get_device_name(args.device)})" if on_gpu else
             f"CPU ({cpu_name()}, simd {simd_instruction_set()}), {args.threads} thread(s)")
    print(f"three-body systems (2-D), float64, {where}, to t = {args.steps} x 2 pi / 100")
    print("| B | code | system-steps/s | wall per system (ms) | systems timed |")
    print("|---|---|---|---|---|")
    ratios = []
    for B in batches:
        rows = (bench(B, args.steps, 0, AITS_CODES, args.device) if on_gpu
                else bench(B, args.steps, args.rebound_systems))
        for r in rows:
            print(f"| {r['B']} | {r['code']} | {r['system_steps_per_s']:.3g} | "
                  f"{r['wall_per_system_ms']:.4f} | {r['systems_timed']} |", flush=True)
        by = {r["code"]: r["system_steps_per_s"] for r in rows}
        if "REBOUND leapfrog" in by:
            ratios += [(B, c, by[c] / by["REBOUND leapfrog"]) for c in AITS_CODES + LOOP_CODES
                       if c in by]
    for B, code, ratio in ratios:
        mark = (f" (target >= {TARGET:g}x: {verdict(ratio)})"
                if B == 4096 and code in AITS_CODES else "")
        print(f"{code} / REBOUND leapfrog, B = {B}: {ratio:.3g}x{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
