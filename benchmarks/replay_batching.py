"""Part 2 evaluation: one batched call versus the original per-sample loop.

For each N, one minibatch of ``--batch`` states (Kepler binaries for N = 2, Plummer
spheres otherwise) is evaluated with the same model: predict dt, take a leapfrog
step, measure rel_dE, and backpropagate the mean band loss (one Part 2
iteration), three ways:

* ``loop``: the original per-sample Python loop (:func:`replay_errors_per_sample`);
* ``batched``: one batched call computing features, free-fall times and start
  energies inside the call (:func:`replay_errors`): the pure batching gain;
* ``part2``: what Part 2 runs, one batched call on a :class:`Trajectory` whose
  features, free-fall times and start energies were computed once per epoch
  (``prep``, timed separately, is that one-off cost for the whole minibatch).

All three must agree before they are timed. Prints a table and the ratios.

    python benchmarks/replay_batching.py [--batch 512] [--sizes 2 64] [--device cpu]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from aits.config import TrainConfig, from_mapping
from aits.ics import kepler_batch, plummer
from aits.training import Trainer, Trajectory, replay_errors, replay_errors_per_sample


def minibatch(n: int, batch: int, device: str):
    if n == 2:
        return kepler_batch(batch, (0.0, 0.95), (0.5, 2.0), seed=1, device=device)
    return plummer(n, batch=batch, seed=1, softening=0.01, device=device)


def iteration(evaluate, trainer: Trainer) -> tuple[torch.Tensor, torch.Tensor]:
    """One Part 2 iteration's work: ``evaluate()`` -> (dt, rel_dE), loss, backward."""
    trainer.model.zero_grad(set_to_none=True)
    dt, rel = evaluate()
    trainer.gate.loss(rel, dt).mean().backward()
    return dt, rel


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--sizes", type=int, nargs="+", default=[2, 64])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--hidden", type=int, nargs="+", default=TrainConfig().hidden)
    args = p.parse_args()
    trainer = Trainer(from_mapping({"device": args.device, "hidden": args.hidden}))
    trainer.model.eval()  # no dropout: both paths must give the same numbers
    print(f"device {args.device}, float64, batch {args.batch}, hidden {args.hidden}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, {platform.machine()}")
    print(f"{'N':>5}{'loop [ms]':>11}{'batched [ms]':>14}{'part2 [ms]':>12}{'prep [ms]':>11}"
          f"{'loop/batched':>14}{'loop/part2':>12}")
    model, gate = trainer.model, trainer.gate
    for n in args.sizes:
        states = minibatch(n, args.batch, args.device).with_acceleration()
        everything = torch.arange(args.batch, device=args.device)
        traj = Trajectory.build(model, states, None, states.pos.new_zeros(args.batch))
        paths = {
            "loop": lambda: replay_errors_per_sample(model, states, None, gate),
            "batched": lambda: replay_errors(model, states, None, gate),
            "part2": lambda: traj.errors(model, everything, gate),
        }
        ref = iteration(paths["batched"], trainer)
        for name in ("loop", "part2"):
            dt, rel = iteration(paths[name], trainer)
            torch.testing.assert_close(dt, ref[0], rtol=1e-10, atol=0)
            torch.testing.assert_close(rel, ref[1], rtol=1e-8, atol=1e-18)
        t = {k: best_time(lambda f=f: iteration(f, trainer), args.repeats) for k, f in paths.items()}
        prep = best_time(lambda: Trajectory.build(model, states, None, traj.dt), args.repeats)
        print(f"{n:>5}{t['loop'] * 1e3:>11.1f}{t['batched'] * 1e3:>14.2f}{t['part2'] * 1e3:>12.2f}"
              f"{prep * 1e3:>11.2f}{t['loop'] / t['batched']:>13.1f}x"
              f"{t['loop'] / t['part2']:>11.1f}x")


if __name__ == "__main__":
    main()
