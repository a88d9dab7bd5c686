"""The run directory of a training run and what is logged into it.

Layout of ``<run_dir>/<run_name>/``::

    config.toml            the resolved configuration (a [train] table; --config accepts it)
    metrics.jsonl          one JSON object per epoch (Part 1, Part 2, epoch time)
    steps.csv              every accepted Part 1 step: epoch, round, system, time, dt, rel_dE
    checkpoints/epoch_NNNN.pt   every checkpoint_interval epochs and at the end
    summary.json, summary.txt   totals, the closing rollout check, the final checkpoint
    plot.png               accepted dt and per-step energy error over the run

A run directory belongs to one process: a new one is made with an atomic ``mkdir``
(a taken name gets ``-1``, ``-2``, ... appended), and every process that opens one,
new or resumed, holds an exclusive lock on ``run.lock`` (``flock``) until it ends, so
a second process on the same directory is refused (:class:`RunDirBusyError`).
Opening a directory removes the ``.*.tmp`` files that interrupted writes left.
A file that cannot be written (a full disk) raises
:class:`~aits.checkpoint.RunWriteError` naming it; appends are rolled back to
whole lines.

Optional external loggers (Weights & Biases, TensorBoard) are checked for before
any work starts (:func:`require_loggers`).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import gc
import importlib.util
import json
import os
import time
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from aits.checkpoint import RunWriteError, checkpoint_epoch
from aits.config import ConfigError, TrainConfig, dump_toml
from aits.jsonio import json_safe

STEP_COLUMNS = ("epoch", "round", "system", "time", "dt", "rel_dE")


LOCK_NAME = "run.lock"
#: Systems of a multi-system run named in the legend of plot.png (the rest unlabelled).
LEGEND_SYSTEMS = 10


class RunDirBusyError(ConfigError):
    """Another process holds the run directory (a run or a resume of it is going on)."""


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn an ``OSError`` while writing ``path`` into a :class:`RunWriteError` naming it."""
    try:
        yield
    except RunWriteError:
        raise
    except OSError as e:
        raise RunWriteError.of(path, e) from None


@contextlib.contextmanager
def _appending(path: Path) -> Iterator[Any]:
    """``path`` opened for appending; on a failed write it is cut back to its old size,
    so a full disk never leaves half a line."""
    with _writing(path):
        size = path.stat().st_size if path.exists() else None
        try:
            with path.open("a", newline="") as f:
                yield f
        except OSError:
            with contextlib.suppress(OSError):
                if size is None:
                    path.unlink()
                else:
                    os.truncate(path, size)
            raise


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` through a temporary file and ``os.replace``: a
    crash leaves the old file or the new one, never half of either.

    Raises:
        RunWriteError: the file could not be written (the old one is intact).
    """
    tmp = path.with_name(f".{path.name}.tmp")
    with _writing(path):
        try:
            tmp.write_text(text)
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise


def _lock(path: Path) -> int:
    """An exclusive ``flock`` on ``path / run.lock``; returns its file descriptor."""
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    for attempt in range(2):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if attempt == 0:  # the holder may be an unreachable RunDir of this process
                gc.collect()
    os.close(fd)
    raise RunDirBusyError(
        f"run directory {str(path)!r} is in use by another process (a run or a resume "
        f"of it holds {LOCK_NAME}); wait for it to end or choose another --run-name"
    )


class RunDir:
    """Files of one run, owned by this process while the object lives.

    Args:
        path: the run directory; it must exist unless ``create``.
        create: make it with an atomic ``mkdir`` (``FileExistsError`` if it exists).
    Raises:
        RunDirBusyError: another process holds the directory's lock.
        ConfigError: ``path`` is not a directory (and not ``create``).
        RunWriteError: the directory cannot be created or written.
    """

    def __init__(self, path: str | Path, *, create: bool = False) -> None:
        self.path = Path(path)
        with _writing(self.path):
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.mkdir()
            elif not self.path.is_dir():
                raise ConfigError(f"run directory {str(self.path)!r} does not exist or is not "
                                  "a directory")
            fd = _lock(self.path)
        self._release = weakref.finalize(self, os.close, fd)
        with _writing(self.path / "checkpoints"):
            (self.path / "checkpoints").mkdir(exist_ok=True)
        self.removed_tmp = self._remove_stale_tmp()

    def close(self) -> None:
        """Release the directory's lock (also done when the object is collected)."""
        self._release()

    def _remove_stale_tmp(self) -> list[Path]:
        """Delete ``.*.tmp`` files of interrupted writes (safe: the lock is ours)."""
        stale = [*self.path.glob(".*.tmp"), *(self.path / "checkpoints").glob(".*.tmp")]
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    @classmethod
    def new(cls, cfg: TrainConfig) -> RunDir:
        """A fresh directory ``cfg.run_dir / name``; ``name`` is ``cfg.run_name`` or the
        system and a time stamp, with ``-1``, ``-2``, ... appended if taken (also when
        another process takes it at the same instant: the ``mkdir`` decides).

        Raises:
            ConfigError: ``run_dir`` or the named run is an existing file.
        """
        root = Path(cfg.run_dir)
        if root.exists() and not root.is_dir():
            raise ConfigError(f"setting 'run_dir' is {cfg.run_dir!r}, a file; give a directory")
        name = cfg.run_name or f"{system_label(cfg)}-{time.strftime('%Y%m%d-%H%M%S')}"
        if cfg.run_name and (root / name).exists() and not (root / name).is_dir():
            raise ConfigError(f"setting 'run_name' is {name!r}, but {str(root / name)!r} is a "
                              "file; choose another --run-name or --run-dir")
        path, k = root / name, 0
        while True:
            try:
                return cls(path, create=True)
            except RunWriteError as e:
                if e.errno != errno.EEXIST:
                    raise
            k += 1
            path = root / f"{name}-{k}"

    def checkpoint_path(self, epoch: int) -> Path:
        return self.path / "checkpoints" / f"epoch_{epoch:04d}.pt"

    def write_config(self, cfg: TrainConfig) -> None:
        write_atomic(self.path / "config.toml", dump_toml(cfg))

    def append_metrics(self, metrics: Mapping[str, Any]) -> None:
        with _appending(self.path / "metrics.jsonl") as f:
            f.write(json.dumps(json_safe(metrics), allow_nan=False) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        p = self.path / "metrics.jsonl"
        return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []

    def append_steps(self, epoch: int, first_round: int, steps: Mapping[str, torch.Tensor]) -> None:
        """Add one epoch's accepted steps (``steps[k]`` of shape ``(rounds, B)``)."""
        p = self.path / "steps.csv"
        new = not p.exists()
        t, dt, rel = (steps[k].detach().cpu().double() for k in ("time", "dt", "rel_dE"))
        with _appending(p) as f:
            w = csv.writer(f)
            if new:
                w.writerow(STEP_COLUMNS)
            for r in range(t.shape[0]):
                for b in range(t.shape[1]):
                    w.writerow([epoch, first_round + r, b, repr(float(t[r, b])),
                                repr(float(dt[r, b])), repr(float(rel[r, b]))])

    def truncate(self, epoch: int) -> None:
        """Forget the metrics, steps and checkpoints of epochs after ``epoch`` (resuming
        from it): the abandoned branch must not pass for the run's newest model."""
        m = self.path / "metrics.jsonl"
        if m.exists():
            keep = [line for line in m.read_text().splitlines() if json.loads(line)["epoch"] <= epoch]
            write_atomic(m, "".join(line + "\n" for line in keep))
        s = self.path / "steps.csv"
        if s.exists():
            lines = s.read_text().splitlines()
            keep = lines[:1] + [line for line in lines[1:] if int(line.split(",", 1)[0]) <= epoch]
            write_atomic(s, "".join(line + "\n" for line in keep))
        for ckpt in (self.path / "checkpoints").glob("epoch_*.pt"):
            if checkpoint_epoch(ckpt) > epoch:
                ckpt.unlink()

    def write_summary(self, summary: Mapping[str, Any], table: str) -> None:
        write_atomic(self.path / "summary.json", json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
        write_atomic(self.path / "summary.txt", table + "\n")

    def plot(self, threshold: float, E_lower: float, E_upper: float) -> Path | None:
        """``plot.png``: accepted dt and per-step rel_dE against the accepted step; ``None``
        when no step was taken."""
        p = self.path / "steps.csv"
        if not p.exists():
            return None
        with p.open() as f:
            rows = list(csv.DictReader(f))
        if not rows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        systems = sorted({int(r["system"]) for r in rows})
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
        for k, b in enumerate(systems):
            sel = [r for r in rows if int(r["system"]) == b]
            x = [int(r["round"]) for r in sel]
            style = dict(lw=0.6) if len(systems) == 1 else dict(lw=0.4, alpha=0.7)
            # a legend entry per system, up to LEGEND_SYSTEMS of them
            named = len(systems) > 1 and k < LEGEND_SYSTEMS
            ax1.plot(x, [float(r["dt"]) for r in sel], label=f"system {b}" if named else None,
                     **style)
            ax2.plot(x, [max(float(r["rel_dE"]), 1e-30) for r in sel], **style)
        if len(systems) > 1:
            more = len(systems) - LEGEND_SYSTEMS
            ax1.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                       fontsize=8, title=f"{len(systems)} systems" + (
                           f" ({more} more unlabelled)" if more > 0 else ""),
                       title_fontsize=8)
        epochs_first = {}
        for r in rows:
            epochs_first.setdefault(int(r["epoch"]), int(r["round"]))
        for ax in (ax1, ax2):
            ax.set_yscale("log")
            for x0 in list(epochs_first.values())[1:]:
                ax.axvline(x0, color="0.85", lw=0.5, zorder=0)
        ax2.axhline(threshold, color="red", lw=1, label=f"threshold {threshold:g}")
        ax2.axhspan(E_lower, E_upper, color="green", alpha=0.12, label="band")
        ax1.set_ylabel("accepted dt")
        ax2.set_ylabel("per-step rel_dE")
        ax2.set_xlabel("accepted step (Part 1; grey lines: epochs)")
        ax2.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8)
        fig.tight_layout()
        out = self.path / "plot.png"
        try:
            with _writing(out):
                fig.savefig(out, dpi=110, bbox_inches="tight")
        finally:
            plt.close(fig)
        return out


def system_label(cfg: TrainConfig) -> str:
    """Short name of the training system: scenario, IC file stem, ``keplerK`` or the
    whole-run population (``generalist``)."""
    if cfg.objective == "whole-run" and cfg.population != "config":
        return cfg.population
    if cfg.num_orbits > 1:
        return f"kepler{cfg.num_orbits}"
    if cfg.ic_file:
        return Path(cfg.ic_file).stem
    return cfg.scenario


# ---------------------------------------------------------------------- external loggers

_EXTRAS = {"wandb": ("wandb", "wandb"), "tensorboard": ("tensorboard", "tensorboard")}


def require_loggers(cfg: TrainConfig) -> None:
    """Refuse, before any work, a logger whose package is not installed."""
    for setting, (module, extra) in _EXTRAS.items():
        if getattr(cfg, setting) and importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"setting {setting!r} needs the {module!r} package, which is not installed: "
                f"pip install 'aits[{extra}]'"
            )


class ExternalLoggers:
    """The optional Weights & Biases / TensorBoard sinks of one run."""

    def __init__(self, cfg: TrainConfig, run: RunDir) -> None:
        require_loggers(cfg)
        self._wandb = None
        self._tb = None
        if cfg.wandb:
            import wandb

            self._wandb = wandb.init(project="aits", name=run.path.name, dir=str(run.path),
                                     config=cfg.to_dict())
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(run.path / "tensorboard"))

    def log(self, metrics: Mapping[str, Any]) -> None:
        scalars = {k: float(v) for k, v in metrics.items()
                   if isinstance(v, (int, float)) and k != "epoch"}
        epoch = int(metrics["epoch"])
        if self._wandb is not None:
            self._wandb.log(scalars, step=epoch)
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, epoch)

    def close(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()
        if self._tb is not None:
            self._tb.close()
