"""Training checkpoints: written atomically, read without unpickling arbitrary objects.

A checkpoint is a ``torch.save`` of a plain dict (tensors, numbers, strings,
``None``, lists and dicts only) with a ``format`` marker and a version. It is
written to a temporary file in the target directory and moved into place with
``os.replace``, so a crash mid-write never leaves a truncated checkpoint under
the final name. :func:`load_checkpoint` reads with ``torch.load(weights_only=True)``
and refuses, with a clear :class:`CheckpointError` naming the file, anything that is
not a well-formed aits training checkpoint (:func:`validate_checkpoint`): a crafted
pickle is refused without being run, and the stored model configuration is checked
against the stored weights' shapes before any model is allocated.
"""

from __future__ import annotations

import io
import math
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from aits import __version__
from aits.model import TimeStepNet

FORMAT = "aits-train-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a usable aits checkpoint, or one that does not fit the model."""


class RunWriteError(OSError):
    """A file of a run could not be written (full disk, read-only location, ...); the
    message names the file, the reason and the free space of its file system."""

    @classmethod
    def of(cls, path: str | Path, error: OSError) -> RunWriteError:
        """The error for ``error`` raised while writing ``path`` (keeps its errno)."""
        path = Path(path)
        try:
            free = f"; {shutil.disk_usage(path.parent).free:,} bytes free on its disk"
        except OSError:
            free = ""
        reason = error.strerror or str(error) or type(error).__name__
        return cls(error.errno, f"cannot write {str(path)!r}: {reason}{free}")

    def __str__(self) -> str:
        return str(self.strerror)


def checkpoint_epoch(path: str | Path) -> int:
    """The epoch of a ``checkpoints/epoch_NNNN.pt`` file (-1 for another name)."""
    digits = Path(path).stem.removeprefix("epoch_")
    return int(digits) if digits.isdigit() else -1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plain values only) to ``path`` atomically; returns ``path``.

    Raises:
        RunWriteError: the file could not be written (the previous one is intact and
            no temporary file is left).
    """
    path = Path(path)
    data = {"format": FORMAT, "version": VERSION, **payload}
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        buffer = io.BytesIO()  # serialised first: torch's own writer hides the OSError of
        torch.save(data, buffer)  # a full disk behind "unexpected pos"
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, RunWriteError):
            raise RunWriteError.of(path, e) from None
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device | None = "cpu",
                    *, training: bool = True) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Args:
        training: also check that it is a well-formed training checkpoint
            (:func:`validate_checkpoint`); ``False`` reads any payload of plain values.

    Raises:
        CheckpointError: missing/unreadable file, a file holding anything but plain
            tensors and containers, a file without the aits checkpoint marker or
            with an unsupported version, or (``training``) a malformed entry.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": the refusal says enough
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # any failure to parse it as plain tensors means: not ours
        raise CheckpointError(
            f"{str(path)!r} is not an aits checkpoint (it cannot be read as plain tensors and "
            f"containers: {_reason(e)})"
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
    if training:
        try:
            validate_checkpoint(data)
        except CheckpointError as e:
            raise CheckpointError(f"checkpoint {str(path)!r} is malformed: {e}") from None
    return data


#: Entries of a training checkpoint and the Python type each must have.
_ENTRIES = {"config": dict, "epoch": int, "rounds": int, "model_config": dict, "model": dict,
            "optimizer": dict, "rng": dict, "live": dict, "history": list}
#: Settings stored both in the run's config and in the model config: they must agree,
#: since a resumed run builds its model from the config.
_SHARED_MODEL_SETTINGS = ("hidden", "activation", "dropout", "fourier_features",
                          "fourier_sigma", "output", "dt_init", "seed")


def validate_checkpoint(data: dict) -> None:
    """Check the entries of a training checkpoint (:meth:`aits.training.Trainer.state_dict`)
    without building anything large: entry types, non-negative counters, the model
    (:func:`validate_model_entries`), the optimizer state and a usable RNG state.

    Raises:
        CheckpointError: naming the first problem found.
    """
    for key, kind in _ENTRIES.items():
        _check_entry(data, key, kind)
    for key in ("epoch", "rounds"):
        if data[key] < 0:
            raise CheckpointError(f"its {key!r} is {data[key]}; it must be >= 0")
    validate_model_entries(data)
    _check_optimizer(data["optimizer"])
    _check_rng(data["rng"])


def validate_model_entries(data: dict) -> None:
    """Check the ``model_config`` and ``model`` entries (all a model-only checkpoint
    holds): finite floating-point weights of one dtype, and a config whose layers
    (built on the ``meta`` device, no memory) have the stored weights' shapes; when
    a run ``config`` is stored too, its model settings must agree.

    Raises:
        CheckpointError: naming the first problem found.
    """
    _check_entry(data, "model_config", dict)
    _check_entry(data, "model", dict)
    _check_weights(data["model"])
    config = data.get("config")
    _check_model_config(data["model_config"], data["model"],
                        config if isinstance(config, dict) else {})


def _check_entry(data: dict, key: str, kind: type) -> None:
    if key not in data:
        raise CheckpointError(f"it has no {key!r} entry")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise CheckpointError(f"its {key!r} entry is a {type(value).__name__}, not a "
                              f"{kind.__name__}")


def _check_weights(weights: dict) -> None:
    if not weights:
        raise CheckpointError("its 'model' entry holds no weights")
    dtypes = set()
    for name, t in weights.items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"model entry {name!r} is a {type(t).__name__}, not a tensor")
        if not t.is_floating_point():
            raise CheckpointError(f"model weight {name!r} has dtype {t.dtype}; weights must be "
                                  "float32 or float64")
        if not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"model weight {name!r} contains NaN or inf")
        dtypes.add(t.dtype)
    if len(dtypes) > 1:
        raise CheckpointError(f"model weights mix dtypes {sorted(map(str, dtypes))}")


def _check_model_config(model_config: dict, weights: dict, config: dict) -> None:
    """Build the configured model on ``meta`` (no memory) and compare shapes."""
    for key in _SHARED_MODEL_SETTINGS:
        if key in config and key in model_config and config[key] != model_config[key]:
            raise CheckpointError(f"setting {key!r} is {config[key]!r} in its config but "
                                  f"{model_config[key]!r} in its model config")
    try:
        with torch.device("meta"):
            model = TimeStepNet(**model_config)
    except (TypeError, ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"its model_config is unusable: {e}") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    stored = {k: tuple(v.shape) for k, v in weights.items()}
    if expected != stored:
        diff = sorted(set(expected) ^ set(stored)) or sorted(
            k for k in expected if expected[k] != stored[k])
        name = diff[0]
        have, want = stored.get(name), expected.get(name)
        if (have is not None and want is not None and len(have) == len(want) > 0
                and have[:-1] == want[:-1] and want[-1] == model.in_features):
            raise CheckpointError(
                f"its network takes {have[-1]} input features, but its feature spec "
                f"({model.spec.kind!r}) gives {want[-1]} in aits {__version__}: the model was "
                "written by a version with another feature set; retrain it with this version")
        raise CheckpointError(
            f"its model_config does not fit its weights: {name} is "
            f"{stored.get(name, 'absent')} in the weights, {expected.get(name, 'absent')} in "
            "the model the config describes"
        )


def _check_optimizer(opt: dict) -> None:
    if not isinstance(opt.get("state"), dict) or not isinstance(opt.get("param_groups"), list):
        raise CheckpointError("its 'optimizer' entry lacks the 'state' and 'param_groups' of an "
                              "optimizer state")
    for name, entry in opt["state"].items():
        for k, v in (entry.items() if isinstance(entry, dict) else ()):
            if isinstance(v, torch.Tensor) and v.is_floating_point() \
                    and not bool(torch.isfinite(v).all()):
                raise CheckpointError(f"optimizer state {name}.{k} contains NaN or inf")
            if isinstance(v, float) and not math.isfinite(v):
                raise CheckpointError(f"optimizer state {name}.{k} is {v}")


def _check_rng(rng: dict) -> None:
    for key in ("torch", "sampler"):
        t = rng.get(key)
        if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8:
            raise CheckpointError(f"its RNG state {key!r} is not a uint8 tensor")
    try:  # a scratch generator: the process's own RNG is untouched
        torch.Generator().set_state(rng["torch"])
    except (RuntimeError, ValueError) as e:
        raise CheckpointError(f"its RNG state 'torch' is invalid: {_first_line(e)}") from None
    if not isinstance(rng.get("device"), str):
        raise CheckpointError("its RNG state has no 'device' name")


def _reason(e: BaseException) -> str:
    """torch's weights_only refusal is a page of advice: keep what names the object."""
    text = str(e)
    m = re.search(r"(Unsupported global: GLOBAL [\w.]+|Unsupported operand \d+|"
                  r"Weights only load failed)", text)
    if m and "weights_only" in text.lower().replace(" ", "_"):
        what = re.search(r"GLOBAL ([\w.]+)", text)
        return ("it holds a pickled object" + (f" ({what.group(1)})" if what else "")
                + ", which aits never writes and does not run")
    return _first_line(e)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


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


def resolve_checkpoint(path: str | Path) -> Path:
    """``path`` itself when it is a file; for a training run directory (or its
    ``checkpoints/`` folder) the newest ``epoch_*.pt`` in it.

    Raises:
        FileNotFoundError: nothing usable at ``path``.
    """
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        found = sorted(folder.glob("epoch_*.pt"), key=checkpoint_epoch)
        if found:
            return found[-1]
        raise FileNotFoundError(f"no checkpoint (epoch_*.pt) in directory {str(folder)!r}")
    raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")


def load_model(path: str | Path, device: str | torch.device | None = None) -> TimeStepNet:
    """The trained :class:`~aits.model.TimeStepNet` of a checkpoint (a training one, or
    one holding only ``model_config`` and ``model``), in eval mode, in the dtype it was
    trained in, on ``device`` (default cpu). ``path`` may be a training run directory:
    its newest checkpoint is used (:func:`resolve_checkpoint`).

    Raises:
        FileNotFoundError: nothing usable at ``path``.
        CheckpointError: naming the file, for anything but a well-formed checkpoint.
    """
    path = resolve_checkpoint(path)
    data = load_checkpoint(path, training=False)
    try:
        validate_model_entries(data)
    except CheckpointError as e:
        raise CheckpointError(f"checkpoint {str(path)!r} is malformed: {e}") from None
    model = TimeStepNet(**data["model_config"])
    dtype = next(iter(data["model"].values())).dtype
    model.to(dtype=dtype)
    restore_model(model, data["model"])
    return model.to(device=device).eval()
