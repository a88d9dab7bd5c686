"""Development check of a model against Aarseth's criterion and a fixed step on
systems that are in neither the training population nor the evaluation suite.

    python scripts/dev_ratio.py CHECKPOINT [CHECKPOINT ...] [--set six|wide]
        [--integrator kdk symmetric] [--tolerance 1e-3]

For each development system, the model's ``dt_scale``, Aarseth's ``eta`` and a
fixed ``dt`` are tuned (``aits.evaluate.tune``) to the same whole-run max |dE/E|
and the model's force evaluations compared with the cheaper classical policy's.
Used to choose training settings without looking at the suite (whose table is the
reported result); prints one line per system and integrator and the geometric mean
of the ratios. ``--set six`` (the default): six hand-picked systems; ``--set wide``:
:func:`wide_systems`, forty few-body systems drawn from a fixed generator, every run
short enough for the native loop (seconds per model under ``kdk``), which averages
over far more systems than the six. Several checkpoints share the classical runs.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import aits
from aits.evaluate import tune
from aits.ics import hierarchical_triple, kepler_orbit, kepler_period, plummer
from aits.policies import AarsethPolicy, FixedPolicy, ModelPolicy, make_policy
from aits.simulation import simulate


def rotating_square() -> aits.SystemState:
    """Four bodies of nearly equal mass on a square of radius 1, moving tangentially at
    0.8 of the circular speed: a democratic system that falls into close passages and
    later breaks up (run to t = 8, before it does)."""
    angle = torch.arange(4, dtype=torch.float64) * math.pi / 2
    zero = torch.zeros_like(angle)
    speed = 0.8 * math.sqrt(0.25 + 1 / math.sqrt(2))
    return aits.SystemState(pos=torch.stack([angle.cos(), angle.sin(), zero], -1),
                            vel=speed * torch.stack([-angle.sin(), angle.cos(), zero], -1),
                            mass=torch.tensor([1.0, 1.1, 0.9, 1.0], dtype=torch.float64)).centered()


def moth() -> aits.SystemState:
    """The moth I choreography of Suvakov and Dmitrasinovic (2013): three unit masses
    at (-1, 0), (1, 0), (0, 0), velocities (p1, p2), (p1, p2), -2 (p1, p2) with
    p1 = 0.46444, p2 = 0.39606, period 14.8939; 2-D, democratic, with close passages
    and, like every member of its family, a body at zero acceleration at the start."""
    v = torch.tensor([0.46444, 0.39606], dtype=torch.float64)
    return aits.SystemState(pos=torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 0.0]],
                                             dtype=torch.float64),
                            vel=torch.stack([v, v, -2 * v]), mass=torch.ones(3, dtype=torch.float64))


def _binary(e: float, q: float, periods: float) -> tuple[aits.SystemState, float]:
    """A Kepler binary (a = 1, total mass 1, mass ratio ``q``) and ``periods`` of its
    orbital period."""
    m1, m2 = 1 / (1 + q), q / (1 + q)
    return kepler_orbit(e, 1.0, m1=m1, m2=m2), periods * kepler_period(1.0, m1, m2)


def _binary_pair(e1: float, e2: float, masses: list[float], separation: float,
                 phase: float) -> aits.SystemState:
    """Two Kepler binaries (a = 1, at apocentre, masses ``masses[0:2]`` and
    ``masses[2:4]``), their centres ``separation`` apart on a circular mutual orbit in
    the x-y plane, the second binary's plane turned by ``phase`` about the x axis; 3-D."""
    parts = []
    for e, (m1, m2), sign in ((e1, masses[:2], -1), (e2, masses[2:], 1)):
        b = kepler_orbit(e, 1.0, m1=m1, m2=m2, dim=3)
        parts.append((b.pos, b.vel, b.mass, sign))
    pos2, vel2 = parts[1][0].clone(), parts[1][1].clone()
    c, s = math.cos(phase), math.sin(phase)
    turn = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], dtype=torch.float64)
    parts[1] = (pos2 @ turn.T, vel2 @ turn.T, parts[1][2], 1)
    M1, M2 = float(parts[0][2].sum()), float(parts[1][2].sum())
    v = math.sqrt((M1 + M2) / separation)
    pos, vel, mass = [], [], []
    for (p, u, m, sign), share in zip(parts, (M2, M1)):
        offset = torch.tensor([sign * separation * share / (M1 + M2), 0.0, 0.0],
                              dtype=torch.float64)
        drift = torch.tensor([0.0, sign * v * share / (M1 + M2), 0.0], dtype=torch.float64)
        pos, vel, mass = pos + [p + offset], vel + [u + drift], mass + [m]
    return aits.SystemState(torch.cat(pos), torch.cat(vel), torch.cat(mass)).centered()


def wide_systems(seed: int = 2026) -> dict[str, tuple[aits.SystemState, float]]:
    """Forty few-body development systems (N <= 8: every ``kdk`` run goes through the
    native loop) and their run lengths, drawn from a generator seeded with ``seed``:
    20 binaries (e uniform in [0, 0.985], mass ratio log-uniform in [0.01, 1], 5
    periods), 10 hierarchical triples (inner e in [0, 0.8], outer a 6-14 inner ones
    and e in [0, 0.4], masses in [0.2, 1], any inclination; 10 inner periods), 5 pairs
    of binaries on a wide mutual orbit (10 inner periods), the rotating square and
    moth I of the six, and 3 Plummer spheres of 8 bodies (softening 0.01, t = 4). The
    suite's systems and the figure-eight are not among them."""
    gen = torch.Generator().manual_seed(seed)

    def u(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64))

    out: dict[str, tuple[aits.SystemState, float]] = {}
    for k in range(20):
        e, q = u(0.0, 0.985), 10 ** u(-2.0, 0.0)
        out[f"binary {k} e={e:.3f} q={q:.3f}"] = _binary(e, q, 5)
    for k in range(10):
        e_in, a_out, e_out = u(0.0, 0.8), u(6.0, 14.0), u(0.0, 0.4)
        masses = (u(0.2, 1.0), u(0.2, 1.0), u(0.2, 1.0))
        state = hierarchical_triple(e_in=e_in, a_out=a_out, e_out=e_out, masses=masses,
                                    inclination=u(0.0, math.pi))
        out[f"triple {k} e_in={e_in:.2f} a_out={a_out:.1f}"] = (
            state, 10 * kepler_period(1.0, masses[0], masses[1]))
    for k in range(5):
        e1, e2 = u(0.0, 0.7), u(0.0, 0.7)
        masses = [u(0.3, 1.0) for _ in range(4)]
        state = _binary_pair(e1, e2, masses, u(8.0, 14.0), u(0.0, math.pi))
        out[f"binary pair {k}"] = (state, 10 * kepler_period(1.0, masses[0], masses[1]))
    out["rotating square"] = (rotating_square(), 8.0)
    out["moth I"] = (moth(), 14.8939)
    for k in range(3):
        out[f"plummer8 {k}"] = (plummer(8, seed=100 + k, softening=0.01), 4.0)
    return out


def systems() -> dict[str, tuple[aits.SystemState, float]]:
    """The development systems and their run lengths."""
    return {
        "binary e=0.7 q=0.3": _binary(0.7, 0.3, 5),
        "binary e=0.95": _binary(0.95, 1.0, 5),
        "triple e_in=0.5": (hierarchical_triple(e_in=0.5, a_out=10.0, masses=(0.6, 0.4, 0.3),
                                                inclination=1.0), 60.0),
        "plummer32": (plummer(32, seed=7, softening=0.01), 3.0),
        "rotating square": (rotating_square(), 8.0),
        "moth I": (moth(), 14.8939),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", nargs="+",
                   help="checkpoints or run directories ('pretrained': the shipped default)")
    p.add_argument("--set", choices=("six", "wide"), default="six",
                   help="the development systems (module docstring)")
    p.add_argument("--integrator", nargs="+", default=["kdk"])
    p.add_argument("--tolerance", type=float, default=1e-3)
    p.add_argument("--only", nargs="*", help="system names to run (default: all)")
    args = p.parse_args()
    torch.set_num_threads(1)
    models = {c: (make_policy("model") if c == "pretrained" else ModelPolicy.from_checkpoint(c))
              for c in args.checkpoint}
    ratios: dict[str, list[float]] = {c: [] for c in models}
    chosen = systems() if args.set == "six" else wide_systems()
    for name, (state, t_end) in chosen.items():
        if args.only and name not in args.only:
            continue
        for integ in args.integrator:
            t0 = time.perf_counter()
            a = tune(lambda e: simulate(state, AarsethPolicy(e), integrator=integ, t_end=t_end,
                                        observers=[]), args.tolerance, 0.01, rtol=0.05)
            f = tune(lambda dt: simulate(state, FixedPolicy(dt), integrator=integ, t_end=t_end,
                                         observers=[]), args.tolerance, 1e-3 * t_end, rtol=0.05)
            best = min(a.result.force_evaluations, f.result.force_evaluations)
            for c, model in models.items():
                m = tune(lambda s: simulate(state, ModelPolicy(model.net, s), integrator=integ,
                                            t_end=t_end, observers=[]), args.tolerance, 1.0,
                         rtol=0.05)
                r = m.result.force_evaluations / best
                ratios[c].append(r)
                tag = "" if len(models) == 1 else f" [{c}]"
                print(f"{name:<30} {integ:<9} model {m.result.force_evaluations:>7} "
                      f"(scale {m.param:.3g}, {float(m.result.energy_error_max):.2e})  aarseth "
                      f"{a.result.force_evaluations:>7} (eta {a.param:.3g})  fixed "
                      f"{f.result.force_evaluations:>7} (dt {f.param:.3g})  ratio {r:.3f}"
                      f"{tag}  [{time.perf_counter() - t0:.0f} s]", flush=True)
    for c, rs in ratios.items():
        print(f"geometric mean ratio {math.exp(sum(map(math.log, rs)) / len(rs)):.3f} "
              f"({len(rs)} runs) {c}")


if __name__ == "__main__":
    main()
