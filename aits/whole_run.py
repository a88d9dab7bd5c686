"""Whole-run training (``objective = "whole-run"``): differentiable rollouts against a
whole-run energy budget (issue 11, item 1).

The two seed phases train each step on its own energy error; what a user judges
is the error of the whole run, ``max_t |E(t) - E(0)| / |E(0)|``, and the steps it
costs. This trainer optimises that directly, by truncated back-propagation
through time:

1. each group of the population (:mod:`aits.population`) is a live batch
   ``(B, N, D)`` that runs on from window to window; a *window* is ``window``
   steps of the configured integrator (``kdk`` or ``symmetric``) with the model's
   ``dt``, recorded by autograd through the native ops;
2. after every step the run's relative energy error is measured against the
   energy the system had when it was drawn (not the window's start), so the
   error a window is judged by includes everything accumulated before it
   (``window_error = "measured"``, the default). ``"bound"`` judges the upper bound
   ``err(start) + |E(t) - E(start)| / |E0|`` (triangle inequality; the first term
   detached) instead: the gradient of ``|E(t) - E0|`` can reward a window whose new
   error cancels the inherited one, the bound's cannot; it also counts an error
   that swings back as new error, which the leapfrog's oscillating errors do every
   orbit, and its models were worse (README, session 11);
3. the window's loss per system is ``cost_weight * log(window * t_unit / sum dt)``
   (the log of the steps per unit time, ``t_unit`` the system's initial time
   scale) plus the mean over its steps of ``relu(log(err / run_budget))^2``; a
   non-finite error costs ``nonfinite_penalty`` with a gradient that shrinks the
   window's steps;
4. one optimiser step per window (the gradient's norm clipped at ``grad_clip``
   when that is > 0); the end state (and the integrator's carry) is detached and
   becomes the next window's start;
5. every ``restart_windows`` windows of a group, or as soon as one of its systems
   has blown up (non-finite, or an error above :data:`~aits.results.FAIL_ABOVE`),
   the group is drawn afresh.

An epoch is ``windows_per_epoch`` windows, the groups taken in turn. The absolute
``dt`` level the model settles at is near the budget; what evaluation judges is
the shape of the schedule, since every policy is tuned to each tolerance by its
own knob (``--dt-scale`` for the model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from aits.checkpoint import CheckpointError, restore_model, validate_checkpoint
from aits.config import ConfigError, TrainConfig, resolve_device, resolve_dtype
from aits.distributed import Group as ProcessGroup
from aits.features import WINDOW_KINDS, FeatureScales
from aits.gate import EnergyGate, energy_scale, relative_energy_error
from aits.history import HistoryBuffer
from aits.integrators import Carry, make_integrator
from aits.population import Group, generalist
from aits.results import FAIL_ABOVE
from aits.state import SystemState
from aits.training import (build_model, build_optimizer, build_spec, build_system,
                           optimiser_step, run_entries)

__all__ = ["WholeRunTrainer", "bounded_error", "time_unit"]


def time_unit(state: SystemState) -> Tensor:
    """A system's dynamical time ``sqrt(r_rms^3 / (G M))`` (``r_rms`` the rms distance
    from the centre of mass: :class:`~aits.features.FeatureScales` ``T0``); ``batch_shape``."""
    return FeatureScales.from_state(state, per_system=True).T0


def bounded_error(E0: Tensor, E_start: Tensor, E: Tensor, E_scale: Tensor, floor: float,
                  inherited: Tensor | None = None) -> Tensor:
    """The bound ``err(start) + |E - E_start| / |E0|`` on the whole-run error
    ``|E - E0| / |E0|`` (denominators as :func:`~aits.gate.relative_energy_error`'s;
    every argument ``(B,)``): what ``window_error = "bound"`` judges a window by.
    ``inherited``: ``err(start)``, when already computed."""
    if inherited is None:
        inherited = relative_energy_error(E0, E_start, E_scale, floor)
    return inherited + relative_energy_error(E0, E - E_start + E0, E_scale, floor)


@dataclass
class _Live:
    """One group's running batch and what its windows are judged against."""

    state: SystemState  # (B, N, D) with its acceleration cached
    carry: Carry
    E0: Tensor  # (B,) energy when drawn
    E_scale: Tensor  # (B,) T + |U| when drawn
    t_unit: Tensor  # (B,)
    history: HistoryBuffer | None  # the past states a window kind's features read
    windows: int = 0  # windows since the draw


def _draw(group: Group, gen: torch.Generator, dtype, device, integrator,
          window_len: int) -> _Live:
    state = group.draw(gen, dtype, device).as_batch().with_acceleration()
    carry = integrator.init(state, None, None)
    return _Live(state, carry, state.total_energy().detach(), energy_scale(state).detach(),
                 time_unit(state).detach(), HistoryBuffer(window_len) if window_len else None)


class _NonFiniteDt(Exception):
    """No finite ``dt`` for the systems ``bad`` (a bool mask): their state is not
    finite, or the model proposed a non-finite ``dt`` for it."""

    def __init__(self, bad: Tensor):
        super().__init__("non-finite dt")
        self.bad = bad


class WholeRunTrainer:
    """A whole-run training run (module docstring); the interface of
    :class:`aits.training.Trainer` that :func:`aits.train.run` uses.

    Attributes:
        initial: the first group's first draw (the rollout check's training system).
        epoch: epochs completed; rounds: windows completed over the whole run.
    """

    def __init__(self, cfg: TrainConfig, device: torch.device | None = None) -> None:
        self.cfg = cfg
        self.device = device if device is not None else resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype)
        self.group = ProcessGroup.current()
        if self.group.active:
            raise ConfigError("objective 'whole-run' trains in one process (run it without "
                              "torchrun)")
        torch.manual_seed(cfg.seed)
        if cfg.population == "generalist":
            self.population = generalist()
        else:
            fixed = build_system(cfg, self.dtype, self.device)
            self.population = [Group("train", lambda gen, dtype, device: fixed)]
        self.integrator = make_integrator(cfg.rollout_integrator)
        self.generators = [torch.Generator().manual_seed(cfg.seed * 1000 + i)
                           for i in range(len(self.population))]
        self.window_len = cfg.history_len if cfg.feature_type in WINDOW_KINDS else 0
        self.live = [self._draw(i) for i in range(len(self.population))]
        self.initial = self.live[0].state
        self.spec = build_spec(cfg, self.initial)
        self.model = build_model(cfg, self.spec).to(device=self.device, dtype=self.dtype)
        self.integrator.statistics = self.model.uses_pair_statistics  # steps cache them if read
        self.optimizer = build_optimizer(cfg, self.model)
        self.gate = EnergyGate(cfg.energy_threshold, cfg.E_lower, cfg.E_upper)
        self.epoch = 0
        self.rounds = 0

    def _draw(self, i: int) -> _Live:
        return _draw(self.population[i], self.generators[i], self.dtype, self.device,
                     self.integrator, self.window_len)

    @property
    def net(self) -> torch.nn.Module:
        return self.model

    # ------------------------------------------------------------------------- windows

    def window_loss(self, live: _Live) -> tuple[Tensor, SystemState, Carry, dict[str, Tensor]]:
        """Run one window from ``live`` with gradients and return its loss (a scalar),
        the end state and carry (not yet detached) and per-step ``dt``, ``err``
        ``(steps, B)`` and the per-system cost ``(B,)`` (detached). ``steps`` is the
        window's length, or fewer where a system's state or its proposed ``dt`` became
        non-finite (the window ends there)."""
        cfg = self.cfg
        self.model.train()

        def propose(s: SystemState) -> Tensor:
            s = s.detach()  # features: observations
            finite = (torch.isfinite(s.pos).flatten(-2).all(-1)
                      & torch.isfinite(s.vel).flatten(-2).all(-1))
            if not bool(finite.all()):  # a blown-up system: its features would be NaN
                raise _NonFiniteDt(~finite)
            dt = self.model.predict_dt(s, live.history, grad=True)
            finite = torch.isfinite(dt)
            if not bool(finite.all()):  # a finite state whose time scale overflowed
                raise _NonFiniteDt(~finite.detach())
            return dt

        state, carry = live.state, live.carry
        floor, bound = self.gate.floor, cfg.window_error == "bound"
        if bound:
            E_start = state.total_energy().detach()
            inherited = relative_energy_error(live.E0, E_start, live.E_scale, floor)
        dts, errs, judged = [], [], []
        stopped = torch.zeros(state.batch_shape, dtype=torch.bool, device=state.device)
        for _ in range(cfg.window):
            before = state
            try:
                state, dt, carry, _ = self.integrator.step(state, carry, propose, None, 1.0,
                                                           0.0)
            except _NonFiniteDt as e:  # the window ends here; the group is drawn afresh
                if not dts:
                    systems = e.bad.nonzero().flatten().tolist()
                    raise RuntimeError(
                        f"whole-run training: the model proposed a non-finite dt for systems "
                        f"{systems} at the start of a window; a drawn system must have finite "
                        "features and time scale") from None
                stopped = e.bad
                break
            if live.history is not None:
                live.history.push(before)
            E = state.total_energy()
            if bound:
                judged.append(bounded_error(live.E0, E_start, E, live.E_scale, floor, inherited))
                E = E.detach()
            errs.append(relative_energy_error(live.E0, E, live.E_scale, floor))
            dts.append(dt)
        dt, err = torch.stack(dts), torch.stack(errs)
        judged_err = torch.stack(judged) if judged else err
        span = dt.sum(0)
        cost = torch.log(dt.shape[0] * live.t_unit / span)
        finite = torch.isfinite(judged_err).all(0) & torch.isfinite(span) & ~stopped
        safe = torch.where(torch.isfinite(judged_err), judged_err,
                           torch.ones_like(judged_err)).clamp_min(1e-30)
        excess = (safe.log() - math.log(cfg.run_budget)).clamp_min(0)
        per_system = cfg.cost_weight * cost + excess.square().mean(0)
        # a blown-up system: a constant penalty whose gradient shrinks its steps
        blown = self.gate.nonfinite_penalty * span / span.detach()
        loss = torch.where(finite, per_system, blown.nan_to_num(0.0)).mean()
        return loss, state, carry, {"dt": dt.detach(), "err": err.detach(),
                                    "cost": cost.detach(), "finite": finite}

    def run_window(self, i: int) -> dict[str, Tensor]:
        """One window of group ``i`` and its optimiser step; the group runs on from the
        (detached) end state, or is drawn afresh when due or blown up."""
        live = self.live[i]
        loss, state, carry, out = self.window_loss(live)
        optimiser_step(self.cfg, self.model, self.optimizer, loss)
        live.windows += 1
        blown = (~out["finite"]) | (out["err"].nan_to_num(math.inf).amax(0) > FAIL_ABOVE)
        if not bool(blown.any()) and live.windows < self.cfg.restart_windows:
            blown = ~self._next_dt_finite(state, live.history)  # else no next window
        out["restarted"] = bool(blown.any()) or live.windows >= self.cfg.restart_windows
        out["blown"] = int(blown.sum())
        out["loss"] = loss.detach()
        out["t0"] = live.state.time.detach()
        if out["restarted"]:
            self.live[i] = self._draw(i)
        else:
            live.state = state.detach()
            live.carry = {k: v.detach() for k, v in carry.items()}
        return out

    @torch.no_grad()
    def _next_dt_finite(self, state: SystemState, history: HistoryBuffer | None) -> Tensor:
        """Whether the model's ``dt`` for ``state`` is finite, per system ``(B,)``: a
        finite state whose time scale overflows (a body flung out to ~1e100) gives an
        infinite one. Eval mode: no dropout, no random numbers drawn."""
        self.model.eval()
        try:
            return torch.isfinite(self.model.predict_dt(state.detach(), history))
        finally:
            self.model.train()

    def run_epoch(self) -> tuple[dict[str, float], dict[str, Tensor]]:
        """``windows_per_epoch`` windows, the groups in turn; returns the epoch's metrics
        (``wr_*``) and the first group's per-step ``time``, ``dt`` and whole-run
        ``rel_dE`` (each ``(steps, B)``) for the run log."""
        cfg = self.cfg
        losses, costs, errs, dts = [], [], [], []
        restarts = blown = 0
        steps: dict[str, list[Tensor]] = {"time": [], "dt": [], "rel_dE": []}
        for _ in range(cfg.windows_per_epoch):
            i = self.rounds % len(self.population)
            out = self.run_window(i)
            self.rounds += 1
            losses.append(float(out["loss"]))
            costs.append(out["cost"].mean())
            errs.append(out["err"].nan_to_num(math.inf).amax())
            dts.append((out["dt"] / self.live[i].t_unit).mean() if not out["restarted"]
                       else out["dt"].new_tensor(math.nan))
            restarts += int(out["restarted"])
            blown += out["blown"]
            if i == 0:
                t = out["t0"] + out["dt"].to(torch.float64).cumsum(0)
                steps["time"].append(t)
                steps["dt"].append(out["dt"])
                steps["rel_dE"].append(out["err"])
        self.epoch += 1
        metrics = {
            "epoch": self.epoch,
            "wr_windows": cfg.windows_per_epoch,
            "wr_loss": sum(losses) / len(losses),
            "wr_steps_per_time": float(torch.stack(costs).exp().mean()),
            "wr_err_max": float(torch.stack(errs).max()),
            "wr_err_median": float(torch.stack(errs).median()),
            "wr_dt_mean": float(torch.stack(dts).nanmean()),
            "wr_restarts": restarts,
            "wr_blown": blown,
        }
        return metrics, {k: torch.cat(v) for k, v in steps.items()}

    # ------------------------------------------------------------------- checkpointing

    def state_dict(self) -> dict:
        """Everything needed to resume: the model, optimiser, generators and every
        group's live batch, carry and reference energies (plain tensors and dicts)."""
        groups = [{"state": g.state.to_dict(), "carry": dict(g.carry), "E0": g.E0,
                   "E_scale": g.E_scale, "t_unit": g.t_unit, "windows": g.windows,
                   "history": [] if g.history is None else
                   [s.to_dict() for s in g.history.states()]}
                  for g in self.live]
        rng = {"torch": torch.get_rng_state(), "sampler": self.generators[0].get_state(),
               "device": self.device.type, "groups": [g.get_state() for g in self.generators]}
        return {
            **run_entries(self, rng),
            "live": groups[0]["state"],
            "history": [],
            "whole_run": groups,
        }

    def load_state_dict(self, d: dict) -> None:
        """Restore a :meth:`state_dict`.

        Raises:
            CheckpointError: ``d`` is malformed or is not a whole-run checkpoint of
                this population.
        """
        try:
            validate_checkpoint(d)
        except CheckpointError as e:
            raise CheckpointError(f"checkpoint state is malformed: {e}") from None
        groups = d.get("whole_run")
        if not isinstance(groups, list) or len(groups) != len(self.population):
            raise CheckpointError("checkpoint is not a whole-run checkpoint of this population "
                                  f"({len(self.population)} groups): resume it with the "
                                  "objective it was written with")
        restore_model(self.model, d["model"])
        try:
            self.optimizer.load_state_dict(d["optimizer"])
            live = []
            for g in groups:
                state = SystemState.from_dict(g["state"], self.device)
                history = HistoryBuffer(self.window_len) if self.window_len else None
                for past in g.get("history", []):
                    if history is None:
                        raise ValueError("it holds past states, and this configuration's "
                                         "features read none")
                    history.push(SystemState.from_dict(past, self.device))
                live.append(_Live(state, {k: v.to(self.device) for k, v in g["carry"].items()},
                                  g["E0"].to(self.device), g["E_scale"].to(self.device),
                                  g["t_unit"].to(self.device), history, int(g["windows"])))
            states = d["rng"]["groups"]
            for gen, s in zip(self.generators, states, strict=True):
                gen.set_state(s)
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint holds an unusable whole-run state: {e}") from None
        self.live = live
        self.epoch, self.rounds = int(d["epoch"]), int(d["rounds"])
        torch.set_rng_state(d["rng"]["torch"])
