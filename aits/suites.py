"""Named evaluation suites for ``python -m aits.evaluate --suite NAME``.

A suite fixes the systems (each with its own run length), the whole-run
tolerances every policy is tuned to, the integrators every policy runs under
and the reference integrators (classical policies only, reported apart).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["SUITES", "Suite", "SuiteSystem"]


@dataclass(frozen=True)
class SuiteSystem:
    """One system of a suite: a scenario name and its run length (``{"orbits": K}``
    or ``{"t_end": T}``)."""

    scenario: str
    length: Mapping[str, float]


@dataclass(frozen=True)
class Suite:
    systems: tuple[SuiteSystem, ...]
    tolerances: tuple[float, ...]
    integrators: tuple[str, ...]
    references: tuple[str, ...]


#: one outer period of the ``triple`` scenario: 2 pi sqrt(8^3 / 1.25)
TRIPLE_OUTER_PERIOD = 127.16

SUITES: dict[str, Suite] = {
    "standard": Suite(
        systems=(
            SuiteSystem("binary-e0.5", {"orbits": 10.0}),
            SuiteSystem("binary-e0.9", {"orbits": 10.0}),
            SuiteSystem("binary-e0.99", {"orbits": 10.0}),
            SuiteSystem("figure8", {"orbits": 10.0}),
            SuiteSystem("plummer64", {"t_end": 5.0}),
            SuiteSystem("triple", {"t_end": TRIPLE_OUTER_PERIOD}),
        ),
        tolerances=(1e-3, 1e-4),
        integrators=("kdk", "symmetric"),
        references=("ttl",),
    ),
}
