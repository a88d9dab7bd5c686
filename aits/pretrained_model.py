"""The pretrained model shipped with aits: what a user gets without training.

``aits/models/NAME.pt`` is a model-only checkpoint (``model_config``, ``model``
and the training ``config``; loaded with ``weights_only=True``) and
``aits/models/NAME.json`` records how it was made and how it measured: the
training config and seed, the aits version and git commit, the accuracy check
that the tests repeat, and the evaluation table. ``scripts/make_pretrained.py``
writes both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

__all__ = ["PRETRAINED", "pretrained", "pretrained_info", "pretrained_path"]

#: the folder of the shipped models
FOLDER = Path(__file__).resolve().parent / "models"
#: the model ``--policy model`` uses without ``--checkpoint``
PRETRAINED = "default"


def pretrained_path(name: str = PRETRAINED) -> Path:
    """The checkpoint file of the shipped model ``name``.

    Raises:
        FileNotFoundError: no such shipped model (the message lists those there are).
    """
    path = FOLDER / f"{name}.pt"
    if not path.is_file():
        there = sorted(p.stem for p in FOLDER.glob("*.pt"))
        raise FileNotFoundError(f"no pretrained model {name!r} in {FOLDER}; shipped: "
                                f"{', '.join(there) or 'none'}")
    return path


def pretrained_info(name: str = PRETRAINED) -> dict[str, Any]:
    """What ``aits/models/NAME.json`` records about the shipped model ``name``."""
    return json.loads(pretrained_path(name).with_suffix(".json").read_text())


def pretrained(name: str = PRETRAINED, *, device: torch.device | str = "cpu",
               dtype: torch.dtype | None = None, dt_scale: float = 1.0):
    """The shipped model ``name`` as a :class:`~aits.policies.ModelPolicy`."""
    from aits.policies import ModelPolicy

    return ModelPolicy.from_checkpoint(pretrained_path(name), device=device, dtype=dtype,
                                       dt_scale=dt_scale)
