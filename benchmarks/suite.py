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
* ``rollout`` — seconds per step of the simulation loop for the model policy and
  the classical criteria at N = 3 (figure-eight) and N = 1024 (Plummer).

``--quick`` shrinks every section (a smoke run); the numbers are then noisier.
On a machine shared with other jobs, ``--threads 1`` avoids OpenMP threads
waiting on a preempted sibling (which can inflate a 1 ms kernel call to 8 ms).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import replay_batching  # noqa: E402
import rollout  # noqa: E402
from kernels import OPS, Case  # noqa: E402
from run import measure  # noqa: E402

from aits.config import from_mapping  # noqa: E402
from aits.evaluate import markdown_table  # noqa: E402
from aits.jsonio import json_safe  # noqa: E402
from aits.training import Trainer, Trajectory, replay_errors, replay_errors_per_sample  # noqa: E402


def row(section: str, case: str, value: float, unit: str, detail: str = "") -> dict:
    return {"section": section, "case": case, "value": value, "unit": unit, "detail": detail}


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


def cost_rows(n: int, checkpoint: str | None) -> list[dict]:
    c = rollout.model_policy_cost(n, checkpoint=checkpoint)
    rows = [row("model cost", f"{k.replace('_', ' ')} N={n}", v * 1e3, "ms")
            for k, v in c.items() if k != "ratio"]
    rows.append(row("model cost", f"model-policy step / force evaluation N={n}", c["ratio"], "x",
                    "target <= 1.5x"))
    return rows


def rollout_rows(plan: dict[int, int], checkpoint: str | None) -> list[dict]:
    rows = []
    for n, steps in plan.items():
        for name in rollout.ROLLOUT_POLICIES:
            sec = rollout.rollout_cost(name, n, steps, checkpoint=checkpoint)
            rows.append(row("rollout", f"{name} N={n}", sec * 1e3, "ms/step", f"{steps} steps"))
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
    rows += rollout_rows({3: 50, 256: 3} if q else {3: 300, 1024: 10}, args.checkpoint)
    print(markdown_table(["section", "case", "value", "unit", "detail"],
                         [[r["section"], r["case"], fmt_value(r["value"]), r["unit"], r["detail"]]
                          for r in rows]))
    args.json.write_text(json.dumps(json_safe({"environment": header, "rows": rows}), indent=2,
                                    allow_nan=False) + "\n")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
