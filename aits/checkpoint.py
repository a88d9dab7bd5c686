"""Training checkpoints: written atomically, read without unpickling arbitrary objects.

A checkpoint is a ``torch.save`` of a plain dict (tensors, numbers, strings,
``None``, lists and dicts only) with a ``format`` marker and a version. It is
written to a temporary file in the target directory and moved into place with
``os.replace``, so a crash mid-write never leaves a truncated checkpoint under
the final name. :func:`load_checkpoint` reads with ``torch.load(weights_only=True)``
and refuses, with a clear message, files that are not aits checkpoints.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from aits.model import TimeStepNet

FORMAT = "aits-train-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a usable aits checkpoint, or one that does not fit the model."""


def checkpoint_epoch(path: str | Path) -> int:
    """The epoch of a ``checkpoints/epoch_NNNN.pt`` file (-1 for another name)."""
    digits = Path(path).stem.removeprefix("epoch_")
    return int(digits) if digits.isdigit() else -1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plain values only) to ``path`` atomically; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, "version": VERSION, **payload}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device | None = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: missing/unreadable file, a file holding anything but plain
            tensors and containers, or a file without the aits checkpoint marker or
            with an unsupported version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # any failure to parse it as plain tensors means: not ours
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{str(path)!r} is not an aits checkpoint (it cannot be read as plain tensors and "
            f"containers: {first})"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not an aits checkpoint (no {FORMAT!r} marker; was it written by "
            "python -m aits.train?)"
        )
    if data.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format version {data.get('version')!r}; this aits "
            f"reads version {VERSION}"
        )
    return data


def restore_model(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load ``state_dict`` into ``model`` after checking names and shapes.

    Raises:
        CheckpointError: naming the first missing/unexpected tensor or shape mismatch.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    extra = sorted(set(state_dict) - set(own))
    if missing or extra:
        raise CheckpointError(
            "checkpoint model does not match this model: "
            + "; ".join(filter(None, [missing and f"missing {', '.join(missing)}",
                                      extra and f"unexpected {', '.join(extra)}"]))
        )
    for name, t in own.items():
        if tuple(state_dict[name].shape) != tuple(t.shape):
            raise CheckpointError(
                f"checkpoint model does not match this model: {name} has shape "
                f"{tuple(state_dict[name].shape)} in the checkpoint, {tuple(t.shape)} here"
            )
    model.load_state_dict(state_dict)


def load_model(path: str | Path, device: str | torch.device | None = None) -> TimeStepNet:
    """The trained :class:`~aits.model.TimeStepNet` of a training checkpoint, in eval
    mode, in the dtype it was trained in, on ``device`` (default cpu)."""
    data = load_checkpoint(path)
    try:
        model = TimeStepNet(**data["model_config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {str(path)!r} has an unusable model_config: {e}") from None
    dtype = next(iter(data["model"].values())).dtype
    model.to(dtype=dtype)
    restore_model(model, data["model"])
    return model.to(device=device).eval()
