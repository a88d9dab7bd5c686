"""The settings of every aits tool: one dataclass each, the same names in TOML
and on the command line (the bridge is :mod:`aits.settings`).

* :class:`TrainConfig` — ``python -m aits.train`` (TOML table ``[train]``);
* :class:`SimulateConfig` — ``python -m aits.simulate`` (``[simulate]``);
* :class:`EvaluateConfig` — ``python -m aits.evaluate`` (``[evaluate]``).

The settings every tool has (``device``, ``dtype``, ``seed``, the physics
``softening``, ``G``, ``units`` and the gate's ``energy_threshold``) are declared
once, in :class:`SharedSettings`, and resolve to the shared sub-configs
:class:`PhysicsConfig` and :class:`GateConfig`. A setting that does not apply to
a run (``--eta`` with ``--policy fixed``) is refused, never swallowed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aits.features import ANALYTIC_KINDS, HISTORY_KINDS, HISTORY_WINDOW, WINDOW_KINDS
from aits.integrators import INTEGRATORS
from aits.model import OUTPUTS
from aits.policies import CLASSICAL, POLICIES
from aits.population import POPULATIONS
from aits.results import FAIL_ABOVE
from aits.scenarios import list_scenarios
from aits.settings import ConfigError, Settings, setting
from aits.suites import SUITES
from aits.units import UNIT_SYSTEMS

__all__ = [
    "ConfigError", "EvaluateConfig", "GateConfig", "PhysicsConfig", "SharedSettings",
    "SimulateConfig", "TrainConfig", "add_arguments", "dump_toml", "from_mapping",
    "load_toml", "resolve", "resolve_device", "resolve_dtype", "validate",
]

ACTIVATIONS = ("tanh", "relu", "gelu", "silu", "elu")
OPTIMIZERS = ("adam", "adamw", "sgd")
NORMALIZATIONS = ("none", "fixed", "state")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float64")
HISTORY_TYPES = ("none",) + HISTORY_KINDS
#: What training optimises (aits.training's two gated phases, or aits.whole_run).
OBJECTIVES = ("gate", "whole-run")
#: Which gated steps train.
BANDS = ("one-sided", "two-sided")
#: Integrators whole-run training differentiates through (ttl fixes its step at the start).
ROLLOUT_INTEGRATORS = ("kdk", "symmetric")
WINDOW_ERRORS = ("bound", "measured")
#: Largest seed (torch seeds are 64-bit).
MAX_SEED = 2**63 - 1
#: What evaluate tunes: the fixed step and the classical criteria.
TUNABLE = ("fixed",) + CLASSICAL
#: What evaluate tunes to: the whole-run energy error or the final position error.
TARGETS = ("energy", "position")

@dataclass(frozen=True)
class PhysicsConfig:
    """The physics every tool shares: ``G > 0`` and Plummer ``softening >= 0``."""

    G: float = 1.0
    #: ``None``: the system's own (a scenario's, 0 for a file)
    softening: float | None = None


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
                      if values.get(f.name) is not None})

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


# ------------------------------------------------------------------- shared settings

RUN = "run, devices"
PHYSICS = "physics"
GATE = "the energy gate"


@dataclass
class SharedSettings(Settings):
    """The settings every tool has, declared once (top-level TOML keys apply to all)."""

    device: str = setting("auto", "auto (cuda when available), cpu or cuda", choices=DEVICES,
                          section=RUN)
    dtype: str = setting("float64", "float32 or float64 (simulation and network)",
                         choices=DTYPES, section=RUN)
    seed: int = setting(0, "seed of every random number (weights, sampling, random scenarios)",
                        ge=0, le=MAX_SEED, section=RUN)
    softening: float | None = setting(None, "Plummer softening eps >= 0 (default: the "
                                            "scenario's own, 0 for a file); a value replaces "
                                            "the scenario's own", ge=0, section=PHYSICS)
    G: float | None = setting(None, "gravitational constant > 0 (default 1, or the G of "
                                    "--units); a named scenario is built in those units (same "
                                    "orbits, velocities times sqrt(G))", gt=0, section=PHYSICS)
    units: str = setting("nbody", "unit system setting G and labelling results: nbody (G = 1), "
                                  "au-yr-msun, pc-myr-msun or si", choices=tuple(UNIT_SYSTEMS),
                         section=PHYSICS)
    energy_threshold: float | None = setting(
        None, "energy gate: a step passes when rel_dE < this (> 0; default: train 2e-4, "
              "simulate/evaluate the checkpoint's training value, else 2e-4)", gt=0,
        section=GATE)

    def check(self) -> None:
        super().check()
        if self.units != "nbody" and self.G is not None:
            raise ConfigError(f"settings 'G' ({self.G!r}) and 'units' ({self.units!r}) both "
                              "set G; give one of them")

    @property
    def physics(self) -> PhysicsConfig:
        """``G`` (from ``units`` when those are set, else ``G`` or 1) and ``softening``
        (``None``: the system's own)."""
        if self.units != "nbody":
            from aits.units import get_units

            return PhysicsConfig(G=get_units(self.units).G, softening=self.softening)
        return PhysicsConfig(G=1.0 if self.G is None else self.G, softening=self.softening)

    @property
    def gravitational_constant(self) -> float | None:
        """``G`` as given (directly or by ``units``); ``None`` when neither is set."""
        return None if self.units == "nbody" and self.G is None else self.physics.G

    def gate_over(self, stored: Mapping[str, Any] | None = None) -> GateConfig:
        """The gate of a run: ``stored`` (a checkpoint's training config) where it has
        the gate settings, defaults otherwise, ``energy_threshold`` on top when set."""
        gate = GateConfig.from_mapping(stored or {})
        if self.energy_threshold is None:
            return gate
        return dataclasses.replace(gate, energy_threshold=self.energy_threshold)


# ------------------------------------------------------------------------------ train


@dataclass
class TrainConfig(SharedSettings):
    """Every setting of ``python -m aits.train`` (``[train]`` in TOML). Groups: system,
    gate, two-phase loop, features, network, optimiser, run/output."""

    TABLE = "train"

    # --- the system ---------------------------------------------------------------
    scenario: str = setting("binary-e0.9", "named initial conditions",
                            choices=tuple(list_scenarios()), section="the system")
    ic_file: str = setting("", "load the system from this .npy/.csv/.txt file instead of "
                            "--scenario (columns m x y [z] vx vy [vz])", metavar="FILE",
                           section="the system")
    num_orbits: int = setting(1, "K > 1: train on K independent Kepler orbits with e and a "
                                 "drawn from --e-range/--a-range instead of --scenario", ge=1)
    e_range: list[float] = setting([0.5, 0.95], "eccentricity range [low, high] for "
                                   "--num-orbits > 1", nargs=2, metavar=("LOW", "HIGH"))
    a_range: list[float] = setting([0.5, 2.0], "semi-major axis range [low, high] for "
                                   "--num-orbits > 1", nargs=2, metavar=("LOW", "HIGH"))

    # --- the energy gate -----------------------------------------------------------
    E_lower: float = setting(1e-6, "lower edge of the band loss (0 < E_lower < E_upper)",
                             gt=0, section="the energy gate")
    E_upper: float = setting(1e-4, "upper edge of the band loss", gt=0, section="the energy gate")

    # --- the two-phase loop ---------------------------------------------------------
    epochs: int = setting(12, "number of epochs (>= 1), each Part 1 then Part 2", ge=1,
                          section="the two-phase loop")
    steps_per_epoch: int = setting(400, "accepted steps (per system) Part 1 collects each epoch",
                                   ge=1, section="the two-phase loop")
    n_steps: int = setting(1, "leapfrog steps per attempt, all with the predicted dt (>= 1)",
                           ge=1, section="the two-phase loop")
    max_retrain_steps: int = setting(2000, "retries of one Part 1 step before giving up with an "
                                        "error (0 = unlimited)", ge=0,
                                     section="the two-phase loop")
    replay_steps: int = setting(100, "Part 2 minibatch draws at most per epoch (>= 1)",
                                ge=1, section="the two-phase loop")
    replay_batch_size: int = setting(128, "Part 2 minibatch size (>= 1)", ge=1,
                                     section="the two-phase loop")
    min_replay_size: int = setting(32, "Part 2 is skipped when fewer states were "
                                   "recorded", ge=0, section="the two-phase loop")

    band: str = setting("one-sided", "which gated steps train: one-sided (only steps failing the "
                                     "gate) or two-sided (also steps below E_lower, so dt grows "
                                     "where it is wastefully small)",
                        choices=BANDS, section="the two-phase loop")

    # --- whole-run training ---------------------------------------------------------
    objective: str = setting("gate", "what training optimises: gate (the two seed phases, each "
                                     "step against the energy gate) or whole-run (K-step "
                                     "differentiable rollouts against a whole-run energy budget "
                                     "and the steps per unit time)",
                             choices=OBJECTIVES, section="whole-run training")
    population: str = setting("config", "systems whole-run training draws: config (the system "
                                        "above: scenario, num_orbits or ic_file) or generalist "
                                        "(binaries, triples and small clusters; see "
                                        "aits.population)",
                              choices=POPULATIONS, section="whole-run training")
    rollout_integrator: str = setting("kdk", "integrator of the whole-run rollouts: kdk or "
                                             "symmetric (its recurrence differentiated through)",
                                      choices=ROLLOUT_INTEGRATORS, section="whole-run training")
    run_budget: float = setting(1e-3, "whole-run max |dE/E| the rollouts aim at (> 0)", gt=0,
                                finite=True, section="whole-run training")
    window: int = setting(64, "steps of one differentiable rollout (truncated back-propagation; "
                              "the state is detached between windows)", ge=1,
                          section="whole-run training")
    windows_per_epoch: int = setting(40, "windows (each one optimiser step) per epoch", ge=1,
                                     section="whole-run training")
    restart_windows: int = setting(8, "windows a drawn system runs before it is drawn afresh",
                                   ge=1, section="whole-run training")
    cost_weight: float = setting(0.1, "weight of log(steps per unit time) against the squared "
                                      "log excess of the error over run_budget (> 0)", gt=0,
                                 finite=True, section="whole-run training")
    window_error: str = setting("measured", "the whole-run error a window is judged by: bound (the "
                                         "error the window started with plus its own "
                                         "|E(t) - E(start)|, an upper bound whose gradient "
                                         "cannot trade new error against the inherited one) or "
                                         "measured (|E(t) - E0| itself)",
                                choices=WINDOW_ERRORS, section="whole-run training")

    # --- features -------------------------------------------------------------------
    feature_type: str = setting("basic", "analytic features of the current state: basic (11), "
                                      "rich (23), encounter or encounter-smooth (14 scale-free "
                                      "ratios each), encounter-orbit (15: encounter-smooth "
                                      "and the orbits' shape), encounter-history (11: "
                                      "encounter-smooth without the pair times, derivatives "
                                      "from the last history_len states; see aits.features)",
                                choices=ANALYTIC_KINDS, section="features")
    history_type: str = setting("none", "history features: none, delta_mag, basic or rich",
                                 choices=HISTORY_TYPES, section="features")
    history_len: int = setting(0, "K past states in the history window (also the "
                                     "warm-up length; with feature_type encounter-history "
                                     "the states its derivatives come from, >= 3)", ge=0,
                               section="features")
    normalization: str = setting("state", "feature normalisation: none, fixed (L0 V0 A0 T0 M0, "
                                       "derived from the initial state where 0) or state "
                                       "(each state's own dynamical units)",
                                 choices=NORMALIZATIONS, section="features")
    L0: float = setting(0.0, "length scale for --normalization fixed (0 = from the initial state)",
                          ge=0, section="features")
    V0: float = setting(0.0, "speed scale for --normalization fixed (0 = from the initial state)",
                          ge=0, section="features")
    A0: float = setting(0.0, "acceleration scale for --normalization fixed (0 = derived)",
                          ge=0, section="features")
    T0: float = setting(0.0, "time scale for --normalization fixed (0 = from the initial state)",
                          ge=0, section="features")
    M0: float = setting(0.0, "mass scale for --normalization fixed (0 = from the initial state)",
                          ge=0, section="features")

    # --- the network ----------------------------------------------------------------
    hidden: list[int] = setting([64, 64], "hidden layer sizes, e.g. --hidden 200 1000 1000 "
                                "200", ge=1, section="the network")
    activation: str = setting("tanh", "activation: " + ", ".join(ACTIVATIONS),
                              choices=ACTIVATIONS, section="the network")
    dropout: float = setting(0.0, "dropout after each hidden layer, in [0, 1)",
                             section="the network")
    fourier_features: int = setting(0, "Gaussian Fourier-feature frequencies (0 = off)",
                                  ge=0, section="the network")
    fourier_sigma: float = setting(1.0, "standard deviation of the Fourier frequencies "
                                    "(> 0)", gt=0, section="the network")
    output: str = setting("aarseth", "dt parameterisation: direct (dt = softplus), dynamical "
                                       "(softplus * min pairwise free-fall time) or aarseth "
                                       "(softplus * Aarseth's time scale: a learned correction "
                                       "to Aarseth's criterion)",
                          choices=OUTPUTS, section="the network")
    dt_init: float = setting(0.14, "initial prediction of the network (times the time scale for "
                                  "--output dynamical/aarseth; aarseth starts as Aarseth's "
                                  "criterion with eta = dt_init^2); start too large, training "
                                  "lowers it", gt=0, section="the network")

    # --- the optimiser --------------------------------------------------------------
    optimizer: str = setting("adam", "optimiser: " + ", ".join(OPTIMIZERS),
                             choices=OPTIMIZERS, section="the optimiser")
    lr: float = setting(1e-3, "learning rate (> 0)", gt=0, section="the optimiser")
    weight_decay: float = setting(0.0, "weight decay (>= 0)", ge=0, section="the optimiser")
    grad_clip: float = setting(0.0, "clip the gradients' total norm at this before every "
                                    "optimiser step (0 = no clipping)", ge=0, finite=True,
                               section="the optimiser")

    # --- run, output ----------------------------------------------------------------
    checkpoint_interval: int = setting(5, "write a checkpoint every this many epochs (>= 1); "
                                          "one is always written at the end", ge=1, section=RUN)
    duration: float = setting(0.0, "wall-clock budget in seconds: stop cleanly after the epoch "
                                   "that exceeds it (0 = no limit)", ge=0, section=RUN)
    run_dir: str = setting("runs", "directory that holds the run directories", metavar="DIR",
                           section=RUN)
    run_name: str = setting("", "name of this run's directory (default: scenario and time "
                                "stamp)", section=RUN)
    rollout_steps: int = setting(3000, "steps of the closing rollout check per system "
                                       "(0 = skip)", ge=0, section=RUN)
    quiet: bool = setting(False, "no progress bar or summary table (for scripts)", section=RUN)
    plot: bool = setting(True, "write plot.png (accepted dt and energy error over the run)",
                         section=RUN)
    wandb: bool = setting(False, "log metrics to Weights & Biases (pip install aits[wandb])",
                          section=RUN)
    tensorboard: bool = setting(False, "log metrics to TensorBoard (pip install "
                                       "aits[tensorboard])", section=RUN)

    @property
    def gate(self) -> GateConfig:
        """The gate of this run."""
        return GateConfig(self.energy_threshold, self.E_lower, self.E_upper)

    def check(self) -> None:
        super().check()
        if self.energy_threshold is None:
            self.energy_threshold = GateConfig.energy_threshold
        if self.E_lower >= self.E_upper:
            raise ConfigError(f"setting 'E_lower' must be < 'E_upper', got "
                              f"E_lower={self.E_lower!r} >= E_upper={self.E_upper!r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"setting 'dropout' must be in [0, 1), got {self.dropout!r}")
        whole_run = self.objective == "whole-run"
        for name in ("population", "rollout_integrator", "run_budget", "window",
                     "windows_per_epoch", "restart_windows", "cost_weight", "window_error"):
            self.refuse_unless(name, whole_run, "without objective = 'whole-run'")
        for name in ("band", "steps_per_epoch", "n_steps", "max_retrain_steps", "replay_steps",
                     "replay_batch_size", "min_replay_size"):
            self.refuse_unless(name, not whole_run, "with objective = 'whole-run' (it "
                               "belongs to the two gated phases)")
        if whole_run and self.history_type != "none":
            raise ConfigError("objective 'whole-run' trains models without history features: "
                              "set history_type = 'none'")
        if self.history_type != "none" and self.history_len == 0:
            raise ConfigError("setting 'history_len' must be >= 1 with "
                              f"history_type={self.history_type!r}, got 0")
        if self.feature_type in WINDOW_KINDS:
            if self.history_type != "none":
                raise ConfigError(f"feature_type {self.feature_type!r} takes no history "
                                  "features: set history_type = 'none'")
            low, high = HISTORY_WINDOW
            if not low <= self.history_len <= high:
                raise ConfigError(f"feature_type {self.feature_type!r} needs history_len >= "
                                  f"{low} and <= {high} (the past states its derivatives come "
                                  f"from; 4 is usual), got {self.history_len}")
        _range_pair("e_range", self.e_range, 0.0, 1.0, hi_open=True)
        _range_pair("a_range", self.a_range, 0.0, math.inf, hi_open=True)
        if self.a_range[0] <= 0:
            raise ConfigError("setting 'a_range' must be two numbers [low, high] with "
                              f"0 < low <= high, got {self.a_range!r}")
        if self.num_orbits > 1 and self.ic_file:
            raise ConfigError("settings 'num_orbits' > 1 and 'ic_file' exclude each other")
        if self.ic_file and not Path(self.ic_file).is_file():
            raise ConfigError(f"setting 'ic_file' must be an existing file, got "
                              f"{self.ic_file!r}")
        if any(c in self.run_name for c in "/\\") or self.run_name in (".", ".."):
            raise ConfigError("setting 'run_name' must be a plain directory name (no path "
                              f"separators), got {self.run_name!r}")


def _range_pair(name: str, v: list[float], lo: float, hi: float, hi_open: bool) -> None:
    top = f"{hi})" if hi_open else f"{hi}]"
    if len(v) != 2 or not v[0] <= v[1] or v[0] < lo or (v[1] >= hi if hi_open else v[1] > hi):
        raise ConfigError(f"setting {name!r} must be two numbers [low, high] with {lo} <= low "
                          f"<= high in [{lo}, {top}, got {v!r}")


#: The training settings by name.
FIELDS = TrainConfig.field_map()


def validate(cfg: TrainConfig) -> TrainConfig:
    """:meth:`TrainConfig.validate`: check every setting, return ``cfg`` normalised."""
    return cfg.validate()


def from_mapping(values: Mapping[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """A validated training config: ``base`` (defaults) with ``values`` applied."""
    return TrainConfig.from_mapping(values, base)


def load_toml(path: str | Path) -> dict[str, Any]:
    """The training settings of a TOML file (shared keys, then ``[train]``)."""
    return TrainConfig.load_toml(path)


def resolve(config_file: str | Path | None, cli_values: Mapping[str, Any]) -> TrainConfig:
    """Training defaults, then ``config_file`` (if any), then the command line."""
    return TrainConfig.resolve(config_file, cli_values)


def dump_toml(cfg: TrainConfig) -> str:
    """The resolved training config as TOML (a ``[train]`` table)."""
    return cfg.dump_toml()


def add_arguments(parser) -> None:
    """One option of ``python -m aits.train`` per training setting."""
    TrainConfig.add_arguments(parser)


# ------------------------------------------------------------ simulate and evaluate

LENGTH = "length of the run (one of)"
SYSTEM = "the system (one of)"
GUARDS = "guard rails (all off by default)"
OUTPUT = "output"


@dataclass
class RunSettings(SharedSettings):
    """What simulate and evaluate share: the run's length, the integrator's knob, the
    step cap."""

    t_end: float | None = setting(None, "simulated time to run (> 0)", gt=0,
                                  exclusive="length", section=LENGTH)
    orbits: float | None = setting(None, "run this many periods (two-body systems and "
                                         "figure8)", gt=0, exclusive="length", section=LENGTH)
    steps: int | None = setting(None, "run exactly this many steps (>= 1)", ge=1,
                                exclusive="length", section=LENGTH)
    symmetric_iterations: int = setting(0, "symmetric: 0 = the reversible one-evaluation "
                                           "recurrence, K >= 1 = the iterated form with K trial "
                                           "steps a step", ge=0, metavar="K", section=RUN)
    max_steps: int = setting(1_000_000, "a system stops (with a warning, keeping its last "
                                        "state) after this many steps", ge=1, section=RUN)
    quiet: bool = setting(False, "no output but warnings and errors (no summary, tables, "
                                "progress bars or file list)", section=RUN)
    fail_above: float = setting(FAIL_ABOVE, "a run whose whole-run |dE/E| passes this has "
                                            "diverged and stops there (inf: never)", gt=0,
                                finite=False, section=RUN)
    checkpoint: str | None = setting(None, "training checkpoint (.pt) or run directory of the "
                                           "model", metavar="PATH", section="the policy")

    def integrators(self) -> list[str]:
        """The integrators the run uses (each tool says)."""
        raise NotImplementedError

    def check(self) -> None:
        super().check()
        self.refuse_unless("symmetric_iterations", "symmetric" in self.integrators(),
                           "without --integrator symmetric")


@dataclass
class SimulateConfig(RunSettings):
    """Every setting of ``python -m aits.simulate`` (``[simulate]`` in TOML)."""

    TABLE = "simulate"

    scenario: str | None = setting(None, "named initial conditions",
                                   choices=tuple(list_scenarios()), exclusive="system",
                                   section=SYSTEM)
    ic: list[str] | None = setting(None, "initial conditions from .npy/.csv/.txt (columns m x y "
                                         "[z] vx vy [vz]); a (B, N, 2D+1) .npy or several files "
                                         "run as one batch", metavar="FILE",
                                   exclusive="system", section=SYSTEM)
    rebound_bin: str | None = setting(None, "a REBOUND Simulationarchive / binary file (its "
                                            "last snapshot, or --snapshot K); needs the "
                                            "aits[rebound] extra", metavar="FILE",
                                      exclusive="system", section=SYSTEM)
    snapshot: int = setting(-1, "snapshot of --rebound-bin (-1 = the last)", section=SYSTEM)
    policy: str = setting("model", "time-step policy (model: --checkpoint, else the pretrained "
                                   "model shipped with aits)",
                          choices=POLICIES, section="the policy")
    dt: float | None = setting(None, "step for --policy fixed", gt=0, section="the policy")
    eta: float | None = setting(None, "parameter of freefall/collisional/aarseth", gt=0,
                                section="the policy")
    dt_scale: float = setting(1.0, "factor on the model policy's dt, its accuracy knob", gt=0,
                              section="the policy")
    integrator: str = setting("kdk", "kdk (leapfrog), symmetric (time-symmetric adaptive KDK) "
                                     "or ttl (logarithmic-Hamiltonian leapfrog)",
                              choices=tuple(INTEGRATORS), section=RUN)
    dt_min: float = setting(0.0, "smallest allowed step", ge=0, section=GUARDS)
    dt_max: float = setting(math.inf, "largest allowed step", gt=0, finite=False,
                            section=GUARDS)
    max_growth: float = setting(math.inf, "largest ratio of a step to the previous one (> 1)",
                                gt=1, finite=False, section=GUARDS)
    gated: bool = setting(False, "reject steps failing the energy gate and retry them smaller",
                          section=GUARDS)
    shrink: float = setting(0.5, "dt factor of a gated retry", gt=0, lt=1, section=GUARDS)
    max_retries: int = setting(30, "gated retries of one step", ge=1, section=GUARDS)
    out: str | None = setting(None, "write DIR/result.json (and more)", metavar="DIR",
                              section=OUTPUT)
    trajectory: bool = setting(False, "write DIR/trajectory.npz", section=OUTPUT)
    save_final: str | None = setting(None, "write the final state as an IC file aits reads "
                                           "(.npy, or a text table for other suffixes; a batch "
                                           "needs .npy)", metavar="FILE", section=OUTPUT)
    hdf5: bool = setting(False, "also write DIR/trajectory.h5 (aits.trajectory_io layout; "
                                "aits[hdf5])", section=OUTPUT)
    plots: bool = setting(False, "write DIR/orbits.png and DIR/energy_dt.png (log axes)",
                          section=OUTPUT)
    animate: bool = setting(False, "write DIR/animation.mp4 (GIF without ffmpeg; 3-D runs as "
                                   "the --projection)", section=OUTPUT)
    projection: str = setting("xy", "plane of the orbit plot and animation of a 3-D run",
                              choices=("xy", "xz"), section=OUTPUT)
    frames: int = setting(500, "frames in trajectory.npz, the orbit plot and the animation "
                               "(exactly; a run of fewer steps has one a step)", ge=2,
                          section=OUTPUT)
    output_times: list[float] | None = setting(
        None, "record the state at these times after the start (steps land on them "
              "exactly): result.json and trajectory.npz", ge=0, metavar="T",
        exclusive="outputs", section=OUTPUT)
    output_every: float | None = setting(None, "record the state every DT from the start to "
                                               "the end (as --output-times)", gt=0,
                                         metavar="DT", exclusive="outputs", section=OUTPUT)
    allow_divergence: bool = setting(False, "a run that diverges (see --fail-above; a step "
                                            "still failing the gate after --max-retries) runs "
                                            "on and exits 0 instead of stopping there with "
                                            "exit status 3", section=RUN)

    def integrators(self) -> list[str]:
        return [self.integrator]

    @property
    def files_requested(self) -> bool:
        """Whether a trajectory, plot or animation file is asked for."""
        return self.trajectory or self.hdf5 or self.plots or self.animate

    def check(self) -> None:
        super().check()
        self.require_one("system")
        self.require_one("length")
        self.refuse_unless("snapshot", self.rebound_bin is not None, "without --rebound-bin")
        applies = {"dt": ("fixed",), "eta": CLASSICAL, "dt_scale": ("model",),
                   "checkpoint": ("model",)}
        for name, policies in applies.items():
            self.refuse_unless(name, self.policy in policies,
                               f"to --policy {self.policy} (it is for {', '.join(policies)})")
        if self.files_requested and self.out is None:
            raise ConfigError("--trajectory/--hdf5/--plots/--animate need --out DIR")
        if (self.output_times or self.output_every) and self.out is None:
            raise ConfigError("--output-times/--output-every need --out DIR (result.json)")
        if self.output_every is not None and self.steps is not None:
            raise ConfigError("--output-every needs --t-end or --orbits (an end to count to); "
                              "with --steps give --output-times")


@dataclass
class EvaluateConfig(RunSettings):
    """Every setting of ``python -m aits.evaluate`` (``[evaluate]`` in TOML)."""

    TABLE = "evaluate"

    scenarios: list[str] | None = setting(None, "scenarios to run (default: binary-e0.5 "
                                                "binary-e0.9 figure8 unless --ic is given)",
                                          choices=tuple(list_scenarios()), section=SYSTEM)
    ic: list[str] | None = setting(None, "initial-condition files to evaluate on (one system "
                                         "each), beside --scenarios", metavar="FILE",
                                   section=SYSTEM)
    policies: list[str] = setting(list(TUNABLE), "classical policies to tune and compare",
                                  choices=TUNABLE, section="the policies")
    suite: str | None = setting(None, "a named suite instead of --scenarios/--ic and a length: "
                                      "standard = Kepler e 0.5, 0.9, 0.99 and the figure-eight "
                                      "(10 periods each), Plummer N = 64 (t = 5), a hierarchical "
                                      "triple (one outer period); tolerances 1e-3 and 1e-4; kdk "
                                      "and symmetric, ttl as a reference",
                                choices=tuple(SUITES), section=SYSTEM)
    integrator: list[str] | None = setting(None, "integrators to compare, every policy under "
                                                 "each (default: kdk, or the suite's)",
                                           choices=tuple(INTEGRATORS), section="the policies")
    tolerance: list[float] | None = setting(None, "target errors, one table each (default: the "
                                                  "model's own under the first integrator, or "
                                                  "the suite's); with them the model's dt_scale "
                                                  "is tuned too", gt=0, section="tuning")
    target: str = setting("energy", "tune to the whole-run max |dE/E| (energy) or the final "
                                    "position error against the reference run (position)",
                          choices=TARGETS, section="tuning")
    rtol: float = setting(0.1, "accept a tuned run within this relative distance below the "
                               "target", gt=0, lt=1, section="tuning")
    max_runs: int = setting(30, "simulations per tuning at most", ge=2, section="tuning")
    pretrained: bool = setting(False, "evaluate the pretrained model shipped with aits "
                                      "(aits.pretrained()) instead of --checkpoint",
                               section="the policies")
    rebound: bool = setting(True, "add the REBOUND IAS15 column when rebound is installed",
                            section=OUTPUT)
    position_error: bool = setting(True, "report the final position error against a "
                                         "high-accuracy reference run (IAS15, else a step about "
                                         "100x smaller: the costliest run of a table)",
                                   section=OUTPUT)
    out: str = setting("evaluation", "directory for evaluation.md/.json/.png", metavar="DIR",
                       section=OUTPUT)

    def integrators(self) -> list[str]:
        if self.integrator is not None:
            return self.integrator
        return list(SUITES[self.suite].integrators) if self.suite else ["kdk"]

    def references(self) -> list[str]:
        """The suite's reference integrators (classical policies only), unless
        ``integrator`` is given."""
        return list(SUITES[self.suite].references) if self.suite and not self.integrator else []

    def tolerances(self) -> list[float | None]:
        """The targets, one table each (``None``: the model's own error)."""
        if self.tolerance is not None:
            return self.tolerance
        return list(SUITES[self.suite].tolerances) if self.suite else [None]

    def check(self) -> None:
        super().check()
        for name in ("scenarios", "ic", "t_end", "orbits", "steps"):
            self.refuse_unless(name, self.suite is None, "with --suite (the suite sets it)")
        if self.target == "position" and not self.position_error:
            raise ConfigError("--target position needs the position error (leave out "
                              "--no-position-error)")
        if self.pretrained and self.checkpoint is not None:
            raise ConfigError("--pretrained and --checkpoint exclude each other; give one")
        if (self.checkpoint is None and not self.pretrained and self.tolerance is None
                and self.suite is None):
            raise ConfigError("give --checkpoint or --pretrained (the model sets the target) "
                              "and/or --tolerance")
        if self.target == "energy" and self.tolerance and max(self.tolerance) >= self.fail_above:
            raise ConfigError(f"--tolerance {max(self.tolerance):g} must be below --fail-above "
                              f"{self.fail_above:g} (a run past that has diverged and stops)")
        if self.target == "position" and self.steps is not None:
            raise ConfigError("--target position needs --t-end or --orbits (a time to "
                              "compare at)")

    def systems(self) -> list[str]:
        """The scenarios to run: as given, else the default three unless files are given."""
        if self.scenarios is not None:
            return self.scenarios
        return [] if self.ic else ["binary-e0.5", "binary-e0.9", "figure8"]
