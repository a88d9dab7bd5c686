"""External tidal field of a distant point mass.

A point mass ``M`` fixed at ``R`` (relative to the origin of the system's frame,
which the system's centre of mass is expected to sit near) pulls on every body;
subtracting the pull on the origin leaves the tide:

    a_ext(x)   =  G M [ (R - x) / |R - x|^3  -  R / |R|^3 ]
    Phi_ext(x) = -G M [ 1 / |R - x|  -  1 / |R|  -  x . R / |R|^3 ]

with ``a_ext = -grad Phi_ext`` and ``Phi_ext(0) = 0``. A system's energy with a
field attached gains ``sum_i m_i Phi_ext(x_i)``; see :class:`aits.state.SystemState`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["TidalField"]


@dataclass(frozen=True, eq=False)
class TidalField:
    """Tide of a point mass ``mass`` at ``position``.

    Attributes:
        mass: the perturber's mass ``M`` (python float, > 0).
        position: its position ``R``, a tensor of shape ``(D,)`` (same for every
            system of a batch) or ``(B, D)`` (one per system). Must not be the origin.
    """

    mass: float
    position: Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.position, Tensor):
            raise TypeError(
                f"TidalField.position must be a torch.Tensor, got {type(self.position).__name__}"
            )
        if not (float(self.mass) > 0.0) or not torch.isfinite(torch.tensor(float(self.mass))):
            raise ValueError(f"TidalField.mass must be a finite number > 0, got {self.mass!r}")
        if self.position.dim() not in (1, 2) or self.position.shape[-1] not in (2, 3):
            raise ValueError(
                "TidalField.position must have shape (D,) or (B, D) with D in {2, 3}, "
                f"got {tuple(self.position.shape)}"
            )
        if not torch.isfinite(self.position).all():
            raise ValueError("TidalField.position must be finite")
        if (self.position.norm(dim=-1) == 0).any():
            raise ValueError("TidalField.position must not be the origin (|R| = 0)")
        object.__setattr__(self, "mass", float(self.mass))

    def _R(self, pos: Tensor) -> Tensor:
        """R broadcastable against ``pos (..., N, D)``: shape (D,) or (B, 1, D)."""
        R = self.position.to(dtype=pos.dtype, device=pos.device)
        if R.shape[-1] != pos.shape[-1]:
            raise ValueError(
                f"TidalField is {R.shape[-1]}-D but the positions are {pos.shape[-1]}-D"
            )
        return R if R.dim() == 1 else R.unsqueeze(-2)

    def acceleration(self, pos: Tensor, G: float = 1.0) -> Tensor:
        """Tidal acceleration ``a_ext(x)`` at ``pos (..., N, D)``; shape of ``pos``."""
        R = self._R(pos)
        d = R - pos
        r = d.norm(dim=-1, keepdim=True)
        Rn = R.norm(dim=-1, keepdim=True)
        return (G * self.mass) * (d / r**3 - R / Rn**3)

    def potential(self, pos: Tensor, G: float = 1.0) -> Tensor:
        """Tidal potential per unit mass ``Phi_ext(x)`` at ``pos (..., N, D)``; shape ``(..., N)``."""
        R = self._R(pos)
        r = (R - pos).norm(dim=-1)
        Rn = R.norm(dim=-1)
        return -(G * self.mass) * (1.0 / r - 1.0 / Rn - (pos * R).sum(-1) / Rn**3)

    def potential_energy(self, pos: Tensor, mass: Tensor, G: float = 1.0) -> Tensor:
        """``sum_i m_i Phi_ext(x_i)`` per system: ``pos (..., N, D)``, ``mass (..., N)`` -> ``(...)``."""
        return (mass * self.potential(pos, G)).sum(-1)

    def same_as(self, other: TidalField | None) -> bool:
        """True when ``other`` is a field with the same mass and position."""
        return (
            isinstance(other, TidalField)
            and other.mass == self.mass
            and other.position.shape == self.position.shape
            and bool(torch.equal(other.position.cpu(), self.position.cpu()))
        )
