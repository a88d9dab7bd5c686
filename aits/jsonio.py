"""The one JSON writer of aits: strict JSON (non-finite floats become ``null``),
written atomically (a temporary file renamed into place)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["check_writable_dir", "json_safe", "write_json"]


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by ``None`` (strict JSON has no
    NaN/Infinity) and numpy scalars/arrays turned into Python numbers/lists; dicts,
    lists and tuples are converted recursively."""
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    elif isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``json_safe(obj)`` to ``path`` atomically (indent 2, trailing newline).

    Raises:
        OSError: the directory cannot be written (the caller names the file).
    """
    path = Path(path)
    text = json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_writable_dir(path: str | Path) -> Path:
    """Create directory ``path`` (and its parents) if missing and make sure a file can
    be written in it: the check every tool makes before its work starts.

    Raises:
        OSError: ``path`` is a file, cannot be created or cannot be written (the
            message names the path and why).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{str(path)!r} is a file; give a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".aits-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OSError(e.errno, f"cannot write to {str(path)!r} ({e.strerror or e}); choose a "
                               "writable directory") from None
    return path
