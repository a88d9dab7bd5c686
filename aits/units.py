"""Unit systems: the gravitational constant ``G`` and the labels of each quantity.

aits integrates in whatever units the numbers are in; a unit system only fixes
``G`` in those units and says how to label axes and result files. The default,
``nbody``, is ``G = 1`` with dimensionless (unlabelled) quantities.

===============  ===================================  ====  ====  ====
name             G                                    L     T     M
===============  ===================================  ====  ====  ====
``nbody``        1                                    --    --    --
``au-yr-msun``   39.476926... au^3 / (Msun yr^2)      au    yr    Msun
``pc-myr-msun``  4.4985022e-3 pc^3 / (Msun Myr^2)     pc    Myr   Msun
``si``           6.67430e-11 m^3 / (kg s^2)           m     s     kg
===============  ===================================  ====  ====  ====

Constants (all SI):

* ``au = 149 597 870 700 m`` exactly (IAU 2012 Resolution B2);
* ``pc = (648000 / pi) au`` exactly (IAU 2015 Resolution B2);
* ``yr`` is the Julian year, ``365.25 d = 31 557 600 s`` exactly (IAU); ``Myr = 1e6 yr``;
* ``G M_sun = 1.3271244e20 m^3 s^-2``, the nominal solar mass parameter
  (IAU 2015 Resolution B3). ``G`` in the solar-mass systems is computed from it,
  so it is as precise as ``G M_sun`` itself (``G`` alone is known to ~2e-5);
* ``G = 6.67430e-11 m^3 kg^-1 s^-2`` (CODATA 2018) for ``si``, and
  ``M_sun = G M_sun / G = 1.98841e30 kg`` (as IAU 2015 B3 prescribes).

With the Julian year, ``G`` in ``au-yr-msun`` is 39.4769, not ``4 pi^2 = 39.4784``
(that value belongs to the sidereal year of a massless Earth).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aits.state import SystemState

__all__ = [
    "AU_M",
    "G_SI",
    "GM_SUN_SI",
    "JULIAN_YEAR_S",
    "M_SUN_KG",
    "PARSEC_M",
    "QUANTITIES",
    "UNIT_SYSTEMS",
    "UnitSystem",
    "axis_label",
    "get_units",
    "with_units",
]

#: astronomical unit in m (IAU 2012 B2, exact)
AU_M = 149_597_870_700.0
#: parsec in m (IAU 2015 B2: 648000 / pi au, exact)
PARSEC_M = AU_M * 648_000.0 / math.pi
#: Julian year in s (365.25 days of 86400 s, exact)
JULIAN_YEAR_S = 365.25 * 86_400.0
#: nominal solar mass parameter G M_sun in m^3 s^-2 (IAU 2015 B3)
GM_SUN_SI = 1.327_124_4e20
#: Newtonian constant of gravitation in m^3 kg^-1 s^-2 (CODATA 2018)
G_SI = 6.674_30e-11
#: solar mass in kg, G M_sun / G (IAU 2015 B3)
M_SUN_KG = GM_SUN_SI / G_SI

#: the quantities a unit system labels
QUANTITIES = ("length", "time", "mass", "velocity", "energy")


@dataclass(frozen=True)
class UnitSystem:
    """A system of units: ``G`` in them and a label for each quantity.

    Attributes:
        name: the name :func:`get_units` knows it by.
        G: the gravitational constant in these units (> 0).
        length, time, mass, velocity, energy: unit labels (``"au"``, ``"yr"``,
            ...); empty for the dimensionless ``nbody`` system.
        length_si, time_si, mass_si: one unit of length, time and mass in m, s and
            kg; ``None`` for ``nbody`` (no physical scale).
    """

    name: str
    G: float
    length: str = ""
    time: str = ""
    mass: str = ""
    velocity: str = ""
    energy: str = ""
    length_si: float | None = None
    time_si: float | None = None
    mass_si: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.G, (int, float)) and math.isfinite(self.G) and self.G > 0):
            raise ValueError(
                f"UnitSystem {self.name!r}: G must be a finite number > 0, got {self.G!r}"
            )

    def unit(self, quantity: str) -> str:
        """The unit label of ``quantity`` (one of :data:`QUANTITIES`; ``""`` in ``nbody``)."""
        if quantity not in QUANTITIES:
            raise ValueError(f"unknown quantity {quantity!r}; valid: {', '.join(QUANTITIES)}")
        return getattr(self, quantity)

    def label(self, symbol: str, quantity: str) -> str:
        """An axis label: ``label("t", "time")`` is ``"t [yr]"`` in ``au-yr-msun``
        and plain ``"t"`` in ``nbody``."""
        unit = self.unit(quantity)
        return f"{symbol} [{unit}]" if unit else symbol

    def to_dict(self) -> dict[str, str | float | None]:
        """All fields as plain values, for ``result.json`` and file attributes."""
        return dataclasses.asdict(self)


UNIT_SYSTEMS: dict[str, UnitSystem] = {
    u.name: u
    for u in (
        UnitSystem("nbody", 1.0),
        UnitSystem(
            "au-yr-msun", GM_SUN_SI * JULIAN_YEAR_S**2 / AU_M**3,
            length="au", time="yr", mass="Msun", velocity="au/yr", energy="Msun au^2/yr^2",
            length_si=AU_M, time_si=JULIAN_YEAR_S, mass_si=M_SUN_KG,
        ),
        UnitSystem(
            "pc-myr-msun", GM_SUN_SI * (1e6 * JULIAN_YEAR_S) ** 2 / PARSEC_M**3,
            length="pc", time="Myr", mass="Msun", velocity="pc/Myr", energy="Msun pc^2/Myr^2",
            length_si=PARSEC_M, time_si=1e6 * JULIAN_YEAR_S, mass_si=M_SUN_KG,
        ),
        UnitSystem(
            "si", G_SI, length="m", time="s", mass="kg", velocity="m/s", energy="J",
            length_si=1.0, time_si=1.0, mass_si=1.0,
        ),
    )
}


def get_units(units: str | UnitSystem | None = None) -> UnitSystem:
    """The unit system called ``units`` (a :class:`UnitSystem` is returned as is;
    ``None`` is the default ``nbody``).

    Raises:
        ValueError: an unknown name (the message lists the valid ones).
    """
    if units is None:
        return UNIT_SYSTEMS["nbody"]
    if isinstance(units, UnitSystem):
        return units
    found = UNIT_SYSTEMS.get(str(units).strip().lower())
    if found is None:
        raise ValueError(f"unknown unit system {units!r}; valid: {', '.join(UNIT_SYSTEMS)}")
    return found


def axis_label(symbol: str, quantity: str, units: str | UnitSystem | None = None) -> str:
    """``symbol`` with the unit of ``quantity`` in ``units``: ``axis_label("t", "time",
    "au-yr-msun") == "t [yr]"``."""
    return get_units(units).label(symbol, quantity)


def with_units(state: SystemState, units: str | UnitSystem) -> SystemState:
    """``state`` (numbers unchanged, read as being in ``units``) with ``G`` of ``units``.

    The cached acceleration and pair statistics depend on ``G``, so
    :meth:`~aits.state.SystemState.replace` drops them.
    """
    return state.replace(G=get_units(units).G)
