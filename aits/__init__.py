"""aits: learned time steps for gravitational N-body leapfrog integration.

The gravity hot path (all-pairs accelerations, potential energy and the
kick-drift-kick step, forward and backward) is a C++/CUDA extension registered as
``torch.ops.aits``; :mod:`aits.ops` holds the typed wrappers and
:mod:`aits.reference` pure-torch versions of the same functions.

Everything a notebook needs is one import away (``aits.simulate``,
``aits.SystemState``, ``aits.load_model``, ...; :data:`__all__` lists them).
``import aits`` loads torch and registers the ``torch.ops.aits`` operators, as a
torch extension package must (a saved or exported graph that calls them needs
only ``import aits``); every other name, and with it matplotlib, REBOUND and
h5py, is loaded on first use.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from aits import ops

__version__ = "0.1.0"

#: public name -> the submodule that defines it (loaded on first access)
_EXPORTS: dict[str, str] = {
    name: module
    for module, names in {
        "aits.ops": ("accelerations", "leapfrog_step", "pair_statistics", "potential_energy"),
        "aits.state": ("SystemState", "rollout", "split", "stack", "step"),
        "aits.tide": ("TidalField",),
        "aits.ics": (
            "FIGURE_EIGHT_PERIOD", "InitialConditionsError", "figure_eight",
            "hierarchical_triple", "kepler_batch", "kepler_orbit", "kepler_period", "load_npy", "load_state", "load_text", "plummer",
            "random_system", "save_state",
        ),
        "aits.scenarios": ("list_scenarios", "make_scenario", "register_scenario"),
        "aits.features": (
            "FeatureScales", "FeatureSpec", "analytic_features", "feature_names",
            "history_features", "min_freefall_time", "pairwise_stats",
        ),
        "aits.gate": (
            "EnergyGate", "band_loss", "energy_scale", "passes", "relative_energy_error",
            "step_energy_error",
        ),
        "aits.history": ("HistoryBuffer",),
        "aits.model": ("FourierFeatures", "TimeStepNet"),
        "aits.guards": ("GuardRails",),
        "aits.policies": (
            "AarsethPolicy", "CollisionalPolicy", "FixedPolicy", "FreeFallPolicy",
            "ModelPolicy", "Policy", "make_policy",
        ),
        "aits.pretrained_model": ("pretrained", "pretrained_info"),
        "aits.simulation": ("EnergyRecord", "Observer", "SimulationResult", "SystemRun",
                            "Trajectory", "simulate"),
        "aits.integrators": ("Integrator", "KDK", "SymmetricKDK", "TimeTransformedLeapfrog",
                             "make_integrator"),
        "aits.config": ("ConfigError", "TrainConfig"),
        "aits.training": ("Trainer",),
        "aits.checkpoint": ("CheckpointError", "load_model"),
        "aits.units": ("UnitSystem", "axis_label", "get_units", "with_units"),
        "aits._optional": ("MissingDependencyError",),
        "aits.interop": ("from_rebound", "load_rebound_archive", "to_rebound"),
        "aits.trajectory_io": ("read_hdf5", "trajectory_arrays", "write_hdf5"),
    }.items()
    for name in names
}

#: public submodules (``aits.reference.accelerations``, ``aits.units.UNIT_SYSTEMS``)
_SUBMODULES = ("interop", "ops", "plots", "reference", "trajectory_io", "units")

__all__ = sorted(_EXPORTS) + list(_SUBMODULES)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"aits.{name}")
    else:
        raise AttributeError(f"module 'aits' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _SimulateModule(types.ModuleType):
    """The ``aits.simulate`` command-line module, callable as the
    :func:`aits.simulation.simulate` function.

    ``aits.simulate`` names both the function (the public API) and the module
    behind ``python -m aits.simulate``; importing that module makes Python bind
    it to ``aits.simulate``, so the module forwards calls to the function and
    ``aits.simulate(state, policy, t_end=...)`` keeps working after it.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from aits.simulation import simulate

        return simulate(*args, **kwargs)


class _Package(types.ModuleType):
    """The ``aits`` package: binding the ``aits.simulate`` submodule to the package
    makes that module callable (see :class:`_SimulateModule`)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "simulate" and isinstance(value, types.ModuleType):
            value.__class__ = _SimulateModule
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

# What type checkers see (`x as x` marks a re-export); a test keeps it equal to _EXPORTS.
if TYPE_CHECKING:
    from aits import (
        interop as interop,
        ops as ops,
        plots as plots,
        reference as reference,
        trajectory_io as trajectory_io,
        units as units,
    )
    from aits._optional import (
        MissingDependencyError as MissingDependencyError,
    )
    from aits.checkpoint import (
        CheckpointError as CheckpointError,
        load_model as load_model,
    )
    from aits.config import (
        ConfigError as ConfigError,
        TrainConfig as TrainConfig,
    )
    from aits.features import (
        FeatureScales as FeatureScales,
        FeatureSpec as FeatureSpec,
        analytic_features as analytic_features,
        feature_names as feature_names,
        history_features as history_features,
        min_freefall_time as min_freefall_time,
        pairwise_stats as pairwise_stats,
    )
    from aits.gate import (
        EnergyGate as EnergyGate,
        band_loss as band_loss,
        energy_scale as energy_scale,
        passes as passes,
        relative_energy_error as relative_energy_error,
        step_energy_error as step_energy_error,
    )
    from aits.guards import (
        GuardRails as GuardRails,
    )
    from aits.history import (
        HistoryBuffer as HistoryBuffer,
    )
    from aits.ics import (
        FIGURE_EIGHT_PERIOD as FIGURE_EIGHT_PERIOD,
        InitialConditionsError as InitialConditionsError,
        figure_eight as figure_eight,
        hierarchical_triple as hierarchical_triple,
        kepler_batch as kepler_batch,
        kepler_orbit as kepler_orbit,
        kepler_period as kepler_period,
        load_npy as load_npy,
        load_state as load_state,
        load_text as load_text,
        plummer as plummer,
        random_system as random_system,
        save_state as save_state,
    )
    from aits.interop import (
        from_rebound as from_rebound,
        load_rebound_archive as load_rebound_archive,
        to_rebound as to_rebound,
    )
    from aits.model import (
        FourierFeatures as FourierFeatures,
        TimeStepNet as TimeStepNet,
    )
    from aits.ops import (
        accelerations as accelerations,
        leapfrog_step as leapfrog_step,
        pair_statistics as pair_statistics,
        potential_energy as potential_energy,
    )
    from aits.policies import (
        AarsethPolicy as AarsethPolicy,
        CollisionalPolicy as CollisionalPolicy,
        FixedPolicy as FixedPolicy,
        FreeFallPolicy as FreeFallPolicy,
        ModelPolicy as ModelPolicy,
        Policy as Policy,
        make_policy as make_policy,
    )
    from aits.pretrained_model import (
        pretrained as pretrained,
        pretrained_info as pretrained_info,
    )
    from aits.scenarios import (
        list_scenarios as list_scenarios,
        make_scenario as make_scenario,
        register_scenario as register_scenario,
    )
    from aits.integrators import (
        KDK as KDK,
        Integrator as Integrator,
        SymmetricKDK as SymmetricKDK,
        TimeTransformedLeapfrog as TimeTransformedLeapfrog,
        make_integrator as make_integrator,
    )
    from aits.simulation import (
        EnergyRecord as EnergyRecord,
        Observer as Observer,
        SimulationResult as SimulationResult,
        SystemRun as SystemRun,
        Trajectory as Trajectory,
        simulate as simulate,
    )
    from aits.state import (
        SystemState as SystemState,
        rollout as rollout,
        split as split,
        stack as stack,
        step as step,
    )
    from aits.tide import (
        TidalField as TidalField,
    )
    from aits.training import (
        Trainer as Trainer,
    )
    from aits.trajectory_io import (
        read_hdf5 as read_hdf5,
        trajectory_arrays as trajectory_arrays,
        write_hdf5 as write_hdf5,
    )
    from aits.units import (
        UnitSystem as UnitSystem,
        axis_label as axis_label,
        get_units as get_units,
        with_units as with_units,
    )
