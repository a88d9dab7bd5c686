"""The native fast path of :func:`aits.simulate`: policies with no Python per step.

A run whose every step is decided without Python — a :class:`~aits.policies.FixedPolicy`,
an :class:`~aits.policies.AarsethPolicy` or a :class:`~aits.policies.ModelPolicy` whose
network the native loop can evaluate (:func:`native_net`: encounter features (the
``encounter-history`` kind included), the ``"aarseth"`` output, tanh or relu, no Fourier features, float64; the shipped
``generalist`` is one), the ``kdk`` integrator or ``symmetric`` (its one-evaluation
reversible recurrence, started from the policy's proposal), no guard rail,
no observer, no progress bar, no output times, a CPU few-body batch (N at most 8 in
float64, 16 in float32) without an external field — goes through one call of
:func:`aits.ops.kdk_run`, which runs the core's loop natively (the same steps, the
same landing on ``t_end``, the same bookkeeping and divergence check; results equal
to the Python loop's to rounding). :func:`simulate` then builds its result from the
per-system totals as usual. ``simulate(..., native=False)`` forces the Python loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from aits import ops
from aits.gate import EnergyGate
from aits.guards import GuardRails
from aits.integrators import KDK, Integrator, SymmetricKDK
from aits.encounter import CLIP
from aits.features import ENCOUNTER_KINDS, WINDOW_KINDS
from aits.model import TimeStepNet
from aits.policies import AarsethPolicy, FixedPolicy, ModelPolicy, Policy
from aits.state import SystemState

__all__ = ["NativeRun", "applies", "native_net", "run"]

log = logging.getLogger("aits.simulation")

_MAX_BODIES = {torch.float64: 8, torch.float32: 16}
_COUNT = {name: k for k, name in enumerate(ops.KDK_RUN_COUNTS)}
_STAT = {name: k for k, name in enumerate(ops.KDK_RUN_STATS)}


def native_net(net: TimeStepNet) -> list[Tensor] | None:
    """The layers of ``net`` as :func:`aits.ops.kdk_run` takes them, ``[weight (K, out,
    in), bias (K, out)]`` of each hidden layer and of the head (float64, ``K`` its
    members), or ``None`` where the native loop does not compute what ``net`` does: it
    computes the encounter features (no history features; the encounter-history kind
    from each system's own window) and Aarseth's time natively, and the network as
    plain linear layers with tanh or relu between them, in float64."""
    spec, config = net.spec, net.config()
    if not (net.output == "aarseth" and spec.kind in ENCOUNTER_KINDS + WINDOW_KINDS
            and not spec.history_dim and config["fourier_features"] == 0
            and config["activation"] in ("tanh", "relu") and not net.training):
        return None
    layers = [m for m in net.body if not isinstance(m, (torch.nn.Dropout, torch.nn.Tanh,
                                                        torch.nn.ReLU))] + [net.head]
    out: list[Tensor] = []
    for layer in layers:
        weight, bias = layer.weight.detach(), layer.bias.detach()
        if weight.dtype != torch.float64 or weight.device.type != "cpu":
            return None
        if net.members == 1:
            weight, bias = weight.unsqueeze(0), bias.unsqueeze(0)
        out += [weight.contiguous(), bias.contiguous()]
    return out


def applies(batch: SystemState, policy: Policy, integ: Integrator, guards: GuardRails,
            observers: list, progress: bool, n_out: int, first_dt: object = None) -> bool:
    """Whether :func:`run` gives this run (a batch ``(B, N, D)``) the core's results: under
    ``kdk``, or ``symmetric`` with its one-evaluation recurrence started from the
    policy's proposal (no ``first_dt``)."""
    native_policy = type(policy) in (FixedPolicy, AarsethPolicy) or (
        type(policy) is ModelPolicy and native_net(policy.net) is not None)
    native_integ = type(integ) is KDK or (type(integ) is SymmetricKDK and integ.iterations == 0
                                          and first_dt is None)
    return (native_integ and native_policy
            and not guards.active and not observers and not progress and n_out == 0
            and batch.device.type == "cpu" and batch.field is None and batch.batch_size > 0
            and batch.n_bodies <= _MAX_BODIES[batch.dtype])


@dataclass
class NativeRun:
    """What :func:`run` returns: the end state and per-system totals, ``(B,)`` numpy arrays
    (``stop`` a list of stop reasons, ``divergence`` a list of messages or ``None``), and
    the conserved totals at the start and the end, ``totals (B, 2, 12)`` float64
    (:data:`aits.ops.KDK_RUN_TOTALS`)."""

    state: SystemState
    steps: np.ndarray
    force_evaluations: np.ndarray
    stop: list[str]
    landed: np.ndarray
    dt_min: np.ndarray
    dt_max: np.ndarray
    dt_sum: np.ndarray
    dt_last: np.ndarray
    land_dt: np.ndarray
    energy_error_max: np.ndarray
    energy_error_final: np.ndarray
    step_error_max: np.ndarray
    gate_passes: np.ndarray
    diverged_step: list[int | None]
    diverged_time: list[float | None]
    divergence: list[str | None]
    totals: Tensor


def run(batch: SystemState, policy: FixedPolicy | AarsethPolicy | ModelPolicy, t_stop: Tensor,
        steps: int | None, max_steps: int, diagnostics: bool, gate: EnergyGate,
        fail_above: float, stop_diverged: bool, force_evals0: int,
        symmetric: bool = False) -> NativeRun:
    """Run ``batch`` (with its acceleration cached) to ``t_stop`` ``(B,)`` float64 (``inf``
    for a ``steps`` run) as :func:`aits.simulate` would (``symmetric``: under the
    ``symmetric`` integrator), logging its warnings and errors."""
    limit = steps if steps is not None else max_steps
    if isinstance(policy, FixedPolicy):
        kind = {"dt": policy.dt}
    elif isinstance(policy, AarsethPolicy):
        kind = {"eta": policy.eta}
    else:
        spec = policy.net.spec
        kind = {"net": native_net(policy.net), "activation": policy.net.config()["activation"],
                "net_scale": policy.net.dt_scale, "dt_scale": policy.dt_scale, "clip": CLIP,
                "smooth": spec.kind in ("encounter-smooth", "encounter-orbit"),
                "orbit": spec.kind == "encounter-orbit", "history": spec.window_len}
    pos, vel, acc, time, counts, stats, totals = ops.kdk_run(
        batch.pos, batch.vel, batch.mass, batch.acc, batch.time, t_stop, limit,
        softening=batch.softening, G=batch.G, diagnostics=diagnostics, symmetric=symmetric,
        threshold=gate.threshold, floor=gate.floor, fail_above=fail_above,
        stop_diverged=stop_diverged, **kind)
    n, s = counts.numpy(), stats.numpy()
    codes = n[:, _COUNT["stop"]]
    at_limit = "steps" if steps is not None else "max_steps"
    reasons = [at_limit if r == "limit" else r for r in ops.KDK_RUN_STOPS]
    stop = [reasons[c] for c in codes.tolist()]
    n_steps = n[:, _COUNT["steps"]].copy()
    t_np = time.numpy()
    # a step that failed (non-finite state, bad dt) cost its force evaluation
    failed = (codes == 2) | (codes == 3)
    evals = force_evals0 + n_steps + failed
    for b in np.flatnonzero(codes > 1).tolist():
        if codes[b] == 4:
            continue
        log.error("system %d, step %d at t=%.6g: %s; this system stops", b, n_steps[b], t_np[b],
                  "the policy proposed a dt that is not finite and > 0" if codes[b] == 3
                  else f"dt={s[b, _STAT['dt_tried']]:.3g} gave a non-finite state")
    if steps is None:
        for b in np.flatnonzero(codes == 1).tolist():
            log.warning("system %d stopped at max_steps=%d at t=%.6g (t_end %.6g not "
                        "reached)", b, max_steps, t_np[b], float(t_stop[b]))
    div = n[:, _COUNT["diverged_step"]]
    div_step: list[int | None] = [None] * len(stop)
    div_time: list[float | None] = [None] * len(stop)
    div_why: list[str | None] = [None] * len(stop)
    for b in np.flatnonzero(div > 0).tolist():
        div_step[b], div_time[b] = int(div[b]), float(s[b, _STAT["diverged_time"]])
        div_why[b] = (f"whole-run |dE/E| {s[b, _STAT['diverged_error']]:.3g} > fail_above "
                      f"{fail_above:g}")
    state = batch._stepped(pos, vel, acc, time, None)
    return NativeRun(
        state=state, steps=n_steps, force_evaluations=evals, stop=stop,
        landed=n[:, _COUNT["landed"]].astype(bool),
        dt_min=s[:, _STAT["dt_min"]].copy(), dt_max=s[:, _STAT["dt_max"]].copy(),
        dt_sum=s[:, _STAT["dt_sum"]].copy(), dt_last=s[:, _STAT["dt_last"]].copy(),
        land_dt=s[:, _STAT["land_dt"]].copy(),
        energy_error_max=s[:, _STAT["energy_error_max"]].copy(),
        energy_error_final=s[:, _STAT["energy_error_final"]].copy(),
        step_error_max=s[:, _STAT["step_error_max"]].copy(),
        gate_passes=n[:, _COUNT["gate_passes"]].copy(), diverged_step=div_step,
        diverged_time=div_time, divergence=div_why, totals=totals)

