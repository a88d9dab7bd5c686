"""External tidal field: formulas, composed step vs all-reference KDK, conservation."""

import pytest
import torch

from aits import reference
from aits.ics import kepler_orbit, kepler_period, random_system
from aits.state import SystemState, rollout, split, stack, step
from aits.tide import TidalField

f64 = torch.float64


def ref_tide_acc(x, M, R, G):
    """Independent transcription of MISSION.md: G M [(R - x)/|R - x|^3 - R/|R|^3]."""
    out = torch.empty_like(x)
    for idx in torch.cartesian_prod(*[torch.arange(s) for s in x.shape[:-1]]).reshape(
        -1, x.dim() - 1
    ):
        idx = tuple(idx.tolist())
        Rb = R if R.dim() == 1 else R[idx[0]]
        d = Rb - x[idx]
        out[idx] = G * M * (d / d.dot(d) ** 1.5 - Rb / Rb.dot(Rb) ** 1.5)
    return out


def ref_kdk(pos, vel, mass, dt, M, R, G, eps):
    h = dt.reshape(-1, 1, 1) if dt.dim() else dt

    def acc(x):
        return reference.accelerations(x, mass, eps, G) + ref_tide_acc(x, M, R, G)

    v_half = vel + acc(pos) * h / 2
    x1 = pos + v_half * h
    a1 = acc(x1)
    return x1, v_half + a1 * h / 2, a1


def test_acceleration_is_minus_gradient_of_potential():
    field = TidalField(5.0, torch.tensor([10.0, -3.0, 2.0], dtype=f64))
    x = torch.randn(4, 3, dtype=f64, requires_grad=True)
    phi = field.potential(x, G=2.0).sum()
    (grad,) = torch.autograd.grad(phi, x)
    torch.testing.assert_close(field.acceleration(x, G=2.0), -grad)
    torch.testing.assert_close(field.acceleration(x, 2.0), ref_tide_acc(x.detach(), 5.0,
                                                                        field.position, 2.0))
    origin = torch.zeros(1, 3, dtype=f64)
    assert field.potential(origin).abs().item() < 1e-15
    assert field.acceleration(origin).abs().max().item() < 1e-15


@pytest.mark.parametrize("per_system", [False, True])
def test_composed_step_matches_all_reference(per_system):
    s = random_system(5, 3, batch=2, seed=3, softening=0.05, G=1.5)
    R = torch.tensor([[8.0, 1.0, 0.0], [0.0, -6.0, 2.0]], dtype=f64)
    field = TidalField(20.0, R if per_system else R[0])
    s = s.with_field(field)
    dt = torch.tensor([0.01, 0.03], dtype=f64)
    s2 = step(step(s, dt), dt)
    x, v, a = ref_kdk(s.pos, s.vel, s.mass, dt, 20.0, field.position, 1.5, 0.05)
    x, v, a = ref_kdk(x, v, s.mass, dt, 20.0, field.position, 1.5, 0.05)
    for got, want in ((s2.pos, x), (s2.vel, v), (s2.acc, a)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # energy includes the tidal potential
    U_ext = (s.mass * torch.stack([
        -1.5 * 20.0 * (1 / (Rb - xb).norm(dim=-1) - 1 / Rb.norm() - (xb @ Rb) / Rb.norm() ** 3)
        for xb, Rb in zip(s.pos, R if per_system else R[0].expand(2, 3))
    ])).sum(-1)
    torch.testing.assert_close(s.external_potential_energy(), U_ext)
    torch.testing.assert_close(
        s.total_energy(),
        reference.kinetic_energy(s.vel, s.mass)
        + reference.potential_energy(s.pos, s.mass, 0.05, 1.5) + U_ext,
    )


def test_energy_with_tide_conserved_to_second_order():
    s = kepler_orbit(0.3, 1.0).with_field(TidalField(50.0, torch.tensor([12.0, 5.0], dtype=f64)))
    E0 = s.total_energy()
    T = kepler_period(1.0)
    errs = []
    for n in (200, 400):
        st, worst = s, 0.0
        for _ in range(n):
            st = step(st, T / n)
            worst = max(worst, abs((st.total_energy() - E0).item()))
        errs.append(worst)
    assert errs[0] < 1e-2 * abs(E0.item())
    assert 3.5 < errs[0] / errs[1] < 4.5
    # the tide really acts: without its potential, energy is not conserved
    end = rollout(s, T / 400, 400)
    drift = (end.kinetic_energy() + end.gravity_potential_energy()
             - s.kinetic_energy() - s.gravity_potential_energy()).abs()
    assert drift.item() > 10 * errs[1]


def test_fields_batch_and_split():
    a = kepler_orbit(0.1).with_field(TidalField(1.0, torch.tensor([5.0, 0.0], dtype=f64)))
    b = kepler_orbit(0.2).with_field(TidalField(1.0, torch.tensor([0.0, 7.0], dtype=f64)))
    ab = stack([a, b])
    assert ab.field.position.shape == (2, 2)
    torch.testing.assert_close(ab.total_energy(), torch.stack([a.total_energy(), b.total_energy()]))
    back = split(ab)
    torch.testing.assert_close(back[1].field.position, b.field.position)
    assert stack([a, a]).field.position.shape == (2,)
    with pytest.raises(ValueError, match="every state has a field or none"):
        stack([a, kepler_orbit(0.1)])
    with pytest.raises(ValueError, match="different perturber masses"):
        stack([a, b.with_field(TidalField(2.0, b.field.position))])


def test_invalid_fields_raise():
    with pytest.raises(ValueError, match="mass must be a finite number > 0"):
        TidalField(0.0, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="must not be the origin"):
        TidalField(1.0, torch.zeros(3))
    with pytest.raises(ValueError, match="shape \\(D,\\) or \\(B, D\\)"):
        TidalField(1.0, torch.ones(4))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        TidalField(1.0, [1.0, 0.0])
    s = kepler_orbit(0.1)
    with pytest.raises(ValueError, match="field is 3-D but the system is 2-D"):
        s.with_field(TidalField(1.0, torch.ones(3, dtype=f64)))
    with pytest.raises(ValueError, match="per-system field needs a batch of 3"):
        s.with_field(TidalField(1.0, torch.ones(3, 2, dtype=f64)))
    with pytest.raises(TypeError, match="TidalField or None"):
        SystemState(s.pos, s.vel, s.mass, field="tide")
