"""Training configuration: one dataclass, the same names in TOML and on the command line.

Every setting of :class:`TrainConfig` is

* a field ``steps_per_epoch`` in the dataclass,
* a key ``steps_per_epoch`` in a TOML file: top-level keys are *shared* (read by
  every aits tool), the ``[train]`` table holds training-only values and wins over
  the shared ones, other tables (``[simulate]``) are ignored here;
* an option ``--steps-per-epoch`` of ``python -m aits.train`` (underscores become
  hyphens), which wins over the file.

Values are checked by :func:`validate` before any work starts; an invalid one
raises :class:`ConfigError` naming the setting and its allowed range.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

import tomli_w

from aits.features import ANALYTIC_KINDS, HISTORY_KINDS
from aits.model import OUTPUTS
from aits.scenarios import list_scenarios

__all__ = [
    "ConfigError", "GateConfig", "PhysicsConfig", "TrainConfig", "add_arguments",
    "config_file_arguments", "dump_toml", "from_mapping", "load_toml", "resolve",
    "resolve_device", "resolve_dtype", "validate",
]

ACTIVATIONS = ("tanh", "relu", "gelu", "silu", "elu")
OPTIMIZERS = ("adam", "adamw", "sgd")
NORMALIZATIONS = ("none", "fixed", "state")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float64")
HISTORY_TYPES = ("none",) + HISTORY_KINDS


class ConfigError(ValueError):
    """An invalid setting (the message names it and its allowed values)."""


#: Tables a TOML file may hold besides its shared top-level keys.
TABLES = ("train", "simulate", "evaluate")
#: Largest seed (torch seeds are 64-bit).
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class PhysicsConfig:
    """The physics every tool shares: ``G > 0`` and Plummer ``softening >= 0``."""

    G: float = 1.0
    softening: float = 0.0


@dataclass(frozen=True)
class GateConfig:
    """The energy gate every tool shares (see :class:`aits.gate.EnergyGate`)."""

    energy_threshold: float = 2e-4
    E_lower: float = 1e-6
    E_upper: float = 1e-4

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> GateConfig:
        """The gate settings found in ``values`` (a stored training config), defaults
        for the others."""
        return cls(**{f.name: float(values[f.name]) for f in dataclasses.fields(cls)
                      if f.name in values})

    def gate(self):
        from aits.gate import EnergyGate

        return EnergyGate(threshold=self.energy_threshold, E_lower=self.E_lower,
                          E_upper=self.E_upper)


def resolve_device(name: str):
    """``auto`` -> cuda when available, else cpu; ``cuda`` without CUDA is an error
    (:class:`ConfigError`). The one device resolver of every tool."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        why = "this torch has no CUDA support" if torch.version.cuda is None else "no GPU is visible"
        raise ConfigError(f"setting 'device' is 'cuda' but CUDA is not available ({why}); "
                          "use --device cpu or auto")
    if name not in DEVICES:
        raise ConfigError(f"setting 'device' must be one of {', '.join(DEVICES)}, got {name!r}")
    return torch.device(name)


def resolve_dtype(name: str):
    """``float32`` / ``float64`` -> the torch dtype."""
    import torch

    if name not in DTYPES:
        raise ConfigError(f"setting 'dtype' must be one of {', '.join(DTYPES)}, got {name!r}")
    return getattr(torch, name)


def _opt(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with its ``--help`` text in the metadata."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Every setting of a training run (see the module docstring for the three
    ways to set them). Groups: system, gate, two-phase loop, features, network,
    optimiser, run/output."""

    # --- the system ---------------------------------------------------------------
    scenario: str = _opt("binary-e0.9", "named initial conditions (aits.list_scenarios())")
    ic_file: str = _opt("", "load the system from this .npy/.csv/.txt file instead of "
                            "--scenario (columns m x y [z] vx vy [vz])")
    num_orbits: int = _opt(1, "K > 1: train on K independent Kepler orbits with e and a "
                              "drawn from --e-range/--a-range instead of --scenario")
    e_range: list[float] = _opt([0.5, 0.95], "eccentricity range [low, high] for --num-orbits > 1")
    a_range: list[float] = _opt([0.5, 2.0], "semi-major axis range [low, high] for --num-orbits > 1")
    softening: float = _opt(0.0, "Plummer softening eps >= 0; for a named scenario a value "
                                 "> 0 replaces the scenario's own")
    G: float = _opt(1.0, "gravitational constant > 0; a named scenario is built in those units "
                         "(same orbits, velocities times sqrt(G))")
    units: str = _opt("nbody", "unit system setting G: nbody (G = 1), au-yr-msun, pc-myr-msun "
                               "or si (not together with a G other than 1)")

    # --- the energy gate -----------------------------------------------------------
    energy_threshold: float = _opt(2e-4, "a step passes when rel_dE < this (> 0)")
    E_lower: float = _opt(1e-6, "lower edge of the band loss (0 < E_lower < E_upper)")
    E_upper: float = _opt(1e-4, "upper edge of the band loss")

    # --- the two-phase loop ---------------------------------------------------------
    epochs: int = _opt(12, "number of epochs (>= 1), each Part 1 then Part 2")
    steps_per_epoch: int = _opt(400, "accepted steps (per system) Part 1 collects each epoch")
    n_steps: int = _opt(1, "leapfrog steps per attempt, all with the predicted dt (>= 1)")
    max_retrain_steps: int = _opt(2000, "retries of one Part 1 step before giving up with an "
                                        "error (0 = unlimited)")
    replay_steps: int = _opt(100, "Part 2 minibatch draws at most per epoch (>= 1)")
    replay_batch_size: int = _opt(128, "Part 2 minibatch size (>= 1)")
    min_replay_size: int = _opt(32, "Part 2 is skipped when fewer states were recorded")

    # --- features -------------------------------------------------------------------
    feature_type: str = _opt("basic", "analytic features of the current state: basic (11) or "
                                      "rich (23)")
    history_type: str = _opt("none", "history features: none, delta_mag, basic or rich")
    history_len: int = _opt(0, "K past states in the history window (also the warm-up length)")
    normalization: str = _opt("state", "feature normalisation: none, fixed (L0 V0 A0 T0 M0, "
                                       "derived from the initial state where 0) or state "
                                       "(each state's own dynamical units)")
    L0: float = _opt(0.0, "length scale for --normalization fixed (0 = from the initial state)")
    V0: float = _opt(0.0, "speed scale for --normalization fixed (0 = from the initial state)")
    A0: float = _opt(0.0, "acceleration scale for --normalization fixed (0 = derived)")
    T0: float = _opt(0.0, "time scale for --normalization fixed (0 = from the initial state)")
    M0: float = _opt(0.0, "mass scale for --normalization fixed (0 = from the initial state)")

    # --- the network ----------------------------------------------------------------
    hidden: list[int] = _opt([64, 64], "hidden layer sizes, e.g. --hidden 200 1000 1000 200")
    activation: str = _opt("tanh", "activation: " + ", ".join(ACTIVATIONS))
    dropout: float = _opt(0.0, "dropout after each hidden layer, in [0, 1)")
    fourier_features: int = _opt(0, "Gaussian Fourier-feature frequencies (0 = off)")
    fourier_sigma: float = _opt(1.0, "standard deviation of the Fourier frequencies (> 0)")
    output: str = _opt("dynamical", "dt parameterisation: direct (dt = softplus) or dynamical "
                                    "(dt = softplus * min pairwise free-fall time)")
    dt_init: float = _opt(0.2, "initial prediction of the network (times the free-fall time "
                               "for --output dynamical); start too large, training lowers it")

    # --- the optimiser --------------------------------------------------------------
    optimizer: str = _opt("adam", "optimiser: " + ", ".join(OPTIMIZERS))
    lr: float = _opt(1e-3, "learning rate (> 0)")
    weight_decay: float = _opt(0.0, "weight decay (>= 0)")

    # --- run, devices, output -------------------------------------------------------
    device: str = _opt("auto", "auto (cuda when available), cpu or cuda")
    dtype: str = _opt("float64", "float32 or float64 (simulation and network)")
    seed: int = _opt(0, "seed of every random number (initial weights, sampling, ICs)")
    checkpoint_interval: int = _opt(5, "write a checkpoint every this many epochs (>= 1); one is "
                                       "always written at the end")
    duration: float = _opt(0.0, "wall-clock budget in seconds: stop cleanly after the epoch that "
                                "exceeds it (0 = no limit)")
    run_dir: str = _opt("runs", "directory that holds the run directories")
    run_name: str = _opt("", "name of this run's directory (default: scenario and time stamp)")
    rollout_steps: int = _opt(3000, "steps of the closing rollout check per system (0 = skip)")
    quiet: bool = _opt(False, "no progress bar or summary table (for scripts)")
    plot: bool = _opt(True, "write plot.png (accepted dt and energy error over the run)")
    wandb: bool = _opt(False, "log metrics to Weights & Biases (pip install aits[wandb])")
    tensorboard: bool = _opt(False, "log metrics to TensorBoard (pip install aits[tensorboard])")

    @property
    def physics(self) -> PhysicsConfig:
        """The shared physics settings of this run (G from ``units`` when those are set)."""
        if self.units == "nbody":
            return PhysicsConfig(G=self.G, softening=self.softening)
        from aits.units import get_units

        return PhysicsConfig(G=get_units(self.units).G, softening=self.softening)

    @property
    def gate(self) -> GateConfig:
        """The shared gate settings of this run."""
        return GateConfig(self.energy_threshold, self.E_lower, self.E_upper)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists copied), in field order."""
        return {f.name: _copy(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with ``changes`` applied."""
        return validate(dataclasses.replace(self, **changes))


def _copy(v: Any) -> Any:
    return list(v) if isinstance(v, list) else v


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)


# ---------------------------------------------------------------------------- validation


def _fail(name: str, allowed: str, value: Any) -> None:
    raise ConfigError(f"setting {name!r} must be {allowed}, got {value!r}")


def _check_types(cfg: TrainConfig) -> None:
    for name, hint in _HINTS.items():
        v = getattr(cfg, name)
        origin = typing.get_origin(hint)
        if origin is list:
            (item,) = typing.get_args(hint)
            ok_items = all(_is(x, item) for x in v) if isinstance(v, list) else False
            if not ok_items:
                _fail(name, f"a list of {item.__name__}", v)
        elif not _is(v, hint):
            _fail(name, f"a {hint.__name__}", v)


def _is(v: Any, typ: type) -> bool:
    if typ is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if typ is int:
        return isinstance(v, int) and not isinstance(v, bool)
    return isinstance(v, typ)


def _in(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        _fail(name, "one of " + ", ".join(choices), value)


def _range_pair(name: str, v: list[float], lo: float, hi: float, hi_open: bool) -> None:
    top = f"{hi})" if hi_open else f"{hi}]"
    allowed = f"two numbers [low, high] with {lo} <= low <= high in [{lo}, {top}"
    if len(v) != 2 or not v[0] <= v[1] or v[0] < lo or (v[1] >= hi if hi_open else v[1] > hi):
        _fail(name, allowed, v)


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check every setting; return ``cfg`` with floats normalised to ``float``.

    Raises:
        ConfigError: naming the first invalid setting and its allowed range.
    """
    _check_types(cfg)
    for name in (f for f, h in _HINTS.items() if h is float):
        setattr(cfg, name, float(getattr(cfg, name)))
        if not math.isfinite(getattr(cfg, name)):
            _fail(name, "a finite number", getattr(cfg, name))
    cfg.e_range = [float(x) for x in cfg.e_range]
    cfg.a_range = [float(x) for x in cfg.a_range]
    at_least = {"epochs": 1, "steps_per_epoch": 1, "n_steps": 1, "max_retrain_steps": 0,
                "replay_steps": 1, "replay_batch_size": 1, "min_replay_size": 0,
                "history_len": 0, "num_orbits": 1, "fourier_features": 0,
                "checkpoint_interval": 1, "rollout_steps": 0}
    for name, lo in at_least.items():
        if getattr(cfg, name) < lo:
            _fail(name, f"an integer >= {lo}", getattr(cfg, name))
    positive = ("energy_threshold", "E_lower", "E_upper", "G", "fourier_sigma", "lr", "dt_init")
    for name in positive:
        if getattr(cfg, name) <= 0:
            _fail(name, "> 0", getattr(cfg, name))
    for name in ("softening", "weight_decay", "duration", "L0", "V0", "A0", "T0", "M0"):
        if getattr(cfg, name) < 0:
            _fail(name, ">= 0", getattr(cfg, name))
    if not 0 <= cfg.seed <= MAX_SEED:
        _fail("seed", f"an integer in [0, {MAX_SEED}]", cfg.seed)
    if cfg.E_lower >= cfg.E_upper:
        raise ConfigError(
            f"setting 'E_lower' must be < 'E_upper', got E_lower={cfg.E_lower!r} >= "
            f"E_upper={cfg.E_upper!r}"
        )
    if not 0 <= cfg.dropout < 1:
        _fail("dropout", "in [0, 1)", cfg.dropout)
    if not cfg.hidden or any(h < 1 for h in cfg.hidden):
        _fail("hidden", "a non-empty list of sizes >= 1", cfg.hidden)
    _in("scenario", cfg.scenario, list(list_scenarios()))
    _in("feature_type", cfg.feature_type, ANALYTIC_KINDS)
    _in("history_type", cfg.history_type, HISTORY_TYPES)
    _in("normalization", cfg.normalization, NORMALIZATIONS)
    _in("activation", cfg.activation, ACTIVATIONS)
    _in("output", cfg.output, OUTPUTS)
    _in("optimizer", cfg.optimizer, OPTIMIZERS)
    _in("device", cfg.device, DEVICES)
    _in("dtype", cfg.dtype, DTYPES)
    from aits.units import UNIT_SYSTEMS

    _in("units", cfg.units, tuple(UNIT_SYSTEMS))
    if cfg.units != "nbody" and cfg.G != 1.0:
        raise ConfigError(f"settings 'G' ({cfg.G!r}) and 'units' ({cfg.units!r}) both set G; "
                          "give one of them")
    if cfg.history_type != "none" and cfg.history_len == 0:
        raise ConfigError(
            f"setting 'history_len' must be >= 1 with history_type={cfg.history_type!r}, got 0"
        )
    _range_pair("e_range", cfg.e_range, 0.0, 1.0, hi_open=True)
    _range_pair("a_range", cfg.a_range, 0.0, math.inf, hi_open=True)
    if cfg.a_range[0] <= 0:
        _fail("a_range", "two numbers [low, high] with 0 < low <= high", cfg.a_range)
    if cfg.num_orbits > 1 and cfg.ic_file:
        raise ConfigError("settings 'num_orbits' > 1 and 'ic_file' exclude each other")
    if cfg.ic_file and not Path(cfg.ic_file).is_file():
        _fail("ic_file", "an existing file", cfg.ic_file)
    if any(c in cfg.run_name for c in "/\\") or cfg.run_name in (".", ".."):
        _fail("run_name", "a plain directory name (no path separators)", cfg.run_name)
    return cfg


# --------------------------------------------------------------------------------- TOML


def load_toml(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML file: shared top-level keys, then the ``[train]`` table
    on top; other tables (e.g. ``[simulate]``) are ignored.

    Raises:
        ConfigError: unreadable file, bad TOML, or an unknown key (named with its table).
    """
    path = Path(path)
    data = _read_toml(path)
    shared = {k: v for k, v in data.items() if not isinstance(v, dict)}
    _check_tables(path, data)
    train = data.get("train", {})
    if not isinstance(train, dict):
        raise ConfigError(f"config file {str(path)!r}: 'train' must be a table")
    for where, table in (("top level", shared), ("[train]", train)):
        for key in table:
            if key not in FIELDS:
                raise ConfigError(
                    f"config file {str(path)!r}: unknown setting {key!r} at {where}; "
                    "run `python -m aits.train --help` for the valid names"
                )
    return {**shared, **train}


def _check_tables(path: str | Path, data: Mapping[str, Any]) -> None:
    """Refuse a table other than :data:`TABLES` (a misspelled ``[trian]``)."""
    for key, value in data.items():
        if isinstance(value, dict) and key not in TABLES:
            raise ConfigError(f"config file {str(path)!r}: unknown table [{key}]; valid tables: "
                              + ", ".join(f"[{t}]" for t in TABLES))


def _read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text; save it as UTF-8") \
            from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {e}") from None


def config_file_arguments(
    parser: argparse.ArgumentParser, argv: Sequence[str], table: str
) -> list[str]:
    """The command-line arguments that ``--config FILE`` in ``argv`` stands for, for a
    tool other than training (``python -m aits.simulate``: ``table="simulate"``).

    The file's top-level keys are shared by every aits tool: those that name an
    option of ``parser`` apply, the others (training settings) are skipped. Every
    key of the ``[table]`` table must name an option. Put the result *before*
    ``argv``: the command line then overrides the file, option by option (a file's
    ``t_end`` yields to a command-line ``--orbits`` of the same exclusive group).

    Raises:
        ConfigError: unreadable file, bad TOML, or an unknown key in ``[table]``.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if known.config is None:
        return []
    data = _read_toml(known.config)
    _check_tables(known.config, data)
    section = data.get(table, {})
    if not isinstance(section, dict):
        raise ConfigError(f"config file {known.config!r}: {table!r} must be a table")
    options = {a.dest: a for a in parser._actions if a.option_strings and a.dest != "config"}
    for key in section:
        if key not in options:
            raise ConfigError(
                f"config file {known.config!r}: unknown setting {key!r} in [{table}]; valid: "
                + ", ".join(sorted(k for k in options if k != "help"))
            )
    values = {k: v for k, v in data.items() if not isinstance(v, dict) and k in options}
    values.update(section)
    given = {s.split("=", 1)[0] for s in argv if s.startswith("-")}
    for group in parser._mutually_exclusive_groups:
        if given & {s for a in group._group_actions for s in a.option_strings}:
            for a in group._group_actions:
                values.pop(a.dest, None)
    args: list[str] = []
    for key, value in values.items():
        action = options[key]
        expected = _toml_kind(action)
        if not _toml_matches(value, expected):
            raise ConfigError(f"config file {known.config!r}: {key} must be {expected}, "
                              f"got {value!r}")
        flag = action.option_strings[-1]
        if isinstance(value, bool):
            args += [flag] if value else []
        elif isinstance(value, list):
            args += [flag, *map(str, value)]
        else:
            args += [flag, str(value)]
    return args


def _toml_kind(action: argparse.Action) -> str:
    """What a TOML value for ``action`` must be, in words."""
    if action.nargs == 0:
        return "true or false"
    item = "a number" if action.type in (int, float) else "a string"
    return f"a list of {item[2:]}s" if action.nargs in ("+", "*") else item


def _toml_matches(value: Any, kind: str) -> bool:
    if kind == "true or false":
        return isinstance(value, bool)
    if kind.startswith("a list of "):
        return isinstance(value, list) and all(
            _toml_matches(v, "a " + kind.removeprefix("a list of ")[:-1]) for v in value)
    if kind == "a number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, str)


def dump_toml(cfg: TrainConfig) -> str:
    """The resolved config as a TOML document (a ``[train]`` table), readable by
    :func:`load_toml`."""
    return tomli_w.dumps({"train": cfg.to_dict()})


def from_mapping(values: Mapping[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """A validated config: ``base`` (defaults when ``None``) with ``values`` applied."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
    base = base or TrainConfig()
    return validate(dataclasses.replace(base, **{k: _copy(v) for k, v in values.items()}))


# ------------------------------------------------------------------------------ argparse


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per field (``--steps-per-epoch``); defaults are *not* set on the
    parser (``argparse.SUPPRESS``) so that only given options override the file."""
    group = parser.add_argument_group("settings (also valid as TOML keys, underscores kept)")
    for name, f in FIELDS.items():
        hint = _HINTS[name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kw: dict[str, Any] = dict(default=argparse.SUPPRESS, dest=name,
                                  help=f"{f.metadata['help']} (default: {default!r})")
        if hint is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(hint) is list:
            (item,) = typing.get_args(hint)
            kw.update(type=item, nargs=2 if name.endswith("_range") else "+",
                      metavar=("LOW", "HIGH") if name.endswith("_range") else item.__name__.upper())
        else:
            kw.update(type=hint, metavar=hint.__name__.upper())
        group.add_argument(_flag(name), **kw)


def resolve(config_file: str | None, cli_values: Mapping[str, Any]) -> TrainConfig:
    """Defaults, then ``config_file`` (if any), then the command-line values."""
    values: dict[str, Any] = load_toml(config_file) if config_file else {}
    values.update(cli_values)
    return from_mapping(values)
