"""``python -m aits.train``: two-phase energy-gated training of the time-step network.

With no arguments it trains on the embedded default, the eccentric binary
``binary-e0.9``, and writes a run directory under ``./runs/`` (see
:mod:`aits.runlog`). Settings come from the defaults, then ``--config FILE.toml``,
then the command line; ``--resume CHECKPOINT`` continues a run (only the settings
in :data:`RESUMABLE` may change on resume).

Under ``torchrun --nproc_per_node=P -m aits.train ...`` the P processes train one
model together (:mod:`aits.distributed`); rank 0 alone writes the run directory,
checkpoints, plot, progress bar and summary.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from aits.checkpoint import (
    CheckpointError,
    RunWriteError,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from aits.config import ConfigError, TrainConfig, add_arguments, from_mapping, resolve
from aits.distributed import env_world_size, exit_now, init_from_env, is_initialized, shutdown
from aits.ics import InitialConditionsError, kepler_orbit
from aits.runlog import ExternalLoggers, RunDir, require_loggers, system_label
from aits.config import resolve_device
from aits.jsonio import check_writable_dir
from aits.observers import PROGRESS_DELAY
from aits.results import FAIL_ABOVE
from aits.textfmt import number
from aits.training import RetrainLimitError, Trainer, rollout_check
from aits.whole_run import WholeRunTrainer

__all__ = ["build_parser", "main", "run"]

if TYPE_CHECKING:
    import torch

log = logging.getLogger("aits.train")

#: Settings a resumed run may change; every other one comes from the checkpoint.
RESUMABLE = ("epochs", "duration", "checkpoint_interval", "rollout_steps", "quiet", "plot",
             "wandb", "tensorboard", "device")
#: Eccentricities of the extra binaries in the closing rollout check.
CHECK_ECCENTRICITIES = (0.5, 0.95)


@dataclass
class RunResult:
    """What :func:`run` produced."""

    run_dir: Path | None  # None on ranks other than 0
    summary: dict[str, Any]
    trainer: Trainer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m aits.train",
        description="Learn the leapfrog time step of an N-body system with two-phase, "
                    "energy-gated training. Without arguments: the eccentric binary "
                    "binary-e0.9, written to ./runs/<name>/.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE.toml",
                        help="settings file: shared top-level keys plus a [train] table; "
                             "command-line options override it")
    parser.add_argument("--resume", metavar="CHECKPOINT",
                        help="continue the run of this checkpoint, or of a run directory's "
                             "newest one (in its run directory); "
                             f"only {', '.join(RESUMABLE)} may be changed")
    add_arguments(parser)
    return parser


def resume_config(checkpoint: dict, overrides: dict[str, Any]) -> TrainConfig:
    """The checkpoint's config with the allowed ``overrides`` applied."""
    refused = sorted(set(overrides) - set(RESUMABLE))
    if refused:
        raise ConfigError(
            f"cannot change {', '.join(refused)} when resuming (the checkpoint fixes them); "
            f"settings that may change: {', '.join(RESUMABLE)}"
        )
    try:
        base = from_mapping(checkpoint["config"])
    except (KeyError, ConfigError) as e:
        raise CheckpointError(f"checkpoint holds an unusable config: {e}") from None
    return from_mapping(overrides, base)


def _run_dir_for_resume(path: Path, cfg: TrainConfig) -> RunDir:
    """The run directory the checkpoint lives in (``<run>/checkpoints/x.pt``), else a new one."""
    if path.parent.name == "checkpoints" and (path.parent.parent / "config.toml").is_file():
        return RunDir(path.parent.parent)
    return RunDir.new(cfg)


def _postfix(m: dict[str, Any]) -> dict[str, str]:
    if "wr_loss" in m:
        return {"loss": f"{m['wr_loss']:.3g}", "dE": f"{m['wr_err_median']:.2g}",
                "steps/t": f"{m['wr_steps_per_time']:.3g}", "restarts": str(m["wr_restarts"])}
    return {"acc": f"{m['p1_acceptance']:.2f}", "retr": str(m["p1_retrains"]),
            "dt": f"{m['p1_dt_mean']:.3g}", "dE": f"{m['p1_rel_dE_mean']:.2g}",
            "p2": "skip" if m["p2_skipped"] else f"{m['p2_iterations']}"}


def check_systems(trainer: Trainer) -> dict[str, Any]:
    """The systems of the closing rollout check: the training system from its
    initial state, and equal-mass binaries (a = 1) at :data:`CHECK_ECCENTRICITIES`."""
    cfg = trainer.cfg
    systems = {f"train ({system_label(cfg)})": trainer.initial}
    for e in CHECK_ECCENTRICITIES:
        systems[f"binary e={e}"] = kepler_orbit(e, 1.0, dtype=trainer.dtype, device=trainer.device)
    return systems


def run(cfg: TrainConfig, resume: str | Path | None = None,
        checkpoint: dict | None = None, device: torch.device | None = None) -> RunResult:
    """Train according to ``cfg`` (validated), writing a run directory.

    Args:
        resume: the checkpoint path to continue from; ``checkpoint`` its loaded content.
        device: overrides ``cfg.device`` (a rank's own GPU under torchrun).
    In a process group every rank calls this; only rank 0 writes anything, and the
    other ranks return a result without run directory or summary.
    """
    started = time.perf_counter()
    trainer = (WholeRunTrainer if cfg.objective == "whole-run" else Trainer)(cfg, device)
    group = trainer.group
    if checkpoint is not None:
        trainer.load_state_dict(checkpoint)
    rundir: RunDir | None = None
    if group.is_main:
        if checkpoint is not None:
            rundir = _run_dir_for_resume(Path(resume), cfg)
            rundir.truncate(trainer.epoch)
            log.info("resumed %s at epoch %d", resume, trainer.epoch)
        else:
            rundir = RunDir.new(cfg)
        rundir.write_config(cfg)
        log.info("run directory %s", rundir.path)
        if group.active:
            log.info("training on %d processes, %d systems each", group.world,
                     trainer.live.batch_size)
    loggers = ExternalLoggers(cfg, rundir) if rundir is not None else None
    bar = tqdm(total=cfg.epochs, initial=trainer.epoch, desc="train", unit="epoch",
               disable=cfg.quiet or rundir is None, dynamic_ncols=True)
    last_ckpt: Path | None = None
    stopped_early = False
    try:
        while trainer.epoch < cfg.epochs:
            t0 = time.perf_counter()
            first_round = trainer.rounds
            metrics, steps = trainer.run_epoch()
            # every rank: the slowest rank's time, and the same decision to stop
            metrics["epoch_time"] = group.max_float(time.perf_counter() - t0, trainer.device)
            out_of_time = group.any(
                cfg.duration > 0 and time.perf_counter() - started >= cfg.duration,
                trainer.device)
            if rundir is not None:
                rundir.append_metrics(metrics)
                rundir.append_steps(trainer.epoch, first_round, steps)
                loggers.log(metrics)
                bar.set_postfix(_postfix(metrics))
                bar.update()
            if out_of_time and trainer.epoch < cfg.epochs:
                stopped_early = True
                log.info("duration of %.0f s reached after epoch %d: stopping", cfg.duration,
                         trainer.epoch)
            if trainer.epoch % cfg.checkpoint_interval == 0 or trainer.epoch == cfg.epochs \
                    or stopped_early:
                payload = trainer.state_dict()  # a collective when distributed
                if rundir is not None:
                    last_ckpt = save_checkpoint(rundir.checkpoint_path(trainer.epoch), payload)
            if stopped_early:
                break
    finally:
        bar.close()
        if loggers is not None:
            loggers.close()
    summary: dict[str, Any] = {}
    if rundir is not None:
        summary = _finish(cfg, trainer, rundir, last_ckpt, stopped_early, started)
    group.barrier()  # every rank returns once the run directory is complete
    return RunResult(None if rundir is None else rundir.path, summary, trainer)


def _finish(cfg: TrainConfig, trainer: Trainer, rundir: RunDir, last_ckpt: Path | None,
            stopped_early: bool, started: float) -> dict[str, Any]:
    """Rank 0 after training: rollout check, summary, plot."""
    train_time = time.perf_counter() - started
    checks = {}
    if cfg.rollout_steps:
        systems = check_systems(trainer)
        total = cfg.rollout_steps * sum(s.batch_size if s.is_batched else 1
                                        for s in systems.values())
        with tqdm(total=total, desc="rollout check", unit="step", delay=PROGRESS_DELAY,
                  disable=cfg.quiet, dynamic_ncols=True) as bar:
            checks = {name: rollout_check(trainer.model, state, trainer.gate,
                                          cfg.rollout_steps, progress=bar)
                      for name, state in systems.items()}
    summary = _summary(cfg, trainer, rundir, last_ckpt, stopped_early, train_time, checks)
    summary["wall_time_s"] = time.perf_counter() - started
    summary["processes"] = trainer.group.world
    if cfg.plot:
        rundir.plot(cfg.energy_threshold, cfg.E_lower, cfg.E_upper)
    rundir.write_summary(summary, format_summary(summary))
    return summary


def _summary(cfg: TrainConfig, trainer: Trainer, rundir: RunDir, ckpt: Path | None,
             stopped_early: bool, train_time: float, checks: dict) -> dict[str, Any]:
    metrics = rundir.read_metrics()
    last = metrics[-1] if metrics else {}
    return {
        "run_dir": str(rundir.path),
        "system": system_label(cfg),
        "epochs_completed": trainer.epoch,
        "epochs_requested": cfg.epochs,
        "stopped_by_duration": stopped_early,
        "train_time_s": train_time,
        "objective": cfg.objective,
        "accepted_steps": sum(m.get("p1_accepted", 0) for m in metrics),
        "retrains": sum(m.get("p1_retrains", 0) for m in metrics),
        "replay_iterations": sum(m.get("p2_iterations", 0) for m in metrics),
        "windows": sum(m.get("wr_windows", 0) for m in metrics),
        "last_epoch": last,
        "final_checkpoint": None if ckpt is None else str(ckpt),
        "rollout_check": checks,
    }


def format_summary(s: dict[str, Any]) -> str:
    """The summary as a small text table."""
    last = s["last_epoch"]
    lines = [
        f"run directory      {s['run_dir']}",
        f"system             {s['system']}",
        f"epochs             {s['epochs_completed']} of {s['epochs_requested']}"
        + (" (stopped by --duration)" if s["stopped_by_duration"] else ""),
        f"training time      {s['train_time_s']:.1f} s",
    ]
    if s.get("objective") == "whole-run":
        lines.append(f"rollout windows    {s['windows']}")
        if last:
            lines.append(f"last epoch         loss {last['wr_loss']:.4g}   steps per unit time "
                         f"{last['wr_steps_per_time']:.4g}   whole-run |dE/E| median "
                         f"{last['wr_err_median']:.2e} max {last['wr_err_max']:.2e}")
    else:
        lines.append(f"accepted steps     {s['accepted_steps']}   retrains {s['retrains']}   "
                     f"Part 2 iterations {s['replay_iterations']}")
        if last:
            lines.append(f"last epoch         acceptance {last['p1_acceptance']:.3f}   mean dt "
                         f"{last['p1_dt_mean']:.4g}   rel_dE mean {last['p1_rel_dE_mean']:.2e} "
                         f"max {last['p1_rel_dE_max']:.2e}")
    lines.append(f"final checkpoint   {s['final_checkpoint']}")
    if s["rollout_check"]:
        lines += ["", "rollout check (trained model, eval mode, no rejection; a system whose "
                      f"whole-run |dE/E| passes {FAIL_ABOVE:g} has diverged and stops)",
                  f"{'system':<26}{'steps':>7}{'pass':>8}{'mean dt':>11}{'min dt':>11}"
                  f"{'max step dE':>13}{'run |dE/E|':>12}{'t_end':>11}  status"]
        for name, c in s["rollout_check"].items():
            lines.append(f"{name:<26}{c['steps']:>7}{number(c['pass_fraction'], '.3f'):>8}"
                         f"{number(c['mean_dt'], '.4g'):>11}{number(c['min_dt'], '.3g'):>11}"
                         f"{number(c['max_rel_dE'], '.2e'):>13}"
                         f"{number(c['final_rel_dE'], '.2e'):>12}"
                         f"{number(c['t_end'], '.1f'):>11}  {c['note'] or c['status']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 done, 1 training failed, 2 bad input)."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    config_file, resume = args.pop("config"), args.pop("resume")
    quiet = args.get("quiet", False)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aits").setLevel(logging.WARNING if quiet else logging.INFO)
    if env_world_size() > 1 and os.environ.get("RANK", "0") != "0":
        logging.getLogger("aits").setLevel(logging.WARNING)  # rank 0 speaks for the run
    checkpoint = None
    try:
        if resume:
            if config_file:
                raise ConfigError("--config and --resume exclude each other (the checkpoint "
                                  "holds the config)")
            try:
                resume = resolve_checkpoint(resume)  # a run directory: its newest checkpoint
            except FileNotFoundError as e:
                raise ConfigError(f"--resume: {e}") from None
            checkpoint = load_checkpoint(resume)
            cfg = resume_config(checkpoint, args)
            if cfg.epochs < checkpoint["epoch"]:
                raise ConfigError(
                    f"--resume: the checkpoint has done {checkpoint['epoch']} epochs, more than "
                    f"epochs = {cfg.epochs}; give --epochs {checkpoint['epoch']} or more (the "
                    "total, not the number to add)")
        else:
            cfg = resolve(config_file, args)
        require_loggers(cfg)
        device = resolve_device(cfg.device)
        if not resume:
            try:
                check_writable_dir(cfg.run_dir)
            except OSError as e:
                raise ConfigError(f"setting 'run_dir': {e.strerror or e}") from None
    except (ConfigError, CheckpointError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    own_group = not is_initialized()  # a group the caller made is the caller's to end
    device = init_from_env(device)
    try:
        result = run(cfg, resume, checkpoint, device)
    except (ConfigError, CheckpointError, InitialConditionsError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    except RetrainLimitError as e:
        print(f"{parser.prog}: training failed: {e}", file=sys.stderr)
        return 1
    except RunWriteError as e:
        print(f"{parser.prog}: run failed: {e}", file=sys.stderr)
        return 1
    finally:
        if own_group:
            shutdown()
    if not cfg.quiet and result.run_dir is not None:
        print(format_summary(result.summary))
    return 0


if __name__ == "__main__":
    status = main()
    if env_world_size() > 1:  # under torchrun: everything is written, skip the teardown
        exit_now(status)
    sys.exit(status)
