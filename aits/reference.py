"""Pure-torch reference versions of every aits op.

Straightforward broadcasting code with O(N^2) memory: slow, obviously right, and
differentiable by torch's own autograd. The tests compare the native kernels
against these. Shapes: pos (..., N, D), mass (..., N), dt () or (B,).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["aarseth_derivatives", "accelerations", "kinetic_energy", "leapfrog_step",
           "potential_energy"]


def _pairs(pos: Tensor, softening: float) -> tuple[Tensor, Tensor, Tensor]:
    """Separations d_ij = x_j - x_i (..., N, N, D), squared softened distances
    (..., N, N) and the off-diagonal mask (N, N)."""
    d = pos.unsqueeze(-3) - pos.unsqueeze(-2)
    r2 = (d * d).sum(-1) + softening**2
    n = pos.shape[-2]
    off = ~torch.eye(n, dtype=torch.bool, device=pos.device)
    return d, r2, off


def accelerations(pos: Tensor, mass: Tensor, softening: float = 0.0, G: float = 1.0) -> Tensor:
    """a_i = G sum_{j != i} m_j (x_j - x_i) / (|x_j - x_i|^2 + eps^2)^(3/2); shape of pos."""
    d, r2, off = _pairs(pos, softening)
    w = torch.where(off, mass.unsqueeze(-2) * r2.masked_fill(~off, 1.0).pow(-1.5), 0.0)
    return G * (w.unsqueeze(-1) * d).sum(-2)


def aarseth_derivatives(
    pos: Tensor, vel: Tensor, mass: Tensor, softening: float = 0.0, G: float = 1.0,
    sources: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Acceleration, jerk, snap and crackle of mutual gravity, each shaped like ``pos``.

    Pair sums with ``r2 = |x|^2 + eps^2`` (Nitadori & Makino 2008, eqs. 22-25),
    ``x, v, a, j`` the relative position, velocity, acceleration and jerk of a pair::

        alpha = x.v / r2,  beta = (v.v + x.a) / r2 + alpha^2,
        gamma = (3 v.a + x.j) / r2 + alpha (3 beta - 4 alpha^2)
        A = G m x / r2^1.5,  J = G m v / r2^1.5 - 3 alpha A,
        S = G m a / r2^1.5 - 6 alpha J - 3 beta A,
        C = G m j / r2^1.5 - 9 alpha S - 9 beta J - 3 gamma A

    ``A, J`` of every body first, then ``S, C`` (which need them). ``sources(acc,
    jerk) -> (acc, jerk)``, if given, replaces the bodies' acceleration and jerk
    that ``S, C`` take (the returned acc and jerk stay pass 1's).
    """
    x, r2, off = _pairs(pos, softening)
    r2 = r2.masked_fill(~off, 1.0).unsqueeze(-1)  # (..., N, N, 1)
    w = torch.where(off, G * mass.unsqueeze(-2) * r2.squeeze(-1).pow(-1.5), 0.0).unsqueeze(-1)

    def rel(u: Tensor) -> Tensor:
        return u.unsqueeze(-3) - u.unsqueeze(-2)

    def dot(a: Tensor, b: Tensor) -> Tensor:
        return (a * b).sum(-1, keepdim=True)

    v = rel(vel)
    alpha = dot(x, v) / r2
    A = w * x
    J = w * v - 3 * alpha * A
    acc, jerk = A.sum(-2), J.sum(-2)
    a, j = (rel(u) for u in (sources(acc, jerk) if sources is not None else (acc, jerk)))
    beta = (dot(v, v) + dot(x, a)) / r2 + alpha**2
    gamma = (3 * dot(v, a) + dot(x, j)) / r2 + alpha * (3 * beta - 4 * alpha**2)
    S = w * a - 6 * alpha * J - 3 * beta * A
    C = w * j - 9 * alpha * S - 9 * beta * J - 3 * gamma * A
    return acc, jerk, S.sum(-2), C.sum(-2)


def potential_energy(pos: Tensor, mass: Tensor, softening: float = 0.0, G: float = 1.0) -> Tensor:
    """U = -G sum_{i<j} m_i m_j / sqrt(|x_i - x_j|^2 + eps^2); shape pos.shape[:-2]."""
    _, r2, off = _pairs(pos, softening)
    mm = mass.unsqueeze(-1) * mass.unsqueeze(-2)
    inv = torch.where(off, r2.masked_fill(~off, 1.0).rsqrt(), 0.0)
    return -0.5 * G * (mm * inv).sum((-1, -2))


def kinetic_energy(vel: Tensor, mass: Tensor) -> Tensor:
    """T = sum_i m_i |v_i|^2 / 2; shape vel.shape[:-2]."""
    return 0.5 * (mass * (vel * vel).sum(-1)).sum(-1)


def leapfrog_step(
    pos: Tensor,
    vel: Tensor,
    mass: Tensor,
    dt: Tensor,
    softening: float = 0.0,
    G: float = 1.0,
    acc: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One kick-drift-kick step; returns (pos1, vel1, acc1), each shaped like pos."""
    h = dt.reshape(dt.shape + (1, 1)) if dt.dim() == 1 else dt
    a0 = accelerations(pos, mass, softening, G) if acc is None else acc
    v_half = vel + a0 * (h / 2)
    pos1 = pos + v_half * h
    acc1 = accelerations(pos1, mass, softening, G)
    vel1 = v_half + acc1 * (h / 2)
    return pos1, vel1, acc1
