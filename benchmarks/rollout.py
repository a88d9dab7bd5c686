"""Simulation-side benchmark cases, shared by ``suite.py`` and ``test_rollout.py``.

* :func:`model_policy_cost` — one model-policy step (features + network + leapfrog
  step, and the history push of a model that reads past states) against one force
  evaluation on a Plummer sphere (float64, CPU; the suite's target: <= 1.5x at
  N = 1024 for the default network, issue 12's <= 1.2x for the shipped whole-run
  models), with the parts timed separately.
* :func:`aarseth_derivative_cost` — the Aarseth criterion's derivative pass
  (:func:`aits.ops.aarseth_derivatives`) against one force evaluation on the same
  state (the target: <= 3x at N = 1024, float64, CPU), checked against
  :mod:`aits.reference` first.
* :func:`rollout_cost` — wall time per step of :func:`aits.simulation.simulate`
  (policy, guards off, step; energy diagnostics off) for one policy.
* :func:`training_throughput` — accepted Part 1 steps per second of the default
  training configuration (first epoch from scratch, and the epoch after it).

The model is the default training network (``TrainConfig()``: its features,
normalisation and output), untrained unless a checkpoint is given: the cost of a
step does not depend on the weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from aits import reference
from aits.config import TrainConfig, from_mapping
from aits.features import min_freefall_time
from aits.history import HistoryBuffer
from aits.ics import figure_eight, plummer
from aits.model import TimeStepNet
from aits.ops import aarseth_derivatives
from aits.policies import CLASSICAL, ModelPolicy, Policy, make_policy
from aits.simulation import simulate
from aits.state import SystemState, step
from aits.training import Trainer, build_model, build_spec

#: parameters of the classical policies in the cost runs (cost does not depend on them)
PARAMS = {"fixed": {"dt": 1e-3}, "freefall": {"eta": 0.02}, "collisional": {"eta": 0.02},
          "aarseth": {"eta": 0.01}}
ROLLOUT_POLICIES = ("model", "fixed") + CLASSICAL


def wall_time(fn: Callable[[], object], device: str = "cpu") -> float:
    """Seconds of one call (the device synchronised before and after)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def best_time(fn: Callable[[], object], repeats: int = 5, device: str = "cpu") -> float:
    """Best wall time of ``repeats`` calls after one warm-up call (seconds)."""
    fn()
    return min(wall_time(fn, device) for _ in range(repeats))


def best_times_interleaved(fns: dict[str, Callable[[], object]], repeats: int = 20,
                           device: str = "cpu") -> dict[str, float]:
    """Best wall time (seconds) of each function over ``repeats`` rounds that call
    them in turn, after one warm-up call each: load from other processes hits all
    of them alike, so their ratios hold on a shared machine."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            best[name] = min(best[name], wall_time(fn, device))
    return best


def system(n: int, device: str = "cpu", dtype: torch.dtype = torch.float64) -> SystemState:
    """The figure-eight for ``n == 3``, else a Plummer sphere (softening 0.01, seed 0)."""
    if n == 3:
        return figure_eight(dtype=dtype, device=device)
    return plummer(n, seed=0, softening=0.01, dtype=dtype, device=device)


def model_net(state: SystemState, checkpoint: str | Path | None = None) -> TimeStepNet:
    """The checkpoint's network, or the default training network built for ``state``."""
    if checkpoint is not None:
        return ModelPolicy.from_checkpoint(checkpoint, device=state.device, dtype=state.dtype).net
    cfg = TrainConfig()
    net = build_model(cfg, build_spec(cfg, state))
    return net.to(device=state.device, dtype=state.dtype).eval()


def policy_for(name: str, state: SystemState, checkpoint: str | Path | None = None) -> Policy:
    if name == "model":
        return ModelPolicy(model_net(state, checkpoint))
    return make_policy(name, **PARAMS[name])


@torch.no_grad()
def model_policy_cost(n: int = 1024, device: str = "cpu", checkpoint: str | Path | None = None,
                      repeats: int = 7) -> dict[str, float]:
    """Seconds of one force evaluation, of the model-policy step and of its parts,
    and ``ratio`` = model-policy step / force evaluation."""
    # a start state as a rollout has it: the previous step cached acc and the pair statistics
    state = step(system(n, device).with_acceleration(), 1e-4)
    policy = ModelPolicy(model_net(state, checkpoint))
    net = policy.net
    # a model that reads past states (history features, the encounter-history kind)
    # gets a full window of its own steps (their span decides which bodies take exact
    # derivatives), and its step includes the push that simulate makes
    history = HistoryBuffer(policy.history_len) if policy.history_len else None
    for _ in range(policy.history_len):
        history.push(state)
        state = step(state, policy(state, history), statistics=policy.uses_pair_statistics)

    # the push goes to a buffer of its own: pushing the same state into the policy's
    # would leave its window with repeated times (no derivatives: the exact path)
    pushed = HistoryBuffer(policy.history_len) if policy.history_len else None

    def model_step() -> SystemState:
        new = step(state, policy(state, history), statistics=policy.uses_pair_statistics)
        if pushed is not None:
            pushed.push(state, copy=False)
        return new

    # the network's inputs as the policy forms them: features and its time scale
    # (free-fall for "dynamical", Aarseth's for "aarseth", None otherwise)
    feats, t_dyn = net.inputs(state, history)
    window = None if history is None else history.window()
    t = {
        "force_evaluation": best_time(state.gravity_acceleration, repeats, device),
        "features": best_time(lambda: net.inputs(state, window), repeats, device),
        "network": best_time(lambda: net(feats, t_dyn), repeats, device),
        # the steps simulate takes: the fixed-dt policy's, and the model's, which caches
        # the pair statistics only where the model reads them
        "leapfrog_step": best_time(lambda: step(state, 1e-4, statistics=False), repeats, device),
        "model_policy_step": best_time(model_step, repeats, device),
    }
    if net.output == "dynamical":
        t["free_fall_time"] = best_time(lambda: min_freefall_time(state), repeats, device)
    t["ratio"] = t["model_policy_step"] / t["force_evaluation"]
    return t


@torch.no_grad()
def aarseth_derivative_cost(n: int = 1024, device: str = "cpu", repeats: int = 20,
                            dtype: torch.dtype = torch.float64) -> dict[str, float]:
    """Seconds of one force evaluation and of one Aarseth derivative pass (acc, jerk,
    snap, crackle: what :class:`~aits.policies.AarsethPolicy` computes per call) on
    one Plummer sphere, timed interleaved, and ``ratio`` = derivative pass / force
    evaluation. The op is first checked against :mod:`aits.reference` at N = 200
    (float64, max relative difference <= 1e-12; else RuntimeError)."""
    check = system(200, device, torch.float64)
    got = aarseth_derivatives(check.pos, check.vel, check.mass, check.softening, check.G)
    want = reference.aarseth_derivatives(check.pos, check.vel, check.mass, check.softening,
                                         check.G)
    for name, g, w in zip(("acc", "jerk", "snap", "crackle"), got, want):
        err = float((g - w).abs().max() / w.abs().max())
        if not err <= 1e-12:
            raise RuntimeError(f"aarseth_derivatives {name} differs from aits.reference by {err:.2e}")
    s = system(n, device, dtype)
    t = best_times_interleaved({
        "force_evaluation": s.gravity_acceleration,
        "aarseth_derivatives": lambda: aarseth_derivatives(s.pos, s.vel, s.mass, s.softening, s.G),
    }, repeats, device)
    t["ratio"] = t["aarseth_derivatives"] / t["force_evaluation"]
    return t


def rollout_cost(policy: str, n: int, steps: int, device: str = "cpu",
                 checkpoint: str | Path | None = None) -> float:
    """Seconds per step of ``simulate`` with ``policy`` (diagnostics off), best of two runs."""
    state = system(n, device)
    pol = policy_for(policy, state, checkpoint)
    return min(simulate(state, pol, steps=steps, diagnostics=False, observers=[]).wall_time_s
               for _ in range(2)) / steps


def training_throughput(steps_per_epoch: int = 100, device: str = "cpu") -> dict[str, float]:
    """Accepted Part 1 steps per second of the default configuration (``steps_per_epoch``
    changed), for the first epoch (from scratch, with its retrains) and the second."""
    trainer = Trainer(from_mapping({"steps_per_epoch": steps_per_epoch, "device": device,
                                    "quiet": True, "plot": False}))
    out = {}
    for epoch in (1, 2):
        t0 = time.perf_counter()
        traj, metrics, _ = trainer.collect()
        seconds = time.perf_counter() - t0
        out[f"epoch{epoch}_steps_per_s"] = metrics["p1_accepted"] / seconds
        out[f"epoch{epoch}_retrains"] = metrics["p1_retrains"]
        trainer.replay(traj)
        trainer.epoch += 1
    return out
