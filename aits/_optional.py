"""Optional dependencies (package extras): import them, or fail with the install line."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingDependencyError", "require"]


class MissingDependencyError(ImportError):
    """An optional dependency of aits is not installed (the message says which extra)."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming
    ``pip install 'aits[extra]'``; ``purpose`` says what needed it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{purpose} needs the optional package {module!r}, which is not installed "
            f"({e}); install it with: pip install 'aits[{extra}]'"
        ) from None
