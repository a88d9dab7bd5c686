"""Energy gate: relative error, pass test, band loss values and gradients."""

import math

import pytest
import torch

from aits.gate import (
    EnergyGate,
    band_loss,
    energy_scale,
    passes,
    relative_energy_error,
    step_energy_error,
)
from aits.ics import kepler_orbit
from aits.state import SystemState, stack, step

f64 = torch.float64
LN10 = math.log(10.0)


def test_relative_energy_error_values():
    E0 = torch.tensor([-2.0, 4.0, 0.0], dtype=f64)
    E1 = torch.tensor([-2.002, 3.0, 1e-3], dtype=f64)
    r = relative_energy_error(E0, E1)
    torch.testing.assert_close(r[:2], torch.tensor([1e-3, 0.25], dtype=f64))
    assert torch.isfinite(r[2])  # E0 == 0 does not divide by zero
    scale = torch.tensor([1.0, 1.0, 10.0], dtype=f64)
    r = relative_energy_error(E0, E1, scale, floor=1e-2)
    torch.testing.assert_close(r, torch.tensor([1e-3, 0.25, 1e-2], dtype=f64))


def test_floor_does_not_change_bound_systems():
    s = kepler_orbit(0.5)
    s1 = step(s, 0.01)
    plain = ((s1.total_energy() - s.total_energy()) / s.total_energy()).abs()
    torch.testing.assert_close(step_energy_error(s, s1), plain)
    assert energy_scale(s).item() == pytest.approx(
        s.kinetic_energy().item() + abs(s.potential_energy().item())
    )


def test_passes_threshold_and_nonfinite():
    r = torch.tensor([1e-5, 2e-4, 3e-4, math.nan, math.inf], dtype=f64)
    assert passes(r).tolist() == [True, False, False, False, False]
    assert passes(r, 1e-3).tolist() == [True, True, True, False, False]
    assert EnergyGate(threshold=1e-4).passes(r).tolist() == [True] + [False] * 4


def test_band_loss_values_and_gradients():
    r = torch.tensor([1e-5, 1e-6, 1e-4, 1e-8, 1e-2], dtype=f64, requires_grad=True)
    loss = band_loss(r)
    want = [0.0, 0.0, 0.0, (2 * LN10) ** 2, (2 * LN10) ** 2]
    assert loss.tolist() == pytest.approx(want, abs=1e-12)
    loss.sum().backward()
    # d/dr (log r - log Eu)^2 = 2 (log r - log Eu) / r ; below: -2 (log El - log r) / r
    want_grad = [0.0, 0.0, 0.0, -2 * 2 * LN10 / 1e-8, 2 * 2 * LN10 / 1e-2]
    assert r.grad.tolist() == pytest.approx(want_grad, rel=1e-10, abs=1e-12)
    with pytest.raises(ValueError, match="0 < E_lower < E_upper"):
        band_loss(r.detach(), 1e-4, 1e-6)
    assert band_loss(torch.tensor(0.0, dtype=f64)).item() == pytest.approx(
        (math.log(1e-6) - math.log(1e-30)) ** 2
    )


def test_nonfinite_rel_gets_finite_penalty_without_nan_gradients():
    r = torch.tensor([math.nan, math.inf, 1e-2], dtype=f64, requires_grad=True)
    loss = band_loss(r, nonfinite_penalty=123.0)
    assert loss[:2].tolist() == [123.0, 123.0]
    loss.sum().backward()
    assert torch.isfinite(r.grad).all() and r.grad[:2].tolist() == [0.0, 0.0]
    dt = torch.tensor([0.5, 0.1, 0.2], dtype=f64, requires_grad=True)
    loss = band_loss(r.detach(), nonfinite_penalty=100.0, dt=dt)
    assert loss[:2].tolist() == pytest.approx([100.0, 100.0])
    loss.sum().backward()
    assert dt.grad[0].item() == pytest.approx(200.0) and dt.grad[1].item() == pytest.approx(1000.0)
    assert dt.grad[2].item() == 0.0


def test_gate_rejects_coincident_bodies_nan_step():
    good = kepler_orbit(0.5)
    pos = torch.tensor([[0.0, 0.0], [0.0, 0.0]], dtype=f64)
    bad = SystemState(pos, torch.zeros(2, 2, dtype=f64), torch.ones(2, dtype=f64))
    batch = stack([good, bad])
    dt = torch.full((2,), 0.01, dtype=f64, requires_grad=True)
    end = step(batch, dt)
    gate = EnergyGate()
    rel = gate.error(batch, end)
    assert torch.isfinite(rel[0]) and not torch.isfinite(rel[1])
    assert gate.passes(rel).tolist() == [True, False]
    loss = gate.loss(rel, dt)
    assert torch.isfinite(loss).all() and loss[1].item() == gate.nonfinite_penalty
    loss.sum().backward()
    assert torch.isfinite(dt.grad).all() and dt.grad[1] > 0


def test_gradient_reaches_dt_through_the_step():
    s = kepler_orbit(0.9, at="pericentre")
    dt = torch.tensor(0.01, dtype=f64, requires_grad=True)
    rel = step_energy_error(s, step(s, dt))
    loss = band_loss(rel)
    assert loss.item() > 0
    loss.backward()
    assert dt.grad.item() > 0  # a too-large step: shrinking dt lowers the loss


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"threshold": 0.0}, "energy threshold must be finite and > 0"),
        ({"E_lower": 1e-4, "E_upper": 1e-4}, "0 < E_lower < E_upper"),
        ({"E_lower": 0.0}, "0 < E_lower < E_upper"),
        ({"floor": -1.0}, "floor must be finite and >= 0"),
        ({"nonfinite_penalty": math.inf}, "nonfinite_penalty must be finite and > 0"),
    ],
)
def test_invalid_gate_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EnergyGate(**kwargs)
