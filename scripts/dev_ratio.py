"""Development check of a model against Aarseth's criterion and a fixed step on
systems that are in neither the training population nor the evaluation suite.

    python scripts/dev_ratio.py CHECKPOINT [--integrator kdk symmetric] [--tolerance 1e-3]

For each development system, the model's ``dt_scale``, Aarseth's ``eta`` and a
fixed ``dt`` are tuned (``aits.evaluate.tune``) to the same whole-run max |dE/E|
and the model's force evaluations compared with the cheaper classical policy's.
Used to choose training settings without looking at the suite (whose table is the
reported result); prints one line per system and integrator and the geometric mean
of the ratios.
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


def systems() -> dict[str, tuple[aits.SystemState, float]]:
    """The development systems and their run lengths."""
    q = 0.3
    return {
        "binary e=0.7 q=0.3": (kepler_orbit(0.7, 1.0, m1=1 / (1 + q), m2=q / (1 + q)),
                               5 * kepler_period(1.0, 1 / (1 + q), q / (1 + q))),
        "binary e=0.95": (kepler_orbit(0.95, 1.0), 5 * kepler_period(1.0)),
        "triple e_in=0.5": (hierarchical_triple(e_in=0.5, a_out=10.0, masses=(0.6, 0.4, 0.3),
                                                inclination=1.0), 60.0),
        "plummer32": (plummer(32, seed=7, softening=0.01), 3.0),
        "rotating square": (rotating_square(), 8.0),
        "moth I": (moth(), 14.8939),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--integrator", nargs="+", default=["kdk"])
    p.add_argument("--tolerance", type=float, default=1e-3)
    p.add_argument("--only", nargs="*", help="system names to run (default: all)")
    args = p.parse_args()
    torch.set_num_threads(1)
    model = (make_policy("model") if args.checkpoint == "pretrained"
             else ModelPolicy.from_checkpoint(args.checkpoint))
    ratios = []
    for name, (state, t_end) in systems().items():
        if args.only and name not in args.only:
            continue
        for integ in args.integrator:
            t0 = time.perf_counter()
            m = tune(lambda s: simulate(state, ModelPolicy(model.net, s), integrator=integ,
                                        t_end=t_end, observers=[]), args.tolerance, 1.0,
                     rtol=0.05)
            a = tune(lambda e: simulate(state, AarsethPolicy(e), integrator=integ, t_end=t_end,
                                        observers=[]), args.tolerance, 0.01, rtol=0.05)
            f = tune(lambda dt: simulate(state, FixedPolicy(dt), integrator=integ, t_end=t_end,
                                         observers=[]), args.tolerance, 1e-3 * t_end, rtol=0.05)
            best = min(a.result.force_evaluations, f.result.force_evaluations)
            r = m.result.force_evaluations / best
            ratios.append(r)
            print(f"{name:<22} {integ:<9} model {m.result.force_evaluations:>7} "
                  f"(scale {m.param:.3g}, {float(m.result.energy_error_max):.2e})  aarseth "
                  f"{a.result.force_evaluations:>7} (eta {a.param:.3g})  fixed "
                  f"{f.result.force_evaluations:>7} (dt {f.param:.3g})  ratio {r:.3f}  "
                  f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    print(f"geometric mean ratio {math.exp(sum(map(math.log, ratios)) / len(ratios)):.3f}")


if __name__ == "__main__":
    main()
