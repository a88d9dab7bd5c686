"""The energy gate: relative energy error of a step, pass test, band loss.

``rel_dE = |E1 - E0| / max(|E0|, floor * (T0 + |U0|), tiny)``.

The plain ``|E1 - E0| / |E0|`` of MISSION.md blows up for a system whose total
energy is near zero (a marginally bound cluster, a random system). The
denominator is therefore floored at ``floor`` (default 1e-3) times the system's
energy *scale* ``T0 + |U0|`` (kinetic plus absolute potential energy, which only
vanishes for an empty, static system), and at the smallest positive float. For
an ordinary bound system ``|E0| >= (T0 + |U0|) / 3`` by the virial theorem, so
the floor changes nothing and ``rel_dE`` is exactly ``|dE| / |E0|``.

A step *passes* when ``rel_dE < threshold`` (NaN and inf never pass). The band
loss is zero while ``log rel_dE`` lies in ``[log E_lower, log E_upper]`` and
quadratic in the log outside; a non-finite ``rel_dE`` gets ``nonfinite_penalty``.
All functions are batched: every tensor has shape ``batch_shape``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from aits.state import SystemState

__all__ = [
    "DEFAULT_E_LOWER",
    "DEFAULT_E_UPPER",
    "DEFAULT_FLOOR",
    "DEFAULT_NONFINITE_PENALTY",
    "DEFAULT_THRESHOLD",
    "EnergyGate",
    "band_loss",
    "energy_scale",
    "passes",
    "relative_energy_error",
    "step_energy_error",
]

DEFAULT_THRESHOLD = 2e-4
DEFAULT_E_LOWER = 1e-6
DEFAULT_E_UPPER = 1e-4
DEFAULT_FLOOR = 1e-3
DEFAULT_NONFINITE_PENALTY = 1e4
#: rel_dE is clamped here before the log (an exactly conserved energy is finite loss).
_REL_MIN = 1e-30


def relative_energy_error(
    E0: Tensor, E1: Tensor, energy_scale: Tensor | None = None, floor: float = DEFAULT_FLOOR
) -> Tensor:
    """``|E1 - E0| / max(|E0|, floor * energy_scale, tiny)``; shape of ``E0``.

    ``energy_scale`` is ``T0 + |U0|`` (see :func:`energy_scale`); without it the
    denominator is ``max(|E0|, tiny)``. Non-finite energies give a non-finite result.
    """
    denom = E0.abs()
    if energy_scale is not None:
        denom = torch.maximum(denom, floor * energy_scale.to(denom))
    denom = denom.clamp_min(torch.finfo(denom.dtype).tiny)
    return (E1 - E0).abs() / denom


def energy_scale(state: SystemState) -> Tensor:
    """``T + |U|`` (kinetic plus absolute potential, incl. external); ``batch_shape``."""
    return state.kinetic_energy() + state.potential_energy().abs()


def step_energy_error(
    state0: SystemState, state1: SystemState, floor: float = DEFAULT_FLOOR
) -> Tensor:
    """Relative energy error of the step ``state0 -> state1``; ``batch_shape``.
    Differentiable with respect to ``state1`` (hence to the ``dt`` that made it)."""
    E0 = state0.total_energy()
    return relative_energy_error(E0, state1.total_energy(), energy_scale(state0), floor)


def passes(rel_dE: Tensor, threshold: float = DEFAULT_THRESHOLD) -> Tensor:
    """Boolean ``rel_dE < threshold`` (False for NaN/inf); shape of ``rel_dE``."""
    return torch.isfinite(rel_dE) & (rel_dE < threshold)


def band_loss(
    rel_dE: Tensor,
    E_lower: float = DEFAULT_E_LOWER,
    E_upper: float = DEFAULT_E_UPPER,
    nonfinite_penalty: float = DEFAULT_NONFINITE_PENALTY,
    dt: Tensor | None = None,
) -> Tensor:
    """Per-sample log-space band loss; shape of ``rel_dE``.

    ``l = log rel_dE`` (``rel_dE`` clamped at 1e-30):
    ``loss = (log E_lower - l)^2`` below the band, ``(l - log E_upper)^2`` above it,
    0 inside. A non-finite ``rel_dE`` gives ``nonfinite_penalty`` and no NaN
    gradient; if ``dt`` (same shape) is given, that penalty is
    ``nonfinite_penalty * dt / dt.detach()``: the same value, with a gradient that
    shrinks the step that blew up.
    """
    _check_band(E_lower, E_upper)
    finite = torch.isfinite(rel_dE)
    safe = torch.where(finite, rel_dE, torch.ones_like(rel_dE)).clamp_min(_REL_MIN)
    log_r = safe.log()
    below = (math.log(E_lower) - log_r).clamp_min(0)
    above = (log_r - math.log(E_upper)).clamp_min(0)
    loss = below.square() + above.square()
    penalty = torch.full_like(loss, float(nonfinite_penalty))
    if dt is not None:
        penalty = penalty * dt / dt.detach()
    return torch.where(finite, loss, penalty)


def _check_band(E_lower: float, E_upper: float) -> None:
    if not (0 < E_lower < E_upper) or not math.isfinite(E_upper):
        raise ValueError(
            f"band loss needs 0 < E_lower < E_upper < inf, got E_lower={E_lower!r}, "
            f"E_upper={E_upper!r}"
        )


@dataclass(frozen=True)
class EnergyGate:
    """The gate's settings in one object; methods mirror the module functions."""

    threshold: float = DEFAULT_THRESHOLD
    E_lower: float = DEFAULT_E_LOWER
    E_upper: float = DEFAULT_E_UPPER
    floor: float = DEFAULT_FLOOR
    nonfinite_penalty: float = DEFAULT_NONFINITE_PENALTY

    def __post_init__(self) -> None:
        if not (self.threshold > 0 and math.isfinite(self.threshold)):
            raise ValueError(f"energy threshold must be finite and > 0, got {self.threshold!r}")
        _check_band(self.E_lower, self.E_upper)
        if not (self.floor >= 0 and math.isfinite(self.floor)):
            raise ValueError(f"floor must be finite and >= 0, got {self.floor!r}")
        if not (self.nonfinite_penalty > 0 and math.isfinite(self.nonfinite_penalty)):
            raise ValueError(
                f"nonfinite_penalty must be finite and > 0, got {self.nonfinite_penalty!r}"
            )

    def error(self, state0: SystemState, state1: SystemState) -> Tensor:
        """Relative energy error of the step; ``batch_shape``."""
        return step_energy_error(state0, state1, self.floor)

    def passes(self, rel_dE: Tensor) -> Tensor:
        """Boolean pass mask; ``batch_shape``."""
        return passes(rel_dE, self.threshold)

    def loss(self, rel_dE: Tensor, dt: Tensor | None = None) -> Tensor:
        """Per-sample band loss; ``batch_shape``."""
        return band_loss(rel_dE, self.E_lower, self.E_upper, self.nonfinite_penalty, dt)
