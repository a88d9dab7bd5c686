"""aits: learned time steps for gravitational N-body leapfrog integration.

The gravity hot path (all-pairs accelerations, potential energy and the
kick-drift-kick step, forward and backward) is a C++/CUDA extension registered as
``torch.ops.aits``; :mod:`aits.ops` holds the typed wrappers and
:mod:`aits.reference` pure-torch versions of the same functions.
"""

from aits import reference
from aits.ops import accelerations, leapfrog_step, potential_energy
from aits.features import (
    FeatureScales,
    FeatureSpec,
    analytic_features,
    feature_names,
    history_features,
    min_freefall_time,
    pairwise_stats,
)
from aits.gate import (
    EnergyGate,
    band_loss,
    energy_scale,
    passes,
    relative_energy_error,
    step_energy_error,
)
from aits.history import HistoryBuffer
from aits.ics import (
    FIGURE_EIGHT_PERIOD,
    InitialConditionsError,
    figure_eight,
    kepler_batch,
    kepler_orbit,
    kepler_period,
    load_npy,
    load_state,
    load_text,
    plummer,
    random_system,
)
from aits.model import FourierFeatures, TimeStepNet
from aits.scenarios import list_scenarios, make_scenario, register_scenario
from aits.state import SystemState, rollout, split, stack, step
from aits.tide import TidalField

__version__ = "0.1.0"

__all__ = [
    "accelerations",
    "leapfrog_step",
    "potential_energy",
    "reference",
    # physics and learning layer
    "EnergyGate",
    "FIGURE_EIGHT_PERIOD",
    "FeatureScales",
    "FeatureSpec",
    "FourierFeatures",
    "HistoryBuffer",
    "InitialConditionsError",
    "SystemState",
    "TidalField",
    "TimeStepNet",
    "analytic_features",
    "band_loss",
    "energy_scale",
    "feature_names",
    "figure_eight",
    "history_features",
    "kepler_batch",
    "kepler_orbit",
    "kepler_period",
    "list_scenarios",
    "load_npy",
    "load_state",
    "load_text",
    "make_scenario",
    "min_freefall_time",
    "pairwise_stats",
    "passes",
    "plummer",
    "random_system",
    "register_scenario",
    "relative_energy_error",
    "rollout",
    "split",
    "stack",
    "step",
    "step_energy_error",
]
