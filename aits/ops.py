"""Typed wrappers, fake kernels and autograd for the native ``torch.ops.aits`` ops.

Shapes: one system ``pos (N, D)``, ``mass (N,)`` or a batch ``pos (B, N, D)``,
``mass (B, N)``, with ``D`` in {2, 3}; float32 or float64; ``dt`` a 0-d tensor or
``(B,)``. The force, energy and step ops are differentiable with respect to every
tensor input; the backward passes are native kernels with O(N) extra memory.
Double backward is not supported and raises a ``RuntimeError`` saying so. The
diagnostics (:func:`pair_statistics`, :func:`aarseth_derivatives`) are not
differentiable and refuse inputs that require grad.

Coincident bodies with ``softening == 0`` are not an error: they give non-finite
accelerations (NaN) and potential energy (-inf), which the energy gate rejects.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from aits import _extension

_extension.load()

_ops = torch.ops.aits


# --------------------------------------------------------------------------- public API


def accelerations(pos: Tensor, mass: Tensor, softening: float = 0.0, G: float = 1.0) -> Tensor:
    """Gravitational accelerations, shaped like ``pos``.

    ``a_i = G sum_{j != i} m_j (x_j - x_i) / (|x_j - x_i|^2 + softening^2)^(3/2)``.
    """
    return _ops.accelerations(pos, mass, float(softening), float(G))


def potential_energy(pos: Tensor, mass: Tensor, softening: float = 0.0, G: float = 1.0) -> Tensor:
    """Potential energy per system: shape ``()`` for ``pos (N, D)``, ``(B,)`` for ``(B, N, D)``.

    ``U = -G sum_{i<j} m_i m_j / sqrt(|x_i - x_j|^2 + softening^2)``.
    """
    return _ops.potential_energy(pos, mass, float(softening), float(G))


def pair_statistics(
    pos: Tensor, mass: Tensor, softening: float = 0.0, G: float = 1.0, freefall: bool = True
) -> Tensor:
    """Pairwise statistics per system: ``(4,)`` for ``pos (N, D)``, ``(B, 4)`` for ``(B, N, D)``.

    Columns: min, mean and max of the softened distances
    ``s_ij = sqrt(|x_i - x_j|^2 + softening^2)`` over pairs ``i != j`` (the plain
    distances when ``softening == 0``), and the minimum pairwise free-fall time
    ``sqrt(s_ij^3 / (G (m_i + m_j)))`` (NaN unless ``freefall``). With fewer than
    two bodies the distances are 0 and the time inf. One O(N^2) pass over the pairs
    with O(N) memory, on the CPU and on CUDA (a build with the CUDA back end;
    deterministic on both); not differentiable: inputs that require grad (with grad
    mode on) are refused rather than silently given no gradient.
    """
    _refuse_grad("pair_statistics", pos=pos, mass=mass)
    return _ops.pair_statistics(pos, mass, float(softening), float(G), bool(freefall))


def aarseth_derivatives(
    pos: Tensor, vel: Tensor, mass: Tensor, softening: float = 0.0, G: float = 1.0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Acceleration, jerk, snap and crackle of mutual gravity: ``(acc, jerk, snap,
    crackle)``, each shaped like ``pos`` (``vel`` too has that shape).

    The acceleration and its first three time derivatives along the motion
    (``dx/dt = vel``, ``dv/dt = acc``), the ingredients of Aarseth's criterion, as
    pair sums with the softened ``r2 = |x_ij|^2 + softening^2`` (Nitadori & Makino
    2008, eqs. 22-25; :func:`aits.reference.aarseth_derivatives` is the pure-torch
    version). Two native O(N^2) passes over the pairs with O(N) memory (acc and jerk
    of every body, then snap and crackle), on the CPU and on CUDA. Not
    differentiable: inputs that require grad (with grad mode on) are refused.
    """
    _refuse_grad("aarseth_derivatives", pos=pos, vel=vel, mass=mass)
    return _ops.aarseth_derivatives(pos, vel, mass, float(softening), float(G))


def encounter_features(
    pos: Tensor, vel: Tensor, mass: Tensor, softening: float, G: float, clip: float,
    smooth: bool = False,
) -> tuple[Tensor, Tensor]:
    """The encounter features of :func:`aits.encounter.encounter_features`, natively:
    ``(feats, times)``, ``batch_shape + (14,)`` (the columns of
    :data:`aits.features.ENCOUNTER_NAMES`, or with ``smooth`` of
    :data:`aits.features.SMOOTH_ENCOUNTER_NAMES`, log ratios clipped to ``[-clip, clip]``) and
    ``batch_shape + (5,)`` (the fields of :class:`aits.encounter.EncounterTimes` in
    order), in ``pos``'s dtype (computed in float64).

    The derivative passes (:func:`aarseth_derivatives`) and the pair times
    (``csrc/cpu/encounter_kernels.h``: taken by those two passes in float64 above 64
    bodies, else one more pass over the pairs per system) instead of the torch path's
    fifty small ops; its collision time uses the derivative pass's acceleration, so
    the two paths agree to rounding. CPU only; not differentiable.
    """
    _refuse_grad("encounter_features", pos=pos, vel=vel, mass=mass)
    return _ops.encounter_features(pos, vel, mass, float(softening), float(G), float(clip),
                                   bool(smooth))


def history_encounter_features(
    pos: Tensor, vel: Tensor, mass: Tensor, accs: Sequence[Tensor], times: Sequence[Tensor],
    softening: float, G: float, clip: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """The encounter-history features of
    :func:`aits.encounter_history.history_encounter_features`, natively and in O(N):
    ``(feats, tau, ready)``, ``batch_shape + (11,)`` (the columns of
    :data:`aits.features.HISTORY_ENCOUNTER_NAMES`, log ratios clipped to
    ``[-clip, clip]``), Aarseth's time ``batch_shape`` in ``pos``'s dtype (computed in
    float64) and ``ready``, ``batch_shape`` bool.

    ``accs``: ``K + 1 >= 4`` accelerations shaped like ``pos``, the current state's
    first, then back in time; ``times``: their times, ``batch_shape`` float64 each.
    A body whose window spans more than :data:`aits.encounter_history.MAX_SPAN` of
    its Aarseth time takes its exact derivatives (O(N) each; ``softening`` the
    force's). A system whose times do not strictly decrease has ``ready`` False and
    undefined features (the caller takes the exact derivatives there). CPU only;
    not differentiable.
    """
    _refuse_grad("history_encounter_features", pos=pos, vel=vel, mass=mass)
    return _ops.history_encounter_features(pos, vel, mass, list(accs), list(times),
                                           float(softening), float(G), float(clip))


def history_model_dt(
    pos: Tensor, vel: Tensor, mass: Tensor, accs: Sequence[Tensor], times: Sequence[Tensor],
    softening: float, G: float, clip: float, net: Sequence[Tensor], activation: str,
    net_scale: float,
) -> tuple[Tensor, Tensor]:
    """The step of an encounter-history model in one native call: the features of
    :func:`history_encounter_features` (same inputs), then the network ``net``
    (:func:`aits.native_run.native_net`: ``[weight (K, out, in), bias (K, out)]`` of
    each layer, float64 CPU; ``activation`` ``"tanh"`` or ``"relu"``; ``net_scale``
    its ``dt_scale``) on them: ``(dt, ready)``, ``dt`` ``batch_shape`` in ``pos``'s
    dtype (the network's dt times Aarseth's time, as
    :meth:`aits.model.TimeStepNet.predict_dt`) and ``ready`` as the features' (``dt``
    undefined where it is False). The weights are not checked for finite values (a
    non-finite weight gives a non-finite ``dt``). CPU only; not differentiable.
    """
    _refuse_grad("history_model_dt", pos=pos, vel=vel, mass=mass)
    return _ops.history_model_dt(pos, vel, mass, list(accs), list(times), float(softening),
                                 float(G), float(clip), list(net), str(activation),
                                 float(net_scale))


def leapfrog_step(
    pos: Tensor,
    vel: Tensor,
    mass: Tensor,
    dt: Tensor,
    softening: float = 0.0,
    G: float = 1.0,
    acc: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One kick-drift-kick leapfrog step; returns ``(pos1, vel1, acc1)`` shaped like ``pos``.

    ``acc``, when given, must be the acceleration at ``pos`` (e.g. ``acc1`` of the
    previous step): a rollout of k steps then costs k + 1 force evaluations.
    ``dt`` is a tensor (0-d, or ``(B,)`` for a batch) of ``pos``'s dtype; a plain
    Python number is turned into a 0-d tensor.
    """
    pos1, vel1, acc1, _ = _ops.leapfrog_step(
        pos, vel, mass, _as_dt(pos, dt), float(softening), float(G), acc, False
    )
    return pos1, vel1, acc1


def leapfrog_step_with_statistics(
    pos: Tensor,
    vel: Tensor,
    mass: Tensor,
    dt: Tensor,
    softening: float = 0.0,
    G: float = 1.0,
    acc: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`leapfrog_step` that also returns ``pair_statistics(pos1)`` (``(4,)`` or
    ``(B, 4)``, free-fall time included, not differentiable), computed in the same
    pass over the pairs as ``acc1`` (CPU and CUDA): the next step's features then
    cost no extra O(N^2) work."""
    return _ops.leapfrog_step(pos, vel, mass, _as_dt(pos, dt), float(softening), float(G), acc, True)


#: Columns of :func:`kdk_run`'s ``counts`` (int64): steps taken, the stop code (an
#: index into :data:`KDK_RUN_STOPS`), whether the last step landed on ``t_stop`` (0/1),
#: steps passing the energy gate, the 1-based step at which the system diverged (0: never).
KDK_RUN_COUNTS = ("steps", "stop", "landed", "gate_passes", "diverged_step")
#: Columns of :func:`kdk_run`'s ``stats`` (float64): min, max and sum of dt over the
#: steps that did not land, the last dt, the landing step's dt (NaN: none), the max and
#: final whole-run ``|dE/E|`` and the max per-step ``rel_dE`` (NaN without diagnostics),
#: the time and whole-run error where the system diverged (NaN: never), the dt of the
#: last step tried (a step that gave a non-finite state included; NaN: none).
KDK_RUN_STATS = ("dt_min", "dt_max", "dt_sum", "dt_last", "land_dt", "energy_error_max",
                 "energy_error_final", "step_error_max", "diverged_time", "diverged_error",
                 "dt_tried")
#: Why a system of :func:`kdk_run` stopped ("limit": after ``max_steps`` steps).
KDK_RUN_STOPS = ("t_end", "limit", "non-finite", "bad-dt", "diverged")
#: Columns of :func:`kdk_run`'s ``totals`` (float64), at the start (``[:, 0]``) and the
#: end (``[:, 1]``): momentum and angular momentum about the origin (in 2-D the angular
#: momentum is its z component, x and y are 0; so is the momentum's z), ``sum_i m_i |v_i|``,
#: ``sum_i m_i |x_i| |v_i|``, the kinetic and potential energy, the total mass and the
#: mass-weighted rms distance from the centre of mass: what :func:`aits.simulate`'s
#: momentum and angular-momentum errors need (:func:`aits.simulation.conservation_scales`).
KDK_RUN_TOTALS = ("momentum_x", "momentum_y", "momentum_z", "angular_momentum_x",
                  "angular_momentum_y", "angular_momentum_z", "mass_speed", "mass_radius_speed",
                  "kinetic", "potential", "mass", "r_rms")


def kdk_run(
    pos: Tensor,
    vel: Tensor,
    mass: Tensor,
    acc: Tensor,
    time: Tensor,
    t_stop: Tensor,
    max_steps: int,
    *,
    dt: float | None = None,
    eta: float | None = None,
    net: Sequence[Tensor] | None = None,
    activation: str = "tanh",
    net_scale: float = 1.0,
    dt_scale: float = 1.0,
    clip: float = 30.0,
    smooth: bool = False,
    orbit: bool = False,
    symmetric: bool = False,
    history: int = 0,
    softening: float = 0.0,
    G: float = 1.0,
    diagnostics: bool = False,
    threshold: float | None = None,
    floor: float | None = None,
    fail_above: float = float("inf"),
    stop_diverged: bool = True,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Run a batch of few-body systems with kick-drift-kick leapfrog natively, each to
    its ``t_stop`` or for ``max_steps`` steps, with a fixed ``dt``, Aarseth's criterion
    (``eta``) or a trained time-step network (``net``; exactly one of the three): the
    loop of :func:`aits.simulate` for those policies, step for step, without Python per
    step (``csrc/cpu/fewbody_run.h``).

    Args:
        pos, vel, acc: ``(B, N, D)``; ``acc`` the gravitational acceleration at ``pos``.
        mass: ``(B, N)``.
        time, t_stop: ``(B,)`` float64: each system's start and end time (``inf``: no
            end; the last step is shortened to land exactly on ``t_stop``).
        max_steps: a system still running after this many steps stops ("limit").
        net: the layers of a :class:`~aits.model.TimeStepNet` with encounter features
            and the ``"aarseth"`` output, ``[weight, bias]`` of each (hidden layers, then
            the head): ``weight (K, out, in)`` and ``bias (K, out)`` float64 for an
            ensemble of ``K`` members (``K = 1`` for one network), the first layer taking
            the 14 encounter features (``smooth``: the encounter-smooth kind; with
            ``orbit`` too, the 15 of the encounter-orbit kind; with ``history`` the 11
            of the encounter-history kind), the last giving one output.
            :func:`aits.native_run.native_net` extracts them. Each step is then
            ``dt_scale * net_dt * tau_A``: the network's ``dt`` (``net_scale``, its
            ``dt_scale``, times the softplus of its output, or the geometric mean of the
            members') times Aarseth's time, as :class:`~aits.policies.ModelPolicy`.
        activation: the hidden layers' activation, ``"tanh"`` or ``"relu"``.
        symmetric: each proposal through the reversible recurrence of the ``symmetric``
            integrator (:class:`aits.integrators.SymmetricKDK` with ``iterations = 0``,
            its first step the proposal itself), one force evaluation a step as there.
        clip: the encounter features' clip (:data:`aits.encounter.CLIP`).
        history: ``K`` in 3-15 for a network on the encounter-history kind: each system
            keeps the accelerations and times of its last ``K`` states, the exact
            derivatives taken until it has them (as :mod:`aits.encounter_history`).
        diagnostics: measure the energy every step (per-step and whole-run errors,
            gate passes against ``threshold`` with ``floor`` as in :mod:`aits.gate`,
            whose defaults apply to ``None``; divergence above ``fail_above``).

    Returns:
        ``(pos1, vel1, acc1, time1, counts, stats, totals)``: the end states (a system
        that stopped on a non-finite step or a bad dt keeps its last finite state),
        ``counts (B, 5)`` int64 and ``stats (B, 11)`` float64 with the columns of
        :data:`KDK_RUN_COUNTS` and :data:`KDK_RUN_STATS`, and ``totals (B, 2, 12)``
        float64, the conserved totals at the start and the end (:data:`KDK_RUN_TOTALS`).

    CPU only, N at most 8 (float64) or 16 (float32); not differentiable.

    Raises:
        ValueError: not exactly one of ``dt``, ``eta`` and ``net``, a value that is not
            finite and > 0, ``max_steps < 1``, a network whose layers do not chain from 14
            inputs (15 with ``orbit``, 11 with ``history``) to one output, ``orbit``
            without ``smooth``, ``history`` out of range or with ``smooth``, bad shapes or
            values (the message names them).
    """
    if sum(x is not None for x in (dt, eta, net)) != 1:
        raise ValueError("aits.ops.kdk_run: give exactly one of dt (a fixed step), eta "
                         "(Aarseth's criterion) and net (a time-step network)")
    from aits.gate import DEFAULT_FLOOR, DEFAULT_THRESHOLD  # aits.gate imports this module

    _refuse_grad("kdk_run", pos=pos, vel=vel, mass=mass, acc=acc)
    policy, value = (("fixed", dt) if dt is not None else ("aarseth", eta) if eta is not None
                     else ("model", dt_scale))
    return _ops.kdk_run(
        pos, vel, mass, acc, time, t_stop, int(max_steps), policy, float(value),
        float(softening), float(G), bool(diagnostics),
        float(DEFAULT_THRESHOLD if threshold is None else threshold),
        float(DEFAULT_FLOOR if floor is None else floor), float(fail_above), bool(stop_diverged),
        list(net) if net is not None else [], str(activation), float(net_scale), float(clip),
        bool(smooth), bool(orbit), bool(symmetric), int(history),
    )


def _as_dt(pos: Tensor, dt) -> Tensor:
    if isinstance(dt, (int, float)) and not isinstance(dt, bool):
        return torch.tensor(float(dt), dtype=pos.dtype, device=pos.device)
    if not isinstance(dt, Tensor):
        raise TypeError(
            f"aits.leapfrog_step: dt must be a torch.Tensor (0-d or (B,)) or a number, got "
            f"{type(dt).__name__}; use torch.as_tensor(dt, dtype=pos.dtype)."
        )
    return dt


def _refuse_grad(op: str, **inputs: Tensor) -> None:
    """A non-differentiable op must not silently return results without gradient."""
    if torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad
                                       for t in inputs.values()):
        names = list(inputs)
        listed = ", ".join(names[:-1]) + " or " + names[-1]
        calls = [f"{n}.detach()" for n in names]
        detached = ", ".join(calls[:-1]) + " and " + calls[-1]
        raise ValueError(
            f"aits.{op} is not differentiable, but {listed} requires grad; pass {detached} "
            "(or call it under torch.no_grad())."
        )


# --------------------------------------------------------------------------- fake kernels


def _check_meta_mix(pos: Tensor, **others: Tensor | None) -> None:
    """The fake kernels also serve the ``meta`` device; a call mixing ``meta`` with a
    real device lands there too and must not return an uninitialised tensor."""
    devices = {pos.device} | {t.device for t in others.values() if isinstance(t, Tensor)}
    if len(devices) > 1 and any(d.type == "meta" for d in devices):
        for name, t in others.items():
            if isinstance(t, Tensor) and t.device != pos.device:
                raise ValueError(
                    f"{name} is on {t.device} but pos is on {pos.device}; move it with "
                    ".to(pos.device). (aits ops compute on one device; meta tensors only "
                    "with other meta tensors.)"
                )


@torch.library.register_fake("aits::accelerations")
def _accelerations_fake(pos, mass, softening=0.0, G=1.0):
    _check_meta_mix(pos, mass=mass)
    return torch.empty_like(pos)


@torch.library.register_fake("aits::accelerations_backward")
def _accelerations_backward_fake(grad_acc, pos, mass, softening, G):
    _check_meta_mix(pos, mass=mass, grad_acc=grad_acc)
    return torch.empty_like(pos), torch.empty_like(mass)


@torch.library.register_fake("aits::potential_energy")
def _potential_energy_fake(pos, mass, softening=0.0, G=1.0):
    _check_meta_mix(pos, mass=mass)
    return pos.new_empty(pos.shape[:-2])


@torch.library.register_fake("aits::potential_energy_backward")
def _potential_energy_backward_fake(grad_energy, pos, mass, softening, G):
    _check_meta_mix(pos, mass=mass, grad_energy=grad_energy)
    return torch.empty_like(pos), torch.empty_like(mass)


@torch.library.register_fake("aits::pair_statistics")
def _pair_statistics_fake(pos, mass, softening=0.0, G=1.0, freefall=True):
    _check_meta_mix(pos, mass=mass)
    return pos.new_empty(pos.shape[:-2] + (4,))


@torch.library.register_fake("aits::aarseth_derivatives")
def _aarseth_derivatives_fake(pos, vel, mass, softening=0.0, G=1.0):
    _check_meta_mix(pos, vel=vel, mass=mass)
    return tuple(torch.empty_like(pos) for _ in range(4))


@torch.library.register_fake("aits::encounter_features")
def _encounter_features_fake(pos, vel, mass, softening, G, clip, smooth=False):
    _check_meta_mix(pos, vel=vel, mass=mass)
    return pos.new_empty(pos.shape[:-2] + (14,)), pos.new_empty(pos.shape[:-2] + (5,))


@torch.library.register_fake("aits::history_encounter_features")
def _history_encounter_features_fake(pos, vel, mass, accs, times, softening, G, clip):
    _check_meta_mix(pos, vel=vel, mass=mass, **{f"accs[{k}]": a for k, a in enumerate(accs)})
    batch = pos.shape[:-2]
    return (pos.new_empty(batch + (11,)), pos.new_empty(batch),
            pos.new_empty(batch, dtype=torch.bool))


@torch.library.register_fake("aits::history_model_dt")
def _history_model_dt_fake(pos, vel, mass, accs, times, softening, G, clip, net, activation,
                           net_scale):
    _check_meta_mix(pos, vel=vel, mass=mass, **{f"accs[{k}]": a for k, a in enumerate(accs)})
    batch = pos.shape[:-2]
    return pos.new_empty(batch), pos.new_empty(batch, dtype=torch.bool)


@torch.library.register_fake("aits::leapfrog_step")
def _leapfrog_step_fake(pos, vel, mass, dt, softening=0.0, G=1.0, acc=None, statistics=False):
    _check_meta_mix(pos, vel=vel, mass=mass, dt=dt, acc=acc)
    stats = pos.new_empty(pos.shape[:-2] + (4,)) if statistics else pos.new_empty(0)
    return torch.empty_like(pos), torch.empty_like(pos), torch.empty_like(pos), stats


@torch.library.register_fake("aits::kdk_run")
def _kdk_run_fake(pos, vel, mass, acc, time, t_stop, max_steps, policy, value, softening, G,
                  diagnostics, threshold, floor, fail_above, stop_diverged, net, activation,
                  net_scale, clip, smooth=False, orbit=False, symmetric=False, history=0):
    _check_meta_mix(pos, vel=vel, mass=mass, acc=acc, time=time, t_stop=t_stop)
    B = pos.shape[0]
    return (torch.empty_like(pos), torch.empty_like(pos), torch.empty_like(pos),
            torch.empty_like(time), time.new_empty((B, len(KDK_RUN_COUNTS)), dtype=torch.int64),
            time.new_empty((B, len(KDK_RUN_STATS))), time.new_empty((B, 2, len(KDK_RUN_TOTALS))))


@torch.library.register_fake("aits::leapfrog_step_backward")
def _leapfrog_step_backward_fake(
    grad_pos1, grad_vel1, grad_acc1, pos, vel, mass, dt, pos1, acc1, acc, softening, G
):
    _check_meta_mix(pos, vel=vel, mass=mass, dt=dt, pos1=pos1, acc1=acc1, acc=acc,
                    grad_pos1=grad_pos1, grad_vel1=grad_vel1, grad_acc1=grad_acc1)
    return (
        torch.empty_like(pos),
        torch.empty_like(pos),
        torch.empty_like(mass),
        torch.empty_like(dt),
        torch.empty_like(pos),
    )


# --------------------------------------------------------------------------- autograd


def _or_zeros(grad: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad


def _save_pos_mass(ctx, inputs, output):
    """setup_context of the ops with inputs (pos, mass, softening, G)."""
    pos, mass, softening, G = inputs
    ctx.save_for_backward(pos, mass)
    ctx.softening, ctx.G = softening, G


def _accelerations_backward(ctx, grad_acc):
    pos, mass = ctx.saved_tensors
    grad_pos, grad_mass = _ops.accelerations_backward(grad_acc, pos, mass, ctx.softening, ctx.G)
    return grad_pos, grad_mass, None, None


def _potential_backward(ctx, grad_energy):
    pos, mass = ctx.saved_tensors
    grad_pos, grad_mass = _ops.potential_energy_backward(
        grad_energy, pos, mass, ctx.softening, ctx.G
    )
    return grad_pos, grad_mass, None, None


def _leapfrog_setup(ctx, inputs, output):
    pos, vel, mass, dt, softening, G, acc = inputs[:7]
    pos1, _, acc1, stats = output
    ctx.mark_non_differentiable(stats)
    ctx.has_acc = acc is not None
    ctx.save_for_backward(pos, vel, mass, dt, pos1, acc1, acc)
    ctx.softening, ctx.G = softening, G


def _leapfrog_backward(ctx, grad_pos1, grad_vel1, grad_acc1, grad_stats):
    pos, vel, mass, dt, pos1, acc1, acc = ctx.saved_tensors
    grad_pos, grad_vel, grad_mass, grad_dt, grad_acc = _ops.leapfrog_step_backward(
        _or_zeros(grad_pos1, pos),
        _or_zeros(grad_vel1, pos),
        _or_zeros(grad_acc1, pos),
        pos,
        vel,
        mass,
        dt,
        pos1,
        acc1,
        acc if ctx.has_acc else None,
        ctx.softening,
        ctx.G,
    )
    return grad_pos, grad_vel, grad_mass, grad_dt, None, None, grad_acc if ctx.has_acc else None, None


def _no_double_backward(name: str):
    def backward(ctx, *grads):
        raise RuntimeError(
            f"aits: double backward through {name} is not supported (the backward pass is a "
            "native kernel without its own derivative). Use the pure-torch versions in "
            "aits.reference if you need second derivatives."
        )

    return backward


def _setup_nothing(ctx, inputs, output):
    pass


torch.library.register_autograd(
    "aits::accelerations", _accelerations_backward, setup_context=_save_pos_mass
)
torch.library.register_autograd(
    "aits::potential_energy", _potential_backward, setup_context=_save_pos_mass
)
torch.library.register_autograd(
    "aits::leapfrog_step", _leapfrog_backward, setup_context=_leapfrog_setup
)
for _name in ("accelerations_backward", "potential_energy_backward", "leapfrog_step_backward"):
    torch.library.register_autograd(
        f"aits::{_name}", _no_double_backward(_name), setup_context=_setup_nothing
    )


# --- CPU pair-kernel selection -------------------------------------------------

import contextlib  # noqa: E402
from collections.abc import Iterator  # noqa: E402

PAIR_KERNELS = ("rsqrt", "divide")


def set_pair_kernel(name: str) -> None:
    """Selects the CPU pair kernel for the whole process: ``"rsqrt"``
    (reciprocal-square-root estimate refined by Newton iterations, in AVX2 builds
    sharing the pairs with the divider; the default in AVX-512 and AVX2 builds) or
    ``"divide"`` (one square root and one division per pair; the default in
    portable builds). Both agree with
    :mod:`aits.reference` to ~1e-12 in float64. Raises ValueError for other names."""
    torch.ops.aits.set_pair_kernel(name)


def pair_kernel() -> str:
    """The name of the CPU pair kernel in use (see :func:`set_pair_kernel`)."""
    return torch.ops.aits.pair_kernel()


def simd_instruction_set() -> str:
    """The instruction set the ``"rsqrt"`` kernel was built for: ``"avx512f"``,
    ``"avx2"`` or ``"none"`` (portable vectors)."""
    return torch.ops.aits.simd_instruction_set()


@contextlib.contextmanager
def using_pair_kernel(name: str) -> Iterator[None]:
    """``with using_pair_kernel("divide"): ...`` runs the block with that CPU pair
    kernel and restores the previous one afterwards (process-wide, not per thread)."""
    previous = pair_kernel()
    set_pair_kernel(name)
    try:
        yield
    finally:
        set_pair_kernel(previous)
