"""Named initial-condition scenarios, for the command line and configs.

``list_scenarios()`` gives every name with a one-line description;
``make_scenario(name)`` builds one. New scenarios register with
:func:`register_scenario`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from aits import ics
from aits.state import SystemState

__all__ = ["Scenario", "ScenarioBuilder", "list_scenarios", "make_scenario", "register_scenario"]

ScenarioBuilder = Callable[..., SystemState]


@dataclass(frozen=True)
class Scenario:
    """A named recipe: ``build(dtype=..., device=..., seed=...) -> SystemState``."""

    name: str
    description: str
    build: ScenarioBuilder


_REGISTRY: dict[str, Scenario] = {}


def register_scenario(name: str, description: str) -> Callable[[ScenarioBuilder], ScenarioBuilder]:
    """Decorator registering ``build(*, dtype, device, seed)`` under ``name``."""

    def deco(build: ScenarioBuilder) -> ScenarioBuilder:
        if name in _REGISTRY:
            raise ValueError(f"scenario {name!r} is already registered")
        _REGISTRY[name] = Scenario(name, description, build)
        return build

    return deco


def list_scenarios() -> dict[str, str]:
    """Every registered scenario name mapped to its description, sorted by name."""
    return {name: _REGISTRY[name].description for name in sorted(_REGISTRY)}


def make_scenario(
    name: str,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    seed: int = 0,
    softening: float | None = None,
    G: float | None = None,
) -> SystemState:
    """Build the scenario ``name``; ``seed`` matters only for random ones.

    ``softening`` replaces the scenario's own; ``G`` builds the same orbits in units
    where the gravitational constant is ``G`` (velocities times ``sqrt(G / G_0)``, so
    shapes are kept and times scale by ``sqrt(G_0 / G)``).

    Raises:
        ValueError: unknown name (the message lists the valid names).
    """
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown scenario {name!r}; valid names: {', '.join(sorted(_REGISTRY))}"
        )
    state = _REGISTRY[name].build(dtype=dtype, device=device, seed=seed)
    changes: dict = {}
    if softening is not None:
        changes["softening"] = softening
    if G is not None and G != state.G:
        if not (G > 0 and math.isfinite(G)):
            raise ValueError(f"G must be finite and > 0, got {G!r}")
        changes.update(G=G, vel=state.vel * math.sqrt(G / state.G))
    return state.replace(**changes) if changes else state


def _binary(e: float) -> ScenarioBuilder:
    def build(*, dtype, device, seed):
        return ics.kepler_orbit(e, 1.0, 0.5, 0.5, at="apocentre", dtype=dtype, device=device)

    return build


for _e in (0.5, 0.9, 0.99):
    register_scenario(
        f"binary-e{_e}",
        f"equal-mass (0.5 + 0.5) Kepler binary, a = 1, e = {_e}, 2-D, at apocentre; period 2 pi",
    )(_binary(_e))


@register_scenario("figure8", "Chenciner-Montgomery figure-eight three-body choreography, 2-D")
def _figure8(*, dtype, device, seed):
    return ics.figure_eight(dtype=dtype, device=device)


@register_scenario(
    "plummer64", "64-body Plummer sphere in virial units (E = -1/4), softening 0.01, 3-D"
)
def _plummer64(*, dtype, device, seed):
    return ics.plummer(64, seed=seed, softening=0.01, dtype=dtype, device=device)


@register_scenario(
    "triple", "hierarchical triple, 3-D: binary 0.5 + 0.5 (a = 1, e = 0.3) and 0.25 on an outer "
    "orbit (a = 8, e = 0.2, inclined 0.5 rad); outer period about 15 inner ones"
)
def _triple(*, dtype, device, seed):
    return ics.hierarchical_triple(dtype=dtype, device=device)


@register_scenario(
    "random", "16 random bodies, total mass 1, Gaussian positions (1) and velocities (0.5), 3-D"
)
def _random(*, dtype, device, seed):
    return ics.random_system(16, 3, seed=seed, dtype=dtype, device=device)
