"""Training populations: the systems whole-run training draws (``population =``).

A population is a list of :class:`Group` s, each a rule that draws a batch of
systems with the same number of bodies (one batched state ``(B, N, 3)``). The
whole-run trainer (:mod:`aits.whole_run`) steps every group in turn and draws a
group afresh, from its own seeded generator, every ``restart_windows`` windows,
so over a run it sees many systems, never the evaluation suite's own.

``generalist`` (issue 11, item 3):

* Kepler binaries: ``e`` uniform in ``[0, 0.995]``, mass ratio ``q`` log-uniform
  in ``[1e-3, 1]``, ``a`` uniform in ``[0.5, 2]``, starting at apocentre;
* hierarchical triples: inner ``a`` in ``[0.5, 2]``, ``e`` in ``[0, 0.9]``; outer
  ``a`` 6-12 inner ones, ``e`` in ``[0, 0.5]``, inclination in ``[0, pi]``;
  masses in ``[0.1, 1]``;
* small clusters: Plummer spheres of 16 and 64 bodies (softening 0.01 in Hénon
  units) and a cold start of 32 bodies (uniform in a unit sphere, at rest,
  softening 0.05);

every system randomly rotated, its masses scaled by a factor log-uniform in
``[0.1, 10]`` and its lengths (and softening) by one log-uniform in ``[0.1, 10]``
per group draw: the model's features and time scales are scale-free, so the
rescalings check that nothing in training depends on units.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from aits.ics import hierarchical_triple, plummer
from aits.state import SystemState

__all__ = ["POPULATIONS", "Group", "generalist", "random_rotations"]

Draw = Callable[[torch.Generator, torch.dtype, torch.device], SystemState]


@dataclass(frozen=True)
class Group:
    """One kind of system of a population: ``draw(generator, dtype, device)`` gives a
    fresh batch ``(B, N, 3)`` (every draw the same ``B`` and ``N``)."""

    name: str
    draw: Draw


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)


def _log_uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> Tensor:
    return torch.exp(_uniform(gen, n, math.log(lo), math.log(hi)))


def random_rotations(gen: torch.Generator, n: int) -> Tensor:
    """``n`` uniformly random proper rotation matrices ``(n, 3, 3)`` (QR of a
    Gaussian matrix with the sign fixed)."""
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    flip = torch.det(q) < 0
    q[flip, :, 0] = -q[flip, :, 0]
    return q


def _transform(gen: torch.Generator, pos: Tensor, vel: Tensor, mass: Tensor, softening: float,
               dtype: torch.dtype, device: torch.device) -> SystemState:
    """Rotate each system, scale its masses (per system) and lengths (per draw), move
    it to its centre-of-mass frame; ``G = 1`` throughout."""
    B = pos.shape[0]
    rot = random_rotations(gen, B)
    mass_scale = _log_uniform(gen, B, 0.1, 10.0)
    length = float(_log_uniform(gen, 1, 0.1, 10.0))
    speed = torch.sqrt(mass_scale / length)[:, None, None]
    state = SystemState(pos=(pos @ rot.transpose(-1, -2) * length).to(dtype=dtype, device=device),
                        vel=(vel @ rot.transpose(-1, -2) * speed).to(dtype=dtype, device=device),
                        mass=(mass * mass_scale[:, None]).to(dtype=dtype, device=device),
                        softening=softening * length)
    return state.centered()


def _binaries(batch: int) -> Draw:
    def draw(gen, dtype, device):
        e = _uniform(gen, batch, 0.0, 0.995)
        q = _log_uniform(gen, batch, 1e-3, 1.0)
        a = _uniform(gen, batch, 0.5, 2.0)
        m1, m2 = 1.0 / (1.0 + q), q / (1.0 + q)
        r = a * (1 + e)
        v = torch.sqrt((1 - e) / r)  # G M = 1 at apocentre
        pos = torch.zeros(batch, 2, 3, dtype=torch.float64)
        vel = torch.zeros(batch, 2, 3, dtype=torch.float64)
        pos[:, 0, 0], pos[:, 1, 0] = -m2 * r, m1 * r
        vel[:, 0, 1], vel[:, 1, 1] = -m2 * v, m1 * v
        return _transform(gen, pos, vel, torch.stack([m1, m2], -1), 0.0, dtype, device)
    return draw


def _triples(batch: int) -> Draw:
    def draw(gen, dtype, device):
        states = []
        for _ in range(batch):
            a_in = float(_uniform(gen, 1, 0.5, 2.0))
            s = hierarchical_triple(
                a_in=a_in, e_in=float(_uniform(gen, 1, 0.0, 0.9)),
                a_out=a_in * float(_uniform(gen, 1, 6.0, 12.0)),
                e_out=float(_uniform(gen, 1, 0.0, 0.5)),
                masses=_uniform(gen, 3, 0.1, 1.0).tolist(),
                inclination=float(_uniform(gen, 1, 0.0, math.pi)))
            states.append(s)
        pos = torch.stack([s.pos for s in states])
        vel = torch.stack([s.vel for s in states])
        mass = torch.stack([s.mass for s in states])
        return _transform(gen, pos, vel, mass, 0.0, dtype, device)
    return draw


def _plummers(n: int, batch: int, softening: float) -> Draw:
    def draw(gen, dtype, device):
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        s = plummer(n, batch=batch, seed=seed)
        return _transform(gen, s.pos, s.vel, s.mass, softening, dtype, device)
    return draw


def _cold(n: int, batch: int, softening: float) -> Draw:
    def draw(gen, dtype, device):
        u = torch.randn(batch, n, 3, generator=gen, dtype=torch.float64)
        radius = torch.rand(batch, n, 1, generator=gen, dtype=torch.float64) ** (1 / 3)
        pos = u / u.norm(dim=-1, keepdim=True) * radius
        mass = torch.full((batch, n), 1.0 / n, dtype=torch.float64)
        return _transform(gen, pos, torch.zeros_like(pos), mass, softening, dtype, device)
    return draw


def generalist() -> list[Group]:
    """The ``generalist`` population (module docstring): 24 binaries, 8 triples,
    4 Plummer spheres of 16, 2 of 64 and 2 cold starts of 32 bodies per draw."""
    return [Group("binaries", _binaries(24)), Group("triples", _triples(8)),
            Group("plummer16", _plummers(16, 4, 0.01)), Group("plummer64", _plummers(64, 2, 0.01)),
            Group("cold32", _cold(32, 2, 0.05))]


#: the named populations (``config`` is the training config's own system, one group)
POPULATIONS = ("config", "generalist")
