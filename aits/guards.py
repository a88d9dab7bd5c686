"""Guard rails around any time-step policy (all off by default).

* ``dt_min`` / ``dt_max``: clamp the proposed step.
* ``max_growth``: a step may be at most ``max_growth`` times the previous one.
* ``gated``: a step whose relative energy error fails the energy gate is rejected
  and retried from the same start state with ``dt * shrink``, at most
  ``max_retries`` times and never below ``dt_min``; the simulation loop counts
  each retry's extra force evaluation. When the retries run out (or ``dt_min``
  is reached), the last attempt is accepted and counted as a failed gate.

As in REBOUND's IAS15, the guards protect the run from a proposal that
collapses or explodes; they do not change a policy that behaves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["GuardRails"]


@dataclass(frozen=True)
class GuardRails:
    """Settings of the guard rails; the defaults switch every rail off.

    Attributes:
        dt_min: smallest allowed step (0 = none).
        dt_max: largest allowed step (``inf`` = none).
        max_growth: largest ratio of a step to the previous accepted one (``inf`` = none), > 1.
        gated: reject and retry steps failing the energy gate.
        shrink: factor in (0, 1) applied to ``dt`` on each retry.
        max_retries: retries of one step at most (>= 1).
    """

    dt_min: float = 0.0
    dt_max: float = math.inf
    max_growth: float = math.inf
    gated: bool = False
    shrink: float = 0.5
    max_retries: int = 30

    def __post_init__(self) -> None:
        if not (self.dt_min >= 0 and math.isfinite(self.dt_min)):
            raise ValueError(f"dt_min must be finite and >= 0, got {self.dt_min!r}")
        if not self.dt_max > 0:
            raise ValueError(f"dt_max must be > 0, got {self.dt_max!r}")
        if self.dt_min > self.dt_max:
            raise ValueError(f"dt_min ({self.dt_min!r}) must not exceed dt_max ({self.dt_max!r})")
        if not self.max_growth > 1:
            raise ValueError(f"max_growth must be > 1, got {self.max_growth!r}")
        if not 0 < self.shrink < 1:
            raise ValueError(f"shrink must be in (0, 1), got {self.shrink!r}")
        if not isinstance(self.max_retries, int) or self.max_retries < 1:
            raise ValueError(f"max_retries must be an int >= 1, got {self.max_retries!r}")

    @property
    def active(self) -> bool:
        """True when any rail is on."""
        return (self.dt_min > 0 or math.isfinite(self.dt_max) or math.isfinite(self.max_growth)
                or self.gated)

    def limit(self, dt: Tensor, previous: Tensor | None = None) -> Tensor:
        """Apply the growth cap (relative to ``previous``, the last accepted step),
        then ``dt_max`` and ``dt_min``. ``dt`` and ``previous`` share a shape
        (``batch_shape``); a non-finite ``dt`` becomes ``dt_max`` when that is finite."""
        if previous is not None and math.isfinite(self.max_growth):
            dt = torch.minimum(dt, previous * self.max_growth)
        if math.isfinite(self.dt_max):
            dt = torch.where(torch.isnan(dt), self.dt_max, dt).clamp_max(self.dt_max)
        if self.dt_min > 0:
            dt = dt.clamp_min(self.dt_min)
        return dt

    def retry(self, dt: Tensor) -> Tensor:
        """The smaller step of a gated retry: ``max(dt * shrink, dt_min)``."""
        return (dt * self.shrink).clamp_min(self.dt_min)
