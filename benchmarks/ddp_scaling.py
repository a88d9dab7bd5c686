"""Epoch time of ``torchrun --nproc_per_node=P -m aits.train`` for several P.

    python benchmarks/ddp_scaling.py                      # P = 1, 2 on the CPU, 8 orbits
    python benchmarks/ddp_scaling.py --procs 1 2 4 --num-orbits 16 --device cuda

Every run trains the same K orbits (K / P per process) with the same seed; the
table gives the median epoch time over the epochs after the first (the first
includes warm-up), accepted system-steps per second, and the speed-up over the
first row. ``--threads`` sets OMP_NUM_THREADS per process (torchrun's default
is 1). A single-process run without torchrun (``P = 1*``, torch's default
threads) is added as the plain baseline unless ``--no-plain``. ``--repeat R``
runs the whole set R times, interleaved, and keeps each row's best (on a shared
machine the minimum is the least disturbed figure).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def _train_args(a: argparse.Namespace, run_dir: str, name: str) -> list[str]:
    return ["--num-orbits", str(a.num_orbits), "--epochs", str(a.epochs), "--steps-per-epoch",
            str(a.steps_per_epoch), "--hidden", *map(str, a.hidden), "--dropout", "0",
            "--device", a.device, "--rollout-steps", "0", "--no-plot", "--quiet",
            "--run-dir", run_dir, "--run-name", name]


def _measure(cmd: list[str], env: dict, run: Path, timeout: float) -> dict:
    done = subprocess.run(cmd, env=env, timeout=timeout, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if done.returncode:
        log = Path(tempfile.gettempdir(), "ddp_scaling_failure.log")
        log.write_text(done.stderr)
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}; stderr in {log}")
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    times = [m["epoch_time"] for m in lines[1:]] or [lines[0]["epoch_time"]]
    t = statistics.median(times)
    return {"epoch_s": t, "steps_per_s": lines[-1]["p1_accepted"] / t}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--num-orbits", type=int, default=8)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--steps-per-epoch", type=int, default=100)
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS per process")
    p.add_argument("--no-plain", action="store_true")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--timeout", type=float, default=600)
    a = p.parse_args(argv)
    best: dict[str, dict] = {}
    for rep in range(a.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            runs = []
            if not a.no_plain:
                cmd = [sys.executable, "-m", "aits.train", *_train_args(a, tmp, "plain")]
                env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
                runs.append(("1*", cmd, env, "plain"))
            for n in a.procs:
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                       f"--nproc_per_node={n}", "-m", "aits.train",
                       *_train_args(a, tmp, f"p{n}")]
                runs.append((str(n), cmd, dict(os.environ, OMP_NUM_THREADS=str(a.threads)),
                             f"p{n}"))
            for label, cmd, env, name in runs:
                r = _measure(cmd, env, Path(tmp, name), a.timeout)
                if label not in best or r["epoch_s"] < best[label]["epoch_s"]:
                    best[label] = r
    rows = list(best.items())
    base = rows[0][1]["epoch_s"]
    print(f"{a.num_orbits} orbits, {a.steps_per_epoch} rounds/epoch, hidden {a.hidden}, "
          f"{a.device}, OMP_NUM_THREADS={a.threads} per torchrun process "
          f"(1*: no torchrun, torch's default threads)")
    print(f"{'P':>3} {'epoch s':>9} {'steps/s':>9} {'speed-up':>9}")
    for n, r in rows:
        print(f"{n:>3} {r['epoch_s']:>9.3f} {r['steps_per_s']:>9.1f} {base / r['epoch_s']:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
