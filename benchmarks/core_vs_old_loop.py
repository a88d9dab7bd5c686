"""Per-step cost of :func:`aits.simulate` against the one-system loop it replaced.

    python benchmarks/core_vs_old_loop.py [--threads 1] [--rounds 15] [--commit 9bfec58]

The old loop is ``aits/simulation.py`` of ``--commit`` (read from this checkout's git
history into a temporary module, run on today's ops and states), so both loops pay
for the same kernels and the ratio is the cost of the loop itself. Both run
``steps=`` with diagnostics off and nothing recorded; the two are timed alternately,
round by round, best kept (a shared machine's noise hits both alike). Needs git.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rollout import policy_for, system  # noqa: E402

from aits.simulation import simulate  # noqa: E402

CASES = ((3, 1000, "fixed"), (3, 500, "model"), (1024, 50, "fixed"), (1024, 50, "model"))


def old_loop(commit: str):
    """The ``simulate`` of ``aits/simulation.py`` at ``commit``."""
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(["git", "show", f"{commit}:aits/simulation.py"], cwd=root,
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_simulation.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_simulation", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_simulation"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.simulate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--commit", default="9bfec58")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    old = old_loop(args.commit)
    print(f"cpu, float64, {args.threads} thread(s), best of {args.rounds}; ms per step")
    print("| N | policy | new core | old loop | new / old |\n|---|---|---|---|---|")
    for n, steps, name in CASES:
        state = system(n)
        policy = policy_for(name, state)
        runs = {"new": lambda: simulate(state, policy, steps=steps, diagnostics=False,
                                        observers=[]),
                "old": lambda: old(state, policy, steps=steps, diagnostics=False)}
        best = dict.fromkeys(runs, float("inf"))
        for run in runs.values():
            run()
        for _ in range(args.rounds):
            for key, run in runs.items():
                t0 = time.perf_counter()
                run()
                best[key] = min(best[key], time.perf_counter() - t0)
        new, was = (best[k] / steps * 1e3 for k in ("new", "old"))
        print(f"| {n} | {name} | {new:.4f} | {was:.4f} | {new / was:.3f} |", flush=True)


if __name__ == "__main__":
    main()
