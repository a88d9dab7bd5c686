"""Loads the compiled extension ``aits._C`` after checking it matches this torch.

The extension is built against one torch (``pip install --no-build-isolation .``)
and its C++ ABI is only valid with that exact version, so a mismatch is refused
with instructions instead of a crash or a silently wrong import.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

__all__ = ["cuda_built", "load"]

_REBUILD = (
    "Rebuild aits against the installed torch:\n"
    "    pip install scikit-build-core cmake ninja\n"
    "    pip install --no-build-isolation --force-reinstall --no-deps .\n"
    "(run from the aits source directory)."
)


def _base_version(version: str) -> str:
    return version.split("+")[0]


def load() -> object:
    """Import ``aits._C`` (registering the ``torch.ops.aits`` ops) and return it."""
    try:
        build = importlib.import_module("aits._build_config")
    except ImportError as exc:  # source tree without a build
        raise ImportError(
            "aits's compiled extension is missing: Python imported the aits source tree "
            f"({Path(__file__).parent}), which holds no build. Either install aits in editable "
            "mode (pip install --no-build-isolation -e ., as `make install` does), or run "
            "from another directory (and `pytest`, not `python -m pytest`) so that the "
            "installed package is imported. If aits is not installed at all:\n" + _REBUILD
        ) from exc
    if build.TORCH_VERSION != torch.__version__:
        raise ImportError(
            f"aits was built against torch {build.TORCH_VERSION} but torch {torch.__version__} is "
            "installed; the C++ extension only works with the torch it was built with.\n" + _REBUILD
        )
    return importlib.import_module("aits._C")


def cuda_built() -> bool:
    """True when the installed extension contains the CUDA kernels."""
    return bool(importlib.import_module("aits._build_config").CUDA_ENABLED)
