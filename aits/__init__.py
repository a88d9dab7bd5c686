"""aits: learned time steps for gravitational N-body leapfrog integration.

The gravity hot path (all-pairs accelerations, potential energy and the
kick-drift-kick step, forward and backward) is a C++/CUDA extension registered as
``torch.ops.aits``; :mod:`aits.ops` holds the typed wrappers and
:mod:`aits.reference` pure-torch versions of the same functions.
"""

from aits import reference
from aits.ops import accelerations, leapfrog_step, potential_energy

__version__ = "0.1.0"

__all__ = [
    "accelerations",
    "leapfrog_step",
    "potential_energy",
    "reference",
]
