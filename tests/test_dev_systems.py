"""The development systems of scripts/dev_ratio.py: what the training-choice checks run on."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import dev_ratio  # noqa: E402

from aits import native_run  # noqa: E402
from aits.guards import GuardRails  # noqa: E402
from aits.integrators import KDK  # noqa: E402
from aits.policies import AarsethPolicy  # noqa: E402


def test_wide_set_is_forty_bound_few_body_systems_drawn_the_same_every_time():
    first, again, other = (dev_ratio.wide_systems(s) for s in (2026, 2026, 7))
    assert len(first) == 40 and list(first) == list(again) and list(first) != list(other)
    for name, (state, t_end) in first.items():
        s2, t2 = again[name]
        assert torch.equal(state.pos, s2.pos) and torch.equal(state.vel, s2.vel) and t_end == t2
        assert t_end > 0 and 2 <= state.n_bodies <= 8, name
        energy = state.centered().kinetic_energy() + state.potential_energy()
        assert float(energy) < 0, name  # bound
        assert float(state.momentum().abs().max()) < 1e-12, name  # centre of mass at rest
        # every kdk run of the set goes through the native loop
        assert native_run.applies(state.as_batch(), AarsethPolicy(0.01), KDK(), GuardRails(),
                                  [], False, 0), name


def test_binary_pair_keeps_both_binaries_and_their_mutual_orbit():
    pair = dev_ratio._binary_pair(0.3, 0.5, [0.6, 0.4, 0.5, 0.5], 10.0, 1.0)
    assert pair.n_bodies == 4 and pair.dim == 3
    centre = [(pair.mass[i:i + 2, None] * pair.pos[i:i + 2]).sum(0) / pair.mass[i:i + 2].sum()
              for i in (0, 2)]
    assert abs(float((centre[1] - centre[0]).norm()) - 10.0) < 1e-12
    # the inner separations are a (1 + e) at apocentre
    assert abs(float((pair.pos[1] - pair.pos[0]).norm()) - 1.3) < 1e-12
    assert abs(float((pair.pos[3] - pair.pos[2]).norm()) - 1.5) < 1e-12
