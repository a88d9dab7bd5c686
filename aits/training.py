"""Two-phase energy-gated training (MISSION.md, "Two-phase training").

One epoch is Part 1 (trajectory collection on the live system) then Part 2
(generalisation on the states Part 1 accepted). :class:`Trainer` holds everything
a run needs (model, optimiser, gate, live system, history buffer, random
generators) and :meth:`Trainer.state_dict` everything needed to resume it.

**Several systems (``num_orbits = K > 1`` or any batched scenario).** The live
state is a batch of ``B`` systems and Part 1 proceeds in *rounds*, one accepted
step per system each:

1. every system that has not yet passed in this round is stepped from its round
   start state with its predicted ``dt`` and gated on *its own* energy error;
2. a system that passes keeps that step and is not stepped again in this round;
3. if some systems failed, one optimiser step is taken on the mean band loss of
   the failing systems only (passing systems contribute nothing), and the failing
   systems retry from their unchanged start states;
4. when every system has passed, all advance together to their accepted end
   states, the round's start batch is pushed into the (batched) history and, after
   warm-up, each system's start state is recorded for Part 2.

``steps_per_epoch`` counts rounds, so an epoch accepts ``B * steps_per_epoch``
system steps; the retrain cap counts the optimiser steps of one round; warm-up is
the first ``history_len`` rounds of the run. With ``B = 1`` this is exactly the
single-system algorithm. Advancing in rounds keeps one history window per batch
with the same number of real states for every system.

**Part 2** evaluates a whole minibatch with one batched call (states stacked to
``(b, N, D)``): :meth:`Trajectory.errors`, which reuses the features, dynamical
times and start energies computed once per epoch for all recorded states
(:meth:`Trajectory.build`). :func:`replay_errors` is the same evaluation computing
everything in the call, :func:`replay_errors_per_sample` the per-sample loop of
the original system; both are kept for the benchmark and the equivalence tests.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from aits.checkpoint import CheckpointError, restore_model, validate_checkpoint
from aits.config import TrainConfig, resolve_device, resolve_dtype
from aits.distributed import Group, shard_range
from aits.features import WINDOW_KINDS, FeatureScales, FeatureSpec
from aits.gate import EnergyGate, energy_scale, relative_energy_error
from aits.history import HistoryBuffer
from aits.ics import kepler_batch, load_state
from aits.model import TimeStepNet
from aits.scenarios import make_scenario
from aits.state import SystemState, rollout, stack

__all__ = [
    "RetrainLimitError", "Trainer", "Trajectory", "replay_errors",
    "replay_errors_per_sample", "rollout_check",
]

log = logging.getLogger(__name__)

Window = list[SystemState | None]


class RetrainLimitError(RuntimeError):
    """Part 1 retrained one state ``max_retrain_steps`` times and it still fails."""

    def __init__(self, epoch: int, step: int, system: int, rel_dE: float, threshold: float,
                 retrains: int) -> None:
        self.epoch, self.step, self.system = epoch, step, system
        self.rel_dE, self.threshold, self.retrains = rel_dE, threshold, retrains
        super().__init__(
            f"Part 1 gave up at epoch {epoch}, step {step} (counted from 0 within the epoch; "
            f"system {system}): the step still "
            f"fails after {retrains} retrain steps on the same state (max_retrain_steps); "
            f"last rel_dE {rel_dE:.3e} >= energy_threshold {threshold:.3e}. Lower dt_init or "
            f"lr, or raise max_retrain_steps (0 = unlimited)."
        )


# ------------------------------------------------------------------------------ building


def build_system(cfg: TrainConfig, dtype: torch.dtype, device: torch.device) -> SystemState:
    """The training system as a batch ``(B, N, D)`` with its acceleration cached."""
    G = cfg.physics.G
    if cfg.num_orbits > 1:
        state = kepler_batch(cfg.num_orbits, cfg.e_range, cfg.a_range, seed=cfg.seed, G=G,
                             softening=cfg.softening or 0.0, dtype=dtype, device=device)
    elif cfg.ic_file:
        state = load_state(cfg.ic_file, softening=cfg.softening or 0.0, G=G, dtype=dtype,
                           device=device)
    else:
        # a given softening or G replaces the scenario's own (G keeps the orbits' shapes)
        state = make_scenario(cfg.scenario, dtype=dtype, device=device, seed=cfg.seed,
                              softening=cfg.softening, G=cfg.gravitational_constant)
    return state.as_batch().with_acceleration()


def build_spec(cfg: TrainConfig, initial: SystemState) -> FeatureSpec:
    """Feature choice of ``cfg``; ``fixed`` scales not set by hand come from ``initial``."""
    scales = None
    if cfg.normalization == "fixed":
        derived = FeatureScales.from_state(initial).to_dict()
        scales = FeatureScales(**{k: getattr(cfg, k) or v for k, v in derived.items()})
    history = None if cfg.history_type == "none" else cfg.history_type
    window = history is not None or cfg.feature_type in WINDOW_KINDS
    return FeatureSpec(kind=cfg.feature_type, history=history,
                       history_len=cfg.history_len if window else 0,
                       normalize=cfg.normalization, scales=scales)


def build_model(cfg: TrainConfig, spec: FeatureSpec) -> TimeStepNet:
    return TimeStepNet(spec, hidden=cfg.hidden, activation=cfg.activation, dropout=cfg.dropout,
                       fourier_features=cfg.fourier_features, fourier_sigma=cfg.fourier_sigma,
                       output=cfg.output, dt_init=cfg.dt_init, seed=cfg.seed)


def optimiser_step(cfg: TrainConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   loss: Tensor) -> None:
    """Back-propagate ``loss`` (a scalar) and take one step, the gradients' total norm
    clipped at ``cfg.grad_clip`` first when it is > 0."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    return cls[cfg.optimizer](model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


# ------------------------------------------------------------------------- batch helpers


def _take_window(window: Sequence[SystemState] | None, index: Tensor | int) -> Window | None:
    return None if window is None else [s.index(index) for s in window]


# ------------------------------------------------------------------------------- Part 2


def replay_errors(model: TimeStepNet, states: SystemState, window: Sequence[SystemState] | None,
                  gate: EnergyGate, n_steps: int = 1) -> tuple[Tensor, Tensor]:
    """Predict, step and gate a whole minibatch in one batched call.

    Args:
        states: ``(b, N, D)`` start states; window: their history window (``K``
            states of ``(b, N, D)``) or ``None`` without history features.
    Returns:
        ``(dt, rel_dE)``, each ``(b,)``, differentiable in the model parameters.
    """
    dt = model.predict_dt(states, window, grad=True)
    return dt, gate.error(states, rollout(states, dt, n_steps))


def replay_errors_per_sample(model: TimeStepNet, states: SystemState,
                             window: Sequence[SystemState] | None, gate: EnergyGate,
                             n_steps: int = 1) -> tuple[Tensor, Tensor]:
    """The same as :func:`replay_errors` with a Python loop over the samples (the
    original system's way); for benchmarks and tests only."""
    dts, rels = [], []
    for i in range(states.batch_size):
        s = states.index(i)
        dt = model.predict_dt(s, _take_window(window, i), grad=True)
        dts.append(dt)
        rels.append(gate.error(s, rollout(s, dt, n_steps)))
    return torch.stack(dts), torch.stack(rels)


@dataclass(frozen=True)
class Trajectory:
    """The states Part 1 recorded in one epoch, stacked, with what Part 2 needs of
    them precomputed once (they never change; features are observations without
    gradient, so computing them per draw would only repeat the same work).

    Attributes:
        states: ``(M, N, D)`` start states of the accepted steps (detached).
        window: their history windows, ``K`` states of ``(M, N, D)``, or ``None``
            when the features use no history.
        dt: ``(M,)`` the accepted steps.
        features: ``(M, F)`` network inputs of each state (with its window).
        t_dyn: ``(M,)`` dynamical times for ``output="dynamical"``, else ``None``.
        E0, E_scale: ``(M,)`` total energy and energy scale ``T + |U|`` (gate).
    """

    states: SystemState
    window: list[SystemState] | None
    dt: Tensor
    features: Tensor
    t_dyn: Tensor | None
    E0: Tensor
    E_scale: Tensor

    def __len__(self) -> int:
        return self.states.batch_size

    @classmethod
    @torch.no_grad()
    def build(cls, model: TimeStepNet, states: SystemState, window: list[SystemState] | None,
              dt: Tensor) -> Trajectory:
        """Stack-ready pieces -> a trajectory with features, ``t_dyn`` and energies."""
        features, t_dyn = model.inputs(states, window)
        return cls(states, window, dt, features, t_dyn,
                   states.total_energy(), energy_scale(states))

    def errors(self, model: TimeStepNet, index: Tensor, gate: EnergyGate,
               n_steps: int = 1) -> tuple[Tensor, Tensor]:
        """Part 2's batched evaluation of samples ``index (b,)``: ``(dt, rel_dE)``,
        each ``(b,)``; equal to :func:`replay_errors` on the same states."""
        t_dyn = None if self.t_dyn is None else self.t_dyn[index]
        states = self.states.index(index)
        dt = model(self.features[index], t_dyn).to(states.dtype)
        end = rollout(states, dt, n_steps)
        return dt, relative_energy_error(self.E0[index], end.total_energy(),
                                         self.E_scale[index], gate.floor)


# ------------------------------------------------------------------------------ trainer


def run_entries(trainer: Trainer | Any, rng: dict) -> dict:
    """The checkpoint entries every trainer writes (config, counters, model, optimiser,
    RNG states); each trainer adds its systems (:data:`aits.checkpoint._ENTRIES`)."""
    return {"config": trainer.cfg.to_dict(), "epoch": trainer.epoch, "rounds": trainer.rounds,
            "model_config": trainer.model.config(), "model": trainer.model.state_dict(),
            "optimizer": trainer.optimizer.state_dict(), "rng": rng}


class Trainer:
    """A training run: build from a config, then call :meth:`run_epoch` repeatedly.

    Attributes:
        live: the live system, a batch ``(B, N, D)`` with its acceleration cached.
        history: the :class:`HistoryBuffer` (lives across epochs).
        epoch: epochs completed; rounds: Part 1 rounds accepted over the whole run.
    """

    def __init__(self, cfg: TrainConfig, device: torch.device | None = None) -> None:
        """Build everything from ``cfg`` (validated). Seeds torch's global RNG with
        ``cfg.seed`` (initial weights; dropout draws from it).

        In a process group (:mod:`aits.distributed`) ``initial`` is still the whole
        batch, ``live`` and the history hold this rank's shard, and the model is
        wrapped in DistributedDataParallel (:attr:`net`). ``device`` overrides
        ``cfg.device`` (the rank's own GPU).
        """
        self.cfg = cfg
        self.device = device if device is not None else resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype)
        self.group = Group.current()
        torch.manual_seed(cfg.seed)
        self.initial = build_system(cfg, self.dtype, self.device)
        lo, hi = shard_range(self.initial.batch_size, self.group.rank, self.group.world)
        self.shard = torch.arange(lo, hi, device=self.device)
        self.spec = build_spec(cfg, self.initial)
        self.model = build_model(cfg, self.spec).to(device=self.device, dtype=self.dtype)
        self._ddp = None
        if self.group.active:
            from torch.nn.parallel import DistributedDataParallel

            self._ddp = DistributedDataParallel(_Forward(self.model))
        self.optimizer = build_optimizer(cfg, self.model)
        self.gate = EnergyGate(cfg.energy_threshold, cfg.E_lower, cfg.E_upper)
        self.live = self._local(self.initial)
        self.history = HistoryBuffer(cfg.history_len)
        self.sampler = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.epoch = 0
        self.rounds = 0

    @property
    def net(self) -> torch.nn.Module:
        """What the training steps call: the DDP wrapper when distributed, else the model."""
        return self.model if self._ddp is None else self._ddp

    @property
    def uses_history(self) -> bool:
        return self.spec.window_len > 0

    def _window(self) -> Window | None:
        return self.history.window() if self.uses_history else None

    def _optimise(self, loss: Tensor) -> None:
        optimiser_step(self.cfg, self.model, self.optimizer, loss)

    def _local(self, state: SystemState) -> SystemState:
        """This rank's shard of a whole batch (the batch itself in one process)."""
        return state.index(self.shard) if self.group.active else state

    def _gathered(self, state: SystemState) -> SystemState:
        """The whole batch from every rank's shard (collective; identity in one process)."""
        if not self.group.active:
            return state
        return state.map_tensors(self.group.gather, per_system=True)

    def _predict(self, state: SystemState, window: Window | None) -> Tensor:
        """``dt`` of the live shard, through DDP's forward when distributed (its
        gradient hooks are armed only by a forward of the wrapper)."""
        if self.group.active:
            return self.net(state, window, predict=True)
        return self.model.predict_dt(state, window)

    def _masked_mean_loss(self, rel: Tensor, dt: Tensor, failing: Tensor,
                          n_failing: Tensor) -> Tensor:
        """Band loss summed over the ``failing`` samples of this rank, divided by the
        global number of failing samples ``n_failing`` times the number of ranks:
        after DDP's gradient mean over ranks, the gradient of the mean loss over
        every failing sample of every rank (exactly the single-process loss in one
        process)."""
        total = (self.gate.loss(rel, dt) * failing).sum()
        if self.group.active:
            total = total * self.group.world
        return total / n_failing

    # -------------------------------------------------------------------------- Part 1

    def collect(self) -> tuple[Trajectory | None, dict[str, float], dict[str, Tensor]]:
        """Part 1 of epoch ``self.epoch + 1``: ``steps_per_epoch`` accepted rounds.

        Returns:
            the recorded :class:`Trajectory` (``None`` when nothing was recorded; this
            rank's shard when distributed); metrics (``p1_*``, of the whole batch); per
            accepted step ``time``, ``dt``, ``rel_dE``, each ``(steps_per_epoch, B)`` over
            the whole batch (gathered from every rank when distributed).
        Raises:
            RetrainLimitError: a state still fails after ``max_retrain_steps`` retrains.
        """
        cfg, gate, model = self.cfg, self.gate, self.model
        model.train()
        B = self.live.batch_size
        rec_states, rec_windows, rec_dt = [], [], []
        step_t, step_dt, step_rel = [], [], []
        retrains = raised = 0
        rejected = torch.zeros((), dtype=torch.long, device=self.device)
        for s in range(cfg.steps_per_epoch):
            start, window = self.live, self._window()
            done = torch.zeros(B, dtype=torch.bool, device=self.device)
            kept, kept_dt, kept_rel = None, None, None
            E0, E_scale = start.total_energy(), energy_scale(start)
            cap = cfg.max_retrain_steps
            for attempt in range(cap + 1) if cap else itertools.count():
                dt = self._predict(start, window)
                end = rollout(start, dt, cfg.n_steps)
                rel = relative_energy_error(E0, end.total_energy(), E_scale, gate.floor)
                new = gate.passes(rel) & ~done
                end_d, dt_d, rel_d = end.detach(), dt.detach(), rel.detach()
                if kept is None:
                    kept, kept_dt, kept_rel = end_d, dt_d, rel_d
                else:
                    kept = SystemState.where(new, end_d, kept)
                    kept_dt = torch.where(new, dt_d, kept_dt)
                    kept_rel = torch.where(new, rel_d, kept_rel)
                done = done | new
                failing = ~done
                n_failing = self.group.sum(failing.sum())  # all ranks: the same decision
                if int(n_failing) == 0:  # the accept/reject decision: one host sync per attempt
                    break
                rejected += failing.sum()
                if attempt == cap:
                    self._raise_retrain_limit(s, failing, rel_d, attempt)
                self._optimise(self._masked_mean_loss(rel, dt, failing, n_failing))
                retrains += 1
            if cfg.band == "two-sided":
                raised += self._raise_small_steps(start, window, kept_rel)
            if self.rounds >= cfg.history_len:
                rec_states.append(start)
                rec_windows.append(window)
                rec_dt.append(kept_dt)
            self.history.push(start)
            self.live = kept
            self.rounds += 1
            step_t.append(start.time)
            step_dt.append(kept_dt)
            step_rel.append(kept_rel)
        # the whole batch's steps on every rank (system index = global system)
        steps = {"time": self.group.gather(torch.stack(step_t), 1),
                 "dt": self.group.gather(torch.stack(step_dt), 1),
                 "rel_dE": self.group.gather(torch.stack(step_rel), 1)}
        rejected = self.group.sum(rejected)
        B = B * self.group.world
        traj = None
        if rec_states:
            window = None
            if self.uses_history:
                window = [stack([w[k] for w in rec_windows]) for k in range(self.cfg.history_len)]
            traj = Trajectory.build(model, stack(rec_states), window, torch.cat(rec_dt))
        metrics = {
            "p1_accepted": cfg.steps_per_epoch * B,
            "p1_recorded": 0 if traj is None else len(traj) * self.group.world,
            "p1_retrains": retrains,
            "p1_raised": raised,
            "p1_rejected": int(rejected),
            "p1_acceptance": cfg.steps_per_epoch * B / (cfg.steps_per_epoch * B + int(rejected)),
            "p1_rel_dE_mean": float(steps["rel_dE"].mean()),
            "p1_rel_dE_max": float(steps["rel_dE"].max()),
            "p1_dt_mean": float(steps["dt"].mean()),
            "p1_dt_min": float(steps["dt"].min()),
            "p1_dt_max": float(steps["dt"].max()),
        }
        return traj, metrics, steps

    def _raise_small_steps(self, start: SystemState, window: Window | None, rel: Tensor) -> int:
        """The two-sided band: one optimiser step on the band loss of the systems whose
        accepted step fell below ``E_lower`` (which pushes their ``dt`` up); returns 1
        when it was taken, else 0. The accepted steps stand."""
        low = rel < self.gate.E_lower
        n_low = self.group.sum(low.sum())
        if int(n_low) == 0:
            return 0
        dt = self._predict(start, window)
        again = self.gate.error(start, rollout(start, dt, self.cfg.n_steps))
        self._optimise(self._masked_mean_loss(again, dt, low, n_low))
        return 1

    def _raise_retrain_limit(self, step: int, failing: Tensor, rel: Tensor,
                             retrains: int) -> None:
        """Raise :class:`RetrainLimitError` for the worst failing system of the whole
        batch (every rank raises the same error)."""
        worst_rel = torch.where(failing, rel.nan_to_num(math.inf), -1)
        local = int(worst_rel.argmax())
        rels = self.group.gather(worst_rel[local].reshape(1))
        owner = int(rels.argmax())
        system = int(self.group.gather(self.shard[local].reshape(1))[owner])
        last = float(self.group.gather(rel[local].reshape(1))[owner])
        raise RetrainLimitError(self.epoch + 1, step, system, last, self.cfg.energy_threshold,
                                retrains)

    # -------------------------------------------------------------------------- Part 2

    def replay(self, traj: Trajectory | None) -> dict[str, float]:
        """Part 2 on ``traj``: draw minibatches (without replacement) until one
        passes entirely, training on the failing samples, at most ``replay_steps``
        draws. Skipped (``p2_skipped``) below ``min_replay_size`` recorded states."""
        cfg = self.cfg
        M = 0 if traj is None else len(traj) * self.group.world  # global sample count
        if M == 0 or M < cfg.min_replay_size:
            return {"p2_skipped": True, "p2_converged": False, "p2_iterations": 0,
                    "p2_pass_rate_first": math.nan, "p2_pass_rate_last": math.nan}
        self.model.train()
        b = min(cfg.replay_batch_size, M)
        rates: list[float] = []
        for _ in range(cfg.replay_steps):
            idx = torch.randperm(M, generator=self.sampler, device=self.device)[:b]
            idx, weight = self._local_samples(idx)
            dt, rel = traj.errors(self.net, idx, self.gate, cfg.n_steps)
            ok = self.gate.passes(rel)
            failing = ~ok & weight
            if self.group.active:  # one all-reduce: every rank sees the same count
                n_ok = self.group.sum((ok & weight).sum())
                n_failing = b - n_ok
                rates.append(float(n_ok.to(rel.dtype) / b))  # the converged decision: one sync
            else:
                n_failing = failing.sum()
                rates.append(float(ok.to(rel.dtype).mean()))  # the converged decision: one sync
            if cfg.band == "two-sided":  # too small a step trains too (not counted as failing)
                failing = failing | ((rel < self.gate.E_lower) & weight)
                n_failing = self.group.sum(failing.sum())
                if int(n_failing) == 0:
                    break
            elif rates[-1] == 1.0:
                break
            self._optimise(self._masked_mean_loss(rel, dt, failing, n_failing))
        return {"p2_skipped": False, "p2_converged": rates[-1] == 1.0,
                "p2_iterations": len(rates), "p2_pass_rate_first": rates[0],
                "p2_pass_rate_last": rates[-1]}

    def _local_samples(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """The drawn global indices ``idx`` (``round * B + system``) that live in this
        rank's shard, as indices into its trajectory (``round * K + local system``),
        in draw order, with a weight mask; a rank with none gets one sample of
        weight zero (it must still take part in DDP's backward)."""
        if not self.group.active:
            return idx, torch.ones_like(idx, dtype=torch.bool)
        K = len(self.shard)
        B = K * self.group.world
        rnd, system = idx // B, idx % B
        mine = system // K == self.group.rank
        local = rnd[mine] * K + system[mine] % K
        if len(local) == 0:
            return idx.new_zeros(1), torch.zeros(1, dtype=torch.bool, device=idx.device)
        return local, torch.ones_like(local, dtype=torch.bool)

    def run_epoch(self) -> tuple[dict[str, float], dict[str, Tensor]]:
        """Part 1 then Part 2; returns the epoch's metrics and per-step arrays."""
        traj, m1, steps = self.collect()
        m2 = self.replay(traj)
        self.epoch += 1
        return {"epoch": self.epoch, **m1, **m2}, steps

    # ------------------------------------------------------------------- checkpointing

    def state_dict(self) -> dict:
        """Everything needed to resume, as plain tensors, numbers, dicts and lists.

        Distributed: a collective (every rank must call it); the live batch and the
        history are gathered whole, so any number of processes can resume from it."""
        rng = {"torch": torch.get_rng_state(), "sampler": self.sampler.get_state(),
               "device": self.device.type}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            **run_entries(self, rng),
            "live": self._gathered(self.live).to_dict(),
            "history": [self._gathered(s).to_dict() for s in self.history.states()],
        }

    def load_state_dict(self, d: dict) -> None:
        """Restore a :meth:`state_dict` (config already applied by the caller).

        Raises:
            CheckpointError: ``d`` is not a well-formed state (see
                :func:`aits.checkpoint.validate_checkpoint`) or does not fit this trainer.
        """
        try:
            validate_checkpoint(d)
        except CheckpointError as e:
            raise CheckpointError(f"checkpoint state is malformed: {e}") from None
        restore_model(self.model, d["model"])
        try:
            self.optimizer.load_state_dict(d["optimizer"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint optimizer state does not fit this optimizer: "
                                  f"{e}") from None
        try:
            live = SystemState.from_dict(d["live"], self.device)
            history = [SystemState.from_dict(s, self.device) for s in d["history"]]
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint holds an unusable system state: {e}") from None
        if live.batch_size != self.initial.batch_size:
            raise CheckpointError(f"checkpoint live system has {live.batch_size} systems, the "
                                  f"config builds {self.initial.batch_size}")
        self.epoch, self.rounds = int(d["epoch"]), int(d["rounds"])
        self.live = self._local(live)
        self.history.reset()
        for s in history:
            self.history.push(self._local(s))
        rng = d["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["device"] != self.device.type:  # other generators: not transferable
            log.warning("checkpoint was written on %s, resuming on %s: the minibatch sampler "
                        "is re-seeded, so the run is not bit-identical to an uninterrupted one",
                        rng["device"], self.device.type)
            return
        try:
            self.sampler.set_state(rng["sampler"])
            if self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
        except (KeyError, TypeError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint RNG state is unusable: {e}") from None


class _Forward(torch.nn.Module):
    """The model as DDP wraps it: ``forward(features, t_dyn)`` as the model's own,
    ``forward(state, window, predict=True)`` as :meth:`TimeStepNet.predict_dt`, so
    that both Part 1 and Part 2 go through DDP's forward."""

    def __init__(self, model: TimeStepNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args, predict: bool = False) -> Tensor:
        return self.model.predict_dt(*args) if predict else self.model(*args)


# ------------------------------------------------------------------------ rollout check


def rollout_check(model: TimeStepNet, state: SystemState, gate: EnergyGate,
                  steps: int, progress: Any = None) -> dict[str, Any]:
    """Run ``state`` (one system or a batch) ``steps`` steps with the model's ``dt``
    (eval mode, no rejection) through :func:`aits.simulation.simulate` and measure how
    the gate would have judged each step.

    Args:
        progress: an open tqdm bar to advance by the steps taken (``None``: no bar).

    Returns:
        ``pass_fraction`` (steps with rel_dE < threshold, over all systems),
        ``mean_dt``, ``min_dt``, ``max_rel_dE`` (per step), ``final_rel_dE`` (whole
        run: ``|E_end - E_0| / |E_0|``, worst system), ``t_end`` (mean time reached),
        ``steps`` (taken by the system that took fewest), ``status`` (``"ok"``, or
        ``"diverged"`` when a system's whole-run ``|dE/E|`` passed
        :data:`~aits.simulation.FAIL_ABOVE`), ``diverged`` (how many systems) and
        ``note`` (where the first diverged; ``""`` when ok). A system the model loses
        (a non-finite state, or a ``dt`` that is not finite and > 0, e.g. after an
        ejection) or that diverges stops there; its steps not taken count as failed
        in ``pass_fraction``.
    """
    from aits.observers import Progress
    from aits.policies import ModelPolicy
    from aits.simulation import simulate

    was_training = model.training
    try:
        result = simulate(state.as_batch(), ModelPolicy(model), steps=steps, gate=gate,
                          observers=[] if progress is None else [Progress(bar=progress)])
    finally:
        model.train(was_training)
    runs = result.systems
    taken = sum(r.steps for r in runs)
    if progress is not None:  # the steps the stopped systems did not take
        progress.update(steps * len(runs) - taken)
    diverged = [r for r in runs if r.diverged]
    return {"pass_fraction": sum(r.gate_passes for r in runs) / (max(steps, 1) * len(runs)),
            "mean_dt": sum(r.dt_sum for r in runs) / max(sum(r.dt_steps for r in runs), 1),
            "min_dt": min(r.dt_min for r in runs),
            "max_rel_dE": max(r.step_error_max for r in runs),
            "final_rel_dE": max(r.energy_error_final for r in runs),
            "t_end": sum(r.stop_time for r in runs) / len(runs),
            "steps": min(r.steps for r in runs),
            "status": "diverged" if diverged else "ok", "diverged": len(diverged),
            "note": diverged[0].divergence_note if diverged else ""}
