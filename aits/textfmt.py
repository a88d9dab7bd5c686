"""Numbers in terminal tables, readable whatever their size.

A runaway run can reach a time of 1e120 or a ``dt`` of 6.7e117; ``f"{x:9.1f}"``
then prints 120 digits. :func:`number` keeps such values (and NaN, infinities and
missing values) short.
"""

from __future__ import annotations

import math

__all__ = ["number"]

#: From this magnitude on, a fixed-point spec switches to e-notation.
FIXED_POINT_LIMIT = 1e6


def number(x: float | int | None, spec: str = ".3g") -> str:
    """``x`` formatted with ``spec``: ``None`` as ``"–"``, NaN as ``"nan"``,
    infinities as ``"inf"``/``"-inf"``, and with a fixed-point spec (``".1f"``) a
    magnitude of at least :data:`FIXED_POINT_LIMIT` in e-notation (``"1.23e+120"``)."""
    if x is None:
        return "–"
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if spec.endswith("f") and abs(x) >= FIXED_POINT_LIMIT:
        return format(x, ".3e")
    return format(x, spec)
