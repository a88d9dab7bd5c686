"""Immutable state of one gravitating system or a batch of them, and the leapfrog step.

A :class:`SystemState` holds either one system (``pos (N, D)``, ``mass (N,)``,
``time ()``) or a batch of ``B`` systems with the same ``N`` and ``D``
(``pos (B, N, D)``, ``mass (B, N)``, ``time (B,)``). Every quantity below keeps
the leading batch shape (``()`` or ``(B,)``, called ``batch_shape``).

The state may carry ``acc``, the total acceleration at ``pos`` (gravity plus any
external field). :func:`step` returns a state whose ``acc`` is the end-of-step
acceleration, so a rollout of ``k`` steps costs ``k + 1`` force evaluations.

States are frozen dataclasses; tensors are never modified in place. A state built
from tensors that require grad (e.g. the result of a step with a predicted ``dt``)
keeps that graph alive: call :meth:`SystemState.detach` (shares storage) or
:meth:`SystemState.clone` (independent copy) before storing it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from aits import ops
from aits.tide import TidalField

__all__ = ["SystemState", "center_of_mass_weights", "rollout", "split", "stack", "step"]

_FLOATS = (torch.float32, torch.float64)


def _finite_number(name: str, value: float, minimum: float, strict: bool) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"SystemState.{name} must be a number, got {value!r}") from None
    bad = (v <= minimum) if strict else (v < minimum)
    if bad or v != v or v in (float("inf"), float("-inf")):
        rel = ">" if strict else ">="
        raise ValueError(f"SystemState.{name} must be finite and {rel} {minimum}, got {value!r}")
    return v


def _declare(kind: str, *, default=None, per_system: bool = True, cast: bool = True,
             depends_on: tuple[str, ...] = ()):
    """A :class:`SystemState` field with the metadata that every traversal reads.

    ``kind``: ``"tensor"`` (mapped by every traversal), ``"field"`` (the optional
    :class:`~aits.tide.TidalField`, whose position is mapped) or ``"scalar"``
    (shared by the batch, copied as is). ``per_system``: the tensor has the
    leading batch axis (index, stack, split, gather follow it). ``cast``: follows
    ``to(dtype=...)`` (``time`` stays float64). ``depends_on``: a cache, dropped
    by :meth:`SystemState.replace` when any of these fields changes.
    """
    return dataclasses.field(default=default, metadata={
        "kind": kind, "per_system": per_system, "cast": cast, "depends_on": depends_on})


_REQUIRED = dataclasses.MISSING


@dataclass(frozen=True, eq=False)
class SystemState:
    """One system or a batch of systems of point masses.

    Attributes:
        pos: positions, ``(N, D)`` or ``(B, N, D)``, float32/float64, ``D`` in {2, 3}.
        vel: velocities, shape and dtype of ``pos``.
        mass: masses, ``(N,)`` or ``(B, N)``, dtype of ``pos``.
        time: time of each system, ``batch_shape``, always float64 (it accumulates
            many small steps). ``None`` means zero.
        softening: Plummer softening ``eps >= 0`` (python float, shared by the batch).
        G: gravitational constant (python float > 0).
        acc: optional cached total acceleration at ``pos`` (shape of ``pos``): gravity
            plus ``field``. Only :func:`step` and :meth:`with_acceleration` should set it.
        field: optional external :class:`~aits.tide.TidalField`.
        pair_stats: optional cached :func:`aits.ops.pair_statistics` of ``pos``,
            ``batch_shape + (4,)`` (min, mean, max pairwise distance, min free-fall
            time). :func:`step` fills it on the CPU, where the step's force
            kernel yields it almost for free; the features then skip their own
            pass over the pairs.

    The fields are declared once, here, with their metadata (:func:`_declare`):
    copies, casts, indexing, stacking, splitting, gathering, serialisation and
    cache invalidation are all one walk over ``dataclasses.fields`` (:func:`map_tensors`),
    so a new field is one line.
    """

    pos: Tensor = _declare("tensor", default=_REQUIRED)
    vel: Tensor = _declare("tensor", default=_REQUIRED)
    mass: Tensor = _declare("tensor", default=_REQUIRED)
    time: Tensor | None = _declare("tensor", cast=False)
    softening: float = _declare("scalar", default=0.0)
    G: float = _declare("scalar", default=1.0)
    acc: Tensor | None = _declare("tensor", depends_on=("pos", "mass", "softening", "G", "field"))
    field: TidalField | None = _declare("field")
    pair_stats: Tensor | None = _declare("tensor", depends_on=("pos", "mass", "softening", "G"))

    def __post_init__(self) -> None:
        for name in ("pos", "vel", "mass"):
            if not isinstance(getattr(self, name), Tensor):
                raise TypeError(
                    f"SystemState.{name} must be a torch.Tensor, "
                    f"got {type(getattr(self, name)).__name__}"
                )
        pos, vel, mass = self.pos, self.vel, self.mass
        if pos.dim() not in (2, 3) or pos.shape[-1] not in (2, 3):
            raise ValueError(
                f"SystemState.pos must have shape (N, D) or (B, N, D) with D in {{2, 3}}, "
                f"got {tuple(pos.shape)}"
            )
        if pos.dtype not in _FLOATS:
            raise TypeError(f"SystemState.pos must be float32 or float64, got {pos.dtype}")
        if vel.shape != pos.shape:
            raise ValueError(
                f"SystemState.vel has shape {tuple(vel.shape)}, expected pos's {tuple(pos.shape)}"
            )
        if mass.shape != pos.shape[:-1]:
            raise ValueError(
                f"SystemState.mass has shape {tuple(mass.shape)}, expected {tuple(pos.shape[:-1])}"
            )
        for name, t in (("vel", vel), ("mass", mass)):
            if t.dtype != pos.dtype or t.device != pos.device:
                raise TypeError(
                    f"SystemState.{name} is {t.dtype} on {t.device}, "
                    f"expected pos's {pos.dtype} on {pos.device}"
                )
        batch_shape = pos.shape[:-2]
        time = self.time
        if time is None:
            time = torch.zeros(batch_shape, dtype=torch.float64, device=pos.device)
        elif not isinstance(time, Tensor):
            time = torch.full(batch_shape, float(time), dtype=torch.float64, device=pos.device)
        else:
            if time.dim() == 0 and batch_shape:
                time = time.expand(batch_shape)
            if time.shape != batch_shape:
                raise ValueError(
                    f"SystemState.time has shape {tuple(time.shape)}, expected {tuple(batch_shape)}"
                )
            time = time.to(dtype=torch.float64, device=pos.device)
        object.__setattr__(self, "time", time)
        object.__setattr__(
            self, "softening", _finite_number("softening", self.softening, 0.0, strict=False)
        )
        object.__setattr__(self, "G", _finite_number("G", self.G, 0.0, strict=True))
        if self.acc is not None and (
            not isinstance(self.acc, Tensor) or self.acc.shape != pos.shape
        ):
            raise ValueError("SystemState.acc must be None or a tensor shaped like pos")
        if self.pair_stats is not None and (
            not isinstance(self.pair_stats, Tensor) or self.pair_stats.shape != batch_shape + (4,)
        ):
            raise ValueError(
                f"SystemState.pair_stats must be None or a tensor of shape {tuple(batch_shape) + (4,)}"
            )
        if self.field is not None:
            if not isinstance(self.field, TidalField):
                raise TypeError(
                    f"SystemState.field must be a TidalField or None, got {type(self.field).__name__}"
                )
            fp = self.field.position
            if fp.shape[-1] != pos.shape[-1]:
                raise ValueError(
                    f"SystemState.field is {fp.shape[-1]}-D but the system is {pos.shape[-1]}-D"
                )
            if fp.dim() == 2 and (pos.dim() != 3 or fp.shape[0] != pos.shape[0]):
                raise ValueError(
                    f"SystemState.field.position has shape {tuple(fp.shape)}: a per-system "
                    f"field needs a batch of {fp.shape[0]} systems, got pos {tuple(pos.shape)}"
                )

    # ------------------------------------------------------------------ shape info

    @property
    def batch_shape(self) -> torch.Size:
        """``()`` for one system, ``(B,)`` for a batch."""
        return self.pos.shape[:-2]

    @property
    def is_batched(self) -> bool:
        return self.pos.dim() == 3

    @property
    def batch_size(self) -> int:
        """``B`` for a batch, 1 for a single system."""
        return self.pos.shape[0] if self.is_batched else 1

    @property
    def n_bodies(self) -> int:
        return self.pos.shape[-2]

    @property
    def dim(self) -> int:
        return self.pos.shape[-1]

    @property
    def dtype(self) -> torch.dtype:
        return self.pos.dtype

    @property
    def device(self) -> torch.device:
        return self.pos.device

    @property
    def requires_grad(self) -> bool:
        """True when any tensor of the state is part of an autograd graph."""
        return any(isinstance(t, Tensor) and t.requires_grad
                   for t in (getattr(self, f.name) for f in dataclasses.fields(self)))

    # ------------------------------------------------------------------ copies

    def map_tensors(self, fn: Callable[[Tensor], Tensor], *, per_system: bool = False,
                    cast_only: bool = False) -> SystemState:
        """A new state with ``fn`` applied to every tensor field (and the field's
        position), keeping ``None`` caches ``None``.

        Args:
            fn: tensor -> tensor.
            per_system: apply only to tensors with the leading batch axis (index,
                stack, gather); a shared field position ``(D,)`` is kept as is.
            cast_only: apply only to the tensors that follow a dtype cast.
        """
        new: dict = {}
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if value is None or (cast_only and not meta["cast"]):
                continue
            if meta["kind"] == "tensor" and (meta["per_system"] or not per_system):
                new[f.name] = fn(value)
            elif meta["kind"] == "field" and (value.position.dim() == 2 or not per_system):
                new[f.name] = TidalField(value.mass, fn(value.position))
        return dataclasses.replace(self, **new)

    def detach(self) -> SystemState:
        """The same state cut from any autograd graph (tensors share storage)."""
        return self.map_tensors(Tensor.detach)

    def clone(self) -> SystemState:
        """An independent, detached copy (no shared storage, no graph)."""
        return self.map_tensors(lambda t: t.detach().clone())

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> SystemState:
        """Move to ``device`` and/or cast ``pos``, ``vel``, ``mass``, ``acc`` to ``dtype``
        (``time`` stays float64)."""
        state = self.map_tensors(lambda t: t.to(device=device))
        return state if dtype is None else state.map_tensors(lambda t: t.to(dtype), cast_only=True)

    def index(self, index: Tensor | int | slice) -> SystemState:
        """Systems ``index`` of a batch: an int gives one unbatched system, a ``(b,)``
        index tensor, a boolean mask or a slice a batch. Per-system field positions follow."""
        if not self.is_batched:
            raise ValueError("SystemState.index: the state is not a batch")
        return self.map_tensors(lambda t: t[index], per_system=True)

    @staticmethod
    def where(mask: Tensor, a: SystemState, b: SystemState) -> SystemState:
        """Per system ``a`` where ``mask (B,)`` is true, else ``b``; both batches of the
        same systems (masses, scalars, field). A cache is kept only when both have it."""
        def pick(ta: Tensor | None, tb: Tensor | None) -> Tensor | None:
            if ta is None or tb is None:
                return None
            return torch.where(mask.reshape(mask.shape + (1,) * (ta.dim() - 1)), ta, tb)

        return dataclasses.replace(a, **{
            f.name: pick(getattr(a, f.name), getattr(b, f.name))
            for f in dataclasses.fields(a) if f.metadata["kind"] == "tensor"})

    def put(self, index: Tensor, part: SystemState) -> SystemState:
        """This batch with systems ``index (b,)`` replaced by the batch ``part``
        (same systems otherwise). A cache is kept only when both have it."""
        new = {}
        for f in dataclasses.fields(self):
            if f.metadata["kind"] != "tensor":
                continue
            mine, theirs = getattr(self, f.name), getattr(part, f.name)
            new[f.name] = (None if mine is None or theirs is None
                           else mine.index_copy(0, index, theirs.to(mine.dtype)))
        return dataclasses.replace(self, **new)

    def to_dict(self) -> dict:
        """Plain tensors, numbers and dicts (checkpoint-safe, ``weights_only`` loadable)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata["kind"] == "field" and value is not None:
                value = {"mass": value.mass, "position": value.position}
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, d: dict, device: torch.device | str | None = None) -> SystemState:
        """Inverse of :meth:`to_dict`, moved to ``device``; missing optional entries are ``None``."""
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            value = d[f.name]
            if f.metadata["kind"] == "field" and value is not None:
                value = TidalField(value["mass"], value["position"])
            values[f.name] = value
        return cls(**values).to(device=device)

    def _stepped(self, pos: Tensor, vel: Tensor, acc: Tensor, time: Tensor,
                 pair_stats: Tensor | None) -> SystemState:
        """The state after a step: ``pos``, ``vel``, ``acc``, ``time`` and ``pair_stats``
        replaced, every other field kept, without the checks of construction (the
        step's outputs have this state's shapes, dtype and device): the per-step
        constructor of :func:`step`, where those checks cost as much as a few-body
        force evaluation."""
        new = object.__new__(SystemState)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(pos=pos, vel=vel, acc=acc, time=time, pair_stats=pair_stats)
        return new

    def replace(self, **changes) -> SystemState:
        """A copy with fields changed; a cache (``acc``, ``pair_stats``) is dropped
        when a field it depends on changes, unless it is given too."""
        for f in dataclasses.fields(self):
            if f.name not in changes and set(changes) & set(f.metadata["depends_on"]):
                changes[f.name] = None
        return dataclasses.replace(self, **changes)

    def with_field(self, field: TidalField | None) -> SystemState:
        """The same system with an external field attached (``None`` removes it)."""
        return self.replace(field=field)

    def with_acceleration(self) -> SystemState:
        """The same state with ``acc`` filled in (one force evaluation if missing)."""
        return self if self.acc is not None else dataclasses.replace(self, acc=self.acceleration())

    def as_batch(self) -> SystemState:
        """A batch of one when single; the state itself when already batched."""
        return self if self.is_batched else stack([self])

    # ------------------------------------------------------------------ physics

    def gravity_acceleration(self) -> Tensor:
        """Mutual gravity only (one force evaluation); shape of ``pos``."""
        return ops.accelerations(self.pos, self.mass, self.softening, self.G)

    def acceleration(self) -> Tensor:
        """Total acceleration at ``pos`` (gravity + field); cached value when present."""
        if self.acc is not None:
            return self.acc
        acc = self.gravity_acceleration()
        if self.field is not None:
            acc = acc + self.field.acceleration(self.pos, self.G)
        return acc

    def kinetic_energy(self) -> Tensor:
        """``sum_i m_i |v_i|^2 / 2``; shape ``batch_shape``."""
        return 0.5 * (self.mass * (self.vel * self.vel).sum(-1)).sum(-1)

    def gravity_potential_energy(self) -> Tensor:
        """Mutual (softened) gravitational potential energy; shape ``batch_shape``.

        A system with non-finite positions (a step that blew up) gets NaN instead
        of the op's ``ValueError``, so the energy gate can reject it within a batch.
        """
        finite = torch.isfinite(self.pos).all(-1).all(-1)
        pos = torch.where(finite[..., None, None], self.pos, 0.0)
        u = ops.potential_energy(pos, self.mass, self.softening, self.G)
        return torch.where(finite, u, math.nan)

    def external_potential_energy(self) -> Tensor:
        """``sum_i m_i Phi_ext(x_i)`` (zero without a field); shape ``batch_shape``."""
        if self.field is None:
            return self.pos.new_zeros(self.batch_shape)
        return self.field.potential_energy(self.pos, self.mass, self.G)

    def potential_energy(self) -> Tensor:
        """Gravity plus external potential energy; shape ``batch_shape``."""
        u = self.gravity_potential_energy()
        return u if self.field is None else u + self.external_potential_energy()

    def total_energy(self) -> Tensor:
        """Kinetic plus potential (incl. external) energy; shape ``batch_shape``."""
        return self.kinetic_energy() + self.potential_energy()

    def total_mass(self) -> Tensor:
        """Shape ``batch_shape``."""
        return self.mass.sum(-1)

    def momentum(self) -> Tensor:
        """``P = sum_i m_i v_i``; shape ``batch_shape + (D,)``."""
        return (self.mass.unsqueeze(-1) * self.vel).sum(-2)

    def angular_momentum(self) -> Tensor:
        """``L = sum_i m_i x_i x v_i`` about the origin: shape ``batch_shape`` in 2-D
        (the z component), ``batch_shape + (3,)`` in 3-D."""
        x, v, m = self.pos, self.vel, self.mass
        if self.dim == 2:
            return (m * (x[..., 0] * v[..., 1] - x[..., 1] * v[..., 0])).sum(-1)
        return (m.unsqueeze(-1) * torch.linalg.cross(x, v, dim=-1)).sum(-2)

    def center_of_mass(self) -> Tensor:
        """Mass-weighted mean position; shape ``batch_shape + (D,)``. A system of
        zero total mass gives the plain mean instead of NaN."""
        return _weighted_mean(self.pos, self.mass)

    def center_of_mass_velocity(self) -> Tensor:
        """Mass-weighted mean velocity; shape ``batch_shape + (D,)``."""
        return _weighted_mean(self.vel, self.mass)

    def centered(self) -> SystemState:
        """The same system moved to its centre-of-mass frame (position and velocity)."""
        pos = self.pos - self.center_of_mass().unsqueeze(-2)
        vel = self.vel - self.center_of_mass_velocity().unsqueeze(-2)
        return self.replace(pos=pos, vel=vel)


def center_of_mass_weights(mass: Tensor) -> Tensor:
    """``m_i / sum m`` per body, shape of ``mass``; ``1 / N`` where ``sum m == 0``."""
    total = mass.sum(-1, keepdim=True)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(total > 0, mass / safe, torch.full_like(mass, 1.0 / max(mass.shape[-1], 1)))


def _weighted_mean(x: Tensor, mass: Tensor) -> Tensor:
    """``sum m x / sum m`` over bodies, the plain mean where ``sum m == 0``."""
    return (center_of_mass_weights(mass).unsqueeze(-1) * x).sum(-2)


def _as_dt(state: SystemState, dt: Tensor | float) -> Tensor:
    if not isinstance(dt, Tensor):
        dt = torch.tensor(float(dt), dtype=state.dtype, device=state.device)
    else:
        dt = dt.to(dtype=state.dtype, device=state.device)
    if dt.shape != () and dt.shape != state.batch_shape:
        raise ValueError(
            f"step: dt must be a number, a 0-d tensor or shaped like the batch "
            f"{tuple(state.batch_shape)}, got shape {tuple(dt.shape)}"
        )
    return dt


class _FiniteGrad(torch.autograd.Function):
    """Identity whose backward turns non-finite gradient entries into 0."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)


def step(state: SystemState, dt: Tensor | float, *, statistics: bool = True) -> SystemState:
    """One kick-drift-kick leapfrog step of ``state`` by ``dt``.

    Args:
        state: the start state; its cached ``acc`` is reused when present.
        dt: a number, a 0-d tensor, or a ``(B,)`` tensor (one step per system);
            every entry must be > 0. Differentiable: gradients flow into ``dt``
            and every state tensor.
        statistics: on the CPU, take the end positions' pair statistics from the
            step's own force pass and cache them on the end state (``pair_stats``,
            what the features and the free-fall time read); it costs 12-35 % of a
            step (N = 16-1024), so a caller whose policy never reads them passes
            ``False`` (the accelerations are the same bits in float64).

    Returns:
        The end state, with ``time + dt`` and the end-of-step total acceleration
        cached. With a field attached, the native gravity step is composed with the
        field's two half kicks, which is exactly KDK with the total force.

    A start state without a cached acceleration whose bodies coincide (softening 0)
    gives a NaN end state for the energy gate to reject; a cached acceleration
    that is not finite is refused by the op (``ValueError``): never step on from a
    rejected state. The gradient with respect to ``dt`` of a system whose step is
    non-finite is 0 instead of NaN, so one blown-up system in a batch cannot
    poison the gradients of a network that predicted the whole batch's steps.
    """
    dt = _as_dt(state, dt)
    if dt.requires_grad:
        dt = _FiniteGrad.apply(dt)
    h = dt.reshape(dt.shape + (1, 1)) if dt.dim() == 1 else dt
    vel = state.vel
    if state.acc is None and state.field is not None:
        # the op's first kick uses gravity only: give the field's half kick here
        vel = vel + state.field.acceleration(state.pos, state.G) * (h / 2)
    stats = None
    if statistics and state.pos.device.type == "cpu":
        # the end-of-step force pass yields the pair statistics
        pos1, vel1, acc1, stats = ops.leapfrog_step_with_statistics(
            state.pos, vel, state.mass, dt, state.softening, state.G, acc=state.acc
        )
    else:
        pos1, vel1, acc1 = ops.leapfrog_step(
            state.pos, vel, state.mass, dt, state.softening, state.G, acc=state.acc
        )
    if state.field is not None:
        a_ext = state.field.acceleration(pos1, state.G)
        vel1 = vel1 + a_ext * (h / 2)
        acc1 = acc1 + a_ext
    return state._stepped(pos1, vel1, acc1, state.time + dt.to(torch.float64), stats)


def rollout(state: SystemState, dt: Tensor | float, n_steps: int) -> SystemState:
    """``n_steps`` steps with the same ``dt`` (``n_steps + 1`` force evaluations at most)."""
    if not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"rollout: n_steps must be an int >= 0, got {n_steps!r}")
    for _ in range(n_steps):
        state = step(state, dt)
    return state


def _stack_fields(states: Sequence[SystemState]) -> TidalField | None:
    fields = [s.field for s in states]
    if all(f is None for f in fields):
        return None
    if any(f is None for f in fields):
        raise ValueError("stack: either every state has a field or none has")
    first = fields[0]
    if all(first.same_as(f) for f in fields[1:]) and first.position.dim() == 1:
        return first
    if any(f.mass != first.mass for f in fields):
        raise ValueError("stack: fields with different perturber masses cannot be batched")
    rows = [
        f.position.expand(s.batch_size, s.dim) if f.position.dim() == 1 else f.position
        for f, s in zip(fields, states)
    ]
    return TidalField(first.mass, torch.cat(rows))


def stack(states: Sequence[SystemState]) -> SystemState:
    """Join single states and/or batches into one batch ``(sum of B_i, N, D)``.

    All states must share ``N``, ``D``, dtype, device, softening and ``G``; fields
    must be all absent or all present (with one perturber mass). A cache is kept
    only when every state has it.
    """
    states = list(states)
    if not states:
        raise ValueError("stack: need at least one state")
    first = states[0]
    for i, s in enumerate(states):
        if not isinstance(s, SystemState):
            raise TypeError(f"stack: item {i} is a {type(s).__name__}, not a SystemState")
        for attr in ("n_bodies", "dim", "dtype", "device", "softening", "G"):
            if getattr(s, attr) != getattr(first, attr):
                raise ValueError(
                    f"stack: state {i} has {attr}={getattr(s, attr)!r}, "
                    f"state 0 has {getattr(first, attr)!r}"
                )
    batches = [s if s.is_batched else s.map_tensors(lambda t: t.unsqueeze(0), per_system=True)
               for s in states]
    values = {}
    for f in dataclasses.fields(SystemState):
        if f.metadata["kind"] == "tensor":
            parts = [getattr(s, f.name) for s in batches]
            values[f.name] = None if any(p is None for p in parts) else torch.cat(parts)
        elif f.metadata["kind"] == "scalar":
            values[f.name] = getattr(first, f.name)
    return SystemState(field=_stack_fields(states), **values)


def split(state: SystemState) -> list[SystemState]:
    """Split a batch into single (unbatched) states; a single state gives ``[state]``."""
    if not state.is_batched:
        return [state]
    return [state.index(b) for b in range(state.batch_size)]
