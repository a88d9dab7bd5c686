"""Train and write the model shipped with aits (``aits/models/NAME.pt`` and
``NAME.json``).

    python scripts/make_pretrained.py [--config configs/pretrained.toml] [--name default]
        [--seeds 0 1 2 3 4] [--evaluation out/suite/evaluation.json]

Trains with the config (run directory under a temporary folder), keeps the final
model as a model-only checkpoint (``model_config``, ``model`` and the training
``config``), runs the accuracy check the tests repeat (``binary-e0.5``, one
period, ``kdk``: steps, force evaluations, whole-run max |dE/E|) and writes the
record: training config and seed, aits version and git commit, the check, and the
summary of an evaluation (``--evaluation``: the ``evaluation.json`` of
``python -m aits.evaluate --suite standard --pretrained``) when given. With
``--seeds``, trains once per seed and ships their ensemble
(:meth:`aits.model.TimeStepNet.average`: the geometric mean of their steps); the
record's ``seed`` and ``trained_with`` are the first seed's, ``seeds`` lists them all.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import tempfile
from pathlib import Path

import aits
from aits.checkpoint import load_checkpoint, load_model, save_checkpoint
from aits.config import TrainConfig
from aits.jsonio import write_json
from aits.model import TimeStepNet
from aits.pretrained_model import FOLDER, pretrained
from aits.train import run

#: the check the tests repeat on the shipped model
CHECK = {"scenario": "binary-e0.5", "orbits": 1.0, "integrator": "kdk"}


def accuracy_check(name: str) -> dict:
    """Run :data:`CHECK` with the shipped model ``name``."""
    state = aits.make_scenario(CHECK["scenario"])
    r = aits.simulate(state, pretrained(name), t_end=CHECK["orbits"] * 2 * math.pi,
                      integrator=CHECK["integrator"], observers=[])
    return {**CHECK, "steps": r.steps, "force_evaluations": r.force_evaluations,
            "energy_error_max": float(r.energy_error_max)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=Path("configs/pretrained.toml"))
    p.add_argument("--name", default="default")
    p.add_argument("--seeds", type=int, nargs="+",
                   help="train once per seed and ship the ensemble (default: the config's seed)")
    p.add_argument("--evaluation", type=Path, help="an evaluation.json to record the summary of")
    args = p.parse_args()
    run_dir = tempfile.mkdtemp()
    cfgs = [TrainConfig.resolve(args.config, {"quiet": True, "plot": False, "run_dir": run_dir,
                                              "run_name": f"{args.name}-{k}",
                                              **({} if seed is None else {"seed": seed})})
            for k, seed in enumerate(args.seeds or [None])]
    results = [run(cfg) for cfg in cfgs]
    finals = [r.summary["final_checkpoint"] for r in results]
    net = TimeStepNet.average([load_model(f) for f in finals])
    path = FOLDER / f"{args.name}.pt"
    save_checkpoint(path, {"model_config": net.config(), "model": net.state_dict(),
                           "config": load_checkpoint(finals[0])["config"]})
    cfg, result = cfgs[0], results[0]
    here = Path(__file__).resolve().parent
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=here).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, cwd=here).stdout.strip())
    record = {"name": args.name, "aits_version": aits.__version__, "git_commit": commit,
              "git_dirty": dirty,
              "seed": cfg.seed, "seeds": [c.seed for c in cfgs], "trained_with": cfg.to_dict(),
              "training_summary": {k: result.summary.get(k) for k in
                                   ("objective", "epochs_completed", "train_time_s", "windows",
                                   "accepted_steps", "retrains")}
              | {"train_time_s_per_seed": [r.summary.get("train_time_s") for r in results]},
              "accuracy_check": accuracy_check(args.name)}
    if args.evaluation is not None:
        report = json.loads(args.evaluation.read_text())
        record["evaluation"] = {"suite": report.get("suite"), "summary": report.get("summary")}
    write_json(path.with_suffix(".json"), record)
    print(f"wrote {path} ({path.stat().st_size} bytes) and {path.with_suffix('.json')}")


if __name__ == "__main__":
    main()
