"""Integrators: how a step of the simulation core turns a proposed ``dt`` into a new state.

Every integrator works on a batch ``(B, N, D)`` (one system is a batch of one)
and keeps a small per-system *carry* (a dict of ``(B,)`` tensors) between steps,
so the core can index, update and scatter it for the systems still running.

* :class:`KDK` (``"kdk"``): kick-drift-kick leapfrog with the policy's ``dt``,
  one force evaluation a step (the end acceleration is the next start's).
* :class:`SymmetricKDK` (``"symmetric"``): time-symmetric adaptive KDK.
  With ``iterations = 0`` (default) the step follows the exactly reversible
  recurrence of adaptive Verlet (Huang & Leimkuhler 1997)
  ``1 / dt_n = 2 / h(s_n) - 1 / dt_{n-1}`` with ``h`` the policy's proposal at the
  synchronised state ``s_n``, reset to ``h`` when ``dt_n`` leaves ``[h / 2, 2 h]``;
  one force evaluation a step. With ``iterations = K >= 1`` it is the iterated
  form of Hut, Makino & McMillan (1995): ``dt = (h(s_n) + h(s_{n+1})) / 2``
  solved by ``K`` trial steps (each counted as a force evaluation).
* :class:`TimeTransformedLeapfrog` (``"ttl"``): the logarithmic-Hamiltonian
  leapfrog (Mikkola & Tanikawa 1999; Preto & Tremaine 1999) in drift-kick-drift
  form with a constant fictitious step ``ds``: drift ``dt = ds/2 / (T + B)``,
  kick ``dt = ds / U`` (``U = -potential > 0``, ``B = -E0``), drift again.
  Explicit and time-symmetric; exact in energy on two-body orbits (only the
  phase errs). ``ds`` is fixed per system at the start, ``h(s_0) U(s_0)`` from the
  policy unless given. One force (and one potential) evaluation a step; the
  step that would pass ``t_end`` is replaced by a KDK step landing on it (its
  force evaluation counted).

The native ops take a signed, non-zero ``dt``; the core keeps ``dt > 0`` and
runs backward by reversing velocities, which every integrator here respects.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from aits.state import SystemState, step

__all__ = ["INTEGRATORS", "Integrator", "KDK", "SymmetricKDK", "TimeTransformedLeapfrog",
           "make_integrator"]

Propose = Callable[[SystemState], Tensor]
Carry = dict[str, Tensor]


class Integrator(Protocol):
    """What the simulation core needs from an integrator."""

    #: the name used on the command line and in tables
    name: str

    def init(self, state: SystemState, propose: Propose, first_dt: Tensor | None) -> Carry:
        """The carry of ``state`` (a batch) before its first step."""
        ...

    def step(self, state: SystemState, carry: Carry, propose: Propose, remaining: Tensor | None,
             scale: float, dt_min: float) -> tuple[SystemState, Tensor, Carry, Tensor]:
        """One step of every system of ``state``.

        Args:
            state: a batch with its acceleration cached (``(B, N, D)``).
            carry: this batch's carry (``(B,)`` tensors).
            propose: ``state -> h (B,)``, the policy behind its guard rails (finite, > 0).
            remaining: ``(B,)`` time left to each system's ``t_end``, or ``None`` when
                no system has one; no step goes past it.
            scale: factor on the step (``< 1`` on a gated retry).
            dt_min: a retried step is not shrunk below this.

        Returns:
            ``(new_state, dt (B,) taken, new_carry, force_evaluations)``, the last an
            int or a ``(B,)`` numpy int array.
        """
        ...


def _shape(dt: Tensor, scale: float, dt_min: float, remaining: Tensor | None) -> Tensor:
    """``dt`` times ``scale`` (not below ``dt_min`` on a retry), then capped at ``remaining``."""
    if scale != 1.0:
        dt = (dt * scale).clamp_min(dt_min) if dt_min > 0 else dt * scale
    return dt if remaining is None else torch.minimum(dt, remaining.to(dt))


class KDK:
    """Kick-drift-kick leapfrog with the proposed ``dt``.

    Args:
        statistics: cache the pair statistics on every end state
            (:func:`aits.state.step`); ``False`` where the policy never reads them.
    """

    name = "kdk"

    def __init__(self, statistics: bool = True) -> None:
        self.statistics = statistics

    def init(self, state: SystemState, propose: Propose, first_dt: Tensor | None) -> Carry:
        return {}

    def step(self, state, carry, propose, remaining, scale, dt_min):
        dt = _shape(propose(state), scale, dt_min, remaining)
        return step(state, dt, statistics=self.statistics), dt, carry, 1

    def __repr__(self) -> str:
        return "KDK()"


class SymmetricKDK:
    """Time-symmetric adaptive KDK (see the module docstring).

    Args:
        iterations: 0 for the one-evaluation reversible recurrence; ``K >= 1`` for
            the iterated form with ``K`` trial steps a step.
        statistics: as :class:`KDK`'s.
    """

    name = "symmetric"

    def __init__(self, iterations: int = 0, statistics: bool = True) -> None:
        if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 0:
            raise ValueError(f"symmetric integrator: iterations must be an int >= 0, "
                             f"got {iterations!r}")
        self.iterations = iterations
        self.statistics = statistics

    def init(self, state: SystemState, propose: Propose, first_dt: Tensor | None) -> Carry:
        # prev_dt = 0 marks "no previous step": the first step takes h (or first_dt)
        prev = torch.zeros(state.batch_shape, dtype=state.dtype, device=state.device)
        first = prev if first_dt is None else first_dt.to(prev).expand(state.batch_shape)
        return {"prev_dt": prev, "first_dt": first.clone()}

    def _recurrence(self, h: Tensor, carry: Carry) -> Tensor:
        prev, first = carry["prev_dt"], carry["first_dt"]
        started = prev > 0
        inv = 2.0 / h - 1.0 / torch.where(started, prev, h)
        dt = torch.where(inv > 0, 1.0 / inv.clamp_min(torch.finfo(h.dtype).tiny), h)
        dt = torch.where((dt < h / 2) | (dt > 2 * h), h, dt)  # the reset
        dt = torch.where(started, dt, h)
        return torch.where(~started & (first > 0), first, dt)

    def step(self, state, carry, propose, remaining, scale, dt_min):
        h = propose(state)
        if self.iterations == 0:
            dt = self._recurrence(h, carry)
        else:
            dt = h
            for _ in range(self.iterations):
                trial = step(state, _shape(dt, 1.0, 0.0, remaining), statistics=self.statistics)
                dt = 0.5 * (h + propose(trial))
        dt = _shape(dt, scale, dt_min, remaining)
        new = step(state, dt, statistics=self.statistics)
        carry = {"prev_dt": dt, "first_dt": torch.zeros_like(dt)}
        return new, dt, carry, 1 + self.iterations

    def __repr__(self) -> str:
        return f"SymmetricKDK(iterations={self.iterations})"


class TimeTransformedLeapfrog:
    """Logarithmic-Hamiltonian leapfrog, drift-kick-drift, constant fictitious step.

    Args:
        ds: the fictitious step (a number or a ``(B,)`` tensor); ``None`` takes
            ``h(s_0) * U(s_0)`` per system from the policy at the start.
        statistics: as :class:`KDK`'s (for the KDK step that lands on ``t_end``).
    """

    name = "ttl"

    def __init__(self, ds: float | Tensor | None = None, statistics: bool = True) -> None:
        if ds is not None and not isinstance(ds, Tensor):
            if not (float(ds) > 0 and math.isfinite(float(ds))):
                raise ValueError(f"ttl integrator: ds must be finite and > 0, got {ds!r}")
        self.ds = ds
        self.statistics = statistics

    @staticmethod
    def _binding(state: SystemState) -> tuple[Tensor, Tensor]:
        """``U = -potential`` and ``B = -E`` of ``state``, ``(B,)`` each."""
        U = -state.potential_energy()
        return U, U - state.kinetic_energy()

    def init(self, state: SystemState, propose: Propose, first_dt: Tensor | None) -> Carry:
        U, B = self._binding(state)
        if not bool((U > 0).all()):
            raise ValueError("ttl integrator: the potential energy must be < 0 (bound pairs)")
        if self.ds is None:
            ds = propose(state) * U
        else:
            ds = torch.as_tensor(self.ds, dtype=state.dtype, device=state.device)
            ds = ds.expand(state.batch_shape).clone()
        return {"ds": ds, "B": B}

    def step(self, state, carry, propose, remaining, scale, dt_min):
        ds, B = carry["ds"] * scale, carry["B"]
        shape = state.batch_shape + (1, 1)
        x, v = state.pos, state.vel
        dt1 = 0.5 * ds / (state.kinetic_energy() + B)
        x = x + v * dt1.reshape(shape)
        mid = state.replace(pos=x)
        U = -mid.potential_energy()
        a = mid.acceleration()
        v = v + a * (ds / U).reshape(shape)
        moved = mid.replace(vel=v)
        dt2 = 0.5 * ds / (moved.kinetic_energy() + B)
        x = x + v * dt2.reshape(shape)
        dt = dt1 + dt2
        new = moved.replace(pos=x, time=state.time + dt.to(torch.float64))
        evals = 1
        over = None if remaining is None else dt > remaining.to(dt)
        if over is not None and bool(over.any()):  # land on t_end with one KDK step of the time left
            landing = step(state, torch.where(over, remaining.to(dt), dt).clamp_min(
                torch.finfo(dt.dtype).tiny), statistics=self.statistics)
            new = SystemState.where(over, landing, new)
            dt = torch.where(over, remaining.to(dt), dt)
            evals = 1 + over.cpu().numpy().astype(np.int64)
        return new, dt, carry, evals

    def __repr__(self) -> str:
        return f"TimeTransformedLeapfrog(ds={self.ds!r})"


INTEGRATORS = {"kdk": KDK, "symmetric": SymmetricKDK, "ttl": TimeTransformedLeapfrog}


def make_integrator(name: str | Integrator, *, symmetric_iterations: int = 0,
                    ds: float | None = None, statistics: bool = True) -> Integrator:
    """An integrator by name (an instance is returned as is); ``statistics``: whether
    its steps cache the pair statistics (:class:`KDK`).

    Raises:
        ValueError: an unknown name (the message lists the valid ones).
    """
    if not isinstance(name, str):
        return name
    if name not in INTEGRATORS:
        raise ValueError(f"unknown integrator {name!r}; valid: {', '.join(INTEGRATORS)}")
    if name == "symmetric":
        return SymmetricKDK(symmetric_iterations, statistics)
    if name == "ttl":
        return TimeTransformedLeapfrog(ds, statistics)
    return KDK(statistics)
