"""Time-step policies: a state (and, for history models, its recent past) -> ``dt``.

Every policy is a callable ``policy(state, history=None) -> dt`` with ``dt`` of
shape ``state.batch_shape`` in the state's dtype and device, every entry > 0 for
a finite state. Policies never modify the state they are given (they read it
under ``torch.no_grad``) and reuse the acceleration cached on it.

* :class:`FixedPolicy` — a constant ``dt``.
* :class:`FreeFallPolicy` — ``eta * min_{i<j} sqrt(r_ij^3 / (G (m_i + m_j)))``
  (with softening, ``r_ij^2`` becomes ``r_ij^2 + eps^2``).
* :class:`CollisionalPolicy` — ``eta * min_{i<j} min(r_ij / |v_ij|, sqrt(r_ij / |a_ij|))``
  with ``v_ij``, ``a_ij`` relative velocities and (total) accelerations.
* :class:`AarsethPolicy` — Aarseth's criterion from the acceleration and its
  first three time derivatives (jerk, snap, crackle) of each body,
  ``dt_i = sqrt(eta (|a||s| + |j|^2) / (|j||c| + |s|^2))``, ``dt = min_i dt_i``
  (``eta`` inside the square root, as Aarseth writes it; typical 0.01-0.02).
  The derivatives are those of mutual gravity (an external field is left out).
* :class:`ModelPolicy` — a trained :class:`~aits.model.TimeStepNet`; its
  features, history length and normalisation come with it (from a checkpoint).

The classical criteria cost O(N^2) pairwise work per call on top of the
integrator's force evaluations, with O(N) memory: free-fall through the native
pair statistics, collisional in chunks of rows (no N x N tensor), Aarseth through
the native :func:`aits.ops.aarseth_derivatives` (two passes over the pairs, about
three force evaluations). :func:`make_policy` builds a policy by name.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from aits.checkpoint import load_checkpoint, load_model, resolve_checkpoint
from aits.features import (
    PAIR_CHUNK_ELEMENTS,
    aarseth_time,
    gravity_derivatives,
    min_freefall_time,
)
from aits.history import HistoryBuffer
from aits.model import TimeStepNet
from aits.pretrained_model import PRETRAINED, pretrained_path
from aits.state import SystemState

__all__ = [
    "AarsethPolicy", "CLASSICAL", "CollisionalPolicy", "FixedPolicy", "FreeFallPolicy",
    "ModelPolicy", "POLICIES", "Policy", "make_policy", "resolve_checkpoint",
]

log = logging.getLogger("aits.policies")

POLICIES = ("model", "fixed", "freefall", "collisional", "aarseth")
CLASSICAL = ("freefall", "collisional", "aarseth")


class Policy(Protocol):
    """What the simulation loop needs from a time-step policy.

    A policy may also say, as ``uses_pair_statistics = False``, that it never reads
    the pair statistics (:func:`aits.features.state_pair_stats`): the loop then steps
    without caching them (a step's force pass yields them for 12-35 % more). Without
    the attribute they are cached; either way a policy that reads them gets them.
    """

    #: a short name for tables (``fixed``, ``freefall``, ..., ``model``)
    name: str
    #: number of past states the policy wants in its history window (0 = none)
    history_len: int

    def __call__(self, state: SystemState, history: HistoryBuffer | None = None) -> Tensor:
        """``dt`` of shape ``state.batch_shape`` (state's dtype and device)."""
        ...


def _positive(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return v


class FixedPolicy:
    """A constant step ``dt`` (> 0) for every system."""

    history_len = 0
    uses_pair_statistics = False

    def __init__(self, dt: float) -> None:
        self.dt = _positive("fixed policy dt", dt)
        self.name = "fixed"

    def __call__(self, state: SystemState, history: HistoryBuffer | None = None) -> Tensor:
        return torch.full(state.batch_shape, self.dt, dtype=state.dtype, device=state.device)

    def __repr__(self) -> str:
        return f"FixedPolicy(dt={self.dt:g})"


class _Criterion:
    """A classical criterion with parameter ``eta`` (> 0)."""

    history_len = 0
    name = ""

    def __init__(self, eta: float) -> None:
        self.eta = _positive(f"{self.name} policy eta", eta)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eta={self.eta:g})"


class FreeFallPolicy(_Criterion):
    """``eta`` times the minimum pairwise free-fall time (:func:`~aits.features.min_freefall_time`)."""

    name = "freefall"

    @torch.no_grad()
    def __call__(self, state: SystemState, history: HistoryBuffer | None = None) -> Tensor:
        return self.eta * min_freefall_time(state)


def _row_chunks(B: int, n: int, chunk_elements: int) -> Iterator[tuple[int, int]]:
    """Row ranges ``[s, e)`` such that one ``(B, e - s, N)`` block stays within budget."""
    rows = max(1, min(n, chunk_elements // max(1, B * n)))
    for s in range(0, n, rows):
        yield s, min(n, s + rows)


def _flat(state: SystemState) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``pos, vel, acc (B, N, D)`` and ``mass (B, N)``, detached, batch flattened."""
    n, d = state.n_bodies, state.dim
    acc = state.acceleration()
    return (state.pos.detach().reshape(-1, n, d), state.vel.detach().reshape(-1, n, d),
            acc.detach().reshape(-1, n, d), state.mass.detach().reshape(-1, n))


class CollisionalPolicy(_Criterion):
    """``eta * min_{i<j} min(r_ij / |v_ij|, sqrt(r_ij / |a_ij|))`` (unsoftened ``r_ij``).

    A pair at rest relative to each other contributes ``inf`` to that term; a
    system where every term is ``inf`` (fewer than two bodies, nothing moving)
    gets ``dt = inf``: combine with a guard rail's ``dt_max``.
    """

    name = "collisional"
    uses_pair_statistics = False

    def __init__(self, eta: float, chunk_elements: int = PAIR_CHUNK_ELEMENTS) -> None:
        super().__init__(eta)
        self.chunk_elements = chunk_elements

    @torch.no_grad()
    def __call__(self, state: SystemState, history: HistoryBuffer | None = None) -> Tensor:
        x, v, a, _ = _flat(state)
        B, n = x.shape[:2]
        best = x.new_full((B,), math.inf)
        for s, e in _row_chunks(B, n, self.chunk_elements):
            r = torch.cdist(x[:, s:e], x, compute_mode="donot_use_mm_for_euclid_dist")  # (B, c, N)
            dv = torch.cdist(v[:, s:e], v, compute_mode="donot_use_mm_for_euclid_dist")
            da = torch.cdist(a[:, s:e], a, compute_mode="donot_use_mm_for_euclid_dist")
            t = torch.minimum(r / dv, (r / da).sqrt())  # 0/0 on the diagonal -> NaN
            t.diagonal(offset=s, dim1=-2, dim2=-1).fill_(math.inf)
            t = torch.where(torch.isnan(t), math.inf, t)  # coincident-and-comoving pairs
            best = torch.minimum(best, t.amin((-1, -2)))
        return (self.eta * best).reshape(state.batch_shape)


class AarsethPolicy(_Criterion):
    """Aarseth's criterion ``min_i sqrt(eta (|a||s| + |j|^2) / (|j||c| + |s|^2))``.

    The acceleration ``a`` and its derivatives jerk ``j``, snap ``s`` and crackle
    ``c`` of every body are summed over pairs with the softened distance
    ``r2 = |x_ij|^2 + eps^2`` (Nitadori & Makino 2008, eqs. 22-25)::

        alpha = x.v / r2,  beta = (v.v + x.a) / r2 + alpha^2,
        gamma = (3 v.a + x.j) / r2 + alpha (3 beta - 4 alpha^2)
        A = G m x / r2^1.5,  J = G m v / r2^1.5 - 3 alpha A,
        S = G m a / r2^1.5 - 6 alpha J - 3 beta A,
        C = G m j / r2^1.5 - 9 alpha S - 9 beta J - 3 gamma A

    with ``x, v, a, j`` the relative position, velocity, acceleration and jerk of
    the pair: two native passes over the pairs (:func:`aits.ops.aarseth_derivatives`),
    ``A, J`` first, then ``S, C`` (which need every body's ``a`` and ``j``).
    """

    name = "aarseth"
    uses_pair_statistics = False

    def derivatives(self, state: SystemState) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Acceleration, jerk, snap and crackle of mutual gravity, each shaped like ``pos``."""
        return gravity_derivatives(state)

    def __call__(self, state: SystemState, history: HistoryBuffer | None = None) -> Tensor:
        return aarseth_time(state, self.eta)


class ModelPolicy:
    """A trained :class:`~aits.model.TimeStepNet` as a policy (evaluation mode, no grad).

    The network's :class:`~aits.features.FeatureSpec` fixes the features, the
    history length and the normalisation. History models need the
    :class:`~aits.history.HistoryBuffer` that the simulation loop keeps
    (``history_len`` states, pushed after every accepted step).
    """

    name = "model"

    def __init__(self, net: TimeStepNet, dt_scale: float = 1.0) -> None:
        if not isinstance(net, TimeStepNet):
            raise TypeError(f"ModelPolicy needs a TimeStepNet, got {type(net).__name__}")
        self.net = net.eval()
        #: the accuracy knob: the network's dt times this (as eta is for the criteria)
        self.dt_scale = _positive("model policy dt_scale", dt_scale)
        #: the training configuration (from a checkpoint; physics and gate defaults)
        self.train_config: dict | None = None
        self.history_len = net.spec.window_len
        self._native: tuple | None = None  # the window network's native layers (lazily)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
        dt_scale: float = 1.0,
    ) -> ModelPolicy:
        """Load the model of a training checkpoint (:func:`aits.checkpoint.load_model`).

        ``path`` is a checkpoint file or a training run directory (its newest
        ``checkpoints/epoch_*.pt`` is used). ``dtype`` casts the network (default:
        the dtype it was trained in); ``dt_scale`` multiplies its ``dt``.

        Raises:
            FileNotFoundError: no checkpoint at ``path`` (the message names it).
            aits.checkpoint.CheckpointError: the file is not an aits checkpoint.
        """
        path = resolve_checkpoint(path)
        net = load_model(path, device=device)
        policy = cls(net if dtype is None else net.to(dtype), dt_scale=dt_scale)
        config = load_checkpoint(path, training=False).get("config")
        policy.train_config = config if isinstance(config, dict) else None
        return policy

    @property
    def uses_pair_statistics(self) -> bool:
        """Whether the network's inputs read the pair statistics (not the encounter kinds
        under the ``"aarseth"`` output, whose one native op gives features and time scale)."""
        return self.net.uses_pair_statistics

    @torch.no_grad()
    def __call__(self, state: SystemState, history: HistoryBuffer | None = None) -> Tensor:
        if self.history_len and history is None:
            raise ValueError(
                f"this model uses {self.history_len} past states: pass the HistoryBuffer"
            )
        dt = self._native_window_dt(state, history) if self.history_len else None
        if dt is None:
            dt = self.net.predict_dt(state, history if self.history_len else None)
        return dt if self.dt_scale == 1.0 else dt * self.dt_scale

    def _native_window_dt(self, state: SystemState, history) -> Tensor | None:
        """An encounter-history network's dt in one native call (features and network,
        :func:`aits.encounter_history.history_model_dt`; in eval mode, on the CPU, the
        window full), or ``None``. The native layers share the parameters' storage
        (taken at the first call: updates in place are seen, replaced parameters are
        not: build a new policy)."""
        from aits.encounter_history import history_model_dt
        from aits.native_run import native_net

        if self.net.training or not self.net._window_inputs():
            return None
        if self._native is None:
            layers = native_net(self.net)
            self._native = (() if layers is None
                            else (layers, self.net.config()["activation"], self.net.dt_scale))
        if not self._native:
            return None
        return history_model_dt(*self._native, state, self.net.spec.window(history))

    def __repr__(self) -> str:
        return (f"ModelPolicy(features={self.net.spec.to_dict()}, output={self.net.output!r}, "
                f"dt_scale={self.dt_scale:g})")


_CRITERIA: dict[str, Callable[[float], Policy]] = {
    "freefall": FreeFallPolicy, "collisional": CollisionalPolicy, "aarseth": AarsethPolicy,
}


def make_policy(
    name: str,
    *,
    dt: float | None = None,
    eta: float | None = None,
    checkpoint: str | Path | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    dt_scale: float = 1.0,
) -> Policy:
    """Build a policy by name: ``fixed`` needs ``dt``, ``freefall``/``collisional``/
    ``aarseth`` need ``eta``, ``model`` takes ``checkpoint`` (default: the pretrained
    model shipped with aits, :func:`aits.pretrained`) and ``dt_scale``, the
    factor on its ``dt`` (``eta`` plays that part for the criteria).

    Raises:
        ValueError: unknown name, or the parameter it needs is missing or <= 0.
        FileNotFoundError: the checkpoint does not exist.
    """
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; valid: {', '.join(POLICIES)}")
    if name == "model":
        if checkpoint is None:
            checkpoint = pretrained_path()
            log.info("policy 'model' without a checkpoint: the pretrained %r model (%s); "
                     "give --checkpoint for your own", PRETRAINED, checkpoint)
        return ModelPolicy.from_checkpoint(checkpoint, device=device, dtype=dtype,
                                           dt_scale=dt_scale)
    if dt_scale != 1.0:
        raise ValueError(f"dt_scale applies to the model policy only (tune {name!r} with "
                         f"{'--dt' if name == 'fixed' else '--eta'})")
    if name == "fixed":
        if dt is None:
            raise ValueError("policy 'fixed' needs a step (--dt)")
        return FixedPolicy(dt)
    if eta is None:
        raise ValueError(f"policy {name!r} needs eta (--eta)")
    return _CRITERIA[name](eta)
